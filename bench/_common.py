"""Shared helpers of the benchmarks in bench/ (run them with ``./dev bench NAME``).

* :func:`write_result` stores one benchmark's figures as ``bench/results/<name>.json``::

      {"command": "./dev bench generator ...", "date": "<UTC ISO timestamp of the run>",
       "machine": {"cpu": ..., "cores": ..., "mem_gb": ..., "python": ..., "platform": ...},
       "metrics": {...}}

* :func:`regenerate_results_md` rebuilds ``bench/RESULTS.md`` from every ``results/*.json``: one
  section per benchmark with its command, date, machine, load average and one short table of its
  headline figures, each beside the baseline measured in the same run and the ratio, as declared in
  :data:`HEADLINES`. The figures in RESULTS.md (and in any doc that points to it) only ever come
  from those JSON files. ``./dev python bench/_common.py`` regenerates the page without running a
  benchmark; ``--check`` exits 1 if it is stale.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import re
import resource
import shlex
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"
RESULTS_MD = BENCH_DIR / "RESULTS.md"

if str(BENCH_DIR.parent) not in sys.path:  # `python bench/x.py` puts bench/ first, not the repo
    sys.path.insert(0, str(BENCH_DIR.parent))


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _proc_kb(path: str, key: str) -> int | None:
    """The ``key:`` line of a /proc file (``/proc/meminfo``, ``/proc/self/status``) in kB, or None."""
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(f"{key}:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def _mem_gb() -> float | None:
    kb = _proc_kb("/proc/meminfo", "MemTotal")
    return None if kb is None else round(kb / 1024 / 1024, 1)


def mem_available_mb() -> float:
    """The system's ``MemAvailable`` in MB (infinite where /proc is absent)."""
    kb = _proc_kb("/proc/meminfo", "MemAvailable")
    return float("inf") if kb is None else kb / 1024


def load_avg() -> float:
    """The 1-minute load average, rounded (the machine is shared: every figure records it)."""
    return round(os.getloadavg()[0], 2)


def machine_info() -> dict[str, Any]:
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "mem_gb": _mem_gb(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MB.

    ``VmHWM`` of ``/proc/self/status``: it starts afresh at ``exec``, whereas a subprocess's
    ``ru_maxrss`` inherits its parent's peak at ``fork``. ``ru_maxrss`` where /proc is absent.
    """
    kb = _proc_kb("/proc/self/status", "VmHWM")
    if kb is not None:
        return round(kb / 1024, 1)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(rss / (1024 * 1024 if sys.platform == "darwin" else 1024), 1)


def command_line(name: str, argv: list[str] | None = None) -> str:
    """``./dev bench NAME args...`` as it was run."""
    args = sys.argv[1:] if argv is None else argv
    return " ".join(["./dev", "bench", name, *[shlex.quote(a) for a in args]])


def write_result(name: str, command: str, metrics: dict[str, Any]) -> Path:
    """Write ``bench/results/<name>.json`` (command, UTC date of the run, machine, metrics)."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    doc = {
        "command": command,
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "metrics": metrics,
    }
    path = RESULTS_DIR / f"{name}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(doc, indent=2, sort_keys=False) + "\n")
    tmp.replace(path)
    return path


def save_result(name: str, argv: list[str] | None, metrics: dict[str, Any]) -> Path:
    """:func:`write_result` with the command as run, then :func:`regenerate_results_md`; says so."""
    path = write_result(name, command_line(name, argv), metrics)
    md = regenerate_results_md()
    print(f"wrote {path} and {md}")
    return path


# ---- bench/RESULTS.md: one short table of headline figures per benchmark ----------------------


