"""The per-date run report of both daily DAGs, from the steps' own manifests.

The stages are ``tasks.retrieval.report`` and ``tasks.ranking.report``
(``python -m tasks.retrieval.report --cur-date 2026-11-02``); both call :func:`write_report`.
It reads the manifests and reports the steps wrote for ``cur_date`` (whatever exists: a run that
stopped at the gate still gets a report) and writes ``reports/daily_<pipeline>/dt=D/report.json``,
``report.md`` and ``report.html`` (the page of the Airflow UI's Report tab, self-contained with its
plots: :func:`dailyrec.ui.pages.report_html`); the summary is also logged, so it shows in the
Airflow task log.
"""

from __future__ import annotations

import logging
from typing import Any

from dailyrec.config import Config

log = logging.getLogger("dailyrec.report")

RETRIEVAL_SOURCES = {
    "validate_day": "day_checks/{d}/report.json",
    "features": "features/{d}/_manifest.json",
    "samples": "samples/{d}/_manifest.json",
    "train": "models/two_tower/{d}/_manifest.json",
    "evaluate": "eval/two_tower/{d}/report.json",
    "export": "embeddings/{d}/_manifest.json",
    "index": "index/{d}/_manifest.json",
    "publish": "registry/two_tower/{d}/published.json",
    "serving_check": "serving_checks/{d}/_manifest.json",
}
RANKING_SOURCES = {
    "ranking_samples": "ranking_samples/{d}/_manifest.json",
    "train": "models/mmoe/{d}/_manifest.json",
    "evaluate": "eval/mmoe/{d}/report.json",
    "publish": "registry/mmoe/{d}/published.json",
}


def sources_of(pipeline: str) -> dict[str, str]:
    """``{step: path pattern under the data root}`` of ``"retrieval"`` or ``"ranking"``.

    Raises:
        ValueError: an unknown pipeline."""
    if pipeline not in ("retrieval", "ranking"):
        raise ValueError(f"pipeline must be 'retrieval' or 'ranking', got {pipeline!r}")
    return RETRIEVAL_SOURCES if pipeline == "retrieval" else RANKING_SOURCES


def collect(store: Any, cur_date: str, sources: dict[str, str]) -> dict[str, Any]:
    """``{step: its manifest/report (dict) or None}`` for ``cur_date`` (``sources``: :func:`sources_of`)."""
    out: dict[str, Any] = {}
    for step, pattern in sources.items():
        path = store.path(pattern.format(d=f"dt={cur_date}"))
        out[step] = store.read_json(path) if store.exists(path) else None
    return out


def _fmt(x: Any, nd: int = 4) -> str:
    return f"{x:.{nd}f}" if isinstance(x, float) else str(x)


def _retrieval_lines(cur_date: str, s: dict[str, Any]) -> list[str]:
    lines = [f"# daily_retrieval report for {cur_date}", ""]
    v = s["validate_day"]
    lines.append(f"- logs: {v['rows']['logs']} impressions, {v['clicks']} clicks (CTR {_fmt(v['ctr'])}), "
                 f"{v['rows']['items']} catalog items" if v else "- logs: not validated")
    f = s["features"]
    lines.append(f"- features: {f['rows']}" if f else "- features: not built")
    sm = s["samples"]
    if sm:
        lines.append(f"- samples: {sm['rows']}")
        stats = sm.get("stats") or {}
        for src, st in (stats.get("sources") or {}).items():
            lines.append(f"  - {src}: {st.get('count')} rows, {st.get('distinct_items')} items, mean log-popularity "
                         f"{_fmt(st.get('mean_log_popularity'), 3)}, cold share {_fmt(st.get('cold_share'), 3)}")
        if stats.get("skipped_sources"):
            lines.append(f"  - skipped sources: {stats['skipped_sources']}")
    else:
        lines.append("- samples: not selected")
    t = s["train"]
    if t:
        warm = t.get("warm_start", {}).get("from")
        lines.append(f"- training: model {t['model_version']}, loss {t['loss']}, final loss {_fmt(t['final_loss'])}, "
                     f"{t['examples_per_s']} examples/s, warm start from {warm or 'nothing (cold start)'}")
    else:
        lines.append("- training: no model")
    e = s["evaluate"]
    if e:
        gate = e["gate"]
        lines.append(f"- gate on {gate['metric']}: {'PASSED' if gate['passed'] else 'FAILED'}"
                     + (f" ({gate['verdict']})" if gate.get("verdict") else "")
                     + ("" if gate["passed"] else f" ({'; '.join(gate['reasons'])})"))
        lines += gate_detail_lines(gate)
        ks = sorted({int(k.rsplit('_', 1)[1]) for k in e["table"]["new"] if k.startswith("recall_at_")})
        lines += ["", "| model | " + " | ".join(f"recall@{k} | ndcg@{k}" for k in ks) + " |",
                  "|---|" + "---|" * (2 * len(ks))]
        for name, m in e["table"].items():
            lines.append(f"| {name} | " + " | ".join(f"{m[f'recall_at_{k}']:.4f} | {m[f'ndcg_at_{k}']:.4f}"
                                                     for k in ks) + " |")
        lines.append("")
    else:
        lines.append("- evaluation: not run")
    x = s["export"]
    lines.append(f"- export: {x['rows']['items']} item vectors (dim {x['dim']})" if x else "- export: not run")
    i = s["index"]
    if i:
        ix = i.get("index", {})
        lines.append(f"- index: {ix.get('type')} ({ix.get('factory')}), {ix.get('n')} items, recall@{ix.get('recall_k')} "
                     f"vs exact search {_fmt(ix.get('recall_at_k'))} on {ix.get('recall_queries')}")
    else:
        lines.append("- index: not built")
    p = s["publish"]
    if p:
        lines.append(f"- Redis: version {p.get('version')} is current (previous {p.get('previous_version')}), "
                     f"{p.get('keys_written')} keys, {_fmt(p.get('seconds'), 2)} s")
    else:
        lines.append("- Redis: nothing published for this date (the last good version stays online)")
    return lines


