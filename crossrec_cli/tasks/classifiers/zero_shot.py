"""Zero-shot: the backbone encodes each item text and each label's description (the domain's
``labels.describe``, e.g. "rock music"); the class is the most cosine-similar label. Multi-label:
the k most similar labels, k = the training items' mean label count (rounded, at least 1)."""

from __future__ import annotations

import numpy as np
import torch

from crossrec_cli.models.encode import encode_texts
from crossrec_cli.tasks.classifiers import CLASSIFIERS, ClassifyJob, Fitted


@CLASSIFIERS.register("zero_shot")
def fit(job: ClassifyJob) -> Fitted:
    bb = job.need_backbone("zero_shot")
    bb.model.to(torch.device(job.device))
    labels = torch.nn.functional.normalize(encode_texts(bb, job.label_texts, job.max_length, job.pooling), dim=-1)
    k = max(1, round(float(job.targets[job.parts["train"]].sum(1).mean()))) if job.multi_label else 1
    scores = {}
    for split, idx in job.parts.items():
        if split == "train":
            continue
        items = torch.nn.functional.normalize(
            encode_texts(bb, [job.texts[i] for i in idx], job.max_length, job.pooling), dim=-1)
        cos = (items @ labels.T).numpy().astype(np.float64)
        if job.multi_label:  # top-k as a 0/1 indicator, so the 0.5 threshold picks exactly them
            top = np.argsort(-cos, axis=1, kind="stable")[:, :k]
            cos = np.zeros_like(cos)
            np.put_along_axis(cos, top, 1.0, axis=1)
        scores[split] = cos
    total = sum(p.numel() for p in bb.model.parameters())
    return Fitted(scores, mode="zero-shot", total=int(total))


fit.reads_backbone, fit.trains_adapter = True, False
