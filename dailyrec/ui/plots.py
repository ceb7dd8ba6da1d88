"""Server-side plots (matplotlib, Agg backend) returned as inline ``<img>`` tags (base64 PNG).

Nothing is fetched at run time: a page or ``report.html`` carries its figures inside. Each function
returns ``""`` when there is nothing to draw. PNGs are written without a timestamp, so the same
inputs give the same bytes (the report stays byte-identical on a re-run).
"""

from __future__ import annotations

import base64
import html
import io
from typing import Any, Sequence

COLORS = {"new": "#1f77b4", "previous": "#ff7f0e", "popularity": "#7f7f7f", "shared_bottom": "#2ca02c",
          "mmoe": "#1f77b4", "learning_rate": "#9467bd"}


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _img(fig: Any, alt: str) -> str:
    plt = _plt()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    data = base64.b64encode(buf.getvalue()).decode()
    return f'<img class="plot" alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def training_curves(histories: dict[str, dict[str, list[float]]], title: str) -> str:
    """Loss per epoch of each model (``{"mmoe": history, ...}``, a history being the training
    manifest's ``{"loss": [...], "learning_rate": [...], ...}``) and the learning rate per epoch."""
    runs = {name: h for name, h in histories.items() if h and h.get("loss")}
    if not runs:
        return ""
    plt = _plt()
    has_lr = any(h.get("learning_rate") for h in runs.values())
    fig, axes = plt.subplots(1, 2 if has_lr else 1, figsize=(9 if has_lr else 5, 3.2), squeeze=False)
    ax = axes[0][0]
    for name, h in runs.items():
        ep = range(1, len(h["loss"]) + 1)
        ax.plot(ep, h["loss"], marker="o", label=f"{name} loss", color=COLORS.get(name))
    from matplotlib.ticker import MaxNLocator

    n_epochs = max(len(h["loss"]) for h in runs.values())
    if n_epochs <= 12:
        ax.set_xticks(range(1, n_epochs + 1))
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel("training loss")
    ax.set_title(f"{title}: loss per epoch")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    if has_lr:
        ax2 = axes[0][1]
        for name, h in runs.items():
            if h.get("learning_rate"):
                ax2.plot(range(1, len(h["learning_rate"]) + 1), h["learning_rate"], marker="o", label=name)
        ax2.set_xticks(ax.get_xticks())
        ax2.set_xlim(ax.get_xlim())
        ax2.set_xlabel("epoch")
        ax2.set_ylabel("learning rate (end of epoch)")
        ax2.set_title("learning rate per epoch")
        ax2.legend(fontsize=8)
        ax2.grid(alpha=0.3)
    return _img(fig, f"{title} training curves")


def bars(values: dict[str, float], title: str, ylabel: str) -> str:
    """One bar per model (``{"new": 0.41, "previous": 0.39, "popularity": 0.42}``)."""
    values = {k: v for k, v in values.items() if isinstance(v, (int, float))}
    if not values:
        return ""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.5, 3))
    names = list(values)
    ax.bar(names, [values[n] for n in names], color=[COLORS.get(n, "#17becf") for n in names])
    for i, n in enumerate(names):
        ax.text(i, values[n], f"{values[n]:.4f}", ha="center", va="bottom", fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    return _img(fig, title)


def history_lines(dates: Sequence[str], series: dict[str, Sequence[float | None]], title: str, ylabel: str,
                  passed: Sequence[bool | None] | None = None, published: Sequence[bool] | None = None,
                  rollbacks: Sequence[bool] | None = None) -> str:
    """Metric per date, one line per series; the gate's decision per date marked on the first
    series (green circle: passed, red cross: failed), published dates and rollbacks on the x axis."""
    if not dates or not any(v is not None for s in series.values() for v in s):
        return ""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(9, 3.4))
    x = list(range(len(dates)))
    for name, ys in series.items():
        pts = [(i, y) for i, y in zip(x, ys) if y is not None]
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=".", label=name, color=COLORS.get(name))
    first = next(iter(series.values()))
    if passed is not None:
        ok = [(i, first[i]) for i in x if passed[i] and first[i] is not None]
        bad = [(i, first[i]) for i in x if passed[i] is False and first[i] is not None]
        if ok:
            ax.scatter(*zip(*ok), s=70, facecolors="none", edgecolors="green", label="gate passed", zorder=3)
        if bad:
            ax.scatter(*zip(*bad), s=70, marker="x", color="red", label="gate failed", zorder=3)
    if published is not None:
        for i in x:
            if published[i]:
                ax.axvline(i, color="green", alpha=0.12, lw=6)
    if rollbacks is not None:
        for i in x:
            if rollbacks[i]:
                ax.axvline(i, color="red", ls="--", alpha=0.6)
    ax.set_xticks(x)
    ax.set_xticklabels(dates, rotation=45 if len(dates) > 6 else 0, ha="right" if len(dates) > 6 else "center",
                       fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    return _img(fig, title)
