"""Adversarial training: FGM / PGD input perturbations (adversarial/perturb.py), the stacked
adversary, GRL's discriminator accuracy per epoch, and the recipes' wiring."""

from __future__ import annotations

import pytest
import torch
from conftest import read_metrics, run_cli, run_inprocess

from crossrec_cli.adversarial.perturb import InputAdversary

SMOKE = ("experiment=smoke",)


class ItemModel:
    """The two things InputAdversary reads from a recommender with a frozen backbone."""

    backbone_trains = False
    item_perturb = None

    def __init__(self, x: torch.Tensor):
        self.x = x

    def items(self) -> torch.Tensor:
        return self.item_perturb("d", self.x) if self.item_perturb else self.x


def test_fgm_moves_each_vector_epsilon_of_its_norm_up_the_gradient():
    x = torch.tensor([[3.0, 4.0], [1.0, 0.0]])
    w = torch.tensor([1.0, 2.0])
    model = ItemModel(x)
    seen = []

    def closure():
        v = model.items()
        seen.append(v.detach().clone())
        return (v @ w).sum()  # d loss / d v = w for every row

    adv = InputAdversary("fgm", epsilon=0.1, steps=1, alpha=0.1, weight=1.0)
    total = adv.step_loss(model, "d", closure)
    clean, pushed = seen[0], seen[-1]
    # row r moves 0.1 * |x_r| along w / |w|: row 0 by 0.5, row 1 by 0.1
    unit = w / w.norm()
    torch.testing.assert_close(pushed - clean, torch.stack([0.5 * unit, 0.1 * unit]))
    assert total.item() == pytest.approx(2 * (x @ w).sum().item() + (0.6 * unit @ w).item(), rel=1e-5)
    assert adv.epoch_metrics()["fgm_loss_gap"] == pytest.approx((0.6 * unit @ w).item(), rel=1e-5)
    assert model.item_perturb is None  # removed after the step


def test_pgd_stays_inside_the_epsilon_ball():
    torch.manual_seed(0)
    x = torch.randn(5, 4)
    model = ItemModel(x)
    target = torch.randn(5, 4)
    seen = []

    def closure():
        v = model.items()
        seen.append(v.detach().clone())
        return ((v - target) ** 2).sum()

    InputAdversary("pgd", epsilon=0.2, steps=4, alpha=0.15, weight=1.0).step_loss(model, "d", closure)
    assert len(seen) == 5  # clean, 3 intermediate, final
    moved = (seen[-1] - x).norm(dim=-1) / x.norm(dim=-1)
    assert (moved <= 0.2 + 1e-5).all() and (moved > 0.15).all()


def test_recipes_fgm_pgd_and_stacked(tmp_path):
    run_inprocess("finetune", *SMOKE, "adversarial=fgm", "adapter=full", run_dir=tmp_path / "fgm")
    m = read_metrics(tmp_path / "fgm")
    assert m["adversarial"] == "fgm" and "fgm_loss_gap" in m["history"][0]
    run_inprocess("finetune", *SMOKE, "domain=[movies,music]", "adversarial=[grl,pgd]", run_dir=tmp_path / "stack")
    m = read_metrics(tmp_path / "stack")
    assert m["adversarial"] == ["grl", "pgd"]
    h = m["history"][0]
    assert 0.0 <= h["grl_disc_accuracy"] <= 1.0 and "pgd_loss_gap" in h


def test_grl_on_one_domain_is_refused(tmp_path):
    proc = run_cli("finetune", *SMOKE, "adversarial=grl", run_dir=tmp_path, check=False)
    err = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(err) == 1 and "needs at least two" in err[0]


# ---- robustness evaluation ------------------------------------------------------------------

@pytest.fixture(scope="module")
def movies():
    import yaml

    from crossrec_cli.data import DomainSpec, load_domain
    from tests.test_tags import REPO

    spec = DomainSpec.from_dict(yaml.safe_load((REPO / "crossrec_cli/conf/domain/movies.yaml").read_text()))
    return spec, load_domain(spec)


