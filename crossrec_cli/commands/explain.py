"""crossrec explain: why a trained run recommends what it does, for given users.

Recipe: reload the run (``checkpoint_eval.load_run``) -> each user's whole history -> top-k
items (or ``item=``) -> per item: integrated-gradient contributions of the history items (exact
leave-one-out too when the history is short), token attributions of the item's text and of the
most influential history item, the deletion check -> explanation.json + explanation.html (first
user) and, for several users, explanations.jsonl; metrics.json holds the faithfulness summary.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, ListConfig
from rich.console import Console

from crossrec_cli.commands._common import finish, open_run_logger, run_dir, seed_everything
from crossrec_cli.commands.recsys import zero_shot_record
from crossrec_cli.errors import CrossrecError
from crossrec_cli.evaluation.report import metrics_record
from crossrec_cli.io import atomic_write_json, atomic_write_text
from crossrec_cli.progress import chunks


def _ids(value: Any) -> list[str]:
    if value is None:
        return []
    return [str(v) for v in value] if isinstance(value, (list, tuple, ListConfig)) else [str(value)]


def explain_user(scorer, domain, history: list[int], items: list[int], cfg: DictConfig) -> dict[str, Any]:
    from crossrec_cli.explain import attribution as at

    text = domain.item_text
    recs, tops, rands = [], [], []
    user_vec = scorer.user_vector(history)
    for item in items:
        contrib, score, gap = at.history_attributions(scorer, history, item, int(cfg.n_steps))
        hist = history[-scorer.model.cfg.max_history:]
        loo = at.ablation(scorer, hist, item) if len(hist) <= int(cfg.exact_max) else None
        faith = at.deletion(scorer, hist, item, contrib, seed=int(cfg.seed))
        tops.append(faith["top"])
        rands.append(faith["random"])
        rows = [{"item": domain.item_ids[h], "text": text[h], "contribution": float(c),
                 "ablation": None if loo is None else float(loo[j])} for j, (h, c) in enumerate(zip(hist, contrib))]
        best = hist[int(np.argmax(contrib))]
        paths = []
        if "kg" in scorer.model.features and "kg" in domain.item_features:
            paths = at.kg_paths(domain.item_features["kg"], item, hist, np.argsort(-contrib, kind="stable"))
            for p in paths:
                p["history_item"] = domain.item_ids[hist[p.pop("history_index")]]
        recs.append({"kg_paths": paths, "item": domain.item_ids[item], "text": text[item], "score": score, "completeness_gap": gap,
                     "history": rows, "deletion": faith,
                     "tokens": at.token_attributions(scorer, user_vec, text[item]),
                     "top_history_item": {"item": domain.item_ids[best], "text": text[best],
                                          "tokens": at.token_attributions(scorer, user_vec, text[best])}})
    k = min(len(t) for t in tops) if tops else 0
    faith = {"top": [float(np.mean([t[i] for t in tops])) for i in range(k)],
             "random": [float(np.mean([r[i] for r in rands])) for i in range(k)]}
    return {"recommendations": recs, "faithfulness": faith}


def run(cfg: DictConfig) -> dict[str, Any]:
    from crossrec_cli.commands.checkpoint_eval import load_run, single_domain_inputs
    from crossrec_cli.commands.recommend import histories
    from crossrec_cli.evaluation.ranking import top_items
    from crossrec_cli.explain.attribution import Scorer, attention_maps
    from crossrec_cli.explain.report import attention_png, explanation_html

    seed_everything(cfg.seed)
    loaded = load_run(cfg)
    single_domain_inputs(loaded, "explain")
    if len(loaded.domains) != 1:
        raise CrossrecError("domain", f"explain works on one domain, got {[s.name for s, _ in loaded.domains]}",
                            "pass domain=NAME")
    spec, domain = loaded.domains[0]
    everyone = histories(domain, spec.order, spec.order_seed)
    row = {domain.user_ids[u]: r for r, u in enumerate(everyone.users.tolist())}
    wanted = _ids(cfg.get("user"))
    for uid in wanted:
        if uid not in row:
            raise CrossrecError("user", f"unknown user id {uid!r}", f"not a user of domain {spec.name!r}")
    if int(cfg.sample):
        rest = [u for u in row if u not in wanted]
        pick = np.random.default_rng(int(cfg.seed)).choice(len(rest), size=min(int(cfg.sample), len(rest)), replace=False)
        wanted += [rest[i] for i in sorted(pick.tolist())]
    if not wanted:
        raise CrossrecError("user", "no user to explain", "pass user=<id> (or a list), or sample=N")
    item_index = {t: i for i, t in enumerate(domain.item_ids)}
    fixed = _ids(cfg.get("item"))
    if any(i not in item_index for i in fixed):
        raise CrossrecError("item", f"unknown item id {next(i for i in fixed if i not in item_index)!r}",
                            f"not an item of domain {spec.name!r}")
    scorer = Scorer.of(loaded.model, spec.name)
    model = loaded.model
    out, explained = run_dir(cfg), []
    for i in chunks("explain users", len(wanted), 1):
        uid = wanted[i]
        history = everyone.histories[row[uid]].tolist()
        if fixed:
            items = [item_index[i] for i in fixed]
        else:
            with torch.no_grad():
                u, it = model.scoring_vectors(scorer.user_vector(history), scorer.items[: model.n_targets(spec.name)])
            top, _ = top_items(u, it, int(cfg.k), [np.asarray(history)] if cfg.eval.exclude_seen else None)
            items = [i for i in top[0].tolist() if i >= 0]
        ex = {"user": uid, "run": str(cfg.run), "domain": spec.name, "method": "integrated gradients (captum)",
              "history": [{"item": domain.item_ids[h], "text": domain.item_text[h]} for h in history]}
        ex |= explain_user(scorer, domain, history, items, cfg)
        explained.append(ex)
    first = explained[0]
    hist = everyone.histories[row[first["user"]]].tolist()[-model.cfg.max_history:]
    maps = attention_maps(scorer, hist)
    if maps:
        first["attention"] = [m.round(4).tolist() for m in maps]
        page = dict(first, attention_png=attention_png(maps[-1], [domain.item_text[h] for h in hist],
                                                       f"user {first['user']}: last layer, mean over heads"))
    else:
        page = first
    atomic_write_json(out / "explanation.json", first)
    atomic_write_text(out / "explanation.html", explanation_html(page))
    if len(explained) > 1:
        atomic_write_text(out / "explanations.jsonl", "".join(json.dumps(e) + "\n" for e in explained))
    k = min(len(e["faithfulness"]["top"]) for e in explained)
    faith = {"users": len(explained), "recommendations": sum(len(e["recommendations"]) for e in explained),
             "top": [float(np.mean([e["faithfulness"]["top"][i] for e in explained])) for i in range(k)],
             "random": [float(np.mean([e["faithfulness"]["random"][i] for e in explained])) for i in range(k)],
             "max_completeness_gap": max(r["completeness_gap"] for e in explained for r in e["recommendations"])}
    record = metrics_record("explain", str(loaded.saved.model.name), "explanation", "integrated-gradients",
                            int(cfg.seed), {spec.name: domain.fingerprint()}, {}, {}, run=str(cfg.run),
                            users=[e["user"] for e in explained], faithfulness=faith,
                            **zero_shot_record(cfg, model, loaded.unseen))
    path = finish(cfg, record, open_run_logger(cfg))
    con = Console()
    for rec in first["recommendations"]:
        top3 = sorted(rec["history"], key=lambda h: -h["contribution"])[:3]
        con.print(f"[bold]{rec['text']}[/] score {rec['score']:.4f}: "
                  + "; ".join(f"{h['text']} ({h['contribution']:+.3f})" for h in top3))
    con.print(f"deletion (score drop, k=1..{k}): top-attributed {[round(x, 4) for x in faith['top']]} vs random "
              f"{[round(x, 4) for x in faith['random']]} over {faith['users']} users")
    con.print(f"explanation: {out / 'explanation.html'}\nmetrics: {path}")
    return record
