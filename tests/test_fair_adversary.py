"""Group-fair training (adversarial=fair, fairness.reweight): the adversary removes a planted
attribute from user vectors, the re-weighting by hand, the weighted losses, the one-line
refusals and the discriminator's accuracy in the epoch record."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import read_metrics, run_cli, run_inprocess
from torch import nn

from crossrec_cli.adversarial.base import Stack, add_aux
from crossrec_cli.adversarial.fair import FairAdversary, FairLabels
from crossrec_cli.data.split import EvalSet, Split
from crossrec_cli.evaluation.fairness import group_weights, probe_auc, probe_users, training_labels
from crossrec_cli.training.batches import window_users, windows
from crossrec_cli.training.losses import LOSSES, linear_cross_entropy

SMOKE = ("experiment=smoke",)


class Tower(nn.Module):
    """A user tower as the adversary sees it: (h, valid) -> states; ``pos`` gives the device. A
    linear map of 9 inputs to 5 states that starts as: state 0 = input 0 (where the attribute is
    planted) + input 5 (noise), states 1-4 = inputs 1-4 (what the task reads)."""

    def __init__(self, dim: int = 5):
        super().__init__()
        self.pos = nn.Embedding(1, dim)
        self.net = nn.Linear(9, dim, bias=False)
        with torch.no_grad():
            w = torch.zeros(dim, 9)
            w[0, 0] = w[0, 5] = 1.0
            w[range(1, 5), range(1, 5)] = 1.0
            self.net.weight.copy_(w)

    def forward(self, h, valid, general=False):
        return self.net(h)


class TinyModel(nn.Module):
    score = "dot"

    def __init__(self, dim: int = 5):
        super().__init__()
        self.cfg = type("Cfg", (), {"dim": dim})()
        self.user = Tower(dim)


def _train_tower(adversarial: bool, seed: int = 0) -> tuple[float, list[float]]:
    """The tower learns to keep the task's inputs (states 1-4); the user's group is planted in
    input 0 (shifted by +-3). Returns the probe's leakage AUC on users the adversary never saw
    the group of, and the discriminator's accuracy per epoch."""
    g = torch.Generator().manual_seed(seed)
    n, length = 600, 3
    groups = torch.randint(0, 2, (n,), generator=g)
    h = torch.randn(n, length, 9, generator=g)
    h[..., 0] += 3.0 * (2 * groups[:, None].float() - 1)  # the planted attribute
    valid = torch.ones(n, length, dtype=torch.bool)
    torch.manual_seed(seed)
    model = TinyModel()
    fit = np.arange(400)  # the adversary reads these users' groups; the probe is scored on the rest
    labels = np.full(n, -1)
    labels[fit] = groups[fit].numpy()
    adv = FairAdversary(model, FairLabels("g", ["a", "b"], {"d": labels}), hidden=16, weight=1.0) if adversarial else None
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    accuracy = []
    for epoch in range(30):
        for idx in np.array_split(np.random.default_rng([seed, epoch]).permutation(n), 10):
            def closure(idx=idx):
                return F.mse_loss(model.user(h[idx], valid[idx])[..., 1:], h[idx][..., 1:5])
            if adv is None:
                loss = closure()
            else:
                adv.see_batch("d", idx)
                loss = adv.step_loss(model, "d", closure) + adv.extra_loss(model, "d")
            opt.zero_grad()
            loss.backward()
            opt.step()
        if adv is not None:
            accuracy.append(adv.epoch_metrics()["fair_disc_accuracy"])
    with torch.no_grad():
        x = model.user(h, valid)[:, -1].numpy()
    y = np.where(groups.numpy() == 1, "b", "a").astype(object)
    return probe_auc(x[fit], y[fit], x[400:], y[400:])["leakage_auc"], accuracy


def test_adversary_removes_a_planted_attribute():
    plain, _ = _train_tower(adversarial=False)
    fair, accuracy = _train_tower(adversarial=True)
    assert plain > 0.95  # the tower passes the attribute through
    assert abs(fair - 0.5) < 0.25 * (plain - 0.5)  # much closer to chance
    assert max(accuracy) > 0.7 and accuracy[-1] < 0.6  # the discriminator read it for a while, then could not


