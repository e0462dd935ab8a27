"""RecBole 1.2.1 SASRec on exported atomic files; run by scripts/reference_recbole.py.

Runs in the RecBole venv (`make reference-recbole`), never imports crossrec:

    .venv-recbole/bin/python scripts/_recbole_sasrec.py JOB.json

JOB.json: {"dataset": NAME, "config": {RecBole config dict}, "out": RESULT.json,
"mask_seen": bool}. The working directory receives RecBole's log/ and checkpoint.
RESULT.json: best valid and test results, seconds per training epoch (train only, as crossrec's
``seconds_per_epoch``), best epoch (1-based), and the valid/test examples RecBole actually built
(tokens), so the caller can check them against crossrec's split.

RecBole masks nothing but the padding item when it full-ranks for a sequential model
(``FullSortEvalDataLoader`` passes ``history_index=None``). ``mask_seen`` wraps
``full_sort_predict`` to also drop each example's whole history (target kept), matching
crossrec's ``eval.exclude_seen=true``.
"""

from __future__ import annotations

import json
import sys
import time
from logging import getLogger

import torch
from recbole.config import Config
from recbole.data import create_dataset, data_preparation
from recbole.trainer import Trainer
from recbole.utils import get_model, init_logger, init_seed

import recbole.model.sequential_recommender  # noqa: E402,F401  (imported here so the next line sticks)

# recbole/model/sequential_recommender/sine.py turns autograd anomaly detection on for the whole
# process on import (get_model imports every sequential model); it only checks each gradient for
# NaN, leaving the numbers unchanged, and slows SASRec's training on CPU. Off again.
torch.autograd.set_detect_anomaly(False)


class TimedTrainer(Trainer):
    """RecBole's Trainer that times each training epoch and remembers the best epoch."""

    def __init__(self, config, model):
        super().__init__(config, model)
        self.epoch_seconds: list[float] = []
        self.best_epoch = 0

    def _train_epoch(self, train_data, epoch_idx, loss_func=None, show_progress=False):
        t0 = time.perf_counter()
        loss = super()._train_epoch(train_data, epoch_idx, loss_func=loss_func, show_progress=show_progress)
        self.epoch_seconds.append(time.perf_counter() - t0)
        return loss

    def _save_checkpoint(self, epoch, verbose=True, **kwargs):
        """Called exactly when the valid score improves (saved=True). Saves only what
        ``evaluate(load_best_model=True)`` reads back (weights and the model's extra tensors),
        not RecBole's pickled Config, so its ``torch.load`` works with torch's default
        ``weights_only=True``; nothing here resumes a RecBole run."""
        self.best_epoch = epoch + 1
        state = {"state_dict": self.model.state_dict(), "other_parameter": self.model.other_parameter()}
        torch.save(state, kwargs.pop("saved_model_file", self.saved_model_file))


def mask_seen(model, dataset, inter_file: str) -> None:
    """Make ``full_sort_predict`` drop every item before the target in the user's full order
    (timestamp = position, as exported), the target itself kept."""
    uid, iid, tf = dataset.uid_field, dataset.iid_field, dataset.time_field
    seqs: dict[int, list[int]] = {}
    with open(inter_file, encoding="utf-8") as f:
        next(f)
        rows = sorted((line.rstrip("\n").split("\t") for line in f), key=lambda r: (r[0], float(r[2])))
    for u, i, _ in rows:
        seqs.setdefault(int(dataset.token2id(uid, u)), []).append(int(dataset.token2id(iid, i)))
    predict = model.full_sort_predict

    def masked(interaction):
        scores = predict(interaction)
        for r, (u, t) in enumerate(zip(interaction[uid].tolist(), interaction[tf].tolist())):
            seen = torch.as_tensor(seqs[u][: int(t)], dtype=torch.long)
            target = seqs[u][int(t)]
            keep = scores[r, target].clone()
            scores[r, seen] = -torch.inf
            scores[r, target] = keep
        return scores

    model.full_sort_predict = masked


def examples(dataset, data) -> list[list]:
    """[user token, target token, history tokens] of every example of a built split."""
    feat = data._dataset.inter_feat
    uid, iid = dataset.uid_field, dataset.iid_field
    lists, lengths = feat[iid + dataset.config["LIST_SUFFIX"]].tolist(), feat[dataset.item_list_length_field].tolist()
    users = dataset.id2token(uid, feat[uid].numpy())
    targets = dataset.id2token(iid, feat[iid].numpy())
    return [[str(u), str(t), [str(x) for x in dataset.id2token(iid, lst[:n])]]
            for u, t, lst, n in zip(users, targets, lists, lengths)]


def main(job_path: str) -> None:
    job = json.loads(open(job_path, encoding="utf-8").read())
    config = Config(model="SASRec", dataset=job["dataset"], config_dict=job["config"])
    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)
    log = getLogger()
    log.info(config)
    dataset = create_dataset(config)
    log.info(dataset)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    init_seed(config["seed"] + config["local_rank"], config["reproducibility"])  # as run_recbole does
    model = get_model(config["model"])(config, train_data._dataset).to(config["device"])
    if job.get("mask_seen"):
        mask_seen(model, dataset, f"{config['data_path']}/{job['dataset']}.inter")
    trainer = TimedTrainer(config, model)
    t0 = time.perf_counter()
    best_valid_score, best_valid = trainer.fit(train_data, valid_data, saved=True, show_progress=False)
    test = trainer.evaluate(test_data, load_best_model=True, show_progress=False)
    result = {
        "valid": dict(best_valid), "test": dict(test), "best_valid_score": best_valid_score,
        "best_epoch": trainer.best_epoch, "epochs_run": len(trainer.epoch_seconds),
        "seconds_per_epoch": sum(trainer.epoch_seconds) / max(1, len(trainer.epoch_seconds)),
        "wall_seconds": time.perf_counter() - t0,
        "items": int(dataset.item_num) - 1, "users": int(dataset.user_num) - 1,  # id 0 is padding
        "train_examples": len(train_data._dataset),
        "examples": {"valid": examples(dataset, valid_data), "test": examples(dataset, test_data)},
        "torch": torch.__version__, "threads": torch.get_num_threads(),
    }
    with open(job["out"], "w", encoding="utf-8") as f:
        json.dump(result, f)
    log.info("best valid %s; test %s", dict(best_valid), dict(test))


if __name__ == "__main__":
    main(sys.argv[1])
