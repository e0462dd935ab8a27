"""task=preference / task=classification: examples, instruction files, scorers, training, recipe.

Fixtures: ``tests/fixtures/instruction/ml-100k-tallrec`` was generated from the bundled ml-100k
ratings with ``from_ratings(domain, max_history=5)``, a seed-0 sample of 48 / 16 / 24
train / valid / test examples and ``write_instruction_folder`` (see ``test_fixture_is_reproducible``);
``bad-output`` is its first three entries with ``train.json`` entry 2 answering "Maybe.".
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from crossrec_cli.data import DomainSpec, load_domain
from crossrec_cli.errors import CrossrecError
from crossrec_cli.models.backbone import build_backbone, models_dir
from crossrec_cli.tasks.examples import (
    PreferenceData,
    PrefExample,
    from_instruction,
    from_ratings,
    parse_tallrec,
    sample,
    write_instruction_folder,
)
from crossrec_cli.tasks.metrics import binary_metrics, mean_std
from crossrec_cli.tasks.models import SequenceClassifier, YesNoScorer
from crossrec_cli.tasks.preference import ScorerSpec, build_scorer, run_preference, train_scorer
from crossrec_cli.tasks.similarity_head import SimilarityHead
from crossrec_cli.tasks.prompts import answer_token_ids, build_prompt
from crossrec_cli.tasks.train import TrainSettings

REPO = Path(__file__).resolve().parents[1]
FIX = REPO / "tests" / "fixtures"
TINY = yaml.safe_load((REPO / "crossrec_cli" / "conf" / "backbone" / "tiny.yaml").read_text())["config"]
TINY_LLAMA = {"model_type": "llama", "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
              "num_key_value_heads": 2, "intermediate_size": 64, "max_position_embeddings": 512}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The test machine's cores are shared; two torch threads then spin-wait on each other and
    small models run many times slower than with one."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def movies():
    spec = DomainSpec.from_dict(yaml.safe_load((REPO / "crossrec_cli" / "conf" / "domain" / "movies.yaml").read_text()))
    return spec, load_domain(spec)


@pytest.fixture(scope="module")
def movie_examples(movies):
    return from_ratings(movies[1])


def instruction_spec(folder: Path, name: str = "instr") -> DomainSpec:
    return DomainSpec.from_dict({"name": name, "format": "instruction", "path": str(folder)})


# ---- examples ------------------------------------------------------------------------------

def test_from_ratings_follows_time_and_threshold(movies, movie_examples):
    _, domain = movies
    data = movie_examples
    # every interaction after a user's first is one candidate; the last two per user are valid/test
    assert len(data.train) + len(data.valid) + len(data.test) == domain.n_interactions - domain.n_users
    assert len(data.test) == len(data.valid) == domain.n_users
    for ex in data.train[:500] + data.test[:50]:
        assert len(ex.liked) + len(ex.disliked) <= 10
        assert ex.label in (0, 1) and ex.candidate
    # labels are rating > 3: ml-100k has about 55% ratings of 4 or 5
    assert 0.5 < np.mean([ex.label for ex in data.train]) < 0.6
    # user 196's last rated movie (by time) is the test candidate
    u = domain.user_ids.index("196")
    rows = np.flatnonzero(domain.inter_user == u)
    last = rows[np.lexsort((rows, domain.inter_time[rows]))][-1]
    test = next(ex for ex in data.test if ex.key.startswith("196:"))
    assert test.candidate == domain.item_text[domain.inter_item[last]]
    assert test.label == int(domain.inter_rating[last] > 3)


def test_max_history_and_user_median(movies):
    data = from_ratings(movies[1], like_threshold="user_median", max_history=3)
    assert max(len(ex.liked) + len(ex.disliked) for ex in data.train) == 3
    assert 0.2 < np.mean([ex.label for ex in data.train]) < 0.6


def test_train_samples_exact_and_seeded(movie_examples):
    pool = movie_examples.train
    a, b, c = sample(pool, 64, 0), sample(pool, 64, 0), sample(pool, 64, 1)
    assert len(a) == 64 and len({ex.key for ex in a}) == 64
    assert [ex.key for ex in a] == [ex.key for ex in b]
    assert [ex.key for ex in a] != [ex.key for ex in c]
    assert len(sample(pool, None, 0)) == len(pool)
    with pytest.raises(CrossrecError, match="train_samples"):
        sample(pool[:10], 11, 0)


def test_ratings_needed(movies):
    _, domain = movies
    import dataclasses

    unrated = dataclasses.replace(domain, inter_rating=np.full(domain.n_interactions, np.nan))
    with pytest.raises(CrossrecError, match="needs ratings"):
        from_ratings(unrated)


# ---- instruction files ---------------------------------------------------------------------

def test_instruction_folder_loads_as_given():
    folder = FIX / "instruction" / "ml-100k-tallrec"
    domain = load_domain(instruction_spec(folder))
    data = from_instruction(domain)
    raw = json.loads((folder / "test.json").read_text())
    assert [ex.input for ex in data.test] == [r["input"] for r in raw]
    assert [ex.label for ex in data.test] == [int(r["output"] == "Yes.") for r in raw]
    assert (len(data.train), len(data.valid), len(data.test)) == (48, 16, 24)
    assert domain.fingerprint()["items"] == 88 and len(domain.sha256()) == 64
    liked, _, cand = parse_tallrec(raw[0]["input"])
    assert data.test[0].candidate == cand and data.test[0].liked == liked


def test_fixture_is_reproducible(movies, tmp_path):
    data = from_ratings(movies[1], max_history=5)
    small = PreferenceData(sample(data.train, 48, 0), sample(data.valid, 16, 0), sample(data.test, 24, 0), "ratings")
    write_instruction_folder(small, tmp_path)
    for name in ("train", "valid", "test"):
        fixture = FIX / "instruction" / "ml-100k-tallrec" / f"{name}.json"
        assert (tmp_path / f"{name}.json").read_text() == fixture.read_text()


def test_instruction_bad_output_names_file_line_and_index():
    folder = FIX / "instruction" / "bad-output"
    with pytest.raises(CrossrecError) as err:
        load_domain(instruction_spec(folder))
    text = str(err.value)
    assert text.startswith(f"error: {folder / 'train.json'}:")
    assert "entry 2" in text and "Maybe." in text and "\n" not in text
    assert text.startswith(f"error: {folder / 'train.json'}:{err.value.line}: entry 2")
    assert (folder / "train.json").read_text().splitlines()[err.value.line - 1].strip() == "{"


@pytest.mark.parametrize("content, problem, line", [
    ('[{"instruction": "q", "input": "x", "output": "Yes."},\n {"instruction": "q", "output": "No."}]',
     "entry 1: 'input' is missing", 2),
    ('[{"instruction": "q", "input": "x", "output": "Yes."}\n {"instruction": "q"}]', "after entry 0", 2),
    ('{"instruction": "q", "input": "x", "output": "Yes."}', "expected a JSON list", 1),
    ('[{"instruction": "q", "input": 3, "output": "Yes."}]', "'input' is not a string", 1),
    ('[\n "just text"\n]', "entry 0 is not an object", 2),
    ('[\n {"instruction": "q", "input": "x", "output": "Yes."},\n {"instruction": }\n]', "entry 1: not valid JSON", 3),
    ("[]", "no entries", 1),
])
def test_instruction_malformed(tmp_path, content, problem, line):
    good = '[{"instruction": "q", "input": "x", "output": "No"}]'
    for name in ("train", "valid", "test"):
        (tmp_path / f"{name}.json").write_text(good)
    (tmp_path / "valid.json").write_text(content)
    with pytest.raises(CrossrecError) as err:
        load_domain(instruction_spec(tmp_path))
    assert err.value.where == str(tmp_path / "valid.json")
    assert problem in err.value.problem and err.value.line == line


def test_instruction_missing_split(tmp_path):
    (tmp_path / "train.json").write_text('[{"instruction": "q", "input": "x", "output": "Yes."}]')
    with pytest.raises(CrossrecError, match="valid.json: file does not exist"):
        load_domain(instruction_spec(tmp_path))


# ---- scorers -------------------------------------------------------------------------------

def test_one_label_per_sequence():
    bb = build_backbone("tiny", config=TINY)
    for n_labels in (2, 5):
        model = SequenceClassifier(bb, n_labels, "mean", 48)
        logits = model([("Liked: a. Disliked: b.", "Toy Story (1995)"), ("x", "y"), ("longer history text", "z")])
        assert logits.shape == (3, n_labels)  # not (3, T, n_labels): one label per sequence


def test_answer_tokens_come_from_the_tokenizer():
    bb = build_backbone("tiny", config=TINY)
    with pytest.raises(CrossrecError, match="'Yes' is 3 tokens"):
        answer_token_ids(bb.tokenizer, ["Yes", "No"])  # byte-level: Y e s
    tok = bb.tokenizer
    tok.add_tokens(["Yes", "No"])
    ids = answer_token_ids(tok, ["Yes", "No"])
    assert ids == tok.convert_tokens_to_ids(["Yes", "No"]) and ids[0] != ids[1]
    with pytest.raises(CrossrecError, match="share a token"):
        answer_token_ids(tok, ["Yes", "Yes"])


SMOL = models_dir() / "SmolLM2-135M-Instruct"


@pytest.mark.skipif(not (SMOL / "tokenizer.json").is_file(), reason="run scripts/provision_smollm2.py")
def test_smollm2_yes_no_are_single_tokens_after_the_prompt():
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(SMOL))
    yes, no = answer_token_ids(tok, ["Yes", "No"])  # raises if either is not exactly one token
    assert tok.decode([yes]) == "Yes" and tok.decode([no]) == "No"
    prompt = build_prompt(tok, "Answer Yes or No.", "Is this a test?", "chat")
    # the looked-up id is what the tokenizer produces when the answer follows the prompt
    full = tok.encode(prompt + "Yes", add_special_tokens=False)
    assert full[:-1] == tok.encode(prompt, add_special_tokens=False) and full[-1] == yes


def test_yes_no_scorer_left_padding_matches_single():
    bb = build_backbone("tinyllama", config=TINY_LLAMA, kind="decoder")
    y, n = answer_token_ids(bb.tokenizer, ["Y", "N"])
    scorer = YesNoScorer(bb, y, n)
    with torch.no_grad():
        both = scorer(["a much longer prompt here", "short"])
        alone = scorer(["short"])
    assert both.shape == (2, 2)
    torch.testing.assert_close(both[1], alone[0], atol=1e-5, rtol=1e-4)


# ---- training beats zero-shot on an easy split built from real items -----------------------

def genre_toy(domain, n: int, seed: int) -> list[PrefExample]:
    """Liked comedies, disliked horror films; the candidate is a comedy (like) or a horror film."""
    text = domain.item_text
    comedy = [t for t in text if "Comedy" in t and "Horror" not in t]
    horror = [t for t in text if "Horror" in t and "Comedy" not in t]
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        label = int(rng.random() < 0.5)
        cand = comedy[rng.integers(len(comedy))] if label else horror[rng.integers(len(horror))]
        out.append(PrefExample([comedy[i] for i in rng.integers(len(comedy), size=2)],
                               [horror[i] for i in rng.integers(len(horror), size=2)], cand, label, key=f"toy:{k}"))
    return out


@pytest.mark.parametrize("head", ["similarity", "pair"])
def test_trained_encoder_beats_zero_shot(movies, head):
    _, domain = movies
    train, test = genre_toy(domain, 160, 0), {"test": genre_toy(domain, 100, 1)}
    bb = build_backbone("tiny", config=TINY, seed=0)
    spec = ScorerSpec(adapter="full", max_length=160, head=head)
    settings = TrainSettings(epochs=4, batch_size=16, lr=2e-3, head_lr=2e-3, seed=0)
    trained = run_preference(bb, spec, train, test, settings)["metrics"]["test"]["auc"]
    zero = run_preference(bb, spec, [], test, settings, zero_shot=True)["metrics"]["test"]["auc"]
    assert trained > max(0.9, zero + 0.05), (trained, zero)


# ---- the similarity head starts as the zero-shot scorer --------------------------------------

def test_untrained_similarity_head_is_the_zero_shot_scorer(movies, movie_examples):
    exs = sample(movie_examples.test, 60, 0)
    bb = build_backbone("tiny", config=TINY, seed=0)
    spec = ScorerSpec(adapter="frozen")
    head, zero = build_scorer(bb, spec, seed=0), build_scorer(bb, spec, seed=0, zero_shot=True)
    assert isinstance(head.model, SimilarityHead) and zero.kind == "similarity"
    inputs = head.inputs(exs)
    with torch.no_grad():
        torch.testing.assert_close(head.model(inputs), zero.model(inputs), atol=1e-5, rtol=1e-5)
    labels = np.array([ex.label for ex in exs])
    assert binary_metrics(labels, head.prob_like(exs))["auc"] == binary_metrics(labels, zero.prob_like(exs))["auc"]
    # the same through run_preference: no training examples = the zero-shot AUC
    evals = {"test": exs}
    untrained = run_preference(bb, spec, [], evals, TrainSettings())["metrics"]["test"]["auc"]
    assert untrained == run_preference(bb, spec, [], evals, TrainSettings(), zero_shot=True)["metrics"]["test"]["auc"]


def test_calibration_keeps_the_zero_shot_ranking(movie_examples):
    """a stays > 0 even on labels that contradict the score; with no history-balance weight
    (an infinite prior on w) and no correction, calibration only rescales and shifts."""
    exs = sample(movie_examples.train, 40, 0)
    bb = build_backbone("tiny", config=TINY, seed=0)
    head = build_scorer(bb, ScorerSpec(adapter="frozen", correction="none", l2=1e9, scale_l2=0.0), seed=0).model
    inputs = [(tuple(ex.liked), tuple(ex.disliked), ex.candidate) for ex in exs]
    head.eval()
    with torch.no_grad():
        s = head.features(inputs)[0]
    reversed_labels = (s < s.median()).long().numpy()  # the zero-shot ranking, upside down
    fitted = head.calibrate(inputs, reversed_labels)
    with torch.no_grad():
        after = head(inputs)[:, 1]
    assert 0 < fitted["a"] < 5.0 and abs(fitted["w"]) < 1e-6
    # a * s + b with a > 0: the zero-shot order (to one float32 ulp at 0.1, 7.5e-9: a CPU's rounding)
    assert (after[s.argsort()].diff() >= -1e-8).all()


def test_calibration_learns_the_like_balance_and_prior_pulls_back(movie_examples):
    """Labels that follow the user's like balance: calibration puts weight on it; a strong prior
    keeps the head at the zero-shot scorer."""
    exs = [ex for ex in movie_examples.train[:3000] if ex.liked != ex.disliked][:200]
    labels = np.array([int(len(ex.liked) > len(ex.disliked)) for ex in exs])
    bb = build_backbone("tiny", config=TINY, seed=0)
    free = build_scorer(bb, ScorerSpec(adapter="frozen", l2=1.0), seed=0)
    fitted = free.model.calibrate(free.inputs(exs), labels)
    assert fitted["w"] > 1.0
    assert binary_metrics(labels, free.prob_like(exs))["auc"] > 0.95
    tied = build_scorer(bb, ScorerSpec(adapter="frozen", l2=1e9, scale_l2=1e9), seed=0)
    fitted = tied.model.calibrate(tied.inputs(exs), labels)
    assert abs(fitted["w"]) < 1e-6 and fitted["a"] == pytest.approx(5.0, rel=1e-4)


def test_frozen_similarity_head_training_keeps_zero_shot(movies):
    """Frozen encoder, head only (calibration + the correction on the candidate vector): on a toy
    task it learns, and it never ends below the zero-shot scorer it started from."""
    _, domain = movies
    train, test = genre_toy(domain, 64, 0), {"test": genre_toy(domain, 100, 1)}
    bb = build_backbone("tiny", config=TINY, seed=0)
    spec = ScorerSpec(adapter="frozen", max_length=160)
    settings = TrainSettings(epochs=3, min_steps=30, batch_size=16, head_lr=1e-2, seed=0)
    res = run_preference(bb, spec, train, test, settings)
    zero = run_preference(bb, spec, [], test, settings, zero_shot=True)["metrics"]["test"]["auc"]
    assert res["scorer"] == "head" and 0 < res["trainable"] < 1000  # a, b, w and v: the encoder is frozen
    assert res["metrics"]["test"]["auc"] >= zero, (res["metrics"], zero)
    assert res["metrics"]["test"]["auc"] > 0.8, (res["metrics"], zero)


def test_similarity_head_needs_candidate_text():
    bb = build_backbone("tiny", config=TINY, seed=0)
    scorer = build_scorer(bb, ScorerSpec(adapter="frozen"), seed=0)
    ex = PrefExample([], [], "", 1, instruction="q", input="free text", key="train.json:3")
    with pytest.raises(CrossrecError, match="train.json:3.*task.head.type=pair"):
        train_scorer(scorer, [ex], TrainSettings())


def test_scorer_follows_the_backbone_kind():
    """SCORERS: auto is head on an encoder and yes_no on a decoder; zero-shot is the similarity
    scorer on an encoder; yes_no on an encoder is one line; the zero-shot-only similarity scorer
    cannot be chosen for training."""
    spec = ScorerSpec()
    assert (spec.resolved("encoder", False), spec.resolved("decoder", False)) == ("head", "yes_no")
    assert (spec.resolved("encoder", True), spec.resolved("decoder", True)) == ("similarity", "yes_no")
    assert ScorerSpec(scorer="head").resolved("decoder", False) == "head"
    with pytest.raises(CrossrecError) as err:
        ScorerSpec(scorer="yes_no").resolved("encoder", False)
    assert err.value.one_line() == ("error: task.scorer: yes_no scoring needs a decoder backbone; "
                                    "use scorer=head or backbone=smollm2")
    with pytest.raises(CrossrecError, match="expected auto, head or yes_no"):
        ScorerSpec(scorer="similarity")


@pytest.mark.parametrize("field, value, key", [
    ("scorer", "cosine", "task.scorer"),
    ("head", "mlp", "task.head.type"),
    ("correction", "mlp", "task.head.correction"),
    ("calibrate", "yes", "task.head.calibrate"),
    ("l2", -1.0, "task.head.l2"),
    ("scale_l2", float("nan"), "task.head.scale_l2"),
    ("item_max_length", 0, "task.item_max_length"),
    ("head_train", {"lr": 0}, "task.head.train.lr"),
    ("head_train", {"steps": 10}, "task.head.train.steps"),
    ("head_train", {"epochs": 1.5}, "task.head.train.epochs"),
])
def test_scorer_spec_rejects_bad_values(field, value, key):
    with pytest.raises(CrossrecError) as err:
        ScorerSpec(**{field: value})
    assert err.value.where == key and "\n" not in str(err.value)


def test_trained_decoder_beats_zero_shot(movies):
    _, domain = movies
    train, test = genre_toy(domain, 160, 0), {"test": genre_toy(domain, 100, 1)}
    bb = build_backbone("tinyllama", config=TINY_LLAMA, kind="decoder", seed=0)
    spec = ScorerSpec(adapter="full", max_length=400, answers=("Y", "N"), prompt_style="alpaca")
    settings = TrainSettings(epochs=4, batch_size=16, lr=3e-3, seed=0)
    res = run_preference(bb, spec, train, test, settings)
    zero = run_preference(bb, spec, [], test, settings, zero_shot=True)["metrics"]["test"]["auc"]
    assert res["scorer"] == "yes_no"
    assert res["metrics"]["test"]["auc"] > zero + 0.1, (res["metrics"], zero)


# ---- metrics -------------------------------------------------------------------------------

def test_binary_metrics_and_mean_std():
    m = binary_metrics(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8]))
    assert m["auc"] == pytest.approx(0.75) and m["accuracy"] == pytest.approx(0.75) and m["n"] == 4
    assert np.isnan(binary_metrics(np.array([1, 1]), np.array([0.2, 0.9]))["auc"])
    agg = mean_std([{"auc": 0.6, "n": 10}, {"auc": 0.8, "n": 10}])
    assert agg["auc"] == pytest.approx(0.7) and agg["auc_std"] == pytest.approx(np.std([0.6, 0.8], ddof=1))


# ---- the recipe through a tiny Hydra app ---------------------------------------------------

def run_app(tmp_path: Path, *overrides: str, search: Path = FIX / "searchpath") -> dict:
    """Run run_task in-process on a stand-in config (tests/fixtures/conf/task_app.yaml), with the
    package's conf and ``search`` (domain files) on the search path."""
    from crossrec_cli.cli import compose
    from crossrec_cli.commands._common import CONF_DIR, run_recipe
    from crossrec_cli.commands.tasks import run_task

    cfg = compose("task_app", [f"hydra.searchpath=[file://{CONF_DIR},file://{search}]", *overrides], tmp_path,
                  config_dir=FIX / "conf")
    run_recipe(cfg, lambda c: run_task(c, c.command))
    return json.loads((tmp_path / "metrics.json").read_text())


