"""Speed of the daily retrieval steps at scale: feature SQL, sample selection, two-tower training.

One day of demo logs (``dailyrec.demo.generator``, default 10M events, 200k users, 50k items) is
written to a temporary data root, then each step runs **in its own subprocess** (so every step's
peak RSS is its own, ``VmHWM``) on ``cur_date`` = that day with ``sampling.window_days = 1``
(the window is that day alone) and otherwise the default config:

* ``features``: ``tasks.retrieval.features`` (DuckDB SQL over the Parquet logs) -> ``features_s``;
* ``sample``: ``tasks.retrieval.sample`` ``--sample-repeats`` times (deterministic, same
  output each time) -> ``sample_events_per_s`` = events in the window / wall seconds of the step
  (median of the repeats; the step's own ``events_per_s`` of its manifest), plus the best and the
  per-CPU-second figure;
* ``train``: ``tasks.retrieval.train_two_tower`` with ``training.epochs = 1`` and
  ``training.batch_size = --batch-size`` (default 4096) on the whole ``train.parquet``, for each
  loss (softmax with logQ, the default; bce): the step's own ``examples_per_s`` (rows / seconds of
  ``fit``, first-step tracing included), its load time (Parquet -> arrays) and the peak RSS;
* ``fit``: a timed ``fit`` of ``models.two_tower.build_two_tower`` on the stream
  over ``--fit-rows`` rows' worth of batches of the same ``train.parquet``, streamed by ``dailyrec.stream`` as the step does (the pipeline's model, batches
  and optimizer), ``--warmup-steps`` steps excluded -> steady-state examples/s, wall and per CPU
  second, for each loss.

``--only generate,features,sample`` runs only the stages up to the samples (the training figures
are then carried over from the existing JSON, with the run that measured them under
``parts.training``; ``parts.run`` is this run).

The machine is shared: every step records the 1-minute load average before and after and its
process CPU seconds (``*_cpu`` figures are per CPU-second: less sensitive to other load).

    ./dev bench retrieval_speed [--events 10000000] [--users 200000] [--items 50000]
                                [--batch-size 4096] [--fit-rows 2000000] [--losses softmax bce]
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from bench._common import load_avg, mem_available_mb, peak_rss_mb, save_result  # noqa: E402

NAME = "retrieval_speed"
DAY = "2026-11-01"
RESULT_TAG = "STAGE-RESULT "


def _cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _cfg(p: dict[str, Any]):
    from dailyrec.config import load_config

    return load_config(overrides={"storage.data_root": p["root"], **p["overrides"]})


# ---- stages (each runs in its own process) ------------------------------------------------------

def stage_generate(p: dict[str, Any]) -> dict[str, Any]:
    from dailyrec.demo.generator import generate

    s = generate(_cfg(p), DAY, 1)
    return {"events": s["events"], "clicks": s["clicks"], "users": s["users"], "items": s["items"],
            "seconds": s["seconds"]}


def stage_features(p: dict[str, Any]) -> dict[str, Any]:
    from dailyrec.storage import open_store
    from tasks.ingest.validate_day import step as validate_day
    from tasks.retrieval.features import step as build_features

    cfg = _cfg(p)
    validate_day(DAY, cfg)   # required by the steps reading logs; not timed
    t0 = time.perf_counter()
    r = build_features(DAY, cfg)
    wall = time.perf_counter() - t0
    man = open_store(cfg).read_json(f"{r['path']}/_manifest.json")
    return {"seconds": round(wall, 3), "timings_s": man["timings_s"], "rows": r["rows"]}


def stage_sample(p: dict[str, Any]) -> dict[str, Any]:
    from dailyrec.storage import open_store
    from tasks.retrieval.sample import step as select_samples

    cfg = _cfg(p)
    runs = []
    for _ in range(p["repeats"]):
        c0, t0 = _cpu_s(), time.perf_counter()
        r = select_samples(DAY, cfg)
        wall, cpu = time.perf_counter() - t0, _cpu_s() - c0
        man = open_store(cfg).read_json(f"{r['path']}/_manifest.json")
        runs.append({"wall_s": round(wall, 3), "cpu_s": round(cpu, 3), "events": man["stats"]["events_in_window"],
                     "manifest_events_per_s": man["events_per_s"], "timings_s": man["timings_s"],
                     "rows": r["rows"]})
    # the baseline: reading the day's logs (the columns the sampler needs) with pyarrow, no work on them
    import pyarrow.parquet as pq

    files = sorted(str(f) for f in Path(p["root"], "logs", f"dt={DAY}").rglob("*.parquet"))
    cols = ["user_id", "item_id", "click", "event_time"]
    reads = []
    for _ in range(p["repeats"]):
        t0 = time.perf_counter()
        n = sum(pq.read_table(f, columns=cols).num_rows for f in files)
        reads.append(round(time.perf_counter() - t0, 3))
    return {"runs": runs, "read_baseline": {"columns": cols, "files": len(files), "rows": n, "runs_s": reads}}


def stage_train(p: dict[str, Any]) -> dict[str, Any]:
    from dailyrec.storage import open_store
    from tasks.retrieval.train_two_tower import step as train_two_tower

    cfg = _cfg(p)
    c0, t0 = _cpu_s(), time.perf_counter()
    r = train_two_tower(DAY, cfg)
    wall, cpu = time.perf_counter() - t0, _cpu_s() - c0
    man = open_store(cfg).read_json(f"{r['model_dir']}/_manifest.json")
    fit_s = man["timings_s"].get("fit")
    return {"rows": r["rows"], "examples_per_s": r["examples_per_s"], "timings_s": man["timings_s"],
            "fit_s": fit_s, "wall_s": round(wall, 3), "cpu_s": round(cpu, 3), "final_loss": r["final_loss"]}


def _step_clock(warm: int):
    """A Keras callback timing the steps after the first ``warm`` ones (wall and CPU)."""
    import keras

    class StepClock(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.t = self.c = None
            self.steps = 0
            self.end = (0.0, 0.0)

        def on_train_batch_begin(self, batch: int, logs: Any = None) -> None:
            if batch == warm:
                self.t, self.c = time.perf_counter(), _cpu_s()

        def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
            self.steps = batch + 1
            self.end = (time.perf_counter(), _cpu_s())

    return StepClock()


def stage_fit(p: dict[str, Any]) -> dict[str, Any]:
    import keras
    import tensorflow as tf

    from dailyrec.storage import open_store
    from models.two_tower import build_two_tower
    from dailyrec.stream import ParquetStream, id_encoders

    cfg = _cfg(p)
    store = open_store(cfg)
    tc = cfg.training
    path = f"{store.partition('samples', DAY)}/train.parquet"
    t0 = time.perf_counter()
    vocab = store.read_json(f"{store.partition('features', DAY)}/vocabularies.json")
    # the training step's own input: the streamed file (dailyrec.stream), first fit_rows rows' worth of steps
    stream = ParquetStream(path, id_encoders(cfg.features.spec, vocab), extra={"label": "float32", "log_q": "float32"},
                           batch_size=tc.batch_size, seed=tc.seed, buffer_rows=tc.shuffle_buffer_rows,
                           filesystem=store.fs, drop_remainder=True)
    steps = stream.steps_per_epoch if p["fit_rows"] <= 0 else min(stream.steps_per_epoch,
                                                                  p["fit_rows"] // tc.batch_size)
    n = steps * tc.batch_size
    tf.keras.utils.set_random_seed(tc.seed)
    model = build_two_tower(tc, cfg.features, vocab)
    ds = stream.dataset().take(steps)
    prep_s = time.perf_counter() - t0
    warm = p["warmup_steps"]

    clock = _step_clock(warm)
    t1 = time.perf_counter()
    hist = model.fit(ds, epochs=1, verbose=0, callbacks=[clock])
    total = time.perf_counter() - t1
    timed = clock.steps - warm
    if clock.t is None or timed <= 0:
        raise RuntimeError(f"only {clock.steps} steps: need more than --warmup-steps {warm}")
    wall, cpu = clock.end[0] - clock.t, clock.end[1] - clock.c
    ex = timed * tc.batch_size
    return {"rows": n, "batch_size": tc.batch_size, "steps": clock.steps, "warmup_steps": warm,
            "timed_steps": timed, "timed_examples": ex, "timed_wall_s": round(wall, 3), "timed_cpu_s": round(cpu, 3),
            "examples_per_s": round(ex / wall), "examples_per_cpu_s": round(ex / cpu),
            "fit_total_s": round(total, 3), "prepare_s": round(prep_s, 3),
            "final_loss": round(float(hist.history["loss"][-1]), 4),
            "threads": {"intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
                        "inter_op": tf.config.threading.get_inter_op_parallelism_threads()}}


def stage_plain_fit(p: dict[str, Any]) -> dict[str, Any]:
    """The baseline: a plain Keras two-tower on the same rows, ids only, numpy in, ``fit`` as-is.

    ``user_id`` / ``item_id`` -> integer codes (``pandas.factorize``, not timed) -> Embedding(32)
    -> Dense(64) -> L2 per tower; ``softmax``: in-batch softmax over the batch's rows
    (temperature 0.05); ``bce``: sigmoid of cosine / 0.05 against the row's label. Same batch
    size, rows, epochs and warm-up exclusion as ``fit``.
    """
    import keras
    import pandas as pd
    import pyarrow.parquet as pq
    from keras import ops

    from dailyrec.storage import open_store

    cfg = _cfg(p)
    store = open_store(cfg)
    bs = cfg.training.batch_size
    path = f"{store.partition('samples', DAY)}/train.parquet"
    t0 = time.perf_counter()
    table = pq.read_table(path, columns=["user_id", "item_id", "label"])
    if p["fit_rows"] > 0:
        table = table.slice(0, p["fit_rows"])
    df = table.to_pandas()
    u, nu = pd.factorize(df["user_id"])[0].astype("int32"), df["user_id"].nunique()
    i, ni = pd.factorize(df["item_id"])[0].astype("int32"), df["item_id"].nunique()
    y = df["label"].to_numpy("float32")
    del table, df
    keras.utils.set_random_seed(cfg.training.seed)
    temp = 0.05

    def tower(n: int, name: str):
        x = keras.Input(shape=(), dtype="int32", name=name)
        e = keras.layers.Embedding(n, 32)(x)
        return x, keras.layers.UnitNormalization()(keras.layers.Dense(64)(e))

    ui, uv = tower(nu, "user")
    ii, iv = tower(ni, "item")

    class InBatchSoftmax(keras.layers.Layer):
        def call(self, a, b):
            logits = ops.matmul(a, ops.transpose(b)) / temp
            return ops.logsumexp(logits, axis=1) - ops.diagonal(logits)

    if p["loss"] == "softmax":
        out = InBatchSoftmax()(uv, iv)
        model = keras.Model([ui, ii], out)
        model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=lambda _y, per_row: per_row)
        target = np.zeros_like(y)
    else:
        out = keras.layers.Activation("sigmoid")(ops.sum(uv * iv, axis=1) / temp)
        model = keras.Model([ui, ii], out)
        model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="binary_crossentropy")
        target = y
    prep_s = time.perf_counter() - t0
    warm = p["warmup_steps"]
    clock = _step_clock(warm)
    t1 = time.perf_counter()
    hist = model.fit([u, i], target, batch_size=bs, epochs=1, shuffle=True, verbose=0, callbacks=[clock])
    total = time.perf_counter() - t1
    timed = clock.steps - warm
    if clock.t is None or timed <= 0:
        raise RuntimeError(f"only {clock.steps} steps: need more than --warmup-steps {warm}")
    wall, cpu = clock.end[0] - clock.t, clock.end[1] - clock.c
    ex = timed * bs
    return {"rows": int(len(u)), "users": int(nu), "items": int(ni), "batch_size": bs, "steps": clock.steps,
            "timed_steps": timed, "timed_wall_s": round(wall, 3), "timed_cpu_s": round(cpu, 3),
            "examples_per_s": round(ex / wall), "examples_per_cpu_s": round(ex / cpu),
            "fit_total_s": round(total, 3), "prepare_s": round(prep_s, 3),
            "final_loss": round(float(hist.history["loss"][-1]), 4)}


STAGES = {"generate": stage_generate, "features": stage_features, "sample": stage_sample,
          "train": stage_train, "fit": stage_fit, "plain_fit": stage_plain_fit}


def _stage_entry(stage: str, params: str) -> int:
    import logging

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    p = json.loads(params)
    load0, c0, t0 = load_avg(), _cpu_s(), time.perf_counter()
    out = STAGES[stage](p)
    out.update({"process_wall_s": round(time.perf_counter() - t0, 3), "process_cpu_s": round(_cpu_s() - c0, 3),
                "peak_rss_mb": peak_rss_mb(), "load_avg_1m": {"before": load0, "after": load_avg()}})
    print(RESULT_TAG + json.dumps(out), flush=True)
    return 0


class StageKilled(RuntimeError):
    pass


def run_stage(stage: str, p: dict[str, Any], min_available_mb: float = 2048) -> dict[str, Any]:
    """Run one stage in a fresh interpreter; its stderr goes through, its result comes back.

    The machine is shared: when the system's available memory falls below ``min_available_mb``
    while the stage runs, the stage (our own child process) is killed and :class:`StageKilled`
    raised, rather than pushing other people's jobs into the OOM killer.
    """
    print(f"[{time.strftime('%H:%M:%S')}] {stage} (load {load_avg()}, available {mem_available_mb():,.0f} MB) ...",
          flush=True)
    out = tempfile.TemporaryFile(mode="w+")
    proc = subprocess.Popen([sys.executable, __file__, "--stage", stage, "--params", json.dumps(p)],
                            stdout=out, text=True)
    low = float("inf")
    while proc.poll() is None:
        avail = mem_available_mb()
        low = min(low, avail)
        if avail < min_available_mb:
            proc.kill()
            proc.wait()
            raise StageKilled(f"stage {stage} killed: system MemAvailable fell to {avail:,.0f} MB "
                              f"(< {min_available_mb:,.0f} MB)")
        time.sleep(0.25)
    out.seek(0)
    stdout = out.read()
    lines = [ln for ln in stdout.splitlines() if ln.startswith(RESULT_TAG)]
    if proc.returncode != 0 or not lines:
        sys.stdout.write(stdout)
        raise RuntimeError(f"stage {stage} failed with exit code {proc.returncode}")
    res = json.loads(lines[-1][len(RESULT_TAG):])
    res["system_mem_available_min_mb"] = round(low)
    print(f"[{time.strftime('%H:%M:%S')}] {stage}: {json.dumps(res)[:600]}", flush=True)
    return res


TRAINING_KEYS = ("train_", "fit_", "plain_fit_", "plain_keras_", "tf_threads")
"""Metric keys made by the training stages (train, fit, plain_fit)."""


def carried_training_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    """With ``--only`` leaving the training stages out: their figures (keys starting with
    :data:`TRAINING_KEYS`, absent from ``metrics``) carried over from the existing
    ``bench/results/retrieval_speed.json``, with the command, date and load of the run that measured
    them (``parts.training``); ``{}`` when there is no such file or figure."""
    path = Path(__file__).resolve().parent / "results" / f"{NAME}.json"
    if not path.exists():
        return {}
    old = json.loads(path.read_text())
    om = old.get("metrics", {})
    keep = {k: v for k, v in om.items() if k.startswith(TRAINING_KEYS) and k not in metrics}
    if not keep:
        return {}
    prev = (om.get("parts") or {}).get("training") or {
        "command": old.get("command"), "date": old.get("date"),
        "load_avg_1m_start": (om.get("load_avg_1m") or {}).get("start"),
        "load_avg_1m_end": (om.get("load_avg_1m") or {}).get("max")}
    return {"metrics": keep, "part": prev}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog=f"./dev bench {NAME}", description=__doc__.split("\n")[0])
    ap.add_argument("--events", type=int, default=10_000_000, help="events of the day")
    ap.add_argument("--users", type=int, default=200_000)
    ap.add_argument("--items", type=int, default=50_000)
    ap.add_argument("--batch-size", type=int, default=4096)
    ap.add_argument("--losses", nargs="+", choices=["softmax", "bce"], default=["softmax", "bce"])
    ap.add_argument("--sample-repeats", type=int, default=3)
    ap.add_argument("--fit-rows", type=int, default=2_000_000, help="rows of the steady-state fit (0: all)")
    ap.add_argument("--warmup-steps", type=int, default=20)
    ap.add_argument("--skip-train", action="store_true", help="no train_two_tower stage (only the timed fit)")
    ap.add_argument("--only", type=lambda v: [x.strip() for x in v.split(",") if x.strip()],
                    help="comma-separated stages to run among generate,features,sample,train,fit,plain_fit "
                         "(default: all; e.g. --only generate,features,sample); the figures of the training "
                         "stages not run are carried over from the existing results JSON (parts.training "
                         "names the run that measured them)")
    ap.add_argument("--min-available-mb", type=float, default=2048,
                    help="kill a stage when the system's MemAvailable falls below this (shared machine)")
    ap.add_argument("--data-root", help="use (and keep) this data root; an existing day is not regenerated")
    ap.add_argument("--no-save", action="store_true", help="print only; do not write results")
    ap.add_argument("--stage", choices=list(STAGES), help=argparse.SUPPRESS)
    ap.add_argument("--params", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.stage:
        return _stage_entry(args.stage, args.params)
    only = set(args.only or STAGES)
    if only - set(STAGES):
        ap.error(f"--only: unknown stage(s) {sorted(only - set(STAGES))}; choose among {', '.join(STAGES)}")
    if "sample" not in only:
        ap.error("--only must include sample (the figures are computed from it)")

    t_start = time.perf_counter()
    load_start = load_avg()
    root = args.data_root or tempfile.mkdtemp(prefix="dailyrec-speed-")
    base = {"demo.events_per_day": args.events, "demo.n_users": args.users, "demo.n_items": args.items,
            "demo.start_date": DAY, "sampling.window_days": 1, "training.batch_size": args.batch_size,
            "training.epochs": 1, "training.warm_start": False}
    p = {"root": root, "overrides": base}
    res: dict[str, Any] = {}
    killed: dict[str, str] = {}
    try:
        if not Path(root, "logs", f"dt={DAY}").exists():
            res["generate"] = run_stage("generate", p)
        if "features" in only or not Path(root, "features", f"dt={DAY}").exists():
            res["features"] = run_stage("features", p)
        res["sample"] = run_stage("sample", {**p, "repeats": args.sample_repeats})
        for loss in args.losses:
            lp = {**p, "overrides": {**base, "training.loss": loss}}
            if not args.skip_train and "train" in only:
                try:
                    res[f"train_{loss}"] = run_stage("train", lp, args.min_available_mb)
                except StageKilled as exc:
                    print(exc, flush=True)
                    killed[f"train_{loss}"] = str(exc)
            if "fit" in only:
                res[f"fit_{loss}"] = run_stage("fit", {**lp, "fit_rows": args.fit_rows,
                                                       "warmup_steps": args.warmup_steps}, args.min_available_mb)
            if "plain_fit" in only:
                res[f"plain_fit_{loss}"] = run_stage("plain_fit", {**lp, "fit_rows": args.fit_rows, "loss": loss,
                                                                   "warmup_steps": args.warmup_steps},
                                                     args.min_available_mb)
        import pyarrow.parquet as pq

        day_events = sum(pq.ParquetFile(f).metadata.num_rows for f in Path(root, "logs", f"dt={DAY}").rglob("*.parquet"))
        disk_mb = round(sum(f.stat().st_size for f in Path(root).rglob("*") if f.is_file()) / 2**20, 1)
    finally:
        if not args.data_root:
            shutil.rmtree(root, ignore_errors=True)

    sruns = res["sample"]["runs"]
    events = sruns[0]["events"]  # the training window's events (the manifest's events_per_s counts these)
    s_wall = statistics.median(r["wall_s"] for r in sruns)
    s_cpu = statistics.median(r["cpu_s"] for r in sruns)
    loads = [v for r in res.values() for v in r["load_avg_1m"].values()]
    main_loss = args.losses[0]
    metrics: dict[str, Any] = {
        "events": day_events,
        "events_in_training_window": events,
        "users": args.users,
        "items": args.items,
        "sample_events_per_s": round(events / s_wall),
        "sample_events_per_s_note": ("events of the training window (the day minus the "
                                     "training.holdout_hours = 3 holdout hours, which the step also reads) / wall "
                                     "seconds of select_samples, median of the repeats"),
        "sample_day_events_per_s": round(day_events / s_wall),
        "sample_events_per_s_best": round(events / min(r["wall_s"] for r in sruns)),
        "sample_events_per_cpu_s": round(events / s_cpu),
        "sample_s": {"median": round(s_wall, 3), "runs": [r["wall_s"] for r in sruns]},
        "sample_manifest_events_per_s": [r["manifest_events_per_s"] for r in sruns],
        "sample_rows": sruns[0]["rows"],
        "parquet_read_events_per_s": round(res["sample"]["read_baseline"]["rows"]
                                           / statistics.median(res["sample"]["read_baseline"]["runs_s"])),
        "sample_vs_parquet_read": round(statistics.median(res["sample"]["read_baseline"]["runs_s"]) / s_wall, 3),
        "sample_vs_parquet_read_note": ("baseline measured in the same run: pyarrow reading the whole day's logs "
                                        "(user_id, item_id, click, event_time) without any work; "
                                        "ratio = read seconds / select_samples seconds"),
        "sample_timings_s": sruns[len(sruns) // 2]["timings_s"],
        "sample_peak_rss_mb": res["sample"]["peak_rss_mb"],
        "batch_size": args.batch_size,
    }
    if "features" in res:
        metrics["features_s"] = res["features"]["seconds"]
        metrics["features_timings_s"] = res["features"]["timings_s"]
    if f"fit_{main_loss}" in res:
        metrics["train_examples_per_s"] = res[f"fit_{main_loss}"]["examples_per_s"]
        metrics["train_examples_per_s_note"] = (
            f"steady state of the pipeline's model on its samples (loss {main_loss}, batch {args.batch_size}, "
            f"first {args.warmup_steps} steps excluded); train_step_* are the whole train_two_tower step")
    for loss in args.losses:
        f = res.get(f"fit_{loss}")
        if f is not None:
            metrics[f"train_examples_per_s_{loss}"] = f["examples_per_s"]
            metrics[f"train_examples_per_cpu_s_{loss}"] = f["examples_per_cpu_s"]
            metrics[f"fit_{loss}"] = {k: f[k] for k in ("rows", "timed_steps", "timed_wall_s", "timed_cpu_s",
                                                        "fit_total_s", "prepare_s", "peak_rss_mb", "final_loss")}
        b = res.get(f"plain_fit_{loss}")
        if b is not None:
            metrics[f"plain_keras_examples_per_s_{loss}"] = b["examples_per_s"]
            metrics[f"plain_fit_{loss}"] = {k: b[k] for k in ("rows", "users", "items", "timed_steps",
                                                              "timed_wall_s", "timed_cpu_s", "examples_per_cpu_s",
                                                              "peak_rss_mb", "final_loss")}
        if f is not None and b is not None:
            metrics[f"train_vs_plain_keras_{loss}"] = round(f["examples_per_s"] / b["examples_per_s"], 3)
        if f"train_{loss}" in res:
            t = res[f"train_{loss}"]
            metrics[f"train_step_{loss}"] = {
                "rows": t["rows"], "examples_per_s": t["examples_per_s"], "fit_s": t["fit_s"],
                "examples_per_cpu_s_step": round(t["rows"] / t["cpu_s"]), "load_s": t["timings_s"].get("load"),
                "save_s": t["timings_s"].get("save"), "wall_s": t["wall_s"], "peak_rss_mb": t["peak_rss_mb"],
                "final_loss": t["final_loss"]}
    metrics.update({
        "peak_rss_mb": max(r["peak_rss_mb"] for r in res.values()),
        "stages_killed_for_memory": killed,
        "system_mem_available_min_mb_by_stage": {k: r["system_mem_available_min_mb"] for k, r in res.items()},
        "peak_rss_mb_by_stage": {k: r["peak_rss_mb"] for k, r in res.items()},
        "generate": res.get("generate", "reused an existing data root"),
        "data_root_mb": disk_mb,
        "load_avg_1m": {"start": load_start, "min": min(loads), "max": max(loads), "by_stage": {
            k: r["load_avg_1m"] for k, r in res.items()}},
        "cpu_s_by_stage": {k: r["process_cpu_s"] for k, r in res.items()},
        "tf_threads": res[f"fit_{main_loss}"]["threads"] if f"fit_{main_loss}" in res else None,
        "stages_run": sorted(only),
        "wall_seconds": round(time.perf_counter() - t_start, 1),
    })
    parts = {"run": {"command": f"./dev bench {NAME} " + " ".join(argv if argv is not None else sys.argv[1:]),
                     "date": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime()),
                     "stages": sorted(only), "load_avg_1m_start": load_start, "load_avg_1m_end": load_avg()}}
    carried = carried_training_metrics(metrics) if not args.no_save and args.only else {}
    if carried:  # figures of two runs: say which run measured which
        metrics.update(carried["metrics"])
        parts["training"] = carried["part"]
        metrics["parts"] = parts
    print(json.dumps(metrics, indent=1))
    if not args.no_save:
        save_result(NAME, argv, metrics)
    return 0


if __name__ == "__main__":
    sys.exit(main())
