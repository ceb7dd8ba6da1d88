"""Score rows with the published ranking model: calibrated predictions per task (default click and conversion probabilities).

    python -m dailyrec.scoring --input rows.parquet [--cur-date 2026-11-02] [--limit 20]
    python -m dailyrec.scoring [--cur-date D] < rows.jsonl          # one JSON object per line

The model: the SavedModel of the newest published ranking model (``registry/mmoe/dt=*/published.json``
written by the ``ranking.publish_model`` stage, or ``registry/mmoe/dt=*/hour=HH/published.json`` of an
hourly pass, ``hourly.train_mmoe_pass``: :func:`published_model` says which is newest), the one
published for ``--cur-date``, or the pass ``--cur-date D --hour HH``. Each
input row must hold every raw feature of the model's serving signature (``features.spec`` at
training time: user, context and item features); a missing one is an error naming it (exit
status 2). Null values count as unknown (``""`` / 0 / missing for a numeric feature), as in training. A value the model cannot
take is an error naming the input, the row and the feature (exit status 2): for an integer
feature anything but an integer within int64 (a float, a string, a bool, 10**20, a ``uint64``
above 2**63-1), for a numeric feature anything but a number, for a string feature a list or an object; ``NaN``/``Infinity`` are not JSON. Output: one JSON line per
row on stdout, in input order, and a summary line on stderr naming the model::

    {"row": 0, "request_id": ..., "user_id": ..., "item_id": ..., "click": 0.183, "conversion": 0.0071}

One key per task of the model (``published.json``'s ``tasks``: ``ranking.tasks`` at training time).
With the default tasks ``click`` is ``P(click | impression)`` and ``conversion`` ``P(conversion |
impression)``, both calibrated back from the model's training down-sample rate
(:func:`dailyrec.ranking.calibration.calibrate` and
:func:`~dailyrec.ranking.calibration.calibrate_conversion`; a custom task by its ``calibration``,
:func:`dailyrec.ranking.evaluation.calibrate_tasks`). There is no Redis for the ranking model:
``published.json`` points at the SavedModel, and a serving system loads it from there.

In Python: ``Scorer(cfg).score(table_or_dicts)``.
"""

from __future__ import annotations

import json
import logging
import math
import sys
from typing import Any

import numpy as np

from dailyrec.config import Config, load_config
from dailyrec.dates import parse_date
from dailyrec.ranking import NAME
from dailyrec.ranking.evaluation import predict_calibrated, tasks_of
from dailyrec.storage import Store, open_store

ID_COLUMNS = ("request_id", "user_id", "item_id")


def published_dates(store: Store) -> list[str]:
    """The dates (``YYYY-MM-DD``, ascending) whose ranking model is published."""
    return [d for d in store.list_partitions(f"registry/{NAME}")
            if store.exists(f"{store.partition(f'registry/{NAME}', d)}/published.json")]


def published_model(store: Store, cur_date: str | None = None, hour: int | None = None) -> dict[str, Any]:
    """``published.json`` of the newest published ranking model, of the daily model published for
    ``cur_date``, or (with ``hour``) of the hourly pass ``(cur_date, hour)``.

    The newest is by the data a model covers (:func:`dailyrec.registry.published_entries`): a pass
    ``(D, HH)`` (``registry/mmoe/dt=D/hour=HH/published.json``, ``hourly.train_mmoe_pass``) is newer
    than the daily model of ``D - 1`` and D's earlier passes, older than D's daily model (the day's
    consolidation, published after D's passes).

    Raises:
        FileNotFoundError: nothing is published for ``cur_date`` / that pass (or at all), naming what is;
        ValueError: ``hour`` without ``cur_date``.
    """
    from dailyrec.registry import pass_published_path, published_entries

    if hour is not None:
        if cur_date is None:
            raise ValueError("published_model: an hour needs its cur_date")
        d = parse_date(cur_date).isoformat()
        path = pass_published_path(store, NAME, d, hour)
        if not store.exists(path):
            passes = [f"{e[0]}T{e[1]:02d}" for e in published_entries(store, NAME) if e[1] is not None]
            raise FileNotFoundError(f"no ranking model is published for the pass {d}T{hour:02d} ({path}); "
                                    f"published passes: {passes or 'none'}")
        return store.read_json(path)
    if cur_date is not None:
        dates = published_dates(store)
        d = parse_date(cur_date).isoformat()
        if d not in dates:
            raise FileNotFoundError(f"no ranking model is published for {d} (its gate failed, publish was off, "
                                    f"or the DAG did not run); published dates: {dates or 'none'}")
        return store.read_json(f"{store.partition(f'registry/{NAME}', d)}/published.json")
    entries = published_entries(store, NAME)
    if not entries:
        raise FileNotFoundError(f"no ranking model has been published yet under {store.path('registry', NAME)} "
                                "(run the daily_ranking DAG)")
    d, h = entries[-1]
    return store.read_json(f"{store.partition(f'registry/{NAME}', d, h)}/published.json")


