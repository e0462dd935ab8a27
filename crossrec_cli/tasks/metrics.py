"""Task metrics through scikit-learn: AUC / log loss / accuracy for preference, F1 for labels."""

from __future__ import annotations

import math

import numpy as np


def binary_metrics(labels: np.ndarray, prob: np.ndarray) -> dict[str, float]:
    """labels (n,) in {0, 1}, prob (n,) = P(like) -> ``auc`` (NaN with one class only),
    ``logloss``, ``accuracy`` (threshold 0.5), ``positive_rate`` of the labels, ``n``."""
    from sklearn.metrics import accuracy_score, log_loss, roc_auc_score  # type: ignore[import-untyped]

    y = np.asarray(labels, dtype=np.int64)
    p = np.clip(np.asarray(prob, dtype=np.float64), 1e-7, 1 - 1e-7)
    auc = float(roc_auc_score(y, p)) if len(np.unique(y)) == 2 else math.nan
    return {
        "auc": auc,
        "logloss": float(log_loss(y, p, labels=[0, 1])),
        "accuracy": float(accuracy_score(y, p >= 0.5)),
        "positive_rate": float(y.mean()) if len(y) else math.nan,
        "n": len(y),
    }


def label_metrics(y_true: np.ndarray, y_pred: np.ndarray, names: list[str]) -> tuple[dict[str, float], dict, str]:
    """y_true / y_pred: (n, n_labels) 0/1 indicator matrices (multi-label) or (n,) class indices.

    Returns (``micro_f1``, ``macro_f1``, ``accuracy`` (exact match for multi-label), ``n``,
    ``f1_<label>`` per label), scikit-learn's classification report as a dict and as text."""
    from sklearn.metrics import accuracy_score, classification_report, f1_score  # type: ignore[import-untyped]

    labels = list(range(len(names)))
    kw = {} if y_true.ndim == 2 else {"labels": labels}
    metrics = {
        "micro_f1": float(f1_score(y_true, y_pred, average="micro", zero_division=0, **kw)),
        "macro_f1": float(f1_score(y_true, y_pred, average="macro", zero_division=0, **kw)),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "n": len(y_true),
    }
    per_label = f1_score(y_true, y_pred, average=None, zero_division=0, **({} if y_true.ndim == 2 else kw))
    metrics |= {f"f1_{name}": float(v) for name, v in zip(names, per_label)}
    report = classification_report(y_true, y_pred, labels=labels, target_names=names, zero_division=0,
                                   output_dict=True)
    text = classification_report(y_true, y_pred, labels=labels, target_names=names, zero_division=0, digits=4)
    return metrics, report, text


def mean_std(runs: list[dict[str, float]]) -> dict[str, float]:
    """Per key: the mean over runs, plus ``<key>_std`` when there are
    several runs (sample std, ddof=1); ``n`` and ``positive_rate`` describe the evaluation
    examples, not the model, and are kept from the first run."""
    if len(runs) == 1:
        return dict(runs[0])
    out: dict[str, float] = {}
    for key in runs[0]:
        vals = np.array([r[key] for r in runs], dtype=np.float64)
        if key in ("n", "positive_rate"):
            out[key] = runs[0][key]
            continue
        out[key] = float(np.mean(vals))
        out[f"{key}_std"] = float(np.std(vals, ddof=1))
    return out
