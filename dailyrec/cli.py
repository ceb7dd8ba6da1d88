"""The one command-line helper: every ``python -m tasks.<group>.<stage>`` and every tool.

:func:`main` builds the argument parser from the function's signature, so a CLI can never take
other arguments than the function the DAG calls:

* a parameter ``cur_date`` becomes ``--cur-date YYYY-MM-DD`` (required unless it has a default);
* a parameter ``cfg`` becomes ``--config FILE`` (repeatable) and ``--set section.key=value``
  (repeatable), loaded with :func:`dailyrec.config.load_config`;
* any other parameter ``some_name`` becomes ``--some-name``: ``bool`` a flag (``--no-some-name``
  when it defaults to true), ``int``/``float``/``str`` a typed value, ``Literal[...]`` a choice;
  a parameter without a default is required.

Several functions give subcommands (``python -m dailyrec.publishing status``). The result is
printed as sorted JSON (or through ``render``); a known error (bad input, bad config, a missing
input) prints ``error: <message>`` and exits 2.
"""

from __future__ import annotations

import argparse
import inspect
import json
import logging
import sys
import typing
from collections.abc import Callable
from typing import Any, Literal

from dailyrec.config import Config, ConfigError, load_config, parse_set_args

KNOWN_ERRORS: tuple[type[BaseException], ...] = (ConfigError, FileNotFoundError, ValueError, KeyError, TypeError)
"""Exceptions a CLI reports as ``error: ...`` with exit code 2 (``ContractError`` is a ``ValueError``)."""


def setup_logging(level: int = logging.INFO) -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    # faiss logs at INFO each SIMD build it could not load before the one it uses; absl/TF chatter
    for noisy in ("faiss.loader", "absl", "tensorflow"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    from dailyrec.logs import QuietTensorFlowImport

    QuietTensorFlowImport.install()   # TensorFlow's start-up lines on fd 2 (dailyrec.logs)


def _first_line(fn: Callable[..., Any]) -> str:
    doc = inspect.getdoc(fn) or inspect.getdoc(sys.modules.get(fn.__module__)) or fn.__name__
    return doc.strip().splitlines()[0]


def _add_param(p: argparse.ArgumentParser, name: str, param: inspect.Parameter, hint: Any) -> None:
    flag = "--" + name.replace("_", "-")
    required = param.default is inspect.Parameter.empty
    default = None if required else param.default
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Union or str(origin) == "<class 'types.UnionType'>":
        inner = [a for a in args if a is not type(None)]
        hint = inner[0] if len(inner) == 1 else str
        origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is bool:
        p.add_argument(flag, action=argparse.BooleanOptionalAction, default=bool(default), dest=name)
    elif origin is Literal:
        p.add_argument(flag, choices=list(args), default=default, required=required, dest=name)
    else:
        conv = hint if hint in (int, float, str) else str
        p.add_argument(flag, type=conv, default=default, required=required, dest=name,
                       metavar=name.upper())


def parser_for(fn: Callable[..., Any], p: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """An ``argparse`` parser whose options are ``fn``'s parameters (see the module doc)."""
    p = p or argparse.ArgumentParser(description=_first_line(fn))
    hints = typing.get_type_hints(fn)
    for name, param in inspect.signature(fn).parameters.items():
        if param.kind in (param.VAR_KEYWORD, param.VAR_POSITIONAL):
            continue
        if name == "cfg":
            p.add_argument("--config", action="append", default=[], metavar="FILE",
                           help="extra YAML config file (repeatable; later files win)")
            p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                           help="per-run override, e.g. --set training.epochs=3 (repeatable)")
        elif name == "cur_date":
            p.add_argument("--cur-date", required=param.default is inspect.Parameter.empty,
                           default=None if param.default is inspect.Parameter.empty else param.default,
                           dest="cur_date", help="the day to process, YYYY-MM-DD")
        else:
            _add_param(p, name, param, hints.get(name, str))
    return p


def config_from_args(args: argparse.Namespace) -> Config:
    return load_config(overrides=parse_set_args(getattr(args, "set", [])), files=getattr(args, "config", []))


def call_with_args(fn: Callable[..., Any], args: argparse.Namespace) -> Any:
    """Call ``fn`` with the parsed arguments of :func:`parser_for` (``cfg`` loaded from them)."""
    kwargs: dict[str, Any] = {}
    for name, param in inspect.signature(fn).parameters.items():
        if param.kind in (param.VAR_KEYWORD, param.VAR_POSITIONAL):
            continue
        kwargs[name] = config_from_args(args) if name == "cfg" else getattr(args, name)
    return fn(**kwargs)


def print_json(result: Any) -> None:
    if result is not None:
        print(json.dumps(result, indent=2, sort_keys=True, default=str))


def main(*commands: Callable[..., Any], argv: list[str] | None = None, description: str | None = None,
         render: Callable[[Any], None] | None = None, log_level: int = logging.INFO) -> None:
    """Parse ``argv`` for ``commands`` (one function, or several as subcommands), call, print, exit.

    ``render(result)`` replaces the JSON output; a ``--json`` flag then restores it.
    Exit codes: 0 on success, 2 on a known error (:data:`KNOWN_ERRORS`) with ``error: <message>``.
    """
    if len(commands) == 1:
        p = parser_for(commands[0], argparse.ArgumentParser(description=description or _first_line(commands[0])))
        chosen = {None: commands[0]}
    else:
        p = argparse.ArgumentParser(description=description)
        sub = p.add_subparsers(dest="_command", required=True)
        chosen = {}
        for fn in commands:
            name = fn.__name__.replace("_", "-")
            parser_for(fn, sub.add_parser(name, help=_first_line(fn), description=_first_line(fn)))
            chosen[name] = fn
    if render is not None:
        p.add_argument("--json", action="store_true", dest="_json", help="print the result as JSON")
    args = p.parse_args(argv)
    fn = chosen[getattr(args, "_command", None)]
    setup_logging(log_level)
    try:
        result = call_with_args(fn, args)
    except KNOWN_ERRORS as exc:
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"error: {msg}", file=sys.stderr)
        sys.exit(2)
    (render if render is not None and not getattr(args, "_json", False) else print_json)(result)
