"""Item classification: predict an item column (``label_field``) from the item's other text.

Multi-label when the column is a token sequence (RecBole ``:token_seq``, e.g. ml-100k ``class``
genres): one sigmoid per label; otherwise one softmax over the distinct values.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from crossrec_cli.data.domain import Domain, DomainSpec
from crossrec_cli.data.tags import HIDDEN
from crossrec_cli.errors import CrossrecError
from crossrec_cli.tasks.classifiers import CLASSIFIERS, ClassifyJob
from crossrec_cli.tasks.metrics import label_metrics


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
    label_texts: list[str]  # each label in words (the domain's labels.describe, else the label)


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
    fields = [f for f in (spec.text_fields or list(domain.item_columns))
              if f not in (field, spec.item_field) and not f.endswith(HIDDEN)]
    if not fields:
        raise CrossrecError(f"domain.{spec.name}.text_fields", "no text field besides the label column",
                            "add another text field to classify from")
    # a field with its label words left out (data/tags.py, hide_label_words) is read in its place
    cols = {f: domain.item_columns.get(f + HIDDEN, domain.item_columns[f]) for f in fields}
    texts = [". ".join(cols[f][i] for f in fields if cols[f][i]) or domain.item_ids[i] for i in keep]
    describe = (spec.labels or {}).get("describe", "{label}") if isinstance(spec.labels, dict) else "{label}"
    return LabelData(texts, targets, names, multi, keep, [describe.format(label=n) for n in names])


def split_indices(n: int, fractions: tuple[float, float, float], seed: int,
                  strata: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """A seeded random train / valid / test partition of range(n). With ``strata`` (one class per
    row) each class is split by the same fractions on its own, so every split keeps the class
    balance (a class of 1-2 items lands in train first)."""
    if len(fractions) != 3 or min(fractions) < 0 or abs(sum(fractions) - 1) > 1e-6:
        raise CrossrecError("task.split", f"expected three fractions summing to 1, got {list(fractions)}",
                            "e.g. [0.8, 0.1, 0.1]")
    rng = np.random.default_rng(seed)
    groups = [np.arange(n)] if strata is None else [np.flatnonzero(strata == c) for c in np.unique(strata)]
    out: dict[str, list[np.ndarray]] = {"train": [], "valid": [], "test": []}
    for members in groups:
        perm = members[rng.permutation(len(members))]
        a = round(fractions[0] * len(perm))
        b = a + round(fractions[1] * len(perm))
        for name, part in zip(out, (perm[:a], perm[a:b], perm[b:])):
            out[name].append(part)
    return {name: np.sort(np.concatenate(parts)) for name, parts in out.items()}


def run_classification(job: ClassifyJob, classifier: str = "lm",
                       threshold: float = 0.5) -> dict:
    """Fit ``task.classifier`` on ``job.parts["train"]`` and evaluate the other splits:
    {"metrics": {split: micro_f1 / macro_f1 / accuracy / f1@<label>}, "reports": {split: (dict,
    text)}, "confusion": {split: (C, C) counts, rows true} (single-label), ...}."""
    start = time.perf_counter()
    fitted = CLASSIFIERS.get(classifier)(job)
    metrics, reports, confusion = {}, {}, {}
    for split, idx in job.parts.items():
        if split == "train" or not len(idx):
            continue
        scores = fitted.scores[split]
        pred = (scores >= threshold).astype(np.int64) if job.multi_label else scores.argmax(1)
        metrics[split], rep, text = label_metrics(job.targets[idx], pred, job.names)
        reports[split] = (rep, text)
        if not job.multi_label:
            from sklearn.metrics import confusion_matrix  # type: ignore[import-untyped]

            confusion[split] = confusion_matrix(job.targets[idx], pred, labels=list(range(len(job.names))))
    return {"metrics": metrics, "reports": reports, "confusion": confusion, "losses": fitted.losses,
            "mode": fitted.mode, "trainable": fitted.trainable, "total": fitted.total,
            "train_examples": len(job.parts["train"]), "seconds": round(time.perf_counter() - start, 2)}


def confusion_png(counts: np.ndarray, names: list[str], path: Path, title: str) -> Path:
    """A confusion matrix (rows: true label, normalised per row; cells print the counts)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import ConfusionMatrixDisplay  # type: ignore[import-untyped]

    from crossrec_cli.io import atomic_write

    size = 2.5 + 0.45 * len(names)
    fig, ax = plt.subplots(figsize=(size, size), dpi=100)
    rows = counts.sum(1, keepdims=True)
    ConfusionMatrixDisplay(counts / np.maximum(rows, 1), display_labels=names).plot(
        ax=ax, cmap="Blues", colorbar=False, values_format=".2f", xticks_rotation=45)
    for text, n in zip(ax.texts, counts.ravel()):  # row share, count beneath
        text.set_text(f"{text.get_text()}\n{n}" if n else "")
        text.set_fontsize(7)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)
    return path
