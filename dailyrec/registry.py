"""Where trained models live, which passed their gate, and which is published.

    <root>/models/<name>/dt=D/          the model trained for D (written atomically)
    <root>/eval/<name>/dt=D/report.json the evaluation and gate decision for D
    <root>/registry/<name>/dt=D/published.json   written when D's model went online
    <root>/registry/<name>/dt=D/hour=HH/published.json   written when pass (D, HH)'s delta went online

Warm start uses the newest model strictly before ``cur_date`` whose gate passed; evaluation
compares with the newest *published* model strictly before ``cur_date`` ("yesterday's model").

One answer to "what is online": whatever moves the serving pointer (for the two-tower, Redis
``current``: a publish, ``--allow-backwards``, a rollback; see ``dailyrec.publishing``) calls
:func:`mark_online`, which writes the entry of the date now online and marks every *later* entry
``withdrawn`` (the JSON gains ``"withdrawn": {...}``); :func:`published_before` skips withdrawn
entries, so the next day's gate compares with the model actually online.
"""

from __future__ import annotations

from typing import Any

from dailyrec.dates import parse_date
from dailyrec.storage import Store


def model_dir(store: Store, name: str, cur_date: str) -> str:
    return store.partition(f"models/{name}", cur_date)


def eval_report_path(store: Store, name: str, cur_date: str) -> str:
    return f"{store.partition(f'eval/{name}', cur_date)}/report.json"


def _before(store: Store, dataset: str, cur_date: str) -> list[str]:
    c = parse_date(cur_date).isoformat()
    return [d for d in store.list_partitions(dataset) if d < c]


def gate_passed(store: Store, name: str, cur_date: str) -> bool:
    path = eval_report_path(store, name, cur_date)
    return store.exists(path) and bool(store.read_json(path).get("gate", {}).get("passed"))


def warm_start_source(store: Store, name: str, cur_date: str) -> tuple[str, str] | None:
    """(date, model dir) of the newest gate-passed model strictly before ``cur_date``."""
    for d in reversed(_before(store, f"models/{name}", cur_date)):
        if gate_passed(store, name, d) and store.exists(f"{model_dir(store, name, d)}/_manifest.json"):
            return d, model_dir(store, name, d)
    return None


def published_path(store: Store, name: str, cur_date: str, hour: int | None = None) -> str:
    """``<root>/registry/<name>/dt=<cur_date>[/hour=HH]/published.json`` (``hour``: a pass's entry)."""
    return f"{store.partition(f'registry/{name}', cur_date, hour)}/published.json"


def read_published(store: Store, name: str, cur_date: str, hour: int | None = None) -> dict[str, Any] | None:
    """The registry entry of ``cur_date`` (``hour``: of that pass), withdrawn or not, or ``None``."""
    path = published_path(store, name, cur_date, hour)
    return store.read_json(path) if store.exists(path) else None


def _write_day_entry(store: Store, name: str, cur_date: str, entry: dict[str, Any]) -> str:
    """Replace ``dt=D/published.json`` atomically, keeping the hourly entries ``dt=D/hour=HH/``."""
    out = store.partition(f"registry/{name}", cur_date)
    with store.atomic_output(out) as tmp:
        store.write_json(f"{tmp}/published.json", entry)
        for h in range(24):
            path = f"{published_path(store, name, cur_date, h)}"
            if store.exists(path):
                store.write_json(f"{tmp}/hour={h:02d}/published.json", store.read_json(path))
    return f"{out}/published.json"


def mark_published(store: Store, name: str, cur_date: str, info: dict[str, Any]) -> str:
    """Write ``cur_date``'s entry: ``{name, cur_date, model_dir, **info}`` (replacing any older one)."""
    return _write_day_entry(store, name, cur_date, {"name": name, "cur_date": cur_date,
                                                    "model_dir": model_dir(store, name, cur_date), **info})


def mark_pass_published(store: Store, name: str, cur_date: str, hour: int, info: dict[str, Any]) -> str:
    """Write the entry of pass ``(cur_date, hour)``, ``registry/<name>/dt=D/hour=HH/published.json``:
    ``{name, cur_date, hour, **info}`` (a delta version went online; replaces an older one). The
    day's ``dt=D/published.json`` (the daily model) is not touched, so :func:`published_before` and
    the daily gate are unaffected."""
    out = store.partition(f"registry/{name}", cur_date, hour)
    with store.atomic_output(out) as tmp:
        store.write_json(f"{tmp}/published.json", {"name": name, "cur_date": cur_date, "hour": hour, **info})
    return f"{out}/published.json"


def mark_online(store: Store, name: str, cur_date: str, info: dict[str, Any]) -> str:
    """Record that ``cur_date``'s model is the one online now: :func:`mark_published` for it, and
    every later, not yet withdrawn entry gets ``"withdrawn": {"online": cur_date, "version": ...}``
    (they were online once and no longer are). Returns the path of ``cur_date``'s entry."""
    c = parse_date(cur_date).isoformat()
    path = mark_published(store, name, c, info)
    for d in store.list_partitions(f"registry/{name}"):
        entry = read_published(store, name, d) if d > c else None
        if entry is not None and not entry.get("withdrawn"):
            entry["withdrawn"] = {"online": c, "version": info.get("version")}
            _write_day_entry(store, name, d, entry)
    return path


def published_before(store: Store, name: str, cur_date: str) -> dict[str, Any] | None:
    """The newest published, not withdrawn model strictly before ``cur_date`` (its published.json), if any."""
    for d in reversed(_before(store, f"registry/{name}", cur_date)):
        entry = read_published(store, name, d)
        if entry is not None and not entry.get("withdrawn") \
                and store.exists(f"{model_dir(store, name, d)}/_manifest.json"):
            return entry
    return None
