"""The command-line layer and the recipes: recipes are plain functions called in-process with a
composed config; only cli.py knows Hydra; the configs ship inside the package."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf, open_dict

from crossrec_cli.cli import compose, run_command
from crossrec_cli.commands import finetune
from crossrec_cli.commands._common import CONF_DIR, load_domains, run_recipe

PACKAGE = Path(__file__).resolve().parents[1] / "crossrec_cli"


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module.split(".")[0])
    return out


def test_only_the_command_line_layer_imports_hydra():
    offenders = [str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py")
                 if p.name != "cli.py" and "hydra" in _imports(p)]
    assert offenders == []
    assert "hydra" in _imports(PACKAGE / "cli.py")  # the check above would pass vacuously otherwise


def test_configs_ship_inside_the_package():
    conf = Path(CONF_DIR)
    assert conf.parent == PACKAGE
    for name in ("finetune", "transfer", "evaluate", "pretrain", "data_stats", "base"):
        assert (conf / f"{name}.yaml").is_file()
    assert (conf / "domain" / "movies.yaml").is_file() and (conf / "experiment" / "smoke.yaml").is_file()


def test_a_recipe_runs_in_process_and_writes_its_run_directory(tmp_path):
    cfg = compose("finetune", ["experiment=smoke", "trainer.epochs=1"], tmp_path)
    assert cfg.runtime.run_dir == str(tmp_path) and list(cfg.runtime.domains) == ["movies"]
    assert cfg.runtime.domain_given is False
    record = run_recipe(cfg, finetune.run)
    assert record["status"] == "complete" and set(record["test"]) == {"movies"}
    assert json.loads((tmp_path / "metrics.json").read_text())["test"] == record["test"]
    saved = OmegaConf.load(tmp_path / "config.yaml")
    assert saved.runtime.run_dir == str(tmp_path) and saved.trainer.epochs == 1


def test_a_list_selection_keeps_each_domain_file_apart(tmp_path):
    cfg = compose("finetune", ["experiment=smoke", "domain=[movies,music]"], tmp_path)
    assert list(cfg.runtime.domains) == ["movies", "music"] and cfg.runtime.domain_given is True
    # each domain as its own file says, not Hydra's merge of the two (music has no timestamps)
    movies = OmegaConf.load(Path(CONF_DIR) / "domain" / "movies.yaml")
    music = OmegaConf.load(Path(CONF_DIR) / "domain" / "music.yaml")
    assert OmegaConf.to_container(cfg.domain.movies) == OmegaConf.to_container(movies)
    assert OmegaConf.to_container(cfg.domain.music) == OmegaConf.to_container(music)
    specs = [spec for spec, _ in load_domains(cfg)]
    assert [(s.name, s.format, s.order) for s in specs] == [("movies", "recbole", movies.get("order", "time")),
                                                            ("music", "lastfm", "random")]
    assert all(s.filters.max_users == 40 for s in specs)  # data.overrides reach every domain


def test_a_search_path_domain_is_found_by_the_recipe(tmp_path):
    extra = tmp_path / "conf" / "domain"
    extra.mkdir(parents=True)
    text = (Path(CONF_DIR) / "domain" / "movies.yaml").read_text().replace("name: movies", "name: films")
    (extra / "films.yaml").write_text(text)
    cfg = compose("evaluate", ["experiment=smoke", f"hydra.searchpath=[file://{tmp_path / 'conf'}]", "domain=films"],
                  tmp_path / "run")
    assert [str(d) for d in cfg.runtime.config_dirs][0] == str(tmp_path / "conf")
    assert [spec.name for spec, _ in load_domains(cfg)] == ["films"]


@pytest.mark.parametrize("command, override, key", [
    ("finetune", "trainer.monitor=ndcg", "trainer.monitor"),
    ("finetune", "trainer.monitor=ndcg@20", "trainer.monitor"),  # not in eval.topk [5, 10]
    ("transfer", "target_fraction=0", "target_fraction"),
    ("finetune", None, "trainer.foo"),  # an unknown key a config file holds (one added on the command
    ("finetune", None, "model.dropuot"),  # line is refused by compose: tests/test_config_keys.py)
])
def test_a_bad_value_or_unknown_key_is_one_line_and_exit_2(tmp_path, capsys, command, override, key):
    cfg = compose(command, ["experiment=smoke", *([override] if override else [])], tmp_path)
    if override is None:
        with open_dict(cfg):
            OmegaConf.update(cfg, key, 1)
    with pytest.raises(SystemExit) as stop:
        run_recipe(cfg, lambda c: pytest.fail("the recipe must not start"))
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {key}:"), err
    assert not (tmp_path / "config.yaml").exists()  # nothing written for a run that never started


@pytest.mark.parametrize("override", ["init_from=/nowhere", "per_domain_adapters=true"])
def test_a_task_refuses_recommendation_keys_it_would_ignore(tmp_path, capsys, override):
    with pytest.raises(SystemExit) as stop:
        run_command("finetune", ["experiment=smoke", "task=preference", override], tmp_path)
    err = capsys.readouterr().err.strip().splitlines()
    assert stop.value.code == 2 and len(err) == 1
    assert err[0].startswith(f"error: {override.split('=')[0]}: task=preference does not read it"), err
    assert not (tmp_path / "metrics.json").exists()


def test_train_samples_is_the_short_spelling_of_task_train_samples(tmp_path):
    cfg = compose("finetune", ["experiment=smoke", "task=preference", "train_samples=16"], tmp_path)
    assert cfg.task.train_samples == 16


def _scalar_tags(run: Path) -> set[str]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags: set[str] = set()
    for events in (run / "tensorboard").glob("events.out.tfevents*"):
        acc = EventAccumulator(str(events))
        acc.Reload()
        tags |= set(acc.Tags()["scalars"])
    return tags


@pytest.mark.parametrize("command, overrides, expected", [
    ("finetune", [], {"train/loss", "valid/movies/ndcg@10", "test/movies/ndcg@10"}),
    ("pretrain", [], {"pretrain/loss"}),
    ("transfer", ["source=movies", "target=music"],
     {"source/train/loss", "adapted/train/loss", "control/train/loss", "transfer/zero_shot/test/music/ndcg@10"}),
    ("evaluate", ["model=popularity"], {"test/movies/ndcg@10"}),
    ("finetune", ["task=preference", "task.train.epochs=1"], {"seed0/train/loss", "test/movies/auc"}),
    ("finetune", ["task=classification", "task.train.epochs=1"],
     {"seed0/train/loss", "test/movies/micro_f1"}),
])
def test_every_command_honours_logger_tensorboard(tmp_path, command, overrides, expected):
    from crossrec_cli.cli import recipe

    cfg = compose(command, ["experiment=smoke", "logger=tensorboard", *overrides], tmp_path)
    run_recipe(cfg, recipe(command))
    tags = _scalar_tags(tmp_path)
    assert expected <= tags, sorted(tags)


@pytest.mark.parametrize("section, cls_path", [("trainer/default.yaml", "crossrec_cli.training.loop:TrainConfig"),
                                               ("model/seqrec.yaml", "crossrec_cli.models.seqrec:SeqRecConfig"),
                                               ("task/preference.yaml:train", "crossrec_cli.tasks.train:TrainSettings")])
def test_the_dataclass_defaults_are_the_yaml_defaults(section, cls_path):
    """One set of defaults: a library caller (dataclass) and a command (YAML) get the same model."""
    import importlib
    from dataclasses import MISSING, fields

    module, name = cls_path.split(":")
    cls = getattr(importlib.import_module(module), name)
    path, _, key = section.partition(":")
    yaml_values = OmegaConf.to_container(OmegaConf.load(Path(CONF_DIR) / path))
    yaml_values = yaml_values[key] if key else yaml_values
    yaml_values.pop("name", None)
    own = {f.name: f.default for f in fields(cls) if f.default is not MISSING}
    assert set(yaml_values) <= set(own)
    assert {k: own[k] for k in yaml_values} == yaml_values


@pytest.mark.parametrize("command, overrides", [
    ("pretrain", []),
    ("evaluate", ["model=text_zeroshot"]),
    ("finetune", []),
    ("finetune", ["task=preference"]),
])
def test_device_is_honoured_or_refused_by_every_command(tmp_path, capsys, command, overrides):
    """No silent no-op: a GPU that is not there is one line for every command (pretrain and
    text_zeroshot once ignored device= and ran on the CPU)."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is visible: cuda:99 would be the test")
    cfg = compose(command, ["experiment=smoke", "device=cuda", *overrides], tmp_path)
    from crossrec_cli.cli import recipe

    with pytest.raises(SystemExit) as stop:
        run_recipe(cfg, recipe(command))
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: device: cuda requested"), err


