"""The text zero-shot user vector (model.recency) against numbers worked out by hand, and its
config key on the command line."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from conftest import read_metrics, run_cli, run_inprocess
from crossrec_cli.data.split import EvalSet
from crossrec_cli.errors import CrossrecError
from crossrec_cli.models.baselines import check_recency, mean_history_vectors, recency_weights

# Three item vectors whose L2-normalised forms are easy to write down:
#   a = (3, 4) -> a_n = (0.6, 0.8);  b = (0, 2) -> b_n = (0, 1);  c = (5, 0) -> c_n = (1, 0)
ITEMS = torch.tensor([[3.0, 4.0], [0.0, 2.0], [5.0, 0.0]])
A, B, C = 0, 1, 2


def evalset(*histories: list[int]) -> EvalSet:
    n = len(histories)
    return EvalSet(np.arange(n), [np.array(h, dtype=np.int64) for h in histories], np.zeros(n, dtype=np.int64))


def test_recency_weights_newest_is_one():
    # oldest first: recency^2, recency, 1
    assert recency_weights(3, 0.5).tolist() == [0.25, 0.5, 1.0]
    assert recency_weights(1, 0.5).tolist() == [1.0]


def test_recency_half_by_hand():
    # history [a, b, c] (c newest), recency 0.5 -> weights 0.25, 0.5, 1 (sum 1.75):
    #   0.25 * (0.6, 0.8) + 0.5 * (0, 1) + 1 * (1, 0) = (1.15, 0.7); / 1.75 = (0.657142..., 0.4)
    user = mean_history_vectors(ITEMS, evalset([A, B, C]), history=50, recency=0.5)[0]
    assert user.tolist() == pytest.approx([1.15 / 1.75, 0.4])
    # the direction is what ranks items: proportional to 0.25 a_n + 0.5 b_n + 1 c_n
    by_hand = torch.tensor([1.15, 0.7])
    assert torch.nn.functional.cosine_similarity(user, by_hand, dim=0).item() == pytest.approx(1.0)


def test_recency_one_is_the_plain_mean():
    # (a_n + b_n + c_n) / 3 = (1.6 / 3, 1.8 / 3) = (0.5333..., 0.6), bit for bit the old .mean(0)
    user = mean_history_vectors(ITEMS, evalset([A, B, C]), recency=1.0)[0]
    assert user.tolist() == pytest.approx([1.6 / 3, 0.6])
    plain = torch.nn.functional.normalize(ITEMS, dim=-1).mean(0)
    assert torch.equal(user, plain)
    default = mean_history_vectors(ITEMS, evalset([A, B, C]))  # the function's default is 1.0
    assert torch.equal(default, mean_history_vectors(ITEMS, evalset([A, B, C]), recency=1.0))


def test_recency_applies_to_the_last_history_items_only():
    # history=2 keeps [b, c]: weights 0.5, 1 -> (0.5 * (0, 1) + (1, 0)) / 1.5 = (2/3, 1/3)
    user = mean_history_vectors(ITEMS, evalset([A, B, C]), history=2, recency=0.5)[0]
    assert user.tolist() == pytest.approx([2 / 3, 1 / 3])


def test_recency_changes_which_item_is_closest():
    # history [c, b]: the plain mean (0.5, 0.5) is nearest a_n (cos 0.98995); recency 0.1 leans on the newest b:
    # (0.1 * (1, 0) + (0, 1)) / 1.1 points almost at b_n
    plain, recent = (mean_history_vectors(ITEMS, evalset([C, B]), recency=r)[0] for r in (1.0, 0.1))
    normed = torch.nn.functional.normalize(ITEMS, dim=-1)
    assert int((normed @ plain).argmax()) == A
    assert int((normed @ recent).argmax()) == B


def test_empty_history_stays_zero():
    users = mean_history_vectors(ITEMS, evalset([], [A]), recency=0.5)
    assert users[0].tolist() == [0.0, 0.0]
    assert users[1].tolist() == pytest.approx([0.6, 0.8])  # one item: weight 1, its own vector


@pytest.mark.parametrize("bad", [0, 0.0, -0.5, 1.01, 2, math.nan, math.inf, True, "0.8", None])
def test_recency_out_of_range_is_one_line(bad):
    with pytest.raises(CrossrecError) as err:
        check_recency(bad)
    text = str(err.value)
    assert text.startswith("error: model.recency: ") and "\n" not in text


@pytest.mark.parametrize("good", [1, 1.0, 0.8, 1e-6])
def test_recency_in_range(good):
    assert check_recency(good) == float(good)


def test_cli_bad_recency_exits_2_with_one_line(tmp_path):
    proc = run_cli("evaluate", "model=text_zeroshot", "experiment=smoke", "model.recency=1.5",
                   run_dir=tmp_path / "run", check=False)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: model.recency: "), proc.stderr


def test_cli_records_recency(tmp_path):
    run_cli("evaluate", "model=text_zeroshot", "experiment=smoke", "model.recency=0.5", run_dir=tmp_path / "tz")
    m = read_metrics(tmp_path / "tz")
    assert m["model"] == "text_zeroshot" and m["recency"] == 0.5 and m["text_norm"] == "center"
    run_cli("evaluate", "model=popularity", "experiment=smoke", run_dir=tmp_path / "pop")
    assert "recency" not in read_metrics(tmp_path / "pop")


def test_text_norm_centres_the_catalogue_before_the_cosine():
    """``model.text_norm=center`` for text_zeroshot: each item vector minus the catalogue's mean.
    By hand: mean of a, b, c = (8/3, 2); centred a = (1/3, 2), b = (-8/3, 0), c = (7/3, -2).
    History [b]: uncentred, b_n = (0, 1) is nearest a (cos 0.8, c: 0); centred, b's direction
    (-1, 0) is nearest a (cos -1/3 / |(1/3, 2)| = -0.164) over c (cos -7/3 / 3.073 = -0.759)."""
    from crossrec_cli.models.features.text import TEXT_NORMS

    centred = TEXT_NORMS.get("center")(ITEMS, ITEMS)
    assert torch.allclose(centred, torch.tensor([[1 / 3, 2.0], [-8 / 3, 0.0], [7 / 3, -2.0]]))
    user = torch.nn.functional.normalize(mean_history_vectors(centred, evalset([B]))[0], dim=0)
    cos = torch.nn.functional.normalize(centred, dim=-1) @ user
    assert cos[A].item() == pytest.approx(-(1 / 3) / math.hypot(1 / 3, 2))
    assert cos[C].item() == pytest.approx(-(7 / 3) / math.hypot(7 / 3, 2))
    assert TEXT_NORMS.get("none")(ITEMS, ITEMS) is ITEMS


def test_text_norm_reaches_the_scorer_and_metrics_json(tmp_path):
    """``model.text_norm`` composed from the command line changes text_zeroshot's item matrix to
    the centred catalogue (checked against the plain one, centred here), is recorded in
    metrics.json, and a wrong value is one line naming the key."""
    import torch.nn.functional as F

    from crossrec_cli.cli import compose
    from crossrec_cli.commands._common import load_domains
    from crossrec_cli.commands.evaluate import baseline_scorer
    from crossrec_cli.data import make_split

    mats = {}
    for norm in ("none", "center"):
        cfg = compose("evaluate", ["model=text_zeroshot", "experiment=smoke", f"model.text_norm={norm}"], tmp_path / norm)
        ((spec, domain),) = load_domains(cfg)
        shared: dict = {}
        _, mats[norm] = baseline_scorer(cfg, domain, make_split(domain, spec.order, spec.order_seed), shared)
        raw = shared["backbone"]
    from crossrec_cli.models.encode import cached_text_vectors

    base = cached_text_vectors(raw, domain.item_text, cfg.backbone.max_length, cfg.backbone.pooling, cache=False)
    assert torch.allclose(mats["none"], F.normalize(base, dim=-1), atol=1e-6)
    assert torch.allclose(mats["center"], F.normalize(base - base.mean(0), dim=-1), atol=1e-6)
    record = run_inprocess("evaluate", "model=text_zeroshot", "experiment=smoke", "model.text_norm=center",
                           run_dir=tmp_path / "c")
    assert record["text_norm"] == "center"
    proc = run_cli("evaluate", "model=text_zeroshot", "experiment=smoke", "model.text_norm=centre",
                   run_dir=tmp_path / "bad", check=False)
    assert proc.returncode == 2 and proc.stderr.strip().startswith("error: model.text_norm: expected none, center")
