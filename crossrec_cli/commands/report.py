"""crossrec report DIR: every metrics.json under DIR (a sweep, an outputs folder) in one table.

``report.csv`` (one row per run: command, model, mode, protocol, the data fingerprints, the swept
parameters from ``.hydra/overrides.yaml``, test and valid metrics), a rich table in the terminal
(runs that differ only in ``seed`` folded into mean ± std) and ``report.html`` with one plot per
swept parameter (the metric against its values, the best run highlighted). Runs on different data
fingerprints, protocols or modes are never ranked together: each such group is its own table,
and the report says so.

Usage: crossrec report DIR [--metric ndcg@10] [--split test] [--out DIR/report]
"""

from __future__ import annotations

import argparse
import base64
import csv
import html
import io
import json
import math
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from crossrec_cli.errors import CrossrecError
from crossrec_cli.io import atomic_write_text
from crossrec_cli.rundir import REPLACED


def collect(root: Path) -> list[dict[str, Any]]:
    """One flat row per metrics.json under ``root`` (finished runs; interrupted ones skipped)."""
    rows = []
    for path in sorted(root.rglob("metrics.json")):
        parts = path.relative_to(root).parts[:-1]
        if "report" in parts or any(REPLACED in part for part in parts):  # a run moved aside by overwrite=true
            continue
        try:
            rec = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise CrossrecError(str(path), f"not a readable metrics file: {exc}", "remove or repair it") from None
        if rec.get("status") == "interrupted" or "command" not in rec:
            continue
        run = path.parent
        overrides = {}
        ov_file = run / ".hydra" / "overrides.yaml"
        if ov_file.is_file():
            for item in yaml.safe_load(ov_file.read_text()) or []:
                key, _, value = str(item).partition("=")
                if not key.startswith("hydra"):
                    overrides[key.lstrip("+~")] = value
        data = rec.get("dataset", {})
        row: dict[str, Any] = {
            "run": str(run.relative_to(root)) or ".", "command": rec["command"], "model": rec.get("model"),
            "mode": rec.get("mode"), "seed": rec.get("seed"),
            # seen items removed from the ranking is another protocol: never ranked with the default
            "protocol": str(rec.get("protocol")) + (", seen removed" if rec.get("exclude_seen") else ""),
            "data": " ".join(f"{d}:{str(v.get('sha256', ''))[:12]}" for d, v in sorted(data.items())),
            "params": {k: v for k, v in overrides.items() if k != "seed"},
        }
        for split in ("valid", "test"):
            for dom, metrics in (rec.get(split) or {}).items():
                for k, v in metrics.items():
                    if isinstance(v, (int, float)) and not isinstance(v, bool):
                        row[f"{split}/{dom}/{k}"] = v
        rows.append(row)
    return rows


def value(row: dict[str, Any], split: str, metric: str) -> float:
    """The run's ``split`` ``metric``, averaged over its domains."""
    vals = [v for k, v in row.items() if k.startswith(f"{split}/") and k.endswith(f"/{metric}")]
    return float(np.mean(vals)) if vals else math.nan


def groups(rows: list[dict[str, Any]]) -> dict[tuple, list[dict[str, Any]]]:
    """Runs that may be ranked together: same command, protocol, mode and data fingerprints."""
    out: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        out[(r["command"], r["protocol"], r["mode"], r["data"])].append(r)
    return dict(out)


def swept(rows: list[dict[str, Any]]) -> list[str]:
    """The parameters whose value differs between runs of ``rows`` (seed aside)."""
    keys = sorted({k for r in rows for k in r["params"]})
    return [k for k in keys if len({str(r["params"].get(k)) for r in rows}) > 1]


def fold_seeds(rows: list[dict[str, Any]], split: str, metric: str) -> list[dict[str, Any]]:
    """Runs with the same swept parameters (all but seed): mean, std and count of the metric."""
    by: dict[str, list[dict[str, Any]]] = defaultdict(list)
    keys = swept(rows)
    for r in rows:
        by[json.dumps([r["model"], [(k, str(r["params"].get(k))) for k in keys]])].append(r)
    out = []
    for runs in by.values():
        vals = np.array([value(r, split, metric) for r in runs])
        out.append({"model": runs[0]["model"], "params": {k: runs[0]["params"].get(k, "(default)") for k in keys},
                    "n": len(runs),
                    "seeds": sorted(r["seed"] for r in runs if r["seed"] is not None),
                    "mean": float(np.nanmean(vals)) if np.isfinite(vals).any() else math.nan,
                    "std": float(np.nanstd(vals, ddof=1)) if np.isfinite(vals).sum() > 1 else math.nan,
                    "runs": [r["run"] for r in runs]})
    return sorted(out, key=lambda x: (-x["mean"] if math.isfinite(x["mean"]) else math.inf))


def write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    params = sorted({k for r in rows for k in r["params"]})
    metrics = sorted({k for r in rows for k in r if "/" in k})
    head = ["run", "command", "model", "mode", "protocol", "seed", "data", *params, *metrics]
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(head)
    for r in rows:
        w.writerow([r.get(h, r["params"].get(h, "")) for h in head])
    atomic_write_text(path, buf.getvalue())