def test_discriminator_accuracy_is_balanced():
    """fair_disc_accuracy is the mean recall over groups: a discriminator that always answers the
    largest group scores 1 / groups, not that group's share."""
    model = TinyModel()
    adv = FairAdversary(model, FairLabels("g", ["a", "b"], {"d": np.array([0, 0, 0, 1])}), hidden=4, weight=1.0)
    with torch.no_grad():
        last = adv.disc.net[-1]
        last.weight.zero_()
        last.bias.copy_(torch.tensor([1.0, 0.0]))  # always group a
    adv.see_batch("d", np.arange(4))
    adv.step_loss(model, "d", lambda: model.user(torch.randn(4, 2, 9), torch.ones(4, 2, dtype=torch.bool)).sum())
    adv.extra_loss(model, "d")
    assert adv.epoch_metrics()["fair_disc_accuracy"] == pytest.approx(0.5)
    # the class weights of its loss: inverse to each group's share of the labelled windows
    torch.testing.assert_close(adv.class_weight, torch.tensor([4 / (2 * 3), 4 / (2 * 1)]))


def test_stacked_methods_keep_each_others_modules():
    model = TinyModel()
    a = add_aux(model, "disc", nn.Linear(4, 2))
    b = add_aux(model, "fair_disc", nn.Linear(4, 3))
    assert model.aux["disc"] is a and model.aux["fair_disc"] is b
    seen = []

    class Spy(FairAdversary):
        def see_batch(self, key, rows):
            seen.append((key, list(rows)))

    spy = Spy(model, FairLabels("g", ["a", "b"], {"d": np.array([0, 1])}), 4, 1.0)
    Stack([spy]).see_batch("d", np.array([1, 0]))
    assert seen == [("d", [1, 0])]


def test_group_weights_by_hand():
    groups = np.array(["F", "M", "M", "", "F"], dtype=object)
    targets = np.array([2, 3, 1, 5, 2])
    # labelled targets 8 (F: 4, M: 4 -> both 8 / (2 x 4) = 1) ...
    np.testing.assert_allclose(group_weights(groups, targets), [1, 1, 1, 1, 1])
    groups = np.array(["F", "M", "M", ""], dtype=object)
    targets = np.array([2, 3, 1, 5])
    # ... labelled 6: F 2 -> 6 / (2 x 2) = 1.5, M 4 -> 6 / (2 x 4) = 0.75; no group: 1
    w = group_weights(groups, targets)
    np.testing.assert_allclose(w, [1.5, 0.75, 0.75, 1.0])
    assert (w[:3] * targets[:3]).sum() / targets[:3].sum() == pytest.approx(1.0)  # mean weight of a labelled target
    assert w[0] * targets[0] == pytest.approx(w[1] * targets[1] + w[2] * targets[2])  # groups weigh the same


def test_weighted_losses_are_weighted_means():
    torch.manual_seed(0)
    users, items = torch.randn(6, 4, requires_grad=True), torch.randn(9, 4, requires_grad=True)
    targets, w = torch.tensor([0, 3, 8, 3, 1, 2]), torch.tensor([1.5, 0.5, 1.0, 2.0, 0.25, 0.75])
    got = linear_cross_entropy(users, items, targets, max_elements=18, weights=w)  # 2 rows per chunk
    want = (F.cross_entropy(users @ items.T, targets, reduction="none") * w).mean()
    torch.testing.assert_close(got, want)
    g_got = torch.autograd.grad(got, (users, items))
    g_want = torch.autograd.grad(want, (users, items))
    for a, b in zip(g_got, g_want):
        torch.testing.assert_close(a, b)
    ones = linear_cross_entropy(users, items, targets, weights=torch.ones(6))
    torch.testing.assert_close(ones, linear_cross_entropy(users, items, targets))

    class Dot:
        def logits(self, u, i):
            return u @ i.T

    neg = torch.tensor([4, 5])
    sampled = LOSSES.get("sampled")(Dot(), users, items, targets, 9, neg, None, w)
    cand = torch.unique(torch.cat([targets, neg]))
    want = (F.cross_entropy(users @ items[cand].T, torch.searchsorted(cand, targets), reduction="none") * w).mean()
    torch.testing.assert_close(sampled, want)