def test_text_perturbations_on_real_titles(movies):
    from crossrec_cli.evaluation.robustness import perturbed_texts

    spec, d = movies
    clean = d.item_text
    shuffled = perturbed_texts(d, spec, "shuffle", None, 0)
    assert all(sorted(a.split()) == sorted(b.split()) for a, b in zip(clean, shuffled))
    assert sum(a != b for a, b in zip(clean, shuffled)) > 0.9 * len(clean)
    assert perturbed_texts(d, spec, "shuffle", None, 0) == shuffled  # seeded
    typo = perturbed_texts(d, spec, "typos", "1.0", 0)  # every letter hit: no word survives intact
    assert all(w not in t.split() for t, c in zip(typo[:50], clean[:50]) for w in c.split() if len(w) > 3 and w.isalpha())
    dropped = perturbed_texts(d, spec, "drop", "class", 0)
    assert "Comedy" not in dropped[0] and dropped[0].startswith(d.item_columns["movie_title"][0])
    assert perturbed_texts(d, spec, "title_only", None, 0) == [t or c for t, c in zip(d.item_columns["movie_title"], clean)]


def test_evaluate_robustness_block(tmp_path):
    run = tmp_path / "ft"
    run_inprocess("finetune", *SMOKE, run_dir=run)
    out = tmp_path / "ev"
    run_inprocess("evaluate", *SMOKE, f"run={run}", "robustness=[shuffle,fgsm:0.2]", run_dir=out)
    rob = read_metrics(out)["robustness"]["movies"]
    assert set(rob) == {"shuffle", "fgsm:0.2"} and rob["fgsm:0.2"]["metrics"]["examples"] == 40
    proc = run_cli("evaluate", *SMOKE, "robustness=[shuffle]", run_dir=tmp_path / "base", check=False)
    assert proc.returncode == 2 and "re-score a trained model" in proc.stderr


def test_fgsm_items_raise_the_test_loss(tmp_path):
    import torch.nn.functional as F

    from crossrec_cli.cli import compose
    from crossrec_cli.commands.checkpoint_eval import load_run
    from crossrec_cli.data import make_split
    from crossrec_cli.evaluation.robustness import fgsm_items
    from crossrec_cli.models.seqrec import pad_histories

    run = tmp_path / "ft"
    run_inprocess("finetune", *SMOKE, "trainer.epochs=2", run_dir=run)
    loaded = load_run(compose("evaluate", [*SMOKE, f"run={run}"], tmp_path / "c"))
    model, (spec, dom) = loaded.model, loaded.domains[0]
    test = make_split(dom, spec.order, spec.order_seed).test
    model.eval()

    def loss(items):
        with torch.no_grad():
            users = model.user_states(items, pad_histories(test.histories, model.cfg.max_history))[:, -1]
            return F.cross_entropy(model.logits(users, items), torch.as_tensor(test.targets)).item()

    with torch.no_grad():
        clean = model.item_matrix(spec.name)
    pushed = fgsm_items(model, spec.name, test, 0.05)
    moved = (pushed - clean).norm(dim=-1) / clean.norm(dim=-1)
    torch.testing.assert_close(moved, torch.full_like(moved, 0.05), atol=1e-4, rtol=1e-3)
    assert loss(pushed) > loss(clean)


def test_pretrain_fgm_perturbs_token_embeddings_and_refuses_grl(tmp_path):
    run_inprocess("pretrain", *SMOKE, "adversarial=fgm", run_dir=tmp_path / "pre")
    m = read_metrics(tmp_path / "pre")
    assert m["adversarial"] == "fgm" and m["history"][0]["fgm_loss_gap"] > 0  # pushed views score worse
    proc = run_cli("pretrain", *SMOKE, "adversarial=grl", run_dir=tmp_path / "grl", check=False)
    assert proc.returncode == 2 and "pretrain trains the backbone alone" in proc.stderr
