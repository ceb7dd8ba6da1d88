"""The summary of one pass (``tasks.hourly.report``): prequential metrics, samples, model, delta,
publish and freshness, read from what the pass's steps wrote (docs/hourly.md). No clock is read:
the freshness is the publish record's ``freshness_s`` (``dailyrec.publishing.delta``), else its
``switched_at`` minus the time of the pass's last ``_SUCCESS`` file."""

from __future__ import annotations

import datetime as dt
from typing import Any

from dailyrec.passes import pass_dir, pass_hours, pass_label, pass_start
from dailyrec.step import StepRun
from dailyrec.storage import SUCCESS_MARKER

NAME = "two_tower"


def _read(run: StepRun, path: str) -> dict[str, Any] | None:
    return run.store.read_json(path) if run.store.exists(path) else None


def _epoch(value: Any) -> float | None:
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        except ValueError:
            return None
    return None


def pass_summary(run: StepRun, hour: int) -> dict[str, Any]:
    """``{"pass", "hour", "hours", "prequential", "samples", "model", "delta", "published", "freshness_s",
    "missing", "verdict"}`` of the pass holding ``hour``."""
    cfg, store = run.cfg, run.store
    start = pass_start(cfg, hour)
    hours = pass_hours(cfg, start)
    k = cfg.passes.prequential_k
    pre = _read(run, f"{run.partition(f'prequential/{NAME}', start)}/metrics.json")
    smp = _read(run, f"{run.partition('pass_samples', start)}/_manifest.json")
    mdl = _read(run, f"{pass_dir(store, NAME, run.cur_date, start)}/_manifest.json")
    dlt = _read(run, f"{run.partition(f'deltas/{NAME}', start)}/_manifest.json")
    pub = _read(run, f"{run.partition(f'registry/{NAME}', start)}/published.json")
    missing = [n for n, v in (("pass_samples", smp), ("prequential", pre), ("model", mdl), ("delta", dlt)) if v is None]
    keys = [f"recall_at_{k}", f"popularity_recall_at_{k}", f"new_item_recall_at_{k}", "auc", "users", "clicks",
            "impressions", "model_version"]
    freshness = pub.get("freshness_s") if pub is not None else None
    switched = _epoch(pub.get("switched_at", pub.get("published_at"))) if pub is not None else None
    if freshness is None and switched is not None:
        marker = f"{store.partition('logs', run.cur_date, hours[-1])}/{SUCCESS_MARKER}"
        if store.exists(marker):
            mtime = store.fs.get_file_info(marker).mtime
            if mtime is not None:
                freshness = round(switched - mtime.timestamp(), 3)
    verdict = "complete" if not missing else f"incomplete: no {', '.join(missing)}"
    if pub is not None:
        verdict += f"; published {pub.get('version')}"
    return {
        "pass": pass_label(run.cur_date, start), "cur_date": run.cur_date, "hour": start, "hours": hours,
        "prequential": {key: pre.get(key) for key in keys} if pre else None,
        "samples": {"rows": smp.get("rows"), "admitted": smp.get("admitted"),
                    "vocab_sizes": smp.get("vocab_sizes")} if smp else None,
        "model": {"model_version": mdl.get("model_version"),
                  "warm_start_from": (mdl.get("warm_start") or {}).get("from"),
                  "final_loss": mdl.get("final_loss"), "trained": mdl.get("trained")} if mdl else None,
        "delta": {"counts": dlt.get("counts"), "dim": dlt.get("dim"), "model_version": dlt.get("model_version")}
        if dlt else None,
        "published": {k2: pub.get(k2) for k2 in ("version", "kind", "parent", "base", "depth", "upserts", "deletes",
                                                  "switched_at", "model_version")} if pub else None,
        "freshness_s": freshness, "missing": missing, "verdict": verdict,
    }


def render_markdown(s: dict[str, Any]) -> str:
    """A short Markdown page of :func:`pass_summary`."""
    lines = [f"# Pass {s['pass']} (hours {s['hours'][0]:02d}-{s['hours'][-1]:02d})", "", f"Verdict: {s['verdict']}", ""]
    for section in ("prequential", "samples", "model", "delta", "published"):
        lines.append(f"## {section}")
        v = s.get(section)
        if not v:
            lines += ["(none)", ""]
            continue
        lines += [f"- {key}: {val}" for key, val in v.items()] + [""]
    lines.append(f"Freshness (s from the last hour's _SUCCESS to the publish): {s['freshness_s']}")
    return "\n".join(lines) + "\n"
