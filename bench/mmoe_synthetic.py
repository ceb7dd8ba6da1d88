"""The synthetic experiment of Ma et al. (KDD 2018, "Modeling Task Relationships in Multi-task
Learning with Multi-gate Mixture-of-Experts", section 3.2): MMoE vs shared-bottom on two
regression tasks whose relatedness is controlled.

Data (per seed): ``x ~ N(0, I_d)``, ``d = 100``; ``u1, u2`` orthonormal (QR of a Gaussian
matrix); ``w1 = c*u1``, ``w2 = c*(p*u1 + sqrt(1-p^2)*u2)`` (cosine ``p``), ``c = 1``;
``y_i = w_i.x + sum_{k<m} sin(alpha_k w_i.x + beta_k) + eps``, ``m = 10``,
``eps ~ N(0, 0.01^2)``. The paper calls ``alpha``/``beta`` "given parameters" without values;
here they are drawn once from ``N(0, 1)`` (fixed rng seed ``ALPHA_BETA_SEED``, the same for every
run: smooth label functions a small network can fit in a few epochs). A run's seed draws
``u1, u2``, ``x``, the noise and the initialisation; for one seed the data differ across ``p``
only through ``w2``. The nonlinearity makes the labels' Pearson correlation lower than ``p``;
it is reported. The paper averages 200 runs per point; the few seeds here leave a large
spread, so the per-seed paired difference (shared-bottom minus MMoE) is reported too.

Models (``keras``, dense inputs): MMoE = ``models.mmoe.MMoE`` (8 experts of 16 ReLU units) + one
tower per task (8 ReLU units -> 1); shared-bottom = ``models.mmoe.SharedBottom`` with widths from
``matched_shared_bottom_units`` (same parameter budget, towers included) + the same towers.
Loss: sum of the two MSEs, Adam with ``DecayWithFloor``. Reported: test MSE per task, mean and
standard deviation over seeds; MMoE and shared-bottom see the same data for a given seed.

Also measured: training throughput (examples/s) of the production ``RankingModel``
(default feature spec and ``RankingConfig``, batch 2048, synthetic rows).

    ./dev bench mmoe_synthetic            # full run (~5-10 min on 2 cores)
    ./dev bench mmoe_synthetic --quick    # tiny run (~1 min), writes to bench/results too
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import keras  # noqa: E402
import numpy as np  # noqa: E402

from bench._common import load_avg, save_result  # noqa: E402

from dailyrec.inputs import ranking_dataset  # noqa: E402
from models.mmoe import MMoE, SharedBottom, matched_shared_bottom_units  # noqa: E402
from models.optim import DecayWithFloor  # noqa: E402
from models.ranking import build_ranking_model  # noqa: E402
from models.synthetic import synthetic_ranking_data  # noqa: E402

NAME = "mmoe_synthetic"
D, M, C, NOISE = 100, 10, 1.0, 0.01
ALPHA_BETA_SEED = 2018
EXPERTS, EXPERT_UNITS, TOWER_UNITS = 8, [16], [8]


def alpha_beta() -> tuple[np.ndarray, np.ndarray]:
    """The fixed ``alpha [M]``, ``beta [M]`` of the sine terms."""
    ab = np.random.default_rng(ALPHA_BETA_SEED)
    return ab.normal(size=M), ab.normal(size=M)


def make_data(p: float, n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``x [n, D]``, ``y1 [n]``, ``y2 [n]`` with task cosine ``p``."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(D, 2)))
    u1, u2 = q[:, 0], q[:, 1]
    w1 = C * u1
    w2 = C * (p * u1 + np.sqrt(max(0.0, 1.0 - p * p)) * u2)
    alpha, beta = alpha_beta()
    x = rng.normal(size=(n, D))
    ys = []
    for w in (w1, w2):
        z = x @ w
        ys.append(z + np.sin(np.outer(z, alpha) + beta).sum(axis=1) + rng.normal(0, NOISE, size=n))
    return x.astype("float32"), ys[0].astype("float32"), ys[1].astype("float32")


def make_model(kind: str, lr: float, decay_steps: int) -> keras.Model:
    inp = keras.Input((D,), name="x")
    if kind == "mmoe":
        reps = MMoE(EXPERTS, EXPERT_UNITS, num_tasks=2, name="mmoe")(inp)
    else:
        units = matched_shared_bottom_units(D, EXPERTS, EXPERT_UNITS, 2, 0, TOWER_UNITS)
        reps = SharedBottom(units, num_tasks=2, name="shared_bottom")(inp)
    outs = []
    for i, h in enumerate(reps):
        for j, u in enumerate(TOWER_UNITS):
            h = keras.layers.Dense(u, activation="relu", name=f"tower{i + 1}_{j}")(h)
        outs.append(keras.layers.Dense(1, name=f"y{i + 1}")(h))
    model = keras.Model(inp, outs)
    model.compile(keras.optimizers.Adam(DecayWithFloor(lr, 0.5, decay_steps, floor=1e-4)),
                  loss=["mse", "mse"])
    return model


def run_synthetic(correlations: list[float], seeds: list[int], n_train: int, n_test: int,
                  epochs: int, batch: int, lr: float) -> dict:
    steps_per_epoch = -(-n_train // batch)
    runs: dict[str, dict[str, list]] = {}
    label_corr: dict[str, list[float]] = {}
    params: dict[str, int] = {}
    seconds: dict[str, list[float]] = {"mmoe": [], "shared_bottom": []}
    for p in correlations:
        key = f"{p:.2f}"
        label_corr[key] = []
        for seed in seeds:
            x, y1, y2 = make_data(p, n_train + n_test, seed=1000 + seed)
            label_corr[key].append(float(np.corrcoef(y1, y2)[0, 1]))
            tr, te = slice(0, n_train), slice(n_train, None)
            for kind in ("mmoe", "shared_bottom"):
                keras.utils.set_random_seed(seed)
                model = make_model(kind, lr, decay_steps=steps_per_epoch * max(1, epochs // 5))
                params[kind] = int(model.count_params())
                t0 = time.perf_counter()
                model.fit(x[tr], [y1[tr], y2[tr]], batch_size=batch, epochs=epochs, verbose=0)
                seconds[kind].append(time.perf_counter() - t0)
                pred = model(x[te], training=False)
                mse = [float(np.mean((np.asarray(pr)[:, 0] - y[te]) ** 2)) for pr, y in zip(pred, (y1, y2))]
                runs.setdefault(key, {}).setdefault(kind, []).append({"task1": mse[0], "task2": mse[1]})
                print(f"p={key} seed={seed} {kind:13s} test mse task1={mse[0]:.4f} "
                      f"task2={mse[1]:.4f} ({seconds[kind][-1]:.1f}s)", flush=True)

    table = []
    for key, by_kind in runs.items():
        row = {"correlation": float(key), "label_pearson": _stats(label_corr[key])}
        for kind, rs in by_kind.items():
            t1 = [r["task1"] for r in rs]
            t2 = [r["task2"] for r in rs]
            row[kind] = {"task1": _stats(t1), "task2": _stats(t2),
                         "mean": _stats([(a + b) / 2 for a, b in zip(t1, t2)]),
                         "per_seed": {"task1": [round(v, 5) for v in t1], "task2": [round(v, 5) for v in t2]}}
        diffs = {task: [s[task] - m[task] for s, m in zip(by_kind["shared_bottom"], by_kind["mmoe"])]
                 for task in ("task1", "task2")}
        row["shared_bottom_minus_mmoe"] = {
            **{task: _stats(v) for task, v in diffs.items()},
            "mmoe_better": f"{sum(d > 0 for v in diffs.values() for d in v)}/{2 * len(diffs['task1'])}"}
        table.append(row)
    return {
        "setup": {"d": D, "m": M, "c": C, "noise_std": NOISE,
                  "alpha_beta": f"N(0,1), drawn once (seed {ALPHA_BETA_SEED})",
                  "n_train": n_train, "n_test": n_test, "epochs": epochs, "batch_size": batch,
                  "alpha": [round(float(a), 4) for a in alpha_beta()[0]],
                  "beta": [round(float(b), 4) for b in alpha_beta()[1]],
                  "learning_rate": lr, "lr_schedule": "DecayWithFloor(rate 0.5 every epochs/5, floor 1e-4)",
                  "seeds": seeds, "mmoe": f"{EXPERTS} experts x {EXPERT_UNITS}, towers {TOWER_UNITS}",
                  "shared_bottom_units": matched_shared_bottom_units(D, EXPERTS, EXPERT_UNITS, 2, 0,
                                                                     TOWER_UNITS),
                  "params": params, "loss": "test MSE per task (mean, std over seeds)",
                  "train_seconds_per_run": {k: round(float(np.mean(v)), 2) for k, v in seconds.items()}},
        "table": table,
    }


def _stats(v: list[float]) -> dict:
    a = np.asarray(v, dtype=np.float64)
    return {"mean": round(float(a.mean()), 5), "std": round(float(a.std(ddof=1)) if len(a) > 1 else 0.0, 5)}


def run_throughput(batch: int, n_batches: int, n_users: int, n_items: int, repeats: int = 3) -> dict:
    """Examples/s of ``RankingModel.fit`` (both kinds) with the default feature spec: the best
    and the median of ``repeats`` timed epochs (the best is the least disturbed by other load)."""
    from dailyrec.config import FeaturesConfig, RankingConfig

    fcfg, rcfg = FeaturesConfig(), RankingConfig()
    vocab = {"user_id": [f"u{i}" for i in range(n_users)], "item_id": [f"i{i}" for i in range(n_items)]}
    feats, labels = synthetic_ranking_data(fcfg.spec, batch * n_batches, seed=0, vocabularies=vocab)
    ds = ranking_dataset(feats, labels, batch_size=batch, shuffle=False, specs=fcfg.spec)
    t0 = time.perf_counter()
    for _ in ds:  # the input pipeline alone (numpy columns -> batches of tensors)
        pass
    pipeline_secs = time.perf_counter() - t0
    ds = ds.cache()
    for _ in ds:  # fill the cache: time the model, not the input pipeline
        pass
    out = {"batch_size": batch, "batches_timed": n_batches, "vocab_users": n_users,
           "vocab_items": n_items, "features": len(fcfg.spec),
           "input_pipeline_examples_per_s": round(batch * n_batches / pipeline_secs),
           "repeats": repeats, "load_avg_1m_before": load_avg(),
           "note": "model step only: batches are pre-built and cached; fit() with default RankingConfig"}
    for kind in ("mmoe", "shared_bottom"):
        model = build_ranking_model(rcfg, fcfg, vocab, kind=kind, seed=0)
        model.fit(ds.take(3), epochs=1, verbose=0, shuffle=False)  # trace
        secs = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            model.fit(ds, epochs=1, verbose=0, shuffle=False)
            secs.append(time.perf_counter() - t0)
        out[kind] = {"examples_per_s_best": round(batch * n_batches / min(secs)),
                     "examples_per_s_median": round(batch * n_batches / float(np.median(secs))),
                     "trainable_params": int(sum(np.prod(v.shape) for v in model.trainable_variables))}
        print(f"throughput {kind}: {out[kind]}", flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny run: 2 correlations, 1 seed, few epochs")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--correlations", type=float, nargs="+", default=[1.0, 0.9, 0.5, 0.0])
    ap.add_argument("--n-train", type=int, default=20_000)
    ap.add_argument("--n-test", type=int, default=5_000)
    ap.add_argument("--epochs", type=int, default=25)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--no-throughput", action="store_true")
    ap.add_argument("--no-write", action="store_true", help="print only")
    args = ap.parse_args(argv)
    if args.quick:
        args.seeds, args.correlations = 1, [1.0, 0.0]
        args.n_train, args.n_test, args.epochs = 4000, 1000, 5
    load_start = load_avg()
    t0 = time.perf_counter()
    metrics = {"synthetic": run_synthetic(args.correlations, list(range(args.seeds)), args.n_train,
                                          args.n_test, args.epochs, args.batch_size, args.lr)}
    if not args.no_throughput:
        metrics["ranking_train_throughput"] = run_throughput(
            2048, 4 if args.quick else 50, n_users=5_000, n_items=2_000)
    metrics["wall_seconds"] = round(time.perf_counter() - t0, 1)
    # the machine is shared: a 1-minute load average well above the core count slows everything
    metrics["load_avg_1m"] = {"start": load_start, "end": load_avg()}
    import tensorflow as tf

    metrics["versions"] = {"tensorflow": tf.__version__, "keras": keras.__version__, "numpy": np.__version__}
    print(json.dumps({"synthetic_mean_mse": {
        r["correlation"]: {k: r[k]["mean"]["mean"] for k in ("mmoe", "shared_bottom")}
        for r in metrics["synthetic"]["table"]}}, indent=1))
    if not args.no_write:
        save_result(NAME, list(argv if argv is not None else sys.argv[1:]), metrics)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
