"""The run report as an HTML page: the Report tab of a run in Airflow, and ``report.html`` per date.

:func:`report_html` reads what :func:`dailyrec.report.collect` reads (the steps' manifests and
reports, the registry entry) and lays it out verdict first: the run's ``cur_date``, the gate's
verdict and reasons, then sampling statistics per source, training curves (loss and learning rate
per epoch, from the training manifest's ``history``), the gate's table, index type and recall vs
exact search, the Redis version and its key count, the serving check's top items, and the
artifacts. The page is one self-contained HTML document (inline CSS, inline PNG plots).
"""

from __future__ import annotations

import html
from typing import Any

from dailyrec.ui import plots

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:16px 24px;color:#1a202c;max-width:1100px}
h1{font-size:1.4em;margin:.2em 0} h2{font-size:1.1em;margin:1.2em 0 .4em;border-bottom:1px solid #e2e8f0}
table{border-collapse:collapse;margin:.3em 0 .8em;font-size:.9em} td,th{border:1px solid #e2e8f0;padding:3px 8px;
text-align:right} th{background:#f7fafc} td:first-child,th:first-child{text-align:left;white-space:nowrap}
.verdict{padding:10px 14px;border-radius:6px;font-size:1.1em;margin:.6em 0}
.ok{background:#e6ffed;border:1px solid #34a853} .bad{background:#ffeef0;border:1px solid #d93025}
.unknown{background:#fff8e1;border:1px solid #f9a825} .muted{color:#718096;font-size:.85em}
code{background:#f1f5f9;padding:0 3px;border-radius:3px} img.plot{max-width:100%;display:block;margin:.4em 0}
nav a{margin-right:14px} input{font-size:1em;padding:3px 6px}
"""


def esc(x: Any) -> str:
    return html.escape(str(x))


def fmt(x: Any, nd: int = 4) -> str:
    if isinstance(x, bool) or x is None:
        return esc("" if x is None else x)
    if isinstance(x, float):
        return f"{x:,.1f}" if abs(x) >= 100 else f"{x:.{nd}f}"
    if isinstance(x, int):
        return f"{x:,}"
    return esc(x)


def page(title: str, body: str, nav: str = "") -> str:
    """A complete HTML document."""
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>'
            f"<style>{CSS}</style></head><body>{nav}{body}</body></html>\n")


def table(header: list[str], rows: list[list[Any]], cls: str = "") -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{fmt(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f'<table class="{cls}"><tr>{head}</tr>{body}</table>'


def verdict_of(pipeline: str, steps: dict[str, Any]) -> tuple[str, str]:
    """``(css class, one line)`` from the data alone: the gate's decision and whether the date was
    published (the Airflow run's own verdict, when known, is shown instead by the plugin)."""
    e, p = steps.get("evaluate"), steps.get("publish")
    if not e:
        return "unknown", "no gate verdict: the run stopped before the evaluation"
    gate = e.get("gate", {})
    if not gate.get("passed"):
        return "bad", f"gate FAILED: {'; '.join(map(str, gate.get('reasons') or [])) or 'no reason given'}; nothing published"
    if p:
        version = p.get("version") or p.get("model_version")
        gone = " (withdrawn since: " + esc(p["withdrawn"].get("online")) + " is online)" if p.get("withdrawn") else ""
        return "ok", f"gate PASSED; published version {version}{gone}"
    return "ok", "gate PASSED; not published (publish off, or the publish step did not run)"


def _verdict_block(cur_date: str, pipeline: str, steps: dict[str, Any], run_verdict: str | None) -> str:
    cls, line = verdict_of(pipeline, steps)
    detail = ""
    if run_verdict:
        cls = "bad" if run_verdict.startswith(("FAILED", "gate failed")) else cls
        line, detail = f"{run_verdict} (Airflow run)", f'<br><span class="muted">from the data: {esc(line)}</span>'
    reasons = (steps.get("evaluate") or {}).get("gate", {}).get("reasons") or []
    extra = "".join(f"<li>{esc(r)}</li>" for r in reasons)
    return (f'<h1>daily_{esc(pipeline)} report for <span class="cur-date">{esc(cur_date)}</span></h1>'
            f'<div class="verdict {cls}" id="verdict"><b>Verdict:</b> {esc(line)}{detail}'
            + (f"<ul>{extra}</ul>" if extra else "") + "</div>")


def _sampling(steps: dict[str, Any]) -> str:
    sm = steps.get("samples")
    if not sm:
        return "<h2>Samples</h2><p>not selected</p>"
    stats = sm.get("stats") or {}
    rows = [[src, st.get("count"), st.get("distinct_items"), st.get("mean_log_popularity"), st.get("cold_share"),
             st.get("mean_log_q")] for src, st in (stats.get("sources") or {}).items()]
    out = ["<h2>Samples</h2>", table([f"{k} rows" for k in sm.get("rows", {})], [list(sm.get("rows", {}).values())]),
           table(["source", "rows", "distinct items", "mean log-popularity", "cold share", "mean logQ"], rows)]
    if stats.get("skipped_sources"):
        out.append(f"<p>skipped sources: {esc(stats['skipped_sources'])}</p>")
    return "".join(out)


def _training(steps: dict[str, Any], title: str) -> str:
    t = steps.get("train")
    if not t:
        return "<h2>Training</h2><p>no model trained</p>"
    histories = {"new" if title == "two-tower" else t.get("kind", "mmoe"): t.get("history") or {}}
    if (t.get("baseline") or {}).get("history"):
        histories[t["baseline"].get("kind", "baseline")] = t["baseline"]["history"]
    warm = (t.get("warm_start") or {}).get("from")
    fit_s = (t.get("timings_s") or {}).get("fit") or (t.get("timings_s") or {}).get("mmoe_fit")
    info = table(["model version", "final loss", "examples/s", "fit (s)", "warm start from"],
                 [[t.get("model_version"), t.get("final_loss"), t.get("examples_per_s"), fit_s,
                   warm or "nothing (cold start)"]])
    return "<h2>Training</h2>" + info + plots.training_curves(histories, title)


def _retrieval_gate(steps: dict[str, Any]) -> str:
    e = steps.get("evaluate")
    if not e:
        return "<h2>Gate</h2><p>evaluation not run</p>"
    tbl = e.get("table") or {}
    ks = sorted({int(k.rsplit("_", 1)[1]) for m in tbl.values() for k in m if k.startswith("recall_at_")})
    rows = [[name] + [m.get(f"{w}_at_{k}") for k in ks for w in ("recall", "ndcg")] for name, m in tbl.items()]
    gate = e.get("gate") or {}
    metric = gate.get("metric", "recall_at_50")
    cmps = gate.get("comparisons") or {}
    crow = [[f"new - {n}", c.get("mean_diff"), f"[{fmt(c['ci'][0])}, {fmt(c['ci'][1])}]", c.get("users"),
             c.get("margin"), c.get("verdict")] for n, c in cmps.items()]
    level = round(100 * next(iter(cmps.values()))["confidence"]) if cmps else 95
    h = gate.get("holdout") or {}
    hold = (f'<p>holdout: {fmt(h.get("users"))} users, {fmt(h.get("clicks"))} clicks over the last '
            f'{fmt(h.get("hours"))} hour(s) ({esc(h.get("start"))} .. {esc(h.get("end"))}; minimum '
            f'{fmt(h.get("min_users"))} users, {fmt(h.get("min_clicks"))} clicks)'
            + (f"; {esc(h.get('reason'))}" if h.get("extended") or not h.get("enough", True) else "") + "</p>"
            if h else "")
    notes = "".join(f"<li>{esc(n)}</li>" for n in gate.get("notes") or [])
    return ("<h2>Gate: new vs previous vs popularity</h2>"
            + (f"<p>verdict: <b>{esc(gate.get('verdict'))}</b></p>" if gate.get("verdict") else "")
            + table(["model"] + [f"{w}@{k}" for k in ks for w in ("recall", "ndcg")], rows)
            + (table(["paired over users", f"mean {metric} difference", f"{level}% interval", "users", "margin",
                      "verdict"], crow) if crow else "")
            + hold + (f"<p>notes:</p><ul>{notes}</ul>" if notes else "")
            + f'<p class="muted">gate metric <code>{esc(metric)}</code>; {fmt((e.get("rows") or {}).get("eval_users"))} '
              f"evaluation users</p>"
            + plots.bars({n: m.get(metric) for n, m in tbl.items()}, f"{metric} on the holdout", metric))


def _ranking_gate(steps: dict[str, Any]) -> str:
    e = steps.get("evaluate")
    if not e:
        return "<h2>Gate</h2><p>evaluation not run</p>"
    tbl = e.get("table") or {}
    tasks = sorted({k[:-4] for m in tbl.values() for k in m if k.endswith("_auc")})
    regression = sorted({k[:-5] for m in tbl.values() for k in m if k.endswith("_rmse")})
    cols = ([f"{t}_{w}" for t in tasks for w in ("auc", "logloss", "calibration")]
            + [f"{t}_{w}" for t in regression for w in ("rmse", "mae", "calibration")])
    rows = [[name] + [m.get(c) for c in cols] for name, m in tbl.items()]
    gates = e.get("gates") or {}
    grows = [[t, g.get("entropy"), g.get("row_entropy"), "yes" if g.get("collapsed") else "no",
              ", ".join(f"{w:.2f}" for w in g.get("mean_weight") or [])] for t, g in gates.items()]
    warn = "".join(f"<li>{esc(w)}</li>" for w in e.get("warnings") or [])
    return ("<h2>Gate: AUC (RMSE) and calibration per task</h2>" + table(["model"] + cols, rows)
            + plots.bars({n: m.get(f"{tasks[0]}_auc") for n, m in tbl.items()} if tasks else {},
                         f"{tasks[0] if tasks else ''} AUC on the holdout", "AUC")
            + "<h2>MMoE gates (entropy per task)</h2>"
            + table(["task", "entropy", "row entropy", "collapsed", "mean expert weights"], grows)
            + (f"<p>warnings:</p><ul>{warn}</ul>" if warn else ""))


def _index_and_redis(steps: dict[str, Any]) -> str:
    out = ["<h2>Index</h2>"]
    ix = (steps.get("index") or {}).get("index")
    if ix:
        out.append(table(["type", "factory", "items", f"recall@{ix.get('recall_k')} vs exact", "queries",
                          "build (s)"], [[ix.get("type"), ix.get("factory"), ix.get("n"), ix.get("recall_at_k"),
                                           ix.get("recall_queries"), ix.get("build_s")]]))
    else:
        out.append("<p>not built</p>")
    out.append("<h2>Redis</h2>")
    p = steps.get("publish")
    if p:
        out.append(table(["version", "keys", "vectors", "previous version", "seconds", "server"],
                         [[p.get("version"), p.get("keys_written"), p.get("vectors"), p.get("previous_version"),
                           p.get("seconds"), p.get("redis")]]))
    else:
        out.append("<p>nothing published for this date (the last good version stays online)</p>")
    sc = (steps.get("serving_check") or {}).get("checks")
    if sc:
        out.append("<h2>Serving check</h2>" + table(
            ["user", "path", "items", "top items", "version"],
            [[c.get("user_id"), c.get("path"), c.get("items"), ", ".join(c.get("top") or []), c.get("version")]
             for c in sc.values()]))
    return "".join(out)


def _ranking_publish(steps: dict[str, Any]) -> str:
    p = steps.get("publish")
    if not p:
        return "<h2>Published model</h2><p>nothing published for this date</p>"
    return "<h2>Published model</h2>" + table(["model version", "kind", "SavedModel"],
                                                [[p.get("model_version"), p.get("kind"), p.get("saved_model")]])


def artifacts(steps: dict[str, Any], sources: dict[str, str], cur_date: str, link: Any = None) -> str:
    """The manifest of each step found (a link when ``link(step)`` gives a URL) and its data paths."""
    rows = []
    for name, pattern in sources.items():
        rel = pattern.format(d=f"dt={cur_date}")
        if steps.get(name) is None:
            rows.append(f"<li>{esc(name)}: <span class='muted'>absent</span></li>")
            continue
        href = link(name) if link else None
        label = f'<a href="{esc(href)}">{esc(rel)}</a>' if href else f"<code>{esc(rel)}</code>"
        rows.append(f"<li>{esc(name)}: {label}</li>")
    return "<h2>Artifacts (under the data root)</h2><ul>" + "".join(rows) + "</ul>"


def report_html(pipeline: str, cur_date: str, steps: dict[str, Any], sources: dict[str, str],
                run_verdict: str | None = None, link: Any = None, nav: str = "",
                passes: list[dict[str, Any]] | None = None) -> str:
    """The run report page of ``pipeline`` (``"retrieval"`` / ``"ranking"``) for ``cur_date``.

    Args:
        steps: :func:`dailyrec.report.collect`'s ``{step: manifest or None}``.
        sources: the pipeline's ``{step: path pattern}`` (for the artifacts list).
        run_verdict: the Airflow run's verdict (its ``report`` task's), if known.
        link: ``link(step) -> URL`` of a step's manifest (the plugin's), or None (plain paths).
        passes: the date's hourly passes (:func:`dailyrec.pass_curve.collect_passes`): a curve of
            their prequential metrics over the hours; None or empty: no section.
    Returns:
        A complete HTML document (str).
    """
    parts = [_verdict_block(cur_date, pipeline, steps, run_verdict)]
    if pipeline == "retrieval":
        v = steps.get("validate_day")
        if v:
            parts.append("<h2>Logs</h2>" + table(["impressions", "clicks", "CTR", "catalog items"],
                                                [[v["rows"].get("logs"), v.get("clicks"), v.get("ctr"),
                                                  v["rows"].get("items")]]))
        parts += [_sampling(steps), _training(steps, "two-tower"), _retrieval_gate(steps), _index_and_redis(steps)]
    else:
        rs = steps.get("ranking_samples")
        parts.append("<h2>Samples</h2>" + (table(list(rs.get("rows", {})), [list(rs.get("rows", {}).values())])
                                           if rs else "<p>not selected</p>"))
        parts += [_training(steps, "MMoE"), _ranking_gate(steps), _ranking_publish(steps)]
    if passes:
        from dailyrec.pass_curve import html_section

        parts.append(html_section(passes))
    parts.append(artifacts(steps, sources, cur_date, link))
    return page(f"daily_{pipeline} {cur_date}", "".join(parts), nav)
