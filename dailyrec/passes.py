"""Pass identity, the warm-start chain of hourly incremental training, and pass-model retention.

A **pass** (docs/hourly.md; the streaming-trainer design of PaddleRec's online trainer) is
``training.split_per_pass`` = ``s`` consecutive hourly log partitions of one day. It is identified
by ``(cur_date, hour)`` with ``hour`` the FIRST hour of the pass: it covers hours
``hour .. hour + s - 1``. Only the run of the last hour of a pass trains (:func:`is_pass_end`).

The chain: pass ``(D, h)`` warm starts from the pass before it on the same day, ``(D, h - s)``, and
the first pass of a day from the daily **base** of ``D - 1`` (``models/<name>/dt=D-1/``, which must
have passed its gate). A missing link is a :class:`MissingPassError` naming it: the chain stops,
it never skips data.

Storage (under the data root)::

    passes/<name>/dt=D/hour=HH/   model/ (Keras archive: the pass checkpoint), user_tower/,
                                  item_tower/, vocabularies.json, _manifest.json

Retention (:func:`prune_checkpoints`): a pass's checkpoint (its ``model/`` archive) is kept every
``training.checkpoint_per_pass`` passes and always for the day's last pass, at most
``passes.checkpoints_keep`` of them; the towers stay (a published delta's user tower lives there).

Light module: no heavy imports.
"""

from __future__ import annotations

import logging
from typing import Any

from dailyrec.config import Config
from dailyrec.dates import check_hour, parse_date, previous
from dailyrec.errors import MissingPassError  # noqa: F401 (re-exported: the passes' named error)
from dailyrec.storage import MANIFEST, SUCCESS_MARKER, Store

log = logging.getLogger("dailyrec.passes")

PASSES_DATASET = "passes"
CHECKPOINT_DIR = "model"
"""The part of a pass directory that is its checkpoint (the warm-startable Keras archive)."""


class MissingHourError(FileNotFoundError):
    """An hour of a pass has no complete log partition (no ``_SUCCESS``); the message names it."""


def _split(cfg: Config) -> int:
    return cfg.training.split_per_pass


def pass_start(cfg: Config, hour: int) -> int:
    """The first hour of the pass that holds ``hour`` (0-23): ``hour - hour % split_per_pass``."""
    return check_hour(hour) - hour % _split(cfg)


def pass_hours(cfg: Config, hour: int) -> list[int]:
    """The hours of the pass that holds ``hour``: ``[start .. start + split_per_pass - 1]``."""
    start = pass_start(cfg, hour)
    return list(range(start, start + _split(cfg)))


def is_pass_end(cfg: Config, hour: int) -> bool:
    """Whether ``hour`` is the last hour of its pass (``hour % s == s - 1``): the run that trains."""
    return check_hour(hour) % _split(cfg) == _split(cfg) - 1


def pass_index(cfg: Config, hour: int) -> int:
    """0-based index of the pass within its day (``start // split_per_pass``)."""
    return pass_start(cfg, hour) // _split(cfg)


def is_last_pass(cfg: Config, hour: int) -> bool:
    """Whether the pass holding ``hour`` is the day's last one."""
    return pass_start(cfg, hour) + _split(cfg) == 24


def pass_label(cur_date: str, hour: int) -> str:
    """``"2026-11-02T05"``: how a pass is named in manifests, logs and versions."""
    return f"{parse_date(cur_date).isoformat()}T{check_hour(hour):02d}"


def pass_dir(store: Store, name: str, cur_date: str, hour: int) -> str:
    """``<root>/passes/<name>/dt=D/hour=HH`` (``hour``: the pass's first hour)."""
    return store.partition(f"{PASSES_DATASET}/{name}", cur_date, hour)


def previous_pass(store: Store, cfg: Config, cur_date: str, hour: int) -> tuple[str, int] | None:
    """``(cur_date, first hour)`` of the pass before the one holding ``hour`` on the same day, or None
    for the day's first pass (whose warm source is the daily base, :func:`warm_source_for_pass`).
    Only computes the identity; whether that pass exists is :func:`warm_source_for_pass`'s check."""
    start = pass_start(cfg, hour)
    return None if start == 0 else (parse_date(cur_date).isoformat(), start - _split(cfg))


def warm_source_for_pass(store: Store, cfg: Config, name: str, cur_date: str, hour: int) -> tuple[str, str]:
    """``(label, model dir)`` the pass holding ``hour`` warm starts from.

    * a later pass of the day: the previous pass's directory (label ``"D" + "T" + "HH"``, e.g.
      ``2026-11-02T04``), which must hold a checkpoint (``model/``) and its ``_manifest.json``;
    * the day's first pass: the daily base ``models/<name>/dt=D-1/`` (label: that date), which must
      have its ``_manifest.json``, its ``model/`` and a passed gate (``eval/<name>/dt=D-1``).

    Raises:
        MissingPassError: the previous pass or the base is missing, incomplete, without checkpoint
            or (base) not gate-passed; the message names it and the directory.
    """
    from dailyrec.registry import gate_passed, model_dir

    d = parse_date(cur_date).isoformat()
    prev = previous_pass(store, cfg, d, hour)
    if prev is not None:
        path = pass_dir(store, name, *prev)
        label = pass_label(*prev)
        if not store.exists(f"{path}/{MANIFEST}"):
            raise MissingPassError(f"{name} pass {pass_label(d, pass_start(cfg, hour))} needs the previous pass "
                                   f"{label} ({path}), which is missing or incomplete: run that pass first "
                                   "(a missing hour stops the chain; no data is skipped)")
        if not store.exists(f"{path}/{CHECKPOINT_DIR}"):
            raise MissingPassError(f"{name} pass {pass_label(d, pass_start(cfg, hour))}: the previous pass {label} "
                                   f"({path}) has no checkpoint ({CHECKPOINT_DIR}/ was pruned): re-run the passes "
                                   "from the last kept checkpoint")
        return label, path
    base_day = previous(d)
    path = model_dir(store, name, base_day)
    what = f"{name} pass {pass_label(d, 0)} (the day's first) needs the daily base of {base_day} ({path})"
    if not store.exists(f"{path}/{MANIFEST}") or not store.exists(f"{path}/{CHECKPOINT_DIR}"):
        raise MissingPassError(f"{what}, which is missing or incomplete: run the daily pipeline of {base_day} first")
    if not gate_passed(store, name, base_day):
        raise MissingPassError(f"{what}, whose evaluation gate did not pass (eval/{name}/dt={base_day})")
    return base_day, path


