"""Metrics: the worked example of docs/evaluation.md, slow oracles, brute-force tie averages, the CLI."""
import itertools
import json
import math
import subprocess
import sys

import numpy as np
import pytest
import scipy.io as sio
import torch

from utils.metrics import (
    evaluate_codes,
    hamming_distance,
    map_bounds,
    mean_average_precision,
    ndcg_at_k,
    pr_curve_by_radius,
    precision_at_n,
    rank_stats,
    tie_aware_map,
    to_binary_codes,
    topn_grid,
    topn_precision_curve,
)

# ---------------------------------------------------------------- the worked example (docs/evaluation.md)
Q = np.array([[1, 1, 1, 1]])
QL = np.array([[1, 0, 1]])
R = np.array([[-1, 1, 1, 1], [1, 1, 1, 1], [-1, -1, 1, 1], [1, -1, 1, 1], [-1, -1, -1, 1], [1, 1, -1, 1]])
RL = np.array([[0, 1, 0], [0, 1, 0], [1, 0, 0], [1, 0, 1], [0, 1, 0], [0, 0, 1]])


def test_example_distances_and_map():
    assert hamming_distance(Q, R).tolist() == [[1, 0, 2, 1, 3, 1]]
    assert mean_average_precision(Q, R, QL, RL) == pytest.approx(43 / 90, abs=1e-12)
    assert tie_aware_map(Q, R, QL, RL) == pytest.approx(8 / 15, abs=1e-12)
    assert map_bounds(Q, R, QL, RL) == pytest.approx((53 / 90, 43 / 90), abs=1e-12)


def test_example_map_at_k_variants():
    repo = [mean_average_precision(Q, R, QL, RL, k=k) for k in (1, 2, 3)]
    assert repo == pytest.approx([1 / 3, 0.416667, 0.477778], abs=1e-6)
    truncated = [mean_average_precision(Q, R, QL, RL, k=k, variant="truncated") for k in (1, 2, 3, 4, 6)]
    assert truncated == pytest.approx([0, 0, 1 / 3, 0.416667, 0.477778], abs=1e-6)


def test_example_precision_recall_and_ndcg():
    assert precision_at_n(Q, R, QL, RL, range(1, 7)) == pytest.approx([0, 0, 1 / 3, 0.5, 0.6, 0.5], abs=1e-12)
    assert precision_at_n(Q, R, QL, RL, [3], tie_aware=True) == pytest.approx([4 / 9], abs=1e-12)
    precision, recall = pr_curve_by_radius(Q, R, QL, RL)
    assert precision == pytest.approx([0, 0.5, 0.6, 0.5, 0.5], abs=1e-12)
    assert recall == pytest.approx([0, 2 / 3, 1, 1, 1], abs=1e-12)
    assert ndcg_at_k(Q, R, QL, RL) == pytest.approx(0.561019, abs=1e-6)
    assert ndcg_at_k(Q, R, QL, RL, tie_aware=True) == pytest.approx(0.597685, abs=1e-6)
    assert ndcg_at_k(Q, R, QL, RL, k=3) == pytest.approx(0.363114, abs=1e-6)
    assert ndcg_at_k(Q, R, QL, RL, k=3, tie_aware=True) == pytest.approx(0.365028, abs=1e-6)


def test_example_edge_cases():
    two = np.array([[1, 1, 1, 1], [1, 1, 1, 1]])
    assert mean_average_precision(two, R, np.array([[1, 0, 1], [0, 0, 0]]), RL) == pytest.approx(0.238889, abs=1e-6)
    tied = np.ones((4, 4))
    tied_labels = np.array([[1, 0, 0], [0, 1, 0], [1, 0, 0], [0, 1, 0]])
    assert tie_aware_map(Q, tied, QL, tied_labels) == pytest.approx(49 / 72, abs=1e-12)
    assert 0.416667 - 1e-6 <= mean_average_precision(Q, tied, QL, tied_labels) <= 1.0


