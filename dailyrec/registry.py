"""Where trained models live, which passed their gate, and which is published.

    <root>/models/<name>/dt=D/          the model trained for D (written atomically)
    <root>/eval/<name>/dt=D/report.json the evaluation and gate decision for D
    <root>/registry/<name>/dt=D/published.json   written when D's model went online

Warm start uses the newest model strictly before ``cur_date`` whose gate passed; evaluation
compares with the newest *published* model strictly before ``cur_date`` ("yesterday's model").
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


def mark_published(store: Store, name: str, cur_date: str, info: dict[str, Any]) -> str:
    out = store.partition(f"registry/{name}", cur_date)
    with store.atomic_output(out) as tmp:
        store.write_json(f"{tmp}/published.json", {"name": name, "cur_date": cur_date,
                                                    "model_dir": model_dir(store, name, cur_date), **info})
    return f"{out}/published.json"


def published_before(store: Store, name: str, cur_date: str) -> dict[str, Any] | None:
    """The newest published model strictly before ``cur_date`` (its published.json), if any."""
    for d in reversed(_before(store, f"registry/{name}", cur_date)):
        path = f"{store.partition(f'registry/{name}', d)}/published.json"
        if store.exists(path) and store.exists(f"{model_dir(store, name, d)}/_manifest.json"):
            return store.read_json(path)
    return None
