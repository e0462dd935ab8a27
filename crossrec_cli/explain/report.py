"""explanation.json and a self-contained explanation.html (inline CSS, the attention map as an
embedded PNG): what ``crossrec explain`` writes into its run directory."""

from __future__ import annotations

import base64
import html
import io
from typing import Any

import numpy as np


def attention_png(attn: np.ndarray, labels: list[str], title: str) -> str:
    """The attention map as a base64 PNG (rows: positions attending; columns: attended)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(labels)
    size = 2.5 + 0.32 * n
    fig, ax = plt.subplots(figsize=(size + 1.5, size), dpi=90)
    im = ax.imshow(attn, cmap="Blues", vmin=0)
    short = [lab if len(lab) <= 28 else lab[:27] + "…" for lab in labels]
    ax.set_xticks(range(n), short, rotation=70, ha="right", fontsize=7)
    ax.set_yticks(range(n), short, fontsize=7)
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.04)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _shade(value: float, scale: float) -> str:
    a = min(1.0, abs(value) / scale) if scale else 0.0
    return f"rgba(22,163,74,{a:.2f})" if value >= 0 else f"rgba(220,38,38,{a:.2f})"


def _tokens_html(tokens: list[list[Any]] | None) -> str:
    if not tokens:
        return "<p class='muted'>no token attributions (the item vector is not its text alone)</p>"
    scale = max(abs(a) for _, a in tokens) or 1.0
    spans = []
    for tok, a in tokens:
        word = tok[2:] if tok.startswith("##") else (" " + tok)
        spans.append(f"<span class='tok' style='background:{_shade(a, scale)}' title='{a:+.4f}'>"
                     f"{html.escape(word)}</span>")
    return "<p class='tokens'>" + "".join(spans) + "</p>"


def explanation_html(data: dict[str, Any]) -> str:
    """The page: per recommended item its score, text tokens, history contributions (bars),
    faithfulness numbers; the attention map once (it does not depend on the candidate)."""
    parts = [f"<h1>Why these items for user {html.escape(str(data['user']))}</h1>",
             f"<p class='muted'>run {html.escape(str(data['run']))} · domain {html.escape(data['domain'])} · "
             f"history of {len(data['history'])} items · attributions: {html.escape(data['method'])}</p>"]
    f = data.get("faithfulness") or {}
    if f.get("top"):
        parts.append("<h2>Faithfulness</h2><table class='faith' id='faithfulness'><tr><th>items removed</th>"
                     + "".join(f"<th>{k}</th>" for k in range(1, len(f["top"]) + 1)) + "</tr><tr><td>top-attributed</td>"
                     + "".join(f"<td>{x:.4f}</td>" for x in f["top"]) + "</tr><tr><td>random</td>"
                     + "".join(f"<td>{x:.4f}</td>" for x in f["random"]) + "</tr></table>"
                     "<p class='muted'>mean score drop over the recommendations when the k most-attributed "
                     "history items are removed, against k random ones</p>")
    for n, rec in enumerate(data["recommendations"], start=1):
        hist = rec["history"]
        scale = max((abs(h["contribution"]) for h in hist), default=1.0) or 1.0
        rows = "".join(
            f"<tr><td class='title'>{html.escape(h['text'])}</td><td class='num'>{h['contribution']:+.4f}</td>"
            f"<td class='num'>{'' if h.get('ablation') is None else format(h['ablation'], '+.4f')}</td>"
            f"<td class='barcell'><div class='bar' style='width:{100 * abs(h['contribution']) / scale:.0f}%;"
            f"background:{_shade(h['contribution'], abs(h['contribution']) or 1)}'></div></td></tr>"
            for h in sorted(hist, key=lambda h: -abs(h["contribution"]))[:15])
        parts.append(
            f"<section class='rec' id='rec-{n}'><h2>{n}. {html.escape(rec['text'])}</h2>"
            f"<p>score {rec['score']:.4f} · item {html.escape(str(rec['item']))} · completeness gap "
            f"{rec['completeness_gap']:.2e}</p><h3>Item text, token by token</h3>{_tokens_html(rec.get('tokens'))}"
            + (("<h3>Knowledge-graph paths to the history</h3><ul class='kg'>" + "".join(
                f"<li>{html.escape(' → '.join(p['path']))} (history item {html.escape(str(p['history_item']))})</li>"
                for p in rec["kg_paths"]) + "</ul>") if rec.get("kg_paths") else "")
            + f"<h3>History items that raise (green) or lower (red) the score</h3>"
            f"<table class='history'><tr><th>history item</th><th>IG</th><th>leave-one-out</th><th></th></tr>{rows}</table>"
            f"</section>")
    if data.get("attention_png"):
        parts.append(f"<h2>User tower attention (last layer)</h2><img id='attention' alt='attention map' "
                     f"src='data:image/png;base64,{data['attention_png']}'>")
    style = ("body{font-family:system-ui,sans-serif;max-width:980px;margin:2em auto;color:#111}"
             ".muted{color:#666;font-size:.9em}.barcell{width:180px}table{border-collapse:collapse;margin:.5em 0}"
             "td,th{padding:3px 8px;border-bottom:1px solid #eee;text-align:left}.num{text-align:right;"
             "font-variant-numeric:tabular-nums}.bar{height:10px;min-width:1px}.history td.title{max-width:520px}"
             ".tok{padding:1px 0;border-radius:3px}.tokens{line-height:1.9;font-family:ui-monospace,monospace}"
             "section.rec{border-top:2px solid #ddd;margin-top:1.5em}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>crossrec explain · user "
            f"{html.escape(str(data['user']))}</title><style>{style}</style></head><body>{''.join(parts)}</body></html>")