# ---------------------------------------------------------------- oracles
def oracle_ranking(q, r):
    """Database indices per query sorted by (Hamming distance, index), by Python's sort."""
    dist = hamming_distance(q, r)
    return [sorted(range(r.shape[0]), key=lambda j: (dist[i, j], j)) for i in range(q.shape[0])], dist


def oracle_ap(relevance, k=None, variant="none"):
    positions = [p for p, rel in enumerate(relevance, start=1) if rel]
    if variant == "repo":
        positions = positions[: min(k, len(positions))]
    elif variant == "truncated":
        positions = [p for p in positions if p <= k]
    if not positions:
        return None if variant == "truncated" else 0.0
    return sum(t / p for t, p in enumerate(positions, start=1)) / len(positions)


def oracle_dcg(gains_in_order, k):
    return sum((2.0 ** g - 1) / math.log2(r + 1) for r, g in enumerate(gains_in_order[:k], start=1))


def random_case(seed, n_queries=12, n_items=70, bits=16, classes=5):
    rng = np.random.default_rng(seed)
    q = rng.choice([-1.0, 1.0], size=(n_queries, bits))
    r = rng.choice([-1.0, 1.0], size=(n_items, bits))
    r[: n_items // 3] = r[0]  # a block of identical database codes: many ties
    q[1] = r[0]
    ql = (rng.random((n_queries, classes)) < 0.3).astype(float)
    ql[0] = 0  # a query without any relevant item
    rl = (rng.random((n_items, classes)) < 0.3).astype(float)
    return q, r, ql, rl


CASES = [(seed, bits) for seed in range(3) for bits in (8, 16, 64)]


@pytest.mark.parametrize("seed, bits", CASES)
def test_ranking_metrics_match_oracles(seed, bits):
    q, r, ql, rl = random_case(seed, bits=bits)
    ranking, _ = oracle_ranking(q, r)
    relevant = (ql @ rl.T) > 0
    gains = (ql @ rl.T).astype(int)
    ordered = [relevant[i, ranking[i]] for i in range(len(q))]
    assert mean_average_precision(q, r, ql, rl) == pytest.approx(np.mean([oracle_ap(o) for o in ordered]), abs=1e-12)
    for k in (1, 5, 30):
        repo = np.mean([oracle_ap(o, k, "repo") for o in ordered])
        assert mean_average_precision(q, r, ql, rl, k=k) == pytest.approx(repo, abs=1e-12)
        truncated = [oracle_ap(o, k, "truncated") for o in ordered]
        assert mean_average_precision(q, r, ql, rl, k=k, variant="truncated") == pytest.approx(
            np.mean([t or 0.0 for t in truncated]), abs=1e-12)
        kept = [t for t in truncated if t is not None]
        assert mean_average_precision(q, r, ql, rl, k=k, variant="truncated_skip_empty") == pytest.approx(
            np.mean(kept), abs=1e-12)
    ns = [1, 7, 25, 70]
    expected = [np.mean([o[:n].sum() / n for o in ordered]) for n in ns]
    assert precision_at_n(q, r, ql, rl, ns) == pytest.approx(expected, abs=1e-12)
    for k in (3, 20, None):
        cut = k or r.shape[0]
        per_query = []
        for i in range(len(q)):
            ideal = oracle_dcg(sorted(gains[i], reverse=True), cut)
            per_query.append(oracle_dcg(list(gains[i, ranking[i]]), cut) / ideal if ideal > 0 else 0.0)
        assert ndcg_at_k(q, r, ql, rl, k=k) == pytest.approx(np.mean(per_query), abs=1e-12)


@pytest.mark.parametrize("seed, bits", CASES[:4])
def test_pr_by_radius_matches_oracle(seed, bits):
    q, r, ql, rl = random_case(seed, bits=bits)
    dist = hamming_distance(q, r)
    relevant = (ql @ rl.T) > 0
    macro_p, macro_r, micro = [], [], []
    for radius in range(bits + 1):
        inside = dist <= radius
        hits = (inside & relevant).sum(1)
        counts = inside.sum(1)
        macro_p.append(np.mean([h / c if c else 0.0 for h, c in zip(hits, counts)]))
        macro_r.append(np.mean([h / n if n else 0.0 for h, n in zip(hits, relevant.sum(1))]))
        micro.append((hits.sum() / max(counts.sum(), 1), hits.sum() / relevant.sum()))
    precision, recall = pr_curve_by_radius(q, r, ql, rl)
    assert precision == pytest.approx(macro_p, abs=1e-12) and recall == pytest.approx(macro_r, abs=1e-12)
    precision, recall = pr_curve_by_radius(q, r, ql, rl, aggregate="micro")
    assert precision == pytest.approx([m[0] for m in micro], abs=1e-12)
    assert recall == pytest.approx([m[1] for m in micro], abs=1e-12)


def tie_orders(q, r):
    """Every ranking of one query that sorts by distance (all orders within tied groups)."""
    dist = hamming_distance(q, r)[0]
    groups = [list(np.flatnonzero(dist == d)) for d in sorted(set(dist.tolist()))]
    for parts in itertools.product(*(itertools.permutations(g) for g in groups)):
        yield [j for part in parts for j in part]


@pytest.mark.parametrize("seed", range(6))
def test_tie_aware_metrics_equal_brute_force_average(seed):
    rng = np.random.default_rng(100 + seed)
    r = rng.choice([-1.0, 1.0], size=(7, 3))
    q = rng.choice([-1.0, 1.0], size=(1, 3))
    ql = np.array([[1.0, 0.0, 1.0]])
    rl = (rng.random((7, 3)) < 0.5).astype(float)
    rl[0] = [1, 1, 0]
    relevant = ((ql @ rl.T) > 0)[0]
    gains = (ql @ rl.T)[0].astype(int)
    orders = list(tie_orders(q, r))
    aps = [oracle_ap(relevant[o]) for o in orders]
    assert tie_aware_map(q, r, ql, rl) == pytest.approx(np.mean(aps), abs=1e-12)
    assert map_bounds(q, r, ql, rl) == pytest.approx((max(aps), min(aps)), abs=1e-12)
    assert precision_at_n(q, r, ql, rl, [3], tie_aware=True)[0] == pytest.approx(
        np.mean([relevant[o][:3].mean() for o in orders]), abs=1e-12)
    ideal = oracle_dcg(sorted(gains, reverse=True), 4)
    if ideal > 0:
        expected = np.mean([oracle_dcg(list(gains[o]), 4) for o in orders]) / ideal
        assert ndcg_at_k(q, r, ql, rl, k=4, tie_aware=True) == pytest.approx(expected, abs=1e-12)


def test_chunking_dtypes_and_tensors_do_not_change_results():
    q, r, ql, rl = random_case(7, bits=16)
    expected = mean_average_precision(q, r, ql, rl)
    assert mean_average_precision(q > 0, r > 0, ql, rl) == expected  # bool bits
    assert mean_average_precision((q > 0).astype(np.uint8), (r > 0).astype(int), ql.astype(int), rl) == expected
    assert mean_average_precision(torch.tensor(q), torch.tensor(r), torch.tensor(ql), torch.tensor(rl)) == expected
    hamming = lambda a, b: hamming_distance(a, b)  # noqa: E731  (the generic, chunked path)
    for chunk in (1, 5, 100):
        stats = rank_stats(q, r, ql, rl, distance=hamming, chunk_size=chunk)
        assert float(stats.ap.mean()) == pytest.approx(expected, abs=1e-15)


def test_custom_distance_hook_for_multi_embedding_codes():
    """Codes (N, n, K) ranked by the best-matching pair of embeddings."""
    rng = np.random.default_rng(3)
    q, r = rng.choice([-1.0, 1.0], size=(5, 2, 8)), rng.choice([-1.0, 1.0], size=(30, 2, 8))
    ql, rl = (rng.random((5, 4)) < 0.4).astype(float), (rng.random((30, 4)) < 0.4).astype(float)

    def best_pair(a, b):
        inner = np.einsum("qak,rbk->qrab", a, b).max(axis=(2, 3))
        return np.rint(0.5 * (a.shape[-1] - inner)).astype(int)

    dist = best_pair(q, r)
    relevant = (ql @ rl.T) > 0
    expected = np.mean([oracle_ap(relevant[i, sorted(range(30), key=lambda j: (dist[i, j], j))])
                        for i in range(5)])
    assert mean_average_precision(q, r, ql, rl, distance=best_pair) == pytest.approx(expected, abs=1e-12)
    assert evaluate_codes(q, q, r, r, ql, rl, distance=best_pair)["i2t"]["mAP"] == pytest.approx(expected, abs=1e-12)
    with pytest.raises(ValueError, match="custom distances"):
        mean_average_precision(q, r, ql, rl, distance=lambda a, b: np.full((len(a), len(b)), 99))


def test_sign_zero_maps_to_plus_one():
    assert to_binary_codes(np.array([-0.5, 0.0, 2.0])).tolist() == [-1, 1, 1]
    out = to_binary_codes(torch.tensor([[0.0, -1e-9]]))
    assert out.tolist() == [[1.0, -1.0]] and torch.is_tensor(out)


def test_evaluate_codes_directions_and_topn_curve():
    q, r, ql, rl = random_case(1, bits=16)
    q_txt, r_txt = -q, -r
    results = evaluate_codes(q, q_txt, r, r_txt, ql, rl, map_k=10)
    assert set(results) == {"i2t", "t2i", "i2i", "t2t"}
    assert results["i2i"]["mAP"] == pytest.approx(mean_average_precision(q, r, ql, rl), abs=1e-15)
    assert results["i2t"]["mAP"] == pytest.approx(mean_average_precision(q, r_txt, ql, rl), abs=1e-15)
    assert results["t2t"]["mAP@10"] == pytest.approx(mean_average_precision(q_txt, r_txt, ql, rl, k=10), abs=1e-15)
    assert {"mAP_tie", "mAP_optimistic", "mAP_pessimistic", "P@H<=2", "P@10", "NDCG@70"} <= set(results["i2t"])
    assert topn_grid(10_000)[[0, -1]].tolist() == [200, 10_000] and len(topn_grid(10_000)) == 50
    ns, curve = topn_precision_curve(q, r, ql, rl, ns=[5, 10])
    assert ns.tolist() == [5, 10] and curve == pytest.approx(precision_at_n(q, r, ql, rl, [5, 10]))


def write_codes(path, **overrides):
    q, r, ql, rl = random_case(2, bits=16)
    arrays = {"q_img": q, "q_txt": -q, "r_img": r, "r_txt": -r, "q_l": ql.astype(np.int64), "r_l": rl}
    arrays.update(overrides)
    sio.savemat(path, arrays)
    return arrays


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "utils.metrics", *map(str, args)], capture_output=True, text=True)