@dataclass(frozen=True)
class Headline:
    """One row of a benchmark's table in RESULTS.md: a figure beside its same-run baseline.

    ``key`` and ``baseline_key`` are paths into the result's ``metrics`` (``a.b[0].c``, see
    :func:`lookup`). ``label`` may hold ``{path}`` placeholders filled from the metrics (e.g. the
    index that was measured). ``fmt`` is a :func:`format` spec used for both figures. ``spread`` /
    ``baseline_spread`` are paths of a standard deviation shown as ``± s``. Without
    ``baseline_key`` the run measured no baseline for the figure and the row says "-".
    The ratio column is ``value / baseline``.
    """

    label: str
    key: str
    fmt: str = ",.0f"
    baseline: str = ""
    baseline_key: str | None = None
    spread: str | None = None
    baseline_spread: str | None = None


@dataclass(frozen=True)
class Summary:
    """What RESULTS.md shows of one benchmark (declared in :data:`HEADLINES`).

    ``rows``: its headline figures (3-8); ``load``: paths of the 1-minute load averages of the run,
    each a path or ``(label, path)``; ``scale``: ``(label, path)`` of the size of the run, shown on
    one line; ``parts``: path of ``{part: {command, date, load_avg_1m_start, load_avg_1m_end}}``
    when the result assembles parts measured by different runs (publish_speed); ``table``: a
    function of the metrics returning more Markdown lines (scale: the per-size table).
    """

    rows: tuple[Headline, ...]
    load: tuple[str | tuple[str, str], ...] = ()
    scale: tuple[tuple[str, str], ...] = ()
    parts: str | None = None
    table: Callable[[Any], list[str]] | None = None
    """Extra Markdown lines after the headline table, rendered from the metrics (e.g. scale's
    per-size table); figures only from the JSON, like the rows."""


def _mmoe_auc(task: str, data: str, label: str) -> Headline:
    return Headline(f"AUC {label}, {data}, MMoE (mean of seeds)", f"{data}.mmoe.auc_{task}.mean", ".4f",
                    "shared bottom, same budget", f"{data}.shared_bottom.auc_{task}.mean",
                    f"{data}.mmoe.auc_{task}.std", f"{data}.shared_bottom.auc_{task}.std")


def _synthetic_mse(i: int) -> Headline:
    t = f"synthetic.table[{i}]"
    return Headline(f"test MSE (lower is better), task correlation {{{t}.correlation}}, MMoE",
                    f"{t}.mmoe.mean.mean", ".4f", "shared bottom", f"{t}.shared_bottom.mean.mean",
                    f"{t}.mmoe.mean.std", f"{t}.shared_bottom.mean.std")


def _recall50(config: str, baseline: str = "popularity") -> Headline:
    return Headline(f"Recall@50, {config}", f"table.{config}.recall_at_50.mean", ".4f",
                    f"{baseline} (catalog counter)", f"table.{baseline}.recall_at_50.mean",
                    f"table.{config}.recall_at_50.std")


#: Stages of scale's per-size table: (column, key in ``per_size[i].stages``).
SCALE_STAGES = (("features", "features"), ("sample", "sample"), ("train two-tower", "train_two_tower"),
                ("evaluate", "evaluate_two_tower"), ("export", "export_embeddings"), ("index", "build_index"),
                ("ranking samples", "process:ranking_samples"), ("train MMoE", "process:train_mmoe"))


