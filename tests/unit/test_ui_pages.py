"""The UI's library side without Airflow: progress lines, run notes, the report / history pages
(real matplotlib plots, a real data root with hand-written manifests)."""

from __future__ import annotations

import logging

import pytest

from dailyrec.progress import Progress
from dailyrec.report import RANKING_SOURCES, RETRIEVAL_SOURCES, collect
from dailyrec.ui.history import history_html, history_rows
from dailyrec.ui.notes import NOTE_PREFIX, run_note
from dailyrec.ui.pages import report_html, verdict_of


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_progress_logs_at_most_every_period_with_rate_and_eta(caplog):
    clock, log = Clock(), logging.getLogger("test.progress")
    p = Progress(log, "publish", total=1000, unit="keys", every_s=30, clock=clock)
    with caplog.at_level(logging.INFO, logger="test.progress"):
        clock.t = 10
        assert not p.add(100)             # too early
        clock.t = 40
        assert p.add(300)                 # 400 keys in 40 s
        clock.t = 50
        assert not p.add(100)
        p.done()
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0] == "publish: 400/1,000 keys (40.0%), 10 keys/s, ETA 1m00s"
    assert lines[1].startswith("publish: 500/1,000 keys (50.0%)") and "done in 50s" in lines[1]
    with pytest.raises(ValueError, match="every_s"):
        Progress(log, "x", every_s=0)


def test_progress_without_total_has_no_eta():
    clock = Clock()
    p = Progress(logging.getLogger("t"), "fit", unit="steps", clock=clock)
    clock.t = 31
    p.add(62)
    assert p.line() == "fit: 62 steps, 2 steps/s"


def test_run_note_says_which_day_and_whether_it_shipped():
    assert run_note("2026-11-02", "gate passed; published", "2026-11-02_tt-x") == \
        f"{NOTE_PREFIX}2026-11-02 | gate passed; published | version 2026-11-02_tt-x"
    assert run_note("2026-11-03", "gate failed: drop; nothing published") == \
        f"{NOTE_PREFIX}2026-11-03 | gate failed: drop; nothing published"


def _retrieval_day(store, day: str, passed: bool, recall: float, published: bool) -> None:
    d = f"dt={day}"
    table = {m: {"recall_at_50": v, "ndcg_at_50": v / 3, "recall_at_10": v / 2, "ndcg_at_10": v / 5}
             for m, v in (("new", recall), ("previous", recall - 0.01), ("popularity", 0.3))}
    store.write_json(store.path(f"eval/two_tower/{d}/report.json"), {
        "gate": {"metric": "recall_at_50", "passed": passed, "reasons": [] if passed else ["new below popularity"]},
        "table": table, "rows": {"eval_users": 80}})
    store.write_json(store.path(f"models/two_tower/{d}/_manifest.json"), {
        "model_version": f"tt-{day}", "final_loss": 5.1, "examples_per_s": 250.0, "timings_s": {"fit": 7.5},
        "history": {"loss": [6.0, 5.5, 5.1], "learning_rate": [0.01, 0.009, 0.008]}, "warm_start": {"from": None}})
    store.write_json(store.path(f"samples/{d}/_manifest.json"), {
        "rows": {"train": 2000, "positives": 400},
        "stats": {"sources": {"positive": {"count": 400, "distinct_items": 100, "mean_log_popularity": 2.1,
                                           "cold_share": 0.1}}}})
    if published:
        store.write_json(store.path(f"registry/two_tower/{d}/published.json"),
                         {"version": f"{day}_tt", "keys_written": 7, "vectors": 150})


def test_report_page_puts_the_verdict_first_and_draws_the_training_curves(store):
    _retrieval_day(store, "2026-11-01", True, 0.4, True)
    steps = collect(store, "2026-11-01", RETRIEVAL_SOURCES)
    page = report_html("retrieval", "2026-11-01", steps, RETRIEVAL_SOURCES)
    assert page.index('id="verdict"') < page.index("<h2>")
    assert "gate PASSED; published version 2026-11-01_tt" in page
    assert page.count('<img class="plot"') == 2          # training curves + gate bars
    assert "not built" in page and "absent" in page       # steps that did not run are said so
    # the same inputs give the same bytes (report.html stays byte-identical on a re-run)
    assert page == report_html("retrieval", "2026-11-01", steps, RETRIEVAL_SOURCES)


def test_report_page_of_a_failed_gate_gives_its_reasons(store):
    _retrieval_day(store, "2026-11-02", False, 0.2, False)
    steps = collect(store, "2026-11-02", RETRIEVAL_SOURCES)
    cls, line = verdict_of("retrieval", steps)
    assert cls == "bad" and "new below popularity" in line and "nothing published" in line
    empty = collect(store, "2026-11-09", RANKING_SOURCES)
    assert "no gate verdict" in report_html("ranking", "2026-11-09", empty, RANKING_SOURCES)


def test_history_has_a_row_per_date_with_gate_and_publication(store):
    _retrieval_day(store, "2026-11-01", True, 0.40, True)
    _retrieval_day(store, "2026-11-02", False, 0.20, False)
    rows = history_rows(store, "retrieval")
    assert [(r["date"], r["passed"], r["published"]) for r in rows] == [
        ("2026-11-01", True, "2026-11-01_tt"), ("2026-11-02", False, None)]
    assert rows[0]["metrics"]["new"] == 0.40 and rows[0]["samples"] == 2000 and rows[0]["train_s"] == 7.5
    page = history_html(store, "retrieval", report_link=lambda d: f"/r/{d}")
    assert page.count('<img class="plot"') == 3 and 'href="/r/2026-11-02"' in page
    with pytest.raises(ValueError, match="pipeline"):
        history_rows(store, "bogus")
