"""The pieces of distributed training that need no cluster: the config rules of
``training.distribute`` / ``workers`` / ``shard_by``, the sharded streaming reader
(``ParquetStream(shard=..., shard_by=...)``: disjoint rows, the global batch per step, the same
steps on every worker), and the launcher's ``TF_CONFIG``. The cluster itself runs in
``tests/integration/test_distributed_training.py``."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dailyrec.config import ConfigError, load_config
from dailyrec.distributed import free_ports, tf_config
from dailyrec.stream import ParquetStream, id_encoders

SPECS = [{"name": "user_id", "side": "user", "kind": "int", "buckets": 10**6, "embedding_dim": 4, "dtype": "int"}]


def _file(tmp_path, n: int, row_group: int) -> str:
    path = str(tmp_path / "train.parquet")
    pq.write_table(pa.table({"user_id": pa.array(np.arange(n), pa.int64()),
                             "label": pa.array(np.ones(n), pa.float32())}), path, row_group_size=row_group)
    return path


def _stream(path: str, batch: int, shard=None, by="batch", seed=3) -> ParquetStream:
    return ParquetStream(path, id_encoders(SPECS), extra={"label": "float32"}, batch_size=batch, seed=seed,
                         buffer_rows=64, shard=shard, shard_by=by)


@pytest.mark.parametrize("workers", [2, 3])
def test_batch_shards_concatenate_to_the_one_worker_batches(tmp_path, workers):
    path = _file(tmp_path, 1001, 100)
    for epoch in (0, 1):
        whole = list(_stream(path, 64).batches(epoch))
        parts = [list(_stream(path, 64, (w, workers)).batches(epoch)) for w in range(workers)]
        assert all(len(p) == len(whole) == _stream(path, 64, (w, workers)).steps_per_epoch
                   for w, p in enumerate(parts))
        for step, batch in enumerate(whole):
            got = np.concatenate([p[step]["user_id"] for p in parts])
            np.testing.assert_array_equal(got, batch["user_id"])       # same rows, same order
            sizes = [len(p[step]["user_id"]) for p in parts]
            assert max(sizes) - min(sizes) <= 1                      # the last partial batch too


def test_row_group_shards_are_disjoint_with_equal_steps(tmp_path):
    path = _file(tmp_path, 1000, 100)   # 10 row groups: 5 per worker
    a, b = (_stream(path, 64, (w, 2), "row_group") for w in (0, 1))
    assert a.steps_per_epoch == b.steps_per_epoch == 500 // 32
    ra = np.concatenate([x["user_id"] for x in a.batches(0)])
    rb = np.concatenate([x["user_id"] for x in b.batches(0)])
    assert len(ra) == len(rb) == 15 * 32 and all(len(x["user_id"]) == 32 for x in a.batches(1))
    assert not set(ra) & set(rb)
    assert {int(r) // 100 for r in ra} <= {0, 2, 4, 6, 8} and {int(r) // 100 for r in rb} <= {1, 3, 5, 7, 9}


def test_row_group_sharding_refuses_too_few_row_groups_and_uneven_batches(tmp_path):
    path = _file(tmp_path, 150, 100)    # 2 row groups
    with pytest.raises(ValueError, match="2 row group\\(s\\) for 3 workers"):
        _stream(path, 63, (0, 3), "row_group")
    with pytest.raises(ValueError, match="batch_size \\(63\\) divisible"):
        _stream(path, 63, (0, 2), "row_group")
    with pytest.raises(ValueError, match="shard"):
        _stream(path, 64, (2, 2))


def test_config_rules_of_distribute_and_workers():
    def cfg(**o):
        return load_config(overrides=o, environ={})

    assert cfg().training.distribute == "none" and cfg().training.workers == 1
    assert cfg(**{"training.distribute": "multi_worker", "training.workers": 2}).training.workers == 2
    with pytest.raises(ConfigError, match="multi_worker needs training.workers >= 2"):
        cfg(**{"training.distribute": "multi_worker"})
    with pytest.raises(ConfigError, match="training.workers=3 needs training.distribute=multi_worker"):
        cfg(**{"training.workers": 3})
    with pytest.raises(ConfigError, match="mirrored"):
        cfg(**{"training.distribute": "mirrored", "training.workers": 2})
    with pytest.raises(ConfigError, match="training.batch_size 1025 is not divisible"):
        cfg(**{"training.distribute": "multi_worker", "training.workers": 2, "training.shard_by": "row_group",
               "training.batch_size": 1025})
    with pytest.raises(ConfigError, match="ranking.batch_size 2047 is not divisible"):
        cfg(**{"training.distribute": "multi_worker", "training.workers": 2, "training.shard_by": "row_group",
               "ranking.batch_size": 2047})
    with pytest.raises(ConfigError, match="distribute"):
        cfg(**{"training.distribute": "parameter_server"})


def test_tf_config_names_every_worker_on_loopback():
    ports = free_ports(3)
    assert len(set(ports)) == 3
    c = tf_config(ports, 2)
    assert c["cluster"]["worker"] == [f"127.0.0.1:{p}" for p in ports]
    assert c["task"] == {"type": "worker", "index": 2}


def test_distributed_refuses_ranking_setups_its_loss_does_not_cover():
    """The distributed ranking loss is a weighted BCE per task: ESMM, regression tasks, extra losses
    and numeric features are refused before any work, with the reason named."""
    base = {"training.distribute": "multi_worker", "training.workers": 2}
    assert load_config(overrides=base, environ={}).training.workers == 2
    with pytest.raises(ConfigError, match=r"tasks \['conversion'\].*distribute: none"):
        load_config(overrides={**base, "ranking.esmm": True}, environ={})
    spec = [f.model_dump() for f in load_config(environ={}).features.spec]
    spec.append({"name": "age", "side": "user", "kind": "numeric", "dtype": "float"})
    with pytest.raises(ConfigError, match=r"numeric features \['age'\]"):
        load_config(overrides={**base, "features.spec": spec}, environ={})