def _scale_table(metrics: Any) -> list[str]:
    """scale's per-size table: the DAG's wall seconds and peak RSS, then each stage's ``s / MB``."""
    rows = metrics.get("per_size") if isinstance(metrics, dict) else None
    if not isinstance(rows, list) or not rows:
        return []

    def cell(stage: Any) -> str:
        if not isinstance(stage, dict):
            return "-"
        text = f"{_fmt(stage.get('wall_s'), ',.1f')} s / {_fmt(stage.get('peak_rss_mb'), ',.0f')} MB"
        return text if stage.get("status", "ok") == "ok" else f"{text} ({stage['status']})"

    head = ["events", "status", "DAG wall s", "DAG peak RSS MB", *(c for c, _ in SCALE_STAGES)]
    lines = ["Per size (stage cells: wall seconds / peak RSS MB; DAG stages from their manifests, "
             "\"process\" ones from the process tree):", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        st = r.get("stages") or {}
        status = _fmt(r.get("status")) + (f" ({', '.join(r['failed'])})" if r.get("failed") else "")
        cells = [_fmt(r.get("events")), status, _fmt(r.get("dag_wall_s"), ",.1f"),
                 _fmt(r.get("dag_peak_rss_mb"), ",.0f"), *(cell(st.get(k)) for _, k in SCALE_STAGES)]
        lines.append("| " + " | ".join(cells) + " |")
    return lines + [""]


#: The headline rows of every benchmark, keyed by its name (``bench/results/<name>.json``).
HEADLINES: dict[str, Summary] = {
    "generator": Summary(
        scale=(("events", "events"), ("days", "days"), ("users", "users"), ("items", "items"),
               ("threads", "threads"), ("CTR", "ctr"), ("CVR after click", "cvr")),
        load=("load_avg_1m",),
        rows=(
            Headline("simulated events/s (wall, median of {repeats} repeats)", "events_per_s"),
            Headline("simulated events per CPU-second (median)", "events_per_s_cpu"),
            Headline("Parquet write, events/s ({parquet_events} events)", "parquet_events_per_s"),
            Headline("Parquet size, bytes/event", "parquet_bytes_per_event", ".1f"),
            Headline("peak RSS, MB", "peak_rss_mb"),
        )),
    "mmoe": Summary(
        scale=(("seeds", "config.seeds"), ("MovieLens training rows", "movielens.train_rows.train"),
               ("generated training rows", "generated.train_rows.train"),
               ("throughput impressions", "throughput.events")),
        load=(("start", "load_avg_1m.start"), ("end", "load_avg_1m.end"),
              ("throughput fit start, end", "train_load_avg_1m")),
        rows=(
            _mmoe_auc("click", "movielens", "click"),
            _mmoe_auc("conversion", "movielens", "conversion"),
            Headline("AUC conversion, movielens, MMoE + ESMM (pCTR x pCVR, mean of seeds)",
                     "movielens.variants.test.mmoe_esmm.auc_conversion.mean", ".4f", "MMoE, same rows and seeds",
                     "movielens.variants.test.mmoe.auc_conversion.mean",
                     "movielens.variants.test.mmoe_esmm.auc_conversion.std",
                     "movielens.variants.test.mmoe.auc_conversion.std"),
            Headline("AUC click, movielens, task-specific experts (2 shared + 1 per task)",
                     "movielens.variants.test.task_specific.auc_click.mean", ".4f", "MMoE (4 shared)",
                     "movielens.variants.test.mmoe.auc_click.mean",
                     "movielens.variants.test.task_specific.auc_click.std",
                     "movielens.variants.test.mmoe.auc_click.std"),
            Headline("mean test AUC, movielens, the model chosen on validation "
                     "({movielens.variants.default_on_validation})",
                     "movielens.variants.default_test_mean_auc", ".4f",
                     "MMoE", "movielens.variants.test_mean_auc.mmoe"),
            _mmoe_auc("click", "generated", "click"),
            Headline("AUC conversion, generated, MMoE + ESMM (mean of seeds)",
                     "generated.variants.test.mmoe_esmm.auc_conversion.mean", ".4f", "MMoE, same rows and seeds",
                     "generated.variants.test.mmoe.auc_conversion.mean",
                     "generated.variants.test.mmoe_esmm.auc_conversion.std",
                     "generated.variants.test.mmoe.auc_conversion.std"),
            Headline("MMoE fit examples/s, streaming input ({throughput.train_rows} rows, batch "
                     "{throughput.batch_size})", "throughput.phases.train.mmoe.examples_per_s", ",.0f",
                     "in-memory int arrays, same model and rows", "throughput.phases.in_memory.examples_per_s"),
        )),
    "mmoe_synthetic": Summary(
        scale=(("train rows", "synthetic.setup.n_train"), ("test rows", "synthetic.setup.n_test"),
               ("seeds", "synthetic.setup.seeds"), ("MMoE params", "synthetic.setup.params.mmoe"),
               ("shared-bottom params", "synthetic.setup.params.shared_bottom")),
        load=(("start", "load_avg_1m.start"), ("end", "load_avg_1m.end")),
        rows=(
            *(_synthetic_mse(i) for i in range(4)),
            Headline("model-step examples/s, MMoE (median, batch {ranking_train_throughput.batch_size})",
                     "ranking_train_throughput.mmoe.examples_per_s_median", ",.0f", "shared bottom",
                     "ranking_train_throughput.shared_bottom.examples_per_s_median"),
        )),
    "publish_speed": Summary(
        scale=(("items", "items"), ("dim", "dim"), ("queries", "queries"), ("k", "k")),
        load=(("start", "load_avg_1m_start"), ("end", "load_avg_1m_end")),
        parts="parts",
        rows=(
            Headline("export, item vectors/s", "export_items_per_s"),
            Headline("export, item tower over the catalog on Arrow-side ids (embed_ids), s",
                     "export.tower_paths.ids_embed_ids_s", ".2f", "raw values (serving_default), s",
                     "export.tower_paths.raw_serving_default_s"),
            Headline("item tower SavedModel, MB ({export.item_id.vocabulary} ids)", "export.train.item_tower_mb", ".1f",
                     "its variables (checkpoint), MB", "export.train.item_tower_variables_mb"),
            Headline("ANN recall@100, {ann_best_config.factory} nprobe {ann_best_config.nprobe}",
                     "ann_recall_at_100", ".4f", "exact search (Flat)", "index_table.flat.exact.recall_at_100"),
            Headline("ANN queries/s, {ann_best_config.factory} nprobe {ann_best_config.nprobe}",
                     "ann_best_config.qps", ",.0f", "exact search (Flat)", "exact_qps"),
            Headline("Redis publish, vectors/s", "redis_vectors_per_s", ",.0f",
                     "redis-benchmark SET/s ({redis_benchmark_command})", "redis_benchmark_set_per_s"),
            Headline("daily retrieval DAG, wall s (second day)", "dag_wall_s", ".1f"),
            Headline("peak RSS of the bench process, MB", "peak_rss_mb"),
        )),
    "scale": Summary(
        scale=(("sizes (events/day)", "sizes"), ("partial (keys of sizes not run are null)", "partial"),
               ("figures at events", "largest.events"), ("users", "largest.users"), ("items", "largest.items")),
        load=(("start", "load_avg_1m.start"), ("end", "load_avg_1m.end")),
        table=_scale_table,
        rows=(
            Headline("daily_retrieval DAG, wall s, 10M-event day (goal <= 900)", "dag_wall_s_10m", ",.1f"),
            Headline("daily_retrieval DAG, peak RSS of the process tree, MB, 10M (goal <= 3,072)",
                     "dag_peak_rss_mb_10m", ",.0f"),
            Headline("training peak RSS, MB, 10M (two-tower stage, train_mmoe process; goal <= 2,560)",
                     "train_peak_rss_mb_10m", ",.0f"),
            Headline("MMoE training peak RSS, MB (goal <= 2,560)", "mmoe_peak_rss_mb", ",.0f"),
            Headline("two-tower training, softmax+logQ, examples/s (goal >= 200,000)",
                     "train_softmax_examples_per_s", ",.0f"),
            Headline("two-tower training, bce, vs plain id-only Keras two-tower (ratio; goal >= 1.0)",
                     "train_bce_vs_plain_keras", ".3f"),
            Headline("MMoE training vs the same model on cached batches (ratio; goal >= 0.8)", "mmoe_vs_in_memory",
                     ".3f"),
            Headline("sample selection vs a bare pyarrow read of the day (ratio; goal >= 0.2)",
                     "sample_vs_bare_read", ".3f"),
        )),
    "scaleout": Summary(
        parts="parts",
        load=(("celery", "parts.celery.load_avg_1m_start"), ("train", "parts.train.load_avg_1m_start"),
              ("features", "parts.features.load_avg_1m_start"), ("redis", "parts.redis.load_avg_1m_start")),
        scale=(("vectors published", "redis_items"), ("dim", "redis_dim"), ("cluster masters", "redis_cluster_masters")),
        rows=(
            Headline("daily_retrieval, one demo date, wall s (median), CeleryExecutor with a training and a default worker",
                     "celery_dag_wall_s", ",.1f", "LocalExecutor, same date, runs alternated", "local_dag_wall_s"),
            Headline("two-tower training, examples/s, 2 workers (MultiWorkerMirroredStrategy on loopback, same global batch)",
                     "train_examples_per_s_2_workers", ",.0f", "1 worker, same custom loop", "train_examples_per_s_1_worker"),
            Headline("bytes exchanged per step per worker, 2 workers (dense + sparse gradients + in-batch gathers)",
                     "comm_bytes_per_step_2_workers", ",.0f"),
            Headline("features step, seconds, 10M-event day, Spark SQL local[2] (outputs identical: {outputs_identical_10m})",
                     "features_s_spark_10m", ",.1f", "DuckDB, same SQL, same run", "features_s_duckdb_10m"),
            Headline("features step, seconds, 1M-event day, Spark SQL local[2]", "features_s_spark_1m", ",.1f",
                     "DuckDB", "features_s_duckdb_1m"),
            Headline("Redis publish, vectors/s, 3-master Redis Cluster on loopback", "redis_publish_vectors_per_s_cluster",
                     ",.0f", "one redis-server", "redis_publish_vectors_per_s_single"),
            Headline("Redis Cluster keys per master, max / min (1.0 = even spread)", "redis_cluster_keys_max_over_min", ".3f"),
        )),
    "retrieval_quality_ml100k": Summary(
        scale=(("evaluation users", "protocol.eval_users"), ("candidates", "protocol.candidates"),
               ("training clicks", "protocol.train_clicks"), ("seeds", "seeds")),
        load=(("start", "load_avg_1m.start"), ("end", "load_avg_1m.end")),
        rows=(
            Headline("Recall@50, default configuration (popularity prior at serving)", "recall_at_50_default_config",
                     ".4f", "recent popularity (14 days)", "recall_at_50_recent_popularity",
                     "recall_at_50_default_config_std"),
            Headline("Recall@50, default configuration (popularity prior at serving)", "recall_at_50_default_config",
                     ".4f", "popularity (catalog counter)", "recall_at_50_popularity", "recall_at_50_default_config_std"),
            Headline("Recall@50, best two-tower ({best_config})", "recall_at_50_two_tower", ".4f",
                     "popularity (catalog counter)", "recall_at_50_popularity", "recall_at_50_two_tower_std"),
            Headline("Recall@50, best two-tower ({best_config})", "recall_at_50_two_tower", ".4f",
                     "recent popularity (14 days)", "recall_at_50_recent_popularity",
                     "recall_at_50_two_tower_std"),
            Headline("NDCG@50, best two-tower ({best_config})", "ndcg_at_50_two_tower", ".4f",
                     "popularity (catalog counter)", "ndcg_at_50_popularity"),
            _recall50("two_tower_softmax_logq"),
            _recall50("two_tower_softmax_nologq"),
        )),
    "stream_quality": Summary(
        scale=(("demo training rows", "demo.train_rows"), ("MovieLens evaluation users", "movielens.users")),
        load=(("start", "load_avg_1m.start"), ("end", "load_avg_1m.end")),
        rows=(
            Headline("recall@50, MovieLens-100K, streamed (bounded buffer), mean of seeds",
                     "movielens.recall_at_50_bounded", ".4f", "full shuffle of the file each epoch",
                     "movielens.recall_at_50_full_shuffle"),
            Headline("recall@50, demo logs, streamed (bounded buffer), mean of seeds", "demo.recall_at_50_bounded",
                     ".4f", "full shuffle of the file each epoch", "demo.recall_at_50_full_shuffle"),
            Headline("recall@50, MovieLens-100K, streamed, seed 1", "movielens.runs.1.recall_at_50_bounded", ".4f",
                     "full shuffle, seed 1", "movielens.runs.1.recall_at_50_full_shuffle"),
            Headline("recall@50, MovieLens-100K, streamed, seed 2", "movielens.runs.2.recall_at_50_bounded", ".4f",
                     "full shuffle, seed 2", "movielens.runs.2.recall_at_50_full_shuffle"),
        )),
    "hourly": Summary(
        scale=(("events/hour", "events_per_hour"), ("hours of passes", "hours"), ("items", "items"),
               ("users", "users")),
        load=(("start", "load_avg_1m_start"), ("end", "load_avg_1m_end")),
        rows=(
            Headline("prequential recall@50, hourly passes (mean over the hours)", "prequential_recall_at_50_hourly",
                     ".4f", "daily-only model (day-1 base)", "prequential_recall_at_50_daily"),
            Headline("prequential recall@50, hourly passes", "prequential_recall_at_50_hourly", ".4f",
                     "popularity of the 24 h before each pass", "prequential_recall_at_50_popularity"),
            Headline("prequential recall@50, items born that day", "new_item_recall_at_50_hourly", ".4f",
                     "daily-only model", "new_item_recall_at_50_daily"),
            Headline("prequential click AUC (MMoE), hourly passes", "prequential_auc_click_hourly", ".4f",
                     "daily-only MMoE", "prequential_auc_click_daily"),
            Headline("prequential pointwise AUC (two-tower u.v), hourly passes", "prequential_auc_pointwise_hourly",
                     ".4f", "daily-only model", "prequential_auc_pointwise_daily"),
            Headline("freshness: _SUCCESS to delta serving, s (median; goal < 180)", "freshness_s_median", ",.1f"),
            Headline("delta publish, s (median, lock to switch; {delta_items_median} items changed)", "delta_publish_s",
                     ",.2f", "full publish of {full_items} items, s", "full_publish_s"),
            Headline("peak RSS of a pass's training step (its own process), MB, max over passes", "pass_peak_rss_mb",
                     ",.0f"),
        )),
    "delta_publish": Summary(
        scale=(("items", "items"), ("dim", "dim"), ("fields per delta", "delta_fields"), ("chain", "chain")),
        load=(("start", "load_avg_1m_start"), ("end", "load_avg_1m_end")),
        rows=(
            Headline("delta publish, s (median of the chain)", "delta_publish_s", ",.2f", "full publish of the catalog, s",
                     "full_publish_s"),
            Headline("delta publish without its recall check, s", "delta_publish_s_without_recall_check", ",.2f",
                     "full publish, s", "full_publish_s"),
            Headline("bytes the Redis server received, delta", "delta_net_in_bytes", ",.0f", "full publish",
                     "full_net_in_bytes"),
            Headline("served recall@100, base index + delta overlay (lowest of the chain)", "delta_recall_at_100", ".4f",
                     "the base index alone", "full_recall_at_100"),
            Headline("load_current, s, last delta", "load_current_delta_s", ",.2f", "full version", "load_current_full_s"),
            Headline("single-query search, ms (median, k=50), last delta ({masked_base_items} base items masked)",
                     "search_ms_p50_delta_k50", ",.3f", "full version", "search_ms_p50_full_k50"),
        )),
    "retrieval_speed": Summary(
        scale=(("events", "events"), ("users", "users"), ("items", "items"), ("batch", "batch_size")),
        load=(("start", "load_avg_1m.start"), ("min", "load_avg_1m.min"), ("max", "load_avg_1m.max")),
        rows=(
            Headline("sample selection, training-window events/s (median)", "sample_events_per_s"),
            Headline("sample selection, the day's events/s (median)", "sample_day_events_per_s", ",.0f",
                     "pyarrow read of the day's logs", "parquet_read_events_per_s"),
            Headline("sample selection, peak RSS, MB", "sample_peak_rss_mb"),
            Headline("two-tower fit, examples/s, softmax", "train_examples_per_s_softmax", ",.0f",
                     "plain Keras two-tower (ids only)", "plain_keras_examples_per_s_softmax"),
            Headline("two-tower fit, examples/s, bce", "train_examples_per_s_bce", ",.0f",
                     "plain Keras two-tower (ids only)", "plain_keras_examples_per_s_bce"),
            Headline("train step, examples/s, softmax ({train_step_softmax.rows} rows)",
                     "train_step_softmax.examples_per_s"),
            Headline("peak RSS, largest stage, MB", "peak_rss_mb"),
        ),
        parts="parts"),
}

_MISSING = object()
_PATH_TOKEN = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def lookup(metrics: Any, path: str) -> Any:
    """The value at ``path`` in ``metrics`` (``"a.b[0].c"``: keys split on dots, ``[i]`` indexes a
    list), or ``_MISSING`` when any step is absent."""
    value = metrics
    for key, index in _PATH_TOKEN.findall(path):
        try:
            value = value[int(index)] if index else value[key]
        except (KeyError, IndexError, TypeError, ValueError):
            return _MISSING
    return value


def _fmt(value: Any, spec: str | None = None) -> str:
    """A figure for a Markdown cell: ``spec`` (a :func:`format` spec) for numbers, else a short default."""
    if value is _MISSING:
        return "missing"
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, (int, float)) and spec:
        return format(value, spec)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(_fmt(v) for v in value)
    return str(value).replace("|", "\\|").replace("\n", " ")


