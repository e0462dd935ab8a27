"""Instruction folders (``format: instruction``): ``train.json``, ``valid.json``, ``test.json``,
each a JSON list of ``{"instruction", "input", "output"}`` with output "Yes." or "No." (the
Alpaca / TALLRec layout). The examples are kept as given for task=preference.

The returned Domain has one "item" per example (id ``<split>:<index>``, text = its input) and no
users or interactions; ``examples`` holds the questions with their labels.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from crossrec_cli.data.domain import READERS, Domain, DomainSpec
from crossrec_cli.data.table import read_text
from crossrec_cli.errors import CrossrecError

SPLITS = ("train", "valid", "test")
KEYS = ("instruction", "input", "output")


@dataclass
class InstructionRecord:
    instruction: str
    input: str
    output: str
    label: int  # 1 for "Yes.", 0 for "No."
    line: int  # 1-based line where the entry starts


@dataclass
class InstructionDomain(Domain):
    examples: dict[str, list[InstructionRecord]] = field(default_factory=dict)

    def sha256(self, features: tuple[str, ...] | list[str] = ()) -> str:
        """The examples' content (an instruction folder has no other item feature)."""
        h = hashlib.sha256()
        for name in SPLITS:
            for r in self.examples.get(name, []):
                h.update(f"{name}\x1f{r.instruction}\x1f{r.input}\x1f{r.label}\x1e".encode())
        return h.hexdigest()


def parse_output(value: str) -> int | None:
    """1 / 0 for "Yes." / "No." (case, surrounding space and the final period optional), else None."""
    word = value.strip().rstrip(".").strip().lower()
    return {"yes": 1, "no": 0}.get(word)


def _entries(path: Path) -> list[tuple[object, int]]:
    """The JSON list's entries with the line each starts on (so errors can point at them)."""
    text = read_text(path)
    dec = json.JSONDecoder()

    def skip(pos: int) -> int:
        while pos < len(text) and text[pos] in " \t\r\n":
            pos += 1
        return pos

    def line_of(pos: int) -> int:
        return text.count("\n", 0, pos) + 1

    pos = skip(0)
    if text[pos:pos + 1] != "[":
        raise CrossrecError(str(path), "expected a JSON list of {instruction, input, output} entries",
                            "the Alpaca / TALLRec layout", line=line_of(pos))
    out: list[tuple[object, int]] = []
    pos = skip(pos + 1)
    while text[pos:pos + 1] != "]":
        if out:
            if text[pos:pos + 1] != ",":
                raise CrossrecError(str(path), f"after entry {len(out) - 1}: expected ',' or ']'",
                                    "fix the JSON list", line=line_of(pos))
            pos = skip(pos + 1)
        try:
            obj, end = dec.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            raise CrossrecError(str(path), f"entry {len(out)}: not valid JSON: {exc.msg}", "fix the file",
                                line=exc.lineno, col=exc.colno) from None
        out.append((obj, line_of(pos)))
        pos = skip(end)
    if text[skip(pos + 1):].strip():
        raise CrossrecError(str(path), "text after the JSON list", "one list per file", line=line_of(skip(pos + 1)))
    return out


def read_split(path: Path) -> list[InstructionRecord]:
    """Validate every entry; a problem names the file, the entry's line and its index."""
    records = []
    for k, (obj, line) in enumerate(_entries(path)):
        if not isinstance(obj, dict):
            raise CrossrecError(str(path), f"entry {k} is not an object", "expected {instruction, input, output}",
                                line=line)
        for key in KEYS:
            if not isinstance(obj.get(key), str):
                what = "is missing" if key not in obj else "is not a string"
                raise CrossrecError(str(path), f"entry {k}: {key!r} {what}",
                                    "every entry needs instruction, input and output strings", line=line)
        label = parse_output(obj["output"])
        if label is None:
            raise CrossrecError(str(path), f"entry {k}: output {obj['output']!r} is not a yes/no answer",
                                'expected "Yes." or "No."', line=line)
        records.append(InstructionRecord(obj["instruction"], obj["input"], obj["output"], label, line))
    if not records:
        raise CrossrecError(str(path), "no entries", "expected at least one {instruction, input, output}", line=1)
    return records


def load(spec: DomainSpec) -> InstructionDomain:
    folder = spec.folder()
    examples = {name: read_split(folder / f"{name}.json") for name in SPLITS}
    ids = [f"{name}:{k}" for name in SPLITS for k in range(len(examples[name]))]
    inputs = [r.input for name in SPLITS for r in examples[name]]
    columns = {
        "split": [i.split(":")[0] for i in ids],
        "instruction": [r.instruction for name in SPLITS for r in examples[name]],
        "input": inputs,
        "output": [r.output for name in SPLITS for r in examples[name]],
    }
    empty_i, empty_f = np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float64)
    return InstructionDomain(spec.name, ids, {"text": inputs}, columns, [], empty_i, empty_i.copy(), empty_f,
                             empty_f.copy(), origin=str(folder), examples=examples)


READERS.add("instruction", load)
