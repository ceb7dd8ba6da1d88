from __future__ import annotations

import pytest

from dailyrec.config import ConfigError, load_config, parse_set_args


def test_defaults_load_and_validate():
    cfg = load_config(environ={})
    assert cfg.training.loss in ("bce", "softmax")
    names = [f.name for f in cfg.features.spec]
    assert "user_id" in names and "item_id" in names
    assert {f.side for f in cfg.features.spec} == {"user", "item", "context"}
    assert len(cfg.digest()) == 16


def test_unknown_key_refused_with_its_name_and_source():
    with pytest.raises(ConfigError, match=r"unknown key 'training.epohcs'.*per-run overrides|per-run overrides.*unknown key 'training.epohcs'"):
        load_config(overrides={"training.epohcs": 3}, environ={})
    with pytest.raises(ConfigError, match="unknown key 'nosuchsection'"):
        load_config(overrides={"nosuchsection": {"a": 1}}, environ={})


def test_bad_value_names_key_and_value():
    with pytest.raises(ConfigError, match=r"'training.epochs'.*-1"):
        load_config(overrides={"training.epochs": -1}, environ={})


def test_precedence_file_env_overrides(tmp_path):
    f = tmp_path / "extra.yaml"
    f.write_text("training:\n  epochs: 5\n  batch_size: 64\n")
    env = {"DAILYREC__TRAINING__EPOCHS": "7", "DAILYREC_DATA_ROOT": str(tmp_path / "d"),
           "REDIS_URL": "redis://127.0.0.1:6379/3"}
    cfg = load_config(files=[f], environ=env)
    assert cfg.training.batch_size == 64          # from the file
    assert cfg.training.epochs == 7               # env beats file
    assert cfg.storage.data_root == str(tmp_path / "d")
    assert cfg.redis.url == "redis://127.0.0.1:6379/3"
    cfg2 = load_config(files=[f], environ=env, overrides={"training.epochs": 9})
    assert cfg2.training.epochs == 9              # per-run beats env
    assert cfg2.digest() != cfg.digest()


def test_env_unknown_key_refused():
    with pytest.raises(ConfigError, match="environment.*unknown key 'training.nope'"):
        load_config(environ={"DAILYREC__TRAINING__NOPE": "1"})


def test_config_file_via_env_and_bad_yaml(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("training: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(environ={"DAILYREC_CONFIG": str(bad)})
    with pytest.raises(ConfigError, match="not found"):
        load_config(environ={"DAILYREC_CONFIG": str(tmp_path / "missing.yaml")})


def test_parse_set_args():
    assert parse_set_args(["training.epochs=3", "run.publish=false", "sampling.hard_negative_sources=[exposed]"]) == {
        "training.epochs": 3, "run.publish": False, "sampling.hard_negative_sources": ["exposed"]}
    with pytest.raises(ConfigError):
        parse_set_args(["novalue"])


def test_feature_spec_duplicate_names_refused():
    spec = [{"name": "user_id", "side": "user"}, {"name": "user_id", "side": "user"}]
    with pytest.raises(ConfigError, match="duplicate feature names"):
        load_config(overrides={"features.spec": spec}, environ={})


def test_shipped_config_files_are_valid():
    from dailyrec.config import REPO_ROOT

    for f in sorted((REPO_ROOT / "config").glob("*.yaml")):
        load_config(files=[f], environ={})


@pytest.mark.parametrize("overrides, match", [
    ({"features.spec": [{"name": "user_id", "side": "user", "kind": "int", "dtype": "string"}]},
     "kind='int' needs dtype='int'"),
    ({"features.spec": [{"name": "item_age_days", "side": "item", "kind": "numeric", "dtype": "float"}]},
     r"needs at least one user/context feature and one item feature, got the sides \['item'\]"),
    ({"features.spec": [{"name": "user_id", "side": "user", "kind": "vocab"}]},
     r"one item feature, got the sides \['user'\]"),
    ({"features.spec": [{"name": "item_id", "side": "item", "kind": "vocab", "dtype": "int"}]},
     "kind='vocab' needs dtype='string'"),
    ({"features.spec": [{"name": "price", "side": "item", "kind": "numeric"}]},
     "kind='numeric' needs dtype='float'"),
    ({"features.spec": [{"name": "item_domain", "side": "item", "kind": "hash", "transform": "log1p"}]},
     r"\['transform'\] apply to kind 'numeric' only"),
    ({"features.spec": [{"name": "price", "side": "item", "kind": "numeric", "dtype": "float", "clip": 0}]},
     "clip"),
    ({"evaluation.gate_metric": "recall_at_20"}, r"gate_metric 'recall_at_20' is not one of the evaluated"),
    ({"evaluation.gate_metric": "auc"}, "is not one of the evaluated metrics"),
    ({"ranking.loss_weights": {"click": 1.0, "convertion": 1.0}}, r"loss_weights must give a weight for each task.*unknown \['convertion'\]"),
    ({"ranking.loss_weights": {"click": 0.0, "conversion": 0.0}}, "not all 0"),
    ({"features.counter_windows_days": [7, 7]}, "distinct day counts"),
    ({"features.counter_windows_days": [0]}, "distinct day counts"),
    ({"training.optimizer.floor": 0.5}, "floor 0.5 is above learning_rate"),
    ({"training.optimizer.name": "sgd"}, "training.optimizer.name"),
])
def test_cross_field_rules_refused_at_load(overrides, match):
    """Rules between fields fail when the config is loaded (so `start` refuses them before any work)."""
    with pytest.raises(ConfigError, match=match):
        load_config(overrides=overrides, environ={})


def test_cross_field_rules_accept_consistent_values():
    cfg = load_config(overrides={"evaluation.ks": [20, 50], "evaluation.gate_metric": "ndcg_at_20",
                                 "ranking.loss_weights": {"click": 1.0, "conversion": 0.0},
                                 "features.counter_windows_days": [3, 1]}, environ={})
    assert cfg.evaluation.gate_metric == "ndcg_at_20"


def test_publish_knobs_are_config_keys():
    cfg = load_config(environ={"DAILYREC__REDIS__PUBLISH_BATCH": "100", "DAILYREC__REDIS__BLOB_CHUNK_BYTES": "5000",
                               "DAILYREC__REDIS__PUBLISH_BATCH_DELAY_S": "0.01"})
    assert (cfg.redis.publish_batch, cfg.redis.blob_chunk_bytes, cfg.redis.publish_batch_delay_s) == (100, 5000, 0.01)
    assert cfg.digest() != load_config(environ={}).digest()


def test_start_refuses_cross_field_errors_before_any_work():
    from dailyrec.runctx import RETRIEVAL_PARAM_KEYS, start_run

    ctx = {"params": {"cur_date": "2026-11-02", "config_overrides": {"evaluation.gate_metric": "recall_at_7"}}}
    with pytest.raises(ConfigError, match="recall_at_7"):
        start_run(ctx, RETRIEVAL_PARAM_KEYS)
