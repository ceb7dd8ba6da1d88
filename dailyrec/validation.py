"""The validation record of a day: what ``tasks.ingest.validate_day`` decided, and the guard that
makes the steps reading logs refuse a day that did not pass (docs/data-contract.md).

``<root>/day_checks/dt=D/`` holds exactly one of:

* ``report.json``: the day passed; besides its counts it lists every input file of the day
  (``input_files``: path under the data root -> ``"size:mtime_ns"``: the logs of the 24 hours, the
  users and items snapshots), so a day whose files changed after the check is not taken as checked;
* ``failed.json``: the day failed; ``error`` is the check's message (partition, file, column, row);
  ``contract_ok`` is true when only a volume check failed (then ``input_files`` is there too).

Both are written atomically and replace each other (a re-run of the check decides again).
:func:`require_validated` is what a step calls (``run.require_validated(days)``) before it reads
logs. Light module: no heavy imports.
"""

from __future__ import annotations

from typing import Any

import pyarrow.fs as pafs

from dailyrec.errors import ContractError
from dailyrec.storage import Store

PASSED = "report.json"
FAILED = "failed.json"
SHOWN = 8  # days listed in one refusal


def input_files(store: Store, cur_date: str) -> dict[str, str]:
    """``{path under the root: "size:mtime_ns"}`` of every file of the day's logs and snapshots
    (names under a ``.``-prefixed folder or file, i.e. writes in progress, are left out)."""
    out: dict[str, str] = {}
    prefix = store.root.rstrip("/") + "/"
    for dataset in ("logs", "users", "items"):
        part = store.partition(dataset, cur_date)
        if not store.is_dir(part):
            continue
        for info in store.fs.get_file_info(pafs.FileSelector(part, recursive=True)):
            rel = info.path[len(prefix):] if info.path.startswith(prefix) else info.path
            if info.type == pafs.FileType.File and not any(x.startswith(".") for x in rel.split("/")):
                out[rel] = f"{info.size}:{info.mtime_ns}"
    return dict(sorted(out.items()))


def record_failed(store: Store, cur_date: str, error: BaseException, manifest: dict[str, Any]) -> str:
    """Replace the day's record with ``failed.json`` (the error and the check's manifest fields)."""
    out = store.partition("day_checks", cur_date)
    with store.atomic_output(out) as tmp:
        store.write_json(f"{tmp}/{FAILED}", {**manifest, "passed": False, "error_type": type(error).__name__,
                                              "error": str(error)})
    return f"{out}/{FAILED}"


def _problem(store: Store, day: str, window_day: bool) -> tuple[str, bool] | None:
    """``(what is wrong, is it a failure rather than a missing record)`` or None when ``day`` may
    be read: it passed, or (``window_day``) only its volume check failed (``contract_ok``)."""
    part = store.partition("day_checks", day)
    if store.exists(f"{part}/{FAILED}"):
        failed = store.read_json(f"{part}/{FAILED}")
        if not (window_day and failed.get("contract_ok")):
            return f"{day} failed validation: {failed['error']}", True
        recorded = failed.get("input_files")
    elif not store.exists(f"{part}/{PASSED}"):
        return (f"{store.partition('logs', day)} has not passed validation ({part}/{PASSED} "
                "is missing)"), False
    else:
        recorded = store.read_json(f"{part}/{PASSED}").get("input_files")
    if recorded is None:
        return f"{day}: {part}/{PASSED} predates input lists (written by an older version)", True
    now = input_files(store, day)
    changed = sorted(k for k in set(recorded) | set(now) if recorded.get(k) != now.get(k))
    if changed:
        more = f" and {len(changed) - 3} more" if len(changed) > 3 else ""
        return f"{day}: file(s) changed since the day passed validation: {', '.join(changed[:3])}{more}", True
    return None


def require_validated(store: Store, days: list[str], cur_date: str, step: str) -> None:
    """Refuse unless every day of ``days`` that has logs (and ``cur_date`` always) passed validation
    and its files are the ones validated. A day other than ``cur_date`` whose only failure was a
    volume check (an empty or small day: its rows meet the contract) is accepted.

    Raises:
        ContractError: a day failed validation, or its files changed since it passed (each named).
        FileNotFoundError: a day was never validated (no record), naming ``day_checks/dt=D``.
    """
    problems = [(d, *p) for d in sorted(set(days) | {cur_date})
                if (d == cur_date or store.is_dir(store.partition("logs", d)))
                and (p := _problem(store, d, window_day=d != cur_date))]
    if not problems:
        return
    shown = "; ".join(msg for _, msg, _ in problems[:SHOWN])
    more = f"; and {len(problems) - SHOWN} more day(s)" if len(problems) > SHOWN else ""
    cmds = " && ".join(f"python -m tasks.ingest.validate_day --cur-date {d}" for d, _, _ in problems[:SHOWN])
    failed = any(f for _, _, f in problems)
    msg = (f"step {step} (cur_date {cur_date}) reads logs that have not passed validation: {shown}{more}. "
           f"{'Fix the input, then run' if failed else 'Run'} {cmds} first")
    raise (ContractError if failed else FileNotFoundError)(msg)


def validate_days(cfg: Any, days: list[str]) -> dict[str, str]:
    """``tasks.ingest.validate_day`` for each of ``days`` in date order (the previous day's report
    feeds the volume check), e.g. every date an import wrote. Each verdict is recorded; returns
    ``{day: "passed" or the error}`` and raises nothing for a day that fails (the caller decides)."""
    from dailyrec.stages import step_of

    step, out = step_of("ingest.validate_day"), {}
    for d in sorted(days):
        try:
            step(d, cfg)
            out[d] = "passed"
        except (ContractError, FileNotFoundError) as exc:
            out[d] = str(exc)
    return out
