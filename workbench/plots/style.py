"""The shared look of every plot, and the helpers they all need.

Figures are built from `matplotlib.figure.Figure` directly, never through
pyplot, so library code leaves no global figure state behind (and works in
threads and study workers). Saving a Figure needs no backend selection: the
PNG is written by Agg.

Drawing is kept cheap whatever the depth and length of a run (all of a run's
figures together in well under 2 s): fixed margins instead of a layout solver
(which lays every text out twice), heat maps as one image at most as wide as
the pixels available, lines reduced to two points a pixel, at most
`MAX_LEGEND_LAYERS` layers in a legend (deeper models get a depth colour bar),
at most `MAX_TICK_LABELS` labels on a layer axis.

Long runs are drawn from a reduced copy: lines keep each block's minimum and
maximum (so spikes survive), the heatmap keeps each block's maximum (so an
explosion is never averaged away). Non-finite values are never dropped
silently: they are marked in red.
"""

from __future__ import annotations

import numpy as np
from matplotlib.axes import Axes
from matplotlib.cm import ScalarMappable
from matplotlib.colors import BoundaryNorm, Colormap, ListedColormap
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullLocator
from matplotlib.transforms import blended_transform_factory
import matplotlib as mpl

DPI = 100
MAX_LINE_POINTS = 1600        # per line, after min/max envelope reduction: two points a pixel of a 8-inch axes
MAX_HEATMAP_COLUMNS = 1000    # about the pixels of a heat map's width
MAX_LEGEND_LAYERS = 12        # more layers: a depth colour bar instead of one legend entry each
MAX_TICK_LABELS = 16          # labels on a layer axis (every k-th layer beyond)
PNG_OPTIONS = {"compress_level": 1}  # fast zlib: the files are a little larger, saving is much cheaper
NONFINITE_COLOR = "#d62728"   # red: NaN or Inf
ZERO_COLOR = "#d9d9d9"        # light grey: exactly zero (nothing to take a log of)
DEPTH_CMAP = "viridis"        # sequential, input dark -> output light
MARGINS = (0.85, 0.3, 0.6, 0.55)  # left, right, top, bottom, in inches


def new_figure(width: float, height: float, nrows: int = 1, ncols: int = 1, *,
               margins: tuple[float, float, float, float] = MARGINS, wspace: float = 0.25, hspace: float = 0.35,
               **subplot_kw) -> tuple[Figure, np.ndarray]:
    """A pyplot-free figure with fixed margins (inches: left, right, top, bottom) and its axes as a flat array."""
    fig = Figure(figsize=(width, height), dpi=DPI)
    axes = fig.subplots(nrows, ncols, squeeze=False, **subplot_kw)
    left, right, top, bottom = margins
    fig.subplots_adjust(left=left / width, right=1 - right / width, top=1 - top / height, bottom=bottom / height,
                        wspace=wspace, hspace=hspace)
    return fig, axes.ravel()


def save_figure(fig: Figure, path) -> None:
    """The figure as a PNG (Agg, fast compression)."""
    fig.savefig(path, dpi=DPI, pil_kwargs=PNG_OPTIONS)


def log_axis(ax: Axes, axis: str = "y") -> None:
    """A log axis labelled in plain text (1e-3: no mathtext to typeset) with decades only (no minor ticks)."""
    getattr(ax, f"set_{axis}scale")("log")
    target = ax.yaxis if axis == "y" else ax.xaxis
    target.set_major_locator(LogLocator(base=10, numticks=8))
    target.set_major_formatter(FuncFormatter(_decade))
    target.set_minor_locator(NullLocator())


def _decade(value: float, position=None) -> str:
    if not np.isfinite(value) or value <= 0:
        return ""
    exponent = np.log10(value)
    if abs(exponent - round(exponent)) > 1e-6:
        return f"{value:.0e}"
    exponent = int(round(exponent))
    return {0: "1", 1: "10", 2: "100", -1: "0.1"}.get(exponent, f"1e{exponent}")