def _fill(label: str, metrics: Any) -> str:
    """``label`` with every ``{path}`` replaced by that metric."""
    return re.sub(r"\{([^{}]+)\}", lambda m: _fmt(lookup(metrics, m.group(1))), label)


def _number(value: Any) -> float | None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    return float(value) if ok and math.isfinite(value) else None


def _figure(metrics: Any, key: str, spread: str | None, spec: str) -> str:
    text = _fmt(lookup(metrics, key), spec)
    s = _number(lookup(metrics, spread)) if spread else None
    return text if s is None else f"{text} ± {format(s, spec.lstrip(','))}"


def headline_row(metrics: Any, h: Headline) -> str:
    """One Markdown table row: figure, value, baseline, baseline value, ratio, JSON keys."""
    keys = f"`{h.key}`"
    if h.baseline_key is None:
        baseline, base_value, ratio = "-", "-", "-"
    else:
        baseline = _fill(h.baseline, metrics)
        base_value = _figure(metrics, h.baseline_key, h.baseline_spread, h.fmt)
        v, b = _number(lookup(metrics, h.key)), _number(lookup(metrics, h.baseline_key))
        ratio = f"{v / b:.3g}x" if v is not None and b else "n/a"
        keys += f" / `{h.baseline_key}`"
    cells = [_fill(h.label, metrics), _figure(metrics, h.key, h.spread, h.fmt), baseline, base_value, ratio, keys]
    return "| " + " | ".join(cells) + " |"


