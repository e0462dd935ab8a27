"""Preference examples (history, candidate, label): built from rated interactions, or read as
given from an instruction folder (Alpaca / TALLRec layout); seeded few-shot sampling.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from crossrec_cli.data.domain import Domain
from crossrec_cli.data.split import order_interactions
from crossrec_cli.errors import CrossrecError
from crossrec_cli.io import atomic_write_json

# TALLRec's wording; the decoder prompt and the instruction-file export use it
INSTRUCTION = ("Given the user's preference and unpreference, identify whether the user will like the "
               "target item by answering \"Yes.\" or \"No.\".")
INPUT_TEMPLATE = ("User Preference: {liked}\nUser Unpreference: {disliked}\n"
                  "Whether the user will like the target item {candidate}?")


@dataclass
class PrefExample:
    """One preference question. ``liked``/``disliked`` hold history item texts (oldest first).

    Examples read from instruction files keep their text in ``input`` and ``instruction`` and are
    used as given; the history lists are then parsed from the TALLRec wording when it matches.
    """

    liked: list[str]
    disliked: list[str]
    candidate: str
    label: int  # 1 = like / "Yes."
    instruction: str | None = None
    input: str | None = None
    key: str = ""  # where it came from: "<user>:<position>" or "<file>:<index>"


@dataclass
class PreferenceData:
    train: list[PrefExample]
    valid: list[PrefExample]
    test: list[PrefExample]
    source: str  # "ratings" | "instruction"
    notes: dict = field(default_factory=dict)


def quoted(texts: list[str]) -> str:
    return ", ".join(f'"{t}"' for t in texts) if texts else "none"


def render_input(ex: PrefExample, template: str = INPUT_TEMPLATE) -> str:
    """The question text: the instruction file's input as given, else ``template`` filled in."""
    if ex.input is not None:
        return ex.input
    return template.format(liked=quoted(ex.liked), disliked=quoted(ex.disliked), candidate=f'"{ex.candidate}"')


def encoder_pair(ex: PrefExample, history_template: str) -> tuple[str, str | None]:
    """(first, second) segment for ``history [SEP] candidate``; instruction inputs are one segment."""
    if ex.input is not None:
        return ex.input, None
    return history_template.format(liked=quoted(ex.liked), disliked=quoted(ex.disliked)), ex.candidate


def likes(ratings: np.ndarray, users: np.ndarray, threshold: float | str) -> np.ndarray:
    """like = rating > threshold; ``"user_median"``: rating > that user's median rating."""
    if threshold == "user_median":
        med = np.zeros(int(users.max()) + 1 if len(users) else 0)
        for u in np.unique(users):
            med[u] = np.median(ratings[users == u])
        return ratings > med[users]
    return ratings > float(threshold)


def from_ratings(domain: Domain, like_threshold: float | str = 3, max_history: int = 10,
                 min_history: int = 1, order: str = "time", order_seed: int = 0) -> PreferenceData:
    """Per user, time-ordered: each interaction after ``min_history`` earlier ones is a candidate,
    its previous ``max_history`` items the history split by like. Like leave-one-out, a user's last
    example is test, the second-last valid, the rest train (fewer than 3 examples: train only)."""
    if np.isnan(domain.inter_rating).all():
        raise CrossrecError(f"domain {domain.name}", "task=preference needs ratings and this domain has none",
                            "use a rated domain or an instruction folder (format: instruction)")
    idx = order_interactions(domain.inter_user, domain.inter_time, domain.inter_rating, order, order_seed)
    users, items = domain.inter_user[idx], domain.inter_item[idx]
    liked = likes(np.nan_to_num(domain.inter_rating[idx], nan=-np.inf), users, like_threshold)
    text = domain.item_text
    out: tuple[list, list, list] = ([], [], [])
    bounds = np.flatnonzero(np.diff(users)) + 1
    for seq_u, seq, lab in zip(np.split(users, bounds), np.split(items, bounds), np.split(liked, bounds)):
        exs = []
        for p in range(max(min_history, 0), len(seq)):
            lo = max(0, p - max_history)
            h, hl = seq[lo:p], lab[lo:p]
            exs.append(PrefExample([text[i] for i in h[hl]], [text[i] for i in h[~hl]], text[seq[p]],
                                   int(lab[p]), key=f"{domain.user_ids[seq_u[0]]}:{p}"))
        if len(exs) < 3:
            out[0].extend(exs)
            continue
        out[0].extend(exs[:-2])
        out[1].append(exs[-2])
        out[2].append(exs[-1])
    return PreferenceData(out[0], out[1], out[2], source="ratings",
                          notes={"like_threshold": like_threshold, "max_history": max_history})


_QUOTED = re.compile(r'"([^"]*)"')


def parse_tallrec(text: str) -> tuple[list[str], list[str], str] | None:
    """(liked, disliked, candidate) from TALLRec wording, or None when it does not match."""
    m = re.search(r"User Preference:(.*)\n\s*User Unpreference:(.*)\n(.*)", text, re.DOTALL)
    if not m:
        return None
    cand = _QUOTED.findall(m.group(3))
    return _QUOTED.findall(m.group(1)), _QUOTED.findall(m.group(2)), (cand[-1] if cand else m.group(3).strip())


def from_instruction(domain: Domain) -> PreferenceData:
    """The examples of a ``format: instruction`` domain, text as given."""
    splits = getattr(domain, "examples", None)
    if splits is None:
        raise CrossrecError(f"domain {domain.name}", "not an instruction-format domain", "set format: instruction")
    parts = []
    for name in ("train", "valid", "test"):
        exs = []
        for k, rec in enumerate(splits[name]):
            parsed = parse_tallrec(rec.input) or ([], [], "")
            exs.append(PrefExample(parsed[0], parsed[1], parsed[2], rec.label, rec.instruction, rec.input,
                                   key=f"{name}.json:{k}"))
        parts.append(exs)
    return PreferenceData(parts[0], parts[1], parts[2], source="instruction")


def preference_data(domain: Domain, **kwargs) -> PreferenceData:
    """Instruction domains as given, every other domain from its ratings (kwargs: ``from_ratings``)."""
    if getattr(domain, "examples", None) is not None:
        return from_instruction(domain)
    return from_ratings(domain, **kwargs)


def sample(examples: list, n: int | None, seed: int) -> list:
    """A seeded random ``n`` of ``examples`` (all of them, in order, when n is None)."""
    if n is None:
        return list(examples)
    if n < 1:
        raise CrossrecError("task.train_samples", f"must be positive, got {n}", "use null for all examples")
    if n > len(examples):
        raise CrossrecError("task.train_samples", f"asks for {n} examples but only {len(examples)} exist",
                            "lower it or use null for all")
    pick = np.random.default_rng(seed).choice(len(examples), size=n, replace=False)
    return [examples[i] for i in np.sort(pick)]


def write_instruction_folder(data: PreferenceData, folder: str | Path,
                             instruction: str = INSTRUCTION, template: str = INPUT_TEMPLATE) -> Path:
    """Write ``train/valid/test.json`` in the Alpaca / TALLRec layout (atomic writes)."""
    folder = Path(folder)
    for name, exs in (("train", data.train), ("valid", data.valid), ("test", data.test)):
        atomic_write_json(folder / f"{name}.json", [
            {"instruction": ex.instruction or instruction, "input": render_input(ex, template),
             "output": "Yes." if ex.label else "No."} for ex in exs])
    return folder
