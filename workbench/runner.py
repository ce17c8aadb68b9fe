"""From a spec to a trained model: data + model + optimizer + trainer + hooks.

This is the one place that wires the pieces together (spec -> data + model ->
trainer -> hooks -> stats). Tracking, studies and the CLI call `build_run`
and add their own hooks; the core never imports them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from workbench.data import Dataset, load_dataset
from workbench.errors import UserError
from workbench.monitor import build_monitor_hooks
from workbench.nn.losses import LOSSES, Huber, Loss
from workbench.nn.model import RECURRENT_TYPES, Architecture, Sequential, build_network
from workbench.nn.registry import LAYERS
from workbench.nn.optim import build_optimizer
from workbench.spec import Spec
from workbench.training import Hook, Trainer
from workbench.training.evolution import GRADIENT_FREE, EvolutionStats, build_gradient_free

REGRESSION_LOSSES = ", ".join(name for name, cls in LOSSES.items() if cls.task == "regression")


@dataclass
class Run:
    """Everything a training run is made of, ready for `trainer.fit()`."""

    spec: Spec
    data: Dataset
    model: Sequential
    loss: Loss
    trainer: Trainer
    monitor: object | None = None
    hooks: list[Hook] = field(default_factory=list)

    @property
    def record(self):
        """The statistics record of the run's monitor (None when monitoring is off)."""
        return getattr(self.monitor, "record", None)


def load_data(spec: Spec) -> Dataset:
    d = spec.data
    return load_dataset(
        d.source, seed=spec.seed, dtype=spec.dtype, path=d.path, target=d.target,
        test_fraction=d.test_fraction, val_fraction=d.val_fraction, standardize=d.standardize,
        n_samples=d.n_samples, n_features=d.n_features, n_classes=d.n_classes, noise=d.noise, limit=d.limit,
        sequence_length=d.sequence_length,
    )


def make_loss(spec: Spec, data: Dataset) -> Loss:
    """The spec's loss, checked against the task of the data actually loaded."""
    name = spec.training.loss
    cls = LOSSES[name]
    if cls.task == "classification" and data.task != "classification":
        raise UserError(
            f'training.loss = "{name}" needs a classification data set, but {data.name} is a regression set: '
            f"use one of {REGRESSION_LOSSES}"
        )
    if cls.task == "regression" and data.task == "classification":
        raise UserError(
            f'training.loss = "{name}" is a regression loss, but {data.name} is a classification set '
            f'({data.n_classes} classes): use training.loss = "cross_entropy"'
        )
    if name == "binary_cross_entropy" and data.n_classes != 2:
        raise UserError(
            f'training.loss = "binary_cross_entropy" needs 2 classes, but {data.name} has {data.n_classes}: '
            'use training.loss = "cross_entropy"'
        )
    return Huber(spec.training.huber_delta) if cls is Huber else cls()


from workbench.nn.build import MAX_PARAMETERS  # noqa: E402  (one limit for the shorthand and layer lists)


def _check_model_size(n_inputs: int, hidden: tuple[int, ...], n_outputs: int) -> None:
    """Refuse a model too large to hold (model.hidden = [100000, 100000]) before allocating it."""
    widths = (n_inputs, *hidden, n_outputs)
    count = sum((a + 1) * b for a, b in zip(widths, widths[1:]))
    if count > MAX_PARAMETERS:
        raise UserError(
            f"model.hidden = {list(hidden)} gives {count:,} parameters with {n_inputs} inputs, more than "
            f"{MAX_PARAMETERS:,}: use narrower or fewer hidden layers"
        )


def _first_input_ndim(items: list[dict]) -> int | None:
    """The per-sample rank the first layer that cares wants (layers taking any shape defer to the next)."""
    for item in items:
        if "body" in item:  # a container: its first layer decides
            return _first_input_ndim(item["body"])
        ndim = 2 if item.get("per_step") else LAYERS[item["type"]].input_ndim  # a dense applied at every step
        if ndim is not None:
            return ndim
    return None


def input_shape_for(items: list[dict], data: Dataset) -> tuple[int, ...]:
    """Images (C, H, W) for a model whose first layer takes images (a convolution), sequences (T, F) for one
    whose first layer reads them (a recurrent layer), flat features otherwise."""
    wants = _first_input_ndim(items)
    shape = data.sample_shape
    if wants in (2, 3) and shape is not None and len(shape) == wants:
        return tuple(shape)
    return (data.n_features,)


