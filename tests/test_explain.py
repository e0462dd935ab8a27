"""crossrec explain: integrated-gradient completeness, exact ablation, the deletion check, the
files it writes; and (slow) the page rendered by a real headless Chromium."""

from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import pytest
import torch
from conftest import read_metrics, run_cli, run_inprocess

SMOKE = ("experiment=smoke",)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("ft")
    run_inprocess("finetune", *SMOKE, "trainer.epochs=2", run_dir=out)
    return out


@pytest.fixture(scope="module")
def scorer(trained, tmp_path_factory):
    from crossrec_cli.cli import compose
    from crossrec_cli.commands.checkpoint_eval import load_run
    from crossrec_cli.commands.recommend import histories
    from crossrec_cli.explain.attribution import Scorer

    loaded = load_run(compose("evaluate", [*SMOKE, f"run={trained}"], tmp_path_factory.mktemp("c")))
    spec, dom = loaded.domains[0]
    hist = histories(dom, spec.order, spec.order_seed)
    return Scorer.of(loaded.model, spec.name), hist.histories[0].tolist()[-12:]


def test_integrated_gradients_are_complete(scorer):
    from crossrec_cli.explain.attribution import history_attributions

    sc, history = scorer
    contrib, score, gap = history_attributions(sc, history, candidate=3)
    h, valid = sc.inputs(history)
    with torch.no_grad():
        base = float(sc.from_vectors(torch.zeros_like(h), valid, 3)[0])
    # completeness: the attributions add up to score(input) - score(baseline)
    assert contrib.sum() == pytest.approx(score - base, abs=1e-4 + 1e-3 * abs(score - base))
    assert gap < 1e-3 and len(contrib) == len(history)


def test_ablation_is_the_exact_leave_one_out_drop(scorer):
    from crossrec_cli.explain.attribution import ablation

    sc, history = scorer
    drops = ablation(sc, history, 5)
    j = 4
    assert drops[j] == pytest.approx(sc.score(history, 5) - sc.score(history[:j] + history[j + 1:], 5))


def test_deletion_removes_the_top_items_first(scorer):
    from crossrec_cli.explain.attribution import deletion

    sc, history = scorer
    # with contributions that name item 0 as the most important, k=1 removes exactly it
    contrib = np.zeros(len(history))
    contrib[0] = 1.0
    got = deletion(sc, history, 2, contrib, k_max=2, draws=3)
    assert got["top"][0] == pytest.approx(sc.score(history, 2) - sc.score(history[1:], 2))
    assert len(got["top"]) == len(got["random"]) == 2


def test_explain_writes_json_html_and_faithfulness(trained, tmp_path):
    out = tmp_path / "ex"
    run_inprocess("explain", *SMOKE, f"run={trained}", "user=196", "k=2", "sample=3", run_dir=out)
    ex = json.loads((out / "explanation.json").read_text())
    assert ex["user"] == "196" and len(ex["recommendations"]) == 2
    rec = ex["recommendations"][0]
    assert {"item", "score", "history", "tokens", "deletion", "completeness_gap"} <= set(rec)
    assert all({"item", "contribution"} <= set(h) for h in rec["history"])
    assert rec["tokens"] and all(isinstance(t, str) for t, _ in rec["tokens"])  # a text-only item tower
    assert len(ex["attention"]) == 2  # the smoke model's two transformer layers
    page = (out / "explanation.html").read_text()
    assert "id='rec-1'" in page and "id='attention'" in page and "data:image/png;base64," in page
    m = read_metrics(out)
    assert m["command"] == "explain" and m["faithfulness"]["users"] == 4 and len(m["users"]) == 4
    assert len((out / "explanations.jsonl").read_text().splitlines()) == 4
    proc = run_cli("explain", *SMOKE, f"run={trained}", "user=nobody", run_dir=tmp_path / "bad", check=False)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1 and "'nobody'" in proc.stderr


def test_explain_on_a_domain_the_run_never_saw(trained, tmp_path):
    """Zero-shot (aligned + the text prior): integrated gradients cover the towers, the prior's part
    is split exactly, so contributions still account for the score."""
    out = tmp_path / "zs"
    run_inprocess("explain", *SMOKE, f"run={trained}", "domain=music", "user=2", "k=2", run_dir=out)
    ex = json.loads((out / "explanation.json").read_text())
    assert len(ex["recommendations"]) == 2 and len(ex["attention"]) == 2
    assert all(r["completeness_gap"] < 1e-3 for r in ex["recommendations"])
    m = json.loads((out / "metrics.json").read_text())
    assert m["zero_shot_prior"]["domains"] == ["music"] and m["zero_shot_align"] == {"domains": ["music"]}


@pytest.mark.slow
def test_explanation_page_in_headless_chromium(trained, tmp_path):
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("Chromium is not installed (apt-get install chromium)")
    out = tmp_path / "ex"
    run_inprocess("explain", *SMOKE, f"run={trained}", "user=196", "k=2", run_dir=out)
    page = out / "explanation.html"
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]
    dom = subprocess.run([browser, *flags, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120)
    for element in ("id=\"rec-1\"", "id=\"rec-2\"", "id=\"attention\"", "id=\"faithfulness\""):
        assert element in dom.stdout, element
    shot = tmp_path / "page.png"
    subprocess.run([browser, *flags, f"--screenshot={shot}", "--window-size=1000,1400", page.as_uri()],
                   capture_output=True, timeout=120)
    import matplotlib.image as mpimg

    img = mpimg.imread(shot)
    assert img.shape[0] == 1400 and (img[..., :3] < 0.5).mean() > 0.005  # text and bars were drawn


def test_kg_paths_direct_and_through_a_shared_entity():
    from crossrec_cli.data.kg import KgItem
    from crossrec_cli.explain.attribution import kg_paths

    # rows of the bundled ml-100k graph: Private Benjamin (m.0fp4r1) and two history films that
    # share its language (m.02h40lc, English); one film linked to it directly; one unlinked item
    kg = [KgItem("m.0fp4r1", (("film.film.language", "m.02h40lc"), ("film.film.sequel", "m.0direct"))),
          KgItem("m.01gc7", (("film.film.language", "m.02h40lc"),)),
          KgItem("m.0direct", ()),
          KgItem(None, ())]
    paths = kg_paths(kg, 0, [1, 2, 3], order=np.array([1, 0, 2]))
    assert paths == [{"history_index": 1, "path": ["m.0fp4r1", "film.film.sequel", "m.0direct"]},
                     {"history_index": 0, "path": ["m.0fp4r1", "film.film.language", "m.02h40lc",
                                                   "film.film.language", "m.01gc7"]}]
    assert kg_paths(kg, 3, [0, 1], order=np.array([0, 1])) == []  # an item without an entity
