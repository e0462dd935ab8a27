"""crossrec recommend: the top-k items for each user of one domain.

Recipe: load the domain -> each user's whole history (every interaction, in the domain's order)
-> the scorer (a trained run's model, or a baseline fitted on every interaction) -> top-k per user
(exact, or a FAISS index with ``eval.index=faiss``; with ``rerank=calibrated|mmr`` the best
``rerank_pool`` candidates re-ranked into k, evaluation/rerankers/) -> ``recommendations.jsonl`` +
``recommendations.tsv`` and ``metrics.json`` (catalogue coverage and popularity of what was
recommended, the index used). An inductive (text) run recommends in domains it never saw: the
zero-shot use case.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, ListConfig
from rich.console import Console
from rich.table import Table

from crossrec_cli.commands._common import finish, load_domains, open_run_logger, run_dir, seed_everything
from crossrec_cli.data import Domain, EvalSet, Split
from crossrec_cli.data.split import order_interactions
from crossrec_cli.data.table import read_text
from crossrec_cli.errors import CrossrecError
from crossrec_cli.evaluation.beyond import beyond_accuracy
from crossrec_cli.evaluation.index import TopK, build_index
from crossrec_cli.evaluation.report import metrics_record
from crossrec_cli.evaluation.rerankers import Pool, rerank, scores_of
from crossrec_cli.io import atomic_write_text


def histories(domain: Domain, order: str, seed: int) -> EvalSet:
    """Every user with an interaction and their whole history, oldest first (``targets`` -1)."""
    idx = order_interactions(domain.inter_user, domain.inter_time, domain.inter_rating, order, seed)
    users, items = domain.inter_user[idx], domain.inter_item[idx]
    bounds = np.flatnonzero(np.diff(users)) + 1
    us = [int(u[0]) for u in np.split(users, bounds) if len(u)]
    hs = [h.copy() for h in np.split(items, bounds) if len(h)]
    return EvalSet(np.asarray(us, dtype=np.int64), hs, np.full(len(us), -1, dtype=np.int64))


def chosen_users(value: Any, domain: Domain, everyone: EvalSet) -> EvalSet:
    """``users=``: null (everyone with an interaction), a list of user ids, or a file of ids."""
    if value is None:
        return everyone
    if isinstance(value, (list, tuple, ListConfig)):
        ids, where, lines = [str(v) for v in value], "users", None
    else:
        path = Path(str(value)).expanduser()
        rows = read_text(path).splitlines()
        lines = [n for n, r in enumerate(rows, start=1) if r.strip()]
        ids, where = [rows[n - 1].strip() for n in lines], str(path)
        if not ids:
            raise CrossrecError(where, "file lists no user", "one user id a line", line=1)
    index = {u: i for i, u in enumerate(domain.user_ids)}
    row = {int(u): r for r, u in enumerate(everyone.users)}
    keep = []
    for n, uid in enumerate(ids):
        line = lines[n] if lines else None
        if uid not in index:
            raise CrossrecError(where, f"unknown user id {uid!r}", f"not a user of domain {domain.name!r}", line=line)
        keep.append(row[index[uid]])  # every user of a domain has an interaction
    return EvalSet(everyone.users[keep], [everyone.histories[r] for r in keep], everyone.targets[keep])


def scorer(cfg: DictConfig, domain: Domain, users: EvalSet, name: str):
    """(user vectors of ``users``, item vectors, model name, mode, metrics.json entries of the
    zero-shot settings that applied) from ``run=`` or the baseline."""
    if cfg.get("run"):
        from crossrec_cli.commands.checkpoint_eval import load_run, single_domain_inputs
        from crossrec_cli.commands.recsys import model_mode, zero_shot_record
        from crossrec_cli.models.seqrec import seqrec_scorer

        loaded = load_run(cfg)  # refuses a transductive run on a domain it never saw
        single_domain_inputs(loaded, "recommend")
        user_vecs, item_vecs = seqrec_scorer(loaded.model, name, cfg.eval.batch_size, refresh=loaded.model.backbone_trains)
        unseen = [name] if name in loaded.unseen else []
        mode = "zero-shot" if unseen else model_mode(loaded.saved)
        return (user_vecs(users), item_vecs, str(loaded.saved.model.name), mode,
                zero_shot_record(cfg, loaded.model, unseen))
    from crossrec_cli.commands.evaluate import baseline_scorer
    from crossrec_cli.models.baselines import BASELINES

    if str(cfg.model.name) not in BASELINES:
        raise CrossrecError("model", f"{cfg.model.name!r} is not a baseline",
                            f"recommend with a trained model via run=<run dir>; baselines: {', '.join(BASELINES.names())}")
    # a baseline fitted on every interaction: the whole histories are its training sequences
    full = Split(users.users, users.histories, users, users, "all interactions")
    user_vecs, item_vecs = baseline_scorer(cfg, domain, full, {})
    return user_vecs(users), item_vecs, str(cfg.model.name), "zero-shot", {}


def run(cfg: DictConfig) -> dict[str, Any]:
    seed_everything(cfg.seed)
    domains = load_domains(cfg)
    if len(domains) != 1:
        raise CrossrecError("domain", f"recommend works on one domain, got {[s.name for s, _ in domains]}",
                            "pass domain=NAME")
    spec, domain = domains[0]
    k = cfg.k
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise CrossrecError("k", f"expected a positive integer, got {k!r}", "e.g. k=10")
    everyone = histories(domain, spec.order, spec.order_seed)
    users = chosen_users(cfg.get("users"), domain, everyone)
    user_vecs, item_vecs, model_name, mode, zero = scorer(cfg, domain, users, spec.name)
    exclude = users.histories if cfg.eval.exclude_seen else None
    index = top_k_index(cfg.eval, item_vecs)
    counts = np.bincount(domain.inter_item, minlength=domain.n_items)
    reranking = rerank_settings(cfg, k)
    idx, scores = index.search(user_vecs, reranking.get("pool", k), exclude, cfg.eval.user_chunk)
    if reranking:  # the best rerank_pool candidates reordered into k slots (evaluation/rerankers/)
        pool = Pool(np.asarray(idx), np.asarray(scores, dtype=np.float64), users.histories,
                    item_vecs.detach().float().cpu().numpy(), counts[: item_vecs.shape[0]], reranking["lambda"])
        idx = rerank(reranking["name"], pool, k, cfg.eval.user_chunk)
        scores = scores_of(pool, idx)
    out = run_dir(cfg)
    write_recommendations(out, domain, users, idx, scores)
    record = metrics_record(
        "recommend", model_name, mode, "recommend-all-interactions", int(cfg.seed),
        {spec.name: domain.fingerprint()}, {}, {}, run=str(cfg.run) if cfg.get("run") else None, k=k,
        users=len(users), exclude_seen=bool(cfg.eval.exclude_seen), index=index.describe(),
        rerank=reranking or {"name": "none"},
        recommendations={"jsonl": str(out / "recommendations.jsonl"), "tsv": str(out / "recommendations.tsv")},
        beyond_accuracy={spec.name: beyond_accuracy(idx, counts, users.histories, k)}, **zero,
    )
    path = finish(cfg, record, open_run_logger(cfg))
    Console().print(preview(domain, users, idx, scores))
    used = index.describe()
    settings = ", ".join(f"{key}={v}" for key, v in used.items() if key not in ("index", "kind"))
    Console().print(f"index: {used['index']} {used.get('kind', '')}{f' ({settings})' if settings else ''}\n"
                    f"recommendations: {out / 'recommendations.jsonl'}\nmetrics: {path}")
    return record


def rerank_settings(cfg: DictConfig, k: int) -> dict[str, Any]:
    """``rerank=``: {} for none (where ``rerank_pool`` / ``rerank_lambda`` are refused, not
    ignored), else ``{"name", "pool", "lambda"}`` with their defaults (100, 0.5) filled."""
    if str(cfg.rerank) == "none":
        for key in ("rerank_pool", "rerank_lambda"):
            if cfg.get(key) is not None:
                raise CrossrecError(key, "is set but rerank=none re-ranks nothing", "add rerank=calibrated or rerank=mmr, or drop it")
        return {}
    pool = 100 if cfg.rerank_pool is None else int(cfg.rerank_pool)
    if pool < k:
        raise CrossrecError("rerank_pool", f"{pool} candidates cannot fill k={k} slots", f"use rerank_pool >= k, e.g. rerank_pool={max(100, k)}")
    return {"name": str(cfg.rerank), "pool": pool, "lambda": 0.5 if cfg.rerank_lambda is None else float(cfg.rerank_lambda)}


def top_k_index(ev: DictConfig, item_vecs) -> TopK:
    """``eval.index=exact``: ``top_items``; ``faiss``: the ``eval.faiss.kind`` index, with its own keys."""
    if ev.index == "exact":
        return build_index(item_vecs, "exact")
    f = ev.faiss
    options = {"flat": {}, "ivf": {"nlist": f.nlist, "nprobe": f.nprobe},
               "hnsw": {"hnsw_m": f.hnsw_m, "ef_construction": f.ef_construction, "ef_search": f.ef_search}}
    return build_index(item_vecs, str(f.kind), **options[str(f.kind)])


def write_recommendations(out: Path, domain: Domain, users: EvalSet, idx: np.ndarray, scores: np.ndarray) -> None:
    """One JSON line per user, items best first; the same rows as a TSV for spreadsheets."""
    text = domain.item_text
    lines, rows = [], ["user\trank\titem\tscore\ttext"]
    for u, items, vals in zip(users.users.tolist(), idx, scores):
        uid = domain.user_ids[u]
        recs = [{"item": domain.item_ids[i], "score": float(v), "text": text[i]} for i, v in zip(items, vals) if i >= 0]
        lines.append(json.dumps({"user": uid, "items": recs}, ensure_ascii=False))
        rows += [f"{uid}\t{r}\t{x['item']}\t{x['score']:.6g}\t{_cell(x['text'])}" for r, x in enumerate(recs, start=1)]
    atomic_write_text(out / "recommendations.jsonl", "\n".join(lines) + "\n")
    atomic_write_text(out / "recommendations.tsv", "\n".join(rows) + "\n")


def _cell(text: str) -> str:
    return text.replace("\t", " ").replace("\n", " ")


def preview(domain: Domain, users: EvalSet, idx: np.ndarray, scores: np.ndarray, n: int = 3) -> Table:
    table = Table(title=f"recommendations · {domain.name} · first {min(n, len(users))} of {len(users)} users")
    for col in ("user", "rank", "item", "score", "text"):
        table.add_column(col, justify="right" if col in ("rank", "score") else "left", overflow="fold")
    for u, items, vals in list(zip(users.users.tolist(), idx, scores))[:n]:
        for r, (i, v) in enumerate(zip(items, vals), start=1):
            if i >= 0:
                table.add_row(domain.user_ids[u] if r == 1 else "", str(r), domain.item_ids[i], f"{v:.4f}",
                              domain.item_text[i][:60])
    return table
