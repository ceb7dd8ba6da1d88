"""The daily ranking DAG's last check: the model published for ``cur_date`` loads and scores.

    python -m tasks.serving.score_check --cur-date 2026-11-02

Loads the published model with :class:`dailyrec.scoring.Scorer` (as a serving system would, from
``registry/mmoe/dt=D/published.json``) and scores the first :data:`CHECK_ROWS` holdout rows of the
day (``ranking_samples/dt=D/holdout.parquet``); each scored row, with its labels for a glance, goes
to the task log and the result.
"""

from __future__ import annotations

import json
from typing import Any

from dailyrec import cli
from dailyrec.config import Config
from dailyrec.scoring import Scorer
from dailyrec.step import begin

CHECK_ROWS = 5


def step(cur_date: str, cfg: Config) -> dict[str, Any]:
    """Score the first holdout rows of ``cur_date`` with the model published for ``cur_date``."""
    import pyarrow.parquet as pq

    run = begin("score_check", cur_date, cfg)
    scorer = Scorer(cfg, run.cur_date)
    path = run.path("ranking_samples", "holdout.parquet")
    run.require(path, hint=f"run tasks.ranking.ranking_samples for {run.cur_date} first")
    rows = pq.read_table(path, filesystem=run.store.fs).slice(0, CHECK_ROWS)
    scored = scorer.score(rows, where=path)
    labels = {t["name"]: rows.column(t.get("label") or t["name"]).to_pylist() for t in scorer.tasks
              if (t.get("label") or t["name"]) in rows.column_names}
    for i, s in enumerate(scored):
        for t, values in labels.items():
            s[f"label_{t}"] = values[i]
        run.log.info("scored %s", json.dumps(s))
    return {"model_version": scorer.info["model_version"], "saved_model": scorer.info["saved_model"], "rows": scored}


if __name__ == "__main__":
    cli.main(step)
