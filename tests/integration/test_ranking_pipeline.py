"""The ranking pipeline's steps on small generated data: ranking samples (down-sampling, holdout,
calibration, the conversion-without-click error), MMoE training with warm start, export/reload,
the score CLI, and the evaluation gate. Real DuckDB, TensorFlow and files; no mocks.

Data: three demo days (dailyrec.demo.generator, 20k impressions a day) and their features
(tasks.retrieval.features), built once for the module. Days 1 and 2 are trained, evaluated and published
once (fixture ``trained``); day 3 is trained deliberately badly in the gate test.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dailyrec.config import load_config
from dailyrec.dates import date_range
from dailyrec.storage import open_store
from tests.helpers import REPO, validate_day

DAYS = date_range("2026-11-01", 3)
HOLDOUT_HOURS = 3
RATE = 0.25
SMALL = {
    "demo.events_per_day": 20000, "demo.n_users": 600, "demo.n_items": 300,
    "sampling.window_days": 2, "training.holdout_hours": HOLDOUT_HOURS,
    "ranking.negative_downsample_rate": RATE, "ranking.batch_size": 256, "ranking.epochs": 5,
    # the small holdout (~600 clicks, ~35 conversions) makes AUC noisy from day to day
    "ranking.max_auc_drop_vs_previous": 0.05,
    "training.checkpoint_every_steps": 25,
}


def _cfg(root, **extra):
    return load_config(overrides={"storage.data_root": str(root), **SMALL, **extra}, environ={})


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from tasks.retrieval.features import step as build_features
    from dailyrec.demo.generator import generate

    root = tmp_path_factory.mktemp("ranking") / "data"
    cfg = _cfg(root)
    generate(cfg, DAYS[0], len(DAYS))
    for d in DAYS:
        validate_day(open_store(cfg), d)
        build_features(d, cfg)
    return {"root": root, "cfg": cfg, "store": open_store(cfg)}


@pytest.fixture(scope="module")
def trained(world):
    """Days 1 and 2: samples, train (MMoE + baseline), evaluate, publish when the gate passes."""
    from tasks.ranking.evaluate_mmoe import step as evaluate_mmoe
    from tasks.ranking.publish_model import step as publish_mmoe
    from tasks.ranking.ranking_samples import step as build_ranking_samples
    from tasks.ranking.train_mmoe import step as train_mmoe

    cfg = world["cfg"]
    out = {}
    for d in DAYS[:2]:
        build_ranking_samples(d, cfg)
        train = train_mmoe(d, cfg)
        ev = evaluate_mmoe(d, cfg)
        if ev["passed"]:
            publish_mmoe(d, cfg)
        out[d] = {"train": train, "eval": ev}
    assert out[DAYS[0]]["eval"]["passed"], "the first model has nothing to compare with: its gate passes"
    return out


def _logs(world, days) -> pd.DataFrame:
    frames = []
    for d in days:
        for h in range(24):
            part = world["store"].partition("logs", d, h)
            for f in world["store"].list_files(part, ".parquet"):
                frames.append(pq.read_table(f, columns=["request_id", "click", "conversion"]).to_pandas()
                              .assign(day=d, hour=h))
    return pd.concat(frames, ignore_index=True)


def _manifest(world, dataset, d):
    return json.loads((world["root"] / dataset / f"dt={d}" / "_manifest.json").read_text())


# ---- samples ------------------------------------------------------------------------------------
def test_samples_downsample_non_clicks_keep_every_click_and_the_whole_holdout(world):
    from tasks.ranking.ranking_samples import step as build_ranking_samples

    d = DAYS[1]
    res = build_ranking_samples(d, world["cfg"])
    train = pq.read_table(res["train"]).to_pandas()
    hold = pq.read_table(res["holdout"]).to_pandas()
    logs = _logs(world, DAYS[:2])
    is_hold = (logs.day == d) & (logs.hour >= 24 - HOLDOUT_HOURS)
    win, held = logs[~is_hold], logs[is_hold]

    # holdout: every impression of the last hours, not down-sampled
    assert sorted(hold.request_id) == sorted(held.request_id)
    assert (hold.sample_weight == 1).all() and (hold.downsample_rate == 1).all()
    # every click (and so every conversion) of the training window is kept, nothing from the holdout
    assert set(train.request_id) <= set(win.request_id)
    assert sorted(train[train.click == 1].request_id) == sorted(win[win.click == 1].request_id)
    assert train.conversion.sum() == win.conversion.sum() > 0
    # non-clicks kept at the rate: Binomial(n, r), 4 sigma
    n_neg = int((win.click == 0).sum())
    kept = int((train.click == 0).sum())
    assert abs(kept - RATE * n_neg) < 4 * math.sqrt(n_neg * RATE * (1 - RATE)), (kept, n_neg)
    # weights: clicks 1, kept non-clicks 1/r; the weighted CTR estimates the window's real CTR
    assert np.allclose(train.loc[train.click == 1, ["sample_weight", "downsample_rate"]], 1.0)
    assert np.allclose(train.loc[train.click == 0, "sample_weight"], 1 / RATE)
    assert np.allclose(train.loc[train.click == 0, "downsample_rate"], RATE)
    w_ctr = (train.sample_weight * train.click).sum() / train.sample_weight.sum()
    assert abs(w_ctr - win.click.mean()) < 0.01
    assert train.click.mean() > 2 * win.click.mean()  # the down-sampled data over-represents clicks

    man = _manifest(world, "ranking_samples", d)
    assert man["negative_downsample_rate"] == RATE
    lab = man["stats"]["labels"]
    assert lab["click"]["positives_before"] == lab["click"]["positives_after"] == int(win.click.sum())
    assert lab["conversion"]["positives_before"] == int(win.conversion.sum())
    assert lab["click"]["rate_before"] == pytest.approx(win.click.mean(), abs=1e-6)
    assert lab["click"]["rate_after"] == pytest.approx(train.click.mean(), abs=1e-6)
    assert lab["click"]["holdout_positives"] == int(held.click.sum())
    assert man["rows"] == {"train": len(train), "holdout": len(hold), "window": len(logs),
                           "train_before_downsampling": len(win)}
    # every feature of the spec is a column
    assert {f.name for f in world["cfg"].features.spec} <= set(train.columns)

    # deterministic: the same rows again
    again = pq.read_table(build_ranking_samples(d, world["cfg"])["train"]).to_pandas()
    assert list(again.request_id) == list(train.request_id)


def _rows(feats: dict, labels: dict, names: list[str]) -> np.ndarray:
    """One int64 row per example (ids then labels), sorted: the multiset of rows an epoch saw."""
    m = np.column_stack([np.asarray(feats[n], np.int64) for n in names]
                        + [np.asarray(labels[t]).astype(np.int64) for t in ("click", "conversion")])
    return m[np.lexsort(m.T[::-1])]


def test_training_rows_are_written_shuffled_and_streamed_back_whole(world, tmp_path):
    """The samples step writes the training rows in a seeded random order (row groups of
    dailyrec.stream.ROW_GROUP_ROWS); the ranking training stream sees each of them exactly once per
    epoch, in an order that changes with the epoch and is the same for the same seed."""
    from dailyrec.ranking.inputs import stream_dataset, training_stream
    from dailyrec.stream import ID_DTYPE, ROW_GROUP_ROWS, id_encoders
    from tasks.ranking.ranking_samples import step as build_ranking_samples

    d, cfg = DAYS[1], world["cfg"]
    res = build_ranking_samples(d, cfg)
    pf = pq.ParquetFile(res["train"])
    assert pf.metadata.row_group(0).num_rows == min(ROW_GROUP_ROWS, pf.metadata.num_rows)
    train = pf.read()
    t = train.column("event_time").cast("int64").to_numpy()
    assert (np.diff(t) < 0).sum() > len(t) // 4  # not the SQL's time order
    assert _manifest(world, "ranking_samples", d)["train_order"] == {
        "shuffle_seed": [cfg.ranking.seed, int(d.replace("-", "")), 1], "row_group_rows": ROW_GROUP_ROWS}

    # small row groups and a buffer of three of them, so the shuffle crosses row groups
    path = str(tmp_path / "train.parquet")
    pq.write_table(train, path, row_group_size=500)
    vocab = json.loads((world["root"] / "features" / f"dt={d}" / "vocabularies.json").read_text())
    specs = list(cfg.features.spec)
    names = [s.name for s in specs]
    expected = _rows({n: enc(train.column(n)) for n, enc in id_encoders(specs, vocab).items()},
                     {c: train.column(c).to_numpy() for c in ("click", "conversion")}, names)

    def epoch(ds) -> tuple[np.ndarray, np.ndarray]:
        batches = list(ds.as_numpy_iterator())
        assert all(len(b[0][names[0]]) == 256 for b in batches[:-1])
        feats = {n: np.concatenate([b[0][n] for b in batches]) for n in names}
        labels = {c: np.concatenate([b[1][c] for b in batches]) for c in ("click", "conversion")}
        assert {v.dtype for v in feats.values()} == {np.dtype(ID_DTYPE)}
        assert {v.dtype for v in labels.values()} == {np.dtype(np.float32)}
        return _rows(feats, labels, names), feats[names[0]]

    stream = training_stream(path, specs, vocab, batch_size=256, seed=13, buffer_rows=1500)
    ds = stream_dataset(stream)
    assert int(ds.cardinality()) == stream.steps_per_epoch == -(-train.num_rows // 256)
    (rows0, order0), (rows1, order1) = epoch(ds), epoch(ds)  # each iteration is the next epoch
    np.testing.assert_array_equal(rows0, expected)
    np.testing.assert_array_equal(rows1, expected)
    assert not np.array_equal(order0, order1)
    assert not np.array_equal(order0, id_encoders(specs, vocab)[names[0]](train.column(names[0])))
    # a fresh stream with the same seed replays the same epochs (the baseline sees the MMoE's batches)
    again = stream_dataset(training_stream(path, specs, vocab, batch_size=256, seed=13, buffer_rows=1500))
    np.testing.assert_array_equal(epoch(again)[1], order0)
    np.testing.assert_array_equal(epoch(again)[1], order1)


def test_rate_one_keeps_everything(world, tmp_path):
    from tasks.ranking.ranking_samples import step as build_ranking_samples

    cfg = world["cfg"].with_overrides({"ranking.negative_downsample_rate": 1.0})
    res = build_ranking_samples(DAYS[2], cfg)
    assert res["rows"]["train"] == res["rows"]["train_before_downsampling"]
    assert (pq.read_table(res["train"]).column("sample_weight").to_numpy() == 1).all()


def test_calibrate_inverts_downsampling():
    from dailyrec.ranking.calibration import calibrate, calibrate_conversion

    rng = np.random.default_rng(0)
    q_click = rng.uniform(0.001, 0.999, 1000)
    q_conv = q_click * rng.uniform(0, 1, 1000)  # a conversion needs a click
    for r in (1.0, 0.5, 0.1, 0.01):
        # what a model trained on data with non-clicks kept at r converges to
        p_click = q_click / (q_click + (1 - q_click) * r)
        p_conv = q_conv / (q_click + (1 - q_click) * r)
        np.testing.assert_allclose(calibrate(p_click, r), q_click, rtol=1e-9)
        np.testing.assert_allclose(calibrate_conversion(p_conv, p_click, r), q_conv, rtol=1e-9, atol=1e-12)
    np.testing.assert_array_equal(calibrate([0.0, 1.0], 0.3), [0.0, 1.0])
    with pytest.raises(ValueError, match="rate"):
        calibrate(0.5, 0.0)


def test_conversion_without_click_is_an_error(tmp_path):
    from dailyrec.errors import ContractError
    from tasks.retrieval.features import step as build_features
    from tasks.ranking.ranking_samples import step as build_ranking_samples
    from tests.helpers import make_items, make_users, random_day, write_day

    cfg = load_config(overrides={"storage.data_root": str(tmp_path / "data"), "sampling.window_days": 1},
                      environ={})
    store = open_store(cfg)
    d = DAYS[0]
    ev = random_day(d, 600, n_users=30, n_items=20, seed=1)
    users, items = make_users([f"u{i}" for i in range(30)]), make_items([f"i{i}" for i in range(20)])
    write_day(store, d, ev, users, items)
    build_features(d, cfg)
    click = ev["click"].to_numpy()
    conv = np.zeros(len(click), np.int8)
    conv[np.flatnonzero(click == 1)[:5]] = 1           # fine: conversions after clicks
    conv[np.flatnonzero(click == 0)[:2]] = 1           # bad: conversions without a click
    ev = ev.set_column(ev.schema.get_field_index("conversion"), "conversion", pa.array(conv, pa.int8()))
    # the day's logs re-delivered with the bad conversions: its validation fails, naming them, and
    # the ranking samples refuse the day (the features of the good delivery exist)
    with pytest.raises(ContractError, match=r"'conversion' is 1 on \d+ row\(s\) where 'click' is 0"):
        write_day(store, d, ev, users, items)
    with pytest.raises(ContractError, match=r"'conversion' is 1 on \d+ row\(s\) where 'click' is 0") as exc:
        build_ranking_samples(d, cfg)
    assert f"{d} failed validation" in str(exc.value)
    assert not store.exists(store.partition("ranking_samples", d))
    # the library's own check, for a caller that skips the step's prologue
    from dailyrec.ranking.samples import impression_rows
    from dailyrec.storage import Timer

    with pytest.raises(ContractError, match=r"'conversion' is 1 where 'click' is 0 on 2 impression") as exc:
        impression_rows(store, d, cfg, Timer())
    assert d in str(exc.value)


def test_samples_need_the_features_manifest(tmp_path):
    from tasks.ranking.ranking_samples import ready
    from tasks.ranking.ranking_samples import step as build_ranking_samples

    cfg = load_config(overrides={"storage.data_root": str(tmp_path / "data")}, environ={})
    assert not ready(DAYS[0], cfg)[0]
    with pytest.raises(FileNotFoundError, match="features"):
        build_ranking_samples(DAYS[0], cfg)


# ---- training, evaluation, calibration ----------------------------------------------------------
@pytest.mark.slow
def test_training_warm_starts_and_records_it(world, trained):
    import tensorflow as tf

    m1 = _manifest(world, "models/mmoe", DAYS[0])
    m2 = _manifest(world, "models/mmoe", DAYS[1])
    assert m1["warm_start"]["from"] is None
    assert m2["warm_start"]["from"] == DAYS[0] and trained[DAYS[1]]["train"]["warm_start_from"] == DAYS[0]
    v1 = json.loads((world["root"] / f"features/dt={DAYS[0]}/vocabularies.json").read_text())
    v2 = json.loads((world["root"] / f"features/dt={DAYS[1]}/vocabularies.json").read_text())
    enc = m2["warm_start"]["stats"]["encoder"]
    for feat in ("user_id", "item_id"):
        known = len(set(v2[feat]) & set(v1[feat]))
        assert enc[feat] == {"kept": known, "new": len(v2[feat]) - known}, feat
        assert known > 0
    assert m2["warm_start"]["stats"]["copied"] > 0 and m2["warm_start"]["stats"]["skipped"] == 0
    assert m2["baseline"]["warm_start"]["from"] == DAYS[0]
    assert m2["model_version"].startswith(f"mmoe-{DAYS[1]}-") and len(m2["model_version"].split("-")[-1]) == 8
    assert m2["negative_downsample_rate"] == RATE
    assert len(m2["history"]["loss"]) == SMALL["ranking.epochs"] and m2["examples_per_s"] > 0
    assert m2["baseline"]["kind"] == "shared_bottom"
    # same parameter budget (models.mmoe.matched_shared_bottom_units), within 5%
    assert abs(m2["baseline"]["params"] - m2["params"]) / m2["params"] < 0.05
    ckpt = m2["checkpoints"]
    assert tf.train.latest_checkpoint(f"{ckpt}/main") and tf.train.latest_checkpoint(f"{ckpt}/baseline")
    tb = world["root"] / f"tensorboard/mmoe/dt={DAYS[1]}"
    assert any(tb.rglob("events.out.tfevents.*"))


@pytest.mark.slow
def test_calibrated_predictions_match_the_heldout_rates(world, trained):
    """Trained on data with non-clicks kept at r = 0.25, the raw click predictions are ~2.5x the real
    CTR; calibrated, they match the held-out CTR (which was never down-sampled)."""
    for d in DAYS[:2]:
        rep = json.loads((world["root"] / f"eval/mmoe/dt={d}/report.json").read_text())
        new = rep["table"]["new"]
        raw_ratio = new["click_mean_raw_pred"] / new["click_mean_label"]
        assert raw_ratio > 1.8, new
        assert 0.8 < new["click_calibration"] < 1.25, new
        conv_raw = new["conversion_mean_raw_pred"] / new["conversion_mean_label"]
        assert abs(math.log(new["conversion_calibration"])) < abs(math.log(conv_raw)), new
        assert new["click_auc"] > 0.6
        assert set(rep["table"]) >= {"new", "shared_bottom"}
        assert rep["downsample_rates"]["new"] == RATE
        for task in ("click", "conversion"):
            g = rep["gates"][task]
            assert len(g["mean_weight"]) == world["cfg"].ranking.num_experts
            assert abs(sum(g["mean_weight"]) - 1) < 1e-6 and 0 <= g["entropy"] <= 1
        assert isinstance(rep["warnings"], list)
    rep2 = json.loads((world["root"] / f"eval/mmoe/dt={DAYS[1]}/report.json").read_text())
    assert "previous" in rep2["table"] and rep2["gate"]["previous_model"] == DAYS[0]


@pytest.mark.slow
def test_export_and_reload_give_identical_scores(world, trained):
    import tensorflow as tf

    from models.ranking import load_model
    from models.serving import load_ranking_model
    from dailyrec.inputs import feature_arrays

    mdir = world["root"] / f"models/mmoe/dt={DAYS[1]}"
    rows = pq.read_table(world["root"] / f"ranking_samples/dt={DAYS[1]}/holdout.parquet").slice(0, 500)
    for sub in ("", "shared_bottom/"):
        keras_model = load_model(mdir / f"{sub}model", compile=False)
        feats = feature_arrays(rows, list(keras_model.encoder.specs))
        sig = keras_model.input_signature()
        direct = keras_model({n: tf.constant(feats[n].astype(str) if feats[n].dtype == object else feats[n],
                                             dtype=sig[n].dtype) for n in sig}, training=False)
        served = load_ranking_model(mdir / f"{sub}saved_model")(feats)
        for task in ("click", "conversion"):
            np.testing.assert_allclose(served[task], np.asarray(direct[task]).reshape(-1), rtol=1e-5, atol=1e-7)


def _score_cli(world, *args, stdin=None):
    env = {k: v for k, v in os.environ.items() if not k.startswith("DAILYREC")}
    env.update({"DAILYREC_DATA_ROOT": str(world["root"]), "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2"})
    return subprocess.run([sys.executable, "-m", "dailyrec.scoring", *args], capture_output=True, text=True,
                          timeout=300, cwd=str(REPO), env=env, input=stdin)


@pytest.mark.slow
def test_score_cli_on_a_parquet_file(world, trained, tmp_path):
    import io

    from dailyrec.scoring import Scorer, read_rows

    rows = pq.read_table(world["root"] / f"ranking_samples/dt={DAYS[1]}/holdout.parquet").slice(0, 7)
    path = tmp_path / "rows.parquet"
    pq.write_table(rows, path)
    res = _score_cli(world, "--input", str(path))
    assert res.returncode == 0, res.stderr[-3000:]
    out = [json.loads(line) for line in res.stdout.splitlines()]
    assert [o["row"] for o in out] == list(range(7))
    assert [o["request_id"] for o in out] == rows.column("request_id").to_pylist()
    for o in out:
        assert 0 < o["click"] < 1 and 0 < o["conversion"] < 1
    scorer = Scorer(world["cfg"])
    assert scorer.info["cur_date"] == max(d for d in DAYS[:2] if trained[d]["eval"]["passed"])
    assert "with " + scorer.info["model_version"] in res.stderr
    expected = scorer.score(rows)
    for o, e in zip(out, expected):
        assert o["click"] == pytest.approx(e["click"], abs=2e-6)
        assert o["conversion"] == pytest.approx(e["conversion"], abs=2e-6)
    # the same rows as JSON lines (what a user types by hand) give the same scores
    jsonl = "\n".join(json.dumps({k: v for k, v in r.items() if k != "event_time"}) for r in rows.to_pylist())
    records, where = read_rows(None, io.StringIO(jsonl))
    assert [s["click"] for s in scorer.score(records, where)] == [e["click"] for e in expected]

    # a missing feature column is named
    pq.write_table(rows.drop_columns(["hour_of_day", "item_category"]), tmp_path / "bad.parquet")
    bad = _score_cli(world, "--input", str(tmp_path / "bad.parquet"))
    assert bad.returncode == 2 and "missing feature column(s) ['hour_of_day', 'item_category']" in bad.stderr
    with pytest.raises(ValueError, match=r"missing feature column\(s\) \['device_type'\]"):
        scorer.score([{k: v for k, v in records[0].items() if k != "device_type"}])
    with pytest.raises(FileNotFoundError, match=f"no ranking model is published for {DAYS[2]}"):
        Scorer(world["cfg"], DAYS[2])


@pytest.mark.slow
def test_gate_blocks_a_deliberately_worse_model(world, trained):
    from dailyrec.errors import GateRejected
    from dailyrec.registry import published_before
    from dailyrec.scoring import published_dates
    from tasks.ranking.evaluate_mmoe import step as evaluate_mmoe
    from tasks.ranking.publish_model import step as publish_mmoe
    from tasks.ranking.ranking_samples import step as build_ranking_samples
    from tasks.ranking.train_mmoe import step as train_mmoe

    d = DAYS[2]
    bad = world["cfg"].with_overrides({"ranking.optimizer.learning_rate": 1e-9, "ranking.optimizer.floor": 0.0,
                                       "training.warm_start": False, "ranking.epochs": 1,
                                       "ranking.train_baseline": False})
    build_ranking_samples(d, bad)
    train_mmoe(d, bad)
    res = evaluate_mmoe(d, bad)
    before = published_before(world["store"], "mmoe", d)
    assert not res["passed"]
    assert any(r.startswith("click AUC") for r in res["reasons"]), res["reasons"]
    rep = json.loads((world["root"] / f"eval/mmoe/dt={d}/report.json").read_text())
    assert rep["gate"]["passed"] is False and rep["gate"]["previous_model"] == before["cur_date"]
    assert rep["table"]["new"]["click_auc"] < rep["table"]["previous"]["click_auc"] - 0.05
    with pytest.raises(GateRejected, match="did not pass its gate"):
        publish_mmoe(d, bad)
    assert d not in published_dates(world["store"])