def test_cli_json_and_table(tmp_path):
    arrays = write_codes(tmp_path / "codes.mat")
    done = run_cli(tmp_path / "codes.mat", "--json", "--map-k", "20")
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout)
    expected = mean_average_precision(arrays["q_img"], arrays["r_txt"], arrays["q_l"], arrays["r_l"])
    assert results["i2t"]["mAP"] == pytest.approx(expected, abs=1e-12)
    assert "mAP@20_truncated" in results["t2i"]
    table = run_cli(tmp_path / "codes.mat")
    assert table.returncode == 0 and "I->T" in table.stdout and "mAP_tie" in table.stdout


@pytest.mark.parametrize("problem, message", [("missing", "not found"), ("key", "lacks r_txt"),
                                              ("shape", "differ"), ("strings", "r_l (<U")])
def test_cli_bad_input_is_one_line_exit_2(tmp_path, problem, message):
    path = tmp_path / "codes.mat"
    if problem == "key":
        arrays = write_codes(path)
        del arrays["r_txt"]
        sio.savemat(path, arrays)
    elif problem == "shape":
        write_codes(path, q_txt=np.ones((3, 16)))
    elif problem == "strings":
        write_codes(path, r_l=np.array(["dog", "cat"]))
    done = run_cli(path)
    assert done.returncode == 2
    assert message in done.stderr and "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1
