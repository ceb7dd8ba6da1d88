"""Vectorised random draws of the demo generator: Walker alias tables and small numeric helpers.

* :class:`RowAlias`: R categorical distributions over 0..K-1 (one alias table per row, built all
  at once), sampled with one float32 uniform per draw; Walker (1977), "An efficient method for
  generating discrete random variables with general distributions", ACM TOMS 3(3), in Vose's
  (1991) numerically stable form.
* :class:`Categorical`: one distribution over up to millions of values (two-level alias tables).
* :func:`rng`: the generator's random streams, ``numpy.random.default_rng([seed, tag, ...])``.
* :func:`calibrate`: the logit offset that gives a target mean probability.
"""

from __future__ import annotations

import numpy as np


def rng(seed: int, *tags: int) -> np.random.Generator:
    """The random stream ``(seed mod 2^63, *tags)`` (tags: see ``dailyrec.demo.params.TAG_*``)."""
    return np.random.default_rng([seed % (1 << 63), *tags])


def _alias_build(weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Walker/Vose alias tables for every row of ``weights`` (R x K) at once.

    Each of the K-1 rounds pairs, in every row, its smallest unfinished entry (scaled weight < 1)
    with its largest; cost O(R * K^2), meant for K up to a few thousand.
    Returns ``(prob float32 (R*K,), alias int32 (R*K,))``; a row of zero weights is uniform.
    """
    w = np.asarray(weights, dtype=np.float64)
    r_, k_ = w.shape
    tot = w.sum(axis=1, keepdims=True)
    p = np.where(tot > 0, w * (k_ / np.where(tot > 0, tot, 1.0)), 1.0)
    prob = np.ones((r_, k_), dtype=np.float64)
    alias = np.broadcast_to(np.arange(k_, dtype=np.int32), (r_, k_)).copy()
    done = np.zeros((r_, k_), dtype=bool)
    rows = np.arange(r_)
    for _ in range(k_ - 1):
        ps = np.where(done, np.inf, p)
        s = ps.argmin(axis=1)
        act = ps[rows, s] < 1.0 - 1e-12
        if not act.any():
            break
        l = np.where(done, -np.inf, p).argmax(axis=1)
        r, s, l = rows[act], s[act], l[act]
        prob[r, s] = p[r, s]
        alias[r, s] = l
        done[r, s] = True
        p[r, l] -= 1.0 - p[r, s]
    return prob.astype(np.float32).ravel(), alias.ravel()


class RowAlias:
    """R categorical distributions over 0..K-1; ``sample(rows, u)`` draws one value per row index.

    ``weights``: (K,) or (R, K) non-negative floats (need not sum to 1).
    """

    def __init__(self, weights: np.ndarray) -> None:
        weights = np.atleast_2d(np.asarray(weights, dtype=np.float64))
        self.rows, self.k = weights.shape
        self.prob, self.alias = _alias_build(weights)

    def sample(self, rows: np.ndarray | None, u: np.ndarray) -> np.ndarray:
        """One draw (int32) per entry of ``u`` (uniform float32 in [0, 1)), from row ``rows[i]`` (or row 0).

        ``rows``: int32 row indices, same length as ``u`` (``None``: row 0).
        """
        x = u * np.float32(self.k)
        jf = np.floor(x)
        x -= jf                                  # the fractional part is the alias coin
        j = jf.astype(np.int32)
        del jf
        np.minimum(j, self.k - 1, out=j)
        if rows is None:
            k = j
        else:
            k = rows * np.int32(self.k)
            k += j
        out = self.alias[k]
        np.copyto(out, j, where=x < self.prob[k])
        return out


class Categorical:
    """One categorical distribution over 0..n-1 (n up to millions): two-level alias tables.

    Above :attr:`MAX_FLAT` values, the weights are cut in blocks of :attr:`BLOCK`: a draw picks a
    block by its total weight, then a value inside it (two uniforms per draw).
    """

    BLOCK = 64
    MAX_FLAT = 2048

    def __init__(self, weights: np.ndarray) -> None:
        w = np.asarray(weights, dtype=np.float64)
        self.n = len(w)
        if self.n <= self.MAX_FLAT:
            self.top, self.rows = None, RowAlias(w)
            return
        nb = -(-self.n // self.BLOCK)
        padded = np.zeros(nb * self.BLOCK)
        padded[: self.n] = w
        padded = padded.reshape(nb, self.BLOCK)
        self.rows = RowAlias(padded)
        self.top = Categorical(padded.sum(axis=1))

    def sample(self, rng: np.random.Generator, size: int) -> np.ndarray:
        """``size`` draws (int32) using ``rng``'s float32 uniforms."""
        if self.top is None:
            return self.rows.sample(None, rng.random(size, dtype=np.float32))
        block = self.top.sample(rng, size)
        out = self.rows.sample(block, rng.random(size, dtype=np.float32))
        out += block * np.int32(self.BLOCK)
        return out


def splitmix64(x: np.ndarray) -> np.ndarray:
    """The SplitMix64 finaliser (Steele et al. 2014), element-wise on uint64: a bijective bit mixer."""
    z = x.astype(np.uint64, copy=True)
    z ^= z >> np.uint64(30)
    z *= np.uint64(0xBF58476D1CE4E5B9)
    z ^= z >> np.uint64(27)
    z *= np.uint64(0x94D049BB133111EB)
    z ^= z >> np.uint64(31)
    return z


def zipf_weights(rng: np.random.Generator, n: int, s: float, floor: float | None = None) -> np.ndarray:
    """Weights u^-s (u uniform, at least ``floor``, default 1/n): a rank-frequency curve ~ rank^-s."""
    return rng.random(n).clip(floor or 1.0 / n, None) ** -s


def zipf_p(rng: np.random.Generator, n: int, s: float) -> np.ndarray:
    """:func:`zipf_weights` normalised to probabilities."""
    w = zipf_weights(rng, n, s)
    return w / w.sum()


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def calibrate(z: np.ndarray, target: float, max_sample: int = 200_000) -> float:
    """The offset ``b`` with mean(sigmoid(b + z)) == target (bisection on a strided subsample of ``z``)."""
    if len(z) == 0:
        return float(np.log(target / (1 - target)))
    zs = z[:: max(1, len(z) // max_sample)].astype(np.float64)
    lo, hi = -30.0, 30.0
    for _ in range(50):
        mid = (lo + hi) / 2
        if sigmoid(mid + zs).mean() < target:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2
