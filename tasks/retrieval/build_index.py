"""Build the FAISS index of the day's item embeddings; recall@K measured on real user vectors.

    python -m tasks.retrieval.build_index --cur-date 2026-11-01 [--set index.factory=hnsw]

The recall queries are the day's user tower (``models/two_tower/dt=D/user_tower``) on the latest
context of up to :data:`MAX_QUERY_USERS` users active in the window (the first by ``user_id``),
the same vectors serving will search with. Only when no user is active (or the day has no
complete log hour) does the build fall back to perturbed item vectors (:mod:`dailyrec.ann`).
Output: ``index/dt=D/{index.faiss, ids.parquet, _manifest.json}``.
"""

from __future__ import annotations

from typing import Any

from dailyrec import cli
from dailyrec.config import Config
from dailyrec.step import begin

MAX_QUERY_USERS = 5000
"""Active users whose vectors are the recall queries (``index.recall_queries`` of them are sampled)."""


def step(cur_date: str, cfg: Config) -> dict[str, Any]:
    """Build, check (recall@K vs exact search) and write the day's item index."""
    from dailyrec.ann import build_index
    from dailyrec.embeddings import embeddings_dir, tower_vectors
    from dailyrec.events import active_user_rows
    from dailyrec.registry import model_dir

    run = begin("build_index", cur_date, cfg)
    run.require(f"{embeddings_dir(run.store, run.cur_date)}/items.parquet",
                hint=f"no item embeddings: run tasks.retrieval.export_embeddings for {run.cur_date} first")
    queries = None
    with run.timer.step("queries"):
        try:
            rows = active_user_rows(run.store, cfg, run.cur_date)
        except FileNotFoundError as exc:
            run.log.warning("no active users (%s): recall is measured on perturbed item vectors", exc)
            rows = None
        if rows is not None and rows.num_rows:
            queries = tower_vectors(f"{model_dir(run.store, 'two_tower', run.cur_date)}/user_tower",
                                    rows.slice(0, MAX_QUERY_USERS), cfg.features.spec)
    return build_index(run, query_vectors=queries)


if __name__ == "__main__":
    cli.main(step)
