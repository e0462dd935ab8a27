"""Recipe helpers shared by finetune, transfer, pretrain and evaluate for the recommender."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from crossrec_cli.io import read_safetensors

from crossrec_cli.commands._common import item_features, item_score, names, run_dir
from crossrec_cli.data import Domain, DomainSpec, Split, with_every_user
from crossrec_cli.adapters import ADAPTERS, param_counts
from crossrec_cli.errors import CrossrecError
from crossrec_cli.evaluation.protocol import evaluate_split, extras_by_key, groups_of, test_report
from crossrec_cli.evaluation.metrics import ndcg_gains
from crossrec_cli.evaluation.ranking import candidate_lists, full_ranks
from crossrec_cli.models.build import build_recommender
from crossrec_cli.models.features import Catalogue
from crossrec_cli.models.prior import pick_prior_weight
from crossrec_cli.models.seqrec import SeqRec, is_transductive, seqrec_scorer
from crossrec_cli.training import checkpoint as ckpt
from crossrec_cli.training.batches import windows
from crossrec_cli.training.loop import Progress, TrainConfig, load_trainable_state

log = logging.getLogger("crossrec")


def train_config(cfg: DictConfig, splits: dict[str, Split]) -> TrainConfig:
    tc = TrainConfig(**OmegaConf.to_container(cfg.trainer, resolve=True), seed=int(cfg.seed))
    if tc.window_stride is not None and tc.window_stride > cfg.model.max_history:
        raise CrossrecError("trainer.window_stride", f"{tc.window_stride} skips targets",
                            f"use at most model.max_history ({cfg.model.max_history}), or null")
    if tc.sampled_above is not None and tc.loss != "auto":
        raise CrossrecError("trainer.sampled_above", f"is read by trainer.loss=auto only, and trainer.loss is {tc.loss}",
                            "add trainer.loss=auto, or drop trainer.sampled_above")
    return tc


def total_steps(cfg: DictConfig, splits: dict[str, Split], tc: TrainConfig) -> int:
    per_epoch = sum(math.ceil(len(windows(s, cfg.model.max_history, tc.window_stride)) / tc.batch_size) for s in splits.values())
    if tc.max_steps_per_epoch:
        per_epoch = min(per_epoch, tc.max_steps_per_epoch)
    return max(1, per_epoch * tc.epochs)


def build_model(cfg: DictConfig, catalogues: list[tuple[str, Domain]], tc: TrainConfig | None = None,
                splits: dict[str, Split] | None = None, steps: int | None = None) -> SeqRec:
    """The recommender of ``cfg`` with every domain's catalogue registered. ``steps``: the training
    steps when the caller counts them itself (pretrain; AdaLoRA's schedule reads them)."""
    if cfg.model.name != "seqrec":
        raise CrossrecError("model", f"{cfg.model.name!r} is a baseline, not a trainable model",
                            "use `crossrec evaluate model=...` for baselines, or model=seqrec")
    if cfg.backbone.kind == "none" and cfg.model.get("features") is None and not cfg.model.item_ids:
        raise CrossrecError("model.item_ids", "backbone=none needs item ids", "set model.item_ids=true (ID-only SASRec)")
    steps = steps or (total_steps(cfg, splits, tc) if (tc and splits) else 1)  # only AdaLoRA's schedule reads it
    bcfg = OmegaConf.to_container(cfg.backbone, resolve=True)
    pretrained = Path(str(cfg.init_from)).expanduser() / "checkpoint" / "backbone" if cfg.get("init_from") else None
    if pretrained is not None and (pretrained / "config.json").is_file():  # a `crossrec pretrain` run
        _checkpoint_file(pretrained.parent)
        bcfg.update(path=str(pretrained), local=None, config=None)
    per_domain = None
    if cfg.get("per_domain_adapters"):
        problem = ADAPTERS.get(str(cfg.adapter.name)).named_adapters_problem(str(cfg.adapter.name))
        if problem:
            able = [m for m, fam in ADAPTERS.items() if not fam.named_adapters_problem(m)]
            raise CrossrecError("per_domain_adapters", problem, f"use adapter={', '.join(able)} for per-domain adapters")
        per_domain = [name for name, _ in catalogues]
    model = build_recommender(OmegaConf.to_container(cfg.model, resolve=True), bcfg,
                              OmegaConf.to_container(cfg.adapter, resolve=True), int(cfg.seed), steps, per_domain)
    for name, domain in catalogues:
        model.add_catalogue(name, Catalogue.of(domain))
    dev = device(cfg)
    model.to(dev)
    model.cache_vectors = bool(cfg.eval.cache_vectors)
    if tc is not None and tc.compile:  # in place: the state dict keeps its keys
        model.user.compile()
    return model


def adversary_of(cfg: DictConfig, model: SeqRec, domains: list[str], fairness: Any = None):
    """``adversarial=<name>`` (its config file's keys as settings) or ``adversarial=[a,b]`` (the
    command line layer keeps each file under its name): the training step's adversary or None.
    ``fairness``: the training windows' groups of ``fairness.attribute`` (``fair_training``), handed
    to every method as its ``fairness`` setting (adversarial=fair reads it)."""
    from crossrec_cli.adversarial import build_adversary

    node = cfg.get("adversarial")
    if node is None:
        return None
    raw = OmegaConf.to_container(node, resolve=True)
    name = raw.pop("name")
    for settings in ([raw[str(n)] for n in name] if isinstance(name, list) else [raw]):
        settings["fairness"] = fairness
    return build_adversary(name, model, domains, raw)


def fair_training(cfg: DictConfig, domains: list, splits: dict[str, Split], max_history: int,
                  tc: TrainConfig) -> tuple[Any, dict[str, Any] | None]:
    """``fairness.attribute`` / ``fairness.reweight`` of a finetune run: (the windows' groups for
    adversarial=fair or None, the windows' loss weights per domain for fairness.reweight or None);
    each key is refused in one line where it cannot apply."""
    import numpy as np

    from crossrec_cli.adversarial.fair import FairLabels
    from crossrec_cli.evaluation.fairness import REWEIGHTS, training_labels
    from crossrec_cli.training.batches import window_users, windows

    node = cfg.get("fairness") or {}
    attribute, reweight = node.get("attribute"), str(node.get("reweight", "none"))
    adversarial = "fair" in names(cfg.adversarial.name)
    if attribute is None:
        for key, on in (("adversarial", adversarial), ("fairness.reweight", reweight != "none")):
            if on:
                raise CrossrecError(key, f"{'fair' if key == 'adversarial' else reweight} acts on a user attribute, "
                                    "and fairness.attribute is null", "set fairness.attribute=<a column of the "
                                    "domain's user_groups>, e.g. fairness.attribute=gender")
        return None, None
    if not adversarial and reweight == "none":
        raise CrossrecError("fairness.attribute", f"{attribute} is read by adversarial=fair and fairness.reweight, "
                            "and neither is on", "add adversarial=fair or fairness.reweight=group, or drop it")
    if cfg.mixed_history or cfg.context:
        raise CrossrecError("fairness.attribute", "mixed histories (mixed_history, context) are not supported",
                            "train without mixed_history / context")
    groups = {}
    for spec, domain in domains:
        columns = groups_of(spec, domain) or {}
        if attribute not in columns:
            choices = ", ".join(sorted(columns)) or "none (the domain file has no user_groups)"
            raise CrossrecError("fairness.attribute", f"{attribute!r} is not a user_groups column of domain "
                                f"{spec.name}", f"expected one of: {choices}")
        groups[spec.name] = columns[attribute]
    fair, weights = None, None
    owners = {k: window_users(s, max_history, tc.window_stride) for k, s in splits.items()}
    if adversarial:
        seen = {k: training_labels(splits[k], groups[k], int(cfg.seed))[owners[k]] for k in splits}
        classes = sorted({g for v in seen.values() for g in v.tolist()} - {""})
        if len(classes) < 2:
            raise CrossrecError("fairness.attribute", f"training users hold {len(classes)} group(s) of {attribute}",
                                "choose a column with at least two groups")
        index = {c: i for i, c in enumerate(classes)}
        fair = FairLabels(attribute, classes, {k: np.asarray([index.get(g, -1) for g in v.tolist()], dtype=np.int64)
                                               for k, v in seen.items()})
    make = REWEIGHTS[reweight]
    if make is not None:
        weights = {k: make(groups[k][owners[k]], np.asarray([n for _, n in windows(s, max_history, tc.window_stride)]))
                   for k, s in splits.items()}
    return fair, weights


def device(cfg: DictConfig) -> torch.device:
    from crossrec_cli.models.backbone import resolve_device

    return resolve_device(str(cfg.device))


def ranking_options(cfg: DictConfig) -> dict[str, Any]:
    """How ``full_ranks`` scores (``eval.score_dtype`` on the run's ``device``); the ranks are
    the same either way."""
    return {"score_dtype": str(cfg.eval.get("score_dtype", "float32")), "device": device(cfg)}


def early_stopping_sample(cfg: DictConfig) -> dict[str, int]:
    """metrics.json's ``valid_users`` when early stopping ranked a sample of the validation
    examples (the epochs' ``history`` metrics are on that sample)."""
    n = cfg.eval.get("valid_users")
    return {"valid_users": int(n)} if n else {}


def text_prior(cfg: DictConfig) -> dict[str, dict[str, float]]:
    """metrics.json's ``text_prior`` entry (weight, recency) for a run with ``model.text_prior`` > 0, else nothing."""
    weight = float(cfg.model.get("text_prior") or 0.0)
    return {"text_prior": {"weight": weight, "recency": float(cfg.model.get("text_prior_recency", 0.9))}} if weight else {}


# eval.zero_shot_prior=auto: the weights tried on an unseen domain's validation examples (1024: the
# text scorer all but alone)
ZERO_SHOT_GRID = (0.0, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 64.0, 1024.0)


def zero_shot_prior(cfg: DictConfig, model: Any) -> float | str:
    """``eval.zero_shot_prior``: the text zero-shot scorer's weight in a trained model's logits on a
    domain it never trained on, or "auto" (0 for a model without item text, which cannot rank such a domain)."""
    if not model.reads_text:
        return 0.0
    value = cfg.eval.get("zero_shot_prior", 0.0)
    return value if value == "auto" else float(value)


def choose_zero_shot_prior(cfg: DictConfig, model: Any, key: str, split: Split) -> dict[float, float]:
    """``eval.zero_shot_prior=auto``: rank domain ``key``'s validation examples (their targets are
    inputs of its test examples, never test targets) with each weight of ZERO_SHOT_GRID and keep
    the one ``pick_prior_weight`` picks (the text scorer all but alone, unless a smaller weight is
    better by more than one standard error); returns {weight: valid NDCG@10}."""
    valid = split.valid
    exclude = valid.histories if cfg.eval.exclude_seen else None
    gains = {}
    for w in ZERO_SHOT_GRID:
        model.set_text_prior(key, w)
        users, items = seqrec_scorer(model, key, int(cfg.eval.batch_size))
        ranks = full_ranks(users(valid), items, valid.targets, exclude, int(cfg.eval.user_chunk),
                           int(cfg.eval.item_chunk))
        gains[w] = ndcg_gains(ranks, 10)
    best = pick_prior_weight(gains)
    model.set_text_prior(key, best)
    scores = {w: float(g.mean()) if len(g) else 0.0 for w, g in gains.items()}
    log.info("eval.zero_shot_prior=auto on %s: weight %g (valid ndcg@10 %.4f; text scorer all but alone %.4f, "
             "the model alone %.4f)", key, best, scores[best], scores[ZERO_SHOT_GRID[-1]], scores[0.0])
    return scores


def zero_shot_record(cfg: DictConfig, model: Any, unseen: list[str]) -> dict[str, dict]:
    """metrics.json's ``zero_shot_prior`` entry (weight, recency, the domains it applied to; with
    auto the weight chosen per domain and every weight's valid NDCG@10) and ``zero_shot_align``
    (the domains whose LM vectors were shifted), each when it applied."""
    out: dict[str, Any] = {}
    weight = zero_shot_prior(cfg, model)
    if unseen and weight:
        out["zero_shot_prior"] = {"weight": weight, "recency": model.prior.recency, "domains": list(unseen)}
        if weight == "auto":
            out["zero_shot_prior"]["chosen"] = {n: model.prior_weights.get(n) for n in unseen}
            out["zero_shot_prior"]["valid_ndcg@10"] = {n: {f"{w:g}": v for w, v in model.prior_choice[n].items()}
                                                      for n in unseen if n in model.prior_choice}
    shifted = [n for n in unseen if model.reads_text and n in model.features["text"].shift]
    if shifted:
        out["zero_shot_align"] = {"domains": shifted}
    plain = [n for n in unseen if model.reads_text and n in model.features["text"].plain]
    if plain:  # projection=residual: the correction learned on the training catalogues is not applied
        out["zero_shot_items"] = {"domains": plain, "read": "language-model space (the projection's base)"}
    general = [n for n in unseen if n in model.general_users]
    if general:  # readout=residual | pool: the user without its transformer (Readout.general)
        out["zero_shot_users"] = {"domains": general, "read": f"the domain-general user of readout={model.cfg.readout}"}
    return out


def align_text(model: Any, unseen: list[str], trained_on: list[str],
               load: Callable[[str], Domain] | None = None) -> None:
    """``eval.zero_shot_align``: shift each unseen domain's LM vectors to the mean of the catalogues
    the model trained on (``load`` reads a training domain the model does not hold yet)."""
    text = model.features["text"]
    for name in trained_on:
        if name not in model.catalogues:
            if load is None:
                raise CrossrecError(f"domain={name}", "the model trained on it but holds no catalogue of it",
                                    "register the training domains before aligning an unseen one")
            model.add_catalogue(name, Catalogue.of(load(name)))
    mean = torch.cat([text.base(n) for n in trained_on]).mean(0)
    for name in unseen:
        text.align_to(name, mean)


def rank_unseen(cfg: DictConfig, model: Any, unseen: list[str], trained_on: list[str],
                load: Callable[[str], Domain] | None = None, splits: dict[str, Split] | None = None) -> None:
    """From now on ``model`` ranks the ``unseen`` domains (never trained on) as ``crossrec evaluate``
    ranks a domain a run never saw: ``eval.zero_shot_align`` shifts their LM vectors (``load`` reads
    a training domain the model holds no catalogue of), a projection with a catalogue-specific part
    (projection=residual's learned correction) reads them through its base only, and
    ``eval.zero_shot_prior`` adds the text scorer (``auto``: its weight chosen on each domain's
    validation examples, from ``splits``)."""
    if unseen and model.reads_text and bool(cfg.eval.get("zero_shot_align", False)):
        align_text(model, unseen, trained_on, load)
    for name in unseen if model.reads_text else []:  # a projection's catalogue-specific part stays with its catalogues
        model.features["text"].read_plain(name)
    for name in unseen:  # so does the user tower's transformer: the readout's domain-general user reads them
        model.read_general(name)
    weight = zero_shot_prior(cfg, model)
    for name in unseen:  # ensembled with the text zero-shot scorer (models/prior.py)
        if weight == "auto":
            if name not in (splits or {}):
                raise CrossrecError("eval.zero_shot_prior", f"auto needs domain {name}'s validation examples",
                                    "pass its split, or set a number")
            model.prior_choice[name] = choose_zero_shot_prior(cfg, model, name, splits[name])
        else:
            model.set_text_prior(name, weight)


@contextmanager
def zero_shot(cfg: DictConfig, model: Any, target: str, trained_on: list[str],
              split: Split | None = None) -> Iterator[dict]:
    """``rank_unseen`` for ``target`` (its ``split``) within the block only (the model holds the
    catalogues of ``target`` and ``trained_on``); yields metrics.json's entries for it."""
    with model.text_prior_on(target, 0.0):  # restores the domain's prior weight on leaving
        rank_unseen(cfg, model, [target], trained_on, splits={target: split} if split is not None else None)
        try:
            yield zero_shot_record(cfg, model, [target])
        finally:
            model.prior_choice.pop(target, None)
            if model.reads_text:
                model.features["text"].shift.pop(target, None)
                model.features["text"].read_plain(target, on=False)
            model.read_general(target, on=False)


def test_users(cfg: DictConfig, split: Split, domain: str, reads_interactions: bool, scorer: str) -> Split:
    """``eval.test_users``: ``split`` keeps the split's test examples; ``all`` adds each training
    sequence's last item (``with_every_user``), refused for a scorer that read the domain's
    interactions (``scorer`` names it), whose training users' last items are inside what it read."""
    if cfg.eval.get("test_users", "split") != "all":
        return split
    if reads_interactions:
        raise CrossrecError("eval.test_users", f"all ranks domain {domain}'s training users' own last items, "
                            f"which {scorer} read", "use it with model=text_zeroshot, or with run= on a domain "
                            "the run never trained on")
    return with_every_user(split)


def model_mode(cfg: DictConfig) -> str:
    """transductive when an item feature learns per-item parameters (item ids), else inductive."""
    return "transductive" if is_transductive(item_features(cfg)) else "inductive"


def evaluate_model(cfg: DictConfig, model: SeqRec, key: str, split: Split, domain: Domain | None = None,
                   refresh: bool | None = None, parts: tuple[str, ...] = ("valid", "test"),
                   spec: DomainSpec | None = None) -> dict[str, dict[str, float]]:
    """Valid and test metrics of ``model`` on one domain under the protocol in ``cfg.eval``
    (``parts=("valid",)``: validation only, for early stopping). With ``spec`` (a final
    evaluation) also ``"extras"``: beyond-accuracy figures and per-group metrics (test_report)."""
    if not model.can_score(key):
        raise CrossrecError(f"domain={key}", "a transductive model (item ids) cannot score a domain it was not trained on",
                            "evaluate it on its training domains, or train with model.item_ids=false")
    user_vecs, item_vecs = seqrec_scorer(model, key, cfg.eval.batch_size,
                                         refresh=model.backbone_trains if refresh is None else refresh)
    cands = None
    if cfg.eval.candidates and domain is not None:
        cands = candidate_lists(str(cfg.eval.candidates), domain)
    sample = cfg.eval.get("valid_users") if parts == ("valid",) else None  # early stopping only
    res = evaluate_split(user_vecs, item_vecs, split, list(cfg.eval.topk), cfg.eval.exclude_seen, cands,
                         str(cfg.eval.candidates), cfg.eval.user_chunk, cfg.eval.item_chunk, parts,
                         valid_users=sample, seed=int(cfg.seed), **ranking_options(cfg))
    if spec is not None and domain is not None and cands is None and "test" in parts:
        res["extras"] = test_report(user_vecs, item_vecs, split, list(cfg.eval.topk), cfg.eval.exclude_seen,
                                    groups_of(spec, domain), cfg.eval.user_chunk, cfg.eval.item_chunk,
                                    seed=int(cfg.seed), **ranking_options(cfg))
    return res


def check_same_data(out: Path, dataset: dict[str, dict], resuming: bool) -> None:
    """Record the data fingerprints of a run; a resumed run must see the very same data."""
    from crossrec_cli.io import atomic_write_json

    path = out / "checkpoints" / "data.json"
    if resuming and path.is_file():
        old = json.loads(path.read_text())
        for name in sorted(set(old) | set(dataset)):
            if old.get(name) != dataset.get(name):
                raise CrossrecError(f"domain={name}", "the data changed since the interrupted run "
                                    f"(sha256 {str(old.get(name, {}).get('sha256'))[:12]} -> {str(dataset.get(name, {}).get('sha256'))[:12]})",
                                    "resume only with the data the run started with")
    elif not resuming:
        atomic_write_json(path, dataset)


def resume_dir(cfg: DictConfig) -> Path | None:
    return run_dir(cfg) if cfg.get("resume") else None


def _checkpoint_file(folder: Path) -> Path:
    problem = ckpt.verify(folder)
    if problem:
        raise CrossrecError(str(folder), f"checkpoint is not usable: {problem}", "re-run the command that wrote it")
    return folder / "model.safetensors"


def load_init(cfg: DictConfig, model: SeqRec) -> None:
    """``init_from=<run dir>``: copy every tensor whose name and shape match (other domains'
    id tables and heads are left as initialised)."""
    if not cfg.get("init_from"):
        return
    run = Path(str(cfg.init_from)).expanduser()
    if (run / "checkpoint" / "backbone" / "config.json").is_file():  # a pretrain run: build_model loaded its backbone
        if (run / "checkpoint" / "model.safetensors").is_file():  # a fused pretrain's item tower too
            load_matching(model, run, strict_shapes=True)
        return
    if not load_matching(model, run):
        raise CrossrecError(str(run / "checkpoint"), "no weights match this model",
                            "init_from needs the same backbone and adapter")


def load_matching(model: SeqRec, run: Path, strict_shapes: bool = False) -> int:
    """Copy the tensors of ``run/checkpoint`` whose names and shapes match ``model``
    (``strict_shapes``: a tensor of the same name with another shape is an error)."""
    state = SeqRec.upgrade_state(read_safetensors(_checkpoint_file(Path(run) / "checkpoint")))
    own = model.state_dict()
    if strict_shapes:
        for k, v in state.items():
            if k in own and own[k].shape != v.shape:
                raise CrossrecError("init_from", f"{run}: {k} has shape {tuple(v.shape)}, this model's "
                                    f"{tuple(own[k].shape)}", "use the model settings (model.dim, ...) the run used")
    take = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    model.load_state_dict(take, strict=False)
    log.info("loaded %d of %d tensors from %s", len(take), len(state), run)
    return len(take)


def load_best(model: SeqRec, out: Path) -> None:
    folder = out / "checkpoint"
    if (folder / "model.safetensors").exists():
        load_trainable_state(model, read_safetensors(_checkpoint_file(folder)), str(folder))


def save_final(cfg: DictConfig, model: SeqRec, out: Path, splits: dict[str, Split],
               domains: list[tuple[DomainSpec, Domain]], prog: Progress, tc: TrainConfig,
               keys: dict[str, str] | None = None) -> dict[str, Any]:
    """Reload the best weights, save peft adapters in peft's format, evaluate every domain
    (``keys``: a domain's catalogue key in the model when it is not its name: mixed histories)."""
    load_best(model, out)
    if model.backbone_trains and ADAPTERS.get(str(cfg.adapter.name)).separate_weights(str(cfg.adapter.name)):
        from crossrec_cli.adapters import save_adapter

        save_adapter(model.backbone_model, out / "checkpoint" / "adapter")
    trainable, total = param_counts(model)
    dataset, valid, test, extras = {}, {}, {}, {}
    for spec, domain in domains:
        res = evaluate_model(cfg, model, (keys or {}).get(spec.name, spec.name), splits[spec.name], domain, spec=spec)
        dataset[spec.name] = domain.fingerprint(item_features(cfg)) | {"split": splits[spec.name].kind}
        valid[spec.name], test[spec.name] = res["valid"], res["test"]
        extras[spec.name] = res.get("extras", {})
    (out / "checkpoint").mkdir(exist_ok=True)
    meta = {"domains": [s.name for s, _ in domains], "best_epoch": prog.best_epoch, "monitor": tc.monitor}
    if keys and any(k != n for n, k in keys.items()):
        meta["mixed_history"] = {n: k for n, k in keys.items() if k != n}
    from crossrec_cli.io import atomic_write_text

    atomic_write_text(out / "checkpoint" / "crossrec.json", json.dumps(meta, indent=1))
    gates = {spec.name: model.fusion_gates(spec.name) for spec, _ in domains}
    extra = {"fusion_gates": gates} if any(gates.values()) else {}
    return ({"dataset": dataset, "valid": valid, "test": test, "trainable_params": trainable, "total_params": total}
            | extra | extras_by_key(extras))
