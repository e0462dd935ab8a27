"""Last.fm hetrec2011: ``user_artists.dat`` (userID, artistID, weight) and ``artists.dat``.

There are no timestamps. The play count is kept as the interaction's rating/weight, and the
domain's ``order`` chooses the sequence order for leave-one-out: ``random`` (seeded, default
in the bundled domain) or ``weight`` (ascending play count, most played last).

When the folder also holds the release's tag files (``tags.dat``, ``user_taggedartists.dat``),
each artist gets a ``tags`` column (``tags:`` in the domain file) and, with ``labels:``, a label
voted from its tags (see ``crossrec_cli/data/tags.py``).
"""

from __future__ import annotations

from crossrec_cli.data.assemble import RawInteractions, RawItems, assemble
from crossrec_cli.data.domain import READERS, Domain, DomainSpec
from crossrec_cli.data.table import read_delimited
from crossrec_cli.data.tags import LabelRule, TagSpec, has_tag_files, tag_columns
from crossrec_cli.errors import CrossrecError


def load(spec: DomainSpec) -> Domain:
    folder = spec.folder()
    if spec.order == "time":
        raise CrossrecError(
            f"domain.{spec.name}.order", "Last.fm hetrec2011 has no timestamps", "set order: random or order: weight"
        )
    art = read_delimited(folder / "artists.dat")
    ids = art.require("id")
    columns = dict(art.columns)
    if has_tag_files(folder):
        tags = TagSpec.from_dict(spec.tags or {}, f"domain.{spec.name}.tags")
        labels = LabelRule.from_dict(spec.labels, f"domain.{spec.name}.labels") if spec.labels else None
        columns |= tag_columns(folder, ids, tags, labels)
    elif spec.tags is not None or spec.labels is not None:
        raise CrossrecError(str(folder), "no tag files", "tags and labels need tags.dat and user_taggedartists.dat here")
    items = RawItems(art.path, ids, columns, art.lines)
    ua = read_delimited(folder / "user_artists.dat")
    inter = RawInteractions(
        ua.path, ua.require("userID"), ua.require("artistID"), ua.lines, None, ua.floats("weight")
    )
    return assemble(spec, items, inter)


READERS.add("lastfm", load)
