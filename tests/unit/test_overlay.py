"""dailyrec.publishing.overlay: the base index + a delta chain in memory, against exact search
(real FAISS indexes; no Redis needed)."""

from __future__ import annotations

import numpy as np
import pytest

from dailyrec.ann import clustered_vectors, exact_index, make_index
from dailyrec.publishing.chain import TOMBSTONE
from dailyrec.publishing.overlay import build_overlay, overlay_recall, served_vectors, stored_vectors

N, DIM = 3000, 16


def _chain(vectors: np.ndarray, ids: list[str]) -> dict[str, bytes]:
    rng = np.random.default_rng(1)
    ups = rng.standard_normal((80, DIM)).astype(np.float32)
    ups /= np.linalg.norm(ups, axis=1, keepdims=True)
    merged = {i: ups[n].astype("<f4").tobytes() for n, i in enumerate(ids[:50] + [f"new{j}" for j in range(30)])}
    merged.update({i: TOMBSTONE for i in ids[100:160]})
    merged["never-existed"] = TOMBSTONE
    return merged


@pytest.mark.parametrize("factory", ["Flat", "IVF16,Flat", "HNSW16,Flat", "IVF16,SQ8"])
@pytest.mark.parametrize("selector", [True, False])
def test_overlay_matches_exact_search_over_the_served_items(factory, selector):
    vectors, _ = clustered_vectors(N, DIM, seed=0)
    ids = [f"it{i}" for i in range(N)]
    base = make_index(vectors, factory, nprobe=16)  # nprobe = nlist: the IVF bases are exhaustive
    merged = _chain(vectors, ids)
    index, id_of, to_served = build_overlay(base, np.array(ids, dtype=object), merged, DIM)
    if not selector:  # the fallback for index types without search parameters: over-fetch k + m
        index.params = None
    assert index.ntotal == N - 110 + 80 and len(index.masked) == 110  # 50 replaced + 60 deleted; 80 upserts
    stored = stored_vectors(base)
    assert (stored is None) == (factory == "IVF16,SQ8")
    vecs = served_vectors(stored if stored is not None else vectors, index)
    served_ids = [None] * index.ntotal
    for label, row in enumerate(to_served):
        if row >= 0:
            served_ids[row] = id_of[label]
    assert sorted(served_ids) == sorted(set(ids) - set(ids[100:160]) | {f"new{j}" for j in range(30)})
    q = vecs[::97] + 0.01
    _, exact = exact_index(vecs).search(q, 20)
    _, got = index.search(q, 20)
    assert not np.isin(got, index.masked).any()  # never a deleted item or a replaced base copy
    hits = np.mean([len({served_ids[e] for e in ex} & {id_of[g] for g in gg}) / 20 for ex, gg in zip(exact, got)])
    assert hits >= (0.999 if factory in ("Flat", "IVF16,Flat") else 0.9), hits
    rec = overlay_recall(index, to_served, vecs, 20, 100)
    assert rec["recall_k"] == 20 and rec["queries"] == 100 and rec["recall_at_k"] >= 0.9


def test_fewer_items_than_k_pad_like_faiss():
    vectors, _ = clustered_vectors(5, DIM, seed=0)
    ids = np.array([f"i{j}" for j in range(5)], dtype=object)
    index, _, _ = build_overlay(exact_index(vectors), ids, {"i0": TOMBSTONE, "x": vectors[0].tobytes()}, DIM)
    d, i = index.search(vectors[:2], 8)
    assert d.shape == i.shape == (2, 8) and (i[:, 5:] == -1).all() and np.isneginf(d[:, 5:]).all()
    assert set(i[0, :5].tolist()) == {1, 2, 3, 4, 5}  # 4 base items left, the new one is label 5


@pytest.mark.parametrize("factory", ["Flat", "IVF16,Flat"])
def test_a_base_with_the_popularity_prior_gets_prior_upserts(factory):
    """A base index holding [v, beta log q] (dailyrec.popularity_prior): an upserted item keeps its
    base prior coordinate, a new one gets the smallest (an unclicked item's); queried with [u, 1] the
    overlay returns u.v + beta log q exactly."""
    from dailyrec.popularity_prior import augment_items, augment_queries, log_prior

    vectors, _ = clustered_vectors(N, DIM, seed=2)
    ids = [f"it{i}" for i in range(N)]
    rng = np.random.default_rng(3)
    counts = rng.integers(0, 50, N)
    counts[7] = 0
    prior = 0.3 * log_prior(counts)
    base = make_index(augment_items(vectors, log_prior(counts), 0.3), factory, nprobe=16)
    merged = _chain(vectors, ids)
    index, id_of, _ = build_overlay(base, np.array(ids, dtype=object), merged, DIM)
    assert index.d == DIM + 1
    users = rng.standard_normal((20, DIM)).astype(np.float32)
    scores, labels = index.search(augment_queries(users, index.d), 10)
    for q in range(len(users)):
        for s, lab in zip(scores[q], labels[q]):
            item = id_of[lab]
            v = (np.frombuffer(merged[item], dtype="<f4") if item in merged else vectors[ids.index(item)])
            p = prior[ids.index(item)] if item in ids else prior.min()  # new items: an unclicked item's prior
            assert np.isclose(s, users[q] @ v + p, atol=1e-4), (item, s, users[q] @ v + p)
