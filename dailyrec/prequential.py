"""Prequential (predict-then-train) evaluation of a pass: the model serving when the pass's hours
arrive scores them BEFORE it trains on them (Dawid 1984, "the prequential approach"; the per-pass
AUC of PaddleRec's online trainer). Every figure is out-of-sample by construction.

For the retrieval model (:func:`score_pass`):

* ``recall_at_<K>`` (``K = passes.prequential_k``): for every user who clicked in the pass, the
  user tower on the context of the user's first click in the pass, the top K of the whole pass
  catalog by inner product (:func:`dailyrec.metrics.top_k`); truth = the user's distinct clicked
  items (clicks outside the catalog stay in the denominator). No item is excluded as seen.
* ``new_item_recall_at_<K>``: the same top K, truth restricted to clicked items born on ``D``
  (``item_created_dt == D``), over the users with such a click (``None`` without any).
* ``auc``: the pointwise score (user vector · item vector) of every impression of the pass vs its
  click (Mann-Whitney, :func:`dailyrec.ranking.evaluation.auc`); impressions of items outside the
  catalog are left out (counted).
* ``popularity_recall_at_<K>`` / ``new_item_popularity_recall_at_<K>``: the same truth against the
  recent-popularity list a pass competes with: the K catalog items with the most clicks in the
  :data:`POPULARITY_HOURS` hours before the pass (hours of ``D-1`` and ``D`` whose partitions are
  complete, :func:`recent_clicks`; ties by ``item_id``), the same list for every user.
* counts (``users``, ``clicks``, ``impressions``...) and the ``model_version`` scored.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from dailyrec import sql
from dailyrec.contract import ITEM_SCHEMA
from dailyrec.events import open_events, read_snapshot
from dailyrec.metrics import dot_scorer, metrics_from_topk, top_k
from dailyrec.passes import require_hours
from dailyrec.sampling.arrays import codes
from dailyrec.sampling.select import feature_names
from dailyrec.step import StepRun

log = logging.getLogger("dailyrec.prequential")

SCORE_BLOCK = 1 << 24
"""Upper bound of the score-matrix entries (users x catalog items) of one top-K batch (64 MB of float32)."""
POPULARITY_HOURS = 24
"""Hours of clicks before a pass that its popularity baseline counts."""


def recent_clicks(store: Any, cur_date: str, first_hour: int, catalog_ids: pa.ChunkedArray | pa.Array
                  ) -> tuple[np.ndarray, int]:
    """``(clicks int64[I], hours read)``: per catalog item (``catalog_ids``, in catalog order), its clicks in
    the :data:`POPULARITY_HOURS` log hours before hour ``first_hour`` of ``cur_date`` (``D-1`` from hour
    ``first_hour``, then ``D`` up to ``first_hour - 1``). Hours without ``_SUCCESS`` are skipped (the
    baseline counts what was there); clicks on items outside the catalog are dropped."""
    import pyarrow.parquet as pq

    from dailyrec.dates import previous
    from dailyrec.storage import SUCCESS_MARKER

    prev = previous(cur_date)
    hours = [(prev, h) for h in range(first_hour, 24)] + [(cur_date, h) for h in range(first_hour)]
    files, read = [], 0
    for day, h in hours[-POPULARITY_HOURS:]:
        part = store.partition("logs", day, h)
        if store.exists(f"{part}/{SUCCESS_MARKER}"):
            files += store.list_files(part, ".parquet")
            read += 1
    counts = np.zeros(len(catalog_ids), np.int64)
    if files:
        t = pq.read_table(files, columns=["item_id", "click"], filesystem=store.fs)
        code = codes(t.column("item_id"), catalog_ids)
        click = np.asarray(pc.fill_null(t.column("click"), 0).to_numpy(zero_copy_only=False), np.int64)
        keep = (code >= 0) & (click > 0)
        counts = np.bincount(code[keep], weights=click[keep], minlength=len(catalog_ids)).astype(np.int64)
    return counts, read


def pass_impressions(run: StepRun, hours: list[int], catalog: pa.Table) -> pa.Table:
    """Every impression of the pass's hours with user features, context, ``item_id`` and ``click``
    (``sql/pass_impressions.sql``), by ``event_time`` then ``request_id``."""
    user_feats, context, _ = feature_names(run.cfg, catalog)
    files = require_hours(run.store, run.cur_date, hours)
    users = read_snapshot(run.store, "users", run.cur_date)
    con = open_events(run.store, files, users, catalog.select(ITEM_SCHEMA.names), run.cfg.sql,
                      app_name="prequential")
    try:
        return sql.query_arrow(con, "pass_impressions",
                               {"cur_date": run.cur_date, "first_hour": hours[0], "last_hour": hours[-1]},
                               {"user_features": user_feats, "context": context})
    finally:
        con.close()


def _truth(user_code: np.ndarray, item_code: np.ndarray, item_ids: np.ndarray, n_users: int,
           keep: np.ndarray | None = None) -> tuple[list[np.ndarray], list[int]]:
    """Per user: the catalog codes of the distinct clicked items (``keep``: only those clicks) and
    the number of distinct clicked item ids (catalog or not)."""
    sel = np.ones(len(user_code), bool) if keep is None else keep
    truth: list[set[int]] = [set() for _ in range(n_users)]
    n_ids: list[set[str]] = [set() for _ in range(n_users)]
    for u, c, i in zip(user_code[sel], item_code[sel], item_ids[sel]):
        n_ids[u].add(i)
        if c >= 0:
            truth[u].add(int(c))
    return [np.array(sorted(t), np.int64) for t in truth], [len(s) for s in n_ids]


def score_pass(run: StepRun, hours: list[int], catalog: pa.Table, model_dir: str, k: int) -> dict[str, Any]:
    """The metrics of the model at ``model_dir`` (``user_tower/``, ``item_tower/``, ``model/vocabularies.json``)
    on the pass's impressions; see the module doc. Raises ``MissingHourError`` for an incomplete hour."""
    from dailyrec.embeddings import tower_vectors
    from dailyrec.ranking.evaluation import auc

    store, specs = run.store, run.cfg.features.spec
    with run.timer.step("sql_impressions"):
        imp = pass_impressions(run, hours, catalog)
    vocab_path = f"{model_dir}/model/vocabularies.json"
    vocabs = store.read_json(vocab_path) if store.exists(vocab_path) else None
    with run.timer.step("item_tower"):
        v = tower_vectors(f"{model_dir}/item_tower", catalog, specs, vocabs)
    click = np.asarray(pc.fill_null(imp.column("click"), 0).to_numpy(zero_copy_only=False), np.int64)
    item_code = codes(imp.column("item_id"), catalog.column("item_id"))
    out: dict[str, Any] = {"impressions": imp.num_rows, "clicks": int(click.sum()), "catalog": catalog.num_rows,
                           "impressions_outside_catalog": int((item_code < 0).sum()), "k": k}
    if imp.num_rows == 0:
        return out | {f"recall_at_{k}": None, f"new_item_recall_at_{k}": None, "auc": None, "users": 0,
                      "new_item_users": 0, "new_item_clicks": 0, f"popularity_recall_at_{k}": None,
                      f"new_item_popularity_recall_at_{k}": None}
    with run.timer.step("user_tower"):
        u = tower_vectors(f"{model_dir}/user_tower", imp, specs, vocabs)
    with run.timer.step("auc"):
        inside = item_code >= 0
        scores = np.einsum("ij,ij->i", u[inside], v[item_code[inside]])
        out["auc"] = auc(click[inside], scores)
    clicked = np.flatnonzero(click > 0)
    user_ids = np.asarray(imp.column("user_id").to_pylist(), dtype=object)
    item_ids = np.asarray(imp.column("item_id").to_pylist(), dtype=object)
    users, first = np.unique(user_ids[clicked], return_index=True)  # sorted ids; first click (rows are by time)
    out["users"] = len(users)
    created = catalog.column("item_created_dt").to_pylist()
    born_today = np.array([c is not None and c.isoformat() == run.cur_date for c in created], bool)
    is_new = np.array([c >= 0 and born_today[c] for c in item_code[clicked]], bool)
    out["new_item_clicks"] = int(is_new.sum())
    out["new_items_in_catalog"] = int(born_today.sum())
    if len(users) == 0:
        return out | {f"recall_at_{k}": None, f"new_item_recall_at_{k}": None, "new_item_users": 0,
                      f"popularity_recall_at_{k}": None, f"new_item_popularity_recall_at_{k}": None}
    ucode = np.searchsorted(users, user_ids[clicked])
    with run.timer.step("top_k"):
        rows_per_batch = max(1, min(1024, SCORE_BLOCK // max(1, len(v))))  # bounded score matrix
        tk = top_k(dot_scorer(u[clicked[first]], v), len(users), k, batch_size=rows_per_batch)
    truth, n_truth = _truth(ucode, item_code[clicked], item_ids[clicked], len(users))
    out[f"recall_at_{k}"] = metrics_from_topk(tk, truth, n_truth, [k])[f"recall_at_{k}"]
    nt, nn = _truth(ucode, item_code[clicked], item_ids[clicked], len(users), keep=is_new)
    rows = np.flatnonzero(np.asarray(nn) > 0)
    out["new_item_users"] = len(rows)
    out[f"new_item_recall_at_{k}"] = (metrics_from_topk(tk[rows], [nt[r] for r in rows], [nn[r] for r in rows], [k])
                                      [f"recall_at_{k}"] if len(rows) else None)
    with run.timer.step("popularity"):  # the same truth against the recent-popularity list
        pop, out["popularity_hours"] = recent_clicks(store, run.cur_date, hours[0], catalog.column("item_id"))
        top = np.lexsort((np.arange(len(pop)), -pop))[:k]  # most clicks first, ties by item_id (catalog order)
        tp = np.broadcast_to(top, (len(users), len(top)))
        out[f"popularity_recall_at_{k}"] = metrics_from_topk(tp, truth, n_truth, [k])[f"recall_at_{k}"]
        out[f"new_item_popularity_recall_at_{k}"] = (metrics_from_topk(
            tp[rows], [nt[r] for r in rows], [nn[r] for r in rows], [k])[f"recall_at_{k}"] if len(rows) else None)
    return out
