"""A check outside the product: per-user category share (smoothed, from the run's training positives) x
popularity (the gate's popularity scores) on the gate's holdout of a day, recall@50 printed per exponent.
    ./dev python bench/tuning/demo_category_share.py DATA_ROOT YYYY-MM-DD"""
import sys

import numpy as np
import pyarrow.parquet as pq

from dailyrec.config import load_config
from dailyrec.storage import open_store
from dailyrec.metrics import holdout_eval_set, top_k, metrics_from_topk, popularity_scores
root, day = sys.argv[1], sys.argv[2]
cfg = load_config(overrides={"storage.data_root": root})
store = open_store(cfg)
es = holdout_eval_set(store, cfg, day)
cat = es["catalog"]; ids = cat["item_id"].to_pylist(); pos = {v: i for i, v in enumerate(ids)}
cats = cat["item_category"].to_pylist(); cu = sorted(set(cats)); ci = np.array([cu.index(c) for c in cats])
pop, _ = popularity_scores(cat, es["holdout_table"], day)
pop = np.asarray(pop, np.float64)
tr = pq.read_table(f"{root}/samples/dt={day}/train.parquet", columns=["user_id", "item_id", "label"]).to_pandas()
tr = tr[tr.label == 1]
users = list(es["users"]); uidx = {u: k for k, u in enumerate(users)}
C = np.ones((len(users), len(cu))) * 0.5
for u, it in zip(tr.user_id, tr.item_id):
    if u in uidx and it in pos: C[uidx[u], ci[pos[it]]] += 1
C /= C.sum(1, keepdims=True)
for a in (0.5, 1.0, 2.0):
    def scorer(rows, a=a):
        return (np.log(C[rows][:, ci]) * a + np.log1p(pop)[None, :]).astype(np.float32)
    tk = top_k(scorer, len(users), 50, es["exclude"])
    print(day, "cat-pref^%.1f x pop" % a, round(metrics_from_topk(tk, es["truth"], es["n_truth"], [50])["recall_at_50"], 4))
