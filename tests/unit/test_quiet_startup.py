"""TensorFlow's start-up lines stay off stderr in a task (dailyrec.logs.quiet_startup), real ones do not."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

CODE = """
import sys
from dailyrec.logs import quiet_startup
quiet_startup()
import tensorflow as tf
print("after import", file=sys.stderr)
print(tf.constant(2).numpy())
"""


def _run(code: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env["PYTHONPATH"] = str(REPO)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)


def test_tensorflow_import_in_a_task_writes_no_start_up_line():
    res = _run(CODE)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "2"
    assert "oneDNN" not in res.stderr and "absl::InitializeLog" not in res.stderr, res.stderr
    assert "after import" in res.stderr   # stderr works again after the import


def test_the_hook_is_needed_and_keeps_other_lines():
    # without quiet_startup the lines are there (TF_CPP_MIN_LOG_LEVEL alone does not remove them)
    plain = _run("import os; os.environ['TF_CPP_MIN_LOG_LEVEL'] = '3'; import tensorflow")
    assert plain.returncode == 0 and "oneDNN custom operations" in plain.stderr, plain.stderr
    # a line written to fd 2 during the import that is not start-up chatter is written back
    code = ("import os, sys, importlib.abc\n"
            "from dailyrec.logs import QuietTensorFlowImport, _QuietLoader\n"
            "class Loud(importlib.abc.Loader):\n"
            "    def create_module(self, spec): return None\n"
            "    def exec_module(self, m): os.write(2, b'real error\\nI0000 oneDNN custom operations are on\\n')\n"
            "import types; _QuietLoader(Loud()).exec_module(types.ModuleType('x'))\n")
    res = _run(code)
    assert res.returncode == 0, res.stderr
    assert "real error" in res.stderr and "oneDNN" not in res.stderr
