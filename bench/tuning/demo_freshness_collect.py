"""Collect the demo ratio tries of bench/tuning/demo_freshness.sh into bench/tuning/demo_freshness.json:
per try and day the gate's recall@50 of the new model and of popularity (eval/two_tower/dt=D/report.json),
their ratio, the gate's paired interval of new - popularity and the beta chosen; for the freshness tries
a paired per-user interval of try - base (same seed, same holdout users; both scored as the gate scores
with beta 0, which every run chose except where noted). Choices were made on the tuning seed (7) only;
seed 42 (the default demo) is reported, not used to choose.
    ./dev python bench/tuning/demo_freshness_collect.py [OUT=/tmp/fr]"""
import json
import subprocess
import sys
from datetime import datetime, timezone

from dailyrec.config import load_config

OUT = sys.argv[1] if len(sys.argv) > 1 else "/tmp/fr"
DAYS = ("2026-11-01", "2026-11-02", "2026-11-03")
SPEC = "bench/tuning/demo_freshness_features.yaml"
# tag: (seed, what, overrides, spec file, freshness_as_of)
TRIES = {
    "base_s7": (7, "defaults", {}, None, None),
    "base_ts12_s7": (7, "defaults, training.seed=12 (training noise)", {"training.seed": 12}, None, None),
    "ep8_s7": (7, "training.epochs=8", {"training.epochs": 8}, None, None),
    "ep2_s7": (7, "training.epochs=2", {"training.epochs": 2}, None, None),
    "nosub_s7": (7, "sampling.positive_subsample_t=null", {"sampling.positive_subsample_t": None}, None, None),
    "t01_s7": (7, "training.temperature=0.1", {"training.temperature": 0.1}, None, None),
    "t003_s7": (7, "training.temperature=0.03", {"training.temperature": 0.03}, None, None),
    "neg8_s7": (7, "sampling.negatives_per_positive=8", {"sampling.negatives_per_positive": 8}, None, None),
    "samecat_s7": (7, "hard negatives same_category", {"sampling.hard_negative_sources": ["same_category"]}, None, None),
    "hnmodel_s7": (7, "hard negatives model", {"sampling.hard_negative_sources": ["model"]}, None, None),
    "hnexposed_s7": (7, "hard negatives exposed", {"sampling.hard_negative_sources": ["exposed"]}, None, None),
    "linear_s7": (7, "linear towers (user_hidden=item_hidden=[])", {"training.user_hidden": [], "training.item_hidden": []}, None, None),
    "bs256_s7": (7, "training.batch_size=256", {"training.batch_size": 256}, None, None),
    "out128_s7": (7, "training.output_dim=128", {"training.output_dim": 128}, None, None),
    "prior_window_1d": (7, "serving.popularity_window_days=1 (the prior on the last day's clicks)", {"serving.popularity_window_days": 1}, None, None),
    "win1_s7": (7, "sampling.window_days=1 (changes the seen set, so the eval candidates: not comparable)", {"sampling.window_days": 1}, None, None),
    "freshA_s7": (7, "freshness age+clicks_3h+clicks_24h, as_of event_time", {"features.freshness_as_of": "event_time"}, SPEC, "event_time"),
    "freshC3_s7": (7, "freshness clicks_3h only, as_of event_time", {"features.freshness_as_of": "event_time"}, "bench/tuning/demo_freshness_clicks3h.yaml", "event_time"),
    "freshAge_s7": (7, "freshness age only, as_of event_time", {"features.freshness_as_of": "event_time"}, "bench/tuning/demo_freshness_age.yaml", "event_time"),
    "freshA_day_s7": (7, "freshness age+clicks_3h+clicks_24h, as_of day_start", {}, SPEC, "day_start"),
    "freshA_day_ts12_s7": (7, "freshness age+clicks_3h+clicks_24h, as_of day_start, training.seed=12", {"training.seed": 12}, SPEC, "day_start"),
    "base_s42": (42, "defaults (the default demo)", {}, None, None),
    "freshA_day_s42": (42, "freshness age+clicks_3h+clicks_24h, as_of day_start", {}, SPEC, "day_start"),
}
# the commit each try ran on (snapshots of the branch while it was built; the freshness-off tries run the
# same code paths on all of them)
RAN_ON = {**{t: "203b33e" for t in ("base_s7", "ep8_s7", "nosub_s7", "t01_s7")},
          **{t: "f38736c" for t in ("freshA_s7", "neg8_s7", "samecat_s7", "linear_s7", "win1_s7", "freshC3_s7",
                                    "freshAge_s7")}, "prior_window_1d": "766d474"}
