"""crossrec export and crossrec serve: ONNX parity with PyTorch on the test users, a real server
process called over HTTP (recommend, new items, a domain never trained on, malformed requests),
and /recommend's scores against crossrec recommend's."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from conftest import CLI, REPO, read_metrics, run_cli, run_inprocess, wheel_install

SMOKE = ("experiment=smoke",)
ENV = {**os.environ, "OMP_NUM_THREADS": "1",
       "CROSSREC_CACHE": os.environ.get("CROSSREC_TEST_CACHE", str(REPO / ".cache" / "test"))}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``crossrec serve ARGS`` in its own process on a free port, until ``stop``."""

    def __init__(self, run_dir: Path, *args: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(run_dir.parent / f"{run_dir.name}.log", "w")
        self.proc = subprocess.Popen([CLI, "serve", *args, f"port={self.port}", f"hydra.run.dir={run_dir}"], cwd=REPO,
                                     env=ENV, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + 180
        while time.time() < deadline:
            assert self.proc.poll() is None, Path(self.log.name).read_text()[-3000:]
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        self.stop()
        pytest.fail(f"crossrec serve did not answer within 180 s: {Path(self.log.name).read_text()[-3000:]}")

    def post(self, path: str, body) -> httpx.Response:
        data = body if isinstance(body, (bytes, str)) else json.dumps(body)
        return httpx.post(f"{self.url}{path}", content=data, timeout=30)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """One tiny inductive (text) run on the movies slice, shared by every test here."""
    run = tmp_path_factory.mktemp("serve") / "ft"
    run_inprocess("finetune", *SMOKE, run_dir=run)
    return run


@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("export") / "ex"
    run_inprocess("export", *SMOKE, f"run={trained}", "domain=[movies,music]", "quantize=int8", run_dir=out)
    return out


@pytest.fixture(scope="module")
def server(exported, tmp_path_factory):
    srv = Server(tmp_path_factory.mktemp("server") / "s", f"run={exported}", "limits.k=5000")
    yield srv
    srv.stop()


def whole_histories(run_dir: Path, *overrides: str) -> tuple[dict[str, list[str]], object]:
    """Each user's whole history as item ids, in the order crossrec recommend reads it."""
    from crossrec_cli.cli import compose
    from crossrec_cli.commands._common import load_domains
    from crossrec_cli.commands.recommend import histories

    (spec, dom), = load_domains(compose("recommend", [*SMOKE, *overrides], run_dir))
    ev = histories(dom, spec.order, spec.order_seed)
    return {dom.user_ids[u]: [dom.item_ids[i] for i in h] for u, h in zip(ev.users, ev.histories)}, dom


# ---- export -----------------------------------------------------------------------------------------

def test_export_writes_graphs_items_and_manifest(exported):
    out = exported / "export"
    manifest = json.loads((out / "manifest.json").read_text())
    for name in ("encoder.onnx", "encoder.int8.onnx", "items.movies.safetensors", "head.movies.onnx", "head.music.onnx",
                 manifest["domains"]["movies"]["user_tower"], "tokenizer"):
        assert (out / name).exists(), name
    assert manifest["score"] == "cosine" and manifest["temperature"] == 0.07 and manifest["opset"] == 18
    assert manifest["domains"]["movies"]["mode"] == "inductive" and manifest["domains"]["music"]["mode"] == "zero-shot"
    assert manifest["new_domains"]["mode"] == "zero-shot" and manifest["zero_shot_prior"]["domains"] == ["music"]
    assert manifest["inputs"]["user_tower"] == ["rows", "valid"] and len(manifest["checkpoint_sha256"]) == 64
    from crossrec_cli.serving.engine import read_items

    ids, texts, rows, vectors = read_items(out / "items.movies.safetensors")
    assert len(ids) == len(texts) == rows.shape[0] == vectors.shape[0] == manifest["domains"]["movies"]["n_items"]
    m = read_metrics(exported)
    assert m["command"] == "export" and m["parity_max_score_diff"] <= 1e-5
    q = m["quantize"]["int8"]["movies"]
    assert 0.0 <= q["recall@10_vs_float32"] <= 1.0 and q["items_per_s"]["int8"] > 0


def test_onnx_scores_equal_pytorch_on_the_test_users(trained, exported, tmp_path):
    """onnxruntime alone (no crossrec code on the ONNX side) against the PyTorch model, 1e-5."""
    import onnxruntime as ort

    from crossrec_cli.cli import compose
    from crossrec_cli.commands.checkpoint_eval import load_run
    from crossrec_cli.models.seqrec import pad_histories, seqrec_scorer
    from crossrec_cli.serving.engine import read_items

    loaded = load_run(compose("evaluate", [*SMOKE, f"run={trained}"], tmp_path))
    test = loaded.split("movies").test
    users, items = seqrec_scorer(loaded.model, "movies")
    want = users(test).double().numpy() @ items.double().numpy().T
    out = exported / "export"
    manifest = json.loads((out / "manifest.json").read_text())
    _, _, rows, vectors = read_items(out / "items.movies.safetensors")
    hist = pad_histories(test.histories, manifest["max_history"]).numpy()
    tower = ort.InferenceSession(str(out / manifest["domains"]["movies"]["user_tower"]))
    got = tower.run(None, {"rows": rows[np.maximum(hist, 0)], "valid": hist >= 0})[0]
    assert len(test) > 0 and np.abs(got.astype(np.float64) @ vectors.astype(np.float64).T - want).max() <= 1e-5


def test_export_refuses_bad_settings_in_one_line(trained, tmp_path):
    from crossrec_cli.cli import compose
    from crossrec_cli.commands import export
    from crossrec_cli.errors import CrossrecError

    for override, key in (("format=tflite", "format"), ("quantize=int4", "quantize"), ("opset=9", "opset"),
                          ("parity_tolerance=0", "parity_tolerance"), ("run=null", "run")):
        with pytest.raises(CrossrecError, match=f"^error: {key}:"):
            export.check_settings(compose("export", [f"run={trained}", override], tmp_path / "c"))
    problem = export.check_overrides(compose("export", ["eval.topk=[5]"], tmp_path / "c"), ["eval.topk=[5]"])
    assert problem is not None and problem.where == "eval.topk"
    proc = run_cli("export", *SMOKE, f"run={trained}", "eval.topk=[5]", run_dir=tmp_path / "x", check=False)
    err = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(err) == 1 and err[0].startswith("error: eval.topk: crossrec export does not read")


# ---- serve ------------------------------------------------------------------------------------------

def test_health(server):
    h = httpx.get(f"{server.url}/health").json()
    assert h["status"] == "ok" and h["domains"]["movies"] > 0 and h["run"]


def test_recommend_scores_equal_crossrec_recommend(server, trained, tmp_path):
    hist, _ = whole_histories(tmp_path / "c")
    chosen = sorted(hist)[:3]
    out = tmp_path / "rec"
    run_inprocess("recommend", *SMOKE, f"run={trained}", f"users=[{','.join(chosen)}]", "k=10", run_dir=out)
    want = {x["user"]: x["items"] for x in map(json.loads, (out / "recommendations.jsonl").read_text().splitlines())}
    for user in chosen:
        got = server.post("/recommend", {"domain": "movies", "history": hist[user], "k": 10, "exclude_seen": True})
        assert got.status_code == 200, got.text
        body = got.json()
        assert body["mode"] == "inductive" and [x["item"] for x in body["items"]] == [x["item"] for x in want[user]]
        assert np.allclose([x["score"] for x in body["items"]], [x["score"] for x in want[user]], rtol=0, atol=1e-5)
        assert [x["text"] for x in body["items"]] == [x["text"] for x in want[user]]


def test_new_items_are_recommendable_at_once(server, tmp_path):
    hist, dom = whole_histories(tmp_path / "c")
    user = sorted(hist)[0]
    copy = dom.item_ids[5]  # a new item with an existing item's text scores exactly as that item
    text = dom.item_text[5]
    got = server.post("/items", {"domain": "movies", "items": [{"item": "new-1", "text": text},
                                                              {"item": "new-2", "text": "A brand new film, 2031"}]})
    assert got.status_code == 200 and got.json()["added"] == 2 and got.json()["items"] == dom.n_items + 2
    everything = server.post("/recommend", {"domain": "movies", "history": hist[user], "k": dom.n_items + 2,
                                            "exclude_seen": False}).json()["items"]
    score = {x["item"]: x["score"] for x in everything}
    assert {"new-1", "new-2"} <= set(score) and abs(score["new-1"] - score[copy]) <= 1e-5
    # a new text in the history reads like the item that has that text
    by_id = server.post("/recommend", {"domain": "movies", "history": hist[user][:-1] + [copy], "k": 5,
                                       "exclude_seen": False}).json()["items"]
    by_text = server.post("/recommend", {"domain": "movies", "history": hist[user][:-1] + [{"text": text}], "k": 5,
                                         "exclude_seen": False}).json()["items"]
    assert [x["item"] for x in by_id][:3] == [x["item"] for x in by_text][:3]
    assert np.allclose([x["score"] for x in by_id], [x["score"] for x in by_text], atol=1e-5)
    # an id that exists is replaced, not added twice
    again = server.post("/items", {"domain": "movies", "items": [{"item": "new-2", "text": "Renamed film"}]}).json()
    assert again == {"domain": "movies", "added": 0, "replaced": 1, "items": dom.n_items + 2}


def test_a_domain_created_by_items_is_ranked_zero_shot(server):
    items = [{"item": f"b{i}", "text": t} for i, t in enumerate(["A novel about the sea", "Poems of the sea",
                                                                 "A cookbook of soups", "A history of Rome"])]
    got = server.post("/items", {"domain": "books", "items": items})
    assert got.status_code == 200 and got.json()["items"] == 4
    rec = server.post("/recommend", {"domain": "books", "history": ["b0", {"text": "Sea stories"}], "k": 3}).json()
    assert rec["mode"] == "zero-shot" and len(rec["items"]) == 3 and "b0" not in [x["item"] for x in rec["items"]]
    assert httpx.get(f"{server.url}/health").json()["domains"]["books"] == 4


def test_a_domain_never_trained_on_equals_crossrec_recommend(server, trained, tmp_path):
    """music, exported with domain=[movies,music]: ranked zero-shot, as crossrec recommend ranks it."""
    hist, _ = whole_histories(tmp_path / "c", "domain=music")
    chosen = sorted(hist)[:2]
    out = tmp_path / "rec"
    run_inprocess("recommend", *SMOKE, f"run={trained}", "domain=music", f"users=[{','.join(chosen)}]", "k=5",
                  run_dir=out)
    want = {x["user"]: x["items"] for x in map(json.loads, (out / "recommendations.jsonl").read_text().splitlines())}
    for user in chosen:
        body = server.post("/recommend", {"domain": "music", "history": hist[user], "k": 5}).json()
        assert body["mode"] == "zero-shot" and [x["item"] for x in body["items"]] == [x["item"] for x in want[user]]
        assert np.allclose([x["score"] for x in body["items"]], [x["score"] for x in want[user]], atol=1e-5)


@pytest.mark.slow
def test_serve_a_training_run_exports_it_first(trained, tmp_path):
    srv = Server(tmp_path / "s", *SMOKE, f"run={trained}", "domain=music")
    try:
        assert json.loads((tmp_path / "s" / "export" / "manifest.json").read_text())["domains"]["music"]["mode"] == \
            "zero-shot"
        assert httpx.get(f"{srv.url}/health").json()["domains"] == {"music": 1353}
    finally:
        srv.stop()


MALFORMED = [
    ("/recommend", b"{not json", 400, "body"),
    ("/recommend", b"\xff\xfe", 400, "body"),
    ("/recommend", b"", 400, "body"),
    ("/recommend", [1, 2], 422, "body"),
    ("/recommend", "null", 422, "body"),
    ("/recommend", {"history": ["1"]}, 422, "domain"),
    ("/recommend", {"domain": 3, "history": ["1"]}, 422, "domain"),
    ("/recommend", {"domain": "", "history": ["1"]}, 422, "domain"),
    ("/recommend", {"domain": "nowhere", "history": ["1"]}, 404, "domain"),
    ("/recommend", {"domain": "movies"}, 422, "history"),
    ("/recommend", {"domain": "movies", "history": "1"}, 422, "history"),
    ("/recommend", {"domain": "movies", "history": []}, 422, "history"),
    ("/recommend", {"domain": "movies", "history": ["no-such-item"]}, 404, "history[0]"),
    ("/recommend", {"domain": "movies", "history": ["1", None]}, 422, "history[1]"),
    ("/recommend", {"domain": "movies", "history": ["1", 2.5]}, 422, "history[1]"),
    ("/recommend", {"domain": "movies", "history": [True]}, 422, "history[0]"),
    ("/recommend", {"domain": "movies", "history": [{"text": ""}]}, 422, "history[0].text"),
    ("/recommend", {"domain": "movies", "history": [{"text": "   "}]}, 422, "history[0].text"),
    ("/recommend", {"domain": "movies", "history": [{"txt": "a film"}]}, 422, "history[0].txt"),
    ("/recommend", {"domain": "movies", "history": [{}]}, 422, "history[0].text"),
    ("/recommend", {"domain": "movies", "history": [{"text": 5}]}, 422, "history[0].text"),
    ("/recommend", {"domain": "movies", "history": [{"text": "x" * 20000}]}, 413, "history[0].text"),
    ("/recommend", {"domain": "movies", "history": ["1"] * 1001}, 413, "history"),
    ("/recommend", {"domain": "movies", "history": ["1"], "k": 0}, 422, "k"),
    ("/recommend", {"domain": "movies", "history": ["1"], "k": -3}, 422, "k"),
    ("/recommend", {"domain": "movies", "history": ["1"], "k": 100000}, 422, "k"),
    ("/recommend", {"domain": "movies", "history": ["1"], "k": "10"}, 422, "k"),
    ("/recommend", {"domain": "movies", "history": ["1"], "k": 2.5}, 422, "k"),
    ("/recommend", {"domain": "movies", "history": ["1"], "k": True}, 422, "k"),
    ("/recommend", {"domain": "movies", "history": ["1"], "exclude_seen": "yes"}, 422, "exclude_seen"),
    ("/recommend", {"domain": "movies", "history": ["1"], "user": "196"}, 422, "user"),
    ("/recommend", b"{\"domain\": \"movies\", \"history\": [\"" + b"1" * (2 << 20) + b"\"]}", 413, "body"),
    ("/items", {"items": [{"item": "x", "text": "t"}]}, 422, "domain"),
    ("/items", {"domain": "movies"}, 422, "items"),
    ("/items", {"domain": "movies", "items": []}, 422, "items"),
    ("/items", {"domain": "movies", "items": {"item": "x"}}, 422, "items"),
    ("/items", {"domain": "movies", "items": ["x"]}, 422, "items[0]"),
    ("/items", {"domain": "movies", "items": [{"text": "t"}]}, 422, "items[0].item"),
    ("/items", {"domain": "movies", "items": [{"item": "x"}]}, 422, "items[0].text"),
    ("/items", {"domain": "movies", "items": [{"item": "", "text": "t"}]}, 422, "items[0].item"),
    ("/items", {"domain": "movies", "items": [{"item": "x", "text": ""}]}, 422, "items[0].text"),
    ("/items", {"domain": "movies", "items": [{"item": "x", "text": "t", "genre": "drama"}]}, 422, "items[0].genre"),
    ("/items", {"domain": "movies", "items": [{"item": "x", "text": "a"}, {"item": "x", "text": "b"}]}, 422,
     "items[1].item"),
    ("/items", {"domain": "movies", "items": [{"item": "x", "text": "t"}] * 1001}, 413, "items"),
    ("/items", {"domain": ["movies"], "items": [{"item": "x", "text": "t"}]}, 422, "domain"),
]


def test_malformed_requests_get_4xx_json_naming_the_field(server):
    server.post("/items", {"domain": "movies", "items": [{"item": "kept-1", "text": "A film added before"}]})
    before = httpx.get(f"{server.url}/health").json()["domains"]
    for path, body, status, field in MALFORMED:
        got = server.post(path, body)
        assert got.status_code == status, (path, body if len(str(body)) < 200 else "...", got.text)
        err = got.json()
        assert err["field"] == field and err["error"].startswith(f"{field}: "), (body, err)
    for method, path, status in (("GET", "/recommend", 405), ("PUT", "/items", 405), ("GET", "/nope", 404),
                                 ("DELETE", "/health", 405)):
        got = httpx.request(method, f"{server.url}{path}")
        assert got.status_code == status and "error" in got.json()
    assert len(MALFORMED) + 4 >= 30
    # still serving, with every item added before
    assert httpx.get(f"{server.url}/health").json()["domains"] == before
    ok = server.post("/recommend", {"domain": "movies", "history": ["kept-1"], "k": 3})
    assert ok.status_code == 200 and len(ok.json()["items"]) == 3


# ---- in-process: token, workers, a transductive run ----------------------------------------------

def test_token_and_workers_in_process(exported):
    from starlette.testclient import TestClient

    from crossrec_cli.serving.server import ServeSettings, build_app

    folder = str(exported / "export")
    with TestClient(build_app(ServeSettings(folder, token="s3cret"))) as client:
        assert client.get("/health").status_code == 401
        assert client.get("/health", headers={"Authorization": "Bearer wrong"}).json()["field"] == "authorization"
        assert client.get("/health", headers={"Authorization": "Bearer s3cret"}).status_code == 200
    with TestClient(build_app(ServeSettings(folder, workers=2))) as client:
        got = client.post("/items", json={"domain": "movies", "items": [{"item": "x", "text": "t"}]})
        assert got.status_code == 409 and "workers=1" in got.json()["error"]


def test_a_transductive_run_serves_ids_and_refuses_new_items(tmp_path):
    run = tmp_path / "ids"
    run_inprocess("finetune", *SMOKE, "backbone=none", "model.item_ids=true", run_dir=run)
    run_inprocess("export", *SMOKE, f"run={run}", run_dir=tmp_path / "ex")
    from crossrec_cli.serving.engine import Engine, RequestError

    engine = Engine(tmp_path / "ex" / "export")
    assert engine.manifest["encoder"] is None and "transductive" in engine.manifest["new_items"]
    first = engine.catalogs["movies"].ids[:2]
    assert len(engine.recommend("movies", first, 5, True)["items"]) == 5
    for call in (lambda: engine.add_items("movies", [("x", "a text")]),
                 lambda: engine.recommend("movies", [{"text": "a text"}], 5, True)):
        with pytest.raises(RequestError) as err:
            call()
        assert err.value.status == 409
    proc = run_cli("export", *SMOKE, f"run={run}", "quantize=int8", run_dir=tmp_path / "q", check=False)
    assert proc.returncode == 2 and "quantize" in proc.stderr


def test_serve_refuses_bad_settings_in_one_line(exported, tmp_path):
    from crossrec_cli.cli import compose
    from crossrec_cli.commands import serve
    from crossrec_cli.errors import CrossrecError

    for override, key in (("port=0", "port"), ("workers=0", "workers"), ("encoder=fp16", "encoder"),
                          ("limits.k=0", "limits.k"), ("token=''", "token"), ("token=1234", "token"), ("run=null", "run")):
        with pytest.raises(CrossrecError, match=f"^error: {key}:"):
            serve.check_settings(compose("serve", [f"run={exported}", override], tmp_path / "c"))
    for override, key in (("opset=17", "opset"), ("eval.zero_shot_prior=1.0", "eval.zero_shot_prior")):
        with pytest.raises(CrossrecError, match=f"^error: {key}: applies when run= is a training run"):
            serve.export_folder(compose("serve", [f"run={exported}", override], tmp_path / "c"))
    only_movies = tmp_path / "only_movies"  # an export without music (its manifest is all settings_of reads)
    only_movies.mkdir()
    manifest = json.loads((exported / "export" / "manifest.json").read_text())
    del manifest["domains"]["music"]
    (only_movies / "manifest.json").write_text(json.dumps(manifest))
    cfg = compose("serve", [f"run={only_movies}", "domain=music"], tmp_path / "c")
    with pytest.raises(CrossrecError, match="^error: domain=music: .* holds no export of it"):
        serve.settings_of(cfg, only_movies, False)
    with pytest.raises(CrossrecError, match="neither a training run"):
        serve.export_folder(compose("serve", [f"run={tmp_path}"], tmp_path / "c"))
    assert serve.check_overrides(cfg, ["eval.topk=[5]"]).where == "eval.topk"
    proc = run_cli("serve", f"run={exported}", "workers=0", run_dir=tmp_path / "x", check=False)
    err = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(err) == 1 and err[0].startswith("error: workers:"), proc.stderr


@pytest.mark.slow
def test_serve_from_a_wheel_install(trained, tmp_path):
    """A non-editable install serves (its configs and the serving package ship in the wheel)."""
    env_dir = wheel_install(tmp_path)
    port = free_port()
    env = {**ENV, "PYTHONPATH": ""}
    proc = subprocess.Popen([str(env_dir / "bin" / "crossrec"), "serve", *SMOKE, f"run={trained}", f"port={port}",
                             f"hydra.run.dir={tmp_path / 's'}"], cwd=tmp_path, env=env, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None:
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).json()
                break
            except httpx.HTTPError:
                time.sleep(0.5)
        else:
            pytest.fail(proc.stderr.read().decode()[-2000:] if proc.poll() is not None else "no answer")
        assert health["status"] == "ok" and "movies" in health["domains"]
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_the_deploy_docs_table_is_rendered_from_its_record():
    """docs/deploy.md's numbers are scripts/serve_bench.py's rendering of the committed record."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("serve_bench", REPO / "scripts" / "serve_bench.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    record = json.loads(bench.RECORD.read_text())
    block = bench.DOCS.read_text().split(bench.BEGIN, 1)[1].split(bench.END, 1)[0]
    assert block.strip() == "\n".join(bench.rendered(record)).strip()
    assert set(record["recommend"]) == {"movies", "music"}
    assert all(set(levels) == {"1", "8", "32"} for kinds in record["recommend"].values() for levels in kinds.values())