def test_recipe_finetune_seeds(tmp_path):
    rec = run_app(tmp_path, "task.train_samples=24", "task.seeds=[0,1]", "task.eval_samples=40")
    test = rec["test"]["movies"]
    assert {"auc", "logloss", "accuracy", "auc_std"} <= set(test) and test["n"] == 30
    assert rec["seeds"] == [0, 1] and [r["train_examples"] for r in rec["per_seed"]] == [24, 24]
    assert rec["mode"] == "inductive" and rec["task"] == "preference" and rec["adapter"] == "full"
    assert rec["model"] == "preference-head" and rec["head"] == "similarity"
    assert rec["dataset"]["movies"]["examples"]["test"] == 30


def test_recipe_instruction_domain_on_searchpath(tmp_path):
    rec = run_app(tmp_path, "domain=ml100k_tallrec", "task.train_samples=16")
    assert rec["protocol"] == "given" and rec["test"]["ml100k_tallrec"]["n"] == 24
    assert rec["dataset"]["ml100k_tallrec"]["source"] == "instruction"
    assert rec["per_seed"][0]["train_examples"] == 16


def test_recipe_pair_head_and_bad_head_type(tmp_path, capsys):
    rec = run_app(tmp_path / "pair", "task.head.type=pair", "task.train_samples=16", "task.eval_samples=20")
    assert rec["head"] == "pair" and rec["test"]["movies"]["n"] == 20
    with pytest.raises(SystemExit) as ex:
        run_app(tmp_path / "bad", "task.head.type=mlp")
    assert ex.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "task.head.type" in err[0] and "'mlp'" in err[0], err


