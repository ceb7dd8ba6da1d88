"""features.user_history end to end on one tiny demo day (issue 13): validate -> features -> sample
-> train_two_tower -> evaluate -> export -> index -> publish -> serving check, with the history on;
then the served vector of a known user is the user tower on that user's history as of the end of
the day (not on an empty history), and a history-enabled tower refuses rows without the column."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from tests.helpers import TINY_ENV, run_isolated

DAY = "2026-11-01"
ENV = {**TINY_ENV, "DAILYREC__TRAINING__EPOCHS": "2", "DAILYREC__FEATURES__USER_HISTORY__ENABLED": "true",
       "DAILYREC__FEATURES__USER_HISTORY__LENGTH": "5"}
STAGES = ["ingest.validate_day", "retrieval.features", "retrieval.sample", "retrieval.train_two_tower",
          "retrieval.evaluate_two_tower", "retrieval.export_embeddings", "retrieval.build_index",
          "retrieval.publish_redis", "serving.serving_check"]
_STAGES = ("import sys\nfrom dailyrec import stages\n"
           "for s in sys.argv[2:]:\n    stages.call(s, {'cur_date': sys.argv[1], 'overrides': {}})")

_CHECK = '''
import json, sys
import numpy as np
from dailyrec.config import load_config
from dailyrec.embeddings import tower_vectors
from dailyrec.history import MissingHistoryError, attach_history, rows_with_history
from dailyrec.popularity_prior import augment_queries
from dailyrec.publishing.reader import load_current
from dailyrec.serving import recommend, top_unseen, user_row
from dailyrec.storage import open_store
cfg = load_config(); store = open_store(cfg); day, user = sys.argv[1], sys.argv[2]
tower = f"{store.partition('models/two_tower', day)}/user_tower"
row, _ = user_row(store, cfg, day, user)
with_h = tower_vectors(tower, rows_with_history(row, store, cfg, day), cfg.features.spec)[0]
empty = tower_vectors(tower, attach_history(row, None), cfg.features.spec)[0]
try:
    tower_vectors(tower, row, cfg.features.spec); refused = ""
except MissingHistoryError as exc:
    refused = str(exc)
rec = recommend(user, 20, cfg)
meta, index, ids = load_current(cfg)
def served(u):  # what serving returns for the query vector u (same index, prior and seen filter)
    q = augment_queries(u[None, :].astype(np.float32), getattr(index, "d", u.shape[0]))
    return top_unseen(cfg, meta, index, ids, q, user, 20)["items"]
print(json.dumps({"same_as_history": served(with_h) == rec["items"], "same_as_empty": served(empty) == rec["items"],
                  "moved": float(np.abs(with_h - empty).max()), "refused": refused, "items": len(rec["items"])}))
'''


def _py(root: Path, *args: str) -> subprocess.CompletedProcess:
    return run_isolated(root, ENV, *args)


@pytest.mark.slow
def test_history_through_train_evaluate_export_and_serving(tmp_path):
    root = tmp_path / "data"
    _py(root, "-m", "dailyrec.demo.generator", "--start-date", DAY, "--days", "1")
    _py(root, "-c", _STAGES, DAY, *STAGES)

    samples = root / f"samples/dt={DAY}"
    train = pq.read_table(samples / "train.parquet", columns=["user_id", "event_time", "label",
                                                              "history_item_ids"]).to_pandas()
    lengths = train.history_item_ids.map(len)
    assert lengths.max() == 5 and (lengths > 0).mean() > 0.5  # most rows have a history, capped at N
    assert (samples / "user_history.parquet").exists() and (samples / "user_history_train.parquet").exists()
    man = json.loads((root / f"models/two_tower/dt={DAY}/_manifest.json").read_text())
    assert man["rows"]["train"] == len(train)
    report = json.loads((root / f"eval/two_tower/dt={DAY}/report.json").read_text())
    assert report["table"]["new"]["recall_at_50"] > 0
    check = json.loads((root / f"serving_checks/dt={DAY}/_manifest.json").read_text())["checks"]
    assert check["new"]["items"] == 50

    hist = pq.read_table(samples / "user_history.parquet").to_pandas()
    user = hist.user_id[hist.history_item_ids.map(len).idxmax()]
    out = json.loads(_py(root, "-c", _CHECK, DAY, user).stdout.strip().splitlines()[-1])
    assert out["items"] == 20 and out["moved"] > 1e-3
    assert out["same_as_history"] and not out["same_as_empty"], out  # serving used the user's history
    assert "history_item_ids" in out["refused"] and "attach_history" in out["refused"]
