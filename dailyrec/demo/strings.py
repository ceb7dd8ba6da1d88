"""String columns of the demo generator without per-row Python.

A column is a numpy gather from a small dictionary of equal-width ASCII ids
(:class:`FixedStrings`) wrapped as an Arrow ``string`` array with arithmetic offsets; hex ids go
through a 65536-entry lookup table (:data:`HEX4`).
"""

from __future__ import annotations

import functools

import numpy as np
import pyarrow as pa

HEX4 = np.frombuffer(b"".join(f"{i:04x}".encode() for i in range(1 << 16)), dtype=np.uint32)
"""The 4 hex characters of every uint16, as one uint32 each (little-endian bytes = the chars)."""


@functools.lru_cache(maxsize=4)
def offsets(n: int, width: int) -> pa.Buffer:
    """The offsets buffer of ``n`` strings of ``width`` bytes (shared by the columns of a table)."""
    return pa.py_buffer(np.arange(0, (n + 1) * width, width, dtype=np.int32))


def string_column(n: int, width: int, rows: np.ndarray) -> pa.StringArray:
    """An Arrow string array over ``rows``: ``n`` contiguous fixed-width (``width`` bytes) ASCII values."""
    if n * width >= 1 << 31:
        raise ValueError("too many strings for one Arrow string array")
    return pa.StringArray.from_buffers(n, offsets(n, width), pa.py_buffer(rows.view(np.uint8)))


def hex_strings(values: np.ndarray, width: int = 16) -> pa.StringArray:
    """Fixed-width lowercase hex strings of unsigned ints (16 chars: uint64, 8 chars: uint32)."""
    if width not in (8, 16):
        raise ValueError("width must be 8 or 16")
    v = np.ascontiguousarray(values, dtype=np.uint64 if width == 16 else np.uint32)
    n = len(v)
    return string_column(n, width, HEX4[v.view(np.uint16).reshape(n, width // 4)[:, ::-1]])


class FixedStrings:
    """A small dictionary of equal-width ASCII strings; ``take(indices)`` builds a string column.

    The column is a numpy gather of fixed-width rows (one memcpy-sized element per row) wrapped as
    an Arrow ``string`` array with arithmetic offsets: no per-row Python, no per-row allocation.
    Raises ``ValueError`` for strings of different widths.
    """

    def __init__(self, values: list[str]) -> None:
        data = [v.encode("ascii") for v in values]
        self.width = len(data[0]) if data else 1
        if any(len(b) != self.width for b in data):
            raise ValueError("FixedStrings needs strings of one width")
        rows = np.frombuffer(b"".join(data), dtype=np.uint8).reshape(len(data), self.width)
        self.rows = rows.view(f"V{self.width}").ravel()

    def __len__(self) -> int:
        return len(self.rows)

    def subset(self, indices: np.ndarray) -> "FixedStrings":
        """A new dictionary whose entry i is entry ``indices[i]`` of this one."""
        out = object.__new__(FixedStrings)
        out.width, out.rows = self.width, self.rows[indices]
        return out

    def array(self) -> pa.StringArray:
        return self.take(np.arange(len(self.rows)))

    def take(self, indices: np.ndarray) -> pa.StringArray:
        return string_column(len(indices), self.width, self.rows[indices])


def ids(prefix: str, idx: np.ndarray, width: int) -> FixedStrings:
    """``prefix`` + zero-padded ``idx`` (``width`` digits), e.g. ``ids("u", [7], 5)`` -> "u00007"."""
    return FixedStrings([f"{prefix}{int(i):0{width}d}" for i in idx])
