"""Loss and accuracy (or R^2) by epoch: did it learn, and did it overfit?"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from workbench.plots.style import NONFINITE_COLOR, log_axis, new_figure

# Score panels to try, in order: (train key, val key, axis label).
SCORES = (
    ("train/accuracy", "val/accuracy", "accuracy (fraction correct)"),
    ("train/r2", "val/r2", "R² (1 = perfect fit)"),
)
SPLIT_STYLE = {"train": dict(color="#1f77b4", linestyle="-"), "val": dict(color="#ff7f0e", linestyle="--")}
LOG_LOSS_RANGE = 30.0  # a log y axis for the loss once it spans more than this factor


def loss_curves(history: Mapping[str, Sequence[float]]) -> Figure:
    """Two panels by epoch: train and validation loss; validation accuracy (classification) or R^2 (regression).

    `history` is the trainer's history: {"epoch": [...], "train/loss": [...], "val/loss": [...], ...}.
    Non-finite values are marked in red at the top of their panel; the best validation loss is marked.
    """
    n = max((len(v) for v in history.values()), default=0)
    epochs = np.asarray(history.get("epoch", range(n)), dtype=float)
    fig, (ax_loss, ax_score) = new_figure(11, 4.4, ncols=2, margins=(0.8, 0.25, 0.75, 0.55), wspace=0.22)
    fig.suptitle("Training curves: loss and validation score by epoch", fontweight="bold")

    losses = {split: _series(history, f"{split}/loss", len(epochs)) for split in ("train", "val")}
    finite = np.concatenate([v[np.isfinite(v)] for v in losses.values() if v is not None] or [np.empty(0)])
    log_scale = finite.size > 0 and finite.min() > 0 and finite.max() / finite.min() > LOG_LOSS_RANGE
    for split, values in losses.items():
        if values is not None:
            _plot(ax_loss, epochs, values, f"{split}/loss", SPLIT_STYLE[split])
    val = losses["val"]
    if val is not None and np.isfinite(val).any():
        best = int(np.nanargmin(np.where(np.isfinite(val), val, np.nan)))
        ax_loss.axvline(epochs[best], color="grey", linestyle=":", linewidth=1,
                        label=f"best val/loss {val[best]:.4g} (epoch {epochs[best]:g})")
    if log_scale:
        log_axis(ax_loss)
    ax_loss.set_title("loss")
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("loss, mean per example" + (" (log scale)" if log_scale else ""))
    _finish(ax_loss, epochs)

    for train_key, val_key, label in SCORES:
        train, val = _series(history, train_key, len(epochs)), _series(history, val_key, len(epochs))
        if train is None and val is None:
            continue
        for split, values in (("train", train), ("val", val)):
            if values is not None:
                _plot(ax_score, epochs, values, f"{split}/{train_key.split('/')[1]}", SPLIT_STYLE[split])
        if val is not None and np.isfinite(val).any():
            last = val[np.isfinite(val)][-1]
            ax_score.set_title(f"validation {label.split(' ')[0]} (last {last:.3f})")
        else:
            ax_score.set_title(label.split(" ")[0])
        ax_score.set_ylabel(label)
        break
    else:
        ax_score.set_title("validation score")
        ax_score.text(0.5, 0.5, "no accuracy or R² in the history", ha="center", va="center",
                      transform=ax_score.transAxes, color="grey")
        ax_score.set_ylabel("score")
    ax_score.set_xlabel("epoch")
    _finish(ax_score, epochs)
    return fig


def _series(history: Mapping[str, Sequence[float]], key: str, n: int) -> np.ndarray | None:
    if key not in history or len(history[key]) == 0:
        return None
    values = np.asarray(history[key], dtype=float)
    return np.concatenate([values, np.full(max(0, n - len(values)), np.nan)])[:n]


def _plot(ax: Axes, epochs: np.ndarray, values: np.ndarray, label: str, style: dict) -> None:
    marker = "o" if len(values) <= 40 else None
    ax.plot(epochs, values, label=label, marker=marker, markersize=4, linewidth=1.6, **style)
    bad = ~np.isfinite(values)
    if bad.any():
        ax.plot(epochs[bad], np.full(bad.sum(), 0.97), transform=ax.get_xaxis_transform(), linestyle="none",
                marker="x", color=NONFINITE_COLOR, label=f"{label} NaN/Inf ({int(bad.sum())} epoch{'s' if bad.sum() > 1 else ''})", clip_on=False)


def _finish(ax: Axes, epochs: np.ndarray) -> None:
    if len(epochs) and len(epochs) <= 20:
        ax.set_xticks(epochs)
    ax.grid(True, alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
