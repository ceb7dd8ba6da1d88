"""Paired (same users) per-user recall@50 of the history-on vs the history-off model of each demo day,
scored as the gate scores them (beta 0 was chosen on every day in both runs, so plain u.v), on the
off run's holdout (both runs' samples hold the same holdout and seen sets: same logs, same seed)."""
import json, sys
import numpy as np
from dailyrec.config import load_config
from dailyrec.embeddings import tower_vectors
from dailyrec.history import rows_with_history
from dailyrec.metrics import dot_scorer, holdout_eval_set, paired_bootstrap, per_user_metrics, top_k
from dailyrec.storage import open_store

out = json.load(open(sys.argv[1]))
for day in ("2026-11-01", "2026-11-02", "2026-11-03"):
    per = {}
    for mode in ("off", "on"):
        cfg = load_config(overrides={"storage.data_root": f"/tmp/uh-demo/{mode}/data",
                                     "features.user_history.enabled": mode == "on"})
        store = open_store(cfg)
        es = holdout_eval_set(store, cfg, day)
        mdir = f"{store.partition('models/two_tower', day)}"
        rows = rows_with_history(es["user_rows"], store, cfg, day, as_of="holdout")
        u = tower_vectors(f"{mdir}/user_tower", rows, cfg.features.spec)
        v = tower_vectors(f"{mdir}/item_tower", es["catalog"], cfg.features.spec)
        tk = top_k(dot_scorer(u, v), len(es["truth"]), 50, es["exclude"])
        per[mode] = (list(es["users"]), per_user_metrics(tk, es["truth"], es["n_truth"], [50])["recall_at_50"])
    assert per["on"][0] == per["off"][0]
    on, off = per["on"][1], per["off"][1]
    out["days"][day]["paired_on_minus_off"] = paired_bootstrap(on, off, 10_000, 0.95, [13, 50])
    out["days"][day]["paired_on_minus_off"]["means"] = {"on": round(float(on.mean()), 4), "off": round(float(off.mean()), 4)}
    print(day, json.dumps(out["days"][day]["paired_on_minus_off"]), flush=True)
out["paired_note"] = "paired_on_minus_off: bench/tuning/demo_history_paired.py (per-user recall@50, u.v as the gate scored with beta 0; 10,000 bootstrap resamples, 95%)"
json.dump(out, open(sys.argv[1], "w"), indent=2)
