"""Registries: a new extension is one module that registers itself; unknown names are one line."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from crossrec_cli.adapters import methods
from crossrec_cli.adversarial import ADVERSARIAL
from crossrec_cli.errors import CrossrecError
from crossrec_cli.evaluation.metrics import RANKING_METRICS, rank_metrics
from crossrec_cli.models.baselines import BASELINES
from crossrec_cli.registry import Registry
from crossrec_cli.training.loggers import LOGGERS
from crossrec_cli.training.pretrain import OBJECTIVES


def test_a_module_dropped_into_the_package_registers_itself(tmp_path, monkeypatch):
    pkg = tmp_path / "plugins_demo"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "base.py").write_text(
        "from crossrec_cli.registry import Registry\nTHINGS = Registry('thing', 'thing.name', 'plugins_demo')\n")
    (pkg / "extra.py").write_text(
        "from plugins_demo.base import THINGS\n@THINGS.register('double')\ndef double(x):\n    return 2 * x\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    from plugins_demo.base import THINGS  # extra.py is not imported by anyone

    assert "plugins_demo.extra" not in sys.modules
    assert THINGS.get("double")(21) == 42  # the lookup imported the package's modules
    assert THINGS.names() == ["double"]
    for name in [m for m in sys.modules if m.startswith("plugins_demo")]:
        monkeypatch.delitem(sys.modules, name)


def test_an_unknown_name_names_the_key_and_what_exists():
    reg: Registry = Registry("widget", "model.widget")
    reg.add("a", 1)
    with pytest.raises(CrossrecError) as err:
        reg.get("b")
    line = err.value.one_line()
    assert line.startswith("error: model.widget: unknown widget 'b'") and "a" in line and "\n" not in line
    with pytest.raises(ValueError, match="twice"):
        reg.add("a", 2)


def test_the_shipped_registries_hold_every_configured_name():
    from pathlib import Path

    from crossrec_cli.commands._common import CONF_DIR

    conf = Path(CONF_DIR)
    assert sorted(methods()) == sorted(p.stem for p in (conf / "adapter").glob("*.yaml"))
    assert sorted(LOGGERS) == sorted(p.stem for p in (conf / "logger").glob("*.yaml"))
    assert sorted(ADVERSARIAL.names()) == sorted(p.stem for p in (conf / "adversarial").glob("*.yaml"))
    baselines = {p.stem for p in (conf / "model").glob("*.yaml")} - {"seqrec"}
    assert sorted(BASELINES.names()) == sorted(baselines)
    assert set(OBJECTIVES.names()) == {"contrastive", "neighbors"}
    from crossrec_cli.data.domain import READERS

    assert set(READERS.names()) == {"recbole", "movielens", "lastfm", "amazon", "instruction", "cdsr"}


def test_rank_metrics_reports_every_registered_metric_in_order():
    ranks = np.array([0, 3, 20])
    out = rank_metrics(ranks, [5])
    assert list(out) == [f"{m}@5" for m in RANKING_METRICS.names()] == ["recall@5", "ndcg@5", "mrr@5"]
    # by hand: hits at ranks 0 and 3 of 3 examples
    assert out["recall@5"] == pytest.approx(2 / 3)
    assert out["ndcg@5"] == pytest.approx((1 + 1 / np.log2(5)) / 3)
    assert out["mrr@5"] == pytest.approx((1 + 1 / 4) / 3)


def test_recipes_ask_adapters_what_they_can_do_instead_of_comparing_names():
    """The capabilities the recipes read (pretrain merges, per-domain named adapters, cached
    vectors), checked against what each method is: peft merges LoRA / AdaLoRA / IA3 weights into
    the backbone but not prefixes; AdaLoRA trains one adapter at a time; frozen trains nothing."""
    from crossrec_cli.adapters import ADAPTERS

    fam = {m: ADAPTERS.get(m) for m in methods()}
    assert [m for m in fam if not fam[m].trains_backbone(m)] == ["frozen"]
    assert sorted(m for m in fam if fam[m].mergeable(m)) == ["adalora", "full", "ia3", "lora"]
    assert sorted(m for m in fam if not fam[m].named_adapters_problem(m)) == ["adapter", "ia3", "lora", "prefix"]
    assert sorted(m for m in fam if not fam[m].separate_weights(m)) == ["frozen", "full"]


def test_config_check_takes_choices_from_the_tables_that_build_them(monkeypatch):
    """model.projection (like readout, positions, score, text_norm, backbone.kind / pooling) is
    checked against its table when the value is read: a projection registered by a plugin is
    accepted with no edit to config_check, and the error for a wrong name lists it."""
    from torch import nn

    from crossrec_cli.config_check import check_common
    from crossrec_cli.models.projection import PROJECTIONS, build_projection

    monkeypatch.setitem(PROJECTIONS._items, "plugged", lambda d_in, d_out, experts, dropout: nn.Identity())
    check_common({"model": {"name": "seqrec", "projection": "plugged"}})
    assert isinstance(build_projection("plugged", 4, 4), nn.Identity)
    with pytest.raises(CrossrecError) as err:
        check_common({"model": {"name": "seqrec", "projection": "mpl"}})
    assert err.value.one_line() == ("error: model.projection: expected linear, mlp, whiten, moe, identity, residual or plugged, "
                                    "got 'mpl'; e.g. model.projection=mlp")
    with pytest.raises(CrossrecError, match="backbone.pooling: expected mean, cls or last, got 'max'"):
        check_common({"backbone": {"pooling": "max"}})


def test_a_text_perturbation_is_one_registered_function(monkeypatch):
    """``@text_perturbation`` registers a TextJob -> texts function that `perturbed_texts` (and so
    `evaluate robustness=[...]`) runs; an attack on vectors is not a text perturbation."""
    from types import SimpleNamespace

    from crossrec_cli.evaluation import robustness as rb

    monkeypatch.setattr(rb.PERTURBATIONS, "_items", dict(rb.PERTURBATIONS._items))
    rb.text_perturbation("upper")(lambda job: [t.upper() for t in job.texts])
    domain = SimpleNamespace(item_text=["a b", "c"], item_columns={"item": ["1", "2"], "title": ["a b", "c"]})
    spec = SimpleNamespace(text_fields=None, item_field="item", text_template=None)
    assert rb.parse(["upper", "fgsm:0.1"]) == [("upper", None), ("fgsm", "0.1")]
    assert rb.perturbed_texts(domain, spec, "upper", None, 0) == ["A B", "C"]
    assert rb.PERTURBATIONS.get("upper").reads_text and not rb.PERTURBATIONS.get("fgsm").reads_text
    with pytest.raises(CrossrecError, match="fgsm does not perturb texts"):
        rb.perturbed_texts(domain, spec, "fgsm", "0.1", 0)
    with pytest.raises(CrossrecError, match="unknown perturbation 'uper'"):
        rb.parse(["uper"])


def test_domain_order_comes_from_the_order_table(monkeypatch):
    """A domain file's ``order`` is checked against ``ORDERS``: a registered order is accepted and
    used by the split; an unknown one is one line naming the key and listing the table."""
    import numpy as np

    from crossrec_cli.data.domain import DomainSpec
    from crossrec_cli.data.split import ORDERS, order_interactions

    monkeypatch.setitem(ORDERS._items, "newest_first", lambda time, weight, seed, n: -np.nan_to_num(time, nan=0.0))
    spec = DomainSpec.from_dict({"name": "d", "format": "recbole", "path": ".", "order": "newest_first"})
    assert spec.order == "newest_first"
    users, time = np.array([0, 0, 0, 1]), np.array([1.0, 3.0, 2.0, 5.0])
    assert order_interactions(users, time, np.zeros(4), "newest_first", 0).tolist() == [1, 2, 0, 3]
    assert order_interactions(users, time, np.zeros(4), "time", 0).tolist() == [0, 2, 1, 3]
    with pytest.raises(CrossrecError) as err:
        DomainSpec.from_dict({"name": "d", "format": "recbole", "path": ".", "order": "chrono"})
    assert err.value.one_line().endswith("unknown order 'chrono'; expected time, random, weight or newest_first")
