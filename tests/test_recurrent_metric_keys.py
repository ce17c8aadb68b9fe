"""The statistics through time reach MLflow as `<stat>/<layer>` for recurrent layers (README's list)."""

from __future__ import annotations

import numpy as np

from workbench.runner import build_run
from workbench.spec import spec_from_dict
from workbench.tracking.metric_feed import RECURRENT_METRICS, MetricFeed


def test_recurrent_series_are_logged_for_recurrent_layers_only():
    spec = spec_from_dict({"data": {"source": "adding", "sequence_length": 8, "n_samples": 120},
                           "model": {"layers": [{"type": "rnn", "units": 6, "return_sequences": True},
                                                {"type": "lstm", "units": 6}]},
                           "training": {"loss": "mse", "epochs": 1}})
    run = build_run(spec)
    run.trainer.fit()
    record = run.record
    feed = MetricFeed.__new__(MetricFeed)
    keys, columns = feed._columns(record, slice(0, len(record)), np.ones(len(record), bool))
    for stat in RECURRENT_METRICS:
        assert f"{stat}/lstm1" in keys
        assert (f"{stat}/rnn1" in keys) == (stat != "gate_sat_frac")  # a plain rnn has no gates
        assert not any(key == f"{stat}/dense1" for key in keys)
    assert all(column.shape == (len(record), 1) for column in columns)