def gate_detail_lines(gate: dict[str, Any]) -> list[str]:
    """The retrieval gate's holdout size, its paired intervals and its notes, as Markdown list items."""
    out = []
    h = gate.get("holdout")
    if h:
        out.append(f"  - holdout: {h['users']} users, {h['clicks']} clicks over the last {h['hours']} hour(s) "
                   f"({h['start']} .. {h['end']}; minimum {h['min_users']} users, {h['min_clicks']} clicks)"
                   + (f"; extended: {h['reason']}" if h.get("extended") or not h.get("enough", True) else ""))
    for name, c in (gate.get("comparisons") or {}).items():
        out.append(f"  - new - {name}: {c['mean_diff']:+.4f}, {round(100 * c['confidence'])}% interval "
                   f"[{c['ci'][0]:+.4f}, {c['ci'][1]:+.4f}] over {c['users']} users, margin {c['margin']}: "
                   f"{c['verdict']}")
    out += [f"  - note: {n}" for n in gate.get("notes") or []]
    return out


def _ranking_lines(cur_date: str, s: dict[str, Any]) -> list[str]:
    lines = [f"# daily_ranking report for {cur_date}", ""]
    rs = s["ranking_samples"]
    lines.append(f"- samples: {rs['rows']}" if rs else "- samples: not selected")
    t = s["train"]
    lines.append(f"- training: model {t.get('model_version')}, {t.get('examples_per_s')} examples/s, "
                 f"warm start from {t.get('warm_start', {}).get('from') or 'nothing'}" if t else "- training: no model")
    e = s["evaluate"]
    if e:
        gate = e["gate"]
        lines.append(f"- gate: {'PASSED' if gate['passed'] else 'FAILED'} {'; '.join(gate.get('reasons', []))}")
        for name, m in e.get("table", {}).items():
            lines.append(f"  - {name}: " + ", ".join(f"{k}={_fmt(v)}" for k, v in m.items()
                                                      if isinstance(v, (int, float))))
        for w in e.get("warnings", []):
            lines.append(f"  - warning: {w}")
    p = s["publish"]
    lines.append(f"- published: {p.get('model_dir')}" if p else "- published: nothing for this date")
    return lines


def write_report(run: Any, pipeline: str, cfg: Config | None = None) -> dict[str, Any]:
    """Write the ``pipeline`` (``"retrieval"`` or ``"ranking"``) report of a date.

    Args:
        run: a ``cur_date`` (``YYYY-MM-DD``), or the calling step's :class:`dailyrec.step.StepRun`.
        cfg: the config when ``run`` is a date (default config when None).
    Returns:
        ``{"report": path of report.md, "html": path of report.html, "steps_done": [step, ...],
        "published_version": the version published for the date (Redis version or ranking model
        version) or None}``.
    Raises:
        ValueError: an unknown pipeline, or a bad ``cur_date``.
    """
    from dailyrec.pass_curve import collect_passes, markdown_lines
    from dailyrec.step import begin
    from dailyrec.ui.pages import report_html

    sources = sources_of(pipeline)
    run = begin(f"{pipeline}_report", run, cfg) if isinstance(run, str) else run
    store, cur_date = run.store, run.cur_date
    steps = collect(store, cur_date, sources)
    lines = (_retrieval_lines if pipeline == "retrieval" else _ranking_lines)(cur_date, steps)
    passes = collect_passes(store, cur_date)   # the day's hourly passes, if any: a curve over the hours
    text = "\n".join(lines + markdown_lines(passes)) + "\n"
    out = store.partition(f"reports/daily_{pipeline}", cur_date)
    with store.atomic_output(out) as tmp:
        doc = {"cur_date": cur_date, "pipeline": pipeline, "steps": steps}
        store.write_json(f"{tmp}/report.json", {**doc, "passes": passes} if passes else doc)
        store.write_text(f"{tmp}/report.md", text)
        store.write_text(f"{tmp}/report.html", report_html(pipeline, cur_date, steps, sources, passes=passes))
    log.info("run summary\n%s", text)
    done = [k for k, v in steps.items() if v is not None]
    pub = steps.get("publish") or {}
    return {"report": f"{out}/report.md", "html": f"{out}/report.html", "steps_done": done,
            "published_version": pub.get("version") or pub.get("model_version")}