def _load_line(metrics: Any, load: tuple[str | tuple[str, str], ...]) -> str:
    parts = []
    for entry in load:
        label, path = entry if isinstance(entry, tuple) else ("", entry)
        parts.append(f"{label} {_fmt(lookup(metrics, path))}".strip())
    return "; ".join(parts) if parts else "not recorded"


def _section(name: str, doc: dict[str, Any]) -> list[str]:
    metrics = doc.get("metrics") or {}
    summary = HEADLINES.get(name)
    m = doc.get("machine") or {}
    machine = ", ".join(x for x in (
        str(m.get("cpu", "")), f"{m['cores']} cores" if "cores" in m else "",
        f"{m['mem_gb']} GB" if "mem_gb" in m else "", f"Python {m['python']}" if "python" in m else "") if x)
    lines = [f"## {name}", "",
             f"- command: `{doc.get('command', '?')}`",
             f"- date: {doc.get('date', '?')}; machine: {machine or '?'}"]
    if summary is None:
        return lines + [f"- full result: [`results/{name}.json`](results/{name}.json)", "",
                        f"_No headline rows declared for `{name}` in `HEADLINES` of `bench/_common.py`._", ""]
    lines.append(f"- load average (1 min): {_load_line(metrics, summary.load)}")
    if summary.scale:
        lines.append("- scale: " + "; ".join(f"{label} {_fmt(lookup(metrics, p))}" for label, p in summary.scale))
    parts = lookup(metrics, summary.parts) if summary.parts else None
    if isinstance(parts, dict) and parts:
        lines.append("- parts measured by separate runs:")
        for part, info in parts.items():
            info = info or {}
            lines.append(f"  - {part}: `{info.get('command', '?')}`, {info.get('date', '?')}, load "
                         f"{_fmt(info.get('load_avg_1m_start', _MISSING))} -> {_fmt(info.get('load_avg_1m_end', _MISSING))}")
    lines += [f"- full result: [`results/{name}.json`](results/{name}.json)", "",
              "| figure | value | baseline (same run) | baseline value | ratio | JSON keys |",
              "|---|---|---|---|---|---|",
              *(headline_row(metrics, h) for h in summary.rows), ""]
    if summary.table is not None:
        lines += summary.table(metrics)
    return lines


