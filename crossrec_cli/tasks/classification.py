"""Item classification: predict an item column (``label_field``) from the item's other text.

Multi-label when the column is a token sequence (RecBole ``:token_seq``, e.g. ml-100k ``class``
genres): one sigmoid per label; otherwise one softmax over the distinct values.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from crossrec_cli.adapters import adapter_loss, adapter_step_hook, apply_adapter, param_counts
from crossrec_cli.data.domain import Domain, DomainSpec
from crossrec_cli.errors import CrossrecError
from crossrec_cli.models.backbone import Backbone
from crossrec_cli.tasks.metrics import label_metrics
from crossrec_cli.tasks.models import SequenceClassifier
from crossrec_cli.tasks.train import TrainSettings, fit, plan_steps, predict


def column_is_token_seq(spec: DomainSpec, column: str) -> bool:
    """True when the item file declares ``column`` as ``token_seq`` (RecBole typed header)."""
    if spec.format != "recbole" or not spec.dataset:
        return False
    path = Path(spec.folder()) / f"{spec.dataset}.item"
    if not path.is_file():
        return False
    with open(path, encoding="utf-8") as fh:
        header = fh.readline().rstrip("\r\n").split("\t")
    return f"{column}:token_seq" in [h.strip() for h in header]


@dataclass
class LabelData:
    texts: list[str]  # item text without the label column
    targets: np.ndarray  # (n, n_labels) 0/1 when multi_label, else (n,) class index
    names: list[str]
    multi_label: bool
    items: np.ndarray  # item indices kept (items with at least one label)


def label_data(domain: Domain, spec: DomainSpec, multi_label: bool | None = None) -> LabelData:
    """Labels of ``spec.label_field`` and texts rendered from the other text fields (the label
    column is left out of the input, or the task would be copying). ``multi_label`` None: decide
    from the column type."""
    field = spec.label_field
    if not field:
        raise CrossrecError(f"domain.{spec.name}.label_field", "task=classification needs a label column",
                            "set label_field: <item column> in the domain file")
    if field not in domain.item_columns:
        raise CrossrecError(f"domain.{spec.name}.label_field", f"{field!r} is not an item column",
                            f"columns are {list(domain.item_columns)}")
    multi = column_is_token_seq(spec, field) if multi_label is None else multi_label
    values = [v.split() if multi else ([v] if v else []) for v in domain.item_columns[field]]
    keep = np.array([i for i, v in enumerate(values) if v], dtype=np.int64)
    names = sorted({x for v in values for x in v})
    if len(names) < 2:
        raise CrossrecError(f"domain.{spec.name}.label_field", f"{field!r} has {len(names)} distinct label(s)",
                            "classification needs at least two")
    index = {n: k for k, n in enumerate(names)}
    if multi:
        targets = np.zeros((len(keep), len(names)), dtype=np.int64)
        for r, i in enumerate(keep):
            targets[r, [index[x] for x in values[i]]] = 1
    else:
        targets = np.array([index[values[i][0]] for i in keep], dtype=np.int64)
    fields = [f for f in (spec.text_fields or list(domain.item_columns)) if f not in (field, spec.item_field)]
    if not fields:
        raise CrossrecError(f"domain.{spec.name}.text_fields", "no text field besides the label column",
                            "add another text field to classify from")
    cols = domain.item_columns
    texts = [". ".join(cols[f][i] for f in fields if cols[f][i]) or domain.item_ids[i] for i in keep]
    return LabelData(texts, targets, names, multi, keep)


def split_indices(n: int, fractions: tuple[float, float, float], seed: int) -> dict[str, np.ndarray]:
    """A seeded random train / valid / test partition of range(n)."""
    if len(fractions) != 3 or min(fractions) < 0 or abs(sum(fractions) - 1) > 1e-6:
        raise CrossrecError("task.split", f"expected three fractions summing to 1, got {list(fractions)}",
                            "e.g. [0.8, 0.1, 0.1]")
    perm = np.random.default_rng(seed).permutation(n)
    a = round(fractions[0] * n)
    b = a + round(fractions[1] * n)
    return {"train": np.sort(perm[:a]), "valid": np.sort(perm[a:b]), "test": np.sort(perm[b:])}


def run_classification(base: Backbone, data: LabelData, parts: dict[str, np.ndarray], adapter: str,
                       adapter_hparams: dict, settings: TrainSettings, pooling: str = "mean",
                       max_length: int = 64, threshold: float = 0.5, device: str = "cpu") -> dict:
    """Train a classifier head (with the adapter) on ``parts["train"]`` and evaluate the others:
    {"metrics": {split: micro_f1 / macro_f1 / accuracy}, "reports": {split: (dict, text)}, ...}."""
    start = time.perf_counter()
    bb = dataclasses.replace(base, model=copy.deepcopy(base.model))
    train = parts["train"]
    _, steps = plan_steps(len(train), settings)
    bb.model = apply_adapter(bb.model, adapter, total_steps=steps, **adapter_hparams)
    torch.manual_seed(settings.seed)
    model = SequenceClassifier(bb, len(data.names), pooling, max_length).to(torch.device(device))
    inputs = [(t, None) for t in data.texts]
    losses = fit(model, [inputs[i] for i in train], data.targets[train], settings,
                 step_hook=lambda s: adapter_step_hook(bb.model, s), extra_loss=lambda: adapter_loss(bb.model))
    metrics, reports = {}, {}
    for split in ("valid", "test"):
        idx = parts[split]
        if not len(idx):
            continue
        prob = predict(model, [inputs[i] for i in idx], multi_label=data.multi_label)
        pred = (prob >= threshold).astype(np.int64) if data.multi_label else prob.argmax(1)
        metrics[split], rep, text = label_metrics(data.targets[idx], pred, data.names)
        reports[split] = (rep, text)
    trainable, total = param_counts(model)
    return {"metrics": metrics, "reports": reports, "losses": losses, "trainable": trainable, "total": total,
            "train_examples": len(train), "seconds": round(time.perf_counter() - start, 2)}
