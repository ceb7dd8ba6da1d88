"""Shared helpers of the benchmarks in bench/ (run them with ``./dev bench NAME``).

* :func:`write_result` stores one benchmark's figures as ``bench/results/<name>.json``::

      {"command": "./dev bench generator ...", "date": "<UTC ISO timestamp of the run>",
       "machine": {"cpu": ..., "cores": ..., "mem_gb": ..., "python": ..., "platform": ...},
       "metrics": {...}}

* :func:`regenerate_results_md` rebuilds ``bench/RESULTS.md`` from every ``results/*.json``: one
  section per benchmark with its command, date, machine and a table of its metrics. The figures in
  RESULTS.md (and in any doc that points to it) only ever come from those JSON files.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import resource
import shlex
import sys
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"
RESULTS_MD = BENCH_DIR / "RESULTS.md"

if str(BENCH_DIR.parent) not in sys.path:  # `python bench/x.py` puts bench/ first, not the repo
    sys.path.insert(0, str(BENCH_DIR.parent))


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _proc_kb(path: str, key: str) -> int | None:
    """The ``key:`` line of a /proc file (``/proc/meminfo``, ``/proc/self/status``) in kB, or None."""
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(f"{key}:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def _mem_gb() -> float | None:
    kb = _proc_kb("/proc/meminfo", "MemTotal")
    return None if kb is None else round(kb / 1024 / 1024, 1)


def mem_available_mb() -> float:
    """The system's ``MemAvailable`` in MB (infinite where /proc is absent)."""
    kb = _proc_kb("/proc/meminfo", "MemAvailable")
    return float("inf") if kb is None else kb / 1024


def load_avg() -> float:
    """The 1-minute load average, rounded (the machine is shared: every figure records it)."""
    return round(os.getloadavg()[0], 2)


def machine_info() -> dict[str, Any]:
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "mem_gb": _mem_gb(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MB.

    ``VmHWM`` of ``/proc/self/status``: it starts afresh at ``exec``, whereas a subprocess's
    ``ru_maxrss`` inherits its parent's peak at ``fork``. ``ru_maxrss`` where /proc is absent.
    """
    kb = _proc_kb("/proc/self/status", "VmHWM")
    if kb is not None:
        return round(kb / 1024, 1)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(rss / (1024 * 1024 if sys.platform == "darwin" else 1024), 1)


def command_line(name: str, argv: list[str] | None = None) -> str:
    """``./dev bench NAME args...`` as it was run."""
    args = sys.argv[1:] if argv is None else argv
    return " ".join(["./dev", "bench", name, *[shlex.quote(a) for a in args]])


def write_result(name: str, command: str, metrics: dict[str, Any]) -> Path:
    """Write ``bench/results/<name>.json`` (command, UTC date of the run, machine, metrics)."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    doc = {
        "command": command,
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "metrics": metrics,
    }
    path = RESULTS_DIR / f"{name}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(doc, indent=2, sort_keys=False) + "\n")
    tmp.replace(path)
    return path


def save_result(name: str, argv: list[str] | None, metrics: dict[str, Any]) -> Path:
    """:func:`write_result` with the command as run, then :func:`regenerate_results_md`; says so."""
    path = write_result(name, command_line(name, argv), metrics)
    md = regenerate_results_md()
    print(f"wrote {path} and {md}")
    return path


def _fmt(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            return str(value)
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        if abs(value) >= 100:
            return f"{value:.1f}"
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(_fmt(v) for v in value)
    return str(value).replace("|", "\\|").replace("\n", " ")


def _flatten(metrics: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """``{"a": {"b": 1}, "t": [{"x": 2}]}`` -> ``[("a.b", 1), ("t[0].x", 2)]`` (scalar lists stay whole)."""
    if isinstance(metrics, dict):
        rows: list[tuple[str, Any]] = []
        for k, v in metrics.items():
            rows.extend(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return rows
    if isinstance(metrics, (list, tuple)) and any(isinstance(v, (dict, list, tuple)) for v in metrics):
        rows = []
        for i, v in enumerate(metrics):
            rows.extend(_flatten(v, f"{prefix}[{i}]"))
        return rows
    return [(prefix, metrics)]


def regenerate_results_md(paths: list[Path] | None = None) -> Path:
    """Rebuild ``bench/RESULTS.md`` from all ``bench/results/*.json`` (or only from ``paths``)."""
    lines = [
        "# Benchmark results",
        "",
        "Generated by `bench/_common.py` from `bench/results/*.json`; do not edit by hand. Every",
        "benchmark is run with `./dev bench NAME`, which rewrites its JSON file and this page.",
        "",
    ]
    files = sorted(RESULTS_DIR.glob("*.json") if paths is None else (Path(p) for p in paths))
    if not files:
        lines.append("_No results yet._")
    for path in files:
        name = path.stem
        try:
            doc = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            lines += [f"## {name}", "", f"_unreadable result file `{path.name}`: {exc}_", ""]
            continue
        m = doc.get("machine") or {}
        lines += [
            f"## {name}",
            "",
            f"- command: `{doc.get('command', '?')}`",
            f"- date: {doc.get('date', '?')}",
            "- machine: " + ", ".join(
                f"{k} {_fmt(m[k])}" for k in ("cpu", "cores", "mem_gb", "python", "platform") if k in m),
            f"- source: [`results/{path.name}`](results/{path.name})",
            "",
            "| metric | value |",
            "|---|---|",
        ]
        lines += [f"| `{k}` | {_fmt(v)} |" for k, v in _flatten(doc.get("metrics") or {})]
        lines.append("")
    RESULTS_MD.write_text("\n".join(lines).rstrip() + "\n")
    return RESULTS_MD


if __name__ == "__main__":
    print(regenerate_results_md())