def render_results_md(paths: list[Path] | None = None) -> str:
    """The text of ``bench/RESULTS.md`` from all ``bench/results/*.json`` (or only from ``paths``):
    per benchmark its command, date, machine, load average and the :data:`HEADLINES` table."""
    lines = [
        "# Benchmark results",
        "",
        "Generated by `bench/_common.py` from `bench/results/*.json`; do not edit by hand. A run of",
        "`./dev bench NAME` rewrites its JSON file and this page; `./dev python bench/_common.py`",
        "regenerates the page alone. The rows are declared in `HEADLINES` of `bench/_common.py`;",
        "every figure is read from the JSON (keys in the last column). ratio = value / baseline, both",
        "measured in the same run; \"-\": the run has no baseline for that figure. `± s`: standard",
        "deviation over seeds. What each benchmark measures: [docs/benchmarks.md](../docs/benchmarks.md).",
        "",
    ]
    files = sorted(RESULTS_DIR.glob("*.json") if paths is None else (Path(p) for p in paths))
    if not files:
        lines.append("_No results yet._")
    for path in files:
        try:
            doc = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            lines += [f"## {path.stem}", "", f"_unreadable result file `{path.name}`: {exc}_", ""]
            continue
        lines += _section(path.stem, doc)
    return "\n".join(lines).rstrip() + "\n"


def regenerate_results_md(paths: list[Path] | None = None) -> Path:
    """Rewrite ``bench/RESULTS.md`` with :func:`render_results_md`."""
    RESULTS_MD.write_text(render_results_md(paths))
    return RESULTS_MD


def main(argv: list[str] | None = None) -> int:
    """``./dev python bench/_common.py [--check]``: regenerate RESULTS.md from the committed JSON
    (no benchmark runs); ``--check`` only compares and exits 1 if the file is stale."""
    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("--check", action="store_true", help="exit 1 if bench/RESULTS.md differs from the JSON")
    args = ap.parse_args(argv)
    if args.check:
        fresh = render_results_md() == (RESULTS_MD.read_text() if RESULTS_MD.exists() else "")
        print(f"{RESULTS_MD}: {'up to date' if fresh else 'STALE: run ./dev python bench/_common.py'}")
        return 0 if fresh else 1
    print(regenerate_results_md())
    return 0


if __name__ == "__main__":
    sys.exit(main())
