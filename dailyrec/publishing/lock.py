"""The publisher lock of a namespace: one publish or rollback at a time.

``SET ns:lock <json {host, pid, token}> NX PX LOCK_TTL_MS``, renewed with every batch of a
publish; every change of ``current`` is a transaction that ``WATCH``es the lock and checks it is
still ours. Compare-and-set/delete/renew are Lua scripts, so they are atomic on the server
(the single-instance pattern of https://redis.io/docs/latest/develop/use/patterns/distributed-locks/).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
import uuid
from typing import Any

from dailyrec.publishing.layout import Keys, text
from dailyrec.publishing.packing import pack_command

log = logging.getLogger("dailyrec.publish")

LOCK_TTL_MS = 120_000
"""Lock expiry (ms) unless renewed; a publish renews it with every batch."""
LOCK_WAIT_S = 300.0
"""How long a publisher waits for the lock before ``TimeoutError`` (transient: Airflow retries)."""


class PublishError(RuntimeError):
    """The staged version failed verification, or the publish lost its lock; ``current`` is unchanged."""


_CAS_SET = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3]) return 1 end
return 0"""
_CAS_DEL = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) return 1 end
return 0"""
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) return 1 end
return 0"""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie is dead
    except (OSError, IndexError):
        return True


class PublishLock:
    """One publisher/rollback per namespace at a time (context manager).

    A lock left by a killed process on this host (its pid is gone) is taken over at once;
    otherwise it expires after :data:`LOCK_TTL_MS`. Entering raises ``TimeoutError`` after
    :data:`LOCK_WAIT_S`; :meth:`check` raises :class:`PublishError` when a renewal failed.
    """

    def __init__(self, r: Any, keys: Keys) -> None:
        self.r, self.key = r, keys.lock
        self.value = json.dumps({"host": socket.gethostname(), "pid": os.getpid(),
                                 "token": uuid.uuid4().hex}, sort_keys=True).encode()
        self._cas_set = r.register_script(_CAS_SET)
        self._cas_del = r.register_script(_CAS_DEL)
        self.renew_script = r.register_script(_RENEW)

    def __enter__(self) -> "PublishLock":
        deadline = time.monotonic() + LOCK_WAIT_S
        while True:
            if self.r.set(self.key, self.value, nx=True, px=LOCK_TTL_MS):
                return self
            held = self.r.get(self.key)
            if held is not None and self._take_over_dead(held):
                return self
            if time.monotonic() > deadline:
                raise TimeoutError(f"publish lock {self.key} is held by {text(held)} for more than {LOCK_WAIT_S}s")
            time.sleep(0.2)

    def _take_over_dead(self, held: bytes) -> bool:
        try:
            info = json.loads(held)
        except ValueError:
            info = {}
        if info.get("host") == socket.gethostname() and isinstance(info.get("pid"), int) \
                and not _pid_alive(info["pid"]):
            if self._cas_set(keys=[self.key], args=[held, self.value, LOCK_TTL_MS]):
                log.warning("took over the publish lock of dead process %s", info)
                return True
        return False

    def renew_command(self) -> list[bytes]:
        """The renewal as a packed EVAL (appended to raw batches); its reply is 1 if still ours."""
        return [pack_command(b"EVAL", _RENEW.encode(), b"1", self.key.encode(), self.value,
                             str(LOCK_TTL_MS).encode())]

    def renew(self, pipe: Any | None = None) -> Any:
        """Renew now (or queue the renewal on ``pipe``); the result is 1 if the lock is still ours."""
        return self.renew_script(keys=[self.key], args=[self.value, LOCK_TTL_MS], client=pipe or self.r)

    def check(self, ok: Any) -> None:
        """Raise :class:`PublishError` if a renewal's reply ``ok`` says the lock was lost."""
        if not ok:
            raise PublishError(f"lost the publish lock {self.key} (expired and taken by another process?)")

    def __exit__(self, *exc: Any) -> None:
        try:
            self._cas_del(keys=[self.key], args=[self.value])
        except Exception:  # the TTL will free it
            log.warning("could not release %s", self.key, exc_info=True)
