"""Smoke runs of the real commands on the tiny backbone and a slice of the bundled data: the\nrecipes in-process (``run_inprocess``), the command-line wiring (exit codes, stderr) through the\nreal CLI (``run_cli``)."""

from __future__ import annotations

import math

import pytest
from conftest import read_metrics, run_cli, run_inprocess

SMOKE = ("experiment=smoke",)


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory):
    out = tmp_path_factory.mktemp("ft")
    run_inprocess("finetune", *SMOKE, "trainer.epochs=2", run_dir=out)
    return out


def test_finetune_writes_run_directory(finetuned):
    m = read_metrics(finetuned)
    assert m["command"] == "finetune" and m["model"] == "seqrec" and m["mode"] == "inductive"
    assert m["protocol"] == "full" and m["seed"] == 0 and m["status"] == "complete"
    fp = m["dataset"]["movies"]
    assert fp["users"] == 40 and len(fp["sha256"]) == 64
    assert set(m["test"]["movies"]) >= {"recall@5", "ndcg@5", "mrr@5", "recall@10", "ndcg@10", "mrr@10"}
    assert 0 < m["trainable_params"] < m["total_params"]
    assert m["epochs_run"] == 2 and len(m["history"]) == 2 and m["seconds_per_epoch"] > 0
    assert (finetuned / "checkpoint" / "model.safetensors").is_file()
    assert (finetuned / "training_curve.png").read_bytes()[:4] == b"\x89PNG"
    assert "backbone:" in (finetuned / "config.yaml").read_text()


def test_finetune_starts_from_a_uniform_softmax(finetuned):
    """Every tower weight starts at N(0, 0.02) and the projected text vectors of the tiny
    backbone nearly coincide, so at the start every item is about equally likely: the first
    epoch's mean cross-entropy is ln(number of items) (a larger value would mean some initial
    scale dominates, as the N(0, 1) position table once did)."""
    m = read_metrics(finetuned)
    losses = [h["loss"] for h in m["history"]]
    assert losses[0] == pytest.approx(math.log(m["dataset"]["movies"]["items"]), abs=0.02)
    assert all(math.isfinite(x) for x in losses)


def test_same_seed_same_metrics_other_seed_differs(finetuned, tmp_path):
    again = tmp_path / "again"
    run_inprocess("finetune", *SMOKE, "trainer.epochs=2", run_dir=again)
    a, b = read_metrics(finetuned), read_metrics(again)
    assert a["test"] == b["test"] and a["valid"] == b["valid"]
    assert [h["loss"] for h in a["history"]] == [h["loss"] for h in b["history"]]
    other = tmp_path / "other"
    run_inprocess("finetune", *SMOKE, "trainer.epochs=2", "seed=1", run_dir=other)
    assert [h["loss"] for h in read_metrics(other)["history"]] != [h["loss"] for h in a["history"]]


def test_evaluate_run_reproduces_finetune_metrics(finetuned, tmp_path):
    run_inprocess("evaluate", *SMOKE, f"run={finetuned}", run_dir=tmp_path)
    m, ref = read_metrics(tmp_path), read_metrics(finetuned)
    assert m["test"]["movies"] == pytest.approx(ref["test"]["movies"])
    assert m["trained_on"] == ["movies"] and m["mode"] == "inductive"


def test_evaluate_run_on_unseen_domain_is_zero_shot(finetuned, tmp_path):
    run_inprocess("evaluate", *SMOKE, f"run={finetuned}", "domain=music", run_dir=tmp_path)
    m = read_metrics(tmp_path)
    assert m["mode"] == "zero-shot" and "music" in m["test"] and m["test"]["music"]["examples"] > 0
    # eval.zero_shot_prior (default 2.0): the unseen domain is ranked by the model + 2 x the text
    # zero-shot scorer, and metrics.json says so; 0 = the model alone, and nothing is recorded
    assert m["zero_shot_prior"] == {"weight": 2.0, "recency": 0.9, "domains": ["music"]}
    run_inprocess("evaluate", *SMOKE, f"run={finetuned}", "domain=music", "eval.zero_shot_prior=0", run_dir=tmp_path / "alone")
    alone = read_metrics(tmp_path / "alone")
    assert "zero_shot_prior" not in alone and alone["test"]["music"] != m["test"]["music"]
    own = tmp_path / "own"  # its own training domain: the key does not apply
    run_inprocess("evaluate", *SMOKE, f"run={finetuned}", "eval.zero_shot_prior=5", run_dir=own)
    assert "zero_shot_prior" not in read_metrics(own)
    assert read_metrics(own)["test"]["movies"] == pytest.approx(read_metrics(finetuned)["test"]["movies"])


