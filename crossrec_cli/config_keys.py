"""Keys a command line adds (``+eval.foo=1``): Hydra lets a ``+`` override add any key, so a
misspelt or unknown one would be read by nothing, a silent no-op. Each added key must be one its
section already has in the command's config (its command file, the chosen config of each group,
the experiment file), or one the section's schema declares (``SCHEMAS``).

Plain dicts in, CrossrecError out; ``cli.py`` composes the config without the additions (``base``).
"""

from __future__ import annotations

import difflib
import importlib
from dataclasses import fields
from typing import Any

from crossrec_cli.errors import CrossrecError

# section -> the dataclass whose fields it may hold beyond its config file's keys: a domain file
# may leave out any optional field (``+domain.user_groups=...``)
SCHEMAS = {"domain": "crossrec_cli.data.domain:DomainSpec"}


def schema_keys(section: str) -> set[str]:
    """The fields of ``section``'s dataclass in SCHEMAS (empty without one)."""
    if section not in SCHEMAS:
        return set()
    module, _, attr = SCHEMAS[section].partition(":")
    return {f.name for f in fields(getattr(importlib.import_module(module), attr))}


def check_added(base: dict[str, Any], key: str, command: str) -> None:
    """``key`` (``eval.foo``) added by ``+key=value`` to ``crossrec <command>``, whose config
    without the additions is ``base``: an unknown top-level key or an unknown key of a section is a
    CrossrecError. A key ``base`` already has (``++key=value``), a key under a value that is not a
    mapping, and a key nested deeper (``data.overrides.*``, ``backbone.config.*``, ``eval.faiss.*``,
    ``task.head.*``) pass: the code that reads the nested mapping checks its keys."""
    parts = key.split(".")
    if parts[0] not in base:
        raise CrossrecError(key, f"crossrec {command} has no such key or choice",
                            f"check the spelling; `crossrec {command} --cfg job` lists the keys")
    node, depth = base, 0
    while depth < len(parts) and isinstance(node, dict) and parts[depth] in node:
        node, depth = node[parts[depth]], depth + 1
    if depth != 1 or not isinstance(node, dict):
        return
    section, name = parts[0], parts[1]
    known = sorted(set(node) | schema_keys(section))
    if name in known:
        return
    label = f"{section}={node['name']}" if isinstance(node.get("name"), str) else section
    raise CrossrecError(f"{section}.{name}", f"crossrec {command} has no such key in {label}",
                        f"expected one of {', '.join(known)}; e.g. {_example(section, name, node, known)}")


def _example(section: str, name: str, node: dict[str, Any], known: list[str]) -> str:
    """``section.<the known key closest to name>=<its value>``, as an override is written."""
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    with_value = [k for k in node if k != "name" and _scalar(node[k])]
    pick = close[0] if close else (with_value[0] if with_value else known[0])
    value = node.get(pick)
    return f"{section}.{pick}={as_override(value)}" if _scalar(value) and pick in node else f"{section}.{pick}=..."


def _scalar(value: Any) -> bool:
    return value is None or isinstance(value, (bool, int, float, str)) or (
        isinstance(value, list) and all(isinstance(v, (bool, int, float, str)) for v in value))


def as_override(value: Any) -> str:
    """A value as a command-line override writes it: null, true, [10,50], {a: 1}."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return "[" + ",".join(as_override(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {as_override(v)}" for k, v in value.items()) + "}"
    return str(value)
