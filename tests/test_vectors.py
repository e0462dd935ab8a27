"""Per-item vector files (multimodal fusion): readers, the missing-vector mask, a fused run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from crossrec_cli.data.vectors import check_spec, read_vectors
from crossrec_cli.errors import CrossrecError
from crossrec_cli.models.features import Catalogue
from crossrec_cli.models.seqrec import SeqRec, SeqRecConfig

REPO = Path(__file__).resolve().parents[1]
ML_ITEMS = REPO / "crossrec_cli" / "data" / "bundled" / "ml-100k" / "ml-100k.item"


def genre_vectors(n: int = 60) -> dict[str, np.ndarray]:
    """Genre indicators of the first ``n`` real ml-100k movies (from the bundled item file)."""
    lines = ML_ITEMS.read_text(encoding="utf-8").splitlines()
    rows = [ln.split("\t") for ln in lines[1 : n + 1]]
    genres = sorted({g for r in rows for g in r[3].split()})
    return {r[0]: np.asarray([float(g in r[3].split()) for g in genres], dtype=np.float32) for r in rows}


def _write_all(tmp_path: Path, table: dict[str, np.ndarray]) -> dict[str, tuple[Path, Path | None]]:
    ids = list(table)
    mat = np.stack([table[i] for i in ids])
    (tmp_path / "v.tsv").write_text("".join(f"{i}\t{' '.join(f'{x:g}' for x in table[i])}\n" for i in ids))
    (tmp_path / "ids.txt").write_text("\n".join(ids) + "\n")
    np.save(tmp_path / "v.npy", mat)
    from safetensors.numpy import save_file

    save_file({"vectors": mat}, str(tmp_path / "v.safetensors"))
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"item_id": ids, "vector": [table[i].tolist() for i in ids]}), tmp_path / "list.parquet")
    pq.write_table(pa.table({"item_id": ids, **{f"g{k}": mat[:, k] for k in range(mat.shape[1])}}),
                   tmp_path / "cols.parquet")
    return {"tsv": (tmp_path / "v.tsv", None), "npy": (tmp_path / "v.npy", tmp_path / "ids.txt"),
            "safetensors": (tmp_path / "v.safetensors", tmp_path / "ids.txt"),
            "parquet (list column)": (tmp_path / "list.parquet", None),
            "parquet (a column per dimension)": (tmp_path / "cols.parquet", None)}


def test_every_layout_reads_the_same_real_vectors(tmp_path):
    table = genre_vectors()
    files = _write_all(tmp_path, table)
    for name, (path, ids) in files.items():
        got = read_vectors(path, ids)
        assert list(got) == list(table), name
        assert all(np.array_equal(got[i], table[i]) for i in table), name


@pytest.mark.parametrize("name, content, where", [
    ("v.tsv", "1\t1 0 1\n2\t0 1 0\n3\t1 1\n", "v.tsv:3"),  # a size that changes
    ("v.tsv", "1\t1 0 1\n2\t0 x 0\n", "v.tsv:2"),
    ("v.tsv", "1\t1 0 1\n1\t0 1 0\n", "v.tsv:2"),  # an item twice
    ("v.tsv", "1 1 0 1\n", "v.tsv:1"),  # no tab
    ("v.tsv", "1\t1 nan 1\n", "v.tsv:1"),
])
def test_a_malformed_vector_row_is_one_line_with_file_and_line(tmp_path, name, content, where):
    (tmp_path / name).write_text(content)
    with pytest.raises(CrossrecError) as err:
        read_vectors(tmp_path / name, None)
    msg = str(err.value)
    assert "\n" not in msg and f"{tmp_path / where.split(':')[0]}:{where.split(':')[1]}" in msg, msg


def test_an_array_and_its_ids_must_agree(tmp_path):
    np.save(tmp_path / "v.npy", np.ones((3, 4), dtype=np.float32))
    (tmp_path / "ids.txt").write_text("a\nb\n")
    with pytest.raises(CrossrecError, match="3 rows but 2 ids"):
        read_vectors(tmp_path / "v.npy", tmp_path / "ids.txt")
    with pytest.raises(CrossrecError, match="vectors.image.ids: missing"):
        check_spec({"image": {"path": "v.npy"}}, "vectors")
    with pytest.raises(CrossrecError, match="unknown vector file type"):
        check_spec({"image": {"path": "v.csv"}}, "vectors")


def test_items_the_file_lacks_get_the_learned_missing_vector():
    torch.manual_seed(0)
    rows = [np.asarray([1.0, 0.0, 2.0]), None, np.asarray([0.0, 1.0, 0.5]), None]
    cat = Catalogue(4, {"vectors:image": rows})
    m = SeqRec(SeqRecConfig(dim=8, heads=2, features=["vectors:image"]), None, backbone_trains=False)
    m.add_catalogue("d", cat)
    m.add_catalogue("other", Catalogue(2, {}))  # a domain without the file
    feat = m.features["vectors:image"]
    v = m.item_matrix("d")
    assert torch.equal(v[1], feat.missing) and torch.equal(v[3], feat.missing) and not torch.equal(v[0], v[2])
    assert torch.equal(m.item_matrix("other"), feat.missing.expand(2, -1))
    v.sum().backward()
    assert feat.map.weight.grad.abs().sum() > 0 and feat.missing.grad is not None
    assert not m.transductive  # content vectors score any catalogue that has them


def test_vectors_needs_the_files_name():
    with pytest.raises(CrossrecError, match="'vectors' needs the file's name"):
        SeqRec(SeqRecConfig(dim=8, heads=2, features=["vectors"]), None, backbone_trains=False)


def test_a_domain_declares_vector_files_and_fusion_multimodal_fuses_them_all(tmp_path):
    """`fusion=multimodal` takes every file the domain declares (genres, release year), in order,
    and the run's config.yaml and metrics.json name them."""
    import yaml

    from tests.conftest import run_inprocess

    table = genre_vectors(1682)
    rows = [ln.split("\t") for ln in ML_ITEMS.read_text(encoding="utf-8").splitlines()[1:]]
    years = {r[0]: float(r[2]) - 1900.0 for r in rows if r[2].isdigit()}  # the few without a year: "missing"
    assert 1600 < len(years) < 1682
    (tmp_path / "meta.tsv").write_text("".join(f"{i}\t{' '.join(f'{x:g}' for x in v)}\n" for i, v in table.items()))
    (tmp_path / "year.tsv").write_text("".join(f"{i}\t{y:g}\n" for i, y in years.items()))
    conf = tmp_path / "conf" / "domain"
    conf.mkdir(parents=True)
    movies = (REPO / "crossrec_cli" / "conf" / "domain" / "movies.yaml").read_text()
    (conf / "films.yaml").write_text(movies.replace("name: movies", "name: films")
                                     + f"vectors:\n  meta: {{path: {tmp_path / 'meta.tsv'}}}\n"
                                     f"  year: {{path: {tmp_path / 'year.tsv'}}}\n")
    rec = run_inprocess("finetune", "experiment=smoke", "domain=films", "fusion=multimodal",
                        f"hydra.searchpath=[file://{tmp_path / 'conf'}]", run_dir=tmp_path / "run")
    assert rec["features"] == ["text", "vectors:meta", "vectors:year"] and rec["mode"] == "inductive"
    assert rec["fusion"] == "gated"
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["model"]["features"] == ["text", "vectors:meta", "vectors:year"]
    gates = rec["fusion_gates"]["films"]
    assert set(gates) == {"text", "vectors:meta", "vectors:year"} and sum(gates.values()) == pytest.approx(1.0, abs=1e-3)