def _split() -> Split:
    seqs = [np.arange(7), np.arange(3), np.arange(12), np.arange(2)]
    empty = EvalSet(np.zeros(0, dtype=np.int64), [], np.zeros(0, dtype=np.int64))
    return Split(np.array([0, 1, 2, 3]), seqs, empty, empty, "leave-one-out")


def test_window_users_follow_windows():
    split = _split()
    for stride in (None, 2):
        wins, owners = windows(split, 4, stride), window_users(split, 4, stride)
        assert len(wins) == len(owners)
        for (w, _), u in zip(wins, owners):
            assert set(w.tolist()) <= set(split.train_seqs[u].tolist())
    assert window_users(split, 4).tolist() == [0, 0, 1, 2, 2, 2, 3]


def test_training_labels_hide_the_probes_users():
    split = _split()
    labels = np.array(["F", "M", "F", "M"], dtype=object)
    seen = training_labels(split, labels, seed=0, test_share=0.5)
    _, held = probe_users(split, 0.5, 0)
    assert len(held) == 2 and all(seen[u] == "" for u in held.users)
    assert all(seen[u] == labels[u] for u in set(range(4)) - set(held.users.tolist()))


def test_finetune_fair_fgm_and_reweight_record_the_discriminator(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="crossrec")
    run_inprocess("finetune", *SMOKE, "adversarial=[fair,fgm]", "fairness.attribute=gender",
                  "fairness.reweight=group", "trainer.epochs=2", run_dir=tmp_path / "run")
    m = read_metrics(tmp_path / "run")
    assert m["adversarial"] == ["fair", "fgm"] and m["fairness_training"] == {"attribute": "gender", "reweight": "group"}
    assert len(m["history"]) == 2
    for h in m["history"]:
        assert 0.0 <= h["fair_disc_accuracy"] <= 1.0 and "fgm_loss_gap" in h
    assert "gender" in m["fairness"]["movies"]
    epochs = [r.getMessage() for r in caplog.records if r.getMessage().startswith("epoch ")]
    assert len(epochs) == 2 and all(", fair_disc_accuracy 0." in e for e in epochs)  # each epoch's log line


@pytest.mark.parametrize("args, key, words", [
    (("adversarial=fair", "fairness.attribute=occupation"), "fairness.attribute", "age, gender"),
    (("adversarial=fair",), "adversarial", "fairness.attribute is null"),
    (("fairness.reweight=group",), "fairness.reweight", "fairness.attribute is null"),
    (("fairness.attribute=gender",), "fairness.attribute", "neither is on"),
    (("fairness.reweight=users",), "fairness.reweight", "none or group"),
    (("domain=music", "adversarial=fair", "fairness.attribute=gender"), "fairness.attribute", "has no user_groups"),
])
def test_refusals_are_one_line(tmp_path, args, key, words):
    proc = run_cli("finetune", *SMOKE, *args, run_dir=tmp_path, check=False)
    err = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(err) == 1, proc.stderr
    assert err[0].startswith(f"error: {key}:") and words in err[0]


def test_transfer_refuses_fair(tmp_path):
    proc = run_cli("transfer", *SMOKE, "source=movies", "target=music", "adversarial=fair", run_dir=tmp_path, check=False)
    err = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(err) == 1 and "only crossrec finetune" in err[0], proc.stderr


def test_fairness_page_is_the_training_records_rendered(tmp_path):
    import importlib.util
    import shutil
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location("fairness_training", repo / "scripts" / "fairness_training.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    arms = script.load()
    assert script.BASE in arms and all(r["command"].startswith("crossrec finetune ") for rs in arms.values() for r in rs)
    doc = tmp_path / "fairness.md"
    shutil.copy(script.DOC, doc)
    script.write_doc(arms, doc)
    assert doc.read_text() == script.DOC.read_text()
    assert f"{script.BEGIN}\n{script.render(arms)}{script.END}" in script.DOC.read_text()
