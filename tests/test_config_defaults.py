"""One source of defaults: the library's dataclasses say what the shipped YAML says, so a
recipe called from Python and the command line train the same model."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import pytest
import yaml

from crossrec_cli.commands._common import CONF_DIR
from crossrec_cli.models.seqrec import SeqRecConfig
from crossrec_cli.tasks.train import TrainSettings
from crossrec_cli.training.loop import TrainConfig


@pytest.mark.parametrize("cls, path, section, skip", [
    (SeqRecConfig, "model/seqrec.yaml", None, {"pooling", "max_length"}),  # these two come from the backbone
    (TrainConfig, "trainer/default.yaml", None, {"seed"}),
    (TrainSettings, "task/preference.yaml", "train", {"seed", "log_metrics", "progress"}),
])
def test_dataclass_defaults_equal_the_shipped_yaml(cls, path, section, skip):
    conf = yaml.safe_load((Path(CONF_DIR) / path).read_text())
    conf = conf[section] if section else conf
    conf.pop("name", None)
    defaults = {f.name: f.default for f in fields(cls) if f.name not in skip}
    assert set(conf) == set(defaults), set(conf) ^ set(defaults)
    assert {k: conf[k] for k in defaults} == defaults
