"""A key added on the command line (``+group.key=value``) that the command does not have is the
one-line refusal, in every group of every command, before anything loads; the additions the
project uses (domain data overrides, backbone config, search-path domains, Hydra's own keys)
keep working."""

from __future__ import annotations

import importlib.util

import pytest
from omegaconf import OmegaConf

from crossrec_cli.cli import compose
from crossrec_cli.config_keys import check_added
from crossrec_cli.errors import CrossrecError
from tests.conftest import REPO, run_cli, run_inprocess

COMMANDS = ["pretrain", "finetune", "transfer", "evaluate", "recommend", "explain", "export", "serve", "data"]
GROUPS = ["trainer", "model", "eval", "backbone", "adapter", "task", "fusion", "logger"]


@pytest.mark.parametrize("group", GROUPS)
@pytest.mark.parametrize("command", COMMANDS)
def test_an_added_unknown_key_is_refused_in_one_line(tmp_path, capsys, command, group):
    with pytest.raises(SystemExit) as stop:
        run_inprocess(command, "experiment=smoke", f"+{group}.foo=1", run_dir=tmp_path)
    err = capsys.readouterr().err.strip().splitlines()
    assert stop.value.code == 2 and len(err) == 1 and err[0].startswith(f"error: {group}.foo: crossrec "), err
    assert not any(tmp_path.iterdir())  # refused before the run directory holds anything


@pytest.mark.parametrize("override, message", [
    ("+eval.foo=1", "error: eval.foo: crossrec finetune has no such key in eval; expected one of batch_size, "),
    ("++eval.foo=1", "error: eval.foo: crossrec finetune has no such key in eval; "),
    ("+model.dropuot=0.1", "error: model.dropuot: crossrec finetune has no such key in model=seqrec; "),
    ("+trainer.epoch.x=1", "error: trainer.epoch: crossrec finetune has no such key in trainer; "),
    ("+domain.foo=1", "error: domain.foo: crossrec finetune has no such key in domain=movies; "),
    ("+fusion.foo=1", "error: fusion.foo: crossrec finetune has no such key or choice; "),
])
def test_the_refusal_names_the_key_and_what_is_expected(tmp_path, override, message):
    with pytest.raises(CrossrecError) as err:
        compose("finetune", ["experiment=smoke", override], tmp_path)
    assert str(err.value).startswith(message), str(err.value)


@pytest.mark.parametrize("override, example", [
    ("+model.dropuot=0.1", "e.g. model.dropout=0.5"),  # the closest key, with its value
    ("+adapter.rank=4", "e.g. adapter.r=8"),
    ("+eval.topks=[5]", "e.g. eval.topk=[5,10]"),  # experiment=smoke's value
])
def test_the_refusal_gives_an_example(tmp_path, override, example):
    with pytest.raises(CrossrecError) as err:
        compose("finetune", ["experiment=smoke", "adapter=lora", override], tmp_path)
    assert str(err.value).endswith(example), str(err.value)


def test_a_key_of_another_adapter_is_refused():
    base = {"adapter": {"name": "frozen"}}
    refusal = r"^error: adapter.r: crossrec finetune has no such key in adapter=frozen; "
    with pytest.raises(CrossrecError, match=refusal):
        check_added(base, "adapter.r", "finetune")
    check_added({"adapter": {"name": "lora", "r": 8}}, "adapter.r", "finetune")  # ++adapter.r: it has it


@pytest.mark.parametrize("command, overrides", [
    ("finetune", ["backbone=tiny", "+data.overrides.filters.max_users=40",
                  "+data.overrides.filters.drop_unused_items=true"]),
    ("finetune", ["experiment=smoke", "+backbone.config.hidden_dropout_prob=0"]),
    ("pretrain", ["experiment=smoke", "+backbone.config.attention_probs_dropout_prob=0"]),
    ("evaluate", ["experiment=smoke", "+data.overrides.user_groups={zodiac: null}"]),
    ("finetune", ["experiment=smoke", "+domain.user_groups={gender: null}"]),  # a DomainSpec field
    ("finetune", ["experiment=smoke", "fusion=kg", "+model.feature_settings.kg.hop=2"]),  # kg.py checks its own
    ("recommend", ["experiment=smoke", "+eval.faiss.efsearch=64"]),  # as does eval.faiss (config_check)
    ("finetune", ["experiment=smoke", "++eval.topk=[5]"]),
    ("finetune", ["experiment=smoke", "+hydra.job.env_set.FOO=1"]),
    ("evaluate", ["experiment=smoke", "+opt._target_=torch.optim.AdamW"]),  # the target allowlist judges it
    ("finetune", [f"hydra.searchpath=[file://{REPO}/docs/domains/food-kitchen]", "domain=food",
                  "+data.overrides.path=/data/food-kitchen"]),
])
def test_additions_the_project_uses_keep_working(tmp_path, command, overrides):
    cfg = compose(command, overrides, tmp_path)
    for o in overrides:  # each addition reached the composed config (hydra.* configures Hydra itself)
        key = o.split("=", 1)[0].lstrip("+")
        if o.startswith("+") and not key.startswith("hydra."):
            assert OmegaConf.select(cfg, key) is not None, o


def test_every_transfer_benchmark_command_composes(tmp_path):
    spec = importlib.util.spec_from_file_location("transfer_bench", REPO / "scripts" / "transfer_bench.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    arms = bench.plan()
    seen = set()
    for arm, body in arms.items():
        for step in body["steps"]:
            args = bench.command(arm, step, 0, "/data/food-kitchen", arms)[1:]
            shape = (body["benchmark"], args[0], tuple(a for a in args if a.startswith("+")))
            if shape not in seen:  # one command of each kind per benchmark: the additions are the benchmark's
                seen.add(shape)
                compose(args[0], args[1:], tmp_path / arm / step)
    assert any(s[2] for s in seen)


def test_the_command_line_and_a_sweep_refuse_it_too(tmp_path):
    one = run_cli("finetune", "experiment=smoke", "+eval.foo=1", run_dir=tmp_path / "one", check=False)
    sweep = run_cli("finetune", "-m", "experiment=smoke", "+eval.foo=1", f"hydra.sweep.dir={tmp_path / 'sweep'}",
                    check=False)
    for proc in (one, sweep):
        err = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(err) == 1 and err[0].startswith("error: eval.foo: "), proc.stderr
    assert not (tmp_path / "sweep" / "0" / "config.yaml").exists()

