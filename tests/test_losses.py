"""The next-item losses: the fused full softmax equals the plain cross-entropy, value and gradients."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from crossrec_cli.training.losses import linear_cross_entropy


def _grads(fn, users, items, targets):
    u, i = users.clone().requires_grad_(), items.clone().requires_grad_()
    loss = fn(u, i, targets)
    loss.backward()
    return loss.detach(), u.grad, i.grad


@pytest.mark.parametrize("max_elements", [1, 37, 10_000, 1 << 22])  # 1 row a chunk .. all rows at once
def test_linear_cross_entropy_equals_cross_entropy_of_the_product(max_elements):
    g = torch.Generator().manual_seed(0)
    users = torch.randn(53, 8, generator=g, dtype=torch.float64)
    items = torch.randn(29, 8, generator=g, dtype=torch.float64)
    targets = torch.randint(29, (53,), generator=g)
    targets[:5] = 7  # a repeated target: its item's gradient sums over the rows
    ref = _grads(lambda u, i, t: F.cross_entropy(u @ i.T, t), users, items, targets)
    got = _grads(lambda u, i, t: linear_cross_entropy(u, i, t, max_elements), users, items, targets)
    for a, b in zip(ref, got):
        torch.testing.assert_close(b, a, rtol=1e-10, atol=1e-12)


def test_linear_cross_entropy_chains_through_what_made_its_inputs():
    # a scale applied before the loss (cosine / temperature) gets its gradient through autograd,
    # and a loss multiplied afterwards scales every gradient
    g = torch.Generator().manual_seed(1)
    w = torch.randn(8, 8, generator=g, dtype=torch.float64, requires_grad=True)
    x = torch.randn(20, 8, generator=g, dtype=torch.float64)
    items = torch.randn(11, 8, generator=g, dtype=torch.float64)
    t = torch.randint(11, (20,), generator=g)
    (3 * F.cross_entropy(F.normalize(x @ w, dim=-1) @ items.T / 0.07, t)).backward()
    ref = w.grad.clone()
    w.grad = None
    (3 * linear_cross_entropy(F.normalize(x @ w, dim=-1) / 0.07, items, t, 16)).backward()
    torch.testing.assert_close(w.grad, ref, rtol=1e-10, atol=1e-12)


def test_linear_cross_entropy_without_gradients_is_just_the_value():
    users, items, t = torch.randn(6, 4), torch.randn(9, 4), torch.randint(9, (6,))
    with torch.no_grad():
        value = linear_cross_entropy(users, items, t, 10)
    torch.testing.assert_close(value, F.cross_entropy(users @ items.T, t), rtol=1e-5, atol=1e-6)


class _Dot:
    """The part of SeqRec a sampled loss calls: plain dot-product logits."""

    @staticmethod
    def logits(users, items):
        return users @ items.T


def test_expected_log_counts_by_hand():
    """4 in-batch draws by popularity (shares 1/2, 1/4, 1/4, 0) + 8 uniform draws over 4 items:
    item i is missed by all of them with probability (1 - share_i)^4 (3/4)^8."""
    from crossrec_cli.training.losses import expected_log_counts

    got = expected_log_counts(torch.tensor([0.5, 0.25, 0.25, 0.0], dtype=torch.float64), 4, 8)
    missed = torch.tensor([0.5**4, 0.75**4, 0.75**4, 1.0], dtype=torch.float64) * 0.75**8
    torch.testing.assert_close(got, torch.log(1 - missed))
    rare = expected_log_counts(torch.tensor([1e-6, 1 - 1e-6], dtype=torch.float64), 3, 0)  # rare: ~ expected count
    assert abs(float(rare[0]) - np.log(3e-6)) < 1e-5


def test_sampled_logq_is_the_sampled_softmax_with_each_candidate_corrected():
    """sampled_logq: cross-entropy over the candidates (targets + negatives, each once) of
    logit - log expected count; sampled: the same without the correction."""
    from crossrec_cli.training.losses import LOSSES

    g = torch.Generator().manual_seed(0)
    users, items = torch.randn(3, 4, generator=g, dtype=torch.float64), torch.randn(6, 4, generator=g, dtype=torch.float64)
    targets, negatives = torch.tensor([4, 1, 4]), torch.tensor([0, 4, 5])
    log_q = torch.log(torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0, 6.0], dtype=torch.float64))
    cand = [0, 1, 4, 5]
    z = users @ items[cand].T - log_q[cand]
    want = F.cross_entropy(z, torch.tensor([2, 1, 2]))
    got = LOSSES.get("sampled_logq")(_Dot, users, items, targets, 6, negatives, log_q)
    torch.testing.assert_close(got, want)
    plain = LOSSES.get("sampled")(_Dot, users, items, targets, 6, negatives, None)
    torch.testing.assert_close(plain, F.cross_entropy(users @ items[cand].T, torch.tensor([2, 1, 2])))


def test_auto_is_the_full_softmax_up_to_its_size_and_sampled_logq_above():
    from crossrec_cli.training.losses import LOSSES, SAMPLED_ABOVE

    auto = LOSSES.get("auto")
    assert auto.resolve(SAMPLED_ABOVE, SAMPLED_ABOVE) is LOSSES.get("full")
    assert auto.resolve(SAMPLED_ABOVE + 1, SAMPLED_ABOVE) is LOSSES.get("sampled_logq")
    assert auto.resolve(500, 100) is LOSSES.get("sampled_logq") and not LOSSES.get("sampled").corrects
    assert LOSSES.get("sampled").resolve(10, 100) is LOSSES.get("sampled")  # a named loss is itself at any size


def test_target_share_counts_the_targets_of_the_domain_only():
    """-1 (padding, no target) and items >= n_items (another domain's context) are not targets."""
    from crossrec_cli.training.loop import target_share

    share = target_share([torch.tensor([[-1, 0, 2, 2], [7, 2, 1, -1]])], 4)
    torch.testing.assert_close(share, torch.tensor([1, 1, 3, 0]) / 5.0)


def _fit_popularity(loss_name: str, steps: int = 400) -> float:
    """Learn one free score per item from targets drawn by a Zipf popularity, with a sampled
    loss; returns KL(popularity || softmax of the scores over the whole catalogue)."""
    from crossrec_cli.training.losses import LOSSES, expected_log_counts

    n, batch, n_neg = 40, 32, 8
    pop = 1.0 / torch.arange(1, n + 1, dtype=torch.float64)
    pop /= pop.sum()
    g = torch.Generator().manual_seed(0)
    scores = torch.zeros(n, 1, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Adam([scores], lr=0.05)
    loss = LOSSES.get(loss_name)
    log_q = expected_log_counts(pop, batch, n_neg)
    for _ in range(steps):
        targets = torch.multinomial(pop, batch, replacement=True, generator=g)
        negatives = torch.randint(n, (n_neg,), generator=g)
        opt.zero_grad()
        loss(_Dot, torch.ones(batch, 1, dtype=torch.float64), scores, targets, n, negatives,
             log_q if loss.corrects else None).backward()
        opt.step()
    learned = torch.log_softmax(scores.detach().squeeze(1), 0)
    return float((pop * (pop.log() - learned)).sum())


def test_the_logq_correction_undoes_the_popularity_of_in_batch_negatives():
    """Targets drawn by popularity are also the in-batch negatives, so the uncorrected sampled
    softmax learns a catalogue-wide distribution far flatter than the true one; the corrected one
    recovers it (KL to the popularity several times smaller)."""
    plain, corrected = _fit_popularity("sampled"), _fit_popularity("sampled_logq")
    assert corrected < 0.25 * plain, (corrected, plain)


def test_sampled_above_is_refused_unless_the_loss_is_auto():
    from omegaconf import OmegaConf

    from crossrec_cli.commands.recsys import train_config
    from crossrec_cli.errors import CrossrecError

    cfg = OmegaConf.create({"seed": 0, "model": {"max_history": 50},
                            "trainer": {"loss": "full", "sampled_above": 5000}})
    with pytest.raises(CrossrecError, match="trainer.sampled_above.*read by trainer.loss=auto only"):
        train_config(cfg, {})
    cfg.trainer.loss = "auto"
    assert train_config(cfg, {}).sampled_above == 5000


def test_a_sampled_step_projects_only_the_rows_it_reads(monkeypatch):
    """With a sampled loss (frozen backbone) a step projects only the batch's history items and
    candidates (SeqRec.item_rows), never the whole catalogue, and its loss and gradients are the
    ones the whole item matrix gives, general user included."""
    from test_seqrec import _model

    from crossrec_cli.training.losses import LOSSES, expected_log_counts
    from crossrec_cli.training.loop import TrainConfig, batch_loss, target_share

    m = _model(dropout=0.0, dim=12, projection="residual", readout="pool", text_norm="center", general_loss=0.5,
               general_items="plain")
    with torch.no_grad():
        m.features["text"].proj.scale.fill_(0.3)
    inp = torch.tensor([[-1, 3, 4, 5], [7, 8, 9, 1]])
    tgt = torch.tensor([[-1, 4, 5, 6], [8, 9, 1, 2]])
    tc = TrainConfig(loss="sampled_logq", n_negatives=4)
    n = m.n_targets("d")
    params = [p for p in m.parameters() if p.requires_grad]

    torch.manual_seed(3)
    negatives = LOSSES.get("sampled_logq").negatives(n, 4, torch.device("cpu"))
    mask = tgt >= 0
    targets = tgt[mask]
    log_q = expected_log_counts(target_share([tgt], n), len(targets), 4)
    loss = LOSSES.get("sampled_logq")
    items = m.item_matrix("d")
    want = loss(m, m.user_states(items, inp)[mask], items, targets, n, negatives, log_q)
    plain = m.general_item_matrix("d", items)
    want = want + 0.5 * loss(m, m.user_states(plain, inp, general=True)[mask], plain, targets, n, negatives, log_q)
    want_grads = torch.autograd.grad(want, params, allow_unused=True)

    def whole(*a, **k):
        raise AssertionError("the whole catalogue was projected")

    monkeypatch.setattr(m, "item_matrix", whole)
    torch.manual_seed(3)
    got = batch_loss(m, "d", inp, tgt, tc)
    got_grads = torch.autograd.grad(got, params, allow_unused=True)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    for a, b in zip(got_grads, want_grads):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
