"""format: cdsr (one user per line, mixed-domain histories, item tables by side), on a folder
written from the bundled MovieLens-100K in that layout: side A = movies 1..600, side B = the rest."""

from __future__ import annotations

import numpy as np
import pytest

from crossrec_cli.data import DomainSpec, load_domain, make_split
from crossrec_cli.data.cdsr import published_candidates
from crossrec_cli.data.domain import BUNDLED_DIR
from crossrec_cli.errors import CrossrecError
from conftest import read_metrics, run_cli

SPLIT_AT = 600  # movies 1..600 -> side A (ids 0..599), 601..1682 -> side B (600..1681)


def _user_sequences(n_users: int = 620, max_len: int = 30) -> dict[str, list[int]]:
    """Each user's first ``max_len`` ratings by time (file order for ties), as 0-based ids."""
    rows = []
    text = (BUNDLED_DIR / "ml-100k" / "ml-100k.inter").read_text().splitlines()[1:]
    for k, row in enumerate(text):
        u, i, _, t = row.split("\t")
        rows.append((int(u), float(t), k, int(i) - 1))
    seqs: dict[str, list[int]] = {}
    for u, _, _, i in sorted(rows):
        if u <= n_users and len(seqs.setdefault(str(u), [])) < max_len:
            seqs[str(u)].append(i)
    return seqs


def write_cdsr(folder, only_late_targets: bool = False) -> dict[str, dict[str, list[int]]]:
    """The layout: items_A_movies.tsv, items_B_movies.tsv, train_A / train_B / train_overlap,
    valid, test. Returns each file's lines (user -> ids) as written. ``only_late_targets``: valid
    and test lines only where the target is on side B (the one with 999+ items)."""
    folder.mkdir(parents=True, exist_ok=True)
    items = (BUNDLED_DIR / "ml-100k" / "ml-100k.item").read_text().splitlines()[1:]
    for side, keep in (("A", lambda i: i < SPLIT_AT), ("B", lambda i: i >= SPLIT_AT)):
        lines = ["item_id\tasin\ttitle"]
        for row in items:
            iid, title = row.split("\t")[:2]
            if keep(int(iid) - 1):
                lines.append(f"{int(iid) - 1}\tml{iid}\t{title} &amp; co")
        (folder / f"items_{side}_movies.tsv").write_text("\n".join(lines) + "\n")
    seqs = _user_sequences()
    files: dict[str, dict[str, list[int]]] = {n: {} for n in ("train_A", "train_B", "train_overlap", "valid", "test")}
    for u, seq in seqs.items():
        n = int(u)
        if n <= 150:
            files["train_A"][u] = [i for i in seq if i < SPLIT_AT]
        elif n <= 300:
            files["train_B"][u] = [i for i in seq if i >= SPLIT_AT]
        elif n <= 500:
            files["train_overlap"][u] = seq
        elif not only_late_targets or seq[-1] >= SPLIT_AT:
            files["valid" if n <= 560 else "test"][u] = seq
    for name, lines in files.items():
        text = "".join(f"{u}\t{','.join(map(str, s))}\n" for u, s in lines.items() if s)
        (folder / f"{name}.txt").write_text(text)
    return files


def spec(folder, side: str, **extra) -> DomainSpec:
    return DomainSpec.from_dict({"name": {"A": "early", "B": "late"}[side], "format": "cdsr", "path": str(folder),
                                 "dataset": side, "text_fields": ["title"], "shared_user_space": "ml", **extra})