def build_model_for(spec: Spec, data: Dataset, n_outputs: int, rng, dropout_rng) -> tuple[Sequential, Dataset]:
    """The spec's model for this data (and the data shaped as its first layer wants it)."""
    m = spec.model
    meta = {"task": data.task, "loss": spec.training.loss, "classes": [str(c) for c in data.classes]}
    arch = None
    if m.layers is None:
        _check_model_size(data.n_features, m.hidden, n_outputs)
        arch = Architecture(
            n_inputs=data.n_features, n_outputs=n_outputs, hidden=tuple(m.hidden), activation=m.activation,
            batch_norm=m.batch_norm, dropout=m.dropout, dtype=spec.dtype, meta=meta,
        )
    items = m.items()
    recurrent = [item for item in items if item["type"] in RECURRENT_TYPES]
    if data.per_step and not recurrent:
        raise UserError(f'data.source = "{data.name}" has a target at every step: the model needs a recurrent '
                        'layer that returns every step, e.g. [[model.layers]] type = "lstm", units = 64, '
                        "return_sequences = true")
    shape = input_shape_for(items, data)
    data = data.shaped(shape)
    model = build_network(items, shape, n_outputs, init=m.init, init_scale=m.init_scale, dtype=spec.dtype,
                          rng=rng, dropout_rng=dropout_rng, architecture=arch, meta=meta, per_step=data.per_step)
    return model, data


def set_bptt_steps(model: Sequential, steps: int, data: Dataset) -> None:
    """Truncated BPTT for every recurrent layer of the model (0: the whole sequence), checked against the data."""
    layers = [layer for layer, _ in model.walk() if hasattr(layer, "bptt_steps")]
    if not steps:
        return
    if not layers:
        raise UserError(f"training.bptt_steps = {steps} truncates backpropagation through time, but the model has "
                        "no recurrent layer: set training.bptt_steps = 0 (or add an rnn, lstm or gru layer)")
    length = int(data.input_shape[0])
    if steps > length:
        raise UserError(f"training.bptt_steps = {steps} is longer than the sequences of {data.name} ({length} steps): "
                        f"use at most {length}, or 0 for the whole sequence")
    for layer in layers:
        layer.bptt_steps = int(steps)


def seeds(seed: int) -> tuple[np.random.Generator, np.random.Generator, np.random.Generator]:
    """Independent streams for initialization, dropout and shuffling, all from the spec's seed."""
    init, dropout, shuffle = np.random.SeedSequence(seed).spawn(3)
    return tuple(np.random.default_rng(s) for s in (init, dropout, shuffle))


def build_run(spec: Spec, *, hooks: tuple[Hook, ...] = (), data: Dataset | None = None) -> Run:
    """Load data, build model, loss, optimizer, trainer and the monitoring hooks the spec asks for."""
    data = data if data is not None else load_data(spec)
    loss = make_loss(spec, data)
    if len(data.X_train) == 0:
        raise UserError(f"{data.name}: the training split is empty: lower data.test_fraction or data.val_fraction")
    init_rng, dropout_rng, shuffle_rng = seeds(spec.seed)
    model, data = build_model_for(spec, data, loss.output_units(data.n_outputs), init_rng, dropout_rng)
    set_bptt_steps(model, spec.training.bptt_steps, data)
    o, t = spec.optimizer, spec.training
    steps_per_epoch = max(1, -(-len(data.X_train) // t.batch_size))
    if o.name in GRADIENT_FREE:  # forward passes only, its own random stream (the first three stay as they were)
        evolution_rng = np.random.default_rng(np.random.SeedSequence(spec.seed).spawn(4)[3])
        optimizer = build_gradient_free(model, spec, steps_per_epoch=steps_per_epoch, rng=evolution_rng)
    else:
        optimizer = build_optimizer(
            model.parameters(), o.name, lr=o.lr, weight_decay=o.weight_decay, momentum=o.momentum,
            beta1=o.beta1, beta2=o.beta2, eps=o.eps, rho=o.rho, schedule=o.schedule,
            steps_per_epoch=steps_per_epoch, epochs=t.epochs, step_size=o.step_size, gamma=o.gamma,
            warmup_epochs=o.warmup_epochs, min_lr=o.min_lr, weights=model.weight_names(),
        )
    es = spec.early_stopping
    monitor_hooks = build_monitor_hooks(
        every=spec.monitor.every, max_records=spec.monitor.max_records,
        clipping_mode=spec.clipping.mode, max_norm=spec.clipping.max_norm, max_value=spec.clipping.max_value,
        nan_guard=spec.monitor.nan_guard,
        early_stopping=None if not es.enabled else dict(
            monitor=es.monitor, mode=es.mode, patience=es.patience, min_delta=es.min_delta,
            baseline=es.baseline, restore_best_weights=es.restore_best_weights, start_from_epoch=es.start_from_epoch,
        ),
    )
    # a batch larger than the training split is the whole split (and must not size buffers by the request)
    trainer = Trainer(model, loss, optimizer, data, epochs=t.epochs, batch_size=min(t.batch_size, len(data.X_train)),
                      shuffle=t.shuffle, rng=shuffle_rng)
    evolution = [EvolutionStats(monitor_hooks.monitor)] if o.name in GRADIENT_FREE else []
    all_hooks = [*monitor_hooks, *evolution, *hooks]
    for hook in all_hooks:
        trainer.register(hook)
    monitor = next((h for h in monitor_hooks if hasattr(h, "record")), None)
    return Run(spec, data, model, loss, trainer, monitor, all_hooks)
