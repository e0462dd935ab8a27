"""Last.fm hetrec2011: ``user_artists.dat`` (userID, artistID, weight) and ``artists.dat``.

There are no timestamps. The play count is kept as the interaction's rating/weight, and the
domain's ``order`` chooses the sequence order for leave-one-out: ``random`` (seeded, default
in the bundled domain) or ``weight`` (ascending play count, most played last).
"""

from __future__ import annotations

from crossrec_cli.data.assemble import RawInteractions, RawItems, assemble
from crossrec_cli.data.domain import READERS, Domain, DomainSpec
from crossrec_cli.data.table import read_delimited
from crossrec_cli.errors import CrossrecError


def load(spec: DomainSpec) -> Domain:
    folder = spec.folder()
    if spec.order == "time":
        raise CrossrecError(
            f"domain.{spec.name}.order", "Last.fm hetrec2011 has no timestamps", "set order: random or order: weight"
        )
    art = read_delimited(folder / "artists.dat")
    items = RawItems(art.path, art.require("id"), art.columns, art.lines)
    ua = read_delimited(folder / "user_artists.dat")
    inter = RawInteractions(
        ua.path, ua.require("userID"), ua.require("artistID"), ua.lines, None, ua.floats("weight")
    )
    return assemble(spec, items, inter)


READERS.add("lastfm", load)
