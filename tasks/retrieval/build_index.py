"""Build the FAISS index of the day's item embeddings; recall@K measured on real user vectors.

    python -m tasks.retrieval.build_index --cur-date 2026-11-01 [--set index.factory=hnsw]

The recall queries are the day's user tower (``models/two_tower/dt=D/user_tower``) on the latest
context of the users active in the window, the same vectors serving will search with
(:func:`dailyrec.ann.user_query_vectors`). Only when no user is active (or the day has no
complete log hour) does the build fall back to perturbed item vectors, with a warning.
Output: ``index/dt=D/{index.faiss, ids.parquet, _manifest.json}``.
"""

from __future__ import annotations

from typing import Any

from dailyrec import cli
from dailyrec.config import Config
from dailyrec.step import begin


def step(cur_date: str, cfg: Config) -> dict[str, Any]:
    """Build, check (recall@K vs exact search on real user vectors) and write the day's item index."""
    from dailyrec.ann import build_index
    from dailyrec.embeddings import embeddings_dir

    run = begin("build_index", cur_date, cfg)
    run.require(f"{embeddings_dir(run.store, run.cur_date)}/items.parquet",
                hint=f"no item embeddings: run tasks.retrieval.export_embeddings for {run.cur_date} first")
    return build_index(run)


if __name__ == "__main__":
    cli.main(step)
