"""Pass identity, the warm-source chain's named errors and the retention of pass checkpoints
(``dailyrec.passes``), on real directories under a temp data root (no TensorFlow)."""

from __future__ import annotations

import json

import pytest

from dailyrec.errors import MissingPassError
from dailyrec.passes import (is_pass_end, pass_dir, pass_hours, pass_label, pass_start, previous_pass,
                             prune_checkpoints, warm_source_for_pass)
from tests.helpers import config

D = "2026-11-02"


def test_pass_identity_for_splits_1_and_3(tmp_path):
    one, three = config(tmp_path), config(tmp_path, **{"training.split_per_pass": 3})
    assert pass_hours(one, 5) == [5] and pass_start(one, 5) == 5 and all(is_pass_end(one, h) for h in range(24))
    assert pass_hours(three, 4) == [3, 4, 5] and pass_start(three, 5) == 3
    assert [h for h in range(24) if is_pass_end(three, h)] == list(range(2, 24, 3))
    assert previous_pass(None, three, D, 5) == (D, 0) and previous_pass(None, three, D, 2) is None
    assert previous_pass(None, one, D, 0) is None and previous_pass(None, one, D, 7) == (D, 6)
    assert pass_label(D, 7) == "2026-11-02T07"
    with pytest.raises(ValueError):
        pass_hours(one, 24)


def _fake_pass(store, hour, day=D):
    d = pass_dir(store, "two_tower", day, hour)
    (store.local_path(d) / "model").mkdir(parents=True)
    (store.local_path(d) / "user_tower").mkdir()
    (store.local_path(d) / "_manifest.json").write_text(json.dumps({"model_version": f"tt-{hour}"}))
    return d


def test_missing_previous_pass_and_base_are_named(tmp_path):
    cfg = config(tmp_path)
    from dailyrec.storage import open_store

    store = open_store(cfg)
    _fake_pass(store, 0)
    assert warm_source_for_pass(store, cfg, "two_tower", D, 1) == ("2026-11-02T00", pass_dir(store, "two_tower", D, 0))
    with pytest.raises(MissingPassError, match=r"previous pass 2026-11-02T02 .*hour=02"):
        warm_source_for_pass(store, cfg, "two_tower", D, 3)
    with pytest.raises(MissingPassError, match=r"daily base of 2026-11-01 .*models/two_tower/dt=2026-11-01"):
        warm_source_for_pass(store, cfg, "two_tower", D, 0)
    # a base without a passed gate is no warm source either
    base = store.local_path(store.partition("models/two_tower", "2026-11-01"))
    (base / "model").mkdir(parents=True)
    (base / "_manifest.json").write_text("{}")
    with pytest.raises(MissingPassError, match="gate did not pass"):
        warm_source_for_pass(store, cfg, "two_tower", D, 0)
    ev = store.local_path(store.partition("eval/two_tower", "2026-11-01"))
    ev.mkdir(parents=True)
    (ev / "report.json").write_text(json.dumps({"gate": {"passed": True}}))
    assert warm_source_for_pass(store, cfg, "two_tower", D, 0) == ("2026-11-01", str(base))
    assert issubclass(MissingPassError, FileNotFoundError)


def test_retention_keeps_the_cadence_the_last_pass_and_what_the_next_pass_needs(tmp_path):
    cfg = config(tmp_path, **{"training.checkpoint_per_pass": 2, "passes.checkpoints_keep": 2})
    from dailyrec.storage import open_store

    store = open_store(cfg)
    for h in range(6):
        _fake_pass(store, h)
    deleted = prune_checkpoints(store, cfg, "two_tower", D, 5)
    left = [h for h in range(6) if store.exists(f"{pass_dir(store, 'two_tower', D, h)}/model")]
    # off-cadence 0 and 2 go, then the oldest kept (1, 3) beyond checkpoints_keep=2; 4 (the warm source
    # of pass 5, needed to re-run it) and 5 stay; towers and manifests always stay
    assert left == [4, 5], deleted
    assert all(store.exists(f"{pass_dir(store, 'two_tower', D, h)}/user_tower") for h in range(6))
    # the day's last pass is kept whatever the cadence
    cfg3 = config(tmp_path, **{"training.checkpoint_per_pass": 5, "passes.checkpoints_keep": 24})
    _fake_pass(store, 23, day="2026-11-01")
    _fake_pass(store, 22, day="2026-11-01")
    prune_checkpoints(store, cfg3, "two_tower", D, 5)
    assert store.exists(f"{pass_dir(store, 'two_tower', '2026-11-01', 23)}/model")
    assert not store.exists(f"{pass_dir(store, 'two_tower', '2026-11-01', 22)}/model")