def published_for(info: dict[str, Any]) -> str:
    """What a ``published.json`` was published for: ``YYYY-MM-DD`` (daily) or ``YYYY-MM-DD hour HH`` (a pass)."""
    return info["cur_date"] + (f" hour {int(info['hour']):02d}" if info.get("hour") is not None else "")


# ---- row checks ---------------------------------------------------------------------------------
INT64_MIN, INT64_MAX = -(2 ** 63), 2 ** 63 - 1


def check_value(name: str, value: Any, integer: bool, where: str, numeric: bool = False) -> None:
    """One raw feature value of a JSON row: an integer feature takes a JSON integer within int64
    (not a bool, a float, a string, NaN), a ``numeric`` feature (``numeric``) a finite number (not a
    bool or a string), a string feature a string or a number (not a list or an object); ``None`` is
    unknown. ``ValueError`` naming ``where`` (file and row) and the feature."""
    if value is None:
        return
    if numeric:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"{where}: feature '{name}' must be a number, got {value!r}")
        return
    if integer:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{where}: feature '{name}' must be an integer, got {value!r}")
        if not INT64_MIN <= value <= INT64_MAX:
            raise ValueError(f"{where}: feature '{name}' = {value} does not fit a 64-bit signed integer "
                             f"[{INT64_MIN}, {INT64_MAX}]")
    elif isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{where}: feature '{name}' is {value!r}, not a value")
    elif not isinstance(value, (str, int, float)):
        raise ValueError(f"{where}: feature '{name}' must be a string or a number, got {type(value).__name__} "
                         f"{json.dumps(value)[:80]}")


def check_table(table: Any, int_features: set[str], where: str) -> None:
    """Refuse an integer feature column of an Arrow table whose values do not fit int64 (a ``uint64``
    above 2**63-1 would wrap around), naming the feature and the first such row. (A column of another
    type than integer is refused by :func:`dailyrec.inputs.feature_arrays`, naming it.)"""
    import pyarrow as pa
    import pyarrow.compute as pc

    for n in sorted(int_features & set(table.column_names)):
        col = table.column(n)
        if pa.types.is_uint64(col.type):
            rows = np.flatnonzero(pc.fill_null(col, 0).to_numpy() > np.uint64(INT64_MAX))
            if len(rows):
                raise ValueError(f"{where}: row {int(rows[0])}: feature '{n}' = {col[int(rows[0])].as_py()} does "
                                 f"not fit a 64-bit signed integer ({len(rows)} such row(s))")


