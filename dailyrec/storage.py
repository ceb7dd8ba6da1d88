"""Partitioned storage under one data root, addressed through pyarrow filesystems.

Layout (see docs/storage.md)::

    <root>/logs/dt=YYYY-MM-DD/hour=HH/part-*.parquet + _SUCCESS
    <root>/users/dt=YYYY-MM-DD/part-*.parquet
    <root>/items/dt=YYYY-MM-DD/part-*.parquet
    <root>/<step output>/dt=YYYY-MM-DD/...  + _manifest.json

``data_root`` is a local path (relative paths are relative to the repo) or a URI that
``pyarrow.fs.FileSystem.from_uri`` understands (``file:///``, ``s3://``, ``gs://`` ...), so an
object store can replace the local disk without code changes.

Every output goes through :func:`atomic_output`: written under a hidden temporary sibling and
moved into place only when complete, so a reader never sees a half-written partition and a
failed step leaves the previous output untouched.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs

from dailyrec import __version__
from dailyrec.config import REPO_ROOT, Config
from dailyrec.dates import check_hour, parse_date

SUCCESS_MARKER = "_SUCCESS"
MANIFEST = "_manifest.json"


@dataclass(frozen=True)
class Store:
    """A data root: a pyarrow filesystem plus the base path inside it."""

    fs: pafs.FileSystem
    root: str
    uri: str

    # ---- paths -------------------------------------------------------------------------
    def path(self, *parts: str) -> str:
        return "/".join([self.root.rstrip("/"), *[p.strip("/") for p in parts if p]])

    def partition(self, dataset: str, cur_date: str | dt.date, hour: int | None = None) -> str:
        d = parse_date(cur_date).isoformat()
        p = self.path(dataset, f"dt={d}")
        if hour is not None:
            p = f"{p}/hour={check_hour(hour):02d}"
        return p

    def local_path(self, path: str) -> Path:
        """The OS path of ``path`` (only for a local data root: TensorFlow and FAISS files)."""
        if not isinstance(self.fs, pafs.LocalFileSystem):
            raise RuntimeError(f"{self.uri} is not a local filesystem")
        return Path(path)

    # ---- queries -----------------------------------------------------------------------
    def exists(self, path: str) -> bool:
        return self.fs.get_file_info(path).type != pafs.FileType.NotFound

    def is_dir(self, path: str) -> bool:
        return self.fs.get_file_info(path).type == pafs.FileType.Directory

    def list_files(self, path: str, suffix: str = "") -> list[str]:
        if not self.is_dir(path):
            return []
        infos = self.fs.get_file_info(pafs.FileSelector(path, recursive=False))
        return sorted(
            i.path for i in infos
            if i.type == pafs.FileType.File and i.base_name.endswith(suffix)
            and not i.base_name.startswith((".", "_"))
        )

    def list_partitions(self, dataset: str) -> list[str]:
        """Dates (``YYYY-MM-DD``) that have a ``dt=`` partition for ``dataset``, oldest first."""
        base = self.path(dataset)
        if not self.is_dir(base):
            return []
        infos = self.fs.get_file_info(pafs.FileSelector(base, recursive=False))
        return sorted(
            i.base_name[3:] for i in infos
            if i.type == pafs.FileType.Directory and i.base_name.startswith("dt=")
        )

    def read_text(self, path: str) -> str:
        with self.fs.open_input_stream(path) as f:
            return f.read().decode()

    def write_text(self, path: str, text: str) -> None:
        """Write a small file atomically (temp file + move)."""
        parent = path.rsplit("/", 1)[0]
        self.fs.create_dir(parent, recursive=True)
        tmp = f"{parent}/.tmp-{uuid.uuid4().hex}"
        with self.fs.open_output_stream(tmp) as f:
            f.write(text.encode())
        self.fs.move(tmp, path)

    def read_json(self, path: str) -> Any:
        return json.loads(self.read_text(path))

    def write_json(self, path: str, obj: Any) -> None:
        self.write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")

    def sha256(self, path: str) -> str:
        """Hex sha256 of a file's bytes (read in 8 MiB chunks through the store's filesystem)."""
        import hashlib

        h = hashlib.sha256()
        with self.fs.open_input_stream(path) as f:
            while chunk := f.read(8 << 20):
                h.update(chunk)
        return h.hexdigest()

    def delete_dir(self, path: str) -> None:
        if self.is_dir(path):
            self.fs.delete_dir(path)

    # ---- atomic outputs ---------------------------------------------------------------
    @contextlib.contextmanager
    def atomic_output(self, final: str) -> Iterator[str]:
        """Yield a temporary directory; on success it replaces ``final`` as a whole.

        On an exception the temporary directory is removed and ``final`` (if any) is
        untouched. A re-run overwrites its own output and nothing else.
        """
        parent, name = final.rstrip("/").rsplit("/", 1)
        self.fs.create_dir(parent, recursive=True)
        tmp = f"{parent}/.tmp-{name}-{uuid.uuid4().hex[:12]}"
        self.fs.create_dir(tmp, recursive=True)
        try:
            yield tmp
        except BaseException:
            with contextlib.suppress(Exception):
                self.fs.delete_dir(tmp)
            raise
        self.replace_dir(tmp, final)

    def replace_dir(self, src: str, final: str) -> None:
        parent, name = final.rstrip("/").rsplit("/", 1)
        trash = None
        if self.exists(final):
            trash = f"{parent}/.old-{name}-{uuid.uuid4().hex[:12]}"
            self.fs.move(final, trash)
        try:
            self.fs.move(src, final)
        except BaseException:
            if trash is not None:  # put the previous output back
                self.fs.move(trash, final)
            raise
        if trash is not None:
            self.fs.delete_dir(trash)


def open_store(cfg_or_root: Config | str) -> Store:
    root = cfg_or_root.storage.data_root if isinstance(cfg_or_root, Config) else cfg_or_root
    if "://" in root:
        fs, path = pafs.FileSystem.from_uri(root)
        if isinstance(fs, pafs.LocalFileSystem):
            Path(path).mkdir(parents=True, exist_ok=True)
        return Store(fs=fs, root=path.rstrip("/"), uri=root)
    p = Path(root)
    if not p.is_absolute():
        p = REPO_ROOT / p
    p.mkdir(parents=True, exist_ok=True)
    return Store(fs=pafs.LocalFileSystem(), root=str(p.resolve()), uri=str(p.resolve()))


_CODE_VERSION: str | None = None


def code_version() -> str:
    """The git commit of the repo (``+dirty`` when modified), or the package version."""
    global _CODE_VERSION
    if _CODE_VERSION is None:
        try:
            rev = subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "--short=12", "HEAD"],
                                 capture_output=True, text=True, timeout=5, check=True).stdout.strip()
            dirty = subprocess.run(["git", "-C", str(REPO_ROOT), "status", "--porcelain", "--untracked-files=no"],
                                   capture_output=True, text=True, timeout=5).stdout.strip()
            _CODE_VERSION = rev + ("+dirty" if dirty else "")
        except Exception:
            _CODE_VERSION = f"dailyrec-{__version__}"
    return _CODE_VERSION


class Timer:
    """Collects named wall-clock timings and peak RSS for a manifest.

    ``timings`` is ``{phase: seconds}`` of every finished ``with timer.step(phase)``; ``peaks_mb``
    is ``{phase: peak RSS in MB}`` of the same phases, and :meth:`peak_rss` the stage's figures as
    a manifest records them (:mod:`dailyrec.memory`: ``VmHWM`` reset at the start of the timer and
    of each phase on Linux; the process-lifetime peak where that is not allowed). A phase run twice
    keeps its last figures. Both vary from run to run: manifests keep them under the volatile keys
    ``timings_s`` and ``peak_rss_mb`` (docs/storage.md).
    """

    def __init__(self) -> None:
        from dailyrec.memory import PeakMeter

        self.timings: dict[str, float] = {}
        self.peaks_mb: dict[str, float] = {}
        self._t0 = time.perf_counter()
        self._meter = PeakMeter()

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[None]:
        token = self._meter.open()
        t = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] = round(time.perf_counter() - t, 4)
            self.peaks_mb[name] = self._meter.close(token)

    def total(self) -> float:
        return round(time.perf_counter() - self._t0, 4)

    def stage_peak_mb(self) -> float:
        """Peak RSS in MB since the timer started (the stage's peak so far)."""
        return self._meter.stage_mb

    def peak_rss(self) -> dict[str, Any]:
        """``{"stage": MB, "start": MB, "phases": {phase: MB}, "method": how}``: the manifest's
        ``peak_rss_mb`` (``start``: the RSS when the timer started, which every peak includes)."""
        from dailyrec.memory import method

        return {"stage": self.stage_peak_mb(), "start": self._meter.start_mb, "phases": dict(self.peaks_mb),
                "method": method()}

    def summary(self) -> str:
        """``"12.30s, peak RSS 1,234 MB (load 2.10s 800 MB, fit 9.00s 1,234 MB)"``: the summary line's figures."""
        phases = ", ".join(f"{k} {v:.2f}s {self.peaks_mb.get(k, float('nan')):,.0f} MB"
                           for k, v in self.timings.items() if k != "total")
        return f"{self.total():.2f}s, peak RSS {self.stage_peak_mb():,.0f} MB" + (f" ({phases})" if phases else "")


def make_manifest(
    step: str,
    cfg: Config,
    cur_date: str | None,
    inputs: list[str] | dict[str, Any],
    rows: dict[str, int],
    timings: dict[str, float] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """The small JSON written next to every output: what went in, what came out, how long.

    ``timings`` (``{phase: seconds}``) go under ``timings_s``; a step's manifest (through
    :meth:`dailyrec.step.StepRun.manifest`) also has ``peak_rss_mb`` (:meth:`Timer.peak_rss`).
    """
    return {
        "step": step,
        "cur_date": cur_date,
        "inputs": inputs,
        "rows": rows,
        "config_hash": cfg.digest(),
        "code_version": code_version(),
        "timings_s": timings or {},
        "pid": os.getpid(),
        **extra,
    }
