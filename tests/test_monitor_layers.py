"""The monitor on layer lists: columns found by a walk, units read on each layer's declared axis."""

from __future__ import annotations

import numpy as np

from workbench.runner import build_run
from workbench.spec import spec_from_dict

CONV = [{"type": "conv2d", "filters": 4, "kernel": 3}, {"type": "relu"}, {"type": "max_pool2d", "size": 2},
        {"type": "conv2d", "filters": 6, "kernel": 3}, {"type": "tanh"}, {"type": "global_avg_pool2d"}]


def conv_run(**overrides):
    spec = spec_from_dict({"data": {"source": "digits", "limit": 200}, "model": {"layers": CONV},
                           "training": {"epochs": 1, "batch_size": 50}, **overrides})
    return build_run(spec)


def test_dead_channels_are_counted_per_channel_over_batch_and_positions():
    run = conv_run()
    conv1 = run.model.layer("conv1")
    conv1.params["b"][:2] = -1e4  # channels 0 and 1 output 0 at every position of every sample
    run.trainer.fit()
    record = run.record
    assert record.layers == ["conv1", "conv2", "dense1"]
    dead = record.series("dead_frac", "conv1")
    assert np.all(dead[:1] == 0.5)  # 2 of 4 channels on the first step (their bias cannot recover in one step)
    assert np.all(np.isnan(record.series("dead_frac", "dense1")))  # the output layer: not applicable
    sat = record.series("sat_frac", "conv2")
    assert np.all((sat >= 0) & (sat <= 1))


def test_statistics_of_conv_layers_are_finite_and_named_by_the_walk():
    run = conv_run()
    run.trainer.fit()
    record = run.record
    for stat in ("grad_norm", "weight_norm", "update_ratio", "backprop_norm", "act_std"):
        values = record.layer(stat)
        assert values.shape[1] == 3 and np.isfinite(values).all(), stat
    columns = record.meta["columns"]
    assert [c["type"] for c in columns] == ["conv2d", "conv2d", "dense"]
    assert columns[0]["activation"] == "relu" and columns[1]["activation"] == "tanh"
    assert record.meta["layer_sizes"][0] == [1 * 3 * 3, 4 * 3 * 3]  # conv fans: in x k x k, out x k x k