def test_recipe_evaluate_is_zero_shot(tmp_path):
    rec = run_app(tmp_path, "command=evaluate", "task.eval_samples=20")
    assert rec["mode"] == "zero-shot" and rec["per_seed"][0]["train_examples"] == 0
    assert rec["model"] == "preference-similarity"


def test_recipe_transfer_with_control(tmp_path):
    rec = run_app(tmp_path, "command=transfer", "source=movies", "target=ml100k_tallrec",
                  "task.train_samples=16", "task.source_samples=48")
    assert set(rec["arms"]) == {"zero_shot", "source", "transfer", "control"}
    assert set(rec["test"]) == {"movies", "ml100k_tallrec"} and "gain_auc" in rec
    arms = rec["per_seed"][0]["arms"]
    assert arms["source"]["train_examples"] == 48 and arms["control"]["train_examples"] == 16


def test_recipe_classification_multilabel(tmp_path):
    rec = run_app(tmp_path, "task=classification", "+data.overrides.filters.drop_unused_items=true",
                  "task.train.epochs=2")
    ds = rec["dataset"]["movies"]
    assert ds["multi_label"] is True and "Comedy" in ds["labels"]
    assert {"micro_f1", "macro_f1", "accuracy"} <= set(rec["test"]["movies"])
    report = (tmp_path / "classification_report.movies.test.seed0.txt").read_text()
    assert "Comedy" in report and "micro avg" in report


