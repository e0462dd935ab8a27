"""metrics.json records and the rich table printed at the end of a command."""

from __future__ import annotations

from typing import Any


def metrics_record(command: str, model: str, mode: str, protocol: str, seed: int,
                   dataset: dict[str, dict], valid: dict[str, dict], test: dict[str, dict],
                   **extra: Any) -> dict[str, Any]:
    """The contract every command keeps (README "metrics.json")."""
    rec: dict[str, Any] = {
        "command": command, "model": model, "mode": mode, "protocol": protocol, "seed": seed,
        "dataset": dataset, "valid": valid, "test": test,
    }
    rec.update(extra)
    return rec


def metrics_table(record: dict[str, Any], title: str | None = None):
    """A rich Table: one row per (split, domain), one column per metric."""
    from rich.table import Table

    table = Table(title=title or f"{record['command']} · {record['model']} · {record['mode']} · {record['protocol']}")
    keys: list[str] = []
    for part in ("valid", "test"):
        for metrics in record.get(part, {}).values():
            keys += [k for k in metrics if k not in keys and "@" in k]
    table.add_column("split")
    table.add_column("domain")
    for k in keys:
        table.add_column(k, justify="right")
    for part in ("valid", "test"):
        for dom, metrics in record.get(part, {}).items():
            table.add_row(part, dom, *(f"{metrics[k]:.4f}" if k in metrics else "" for k in keys))
    return table
