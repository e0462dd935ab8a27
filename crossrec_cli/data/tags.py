"""Item tags as text, and item labels voted from tags (Last.fm hetrec2011 tag files).

A domain whose folder holds ``tags.dat`` (``tagID<TAB>tagValue``, latin-1) and
``user_taggedartists.dat`` (``userID<TAB>artistID<TAB>tagID<TAB>day<TAB>month<TAB>year``) gets an
item column ``tags``: the artist's tags, most users first, tags given by fewer than
``min_users`` distinct users in the whole file dropped, at most ``max_tags``::

    tags: {max_tags: 10, min_users: 5}

``labels:`` votes one label per item from its tags (no code, e.g. a coarse music genre)::

    labels:
      column: genre            # the item column it creates (point label_field at it)
      vote: users              # users: distinct users who gave any of a class's tags | assignments
      tie: assignments         # assignments: fewer raw assignments loses, still tied -> no label
                               # | drop: a tie -> no label | order: the class listed first wins
      min_voters: 2            # the winning class needs at least this many votes
      hide_label_words: true   # task input text leaves out every class tag and every tag with one
      words: [rock, metal]     #   of ``words`` (a tag token starting with one) in it
      describe: "{label} music"  # a class in words, for the zero-shot classifier
      classes: {rock: [rock, classic rock], metal: [metal, heavy metal]}

``hide_label_words`` keeps the label from leaking into the classifier's input: the label task
reads the column ``tags:without_label_words`` (``HIDDEN``) in place of ``tags``, while
recommendation text keeps every tag. Tag assignments of artist ids that are not in the item file
are skipped (the hetrec release has 390 such ids).
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from crossrec_cli.data.table import read_delimited
from crossrec_cli.errors import CrossrecError

TAG_FILES = ("tags.dat", "user_taggedartists.dat")
HIDDEN = ":without_label_words"  # suffix of a text column with the label words left out
# labels.vote: a class's votes on an item from (the users who gave it one of the class's tags, the
# number of such (user, tag) assignments)
VOTES: dict[str, Callable[[set, int], int]] = {"users": lambda users, n: len(users), "assignments": lambda users, n: n}
# labels.tie: (the tied classes, assignments per class, class -> its order in the rule) -> the classes kept;
# one class left is the label, several are no label
TIES: dict[str, Callable[[list, Counter, dict], list]] = {
    "assignments": lambda top, assignments, order: [c for c in top if assignments[c] == max(assignments[t] for t in top)],
    "drop": lambda top, assignments, order: top,
    "order": lambda top, assignments, order: [min(top, key=order.__getitem__)],
}

ItemTags = dict[str, set[str]]  # tag value -> the distinct users who gave it to the item


@dataclass
class TagSpec:
    """The ``tags:`` key of a domain file."""

    max_tags: int = 10
    min_users: int = 5
    separator: str = ", "

    @classmethod
    def from_dict(cls, raw: Any, where: str) -> TagSpec:
        data = _mapping(raw, where, {"max_tags": int, "min_users": int, "separator": str},
                        "write e.g. tags: {max_tags: 10, min_users: 5}")
        spec = cls(**data)
        for key in ("max_tags", "min_users"):
            if getattr(spec, key) < 1:
                raise CrossrecError(f"{where}.{key}", f"expected a positive count, got {getattr(spec, key)!r}",
                                    "use an integer of at least 1")
        return spec


@dataclass
class LabelRule:
    """The ``labels:`` key of a domain file: one label per item, voted from its tags."""

    column: str
    classes: dict[str, list[str]]
    vote: str = "users"
    tie: str = "assignments"
    min_voters: int = 1
    hide_label_words: bool = True
    words: list[str] = field(default_factory=list)
    describe: str = "{label}"  # a class in words, for zero-shot scoring (e.g. "{label} music")

    @classmethod
    def from_dict(cls, raw: Any, where: str) -> LabelRule:
        types = {"column": str, "classes": dict, "vote": str, "tie": str, "min_voters": int,
                 "hide_label_words": bool, "words": list, "describe": str}
        data = _mapping(raw, where, types, "write e.g. labels: {column: genre, classes: {rock: [rock]}}")
        for key in ("column", "classes"):
            if key not in data:
                raise CrossrecError(f"{where}.{key}", "missing required value", "set it in the domain file")
        rule = cls(**data)
        if len(rule.classes) < 2:
            raise CrossrecError(f"{where}.classes", f"expected at least two classes, got {len(rule.classes)}",
                                "map each class name to a list of tags")
        owner: dict[str, str] = {}
        for name, tags in rule.classes.items():
            if not isinstance(tags, list) or not tags or not all(isinstance(t, str) and t for t in tags):
                raise CrossrecError(f"{where}.classes.{name}", f"expected a list of tags, got {tags!r}",
                                    "e.g. rock: [rock, classic rock]")
            for t in tags:
                t = t.lower()
                if t in owner and owner[t] != name:
                    raise CrossrecError(f"{where}.classes.{name}", f"tag {t!r} is also listed under {owner[t]!r}",
                                        "give each tag to one class")
                owner[t] = name
        if not all(isinstance(w, str) and w for w in rule.words):
            raise CrossrecError(f"{where}.words", f"expected a list of words, got {rule.words!r}", "e.g. [rock, metal]")
        if "{label}" not in rule.describe:
            raise CrossrecError(f"{where}.describe", f"expected a template with {{label}}, got {rule.describe!r}",
                                'e.g. describe: "{label} music"')
        if rule.vote not in VOTES:
            raise CrossrecError(f"{where}.vote", f"unknown vote {rule.vote!r}", f"expected one of {list(VOTES)}")
        if rule.tie not in TIES:
            raise CrossrecError(f"{where}.tie", f"unknown tie rule {rule.tie!r}", f"expected one of {list(TIES)}")
        if rule.min_voters < 1:
            raise CrossrecError(f"{where}.min_voters", f"expected a positive count, got {rule.min_voters!r}",
                                "use an integer of at least 1")
        return rule

    def owner(self) -> dict[str, str]:
        """Lower-cased tag -> its class."""
        return {t.lower(): name for name, tags in self.classes.items() for t in tags}

    def hides(self, tag: str) -> bool:
        """Whether ``tag`` is a label word: one of a class's tags, or a tag with a token that starts
        with one of ``words`` ("alternative rock" with words [rock])."""
        low = tag.lower()
        if low in self.owner():
            return True
        tokens = re.split(r"[^0-9a-z&]+", low)
        return any(tok.startswith(w.lower()) for tok in tokens if tok for w in self.words)


def _mapping(raw: Any, where: str, types: dict[str, type], example: str) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise CrossrecError(where, f"expected a mapping, got {raw!r}", example)
    for key, value in raw.items():
        if key not in types:
            raise CrossrecError(f"{where}.{key}", "unknown key", f"expected one of {sorted(types)}")
        tp = types[key]
        if not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
            raise CrossrecError(f"{where}.{key}", f"expected {tp.__name__}, got {value!r}", example)
    return dict(raw)


def has_tag_files(folder: Path) -> bool:
    return all((folder / f).is_file() for f in TAG_FILES)


def read_item_tags(folder: Path, item_index: dict[str, int]) -> list[ItemTags]:
    """Per item (by ``item_index``), tag value -> the users who gave it. Rows naming an item id
    that is not in the item file are skipped; a tag id missing from ``tags.dat`` is an error."""
    tags_t = read_delimited(folder / "tags.dat", encoding="latin-1")
    names = dict(zip(tags_t.require("tagID"), tags_t.require("tagValue")))
    ut = read_delimited(folder / "user_taggedartists.dat")
    out: list[ItemTags] = [defaultdict(set) for _ in item_index]
    for user, artist, tag, line in zip(ut.require("userID"), ut.require("artistID"), ut.require("tagID"), ut.lines):
        value = names.get(tag)
        if value is None:
            raise CrossrecError(str(ut.path), f"tag id {tag!r} is not in tags.dat", "every tagID needs a tag value",
                                line=line, col=ut.names.index("tagID") + 1)
        i = item_index.get(artist)
        if i is not None:
            out[i][value.strip().lower()].add(user)
    return [dict(d) for d in out]


def tag_users(items: list[ItemTags]) -> Counter:
    """Tag -> distinct users who gave it to any item."""
    users: dict[str, set[str]] = defaultdict(set)
    for d in items:
        for tag, us in d.items():
            users[tag] |= us
    return Counter({t: len(us) for t, us in users.items()})


def tag_text(items: list[ItemTags], spec: TagSpec, hide: LabelRule | None = None) -> list[str]:
    """Each item's tags, most users first (ties: more users overall, then alphabetical), tags of
    fewer than ``spec.min_users`` users overall dropped, at most ``spec.max_tags``; with ``hide``
    the label words are left out before counting."""
    total = tag_users(items)
    out = []
    for d in items:
        kept = [t for t in d if total[t] >= spec.min_users and not (hide and hide.hides(t))]
        kept.sort(key=lambda t: (-len(d[t]), -total[t], t))
        out.append(spec.separator.join(kept[: spec.max_tags]))
    return out


def vote_labels(items: list[ItemTags], rule: LabelRule) -> list[str]:
    """One label per item ("" when none): the class with the most votes (``rule.vote``), ties
    settled by ``rule.tie``, at least ``rule.min_voters`` votes."""
    owner = rule.owner()
    order = {name: k for k, name in enumerate(rule.classes)}
    labels = []
    for d in items:
        users: dict[str, set[str]] = defaultdict(set)
        assignments: Counter = Counter()
        for tag, us in d.items():
            c = owner.get(tag)
            if c is not None:
                users[c] |= us
                assignments[c] += len(us)
        votes = {c: VOTES[rule.vote](users[c], assignments[c]) for c in users}
        if not votes:
            labels.append("")
            continue
        best = max(votes.values())
        top = [c for c in votes if votes[c] == best]
        if len(top) > 1:
            top = TIES[rule.tie](top, assignments, order)
        labels.append(top[0] if len(top) == 1 and best >= rule.min_voters else "")
    return labels


def tag_columns(folder: Path, item_ids: list[str], tags: TagSpec,
                labels: LabelRule | None) -> dict[str, list[str]]:
    """The item columns the tag files give: ``tags``, and with ``labels`` the label column and
    (``hide_label_words``) ``tags:without_label_words``."""
    items = read_item_tags(folder, {iid: k for k, iid in enumerate(item_ids)})
    cols = {"tags": tag_text(items, tags)}
    if labels is not None:
        cols[labels.column] = vote_labels(items, labels)
        if labels.hide_label_words:
            cols["tags" + HIDDEN] = tag_text(items, tags, hide=labels)
    return cols