@pytest.mark.parametrize("adapter", ["frozen", "full", "lora", "adalora", "prefix", "ia3", "adapter"])
def test_every_adapter_trains(adapter, tmp_path):
    run_inprocess("finetune", *SMOKE, f"adapter={adapter}", run_dir=tmp_path)
    m = read_metrics(tmp_path)
    assert m["adapter"] == adapter and m["history"][0]["loss"] > 0
    COUNTS[adapter] = (m["trainable_params"], m["total_params"])
    if adapter not in ("frozen", "full"):
        assert (tmp_path / "checkpoint" / "adapter").is_dir()


COUNTS: dict[str, tuple[int, int]] = {}  # filled by test_every_adapter_trains (runs first)


def test_trainable_parameter_order(tmp_path):
    for adapter in ("frozen", "lora", "ia3", "prefix", "adapter", "full"):
        if adapter not in COUNTS:  # this test run alone
            out = tmp_path / adapter
            run_inprocess("finetune", *SMOKE, f"adapter={adapter}", "trainer.max_steps_per_epoch=1", run_dir=out)
            m = read_metrics(out)
            COUNTS[adapter] = (m["trainable_params"], m["total_params"])
    counts = {k: v[0] for k, v in COUNTS.items()}
    total = COUNTS["full"][1]
    for mid in ("lora", "ia3", "prefix", "adapter"):
        assert counts["frozen"] < counts[mid] < counts["full"], counts
    assert counts["full"] <= total


def test_id_only_sasrec_baseline(tmp_path):
    run_inprocess("finetune", *SMOKE, "backbone=none", "model.item_ids=true", run_dir=tmp_path)
    m = read_metrics(tmp_path)
    assert m["mode"] == "transductive" and m["test"]["movies"]["examples"] > 0
    assert m["score"] == "dot"  # model.score=auto without text: SASRec's dot products


def test_backbone_none_without_ids_is_a_config_error(tmp_path):
    proc = run_cli("finetune", *SMOKE, "backbone=none", run_dir=tmp_path, check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]
    assert proc.stderr.startswith("error: model.item_ids:")


def test_transfer_writes_all_arms(tmp_path):
    run_inprocess("transfer", *SMOKE, "source=movies", "target=music", "trainer.epochs=1", run_dir=tmp_path)
    m = read_metrics(tmp_path)
    assert m["command"] == "transfer" and m["source"] == ["movies"] and m["target"] == "music"
    for arm in ("zero_shot", "adapted", "control"):
        assert set(m["transfer"][arm]) == {"valid", "test"}
        assert "ndcg@10" in m["transfer"][arm]["test"]["music"]
    assert set(m["test"]) == {"music", "movies"}  # target after adaptation + source (forgetting)
    assert m["forgetting"]["movies"]["ndcg@10"] == pytest.approx(m["test"]["movies"]["ndcg@10"] - m["transfer"]["source_before"]["test"]["movies"]["ndcg@10"])
    c, a = m["transfer"]["control"]["test"]["music"]["ndcg@10"], m["transfer"]["adapted"]["test"]["music"]["ndcg@10"]
    assert m["lift"]["ndcg@10"] == (pytest.approx((a - c) / c) if c > 0 else None)
    assert (tmp_path / "transfer.png").read_bytes()[:4] == b"\x89PNG"


def test_transductive_transfer_explains_missing_zero_shot(tmp_path):
    run_inprocess("transfer", *SMOKE, "model.item_ids=true", "target_fraction=0.5", run_dir=tmp_path)
    m = read_metrics(tmp_path)
    assert "skipped" in m["transfer"]["zero_shot"] and "transductive" in m["transfer"]["zero_shot"]["skipped"]
    assert "20/" in m["dataset"]["music"]["split"]