PAIRS = {"freshA_s7": "base_s7", "freshA_day_s7": "base_s7", "freshA_day_ts12_s7": "base_ts12_s7",
         "freshA_day_s42": "base_s42"}


def report(tag, day):
    return json.load(open(f"{OUT}/runs/{tag}/eval/two_tower/dt={day}/report.json"))


def per_user(tag, day):
    """Per-user recall@50 of the run's new model, scored as the gate scores it with beta 0."""
    from dailyrec.embeddings import tower_vectors
    from dailyrec.freshness import catalog_freshness, freshness_names, iso_to_us, row_as_of
    from dailyrec.metrics import dot_scorer, holdout_eval_set, per_user_metrics, top_k
    from dailyrec.storage import open_store

    seed, _, over, spec, mode = TRIES[tag]
    files = [spec] if spec else []
    over = {**over, "storage.data_root": f"{OUT}/runs/{tag}"}
    if mode:
        over["features.freshness_as_of"] = mode
    cfg = load_config(overrides=over, files=files, environ={})
    store = open_store(cfg)
    es = holdout_eval_set(store, cfg, day)
    if freshness_names(cfg):
        es["catalog"] = catalog_freshness(store, cfg, day, es["catalog"],
                                          int(row_as_of(iso_to_us(es["holdout"]["start"]), cfg.features.freshness_as_of)))
    mdir = store.partition("models/two_tower", day)
    u = tower_vectors(f"{mdir}/user_tower", es["user_rows"], cfg.features.spec)
    v = tower_vectors(f"{mdir}/item_tower", es["catalog"], cfg.features.spec)
    tk = top_k(dot_scorer(u, v), len(es["truth"]), 50, es["exclude"])
    return list(es["users"]), per_user_metrics(tk, es["truth"], es["n_truth"], [50])["recall_at_50"]


def main():
    from dailyrec.metrics import paired_bootstrap

    out = {"what": __doc__.split("\n    ./dev")[0], "command": "bench/tuning/demo_freshness.sh SEED TAG [--set ...] "
           "(DAILYREC_CONFIG=bench/tuning/demo_freshness_features.yaml for the freshness spec), then this script",
           "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
           "collected_with": subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip(),
           "tries": {}}
    for tag, (seed, what, over, spec, mode) in TRIES.items():
        days = {}
        for d in DAYS:
            r = report(tag, d)
            n, p = r["table"]["new"]["recall_at_50"], r["table"]["popularity"]["recall_at_50"]
            days[d] = {"recall_at_50_new": round(n, 4), "recall_at_50_popularity": round(p, 4),
                       "new_over_popularity": round(n / p, 3), "popularity_beta": r["popularity_prior"]["beta"],
                       "new_minus_popularity_ci": r["gate"]["comparisons"]["popularity"]["ci"]}
        ratios = [x["new_over_popularity"] for x in days.values()]
        out["tries"][tag] = {"seed": seed, "what": what, "ran_on": RAN_ON.get(tag, "44439ef"), "days": days, "min_ratio": min(ratios),
                             "mean_ratio": round(sum(ratios) / len(ratios), 3)}
        print(tag, out["tries"][tag]["min_ratio"], out["tries"][tag]["mean_ratio"], flush=True)
    for tag, base in PAIRS.items():
        for d in DAYS:
            ua, a = per_user(tag, d)
            ub, b = per_user(base, d)
            assert ua == ub, (tag, base, d)
            c = paired_bootstrap(a, b, 10_000, 0.95, [13, 50])
            out["tries"][tag]["days"][d][f"paired_minus_{base}"] = {"mean_diff": c["mean_diff"], "ci": c["ci"], "users": c["users"]}
            print(tag, "-", base, d, c["mean_diff"], c["ci"], flush=True)
    json.dump(out, open("bench/tuning/demo_freshness.json", "w"), indent=2)


if __name__ == "__main__":
    main()
