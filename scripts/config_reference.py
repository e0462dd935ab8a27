#!/usr/bin/env python3
"""docs/configuration.md, generated from what defines the configuration: the config files
(crossrec_cli/conf/, their comments included), the domain file's schema (DomainSpec, FilterSpec)
and the value checks (crossrec_cli/config_check.py CHECKS).

    python scripts/config_reference.py [--out docs/configuration.md]

tests/test_config_reference.py regenerates the page and compares it byte for byte, so a changed
config file, comment or check goes with a regenerated page.
"""

from __future__ import annotations

import argparse
import ast
import inspect
import re
import sys
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from crossrec_cli.cli import COMMANDS  # noqa: E402
from crossrec_cli.config_check import CHECKS  # noqa: E402
from crossrec_cli.config_keys import as_override  # noqa: E402
from crossrec_cli.data.domain import DomainSpec, FilterSpec  # noqa: E402

CONF = REPO / "crossrec_cli" / "conf"
OUT = REPO / "docs" / "configuration.md"
GROUPS = ["domain", "backbone", "adapter", "model", "fusion", "adversarial", "privacy", "trainer", "logger", "task", "experiment"]
KEY = re.compile(r"^(\s*)([A-Za-z_][\w-]*):(.*)$")


def _comment(rest: str) -> tuple[str, str]:
    """A line's value text and its ``# comment`` (a ``#`` inside quotes is text)."""
    quote = None
    for i, ch in enumerate(rest):
        if ch in "\"'" and quote in (None, ch):
            quote = None if quote else ch
        elif ch == "#" and quote is None and (i == 0 or rest[i - 1].isspace()):
            return rest[:i].strip(), rest[i + 1:].strip()
    return rest.strip(), ""


class Notes:
    """What a config file says beside its values: the leading comment (``header``), each dotted
    key's comment (``notes``) and value as written (``raw``), the defaults list (``defaults``:
    [entry, comment])."""

    def __init__(self) -> None:
        self.header: list[str] = []
        self.notes: dict[str, str] = {}
        self.raw: dict[str, str] = {}
        self.defaults: list[list[str]] = []


def read_comments(path: Path) -> Notes:
    """A comment line indented deeper than the key (or defaults entry) above continues its
    comment; one at the key's own depth or less leads the next key."""
    out = Notes()
    stack: list[tuple[int, str]] = []
    last: tuple[int, str] | None = None
    lead: list[str] = []
    in_defaults = False
    for line in path.read_text(encoding="utf-8").splitlines():
        text = line.strip()
        if not text or text.startswith("# @package"):
            last = None if not text else last
            continue
        col = len(line) - len(line.lstrip())
        if text.startswith("#"):
            body = text[1:].strip()
            if not stack and not in_defaults and last is None:
                out.header.append(body)
            elif last is not None and col > last[0] and last[1] == "-":
                out.defaults[-1][1] = f"{out.defaults[-1][1]} {body}".strip()
            elif last is not None and col > last[0]:
                out.notes[last[1]] = f"{out.notes.get(last[1], '')} {body}".strip()
            else:
                lead.append(body)
            continue
        if in_defaults and text.startswith("-"):
            entry, note = _comment(text[1:])
            out.defaults.append([entry, note])
            last = (col, "-")
            continue
        m = KEY.match(line)
        if not m:
            continue
        indent, key = len(m.group(1)), m.group(2)
        while stack and stack[-1][0] >= indent:
            stack.pop()
        path_key = ".".join([k for _, k in stack] + [key])
        in_defaults = path_key == "defaults"
        raw, note = _comment(m.group(3))
        note = " ".join([*lead, note]).strip()
        lead = []
        if note:
            out.notes[path_key] = note
        if raw:
            out.raw[path_key] = raw
        stack.append((indent, key))
        last = (indent, path_key)
    return out


def leaves(node: dict[str, Any], notes: dict[str, str], prefix: str = "") -> list[tuple[str, Any, bool]]:
    """(dotted key, value, is a mapping) for every leaf of a config mapping, and for each
    non-empty mapping that has a comment of its own (an empty mapping is a leaf)."""
    out = []
    for k, v in node.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out += [(key, None, True)] if key in notes else []
            out += leaves(v, notes, f"{key}.")
        else:
            out.append((key, v, False))
    return out


def cell(text: str) -> str:
    return text.replace("|", "\\|")


def key_table(path: Path, prefix: str = "", skip: tuple[str, ...] = ("defaults",)) -> list[str]:
    """The keys of one config file but ``skip``: key, default, what its comment says (and the
    value check)."""
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    notes = read_comments(path)
    rows = []
    for key, v, mapping in leaves({k: x for k, x in data.items() if k not in skip}, notes.notes):
        full, note = f"{prefix}{key}", notes.notes.get(key, "")
        if full in CHECKS:
            note = f"{note} **Checked**: {CHECKS[full][1]}.".strip()
        default = "(mapping)" if mapping else f"`{cell(notes.raw.get(key) or as_override(v))}`"
        rows.append(f"| `{full}` | {default} | {cell(note)} |")
    if not rows:
        return ["No keys of its own.", ""]
    return ["| key | default | notes |", "|---|---|---|", *rows, ""]


