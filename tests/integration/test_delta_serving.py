"""Serving a delta version end to end: a tiny generated day trained with TensorFlow and published
(the real daily stages), then a pass's delta published with the stage's CLI, and the serving CLI's
answer for a user before and after (real FAISS, the embedded Redis under the test's data root).
The second test runs the real hourly stages (pass samples, prequential, incremental training, delta
export, delta publish, report) for two passes and checks what Redis serves against their deltas.

The delta deletes the user's top item X and adds a new item whose vector is X's: after the switch the
user gets the new item first (with X's score), never X, and the rest of the list unchanged (same
user tower and features: the delta's manifest names the daily model's user tower here).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from tests.helpers import TINY_ENV, run_isolated, write_delta

D1, D2 = "2026-11-01", "2026-11-02"
STAGES = ["ingest.validate_day", "retrieval.features", "retrieval.sample", "retrieval.train_two_tower",
          "retrieval.evaluate_two_tower", "retrieval.export_embeddings", "retrieval.build_index",
          "retrieval.publish_redis"]
_STAGES = "import sys\nfrom dailyrec import stages\nfor s in sys.argv[2:]:\n    stages.call(s, {'cur_date': sys.argv[1]})"


def _py(root: Path, *args: str) -> subprocess.CompletedProcess:
    # plain u.v: the delta's new item must score exactly as the item it replaces (with the popularity
    # prior an unclicked new item scores lower; that overlay is tests/unit/test_overlay.py's)
    return run_isolated(root, {**TINY_ENV, "DAILYREC__SERVING__POPULARITY_BETA_GRID": "[]"}, *args)


@pytest.mark.slow
def test_serving_cli_serves_a_delta_version(tmp_path):
    from dailyrec.config import load_config
    from dailyrec.publishing.connection import get_redis
    from dailyrec.publishing.reader import read_vectors

    root = tmp_path / "data"
    _py(root, "-m", "dailyrec.demo.generator", "--start-date", D1, "--days", "1")
    _py(root, "-c", _STAGES, D1, *STAGES)
    seen = pq.read_table(root / f"samples/dt={D1}/seen.parquet").to_pandas()
    user = seen.user_id.value_counts().index[0]
    serve = ("-m", "dailyrec.serving", "--user-id", user, "--k", "10", "--json")
    before = json.loads(_py(root, *serve).stdout)
    assert before["version"].startswith(f"{D1}_") and len(before["items"]) == 10
    top = before["items"][0]["item_id"]

    cfg = load_config(overrides={"storage.data_root": str(root)}, environ={})
    vec = read_vectors(get_redis(cfg), cfg.redis.namespace, before["version"], [top])[top]
    write_delta(cfg, D2, 0, {"fresh-item": vec}, [top], "pass0",
                user_tower=f"{root}/models/two_tower/dt={D1}/user_tower")
    pub = json.loads(_py(root, "-m", "tasks.hourly.publish_delta", "--cur-date", D2, "--hour", "0").stdout)
    assert pub["version"] == f"{D2}T00_pass0" and pub["previous"] == before["version"] and pub["depth"] == 1
    assert (pub["upserts"], pub["deletes"]) == (1, 1) and pub["recall_at_k"] >= cfg.index.min_recall_at_k

    after = json.loads(_py(root, *serve).stdout)
    got = [i["item_id"] for i in after["items"]]
    assert after["version"] == pub["version"] and after["model_version"] == "pass0"
    assert got[0] == "fresh-item" and top not in got
    assert np.isclose(after["items"][0]["score"], before["items"][0]["score"], atol=1e-4)
    assert got[1:] == [i["item_id"] for i in before["items"][1:10]]
    assert after["seen"] == before["seen"] is not None  # the base's seen sets still filter
    st = json.loads(_py(root, "-m", "dailyrec.publishing", "status").stdout)
    assert st["healthy"] and st["current"] == pub["version"], st["problems"]


_PASSES = ("import sys\nfrom dailyrec import stages\nfor s in sys.argv[3:]:\n"
           "    stages.call(s, {'cur_date': sys.argv[1], 'hour': int(sys.argv[2])})")
HOURLY = ["hourly.pass_samples", "hourly.prequential", "hourly.train_pass", "hourly.export_delta",
          "hourly.publish_delta", "hourly.report"]


@pytest.mark.slow
def test_real_passes_publish_a_chain_that_serves(tmp_path):
    from dailyrec.config import load_config
    from dailyrec.publishing.connection import get_redis
    from dailyrec.publishing.reader import current_version, read_meta, read_vectors

    root = tmp_path / "data"
    _py(root, "-m", "dailyrec.demo.generator", "--start-date", D1, "--days", "2")
    _py(root, "-c", _STAGES, D1, *STAGES)
    for hour in (0, 1):  # each pass in its own process, as the DAG's tasks run
        _py(root, "-c", _PASSES, D2, str(hour), *HOURLY)
    cfg = load_config(overrides={"storage.data_root": str(root)}, environ={})
    r, ns = get_redis(cfg), cfg.redis.namespace
    pubs = [json.loads((root / f"registry/two_tower/dt={D2}/hour={h:02d}/published.json").read_text()) for h in (0, 1)]
    base = json.loads((root / f"registry/two_tower/dt={D1}/published.json").read_text())["version"]
    assert current_version(cfg) == pubs[1]["version"] and pubs[1]["version"].startswith(f"{D2}T01_")
    assert (pubs[0]["parent"], pubs[1]["parent"], pubs[1]["base"], pubs[1]["depth"]) == (base, pubs[0]["version"],
                                                                                         base, 2)
    assert pubs[1]["freshness_s"] > 0 and pubs[1]["recall_at_k"] >= cfg.index.min_recall_at_k

    def delta(h: int) -> dict[str, np.ndarray]:
        t = pq.read_table(root / f"deltas/two_tower/dt={D2}/hour={h:02d}/delta.parquet")
        vecs = np.stack(t.column("vector").to_numpy(zero_copy_only=False)).astype(np.float32)
        return {i: v for i, v, op in zip(t.column("item_id").to_pylist(), vecs, t.column("op").to_pylist())
                if op == "upsert"}

    d0, d1 = delta(0), delta(1)
    base_items = pq.read_table(root / f"embeddings/dt={D1}/items.parquet")
    base_vecs = dict(zip(base_items.column("item_id").to_pylist(),
                         np.stack(base_items.column("vector").to_numpy(zero_copy_only=False))))
    want = {**base_vecs, **d0, **d1}  # what the chain serves: the newest upsert of each item wins
    got = read_vectors(r, ns, pubs[1]["version"], sorted(want))
    assert set(got) == set(want) and all(np.array_equal(got[i], want[i]) for i in want)
    assert set(d0) - set(d1) and set(base_vecs) - set(d0) - set(d1)  # all three layers are exercised
    meta = read_meta(r, ns, pubs[1]["version"])
    assert meta["user_tower"].endswith(f"passes/two_tower/dt={D2}/hour=01/user_tower") and meta["count"] == len(want)

    report = json.loads((root / f"reports/hourly_training/dt={D2}/hour=01/report.json").read_text())
    assert report["published"]["version"] == pubs[1]["version"] and report["freshness_s"] == pubs[1]["freshness_s"]
    seen = pq.read_table(root / f"samples/dt={D1}/seen.parquet").to_pandas()
    rec = json.loads(_py(root, "-m", "dailyrec.serving", "--user-id", seen.user_id.iloc[0], "--k", "10",
                         "--json").stdout)
    assert rec["version"] == pubs[1]["version"] and rec["model_version"] == meta["model_version"]
    assert len(rec["items"]) == 10 and all(i["item_id"] in want for i in rec["items"])
    st = json.loads(_py(root, "-m", "dailyrec.publishing", "status").stdout)
    assert st["healthy"] and [v["kind"] for v in st["versions"]] == ["full", "delta", "delta"], st["problems"]
