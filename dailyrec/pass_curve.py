"""The per-date curve of the hourly passes' prequential metrics (docs/hourly.md, "Prequential metrics").

Each pass of ``D`` wrote, before training, what the serving model scored on it:
``prequential/two_tower/dt=D/hour=HH/metrics.json`` (recall@K over the catalog, recall@K of the
items born on ``D``, the pointwise u·v AUC) and ``prequential/mmoe/dt=D/hour=HH/metrics.json``
(AUC per task), and its delta publish wrote the freshness (seconds from the pass's last
``_SUCCESS`` to the delta serving) in ``registry/two_tower/dt=D/hour=HH/published.json``.
:func:`collect_passes` gathers them per pass; the daily report of ``D`` (``report.md``,
``report.html`` and the UI's Report tab) shows them as a table and a curve over the hours.

Light module (no numpy): the report and the UI plugin import it.
"""

from __future__ import annotations

from typing import Any

HOURS = range(24)


def collect_passes(store: Any, cur_date: str) -> list[dict[str, Any]]:
    """One row per pass of ``cur_date`` that recorded prequential metrics, in hour order:
    ``{"hour": int, "k": int, "recall_at_k", "new_item_recall_at_k", "auc" (two-tower u·v),
    "click_auc" (MMoE), "freshness_s", "version"}``; a figure the pass did not record is ``None``.
    An empty list when ``cur_date`` had no pass."""
    rows = []
    for h in HOURS:
        tt = _read(store, f"{store.partition('prequential/two_tower', cur_date, h)}/metrics.json")
        rk = _read(store, f"{store.partition('prequential/mmoe', cur_date, h)}/metrics.json")
        if tt is None and rk is None:
            continue
        pub = _read(store, f"{store.partition('registry/two_tower', cur_date, h)}/published.json") or {}
        tt = tt or {}
        k = tt.get("k") or 50
        rows.append({"hour": h, "k": k, "recall_at_k": tt.get(f"recall_at_{k}"),
                     "new_item_recall_at_k": tt.get(f"new_item_recall_at_{k}"), "auc": tt.get("auc"),
                     "click_auc": (rk or {}).get("click_auc"), "freshness_s": pub.get("freshness_s"),
                     "version": pub.get("version")})
    return rows


def _read(store: Any, path: str) -> dict[str, Any] | None:
    return store.read_json(path) if store.exists(path) else None


def _f(x: Any, nd: int = 4) -> str:
    return "-" if x is None else (f"{x:.{nd}f}" if isinstance(x, float) else str(x))


def markdown_lines(rows: list[dict[str, Any]]) -> list[str]:
    """The report.md table of :func:`collect_passes` (no line without passes)."""
    if not rows:
        return []
    k = rows[0]["k"]
    out = ["", f"## Hourly passes (prequential: the serving model scored each pass before training on it)", "",
           f"| hour | recall@{k} | new-item recall@{k} | AUC u·v | MMoE click AUC | freshness s | version |",
           "|---|---|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r['hour']:02d} | {_f(r['recall_at_k'])} | {_f(r['new_item_recall_at_k'])} | {_f(r['auc'])} "
                   f"| {_f(r['click_auc'])} | {_f(r['freshness_s'], 1)} | {r['version'] or '-'} |")
    return out


def html_section(rows: list[dict[str, Any]]) -> str:
    """The report page's "Hourly passes" section: the curve over the hours and the table ("" without passes)."""
    if not rows:
        return ""
    import html

    from dailyrec.ui import plots

    k = rows[0]["k"]
    hours = [f"{r['hour']:02d}" for r in rows]
    curve = plots.history_lines(hours, {f"recall@{k}": [r["recall_at_k"] for r in rows],
                                        f"new-item recall@{k}": [r["new_item_recall_at_k"] for r in rows],
                                        "AUC u·v": [r["auc"] for r in rows],
                                        "MMoE click AUC": [r["click_auc"] for r in rows]},
                                "prequential metrics per pass (hour of the day)", "metric")
    head = ["hour", f"recall@{k}", f"new-item recall@{k}", "AUC u·v", "MMoE click AUC", "freshness s"]
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_f(v, 1 if i == 5 else 4))}</td>" for i, v in enumerate(
        [r["hour"], r["recall_at_k"], r["new_item_recall_at_k"], r["auc"], r["click_auc"], r["freshness_s"]]))
        + "</tr>" for r in rows)
    table = "<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>" + body + "</table>"
    return ("<h2>Hourly passes</h2><p>Prequential: the model serving when each pass arrived scored it before "
            "training on it.</p>" + curve + table)
