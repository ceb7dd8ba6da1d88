"""Distributed training (``training.distribute``, ``dailyrec.distributed``): real TensorFlow,
``MultiWorkerMirroredStrategy`` over two worker processes on 127.0.0.1 launched by the training
step itself, on one small generated day. No mocks.

* Two workers train the same two-tower (softmax with logQ and in-batch negatives) and the same
  MMoE as the one-process ``model.fit`` path, with the same global batch and seed: final loss and
  the evaluation's recall@50 (two-tower) / click AUC (MMoE) agree within the tolerances below.
* Killing one worker with SIGKILL mid-training fails the step with ``DistributedTrainingError``
  naming that worker and the signal, and leaves none of the workers' processes behind.

Tolerances. With ``shard_by=batch`` worker ``w`` trains on the ``w``-th half of each global batch,
the loss is each replica's share of the global-batch loss (item vectors all-gathered, divided by
the global positive count), and the optimizer sums the replicas' gradients: mathematically the
one-process step. What differs is floating-point summation order (two partial sums, then an
all-reduce, instead of one sum; float32 relative error ~1e-7 per step), which Adam carries over
the steps without amplifying much on a few dozen steps. So the final losses must agree to
``LOSS_RTOL`` = 1e-3 relative (10^4 x the per-step rounding), and the evaluation metrics computed
from the exported towers / model to ``METRIC_ATOL`` = 0.01 absolute (recall@50 on ~100 held-out
users moves by 1/100 when one user's rank crosses 50, which such drift can cause). The measured
differences are printed (``pytest -s``).
"""

from __future__ import annotations

import os
import signal
import time

import pytest

from dailyrec.config import load_config
from dailyrec.dates import date_range
from dailyrec.storage import open_store
from tests.helpers import validate_day

DAY = date_range("2026-11-01", 1)[0]
LOSS_RTOL = 1e-3
METRIC_ATOL = 0.01
SMALL = {
    "demo.events_per_day": 4000, "demo.n_users": 300, "demo.n_items": 150, "demo.days": 1,
    "sampling.window_days": 1, "training.warm_start": False, "training.epochs": 2, "training.batch_size": 256,
    "training.checkpoint_every_steps": 5, "ranking.epochs": 2, "ranking.batch_size": 256,
    "ranking.train_baseline": False, "evaluation.require_beat_popularity": False,
}
TWO = {"training.distribute": "multi_worker", "training.workers": 2}


def _cfg(root, **extra):
    return load_config(overrides={"storage.data_root": str(root), **SMALL, **extra}, environ={})


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from dailyrec.demo.generator import generate
    from tasks.ranking.ranking_samples import step as ranking_samples
    from tasks.retrieval.features import step as build_features
    from tasks.retrieval.sample import step as sample

    root = tmp_path_factory.mktemp("distributed") / "data"
    cfg = _cfg(root)
    generate(cfg, DAY, 1)
    validate_day(open_store(cfg), DAY)
    build_features(DAY, cfg)
    sample(DAY, cfg)
    ranking_samples(DAY, cfg)
    return root


def _two_tower(root, **extra):
    from tasks.retrieval.evaluate_two_tower import step as evaluate
    from tasks.retrieval.train_two_tower import step as train

    cfg = _cfg(root, **extra)
    out = train(DAY, cfg)
    return out, evaluate(DAY, cfg)


def _mmoe(root, **extra):
    from tasks.ranking.evaluate_mmoe import step as evaluate
    from tasks.ranking.train_mmoe import step as train

    cfg = _cfg(root, **extra)
    out = train(DAY, cfg)
    return out, evaluate(DAY, cfg)


@pytest.fixture(scope="module")
def one_process_two_tower(world):
    """The one-process ``model.fit`` two-tower (``training.distribute=none``) and its evaluation."""
    return _two_tower(world)


def test_two_workers_train_the_one_worker_two_tower(world, one_process_two_tower):
    one, ev1 = one_process_two_tower
    two, ev2 = _two_tower(world, **TWO)
    manifest = open_store(_cfg(world)).read_json(f"{two['model_dir']}/_manifest.json")
    print(f"\ntwo-tower final loss: 1 worker {one['final_loss']}, 2 workers {two['final_loss']}; "
          f"recall@50: {ev1['new']} vs {ev2['new']}")
    assert len(manifest["history"]["loss"]) == SMALL["training.epochs"]
    assert two["final_loss"] == pytest.approx(one["final_loss"], rel=LOSS_RTOL)
    assert ev1["metric"] == "recall_at_50"
    assert abs(ev2["new"] - ev1["new"]) <= METRIC_ATOL
    # the chief's checkpoints are in the day's folder, and the 1-process model restored the last one
    ckpts = world / "checkpoints" / "two_tower" / f"dt={DAY}"
    assert (ckpts / "checkpoint").exists() and (ckpts / "_workers" / "worker-1.log").exists()


def test_mirrored_custom_loop_trains_the_model_fit_two_tower(world, one_process_two_tower):
    """``training.distribute=mirrored``: the custom loop in the task's process (one CPU replica)."""
    one, ev1 = one_process_two_tower
    mirrored, ev2 = _two_tower(world, **{"training.distribute": "mirrored"})
    print(f"\ntwo-tower final loss: model.fit {one['final_loss']}, mirrored {mirrored['final_loss']}")
    assert mirrored["final_loss"] == pytest.approx(one["final_loss"], rel=LOSS_RTOL)
    assert abs(ev2["new"] - ev1["new"]) <= METRIC_ATOL


def test_two_workers_train_the_one_worker_mmoe(world):
    one, ev1 = _mmoe(world)
    two, ev2 = _mmoe(world, **TWO)
    print(f"\nMMoE final loss: 1 worker {one['final_loss']}, 2 workers {two['final_loss']}; "
          f"click AUC: {ev1['new_click_auc']} vs {ev2['new_click_auc']}")
    assert two["final_loss"] == pytest.approx(one["final_loss"], rel=LOSS_RTOL)
    assert abs(ev2["new_click_auc"] - ev1["new_click_auc"]) <= METRIC_ATOL


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_a_killed_worker_fails_the_task_and_leaves_no_process(world, monkeypatch):
    import psutil

    from dailyrec.distributed import launcher
    from dailyrec.errors import DistributedTrainingError
    from tasks.retrieval.train_two_tower import step as train

    started: list = []
    launch = launcher.launch

    def kill_worker_1_mid_training(procs):
        started.extend(procs)
        log1 = procs[1].log_path
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and "epoch 1/" not in log1.read_text(errors="replace"):
            time.sleep(0.2)
        os.kill(procs[1].proc.pid, signal.SIGKILL)

    # a real launch; the hook only kills worker 1 with SIGKILL once it is training
    monkeypatch.setattr(launcher, "launch", lambda *a, **k: launch(*a, **k, on_start=kill_worker_1_mid_training))
    cfg = _cfg(world, **TWO, **{"training.epochs": 50})
    with pytest.raises(DistributedTrainingError, match=r"worker 1 exited with signal 9 \(SIGKILL\)"):
        train(DAY, cfg)
    pids = [w.proc.pid for w in started]
    assert len(pids) == 2
    assert not [p for p in pids if _alive(p)], "a worker process survived"
    assert not [c.pid for c in psutil.Process().children(recursive=True) if c.pid in pids]
