"""scripts/benchmarks.py: committed records regenerate docs/benchmarks.md; carried seeds pool exactly."""

from __future__ import annotations

import importlib.util
import statistics
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("benchmarks", REPO / "scripts" / "benchmarks.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["benchmarks"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("benchmarks", None)


def test_pooled_aggregate_equals_all_seeds(bench):
    seeds = [0.0570, 0.0612, 0.0528, 0.0601, 0.0549]
    pooled = bench.Agg.of(seeds[:3]) + bench.Agg.of(seeds[3:])
    assert pooled.n == 5
    assert pooled.mean == pytest.approx(statistics.mean(seeds), abs=1e-12)
    assert pooled.sd == pytest.approx(statistics.stdev(seeds), abs=1e-12)
    # one carried seed has no deviation of its own
    one = bench.Agg(1, 0.05) + bench.Agg.of([0.07])
    assert (one.mean, one.sd) == (pytest.approx(0.06), pytest.approx(statistics.stdev([0.05, 0.07])))
    assert str(bench.Agg(1, 0.06)) == "0.0600" and str(pooled).count("±") == 1


def test_committed_records_regenerate_the_table(bench, tmp_path, monkeypatch):
    # the table is a function of docs/benchmark-records alone: no outputs/ needed
    monkeypatch.setattr(bench, "OUTPUTS", tmp_path / "no-outputs")
    out = tmp_path / "benchmarks.md"
    bench.table(out)
    assert out.read_text() == (REPO / "docs" / "benchmarks.md").read_text()