def test_pretrain_then_finetune_from_it(tmp_path):
    pre = tmp_path / "pre"
    run_inprocess("pretrain", *SMOKE, "domains=[movies,music]", run_dir=pre)
    m = read_metrics(pre)
    assert m["command"] == "pretrain" and set(m["dataset"]) == {"movies", "music"} and m["history"][0]["loss"] > 0
    assert (pre / "checkpoint" / "backbone" / "model.safetensors").is_file()
    ft = tmp_path / "ft"
    run_inprocess("finetune", *SMOKE, f"init_from={pre}", run_dir=ft)
    assert read_metrics(ft)["test"]["movies"]["examples"] > 0


def test_multi_domain_with_per_domain_adapters(tmp_path):
    run_inprocess("finetune", *SMOKE, "domain=[movies,music]", "adapter=lora", "per_domain_adapters=true", run_dir=tmp_path)
    m = read_metrics(tmp_path)
    assert set(m["test"]) == set(m["dataset"]) == {"movies", "music"}
    from safetensors.torch import load_file

    saved = {d: load_file(str(tmp_path / "checkpoint" / "adapter" / d / "adapter_model.safetensors")) for d in ("movies", "music")}
    assert saved["movies"].keys() == saved["music"].keys()
    # each domain's adapter trained on its own batches: their weights differ
    assert any(not (saved["movies"][k] == saved["music"][k]).all() for k in saved["movies"] if "lora_B" in k)


def test_per_domain_adapters_need_a_named_adapter_method(tmp_path):
    proc = run_cli("finetune", *SMOKE, "domain=[movies,music]", "per_domain_adapters=true", run_dir=tmp_path, check=False)
    assert proc.returncode == 2 and proc.stderr.startswith("error: per_domain_adapters:")


@pytest.mark.parametrize("logger,artifact", [("tensorboard", "tensorboard"), ("wandb", "wandb")])
def test_loggers_write_their_files(logger, artifact, tmp_path):
    run_cli("finetune", *SMOKE, f"logger={logger}", run_dir=tmp_path, env={"WANDB_MODE": "offline", "WANDB_SILENT": "true"})
    files = [p for p in (tmp_path / artifact).rglob("*") if p.is_file()]
    assert files, f"{logger} wrote nothing under {artifact}/"
    if logger == "tensorboard":
        assert any(p.name.startswith("events.out.tfevents") for p in files)
    else:
        assert any(p.suffix == ".wandb" for p in files)


def test_evaluate_scores_the_preference_task_zero_shot(tmp_path):
    run_inprocess("evaluate", *SMOKE, "task=preference", run_dir=tmp_path)
    m = read_metrics(tmp_path)
    assert m["command"] == "evaluate" and 0.0 <= m["test"]["movies"]["auc"] <= 1.0
    assert {"auc", "logloss", "accuracy"} <= set(m["test"]["movies"])


def test_test_users_all_on_a_domain_never_read(finetuned, tmp_path):
    """eval.test_users=all (crossrec evaluate): the text scorer on movies (leave-one-out: each of
    the 40 users has a test example and a training sequence of 2+ items) ranks 40 + 40 examples;
    a run ranks a domain it never trained on that way; where the scorer read the domain's
    interactions (the run's own domain, popularity) or the command is not evaluate: one line."""
    run_inprocess("evaluate", *SMOKE, "model=text_zeroshot", run_dir=tmp_path / "split")
    run_inprocess("evaluate", *SMOKE, "model=text_zeroshot", "eval.test_users=all", run_dir=tmp_path / "all")
    assert read_metrics(tmp_path / "split")["test"]["movies"]["examples"] == 40
    assert read_metrics(tmp_path / "all")["test"]["movies"]["examples"] == 80
    assert "every training sequence" in read_metrics(tmp_path / "all")["dataset"]["movies"]["split"]
    run_inprocess("evaluate", *SMOKE, f"run={finetuned}", "domain=music", run_dir=tmp_path / "music")
    run_inprocess("evaluate", *SMOKE, f"run={finetuned}", "domain=music", "eval.test_users=all", run_dir=tmp_path / "music_all")
    assert read_metrics(tmp_path / "music_all")["test"]["music"]["examples"] > read_metrics(tmp_path / "music")["test"]["music"]["examples"]
    for args in (("evaluate", f"run={finetuned}"), ("evaluate", "model=popularity"), ("finetune",)):
        proc = run_cli(*args, *SMOKE, "eval.test_users=all", run_dir=tmp_path / "bad", check=False)
        assert proc.returncode == 2 and proc.stderr.strip().startswith("error: eval.test_users: "), proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1