def commands() -> list[str]:
    out = ["## Commands", "",
           "Each command composes its config from `base.yaml` (above), one config of each group in its",
           "defaults list (`group=option` on the command line picks another) and its own keys.", ""]
    for cmd in COMMANDS:
        name = "data_stats" if cmd == "data" else cmd
        path = CONF / f"{name}.yaml"
        if not path.is_file():
            continue
        notes = read_comments(path)
        shown = "data stats" if cmd == "data" else cmd
        header = " ".join(notes.header)
        out += [f"### crossrec {shown}", "", *([header, ""] if header else []), "Defaults list:", ""]
        for entry, note in notes.defaults:
            if entry in ("base", "_self_"):
                continue
            out.append(f"- `{entry.replace(': ', '=')}`" + (f": {note}" if note else ""))
        out += ["", *key_table(path, skip=("defaults", "hydra"))]  # hydra: only the job's name
    return out


def groups() -> list[str]:
    out = ["## Config groups", "",
           "One folder per group under `crossrec_cli/conf/`; `group=option` picks a file. Files marked",
           "*global* (`# @package _global_`) set keys anywhere in the config.", ""]
    for group in GROUPS:
        options = sorted((CONF / group).glob("*.yaml"))
        out += [f"### {group}", "", "Options: " + ", ".join(f"`{p.stem}`" for p in options) + ".", ""]
        if group == "domain":
            out += domain_schema()
        for path in options:
            header = " ".join(read_comments(path).header)
            glob = path.read_text(encoding="utf-8").startswith("# @package _global_")
            out += [f"#### {group}={path.stem}" + (" (global)" if glob else ""), ""]
            out += [header, ""] if header else []
            defaults = read_comments(path).defaults
            picks = [e.replace("override /", "").replace(": ", "=") for e, _ in defaults if e != "_self_"]
            out += [f"Picks {', '.join(f'`{p}`' for p in picks)}.", ""] if picks else []
            out += key_table(path, "" if glob else f"{group}.")
    return out


def field_notes(cls: type) -> dict[str, str]:
    """The ``# comment`` after each field of a dataclass, from its source."""
    notes = {}
    for line in inspect.getsource(cls).splitlines():
        m = re.match(r"\s+(\w+): [^=#]+(?:=[^#]*)?#\s*(.*)$", line)
        if m:
            notes[m.group(1)] = m.group(2).strip()
    return notes


def dataclass_table(cls: type, prefix: str) -> list[str]:
    notes, rows = field_notes(cls), []
    for f in fields(cls):
        if f.default is not MISSING:
            default = f"`{cell(as_override(f.default))}`"
        elif f.default_factory is not MISSING:
            made = f.default_factory()
            default = f"`{cell(as_override(made))}`" if not hasattr(made, "__dataclass_fields__") else "see below"
        else:
            default = "required"
        kind = ast.unparse(ast.parse(str(f.type), mode="eval")) if isinstance(f.type, str) else str(f.type)
        rows.append(f"| `{prefix}{f.name}` | `{cell(kind)}` | {default} | {cell(notes.get(f.name, ''))} |")
    return ["| key | type | default | notes |", "|---|---|---|---|", *rows, ""]


def domain_schema() -> list[str]:
    return ["A domain file (`domain/<name>.yaml`, bundled or on `hydra.searchpath`) takes these keys",
            "(`DomainSpec` in `crossrec_cli/data/domain.py`; an unknown key is an error naming the file);",
            "`data.overrides` is merged into every domain file of a run.", "",
            *dataclass_table(DomainSpec, ""), *dataclass_table(FilterSpec, "filters.")]


def checks() -> list[str]:
    rows = [f"| `{k}` | {cell(str(expected))} | `{cell(k)}={cell(example)}` |"
            for k, (_, expected, example) in CHECKS.items()]
    return ["## Checked values", "",
            "Each key below is checked before a command reads any data; a bad value stops it with one",
            "line, `error: <key>: expected ...; e.g. <key>=<example>`, and exit code 2",
            "(`crossrec_cli/config_check.py`).", "",
            "| key | expected | example |", "|---|---|---|", *rows, ""]


def page() -> str:
    lines = ["# Configuration reference", "",
             "Generated by `python scripts/config_reference.py` from the config files in `crossrec_cli/conf/`",
             "(their comments are the notes below), the domain file's schema and the value checks; edit those,",
             "not this page. `crossrec <command> --cfg job` prints the config a command line composes.", "",
             "Overrides are Hydra's: `key=value` changes a key, `group=option` picks a config file,",
             "`+key=value` adds a key. A key added that the command's config does not have (a misspelling,",
             "a key of another adapter, `+eval.foo=1`) is refused in one line, `error: <key>: crossrec",
             "<command> has no such key in <section>; expected one of ...; e.g. ...`, before anything runs.",
             "Nested free-form mappings (`data.overrides`, `backbone.config`, `model.feature_settings`)",
             "are checked by the code that reads them.", "",
             "## Keys every command shares (`base.yaml`)", "", *key_table(CONF / "base.yaml"),
             *commands(), *groups(), *checks()]
    return "\n".join(lines).rstrip() + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=OUT)
    out = ap.parse_args().out
    out.write_text(page(), encoding="utf-8")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
