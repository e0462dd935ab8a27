"""scripts/transfer_bench.py: the committed records regenerate docs/transfer.md; every arm is a
crossrec command line."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("transfer_bench", REPO / "scripts" / "transfer_bench.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_records_regenerate_the_page(bench, tmp_path):
    out = tmp_path / "transfer.md"
    bench.table(None, out)
    assert out.read_text() == (REPO / "docs" / "transfer.md").read_text()


def test_every_step_is_a_crossrec_command_and_references_resolve(bench):
    arms = bench.plan()
    commands = {"evaluate", "finetune", "transfer", "pretrain"}
    for arm, body in arms.items():
        for step in body["steps"]:
            cmd = bench.command(arm, step, 0, "/data", arms)
            assert cmd[1] in commands and "{" not in " ".join(cmd), (arm, step, cmd)
    # every record under docs/transfer-records belongs to a step of the plan
    for path in (REPO / "docs" / "transfer-records").glob("*/*/*.json"):
        assert path.stem in arms[path.parts[-3]]["steps"], path
