"""The language model (with the run's ``adapter=``) + a linear head on its pooled states, trained
with cross-entropy (single-label) or a sigmoid per label (multi-label)."""

from __future__ import annotations

import torch

from crossrec_cli.adapters import adapter_loss, adapter_step_hook, apply_adapter, param_counts
from crossrec_cli.tasks.classifiers import CLASSIFIERS, ClassifyJob, Fitted
from crossrec_cli.tasks.models import SequenceClassifier
from crossrec_cli.tasks.train import fit as train, plan_steps, predict


@CLASSIFIERS.register("lm")
def fit(job: ClassifyJob) -> Fitted:
    bb = job.need_backbone("lm")
    trainset = job.parts["train"]
    _, steps = plan_steps(len(trainset), job.settings)
    bb.model = apply_adapter(bb.model, job.adapter, total_steps=steps, **job.adapter_hparams)
    torch.manual_seed(job.settings.seed)
    model = SequenceClassifier(bb, len(job.names), job.pooling, job.max_length).to(torch.device(job.device))
    inputs = [(t, None) for t in job.texts]
    losses = train(model, [inputs[i] for i in trainset], job.targets[trainset], job.settings,
                   step_hook=lambda s: adapter_step_hook(bb.model, s), extra_loss=lambda: adapter_loss(bb.model))
    scores = {split: predict(model, [inputs[i] for i in idx], multi_label=job.multi_label)
              for split, idx in job.parts.items() if split != "train"}
    trainable, total = param_counts(model)
    return Fitted(scores, trainable=trainable, total=total, losses=losses)


fit.reads_backbone, fit.trains_adapter = True, True