def test_fusion_multimodal_on_a_domain_without_vector_files_is_one_line(tmp_path, capsys):
    from tests.conftest import run_inprocess

    with pytest.raises(SystemExit) as stop:
        run_inprocess("finetune", "experiment=smoke", "domain=movies", "fusion=multimodal", run_dir=tmp_path / "run")
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "model.features" in err and "movies declares none" in err
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_image_vectors_from_a_local_vision_model_and_real_image_files(tmp_path):
    """A tiny randomly initialised ViT saved locally (no download) pools real PNG files the test
    writes; the output loads as a domain's vector file."""
    from PIL import Image
    from transformers import ViTConfig, ViTImageProcessor, ViTModel

    from crossrec_cli.models.vision import write_image_vectors

    model_dir = tmp_path / "vit"
    torch.manual_seed(0)
    ViTModel(ViTConfig(image_size=32, patch_size=8, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                       intermediate_size=32)).save_pretrained(model_dir, safe_serialization=True)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(model_dir)
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for item in ("10", "11", "12"):
        Image.fromarray(rng.integers(0, 255, (40, 30, 3), dtype=np.uint8)).save(images / f"{item}.png")
    npy, ids = write_image_vectors(model_dir, images, tmp_path / "out" / "vecs", batch_size=2)
    table = read_vectors(npy, ids)
    assert list(table) == ["10", "11", "12"] and all(v.shape == (16,) for v in table.values())
    assert not np.allclose(table["10"], table["11"])  # different images, different vectors
    again = read_vectors(*write_image_vectors(model_dir, images, tmp_path / "again" / "vecs", batch_size=3))
    assert all(np.allclose(table[k], again[k], atol=1e-5) for k in table)  # batching does not change a vector
    (model_dir / "config.json").write_text((model_dir / "config.json").read_text().replace("{", '{"auto_map": {}, ', 1))
    with pytest.raises(CrossrecError, match="ships its own Python code"):
        write_image_vectors(model_dir, images, tmp_path / "x" / "vecs")


def test_a_bad_parquet_row_names_the_file_and_row(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"item_id": ["1", "2", "3"], "vector": [[1.0, 0.0], [0.0, 1.0], [1.0]]}), tmp_path / "a.parquet")
    with pytest.raises(CrossrecError, match=r"a\.parquet: row 3 \(item '3'\) has 1 values, row 1 has 2"):
        read_vectors(tmp_path / "a.parquet", None)
    pq.write_table(pa.table({"item_id": ["1", "2"], "x": [1.0, float("nan")]}), tmp_path / "b.parquet")
    with pytest.raises(CrossrecError, match=r"row 2 \(item '2'\) has a non-finite value"):
        read_vectors(tmp_path / "b.parquet", None)


def test_fusion_multimodal_in_transfer_takes_the_source_files_and_masks_a_target_without_them(tmp_path):
    """The expansion reads source and target domain files; music declares no vectors, so its
    items all get the "missing" vector (the feature itself is tested above)."""
    from crossrec_cli.cli import compose
    from crossrec_cli.commands._common import expand_vector_features

    conf = tmp_path / "conf" / "domain"
    conf.mkdir(parents=True)
    movies = (REPO / "crossrec_cli" / "conf" / "domain" / "movies.yaml").read_text()
    (conf / "films.yaml").write_text(movies.replace("name: movies", "name: films")
                                     + "vectors: {image: {path: clip.npy, ids: ids.txt}, meta: {path: meta.tsv}}\n")
    cfg = compose("transfer", ["fusion=multimodal", "source=films", "target=music", "model.features=[text,id,vectors]",
                               f"hydra.searchpath=[file://{tmp_path / 'conf'}]"], tmp_path / "run")
    expand_vector_features(cfg)
    assert list(cfg.model.features) == ["text", "id", "vectors:image", "vectors:meta"]
