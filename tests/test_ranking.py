"""full_ranks / candidate_ranks / read_candidates on small hand-made score matrices."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from crossrec_cli.data.split import EvalSet, Split
from crossrec_cli.errors import CrossrecError
from crossrec_cli.evaluation.protocol import evaluate_split
from crossrec_cli.evaluation.ranking import candidate_ranks, full_ranks, read_candidates

# One-dimensional item vectors with a user vector of [1]: the score of item j is simply ITEMS[j].
#   item:   0  1  2  3  4
#   score:  3  5  5  1  5
# Best-first order with ties by item order: 1, 2, 4, 0, 3.
ITEMS = torch.tensor([[3.0], [5.0], [5.0], [1.0], [5.0]])
ONE_USER = torch.tensor([[1.0]])


def ranks_of(targets, exclude=None, items=ITEMS, **kw):
    users = ONE_USER.expand(len(targets), -1)
    return full_ranks(users, items, np.asarray(targets), exclude, **kw).tolist()


def reference_ranks(users, items, targets, exclude=None):
    """Brute force: sort every item by (-score, item index), drop excluded non-targets, find t."""
    scores = (users.double() @ items.double().T).tolist()
    out = []
    for i, t in enumerate(targets):
        drop = set() if exclude is None else set(exclude[i].tolist()) - {int(t)}
        order = sorted(
            (j for j in range(items.shape[0]) if j not in drop), key=lambda j: (-scores[i][j], j)
        )
        out.append(order.index(int(t)))
    return out


def test_ranks_by_hand_ties_broken_by_item_order():
    # item 1 is first; item 2 ties with 1 but comes later -> 2nd; item 4 ties too -> 3rd;
    # item 0 (score 3) -> 4th; item 3 (score 1) -> 5th
    assert ranks_of([1, 2, 4, 0, 3]) == [0, 1, 2, 3, 4]


def test_constant_scorer_ranks_by_item_order_and_target_never_outranks_itself():
    # every item scores 0: the rank is exactly the target's position in the item file.
    # (If the target counted against itself the ranks would be 1..N instead of 0..N-1.)
    items = torch.zeros(6, 3)
    users = torch.zeros(6, 3)
    assert full_ranks(users, items, np.arange(6)).tolist() == [0, 1, 2, 3, 4, 5]


def test_a_single_item_catalogue_ranks_the_target_first():
    assert full_ranks(torch.ones(1, 2), torch.ones(1, 2), np.array([0])).tolist() == [0]


def test_exclude_seen_removes_history_items():
    # target 0 (score 3) is 4th; seeing items 1 and 4 removes two of the three above it
    assert ranks_of([0], exclude=[np.array([1, 4])]) == [1]
    # removing items below the target changes nothing
    assert ranks_of([0], exclude=[np.array([3])]) == [3]
    # an empty history is the same as no exclusion
    assert ranks_of([0, 3], exclude=[np.array([], dtype=np.int64)] * 2) == ranks_of([0, 3])


def test_exclude_seen_never_removes_the_target():
    # the user saw item 2 before and it is the target again (repeat consumption):
    # item 1 is removed, item 2 itself stays and now ranks first
    assert ranks_of([2], exclude=[np.array([1, 2])]) == [0]
    # history = the whole catalogue: the target is still ranked, alone, at 0
    assert ranks_of([3], exclude=[np.arange(5)]) == [0]


def test_exclude_is_per_example():
    # same target twice; only the first example's history holds item 1
    assert ranks_of([4, 4], exclude=[np.array([1]), np.array([0])]) == [1, 2]


@pytest.mark.parametrize("score_dtype", ["float32", "float64"])
@pytest.mark.parametrize("user_chunk,item_chunk", [(1, 2), (3, 1), (2, 7), (64, 64)])
def test_chunked_equals_unchunked_and_brute_force(user_chunk, item_chunk, score_dtype):
    # small integer vectors: exact float arithmetic and many ties across chunk borders
    g = torch.Generator().manual_seed(0)
    items = torch.randint(-2, 3, (23, 3), generator=g).float()
    users = torch.randint(-2, 3, (11, 3), generator=g).float()
    rng = np.random.default_rng(0)
    targets = rng.integers(0, 23, size=11)
    exclude = [rng.choice(23, size=int(rng.integers(0, 8)), replace=False) for _ in range(11)]
    exclude[0] = np.append(exclude[0], targets[0])  # a target inside its own history
    for ex in (None, exclude):
        whole = full_ranks(users, items, targets, ex, score_dtype=score_dtype)
        chunked = full_ranks(
            users, items, targets, ex, user_chunk=user_chunk, item_chunk=item_chunk, score_dtype=score_dtype
        )
        assert chunked.tolist() == whole.tolist()
        assert whole.tolist() == reference_ranks(users, items, targets, ex)


def test_duplicate_item_vectors_tie_by_item_order():
    # items 2k and 2k+1 have identical vectors (e.g. two catalogue entries with the same text).
    # Whatever the user, the odd twin must rank exactly one place below the even one.
    g = torch.Generator().manual_seed(0)
    base = torch.randn(25, 64, generator=g, dtype=torch.float64)
    items = base.repeat_interleave(2, dim=0)  # (50, 64)
    users = torch.randn(40, 64, generator=g, dtype=torch.float64)
    even = np.arange(0, 50, 2)[np.arange(40) % 25]
    for dtype in ("float32", "float64"):
        r_even = full_ranks(users, items, even, score_dtype=dtype)
        r_odd = full_ranks(users, items, even + 1, score_dtype=dtype)
        assert (r_odd - r_even).tolist() == [1] * 40


@pytest.mark.parametrize("item_chunk", [65536, 37])
def test_float32_scores_give_the_float64_ranks_on_near_ties(item_chunk):
    # Each item has neighbours whose float64 scores differ from its own by 1e-9 .. 1e-6 of the
    # score: float32 (7 digits) cannot order them, float64 can. The float32 path must recheck
    # exactly those and return the float64 ranks, with and without seen items removed.
    g = torch.Generator().manual_seed(1)
    base = torch.randn(40, 16, generator=g, dtype=torch.float64)
    users = torch.randn(30, 16, generator=g, dtype=torch.float64)
    steps = torch.tensor([0.0, 1e-9, -1e-8, 1e-7, -1e-6, 3e-6])
    items = (base.unsqueeze(1) * (1 + steps.view(1, -1, 1).double())).reshape(-1, 16)  # (240, 16)
    rng = np.random.default_rng(1)
    targets = rng.integers(0, 240, size=30)
    exclude = [rng.choice(240, size=20, replace=False) for _ in range(30)]
    for ex in (None, exclude):
        exact = full_ranks(users, items, targets, ex, score_dtype="float64", item_chunk=item_chunk)
        fast = full_ranks(users, items, targets, ex, score_dtype="float32", item_chunk=item_chunk)
        assert fast.tolist() == exact.tolist() == reference_ranks(users, items, targets, ex)
    # and the test is not vacuous: ranking in float32 alone orders some of those pairs wrongly
    s32 = users.float() @ items.float().T
    t32 = s32.gather(1, torch.as_tensor(targets).unsqueeze(1))
    naive = ((s32 > t32) | ((s32 == t32) & (torch.arange(240) < torch.as_tensor(targets).unsqueeze(1)))).sum(1)
    assert naive.tolist() != full_ranks(users, items, targets, score_dtype="float64").tolist()


def test_unknown_score_dtype_is_refused():
    with pytest.raises(CrossrecError, match="eval.score_dtype"):
        full_ranks(ONE_USER, ITEMS, np.array([0]), score_dtype="float16")


# ----- candidate lists -------------------------------------------------------------------------


def test_candidate_ranks_within_the_list():
    users = ONE_USER.expand(5, -1)
    targets = np.array([2, 2, 2, 0, 0])
    cands = [
        np.array([0, 2, 3]),  # 2 beats 0 and 3 -> 0
        np.array([1, 2, 4]),  # 1 ties with 2 and comes first -> 1; 4 ties but comes after
        np.array([4, 4, 2, 0, 2]),  # duplicates count once -> 0
        np.array([0, 3]),  # 0 beats 3 -> 0
        np.array([3, 1, 0, 4]),  # 1 and 4 beat 0 -> 2
    ]
    assert candidate_ranks(users, ITEMS, targets, cands).tolist() == [0, 1, 0, 0, 2]


def test_candidate_ranks_agree_with_full_ranks_on_the_whole_catalogue():
    g = torch.Generator().manual_seed(1)
    items = torch.randint(-2, 3, (17, 4), generator=g).float()
    users = torch.randint(-2, 3, (9, 4), generator=g).float()
    targets = np.random.default_rng(1).integers(0, 17, size=9)
    everything = [np.arange(17)] * 9
    assert (
        candidate_ranks(users, items, targets, everything).tolist()
        == full_ranks(users, items, targets).tolist()
    )


USERS = {"u1": 0, "u2": 1}
ITEM_IDS = {"a": 0, "b": 1, "c": 2}


def write(tmp_path, text: str):
    path = tmp_path / "cands.tsv"
    path.write_text(text, encoding="utf-8")
    return path


def test_read_candidates_parses_lists(tmp_path):
    path = write(tmp_path, "u1\ta b\n\nu2\tc  a\n")  # blank lines and repeated spaces are fine
    out = read_candidates(path, USERS, ITEM_IDS)
    assert {u: v.tolist() for u, v in out.items()} == {0: [0, 1], 1: [2, 0]}


@pytest.mark.parametrize(
    "text,where,problem",
    [
        ("u1\ta b\nnobody\ta\n", ":2:1:", "unknown user id 'nobody'"),
        ("u1\ta b\nu2\tb\nu1\ta zz\n", ":3:", "unknown item id 'zz'"),
        ("u1 a b\n", ":1:", "no tab after the user id"),
        ("u1\ta\nu2\ta\nu2 b\n", ":3:", "no tab after the user id"),
        ("u1\t  \n", ":1:", "has no candidates"),
        ("u1\ta\nu1\tb\n", ":2:", "listed twice"),
        ("\n\n", ":1:", "lists no users"),
    ],
)
def test_read_candidates_errors_name_file_and_line(tmp_path, text, where, problem):
    path = write(tmp_path, text)
    with pytest.raises(CrossrecError) as info:
        read_candidates(path, USERS, ITEM_IDS)
    msg = str(info.value)
    assert msg.startswith(f"error: {path}{where} ")
    assert problem in msg
    assert "\n" not in msg


def test_read_candidates_missing_file(tmp_path):
    with pytest.raises(CrossrecError, match="file does not exist") as info:
        read_candidates(tmp_path / "nope.tsv", USERS, ITEM_IDS)
    assert str(tmp_path / "nope.tsv") in str(info.value)


# ----- evaluate_split with candidate lists ------------------------------------------------------


def tiny_split() -> Split:
    # users 0 and 1; valid targets 0 and 3, test targets 2 and 4
    valid = EvalSet(np.array([0, 1]), [np.array([3]), np.array([0])], np.array([0, 3]))
    test = EvalSet(np.array([0, 1]), [np.array([3, 0]), np.array([0, 3])], np.array([2, 4]))
    return Split(np.array([0, 1]), [np.array([3]), np.array([0])], valid, test, "leave-one-out")


def constant_users(ev: EvalSet) -> torch.Tensor:
    return torch.ones(len(ev), 1)


def test_evaluate_split_ranks_test_within_lists_and_valid_in_full():
    out = evaluate_split(
        constant_users,
        ITEMS,
        tiny_split(),
        [1, 3],
        candidates={0: np.array([0, 2, 3]), 1: np.array([4, 0])},
    )
    # test within lists: user 0's item 2 beats 0 and 3 -> rank 0; user 1's item 4 beats 0 -> 0
    assert out["test"]["recall@1"] == 1.0 and out["test"]["examples"] == 2
    # valid over the full catalogue: item 0 is 4th (rank 3), item 3 is 5th (rank 4) -> none in top 3
    assert out["valid"]["recall@3"] == 0.0 and out["valid"]["examples"] == 2


def test_evaluate_split_only_listed_users_are_tested():
    out = evaluate_split(
        constant_users, ITEMS, tiny_split(), [1], candidates={1: np.array([0, 1, 4])}
    )
    # user 1 only: item 4 ties with 1, which comes first -> rank 1
    assert out["test"]["examples"] == 1 and out["test"]["mrr@1"] == 0.0


def test_evaluate_split_candidates_missing_the_target_is_an_error():
    cands = {0: np.array([0, 2, 3]), 1: np.array([0, 1, 3])}  # user 1's test item 4 is missing
    with pytest.raises(CrossrecError) as info:
        evaluate_split(
            constant_users, ITEMS, tiny_split(), [1], candidates=cands, candidates_source="c.tsv"
        )
    msg = str(info.value)
    assert msg.startswith("error: c.tsv: ") and "miss the test item" in msg


def test_evaluate_split_listed_user_without_test_example_is_an_error():
    cands = {0: np.array([2]), 7: np.array([1])}
    with pytest.raises(CrossrecError, match="no test example"):
        evaluate_split(
            constant_users, ITEMS, tiny_split(), [1], candidates=cands, candidates_source="c.tsv"
        )


def test_early_stopping_ranks_the_validation_split_only():
    """parts=("valid",): the model never scores a test example while training."""
    seen: list[int] = []

    def users(ev: EvalSet) -> torch.Tensor:
        seen.append(int(ev.targets.sum()))
        return torch.ones(len(ev), 1)

    out = evaluate_split(users, ITEMS, tiny_split(), [1, 3], parts=("valid",))
    assert set(out) == {"valid"} and seen == [0 + 3]  # valid targets 0 and 3 only
    assert out["valid"] == evaluate_split(constant_users, ITEMS, tiny_split(), [1, 3])["valid"]


def test_valid_users_ranks_a_fixed_seeded_sample_of_validation_examples():
    """eval.valid_users=N: early stopping ranks the same N validation examples at every epoch."""
    n = 40
    split = Split(np.arange(n), [np.array([0, 1])] * n,
                  EvalSet(np.arange(n), [np.array([0])] * n, np.arange(n) % 5),
                  EvalSet(np.arange(n), [np.array([0])] * n, np.arange(n) % 5), "leave-one-out")
    seen: list[list[int]] = []

    def users(ev: EvalSet) -> torch.Tensor:
        seen.append(ev.users.tolist())
        return torch.ones(len(ev), 1)

    a = evaluate_split(users, ITEMS, split, [1, 3], parts=("valid",), valid_users=7, seed=3)
    b = evaluate_split(users, ITEMS, split, [1, 3], parts=("valid",), valid_users=7, seed=3)
    evaluate_split(users, ITEMS, split, [1, 3], parts=("valid",), valid_users=7, seed=4)
    assert a == b and a["valid"]["examples"] == 7
    assert seen[0] == seen[1] and seen[0] == sorted(seen[0]) and len(set(seen[0])) == 7
    assert seen[2] != seen[0]  # another seed, another sample
    # the sample's metrics are the metrics of exactly those examples: only target item 1 ranks first
    assert a["valid"]["recall@1"] == pytest.approx(float(np.mean(split.valid.targets[seen[0]] == 1)))
    # a sample at least as large as the split is the whole split
    full = evaluate_split(constant_users, ITEMS, split, [1, 3], parts=("valid",))
    assert evaluate_split(constant_users, ITEMS, split, [1, 3], parts=("valid",), valid_users=n) == full


@pytest.mark.parametrize("k", [1, 3, 23, 40])
def test_top_items_are_sorted_by_score_then_item_order(k):
    """top_items against a brute-force sort by (-score, item index), with many ties, seen items
    removed, users left with fewer than k items, and small user chunks."""
    from crossrec_cli.evaluation.ranking import top_items

    g = torch.Generator().manual_seed(k)
    items = torch.randint(-2, 3, (23, 2), generator=g).float()
    users = torch.randint(-2, 3, (13, 2), generator=g).float()
    rng = np.random.default_rng(k)
    exclude = [rng.choice(23, size=int(rng.integers(0, 24)), replace=False) for _ in range(13)]
    idx, val = top_items(users, items, k, exclude, user_chunk=4)
    scores = (users.double() @ items.double().T).tolist()
    for i in range(13):
        keep = sorted((j for j in range(23) if j not in set(exclude[i].tolist())), key=lambda j: (-scores[i][j], j))[:k]
        assert idx[i].tolist() == keep + [-1] * (k - len(keep))
        assert val[i, : len(keep)].tolist() == [scores[i][j] for j in keep]
        assert np.isneginf(val[i, len(keep):]).all()