def log_hours_complete(store: Store, cur_date: str, hours: list[int]) -> tuple[bool, str]:
    """``(all complete, message)``: every hour's ``logs/dt=D/hour=HH/_SUCCESS`` exists (the sensor's check)."""
    missing = [h for h in hours if not store.exists(f"{store.partition('logs', cur_date, h)}/{SUCCESS_MARKER}")]
    if missing:
        return False, f"logs dt={cur_date}: no {SUCCESS_MARKER} yet for hour(s) {missing}"
    return True, f"logs dt={cur_date} hours {hours}: complete ({SUCCESS_MARKER})"


def require_hours(store: Store, cur_date: str, hours: list[int]) -> list[str]:
    """The Parquet files of the pass's hours, in hour order; :class:`MissingHourError` names the first
    hour without ``_SUCCESS``."""
    files: list[str] = []
    for h in hours:
        part = store.partition("logs", cur_date, h)
        if not store.exists(f"{part}/{SUCCESS_MARKER}"):
            raise MissingHourError(f"log partition {part} is missing or incomplete (no {SUCCESS_MARKER}): the pass "
                                   "cannot run without it (a missing hour stops the chain; no data is skipped)")
        files += store.list_files(part, ".parquet")
    return files


def pass_vocabularies(store: Store, cfg: Config, cur_date: str, hour: int,
                      base_vocabularies: dict[str, list[str]]) -> tuple[dict[str, list[str]], dict[str, Any]]:
    """The pass's vocabularies (``{feature: [id, ...]}``: base ∪ ids admitted so far) and the
    admission summary (``{"admitted": {feature: [new ids]}, ...}``), through
    ``dailyrec.admission.pass_vocabularies`` (show/click admission, docs/hourly.md). Without that
    module the base vocabularies are used as they are (nothing admitted; ``"admission": "absent"``)."""
    try:
        from dailyrec import admission
    except ImportError:
        admission = None
    if admission is None or not hasattr(admission, "pass_vocabularies"):
        log.warning("dailyrec.admission.pass_vocabularies is not available: the pass uses the base vocabularies "
                    "(no id admitted)")
        return ({k: list(v) for k, v in base_vocabularies.items()},
                {"admitted": {k: [] for k in base_vocabularies}, "state": None, "admission": "absent"})
    return admission.pass_vocabularies(store, cfg, cur_date, hour, base_vocabularies)


def _kept(cfg: Config, hour: int) -> bool:
    return (pass_index(cfg, hour) + 1) % cfg.training.checkpoint_per_pass == 0 or is_last_pass(cfg, hour)


def pass_checkpoints(store: Store, name: str) -> list[tuple[str, int]]:
    """``(cur_date, hour)`` of every pass of ``name`` that still holds a checkpoint, oldest first."""
    out = []
    for d in store.list_partitions(f"{PASSES_DATASET}/{name}"):
        base = store.partition(f"{PASSES_DATASET}/{name}", d)
        for h in range(24):
            if store.exists(f"{base}/hour={h:02d}/{CHECKPOINT_DIR}"):
                out.append((d, h))
    return out


def prune_checkpoints(store: Store, cfg: Config, name: str, cur_date: str, hour: int) -> list[str]:
    """After pass ``(cur_date, hour)`` is written: delete the checkpoints (``model/``) no later pass
    needs. Never touched: this pass and its warm source (a re-run of this pass still finds it). Of
    the others, a pass off the ``training.checkpoint_per_pass`` cadence (not the day's last) loses its
    checkpoint, then the oldest kept ones beyond ``passes.checkpoints_keep``. Towers and manifests
    stay. Returns the deleted directories."""
    d = parse_date(cur_date).isoformat()
    start = pass_start(cfg, hour)
    protect = {(d, start)} | ({previous_pass(store, cfg, d, start)} - {None})
    candidates = [p for p in pass_checkpoints(store, name) if p not in protect and p < (d, start)]
    doomed = [p for p in candidates if not _kept(cfg, p[1])]
    kept = [p for p in pass_checkpoints(store, name) if p not in doomed]
    extra = len(kept) - cfg.passes.checkpoints_keep
    doomed += [p for p in kept if p in candidates][:max(0, extra)]
    deleted = []
    for p in sorted(set(doomed)):
        path = f"{pass_dir(store, name, *p)}/{CHECKPOINT_DIR}"
        store.delete_dir(path)
        deleted.append(path)
    if deleted:
        log.info("pruned %d pass checkpoint(s) of %s: %s", len(deleted), name, deleted)
    return deleted
