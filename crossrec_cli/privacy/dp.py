"""DP-SGD (Abadi et al., CCS 2016) through opacus: ``privacy=dp``.

The privacy unit is a user of a domain: all of that user's training windows. Every step

1. Poisson-samples users: each is in the step's batch with probability
   ``q = trainer.batch_size / users`` (the batch size varies; ``trainer.batch_size`` users are
   expected), drawn from (seed, epoch) alone so a resumed run replays the same batches;
2. computes each sampled user's gradient alone: the mean full-softmax next-item loss over the
   user's training targets, differentiated per window with ``torch.func`` (``vmap`` over
   ``grad``) and summed per user;
3. hands those per-user gradients to opacus's ``DPOptimizer`` as ``grad_sample``: it clips each
   to ``max_grad_norm``, adds Gaussian noise of std ``noise_multiplier x max_grad_norm`` and
   divides by the expected batch size; the private gradient is what the run's optimiser
   (AdamW, with ``trainer.grad_clip`` as post-processing) then steps with;
4. counts the step in opacus's accountant (``privacy.accountant``); the noise multiplier is
   calibrated before training with opacus's ``get_noise_multiplier`` (what
   ``PrivacyEngine.make_private_with_epsilon`` calls) so that ``trainer.epochs`` epochs spend at
   most ``privacy.epsilon`` at ``privacy.delta``.

Why not ``PrivacyEngine.make_private_with_epsilon`` on the model itself: its ``GradSampleModule``
computes per-sample gradients layer by layer and takes each layer's first input dimension as the
sample dimension. The item tower runs over the catalogue (its first dimension is items, not
users) and the full softmax ties every item's vector to every user's loss, so per-layer hooks
(and their functorch / expanded-weights modes, which are per layer too) cannot give per-user
gradients of the item projection or item embeddings. ``torch.func`` differentiates the whole loss
per window instead, which covers the user tower (attention included) and the item tower (text
projection, item ids, fusion) alike; opacus's own clipping, noise, calibration and accountant are
used unchanged. A training backbone (an adapter other than frozen) is refused: each user's
gradient through it would be a backward pass of the backbone over the whole catalogue per user
per step.

What every trainable parameter sees is covered; what is not counted: early stopping and the
best-epoch choice read each user's validation item (model selection, as DP-SGD reports usually
leave it out).
"""

from __future__ import annotations

import logging
import math
import warnings
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from crossrec_cli.errors import CrossrecError
from crossrec_cli.privacy.base import PRIVACY, PrivacyMethod, TrainingContext
from crossrec_cli.training.batches import collate
from crossrec_cli.training.engine import Objective, Progress

log = logging.getLogger("crossrec")

ACCOUNTANTS = ("prv", "rdp", "gdp")
WINDOW_CHUNK = 64  # windows whose per-window gradients are computed at once (bounds memory)


def _number(settings: dict[str, Any], key: str, ok, expected: str, example: str) -> float:
    value = settings.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or not ok(value):
        raise CrossrecError(f"privacy.{key}", f"expected {expected}, got {value!r}", f"e.g. privacy.{key}={example}")
    return float(value)


def refuse(context: TrainingContext) -> None:
    """A run setting that breaks per-user gradients or the accounting: one line naming its key."""
    why = {
        "trainer.loss": (context.loss in ("sampled", "sampled_logq"),
                         f"{context.loss} shares in-batch negatives between users, so one user's loss reads others' "
                         "targets", "trainer.loss=full (or auto on a catalogue it resolves to full)"),
        "adversarial": (bool(context.adversarial),
                        f"{','.join(context.adversarial)} adds batch-level terms (perturbations along the batch's "
                        "gradient, a discriminator over items) that are not per-user losses", "adversarial=none"),
        "trainer.precision": (context.precision != "fp32", f"{context.precision}: per-user gradients are computed in "
                              "float32", "trainer.precision=fp32"),
        "trainer.compile": (context.compile, "true: the compiled user tower cannot be differentiated per user",
                            "trainer.compile=false"),
        "torchrun": (context.processes > 1, f"{context.processes} processes: the Poisson batch, the noise and the "
                     "accountant are one process's", "launch it without torchrun (or with --nproc_per_node 1)"),
        "mixed_history": (context.mixed_history, "a history that reads another domain's items makes a user two "
                          "samples of different domains", "mixed_history=false and no context="),
    }
    for key, (bad, problem, fix) in why.items():
        if bad:
            raise CrossrecError(key, f"privacy=dp: {problem}", f"use {fix}, or privacy=none")