def test_recipe_bad_instruction_file_is_one_line(tmp_path, capsys):
    search = tmp_path / "search" / "domain"
    search.mkdir(parents=True)
    (search / "bad.yaml").write_text(f"name: bad\nformat: instruction\npath: {FIX / 'instruction' / 'bad-output'}\n")
    with pytest.raises(SystemExit) as ex:
        run_app(tmp_path / "run", "domain=bad", search=tmp_path / "search")
    assert ex.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "train.json" in err[0] and "entry 2" in err[0]


# ---- classification labels ------------------------------------------------------------------

def test_label_data_multi_and_single(movies):
    import dataclasses

    from crossrec_cli.tasks.classification import label_data, split_indices

    spec, domain = movies
    multi = label_data(domain, spec)  # class is `token_seq` in ml-100k.item: one sigmoid per genre
    assert multi.multi_label and multi.targets.shape == (len(multi.texts), len(multi.names))
    assert multi.targets.sum(1).min() >= 1 and multi.targets.sum(1).max() > 1
    assert not any("Comedy" in t.split(". ")[-1] for t in multi.texts[:50])  # the label is not in the input
    single = label_data(domain, dataclasses.replace(spec, label_field="release_year"))
    assert not single.multi_label and single.targets.ndim == 1 and "1995" in single.names
    assert all("1995" not in t for t, y in zip(single.texts, single.targets) if single.names[y] == "1995")
    parts = split_indices(100, (0.8, 0.1, 0.1), 0)
    assert sorted(np.concatenate(list(parts.values())).tolist()) == list(range(100)) and len(parts["test"]) == 10
    with pytest.raises(CrossrecError, match="label column"):
        label_data(domain, dataclasses.replace(spec, label_field=None))
