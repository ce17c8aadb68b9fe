"""The gradient-flow animation (plots/gradient_flow.gif): frames, size, what is marked, when it is skipped."""

from __future__ import annotations

import time

import numpy as np
import pytest
from PIL import Image

from workbench.monitor import StatsRecord
from workbench.plots import save_run_plots
from workbench.plots.animation import MAX_FRAMES, gradient_flow_animation
from workbench.runner import build_run
from workbench.spec import spec_from_dict

LAYERS = ["dense1", "dense2", "dense3"]


def synthetic_record(steps: int = 200, layers=LAYERS, vanishing_from: int | None = None, bad_from: int | None = None):
    """Norms that fall towards the input; from `vanishing_from` on the first layer's backprop signal collapses."""
    record = StatsRecord(list(layers), every=1)
    n = len(layers)
    for step in range(steps):
        record.start_row(step, step // 20)
        for j, name in enumerate(layers):
            bp = 0.1 * 0.8 ** (n - 1 - j)
            if vanishing_from is not None and step >= vanishing_from and j == 0:
                bp = 1e-7
            grad = 2 * bp
            if bad_from is not None and step >= bad_from:
                grad = float("nan") if j == 0 else float("inf")
            record.log_layer("grad_norm", name, grad)
            record.log_layer("backprop_norm", name, bp)
        record.log("loss", 1.0 / (step + 1))
    return record


def frames_of(path):
    with Image.open(path) as image:
        frames = []
        for k in range(image.n_frames):
            image.seek(k)
            frames.append(np.asarray(image.convert("RGB")))
        return frames


def test_the_gif_has_one_frame_per_stretch_of_training_and_the_frames_change(tmp_path):
    record = synthetic_record(vanishing_from=120)
    anim = gradient_flow_animation(record, verdict="vanishing_gradients", findings=[], max_frames=10, dpi=40)
    path = anim.savefig(tmp_path / "gradient_flow.gif")
    frames = frames_of(path)
    assert len(frames) == anim.frames == 10
    assert path.read_bytes()[:6] == b"GIF89a" and path.stat().st_size < 1_000_000
    assert not np.array_equal(frames[0], frames[-1])
    assert anim.layers == LAYERS[::-1]  # from the output to the input
    # the first layer's collapse after step 120 shows in the last frame's medians, not in the first
    assert anim.backprop[0, -1] > 1e-3 and anim.backprop[-1, -1] == pytest.approx(1e-7)


def test_a_short_record_gives_as_many_frames_as_rows(tmp_path):
    anim = gradient_flow_animation(synthetic_record(steps=4), verdict="healthy", findings=[], dpi=40)
    assert anim.frames == 4 and len(frames_of(anim.savefig(tmp_path / "g.gif"))) == 4


def test_non_finite_norms_are_marked_and_still_drawn(tmp_path):
    record = synthetic_record(bad_from=150)
    anim = gradient_flow_animation(record, verdict="divergence", findings=[], max_frames=8, dpi=40)
    assert anim.grad_bad[-1].all() and not anim.grad_bad[0].any()
    assert len(frames_of(anim.savefig(tmp_path / "g.gif"))) == anim.frames


def test_layers_outside_the_healthy_band_are_outlined():
    record = synthetic_record(vanishing_from=0)
    anim = gradient_flow_animation(record, verdict="vanishing_gradients", findings=[])
    fig, update, animated = anim.figure()
    update(anim.frames - 1)
    backprop_bars = animated[2]
    edges = backprop_bars.get_linewidths()
    assert edges[-1] > 0 and all(width == 0 for width in edges[:-1])  # only the input layer (rightmost)


def test_gradient_free_records_have_no_animation_and_the_run_plots_skip_it(tmp_path):
    record = synthetic_record(steps=20)
    record.layer("grad_norm")[:] = np.nan
    record.layer("backprop_norm")[:] = np.nan
    with pytest.raises(ValueError, match="no finite gradient norms"):
        gradient_flow_animation(record)
    names = [p.name for p in save_run_plots(tmp_path, record=record, history={"train/loss": [1.0]})]
    assert "gradient_flow.gif" not in names


@pytest.mark.slow
@pytest.mark.parametrize("hidden, epochs", [([32, 16], 6), ([32] * 30, 2)], ids=["digits", "30-layers"])
def test_the_run_plots_draw_the_gif_from_a_real_record_small_and_quick(tmp_path, hidden, epochs):
    run = build_run(spec_from_dict({"data": {"source": "digits"}, "model": {"hidden": hidden},
                                    "training": {"epochs": epochs}}))
    run.trainer.fit()
    start, cpu = time.perf_counter(), time.process_time()
    paths = save_run_plots(tmp_path, record=run.record, history=run.trainer.history, names=["gradient_flow.gif"])
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    (path,) = paths
    assert path.name == "gradient_flow.gif" and path.stat().st_size < 1_000_000
    assert len(frames_of(path)) == MAX_FRAMES
    assert cpu < 10.0, (wall, cpu)  # about 1 s on an idle core; a generous bound for shared machines