def _plot(points: list[tuple[str, float, bool]], param: str, metric: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = sorted({p for p, _, _ in points}, key=lambda s: (_num(s) is None, _num(s) or 0, s))
    xs = {lab: i for i, lab in enumerate(labels)}
    fig, ax = plt.subplots(figsize=(5, 3.2), dpi=100)
    ax.scatter([xs[p] for p, _, b in points if not b], [v for _, v, b in points if not b], color="tab:blue", alpha=.7)
    ax.scatter([xs[p] for p, _, b in points if b], [v for _, v, b in points if b], color="tab:red", s=80,
               marker="*", label="best run")
    ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right", fontsize=8)
    ax.set_xlabel(param)
    ax.set_ylabel(metric)
    ax.legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _num(s: str) -> float | None:
    try:
        return float(s)
    except ValueError:
        return None


def write_html(parts: dict[tuple, list[dict[str, Any]]], split: str, metric: str, path: Path, root: Path) -> None:
    body = [f"<h1>crossrec report</h1><p>{html.escape(str(root))} · {split} {html.escape(metric)}, mean ± std "
            f"over seeds · {len(parts)} group(s) that are never ranked together</p>"]
    for gi, ((command, protocol, mode, data), rows) in enumerate(parts.items(), start=1):
        folded = fold_seeds(rows, split, metric)
        body.append(f"<h2 id='group-{gi}'>{html.escape(command)} · protocol {html.escape(str(protocol))} · mode "
                    f"{html.escape(str(mode))}</h2><p class='muted'>data {html.escape(data)}</p>")
        body.append("<table><tr><th>#</th><th>model</th><th>parameters</th><th>seeds</th>"
                    f"<th>{html.escape(metric)}</th></tr>")
        for i, f in enumerate(folded, start=1):
            cls = " class='best'" if i == 1 else ""
            std = f" ± {f['std']:.4f}" if math.isfinite(f["std"]) else ""
            params = ", ".join(f"{k}={v}" for k, v in sorted(f["params"].items())) or "(defaults)"
            body.append(f"<tr{cls}><td>{i}</td><td>{html.escape(str(f['model']))}</td><td>{html.escape(params)}</td>"
                        f"<td>{f['n']}</td><td>{f['mean']:.4f}{std}</td></tr>")
        body.append("</table>")
        best = max(rows, key=lambda r: value(r, split, metric) if math.isfinite(value(r, split, metric)) else -math.inf)
        for param in swept(rows):
            pts = [(str(r["params"].get(param, "(default)")), value(r, split, metric), r is best) for r in rows]
            if len({p for p, _, _ in pts}) > 1:
                body.append(f"<img alt='{html.escape(metric)} vs {html.escape(param)}' "
                            f"src='data:image/png;base64,{_plot(pts, param, metric)}'>")
    style = ("body{font-family:system-ui,sans-serif;max-width:1000px;margin:2em auto}table{border-collapse:collapse}"
             "td,th{padding:3px 8px;border-bottom:1px solid #eee;text-align:left}.best{background:#fef3c7;font-weight:600}"
             ".muted{color:#666;font-size:.9em}")
    atomic_write_text(path, f"<!doctype html><html><head><meta charset='utf-8'><title>crossrec report</title>"
                            f"<style>{style}</style></head><body>{''.join(body)}</body></html>")


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(prog="crossrec report", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dir")
    ap.add_argument("--metric", default="ndcg@10")
    ap.add_argument("--split", default="test", choices=["test", "valid"])
    ap.add_argument("--out", default=None, help="folder for report.csv / report.html (default DIR/report)")
    a = ap.parse_args(argv)
    from rich.console import Console
    from rich.table import Table

    root = Path(a.dir).expanduser()
    try:
        if not root.is_dir():
            raise CrossrecError(str(root), "not a folder", "pass a sweep or outputs folder")
        rows = collect(root)
        if not rows:
            raise CrossrecError(str(root), "no finished run (metrics.json) below this folder", "point at a sweep folder")
        out = Path(a.out).expanduser() if a.out else root / "report"
        parts = groups(rows)
        write_csv(rows, out / "report.csv")
        write_html(parts, a.split, a.metric, out / "report.html", root)
    except CrossrecError as exc:  # a disk fault while writing the report too
        print(exc.one_line(), file=sys.stderr)
        sys.exit(exc.exit_code)
    con = Console()
    if len(parts) > 1:
        con.print(f"[yellow]{len(parts)} groups of runs differ in command, protocol, mode or data fingerprint; "
                  "each is ranked on its own[/]")
    for (command, protocol, mode, data), group in parts.items():
        table = Table(title=f"{command} · {protocol} · {mode} · {data}")
        for col in ("#", "model", "parameters", "seeds", f"{a.split} {a.metric}"):
            table.add_column(col, justify="right" if col in ("#", "seeds") else "left")
        for i, f in enumerate(fold_seeds(group, a.split, a.metric), start=1):
            std = f" ± {f['std']:.4f}" if math.isfinite(f["std"]) else ""
            params = ", ".join(f"{k}={v}" for k, v in sorted(f["params"].items())) or "(defaults)"
            table.add_row(str(i), str(f["model"]), params, str(f["n"]),
                          f"{f['mean']:.4f}{std}" if math.isfinite(f["mean"]) else "–",
                          style="bold" if i == 1 else None)
        con.print(table)
    con.print(f"{len(rows)} runs · csv: {out / 'report.csv'} · html: {out / 'report.html'}")
