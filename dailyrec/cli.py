"""Shared command-line plumbing for ``python -m tasks.<step>``."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable
from typing import Any

from dailyrec.config import Config, ConfigError, load_config, parse_set_args


def setup_logging(level: int = logging.INFO) -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    # faiss logs at INFO each SIMD build it could not load before the one it uses; absl/TF chatter
    for noisy in ("faiss.loader", "absl", "tensorflow"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def parser(description: str, cur_date: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    if cur_date:
        p.add_argument("--cur-date", required=True, help="the day to process, YYYY-MM-DD")
    p.add_argument("--config", action="append", default=[], metavar="FILE",
                   help="extra YAML config file (repeatable; later files win)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="per-run override, e.g. --set training.epochs=3 (repeatable)")
    return p


def config_from_args(args: argparse.Namespace) -> Config:
    return load_config(overrides=parse_set_args(args.set), files=args.config)


def run(main: Callable[[], Any]) -> None:
    """Run a CLI main: print its result as JSON; a known error exits 2 with its message."""
    from dailyrec.errors import ContractError

    setup_logging()
    try:
        result = main()
    except (ContractError, ConfigError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    if result is not None:
        print(json.dumps(result, indent=2, sort_keys=True, default=str))
