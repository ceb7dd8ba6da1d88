"""Top-K metrics against hand computations."""

from __future__ import annotations

import numpy as np
import pytest

from dailyrec.metrics import constant_scorer, dot_scorer, evaluate_ranker, metrics_from_topk, top_k


def test_hand_computed_example():
    # 2 users, 5 candidates. User 0's truth {1, 3} plus one non-candidate item (denominator 3).
    scores = np.array([[0.9, 0.8, 0.1, 0.7, 0.0],
                       [0.0, 0.1, 0.2, 0.3, 0.4]], dtype=np.float32)
    truth = [np.array([1, 3]), np.array([0])]
    n_truth = [3, 1]
    exclude = [np.array([0]), np.array([], dtype=np.int64)]   # user 0 trained on item 0
    m = evaluate_ranker(lambda rows: scores[rows], truth, n_truth, exclude, ks=[2, 5])
    # user 0 top2 = [1, 3] -> 2 hits / 3; user 1 top2 = [4, 3] -> 0
    assert m["recall_at_2"] == pytest.approx((2 / 3 + 0) / 2)
    assert m["hitrate_at_2"] == pytest.approx(0.5)
    # user 1 ranks item 0 last among 5 -> hit at rank 5 (k=5): recall 1
    assert m["recall_at_5"] == pytest.approx((2 / 3 + 1) / 2)
    idcg0 = 1 + 1 / np.log2(3) + 1 / np.log2(4)
    ndcg0 = (1 + 1 / np.log2(3)) / idcg0
    ndcg1 = (1 / np.log2(6)) / 1.0
    assert m["ndcg_at_5"] == pytest.approx((ndcg0 + ndcg1) / 2)


def test_excluded_items_never_returned():
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(50, 30)).astype(np.float32)
    exclude = [np.array([u % 30, (u + 1) % 30]) for u in range(50)]
    tk = top_k(lambda rows: scores[rows], 50, 10, exclude, batch_size=7)
    for u in range(50):
        assert not set(tk[u]) & set(exclude[u])
        assert list(tk[u]) == [i for i in np.argsort(-scores[u]) if i not in exclude[u]][:10]


def test_constant_and_dot_scorers_agree_with_truth():
    pop = np.array([5, 1, 3], dtype=np.float32)
    tk = top_k(constant_scorer(pop), 4, 2)
    assert (tk == [0, 2]).all()
    u = np.eye(3, dtype=np.float32)
    tk = top_k(dot_scorer(u, u), 3, 1)
    assert list(tk[:, 0]) == [0, 1, 2]
    m = metrics_from_topk(tk, [np.array([0]), np.array([1]), np.array([0])], [1, 1, 1], [1])
    assert m["recall_at_1"] == pytest.approx(2 / 3)
