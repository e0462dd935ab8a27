"""The next-item losses: the fused full softmax equals the plain cross-entropy, value and gradients."""

from __future__ import annotations

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