@pytest.fixture(scope="module")
def cdsr(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cdsr")
    return folder, write_cdsr(folder)


def test_each_side_reads_its_items_and_the_given_split(cdsr):
    folder, files = cdsr
    for side, on_side in (("A", lambda i: i < SPLIT_AT), ("B", lambda i: i >= SPLIT_AT)):
        domain = load_domain(spec(folder, side))
        split = make_split(domain)
        assert split.kind == "given"
        assert domain.item_ids == [str(i) for i in range(1682) if on_side(i)]
        assert domain.item_text[0].endswith("& co")  # HTML entities unescaped
        # training: every training line's items of this side, in line order, users by file
        want = {f"{name}:{u}": [i for i in s if on_side(i)] for name in ("train_A", "train_B", "train_overlap")
                for u, s in files[name].items()}
        want = {u: s for u, s in want.items() if s}
        got = {domain.user_ids[u]: [int(domain.item_ids[i]) for i in seq]
               for u, seq in zip(split.train_users.tolist(), split.train_seqs)}
        assert got == want
        assert domain.n_interactions == sum(len(s) for s in want.values())
        # valid / test: the lines whose LAST item is on this side; history = this side's items before it
        for part, ev in (("valid", split.valid), ("test", split.test)):
            lines = {f"{part}:{u}": s for u, s in files[part].items() if s and on_side(s[-1])}
            assert len(ev) == len(lines) > 0
            for u, hist, t in zip(ev.users.tolist(), ev.histories, ev.targets.tolist()):
                line = lines[domain.user_ids[u]]
                assert int(domain.item_ids[t]) == line[-1]
                assert [int(domain.item_ids[i]) for i in hist] == [i for i in line[:-1] if on_side(i)]
    # overlapping users are one user in both sides' domains
    early, late = load_domain(spec(folder, "A")), load_domain(spec(folder, "B"))
    shared = set(early.user_ids) & set(late.user_ids)
    assert {u.split(":")[0] for u in shared} <= {"train_overlap", "valid", "test"}
    assert any(u.startswith("train_overlap:") for u in shared)


def test_published_candidates_are_the_seeded_draw(cdsr):
    folder, files = cdsr
    domain = load_domain(spec(folder, "B"))
    cands = published_candidates(domain, n_negatives=50)
    split = make_split(domain)
    assert sorted(cands) == sorted(split.test.users.tolist())
    # the draw as the benchmark's code makes it: numpy's global legacy generator seeded once,
    # one draw per valid line, then per test line, from the target side's 1-based id range
    np.random.seed(42)
    ranges = {True: (1, SPLIT_AT + 1), False: (SPLIT_AT + 1, 1683)}
    expect = {}
    for part in ("valid", "test"):
        for u, s in files[part].items():
            if not s:
                continue
            lo, hi = ranges[s[-1] < SPLIT_AT]
            negs = np.random.choice(list(set(range(lo, hi)) - {s[-1] + 1}), size=50, replace=False)
            if part == "test" and s[-1] >= SPLIT_AT:
                expect[f"test:{u}"] = [s[-1]] + [int(x) - 1 for x in negs]
    got = {domain.user_ids[u]: [int(domain.item_ids[i]) for i in c] for u, c in cands.items()}
    assert got == expect
    for lst in got.values():
        assert len(set(lst)) == 51 and all(i >= SPLIT_AT for i in lst)


def test_malformed_files_name_file_and_line(tmp_path):
    folder = tmp_path / "bad"
    write_cdsr(folder)
    with pytest.raises(CrossrecError, match="dataset.*missing side"):
        load_domain(DomainSpec.from_dict({"name": "x", "format": "cdsr", "path": str(folder)}))
    with pytest.raises(CrossrecError, match="no items_C_"):
        load_domain(spec(folder, "A", dataset="C"))
    with pytest.raises(CrossrecError, match="filters cannot be applied"):
        load_domain(spec(folder, "A", filters={"max_users": 5}))
    lines = (folder / "test.txt").read_text().splitlines()
    lines[2] = lines[2] + ",99999"
    (folder / "test.txt").write_text("\n".join(lines) + "\n")
    with pytest.raises(CrossrecError) as err:
        load_domain(spec(folder, "A"))
    assert "test.txt" in str(err.value) and ":3" in str(err.value) and "99999" in str(err.value)
    lines[2] = lines[2].replace("\t", " ")
    (folder / "test.txt").write_text("\n".join(lines) + "\n")
    with pytest.raises(CrossrecError, match="no tab"):
        load_domain(spec(folder, "A"))


def test_too_few_items_for_the_published_draw_is_one_line(cdsr):
    folder, _ = cdsr
    with pytest.raises(CrossrecError, match="999 negatives"):
        published_candidates(load_domain(spec(folder, "A")))


def test_evaluate_published_candidates_from_the_cli(tmp_path):
    folder = tmp_path / "data"
    write_cdsr(folder, only_late_targets=True)
    conf = tmp_path / "conf" / "domain"
    conf.mkdir(parents=True)
    (conf / "late.yaml").write_text(f"name: late\nformat: cdsr\npath: {folder}\ndataset: B\ntext_fields: [title]\n")
    (conf / "movies.yaml").write_text("name: movies\nformat: recbole\npath: bundled:ml-100k\ndataset: ml-100k\n"
                                      "text_fields: [movie_title]\n")
    search = f"hydra.searchpath=[file://{tmp_path / 'conf'}]"
    run_cli("evaluate", "model=popularity", "domain=late", "eval.candidates=published", "eval.topk=[1,5,10]", search,
            run_dir=tmp_path / "pop")
    m = read_metrics(tmp_path / "pop")
    assert m["protocol"] == "candidates"
    n = m["test"]["late"]["examples"]
    assert n == len(published_candidates(load_domain(spec(folder, "B")))) and 0 < m["test"]["late"]["recall@10"] <= 1
    bad = run_cli("evaluate", "model=popularity", "domain=movies", "eval.candidates=published", search,
                  run_dir=tmp_path / "bad", check=False)
    assert bad.returncode == 2
    assert "eval.candidates" in bad.stderr and "no published candidates" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_mixed_histories_are_the_lines(cdsr):
    """with_context on two sides of one benchmark: each input is the user's line, the target's
    items as they are, the other side's shifted by the target catalogue's size."""
    from crossrec_cli.data.context import mixed_histories

    folder, files = cdsr
    doms = {"early": load_domain(spec(folder, "A")), "late": load_domain(spec(folder, "B"))}
    splits = {n: make_split(d) for n, d in doms.items()}
    mixed, keys, record = mixed_histories(doms, {"early": "ml", "late": "ml"}, splits)
    assert keys == {"early": "early+late", "late": "late+early"}
    early, late = doms["early"], doms["late"]

    def ids(seq):  # global index -> raw movie id
        return [int(early.item_ids[i]) if i < early.n_items else int(late.item_ids[i - early.n_items]) for i in seq]

    m = mixed["early"]
    for u, seq in zip(m.train_users.tolist(), m.train_seqs):
        name, user = early.user_ids[u].split(":")
        assert ids(seq) == files[name][user]  # the whole line: both sides
    for part in ("valid", "test"):
        ev = getattr(m, part)
        assert np.array_equal(ev.targets, getattr(splits["early"], part).targets)
        for u, hist in zip(ev.users.tolist(), ev.histories):
            assert ids(hist) == files[part][early.user_ids[u].split(":")[1]][:-1]
    n_ctx = record["early"]["examples_with_context"]["test"]
    assert 0 < n_ctx <= len(m.test)


def test_finetune_mixed_history_end_to_end(tmp_path):
    folder = tmp_path / "data"
    write_cdsr(folder)
    conf = tmp_path / "conf" / "domain"
    conf.mkdir(parents=True)
    for name, side in (("early", "A"), ("late", "B")):
        (conf / f"{name}.yaml").write_text(f"name: {name}\nformat: cdsr\npath: {folder}\ndataset: {side}\n"
                                           "text_fields: [title]\nshared_user_space: ml\n")
    small = ["backbone=tiny", "trainer.epochs=1", "trainer.batch_size=16", "trainer.max_steps_per_epoch=4",
             "model.dim=32", "model.max_history=20", "progress=false", "eval.cache_vectors=false",
             "domain=[early,late]", f"hydra.searchpath=[file://{tmp_path / 'conf'}]"]
    run_cli("finetune", *small, "mixed_history=true", run_dir=tmp_path / "mixed")
    m = read_metrics(tmp_path / "mixed")
    assert set(m["test"]) == {"early", "late"}
    assert m["mixed_history"]["early"]["context"] == "late"
    assert m["mixed_history"]["late"]["examples_with_context"]["test"] > 0
    # one domain trained and ranked, the other read only as its context
    run_cli("finetune", *small[:-2], "domain=early", small[-1], "context=late", run_dir=tmp_path / "ctx")
    c = read_metrics(tmp_path / "ctx")
    assert set(c["test"]) == {"early"} and c["mixed_history"] == {"early": m["mixed_history"]["early"]}
    # evaluate run= reloads it with the same mixed inputs: the same test metrics
    run_cli("evaluate", f"run={tmp_path / 'ctx'}", f"hydra.searchpath=[file://{tmp_path / 'conf'}]", run_dir=tmp_path / "ev")
    e = read_metrics(tmp_path / "ev")
    assert e["test"]["early"] == c["test"]["early"] and e["mixed_history"] == {"early": "late"}
    # recommend would read single-domain histories: refused in one line
    bad = run_cli("recommend", f"run={tmp_path / 'ctx'}", f"hydra.searchpath=[file://{tmp_path / 'conf'}]",
                  run_dir=tmp_path / "rec", check=False)
    assert bad.returncode == 2 and "mixed-domain" in bad.stderr and "Traceback" not in bad.stderr
    # a domain without a partner in the run is one line naming the key
    alone = run_cli("finetune", *small[:-2], "domain=early", small[-1], "mixed_history=true", run_dir=tmp_path / "a",
                    check=False)
    assert alone.returncode == 2 and "mixed_history" in alone.stderr and "Traceback" not in alone.stderr


def test_a_step_projects_only_the_context_items_it_reads():
    """A composite's training step with ``context`` rows computes the same loss and gradients as
    with the whole source catalogue projected (the unread rows never enter a logit)."""
    import torch

    from crossrec_cli.training.loop import TrainConfig, batch_loss
    from test_seqrec import _model

    def composite():
        m = _model(dropout=0.0)
        m.add_catalogue("s", [f"source {i}" for i in range(20)])
        m.encoded["s"] = torch.randn(20, 12, generator=torch.Generator().manual_seed(1))
        m.add_composite("d+s", "d", "s")
        torch.manual_seed(3)
        torch.nn.init.normal_(m.domain_emb.weight, std=0.02)
        return m

    inp = torch.tensor([[-1, 31, 2, 40], [33, 34, 5, 6]])  # 30.. are source items (30 + j)
    tgt = torch.tensor([[-1, 2, 35, 7], [34, 5, 6, 9]])
    tc = TrainConfig()
    grads = []
    for use_context in (True, False):
        m = composite()
        if not use_context:
            m.item_matrix = lambda key, fresh=None, context=None, _f=m.item_matrix: _f(key, fresh, None)
        loss = batch_loss(m, "d+s", inp, tgt, tc)
        loss.backward()
        grads.append((loss.item(), {n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None}))
    (a, ga), (b, gb) = grads
    assert a == pytest.approx(b, abs=1e-6)
    assert ga.keys() == gb.keys() and all(torch.allclose(ga[k], gb[k], atol=1e-6) for k in ga)