def warm_up() -> None:
    """Draw and save one small figure (fonts, text layout, a log axis, the one mathtext label), so that the
    next figures, in this process or in one forked from it, start with those caches filled."""
    import io

    fig, (ax,) = new_figure(2.0, 1.5)
    ax.plot([1, 2], [1, 10], label="warm")
    log_axis(ax)
    ax.set_title("warm up")
    ax.set_ylabel(r"$\log_{10}$ x")
    ax.legend()
    fig.savefig(io.BytesIO(), dpi=DPI, format="png", pil_kwargs=PNG_OPTIONS)


def layer_ticks(names: list[str], max_labels: int = MAX_TICK_LABELS) -> tuple[list[int], list[str]]:
    """Positions and labels for a layer axis: every layer, or every k-th one and the last."""
    n = len(names)
    if n <= max_labels:
        return list(range(n)), list(names)
    step = -(-n // max_labels)
    positions = sorted({*range(0, n, step), n - 1})
    if len(positions) > 1 and positions[-1] - positions[-2] < step / 2:
        positions.pop(-2)
    return positions, [names[i] for i in positions]


def depth_colorbar(fig: Figure, ax: Axes, layers: list[str], cmap: str | Colormap = DEPTH_CMAP) -> None:
    """A colour bar beside `ax` naming the layers of each depth colour (for models too deep for a legend)."""
    n = len(layers)
    colors = depth_colors(n, cmap)
    mappable = ScalarMappable(norm=BoundaryNorm(np.arange(n + 1) - 0.5, n), cmap=ListedColormap(colors))
    bar = fig.colorbar(mappable, ax=ax, pad=0.01, fraction=0.03, aspect=30)
    positions, labels = layer_ticks(layers)
    bar.set_ticks(positions, labels=labels, fontsize=7)
    bar.set_label("layer (colour: depth)", fontsize=8)


def depth_colors(n: int, cmap: str | Colormap = DEPTH_CMAP) -> list[tuple[float, float, float, float]]:
    """One colour per layer, dark (input) to light (output); stops short of viridis' pale yellow."""
    cmap = mpl.colormaps[cmap] if isinstance(cmap, str) else cmap
    return [cmap(x) for x in np.linspace(0.0, 0.88, n)] if n > 1 else [cmap(0.0)]


def time_colors(n: int) -> list[tuple[float, float, float, float]]:
    """One colour per moment in training, early (light) to late (dark)."""
    cmap = mpl.colormaps["plasma_r"]
    return [cmap(x) for x in np.linspace(0.15, 0.95, n)] if n > 1 else [cmap(0.95)]


def log_safe(values: np.ndarray) -> np.ndarray:
    """A float copy with everything a log axis cannot show (<= 0, NaN, Inf) set to NaN."""
    values = np.asarray(values, dtype=float)
    with np.errstate(invalid="ignore"):
        return np.where(np.isfinite(values) & (values > 0), values, np.nan)


def downsample_envelope(x: np.ndarray, y: np.ndarray, max_points: int = MAX_LINE_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """At most `max_points` points: each block keeps its finite minimum and maximum, in time order.

    A block with no finite value becomes a NaN (a gap in the line).
    """
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    n = len(y)
    if n <= max_points:
        return x, y
    blocks = max(1, max_points // 2)
    size = -(-n // blocks)
    blocks = -(-n // size)
    pad = blocks * size - n
    xx = np.concatenate([x, np.full(pad, np.nan)]).reshape(blocks, size)
    yy = np.concatenate([y, np.full(pad, np.nan)]).reshape(blocks, size)
    finite = np.isfinite(yy)
    lo = np.where(finite, yy, np.inf).argmin(axis=1)
    hi = np.where(finite, yy, -np.inf).argmax(axis=1)
    first, second = np.minimum(lo, hi), np.maximum(lo, hi)
    rows = np.arange(blocks)
    xs = np.stack([xx[rows, first], xx[rows, second]], axis=1).ravel()
    ys = np.stack([yy[rows, first], yy[rows, second]], axis=1).ravel()
    ys[np.repeat(~finite.any(axis=1), 2)] = np.nan
    return xs, ys


def step_edges(steps: np.ndarray) -> np.ndarray:
    """Cell edges around each step (midpoints between neighbours), for pcolormesh."""
    steps = np.asarray(steps, dtype=float)
    if len(steps) == 1:
        return np.array([steps[0] - 0.5, steps[0] + 0.5])
    mid = (steps[:-1] + steps[1:]) / 2
    return np.concatenate([[steps[0] - (mid[0] - steps[0])], mid, [steps[-1] + (steps[-1] - mid[-1])]])


def mark_nonfinite(ax: Axes, steps: np.ndarray, bad: np.ndarray, what: str = "NaN/Inf") -> None:
    """A red rug along the top of `ax` at each step where `bad` holds, and a line at the first one."""
    steps = np.asarray(steps, dtype=float)
    bad_steps = steps[np.asarray(bad, dtype=bool)]
    if len(bad_steps) == 0:
        return
    first = bad_steps[0]
    if len(bad_steps) > MAX_LINE_POINTS:
        bad_steps = bad_steps[np.linspace(0, len(bad_steps) - 1, MAX_LINE_POINTS).astype(int)]
    top = blended_transform_factory(ax.transData, ax.transAxes)
    ax.plot(bad_steps, np.full(len(bad_steps), 0.985), transform=top, linestyle="none", marker="|",
            markersize=9, color=NONFINITE_COLOR, label=f"{what} ({_count(int(np.sum(bad)), 'step')})", clip_on=False)
    ax.axvline(first, color=NONFINITE_COLOR, linestyle=":", linewidth=1.2)
    span = float(np.ptp(steps)) if len(steps) > 1 else 0.0
    near_right = span > 0 and (first - float(np.min(steps))) / span > 0.75
    ax.annotate(f"first {what}\nat step {first:g}", xy=(first, 0.94), xycoords=top, xytext=(-4 if near_right else 4, 0),
                textcoords="offset points", color=NONFINITE_COLOR, fontsize=8, va="top",
                ha="right" if near_right else "left")


def add_epoch_axis(ax: Axes, steps: np.ndarray, epochs: np.ndarray) -> None:
    """A secondary x axis on top that reads the step axis in epochs (when the record spans two or more)."""
    steps, epochs = np.asarray(steps, dtype=float), np.asarray(epochs)
    if len(steps) < 2 or len(np.unique(epochs)) < 2:
        return
    unique = np.unique(epochs)
    starts = np.array([steps[epochs == e].min() for e in unique])
    order = np.argsort(starts)
    starts, unique = starts[order], unique[order].astype(float)
    if np.any(np.diff(starts) <= 0):
        return
    # Linear beyond the knots (the last epoch assumed as long as the one before), so the axis never folds.
    slope_lo = (unique[1] - unique[0]) / (starts[1] - starts[0])
    slope_hi = (unique[-1] - unique[-2]) / (starts[-1] - starts[-2])

    def to_epoch(s):
        s = np.asarray(s, dtype=float)
        inside = np.interp(s, starts, unique)
        return np.where(s < starts[0], unique[0] + (s - starts[0]) * slope_lo,
                        np.where(s > starts[-1], unique[-1] + (s - starts[-1]) * slope_hi, inside))

    def to_step(e):
        e = np.asarray(e, dtype=float)
        inside = np.interp(e, unique, starts)
        return np.where(e < unique[0], starts[0] + (e - unique[0]) / slope_lo,
                        np.where(e > unique[-1], starts[-1] + (e - unique[-1]) / slope_hi, inside))

    top = ax.secondary_xaxis("top", functions=(to_epoch, to_step))
    top.set_xlabel("epoch", fontsize=8)
    top.tick_params(labelsize=8)
    top.xaxis.set_major_locator(MaxNLocator(nbins=10, integer=True))


def legend_outside(ax: Axes, n_entries: int) -> None:
    """A legend to the right of the axes, where it never hides a line."""
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, ncols=1 + n_entries // 24,
              borderaxespad=0.0)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"