class WindowLoss(nn.Module):
    """One training window's share of its user's loss: the full-softmax cross-entropy of each of
    its targets, summed, times ``weight`` (1 / the user's training targets), so that a user's
    windows add up to the user's mean loss. Written without data-dependent shapes, so that
    ``torch.func.vmap`` runs it per window."""

    def __init__(self, model: nn.Module, key: str, last: int):
        super().__init__()
        self.model, self.key, self.last = model, key, last  # last: a window's targets are its last positions

    def forward(self, inp: torch.Tensor, tgt: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        m, key, last = self.model, self.key, self.last
        items = m.item_matrix(key)  # the backbone is frozen (PrivateNextItem refuses a training one)
        n = m.n_targets(key)
        out = _cross_entropy(m, m.user_states(items, inp.unsqueeze(0))[0, -last:], items[:n], tgt[-last:], n)
        if m.cfg.general_loss:  # the readout's domain-general user, as batch_loss trains it
            plain = m.general_item_matrix(key, items)
            general = m.user_states(plain, inp.unsqueeze(0), general=True)[0, -last:]
            out = out + m.cfg.general_loss * _cross_entropy(m, general, plain[:n], tgt[-last:], n)
        return out * weight


def _cross_entropy(model: nn.Module, users: torch.Tensor, items: torch.Tensor, tgt: torch.Tensor, n: int) -> torch.Tensor:
    """Summed softmax cross-entropy over the catalogue at the window's target positions."""
    ce = F.cross_entropy(model.logits(users, items), tgt.clamp(0, n - 1), reduction="none")
    return (ce * ((tgt >= 0) & (tgt < n)).to(ce.dtype)).sum()


class PrivateNextItem(Objective):
    """The next-item objective (``training/loop.NextItem``) with DP-SGD steps: its batches are
    Poisson samples of users, its loss's gradient is the private one. Validation, early stopping,
    the best weights and checkpoints are the wrapped objective's."""

    def __init__(self, inner: Any, splits: dict[str, Any], optimizer: torch.optim.Optimizer, method: DPSGD):
        from opacus.accountants import create_accountant
        from opacus.accountants.utils import get_noise_multiplier
        from opacus.optimizers import DPOptimizer

        self.inner, self.method = inner, method
        model, tc = inner.model, inner.tc
        self.model, self.tc = model, tc
        self._refuse_model(splits)
        # the samples: (domain, its windows of one user), users in their split's order
        self.samples: list[tuple[str, np.ndarray, int]] = []  # (key, window indices, training targets)
        for key in sorted(inner.wins):
            owners = window_owners(splits[key], tc.window_stride or model.cfg.max_history)
            by_user: dict[int, list[int]] = defaultdict(list)
            for i, u in enumerate(owners.tolist()):
                by_user[u].append(i)
            for u in sorted(by_user):
                idx = np.asarray(by_user[u], dtype=np.int64)
                targets = int(sum(inner.wins[key][i][1] for i in idx))
                if targets:
                    self.samples.append((key, idx, targets))
        n = len(self.samples)
        s = method
        if not s.delta < 1.0 / n:
            raise CrossrecError("privacy.delta", f"{s.delta:g} is not below 1 / {n} users: it would allow a user's "
                                "data to be released outright with that probability", f"e.g. privacy.delta={_below(n)}")
        self.batch = min(tc.batch_size, n)
        self.sample_rate = self.batch / n
        self.steps_per_epoch = max(1, round(n / self.batch))
        if tc.max_steps_per_epoch:
            self.steps_per_epoch = min(self.steps_per_epoch, tc.max_steps_per_epoch)
        with _quiet():
            self.noise_multiplier = float(get_noise_multiplier(
                target_epsilon=s.epsilon, target_delta=s.delta, sample_rate=self.sample_rate,
                steps=tc.epochs * self.steps_per_epoch, accountant=s.accountant))
        self.accountant = create_accountant(mechanism=s.accountant)
        self.names = {id(p): name for name, p in model.named_parameters() if p.requires_grad}
        self.optimizer = self._bind(optimizer, DPOptimizer)
        last = min(tc.window_stride or model.cfg.max_history, model.cfg.max_history)
        self.window_losses = {key: WindowLoss(model, key, last) for key in inner.wins}
        log.info("privacy=dp: %d users, %.4f of them per step (%d expected), %d steps per epoch, noise multiplier "
                 "%.4f for epsilon %g at delta %g over %d epochs (%s accountant), per-user clipping at %g", n,
                 self.sample_rate, self.batch, self.steps_per_epoch, self.noise_multiplier, s.epsilon, s.delta,
                 tc.epochs, s.accountant, s.max_grad_norm)

    def _refuse_model(self, splits: dict[str, Any]) -> None:
        from crossrec_cli.training.loop import loss_for

        model, tc = self.model, self.tc
        if model.backbone_trains:
            raise CrossrecError("adapter", f"privacy=dp: the adapter trains the backbone "
                                f"({type(model.backbone_model).__name__}), and each user's gradient through it is a "
                                "backward pass over the whole catalogue (the full softmax reads every item) per user "
                                "per step", "use adapter=frozen (the item projection and user tower train privately)")
        for key in self.inner.wins:
            if loss_for(tc, model.n_targets(key)).negatives(1, 1, torch.device("cpu")) is not None:
                raise CrossrecError("trainer.loss", f"privacy=dp: {tc.loss} is a sampled loss on {key} "
                                    f"({model.n_targets(key)} items), whose in-batch negatives mix users",
                                    "use trainer.loss=full, or privacy=none")
            if model.feature_loss(key) is not None:
                names = [n for n, f in model.features.items() if f.extra_loss(key) is not None]
                raise CrossrecError("model.features", f"privacy=dp: {', '.join(names)} adds its own loss over the "
                                    "catalogue's graph each step, not a per-user loss", "drop it from model.features")
            if getattr(model.cfg, "seq_loss", 0):
                raise CrossrecError("model.seq_loss", "privacy=dp: the sequence-sequence contrastive loss compares "
                                    "users of a batch with each other, not a per-user loss", "model.seq_loss=0")
            if getattr(self.inner, "loss_weights", None):
                raise CrossrecError("fairness.reweight", "privacy=dp: a user's loss weight would depend on the other "
                                    "users of their group, and the accounting assumes equal users", "fairness.reweight=none")
            if key in model.composites:
                raise CrossrecError("mixed_history", "privacy=dp: a history that reads another domain's items makes "
                                    "a user two samples", "mixed_history=false and no context=, or privacy=none")

    # -- the steps -------------------------------------------------------------------------------
    def _bind(self, optimizer: torch.optim.Optimizer, dp_optimizer: type) -> Any:
        """opacus's DPOptimizer over the run's optimiser: clipping, noise and scaling only (the
        run's optimiser itself steps, in the training loop)."""
        missing = [p for g in optimizer.param_groups for p in g["params"] if id(p) not in self.names]
        if missing:
            raise CrossrecError("privacy", f"privacy=dp: {len(missing)} optimised tensors are not the model's "
                                "trainable parameters", "report this: every optimised parameter must be the model's")
        return dp_optimizer(optimizer, noise_multiplier=self.noise_multiplier, max_grad_norm=self.method.max_grad_norm,
                            expected_batch_size=self.batch, loss_reduction="mean")

    def plan(self, epoch: int) -> list[np.ndarray]:
        """The epoch's Poisson batches (sample indices), a pure function of (seed, epoch)."""
        rng = np.random.default_rng([self.tc.seed, epoch, 17])
        draws = rng.random((self.steps_per_epoch, len(self.samples))) < self.sample_rate
        return [np.flatnonzero(row) for row in draws]

    def per_user_gradients(self, batch: np.ndarray) -> tuple[dict[str, torch.Tensor], float]:
        """Each sampled user's gradient of every trainable parameter, (users, *shape) per name, and
        the users' summed loss."""
        from torch.func import functional_call, grad_and_value, vmap
        from torch.nn.attention import SDPBackend, sdpa_kernel

        model = self.model
        params = {name: p for name, p in model.named_parameters() if p.requires_grad}
        grads = {name: torch.zeros((len(batch), *p.shape), dtype=p.dtype, device=p.device) for name, p in params.items()}
        dev = model.user.pos.weight.device
        total = 0.0
        by_key: dict[str, list[int]] = defaultdict(list)
        for pos, i in enumerate(batch.tolist()):
            by_key[self.samples[i][0]].append(pos)
        for key, positions in by_key.items():
            wl = self.window_losses[key]
            detached = {f"model.{n}": p.detach() for n, p in params.items()}

            def one(ps: dict[str, torch.Tensor], inp: torch.Tensor, tgt: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
                return functional_call(wl, ps, (inp, tgt, w))

            per_window = vmap(grad_and_value(one), in_dims=(None, 0, 0, 0), randomness="different")
            wins, owner, weight = [], [], []
            for pos in positions:
                _, idx, targets = self.samples[int(batch[pos])]
                wins += [self.inner.wins[key][j] for j in idx]
                owner += [pos] * len(idx)
                weight += [1.0 / targets] * len(idx)
            inp, tgt = collate(wins, model.cfg.max_history)
            owner_t = torch.as_tensor(owner, device=dev)
            weight_t = torch.as_tensor(weight, dtype=torch.float32, device=dev)
            inp, tgt = inp.to(dev), tgt.to(dev)
            for a in range(0, len(wins), WINDOW_CHUNK):
                # attention's math kernel: vmap has batching rules for it, not for the fused CPU kernel
                # (which it would run one window at a time)
                with sdpa_kernel(SDPBackend.MATH):
                    g, value = per_window(detached, inp[a:a + WINDOW_CHUNK], tgt[a:a + WINDOW_CHUNK],
                                          weight_t[a:a + WINDOW_CHUNK])
                for name in params:
                    grads[name].index_add_(0, owner_t[a:a + WINDOW_CHUNK], g[f"model.{name}"].to(grads[name].dtype))
                total += float(value.sum())
        return grads, total

    def loss(self, batch: np.ndarray, prog: Progress) -> tuple[torch.Tensor, float]:
        """The users' mean loss as a value, with the private gradient as its gradient: the
        training loop's backward then puts exactly the private gradient into ``.grad``."""
        grads, total = self.per_user_gradients(batch)
        dp = self.optimizer
        for p in dp.params:
            p.grad_sample = grads[self.names[id(p)]]
        dp.pre_step()  # clip each user's gradient, sum, add the noise, divide by the expected batch
        private = [(p, p.grad.detach().clone()) for p in dp.params]
        dp.zero_grad(set_to_none=True)
        self.accountant.step(noise_multiplier=self.noise_multiplier, sample_rate=self.sample_rate)
        dev = self.model.user.pos.weight.device
        value = torch.tensor(total / max(1, len(batch)), device=dev)
        dot = sum((p * g).sum() for p, g in private)
        return value + dot - dot.detach(), 1.0

    def spent(self) -> float:
        """The epsilon spent so far at ``privacy.delta`` (0 before the first step)."""
        if not self.accountant.history:
            return 0.0
        with _quiet():
            return float(self.accountant.get_epsilon(delta=self.method.delta))

    # -- the rest is the wrapped objective's ------------------------------------------------------
    def start_epoch(self, prog: Progress) -> None:
        self.inner.start_epoch(prog)

    def after_step(self, step: int) -> None:
        self.inner.after_step(step)

    def end_epoch(self, prog: Progress) -> dict[str, Any]:
        rec = self.inner.end_epoch(prog)
        rec["epsilon"] = self.spent()
        log.info("privacy: epsilon %.4f spent after %d steps (delta %g, noise multiplier %.4f)", rec["epsilon"],
                 prog.step, self.method.delta, self.noise_multiplier)
        if self.inner.log_metrics:
            self.inner.log_metrics({"train/epsilon": rec["epsilon"]}, prog.step)
        return rec

    def weights(self) -> dict[str, torch.Tensor]:
        return self.inner.weights()

    def load_weights(self, state: dict[str, torch.Tensor], source: str) -> None:
        self.inner.load_weights(state, source)

    def extra_tensors(self) -> dict[str, torch.Tensor]:
        """The wrapped objective's, plus the accountant's count of private steps (resume)."""
        steps = sum(h[2] for h in self.accountant.history)
        return self.inner.extra_tensors() | {"privacy.steps": torch.tensor([steps], dtype=torch.int64)}

    def load_extra_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        steps = int(tensors.pop("privacy.steps", torch.zeros(1, dtype=torch.int64))[0])
        self.inner.load_extra_tensors(tensors)
        self.accountant.history = [(self.noise_multiplier, self.sample_rate, steps)] if steps else []


@contextmanager
def _quiet() -> Iterator[None]:
    """opacus's RDP analysis warns when the best order is at the end of its default range (its
    bound is then slightly loose, never too small): not a problem of the run, kept out of its log."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Optimal order is the")
        yield


def window_owners(split: Any, stride: int) -> np.ndarray:
    """The user (``split.train_users``) of each training window, in ``batches.windows``' order: a
    sequence of n items has ceil((n - 1) / stride) windows."""
    counts = [-(-(len(seq) - 1) // stride) if len(seq) > 1 else 0 for seq in split.train_seqs]
    return np.repeat(np.asarray(split.train_users, dtype=np.int64), counts)


def _below(n: int) -> str:
    """A round delta below 1 / n."""
    return f"{10 ** math.floor(math.log10(1.0 / n) - 1):g}"


class DPSGD(PrivacyMethod):
    def __init__(self, settings: dict[str, Any], context: TrainingContext):
        known = {"epsilon", "delta", "max_grad_norm", "accountant"}
        unknown = sorted(set(settings) - known)
        if unknown:
            raise CrossrecError(f"privacy.{unknown[0]}", "unknown key for privacy=dp", f"known keys: {', '.join(sorted(known))}")
        self.epsilon = _number(settings, "epsilon", lambda v: v > 0, "a positive number", "8")
        self.delta = _number(settings, "delta", lambda v: 0 < v < 1, "a number in (0, 1)", "1e-5")
        self.max_grad_norm = _number(settings, "max_grad_norm", lambda v: v > 0, "a positive number", "1.0")
        self.accountant = settings.get("accountant", "prv")
        if self.accountant not in ACCOUNTANTS:
            raise CrossrecError("privacy.accountant", f"unknown accountant {self.accountant!r}",
                                f"one of {', '.join(ACCOUNTANTS)}")
        refuse(context)
        try:
            import opacus  # noqa: F401
        except ImportError as err:
            raise CrossrecError("privacy", f"privacy=dp needs opacus ({err})", 'pip install "crossrec[privacy]"') from None
        self.objective: PrivateNextItem | None = None

    def wrap(self, objective: Any, splits: dict[str, Any], optimizer: torch.optim.Optimizer) -> PrivateNextItem:
        self.objective = PrivateNextItem(objective, splits, optimizer, self)
        return self.objective

    def record(self) -> dict[str, Any]:
        o = self.objective
        out = {"method": "dp", "target_epsilon": self.epsilon, "delta": self.delta, "max_grad_norm": self.max_grad_norm,
               "accountant": self.accountant, "unit": "user"}
        if o is not None:
            out |= {"epsilon": o.spent(), "noise_multiplier": o.noise_multiplier, "sample_rate": o.sample_rate,
                    "expected_batch_users": o.batch, "users": len(o.samples),
                    "steps": int(sum(h[2] for h in o.accountant.history))}
        return out


@PRIVACY.register("dp")
def dp(settings: dict[str, Any], context: TrainingContext) -> DPSGD:
    """``settings``: epsilon, delta, max_grad_norm, accountant (conf/privacy/dp.yaml)."""
    return DPSGD(settings, context)
