"""The gradient-flow animation: per-layer gradient norms as bars, frame by frame over training (a GIF).

    anim = gradient_flow_animation(record)          # None-free: raises ValueError without gradient norms
    anim.savefig("plots/gradient_flow.gif")         # matplotlib's animation, Pillow writer (no new dependency)

Each frame is one stretch of training (the record's rows cut into at most `MAX_FRAMES` equal
blocks, each shown by its median, so one noisy batch does not flicker). Layers run from the
output (left) to the input (right), the order the gradient flows in; per layer two bars on a
log axis: the weight gradient ||dL/dW|| and the backpropagated gradient ||dL/ds|| (the signal
that reaches the layer). The shaded band is where ||dL/ds|| of a layer is healthy relative to the
output layer's: between `VANISHING_RATIO` (1e-3) and `EXPLODING_RATIO` (70) times it, the
thresholds of `workbench.diagnose`; a layer outside it is outlined in red. The title gives the
run's verdict (`workbench.diagnose.diagnose_record`) and, once the frame reaches the step where
a finding starts, marks it and the layers it names. NaN/Inf values are marked with a red x.

It is drawn from the statistics record after training (the tracked run's plot job, off the
training path): at most 20 frames of about 8 x 4 inches at 90 dpi, a few hundred KB.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.animation import PillowWriter
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import PolyCollection
from matplotlib.figure import Figure

from workbench.plots.record_view import layer_stat
from workbench.plots.style import log_axis

MAX_FRAMES = 20  # a frame costs about 30 ms (its text): 20 keep the GIF well under a second
FPS = 5
GIF_DPI = 90
GRAD_COLOR, BACKPROP_COLOR, BAND_COLOR, BAD_COLOR = "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728"


def _thresholds() -> tuple[float, float]:
    try:
        from workbench.diagnose.thresholds import EXPLODING_RATIO, VANISHING_RATIO
    except ImportError:  # the plots work without the diagnosis package
        return 1e-3, 70.0
    return float(VANISHING_RATIO), float(EXPLODING_RATIO)


def _verdict(record) -> tuple[str, list]:
    """The run's verdict and its findings (first step, layers), or ("", []) without workbench.diagnose."""
    try:
        from workbench.diagnose import diagnose_record

        diagnosis = diagnose_record(record)
    except Exception:  # noqa: BLE001 - a figure never fails for want of a verdict
        return "", []
    return diagnosis.verdict, list(diagnosis.findings)


def _blocks(n_rows: int, frames: int) -> list[slice]:
    edges = np.unique(np.linspace(0, n_rows, min(frames, n_rows) + 1).astype(int))
    return [slice(a, b) for a, b in zip(edges[:-1], edges[1:])]


def _block_medians(values: np.ndarray, blocks: list[slice]) -> tuple[np.ndarray, np.ndarray]:
    """(frames x layers) medians of the finite positive values of each block, and whether a block holds a
    NaN/Inf in a layer where the statistic applies (a column that is NaN throughout does not apply)."""
    import warnings

    applicable = np.isfinite(values).any(axis=0)
    med = np.full((len(blocks), values.shape[1]), np.nan)
    bad = np.zeros((len(blocks), values.shape[1]), bool)
    for k, block in enumerate(blocks):
        part = values[block]
        bad[k] = (~np.isfinite(part)).any(axis=0) & applicable
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN layer: its median is NaN
            med[k] = np.nanmedian(np.where(np.isfinite(part) & (part > 0), part, np.nan), axis=0)
    return med, bad