def test_a_malformed_device_is_a_config_error(tmp_path, capsys):
    cfg = compose("finetune", ["experiment=smoke", "device=gpu0"], tmp_path)
    with pytest.raises(SystemExit):
        run_recipe(cfg, finetune.run)
    assert capsys.readouterr().err.startswith("error: device: expected auto, cpu, cuda or cuda:N")


def test_a_run_written_before_a_key_existed_resumes_while_the_key_keeps_its_neutral_value(tmp_path, capsys):
    from crossrec_cli.commands._common import check_resume_config

    cfg = compose("finetune", ["experiment=smoke", "resume=true"], tmp_path)
    old = OmegaConf.to_container(cfg)
    del old["model"]["features"], old["model"]["fusion"]  # as a config.yaml from before they were added
    (tmp_path / "config.yaml").write_text(OmegaConf.to_yaml(old))
    check_resume_config(cfg)  # passes: null features / sum fusion behave as the keys' absence did
    changed = compose("finetune", ["experiment=smoke", "resume=true", "model.features=[text,id]"], tmp_path)
    with pytest.raises(SystemExit):
        check_resume_config(changed)
    assert "config key model.features" in capsys.readouterr().err


def test_resume_compares_score_auto_by_the_score_it_picks(tmp_path, capsys):
    """A run written when dot was the default resumes under score=auto when auto picks dot (ids
    only) and is refused in one line when auto picks cosine (items with text)."""
    from crossrec_cli.commands._common import check_resume_config

    for overrides, same in ((["backbone=none", "model.item_ids=true"], True), ([], False)):
        cfg = compose("finetune", ["experiment=smoke", "resume=true", *overrides], tmp_path)
        assert cfg.model.score == "auto"
        old = OmegaConf.to_container(cfg)
        old["model"]["score"] = "dot"
        (tmp_path / "config.yaml").write_text(OmegaConf.to_yaml(old))
        if same:
            check_resume_config(cfg)
        else:
            with pytest.raises(SystemExit):
                check_resume_config(cfg)
            err = capsys.readouterr().err.strip().splitlines()
            assert err == ["error: config key model.score: the interrupted run used 'dot', this command 'cosine'; "
                           "resume with the run's own value"]


@pytest.mark.parametrize("command, override, message", [
    ("finetune", "+fusionn=kg", "error: fusionn: crossrec finetune has no such key or choice"),
    ("pretrain", "trainer=default", "error: config key trainer: crossrec pretrain has no trainer choice; "
                                    "trainer= applies to: crossrec finetune, crossrec transfer"),
])
def test_a_key_or_choice_the_command_does_not_have_is_refused(tmp_path, command, override, message):
    from tests.conftest import run_cli

    proc = run_cli(command, "experiment=smoke", override, run_dir=tmp_path, check=False)
    assert proc.returncode == 2 and proc.stderr.strip().startswith(message), proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not (tmp_path / "metrics.json").exists()
