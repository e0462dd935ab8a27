"""crossrec report: a real multirun sweep's metrics.json files in one table, CSV and HTML."""

from __future__ import annotations

import csv

from conftest import run_cli


def test_report_of_a_sweep(tmp_path):
    sweep = tmp_path / "sweep"
    proc = run_cli("finetune", "-m", "experiment=smoke", "seed=0,1", "model.dim=16,32", f"hydra.sweep.dir={sweep}",
                   run_dir=tmp_path / "unused")
    assert proc.returncode == 0, proc.stderr[-2000:]
    # a baseline on other data in the same folder: never ranked with the sweep
    run_cli("evaluate", "experiment=smoke", "domain=music", run_dir=sweep / "other")
    rep = run_cli("report", str(sweep), "--metric", "ndcg@10", run_dir=None, env={"COLUMNS": "200"})
    assert rep.returncode == 0, rep.stderr
    out = rep.stdout
    assert "2 groups of runs" in out and "5 runs" in out
    assert "model.dim=16" in out and "model.dim=32" in out and "± " in out  # two seeds folded per dim
    rows = list(csv.DictReader((sweep / "report" / "report.csv").open()))
    assert len(rows) == 5 and {r["model.dim"] for r in rows if r["command"] == "finetune"} == {"16", "32"}
    assert all(r["test/movies/ndcg@10"] for r in rows if r["command"] == "finetune")
    page = (sweep / "report" / "report.html").read_text()
    assert page.count("id='group-") == 2 and "class='best'" in page and "ndcg@10 vs model.dim" in page


def test_report_of_an_empty_folder_is_one_line(tmp_path):
    rep = run_cli("report", str(tmp_path), run_dir=None, check=False)
    assert rep.returncode == 2 and rep.stderr.strip().count("\n") == 0 and "no finished run" in rep.stderr