class GradientFlowAnimation:
    """The frames' data and their drawing; `savefig(path)` writes the GIF (the run plots' interface)."""

    def __init__(self, record, *, max_frames: int = MAX_FRAMES, fps: int = FPS, dpi: int = GIF_DPI,
                 verdict: str | None = None, findings: list | None = None) -> None:
        grad = layer_stat(record, "grad_norm")
        if grad is None or not np.isfinite(grad).any():
            raise ValueError("the record has no finite gradient norms to animate (gradient-free training?)")
        backprop = layer_stat(record, "backprop_norm")
        if backprop is None:
            backprop = np.full_like(grad, np.nan)
        self.layers = list(record.layers)[::-1]  # output first: the direction the gradient flows
        steps, epochs = np.asarray(record.steps), np.asarray(record.epochs)
        self.blocks = _blocks(len(steps), max_frames)
        self.grad, self.grad_bad = (a[:, ::-1] for a in _block_medians(grad, self.blocks))
        self.backprop, self.backprop_bad = (a[:, ::-1] for a in _block_medians(backprop, self.blocks))
        self.steps = [(int(steps[b][0]), int(steps[b][-1])) for b in self.blocks]
        self.epochs = [(int(epochs[b][0]), int(epochs[b][-1])) for b in self.blocks]
        self.low_ratio, self.high_ratio = _thresholds()
        if verdict is None:
            verdict, findings = _verdict(record)
        self.verdict, self.findings = verdict, list(findings or [])
        self.fps, self.dpi = int(fps), int(dpi)
        self.activation = getattr(record, "activation", "")

    @property
    def frames(self) -> int:
        return len(self.blocks)

    def _limits(self) -> tuple[float, float]:
        values = np.concatenate([self.grad.ravel(), self.backprop.ravel()])
        out = self.backprop[:, 0]
        band = np.concatenate([out * self.low_ratio, out * self.high_ratio])
        values = np.concatenate([values, band])
        values = values[np.isfinite(values) & (values > 0)]
        low, high = (float(values.min()), float(values.max())) if values.size else (1e-8, 1.0)
        return 10 ** np.floor(np.log10(low) - 0.3), 10 ** np.ceil(np.log10(high) + 0.3)

    def figure(self) -> tuple[Figure, callable, list]:
        """The figure, its update(frame) function, and the artists a frame changes (the rest is static)."""
        n = len(self.layers)
        width = min(12.0, max(7.0, 0.28 * n + 4.0))
        fig = Figure(figsize=(width, 4.4), dpi=self.dpi)  # a fixed layout: constrained layout costs a second
        FigureCanvasAgg(fig)
        rotated = n > 8
        longest = max(len(name) for name in self.layers)
        bottom = min(0.45, 0.12 + 0.0125 * longest) if rotated else 0.13
        any_bad = bool(self.grad_bad.any() or self.backprop_bad.any())
        columns = 4 if width >= 10 else 2
        legend_rows = -(-(3 + any_bad) // columns)
        fig.subplots_adjust(left=0.1, right=0.985, top=0.86 - 0.05 * legend_rows, bottom=bottom)
        ax = fig.subplots()
        low, high = self._limits()
        log_axis(ax)  # decades in plain text, no minor ticks (as every workbench plot)
        ax.set_ylim(low, high)
        x = np.arange(n)
        w = 0.4  # bar width: weight gradient left of the tick, backprop signal right of it
        # each series is one collection of rectangles (one draw call a frame, not one per bar)
        grad_bars = PolyCollection(_rectangles(x - w, w, low, np.full(n, low)), facecolors=GRAD_COLOR,
                                   edgecolors="none", label=r"weight gradient $\|\partial L/\partial W\|$")
        bp_bars = PolyCollection(_rectangles(x, w, low, np.full(n, low)), facecolors=BACKPROP_COLOR,
                                 edgecolors="none", label=r"backprop signal $\|\partial L/\partial s\|$")
        ax.add_collection(grad_bars)
        ax.add_collection(bp_bars)
        band = ax.axhspan(low, low, color=BAND_COLOR, alpha=0.13,
                          label=f"healthy backprop band: {self.low_ratio:g} to {self.high_ratio:g} x the output's")
        marks = ax.scatter([], [], marker="x", color=BAD_COLOR, s=30, zorder=4,
                           label="NaN/Inf in this stretch" if any_bad else None)
        ax.set_xticks(x, self.layers, rotation=90 if rotated else 0, fontsize=7 if n > 12 else 8)
        ax.set_xlim(-0.6, n - 0.4)
        ax.set_xlabel("layer, from the output (left) to the input (right)")
        ax.set_ylabel("norm (log scale)")
        ax.grid(True, axis="y", which="major", alpha=0.3)
        fig.legend(loc="upper left", bbox_to_anchor=(0.09, 0.895), fontsize=7.5, ncols=columns, frameon=False,
                   handlelength=1.2, columnspacing=1.0)
        fig.text(0.1, 0.975, f"Gradient flow{f' ({self.activation})' if self.activation else ''}, median of each "
                 f"stretch of training; run verdict: {self.verdict or 'no diagnosis'}", fontsize=9.5, va="top",
                 weight="bold")
        title = fig.text(0.1, 0.93, "", fontsize=9, va="top")
        findings = [(f.first_step, f.verdict) for f in self.findings]

        def update(k: int) -> None:
            grad, bp = self.grad[k], self.backprop[k]
            grad_bars.set_verts(_rectangles(x - w, w, low, np.where(np.isfinite(grad), grad, low)))
            bp_bars.set_verts(_rectangles(x, w, low, np.where(np.isfinite(bp), bp, low)))
            out = bp[0]
            lo, hi = (out * self.low_ratio, out * self.high_ratio) if np.isfinite(out) else (low, low)
            band.set_y(lo)
            band.set_height(hi - lo)
            with np.errstate(invalid="ignore"):
                outside = np.isfinite(bp) & np.isfinite(out) & ((bp < lo) | (bp > hi))
            outside[0] = False  # the output layer defines the band
            bp_bars.set_edgecolor([BAD_COLOR if o else "none" for o in outside])
            bp_bars.set_linewidth([2.0 if o else 0.0 for o in outside])
            start, stop = self.steps[k]
            active = [verdict for first, verdict in findings if stop >= first]
            bad = np.flatnonzero(self.grad_bad[k] | self.backprop_bad[k])
            marks.set_offsets(np.c_[bad, np.full(len(bad), high / 2)] if len(bad) else np.empty((0, 2)))
            now = ", ".join(dict.fromkeys(active)) if active else "none yet"
            first_epoch, last_epoch = self.epochs[k]
            epochs = f"epoch {first_epoch}" if first_epoch == last_epoch else f"epochs {first_epoch}-{last_epoch}"
            title.set_text(f"steps {start}-{stop} ({epochs}), frame {k + 1}/{self.frames}; findings by now: {now}")
            title.set_color(BAD_COLOR if active else "black")

        update(0)
        return fig, update, [band, grad_bars, bp_bars, marks, title]

    def _frames(self):
        """Each frame drawn by blitting: the static figure is drawn once, a frame redraws only what changes."""
        fig, update, animated = self.figure()
        canvas = fig.canvas
        for artist in animated:
            artist.set_animated(True)
        canvas.draw()
        background = canvas.copy_from_bbox(fig.bbox)
        for k in range(self.frames):
            canvas.restore_region(background)
            update(k)
            for artist in animated:
                fig.draw_artist(artist)
            yield fig

    def savefig(self, path: str | Path, dpi: int | None = None, **ignored) -> Path:
        """Write the GIF with matplotlib's Pillow writer (the run plots call it as a Figure's savefig: `dpi` and
        PNG options are ignored, the GIF keeps its own)."""
        path = Path(path)
        frames = self._frames()
        fig = next(frames)
        writer = _CanvasPillowWriter(fps=self.fps)
        with writer.saving(fig, path, self.dpi):
            writer.grab_frame()
            for _ in frames:
                writer.grab_frame()
        return path

    def frame_png(self, k: int, path: str | Path) -> Path:
        """Frame k as a PNG (to look at the frames without a GIF viewer)."""
        for i, fig in enumerate(self._frames()):
            if i == k:
                _canvas_image(fig).save(path)
                break
        return Path(path)


class _CanvasPillowWriter(PillowWriter):
    """matplotlib's Pillow writer, taking each frame from the canvas as it stands (blitted) instead of drawing
    the whole figure again (where text layout dominates), and mapping every frame onto one palette made from
    a few frames and the figure's signal colours (Pillow's per-frame median cut took half the time)."""

    def grab_frame(self, **savefig_kwargs) -> None:
        self._frames.append(_canvas_image(self.fig))

    def finish(self) -> None:
        from PIL import Image

        frames = self._frames
        picks = [frames[i] for i in sorted({0, len(frames) // 2, len(frames) - 1})]
        width, height = frames[0].size
        montage = Image.new("RGB", (width, height * len(picks) + 8))
        for i, frame in enumerate(picks):
            montage.paste(frame, (0, i * height))
        for i, colour in enumerate((BAD_COLOR, GRAD_COLOR, BACKPROP_COLOR, BAND_COLOR, "#000000", "#ffffff")):
            montage.paste(colour, (i * 8, height * len(picks), i * 8 + 8, height * len(picks) + 8))
        palette = montage.quantize(colors=96, method=Image.Quantize.FASTOCTREE)
        self._frames = [frame.quantize(palette=palette, dither=Image.Dither.NONE) for frame in frames]
        super().finish()


def _rectangles(left: np.ndarray, width: float, bottom: float, top: np.ndarray) -> np.ndarray:
    """(n, 4, 2) corners of bars from `bottom` to `top` (data coordinates)."""
    right = left + width
    return np.stack([np.c_[left, np.full(len(left), bottom)], np.c_[left, top], np.c_[right, top],
                     np.c_[right, np.full(len(left), bottom)]], axis=1)


def _canvas_image(fig):
    from PIL import Image

    canvas = fig.canvas
    width, height = canvas.get_width_height(physical=True)
    return Image.frombuffer("RGBA", (width, height), bytes(canvas.buffer_rgba()), "raw", "RGBA", 0, 1).convert("RGB")


def gradient_flow_animation(record, **options) -> GradientFlowAnimation:
    """The animation of a statistics record (see module doc); ValueError without finite gradient norms."""
    return GradientFlowAnimation(record, **options)


def save_gradient_flow_gif(record, path: str | Path, **options) -> Path:
    return gradient_flow_animation(record, **options).savefig(path)