# ---- scoring ------------------------------------------------------------------------------------
class Scorer:
    """The published ranking model, loaded once: ``score(rows) -> [{"row", ids, <task>: prediction, ...}]``
    (``tasks``: the model's task specs, default click and conversion)."""

    def __init__(self, cfg: Config | None = None, cur_date: str | None = None, hour: int | None = None):
        from models.serving import load_ranking_model

        self.cfg = cfg or load_config()
        self.store = open_store(self.cfg)
        self.info = published_model(self.store, cur_date, hour)
        self.rate = float(self.info["negative_downsample_rate"])
        self.tasks = tasks_of(self.info)
        self.ranker = load_ranking_model(self.info["saved_model"])
        self.features = list(self.ranker.feature_names)
        self.int_features = {n for n, s in self.ranker.input_signature.items() if s.dtype.is_integer}
        self.float_features = {n for n, s in self.ranker.input_signature.items() if s.dtype.is_floating}

    def _check(self, columns: list[str], where: str) -> None:
        missing = [n for n in self.features if n not in columns]
        if missing:
            raise ValueError(f"{where}: missing feature column(s) {missing}; the ranking model "
                             f"{self.info['model_version']} needs {self.features}")

    def table_from_records(self, records: list[dict[str, Any]], where: str = "input") -> Any:
        """JSON objects -> an Arrow table of the model's features (and the id columns present)."""
        import pyarrow as pa

        if not records:
            raise ValueError(f"{where}: no rows to score")
        missing: dict[str, list[int]] = {}
        for i, rec in enumerate(records):
            if not isinstance(rec, dict):
                raise ValueError(f"{where}: row {i} is not a JSON object: {rec!r}")
            for n in self.features:
                if n not in rec:
                    missing.setdefault(n, []).append(i)
        if missing:
            detail = "; ".join(f"'{n}' (rows {rows[:5]}{'...' if len(rows) > 5 else ''})" for n, rows in missing.items())
            raise ValueError(f"{where}: missing feature column(s) {sorted(missing)}: {detail}; the ranking model "
                             f"{self.info['model_version']} needs {self.features}")
        cols: dict[str, Any] = {}
        for n in [*ID_COLUMNS, *self.features]:
            if n in cols or not any(n in r for r in records):
                continue
            values = [r.get(n) for r in records]
            for i, v in enumerate(values):
                check_value(n, v, n in self.int_features, f"{where}: row {i}", numeric=n in self.float_features)
            if n in self.int_features:
                cols[n] = pa.array(values, pa.int64())
            elif n in self.float_features:
                cols[n] = pa.array(values, pa.float64())
            else:
                cols[n] = pa.array([None if v is None else str(v) for v in values], pa.string())
        return pa.table(cols)

    def score(self, rows: Any, where: str = "input") -> list[dict[str, Any]]:
        """Score an Arrow table or a list of dicts; calibrated probabilities per row."""
        import pyarrow as pa

        table = rows if isinstance(rows, pa.Table) else self.table_from_records(list(rows), where)
        self._check(table.column_names, where)
        check_table(table, self.int_features, where)
        if table.num_rows == 0:
            raise ValueError(f"{where}: no rows to score")
        _, cal = predict_calibrated(self.ranker, table, self.rate, where=where, tasks=self.tasks)
        ids = {c: table.column(c).to_pylist() for c in ID_COLUMNS if c in table.column_names}
        out = []
        for i in range(table.num_rows):
            row: dict[str, Any] = {"row": i, **{c: v[i] for c, v in ids.items()}}
            for t in self.tasks:
                row[t["name"]] = round(float(cal[t["name"]][i]), 6)
            out.append(row)
        return out


def _not_json(name: str) -> Any:
    raise json.JSONDecodeError(f"{name} is not a JSON value (a number must be finite)", name, 0)


def read_rows(path: str | None, stream: Any = None) -> tuple[Any, str]:
    """Rows from a Parquet file, a JSON-lines file, or (``path`` None) JSON lines on ``stream``."""
    import pyarrow.parquet as pq

    if path is not None and not path.endswith((".jsonl", ".json", ".ndjson")):
        return pq.read_table(path), path
    where = path or "stdin"
    fh = open(path) if path is not None else (stream or sys.stdin)
    try:
        records = []
        for k, line in enumerate(fh, start=1):
            if line.strip():
                try:
                    records.append(json.loads(line, parse_constant=_not_json))
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{where}, line {k}: not valid JSON ({exc})") from None
    finally:
        if path is not None:
            fh.close()
    return records, where


def score_input(cfg: Config, input: str | None = None, cur_date: str | None = None,
                limit: int | None = None, hour: int | None = None) -> dict[str, Any]:
    """Score rows with the published ranking model (calibrated click and conversion probabilities).

    ``input``: a ``.parquet`` file, or a ``.jsonl`` file (default: JSON lines on stdin);
    ``cur_date``: score with the model published for this day (default: the newest published,
    hourly passes included: :func:`published_model`); ``hour``: with the pass ``(cur_date, hour)``;
    ``limit``: score only the first N rows. Returns ``{"rows": [scored row], "where",
    "model_version", "published_for", "rate"}`` (:func:`print_scores` prints it).
    Raises:
        ValueError: a row misses a feature, or is not JSON; FileNotFoundError: no published model.
    """
    rows, where = read_rows(input)
    if limit is not None:
        rows = rows.slice(0, limit) if hasattr(rows, "slice") else rows[:limit]
    scorer = Scorer(cfg, cur_date, hour)
    return {"rows": scorer.score(rows, where=where), "where": where, "model_version": scorer.info["model_version"],
            "published_for": published_for(scorer.info), "rate": scorer.rate}


def print_scores(result: dict[str, Any]) -> None:
    """One JSON line per scored row on stdout; a summary line on stderr."""
    for row in result["rows"]:
        print(json.dumps(row))
    print(f"scored {len(result['rows'])} row(s) of {result['where']} with {result['model_version']} (published for "
          f"{result['published_for']}, calibrated from r={result['rate']:g})", file=sys.stderr)


if __name__ == "__main__":
    from dailyrec import cli

    cli.main(score_input, render=print_scores, log_level=logging.WARNING)
