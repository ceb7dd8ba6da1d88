"""The Model history and Serving pages (HTML), read from the manifests and the registry under the
data root, never from Airflow's DB.

* :func:`history_rows` / :func:`history_html`: per date, the gate metric of the new / previous /
  popularity models (retrieval: recall@K of the gate; ranking: AUC per task of the new, baseline
  and previous models), the gate's decision, the published version and rollbacks, sample volumes
  and training time; line plots with the gate decisions marked.
* :func:`serving_html`: Redis's current version, its age and retention, and a form that asks the
  recommendation path (``python -m dailyrec.serving --user-id U --json``, in a subprocess so the
  API server never loads TensorFlow) for a user's top-K, with the version that answered.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from typing import Any

from dailyrec.ui import plots
from dailyrec.ui.pages import esc, fmt, page, table

MODEL = {"retrieval": "two_tower", "ranking": "mmoe"}
SAMPLES = {"retrieval": "samples", "ranking": "ranking_samples"}


def _read(store: Any, rel: str) -> dict[str, Any] | None:
    path = store.path(rel)
    return store.read_json(path) if store.exists(path) else None


def history_rows(store: Any, pipeline: str) -> list[dict[str, Any]]:
    """One dict per date that has an evaluation or a registry entry, oldest first: ``date``,
    ``passed`` (bool or None), ``metrics`` (``{series: value}``), ``metric`` (the gate metric's name),
    ``published`` (version or None), ``withdrawn`` (bool), ``rollback`` (bool: a rollback made this
    date online again), ``samples`` (training rows), ``train_s`` (fit seconds).

    Raises:
        ValueError: an unknown pipeline."""
    if pipeline not in MODEL:
        raise ValueError(f"pipeline must be 'retrieval' or 'ranking', got {pipeline!r}")
    name = MODEL[pipeline]
    dates = sorted(set(store.list_partitions(f"eval/{name}")) | set(store.list_partitions(f"registry/{name}")))
    rows = []
    for d in dates:
        part = f"dt={d}"
        ev = _read(store, f"eval/{name}/{part}/report.json") or {}
        reg = _read(store, f"registry/{name}/{part}/published.json")
        man = _read(store, f"models/{name}/{part}/_manifest.json") or {}
        sm = _read(store, f"{SAMPLES[pipeline]}/{part}/_manifest.json") or {}
        gate, tbl = ev.get("gate") or {}, ev.get("table") or {}
        if pipeline == "retrieval":
            metric = gate.get("metric", "recall_at_50")
            metrics = {m: (tbl.get(m) or {}).get(metric) for m in ("new", "previous", "popularity")}
        else:
            gated = gate.get("metrics") or ["click_auc", "conversion_auc"]  # <task>_auc / <task>_rmse
            metrics = {f"{m} {k.rsplit('_', 1)[0]}": (tbl.get(m) or {}).get(k)
                       for m in ("new", "shared_bottom", "previous") for k in gated}
            metric = ", ".join(gated)
        timings = man.get("timings_s") or {}
        rows.append({"date": d, "passed": gate.get("passed") if gate else None, "metric": metric,
                     "metrics": metrics, "reasons": gate.get("reasons") or [],
                     "published": (reg or {}).get("version") or (reg or {}).get("model_version"),
                     "withdrawn": bool((reg or {}).get("withdrawn")), "rollback": bool((reg or {}).get("rolled_back_from")),
                     "samples": (sm.get("rows") or {}).get("train"),
                     "verdict": gate.get("verdict"), "holdout": gate.get("holdout"),
                     "comparisons": gate.get("comparisons") or {},
                     "train_s": timings.get("fit") or timings.get("mmoe_fit") or timings.get("total")})
    return rows


def _gate_cells(r: dict[str, Any]) -> list[str]:
    """The retrieval gate's paired intervals and holdout size of a history row (empty for old reports)."""
    def interval(name: str) -> str:
        c = r["comparisons"].get(name)
        return "" if not c else f"{c['mean_diff']:+.3f} [{c['ci'][0]:+.3f}, {c['ci'][1]:+.3f}]"

    h = r.get("holdout") or {}
    hold = f"{h['users']:,} users, {h['clicks']:,} clicks, {h['hours']} h" if h else ""
    return [esc(interval("previous")), esc(interval("popularity")), esc(hold)]


def _nav(base: str) -> str:
    if not base:
        return ""
    return (f'<nav><a href="{base}/history?pipeline=retrieval">Retrieval history</a>'
            f'<a href="{base}/history?pipeline=ranking">Ranking history</a><a href="{base}/serving">Serving</a></nav>')


def history_html(store: Any, pipeline: str, base: str = "", report_link: Any = None) -> str:
    """The Model history page of ``pipeline``; ``report_link(date)`` gives a date's report URL."""
    rows = history_rows(store, pipeline)
    title = f"Model history: daily_{pipeline}"
    if not rows:
        return page(title, f"<h1>{esc(title)}</h1><p>No evaluated date under the data root yet.</p>", _nav(base))
    dates = [r["date"] for r in rows]
    names = list(dict.fromkeys(n for r in rows for n in r["metrics"]))  # the tasks may change over the dates
    passed = [r["passed"] for r in rows]
    pub = [bool(r["published"]) and not r["withdrawn"] for r in rows]
    rb = [r["rollback"] for r in rows]
    figs = []
    if pipeline == "retrieval":
        figs.append(plots.history_lines(dates, {n: [r["metrics"][n] for r in rows] for n in names},
                                        f"{rows[-1]['metric']} per date (gate marked; green band: published, "
                                        "red dashes: rollback)", rows[-1]["metric"], passed, pub, rb))
    else:
        for task in dict.fromkeys(n.split(" ", 1)[1] for n in names):
            series = {n.split()[0]: [r["metrics"].get(n) for r in rows] for n in names if n.split(" ", 1)[1] == task}
            what = "RMSE" if f"{task}_rmse" in rows[-1]["metric"] else "AUC"
            figs.append(plots.history_lines(dates, series, f"{task} {what} per date", what, passed, pub, rb))
    figs.append(plots.history_lines(dates, {"training rows": [r["samples"] for r in rows]},
                                    "sample volume per date", "training rows"))
    figs.append(plots.history_lines(dates, {"fit seconds": [r["train_s"] for r in rows]},
                                    "training time per date", "seconds"))
    online = next((r["date"] for r in reversed(rows) if r["published"] and not r["withdrawn"]), None)
    body_rows = []
    for r in rows:
        gate = "passed" if r["passed"] else "FAILED" if r["passed"] is False else "-"
        link = report_link(r["date"]) if report_link else None
        date = f'<a href="{esc(link)}">{esc(r["date"])}</a>' if link else esc(r["date"])
        state = ("withdrawn" if r["withdrawn"] else "online" if r["date"] == online else "published") \
            + (" (rolled back to)" if r["rollback"] else "") if r["published"] else ""
        if r.get("verdict") and r["verdict"] != "pass":
            gate += f" ({esc(r['verdict'])})"
        cells = [gate, *(fmt(r["metrics"].get(n)) for n in names)]
        if pipeline == "retrieval":
            cells += _gate_cells(r)
        cells += [esc(r["published"] or ""), state, fmt(r["samples"]), fmt(r["train_s"])]
        body_rows.append(f"<tr><td>{date}</td>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    extra = ["new - previous (interval)", "new - popularity (interval)", "holdout"] if pipeline == "retrieval" else []
    head = "".join(f"<th>{esc(h)}</th>" for h in ["date", "gate", *names, *extra, "published version", "registry",
                                                   "training rows", "fit (s)"])
    tbl = f'<table id="history"><tr>{head}</tr>{"".join(body_rows)}</table>'
    return page(title, f"<h1>{esc(title)}</h1>" + "".join(figs) + "<h2>Per date</h2>" + tbl, _nav(base))


def _cli(args: list[str], timeout: int = 300) -> tuple[dict[str, Any] | None, str]:
    """``python -m ARGS`` (JSON on stdout) -> (parsed, error text)."""
    res = subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, timeout=timeout)
    if res.returncode != 0:
        lines = [ln for ln in res.stderr.strip().splitlines() if ln.strip()]
        return None, lines[-1] if lines else f"exit code {res.returncode}"
    try:
        return json.loads(res.stdout), ""
    except json.JSONDecodeError:
        return None, f"not JSON: {res.stdout[-300:]}"


def serving_html(cfg: Any, user_id: str | None = None, k: int = 20, base: str = "",
                 today: dt.date | None = None) -> str:
    """The Serving page: Redis's current version (``python -m dailyrec.publishing status``), its age
    in days (vs ``today``, default: today UTC), the retention (``redis.keep_versions``), and, for a
    typed ``user_id``, its top ``k`` from ``python -m dailyrec.serving`` with the version that answered."""
    today = today or dt.datetime.now(dt.timezone.utc).date()
    st, err = _cli(["dailyrec.publishing", "status"])
    parts = ["<h1>Serving</h1>"]
    if st is None:
        parts.append(f'<div class="verdict bad">Redis status failed: {esc(err)}</div>')
    else:
        cur = next((v for v in st.get("versions", []) if v["version"] == st.get("current")), None)
        age = (today - dt.date.fromisoformat(cur["cur_date"])).days if cur and cur.get("cur_date") else None
        cls = "ok" if st.get("healthy") and cur else "bad"
        parts.append(f'<div class="verdict {cls}" id="current"><b>Current version:</b> {esc(st.get("current"))}'
                     + (f" (data of {esc(cur['cur_date'])}, {age} day(s) old)" if cur else "") + "</div>")
        parts.append(f"<p>Redis {esc(st.get('redis'))}, namespace <code>{esc(st.get('namespace'))}</code>; "
                     f"retention: the last {cfg.redis.keep_versions} versions are kept. "
                     + ("" if st.get("healthy") else "Problems: " + esc("; ".join(st.get("problems") or []))) + "</p>")
        parts.append(table(["version", "date", "vectors", "dim", "index", "recall vs exact", "complete"],
                           [[v["version"] + (" (current)" if v["version"] == st.get("current") else
                                             " (previous)" if v["version"] == st.get("previous") else ""),
                             v.get("cur_date"), v.get("count"), v.get("dim"), v.get("index"), v.get("recall_at_k"),
                             "yes" if v.get("complete") else "NO"] for v in st.get("versions", [])]))
    parts.append(f'<h2>Recommend for a user</h2><form method="get" action="">'
                 f'<input name="user_id" placeholder="user id, e.g. u00042" value="{esc(user_id or "")}"> '
                 f'top <input name="k" type="number" min="1" max="500" value="{int(k)}" style="width:5em"> '
                 f'<button type="submit">Recommend</button></form>')
    if user_id:
        rec, err = _cli(["dailyrec.serving", "--user-id", user_id, "--k", str(int(k)), "--json"])
        if rec is None:
            parts.append(f'<div class="verdict bad">No answer for {esc(user_id)}: {esc(err)}</div>')
        else:
            parts.append(f'<p id="answer">User <b>{esc(rec["user_id"])}</b> ({esc(rec["path"])}): answered by Redis '
                         f'version <code>{esc(rec["version"])}</code>, model <code>{esc(rec["model_version"])}</code>'
                         f' (data of {esc(rec["cur_date"])})</p>')
            parts.append(table(["rank", "item", "score"], [[i["rank"], i["item_id"], i["score"]] for i in rec["items"]]))
    return page("Serving", "".join(parts), _nav(base))
