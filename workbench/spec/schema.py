"""The declared table of every spec key: type, default, constraint and a line of doc.

This is the single source for the spec: validation, defaults, error messages, the CLI
and the docs all read `FIELDS`. The allowed names of every choice live here as tuples;
the `workbench.nn` registries are checked against them by a test.
"""

from __future__ import annotations

from dataclasses import dataclass

from workbench.constraints import (
    FRACTION,
    NON_NEGATIVE,
    OPEN_FRACTION,
    POSITIVE,
    Choices,
    Constraint,
    Interval,
    NonEmpty,
    at_least,
)

DTYPE_CHOICES = ("float32", "float64")
DATA_SOURCE_CHOICES = (
    "digits", "breast_cancer", "wine", "iris", "diabetes",
    "moons", "circles", "spirals", "classification", "regression",
    "mnist", "csv", "npz",
    "adding", "temporal_order", "copy", "sequential_mnist",
)  # fmt: skip
ACTIVATION_CHOICES = ("relu", "leaky_relu", "elu", "gelu", "tanh", "sigmoid", "softsign", "identity")
INIT_CHOICES = (
    "standard", "xavier_uniform", "xavier_normal", "he_uniform", "he_normal",
    "lecun_normal", "orthogonal", "normal", "uniform", "zeros",
)  # fmt: skip
OPTIMIZER_CHOICES = (
    "sgd", "momentum", "nesterov", "rmsprop", "adam", "adamw", "adagrad",
    "genetic", "evolution_strategy",  # gradient-free: workbench.training.evolution
)  # fmt: skip
SCHEDULE_CHOICES = ("constant", "step", "cosine", "warmup_cosine")
LOSS_CHOICES = ("cross_entropy", "binary_cross_entropy", "mse", "mae", "huber")
CLIPPING_MODE_CHOICES = ("none", "global_norm", "layer_norm", "value")
MONITOR_MODE_CHOICES = ("min", "max")

# Groups of choices the cross-field checks need.
FILE_SOURCES = ("mnist", "csv", "npz", "sequential_mnist")  # read from data.path
REGRESSION_SOURCES = ("diabetes", "regression", "adding")
SEQUENCE_SOURCES = ("adding", "temporal_order", "copy", "sequential_mnist")  # samples are (steps, features)
SYNTHETIC_SOURCES = ("moons", "circles", "spirals", "classification", "regression")
CLASSIFICATION_LOSSES = ("cross_entropy", "binary_cross_entropy")

# Upper bounds that turn a typo (an extra zero or three) into a spec error instead of an
# out-of-memory crash: synthetic data sets up to a million rows of ten thousand features.
MAX_SEED = 2**32 - 1  # scikit-learn's random_state range
MAX_SAMPLES = 1_000_000
MAX_FEATURES = 10_000
MAX_POPULATION = 10_000  # gradient-free optimizers: weight vectors per generation
MAX_SEQUENCE_LENGTH = 100_000

SECTIONS = ("data", "model", "optimizer", "training", "clipping", "early_stopping", "monitor")


@dataclass(frozen=True)
class Field:
    """One spec key. `kind` is int, float, bool, str, list (a list of ints, the
    constraint applying to each item) or "layers" (a layer list, checked against the
    layer registry of `workbench.nn`); `optional` fields may be None (absent)."""

    key: str
    kind: object
    default: object
    constraint: Constraint | None = None
    doc: str = ""
    optional: bool = False
    example: object = None  # shown in errors when the default is None
    hint: str = ""  # appended to out-of-range errors

    @property
    def section(self) -> str:
        """'' for top-level keys."""
        return self.key.rpartition(".")[0]

    @property
    def name(self) -> str:
        """The key inside its section."""
        return self.key.rpartition(".")[2]

    @property
    def shown_example(self) -> object:
        """The value quoted after 'e.g.' in error messages."""
        return self.default if self.example is None else self.example


F = Field
FIELDS: tuple[Field, ...] = (
    F("name", str, "workbench", NonEmpty(), "MLflow experiment name"),
    F(
        "seed", int, 0, Interval(0, MAX_SEED), "seed of every random generator of the run",
        hint="seeds are 32-bit unsigned integers (scikit-learn's random_state)",
    ),  # fmt: skip
    F("dtype", str, "float32", Choices(DTYPE_CHOICES), "floating-point precision of arrays"),
    # data
    F("data.source", str, "digits", Choices(DATA_SOURCE_CHOICES), "dataset to train on"),
    F("data.path", str, None, NonEmpty(), "file or folder for mnist, csv, npz", True, "data/my.csv"),
    F("data.target", str, None, NonEmpty(), "target column name for csv", True, "label"),
    F("data.test_fraction", float, 0.25, OPEN_FRACTION, "fraction held out for test"),
    F("data.val_fraction", float, 0.15, FRACTION, "fraction of the training part for validation"),
    F("data.standardize", bool, True, None, "standardize features (fitted on the training part)"),
    F("data.n_samples", int, 1000, Interval(10, MAX_SAMPLES), "examples to generate (synthetic sources)"),
    F("data.n_features", int, 20, Interval(1, MAX_FEATURES), "features (synthetic classification, regression)"),
    F("data.n_classes", int, 3, at_least(2), "classes (synthetic classification, spirals)"),
    F("data.noise", float, 0.1, NON_NEGATIVE, "noise level (synthetic sources)"),
    F("data.limit", int, None, at_least(10), "cap on the number of examples loaded", True, 1000),
    F(
        "data.sequence_length", int, None, Interval(1, MAX_SEQUENCE_LENGTH),
        "steps per sequence (adding, temporal_order, copy: its delay T, sequential_mnist: a divisor of 784); "
        "unset: the source's default", True, 50,
    ),
    # model
    F("model.hidden", list, (128, 64), at_least(1), "hidden layer widths; [] is a linear model"),
    F("model.activation", str, "relu", Choices(ACTIVATION_CHOICES), "hidden activation"),
    F("model.init", str, "he_normal", Choices(INIT_CHOICES), "weight initializer"),
    F("model.init_scale", float, 1.0, POSITIVE, "std, half-width or gain of the initializer"),
    F("model.batch_norm", bool, False, None, "batch normalization after each hidden dense layer"),
    F(
        "model.dropout", float, 0.0, FRACTION, "fraction of hidden units dropped in training",
        hint="dropout is the fraction of units dropped, so 1 would drop them all: use 0 for none, 0.5 for heavy",
    ),
    F(
        "model.layers", "layers", None, None,
        "the layers from input to output, each a table with a type from the layer registry "
        "(instead of hidden, activation, batch_norm and dropout); the output layer is appended", True,
        [{"type": "dense", "units": 64}, {"type": "relu"}],
    ),  # fmt: skip  # fmt: skip
    # optimizer
    F("optimizer.name", str, "adam", Choices(OPTIMIZER_CHOICES), "update rule"),
    F("optimizer.lr", float, 1e-3, Interval(0, 10, "right"), "learning rate"),
    F("optimizer.weight_decay", float, 0.0, NON_NEGATIVE, "L2 penalty (decoupled for adamw)"),
    F("optimizer.momentum", float, 0.9, FRACTION, "momentum for momentum, nesterov"),
    F("optimizer.beta1", float, 0.9, FRACTION, "first-moment decay (adam, adamw)"),
    F("optimizer.beta2", float, 0.999, FRACTION, "second-moment decay (adam, adamw)"),
    F("optimizer.eps", float, 1e-8, POSITIVE, "denominator guard (rmsprop, adam, adamw, adagrad)"),
    F("optimizer.rho", float, 0.9, FRACTION, "squared-gradient decay for rmsprop"),
    F("optimizer.schedule", str, "constant", Choices(SCHEDULE_CHOICES), "learning-rate schedule"),
    F("optimizer.step_size", int, 30, at_least(1), "epochs between decays (step)"),
    F("optimizer.gamma", float, 0.1, Interval(0, 1, "right"), "decay factor (step)"),
    F("optimizer.warmup_epochs", int, 5, at_least(0), "linear warmup epochs (warmup_cosine)"),
    F("optimizer.min_lr", float, 0.0, NON_NEGATIVE, "final learning rate (cosine, warmup_cosine)"),
    F(
        "optimizer.population", int, 50, Interval(2, MAX_POPULATION),
        "weight vectors evaluated per generation (genetic, evolution_strategy)",
        hint="selection and antithetic pairs need at least 2 members",
    ),
    F("optimizer.mutation_scale", float, 0.005, POSITIVE, "std of the Gaussian mutation (genetic)"),
    F("optimizer.crossover_rate", float, 0.5, Interval(0, 1), "fraction of children made by crossover (genetic)"),
    F("optimizer.sigma", float, 0.05, POSITIVE, "std of the weight perturbations (evolution_strategy)"),
    # training
    F("training.loss", str, "cross_entropy", Choices(LOSS_CHOICES), "loss function"),
    F("training.epochs", int, 100, at_least(1), "passes over the training part"),
    F("training.batch_size", int, 32, at_least(1), "examples per step"),
    F("training.shuffle", bool, True, None, "reshuffle the training part every epoch"),
    F("training.huber_delta", float, 1.0, POSITIVE, "threshold of the huber loss"),
    F(
        "training.bptt_steps", int, 0, at_least(0),
        "truncated backpropagation through time: steps the gradient flows back through a recurrent layer "
        "before it is cut (0: the whole sequence)",
    ),
    # clipping
    F("clipping.mode", str, "none", Choices(CLIPPING_MODE_CHOICES), "gradient clipping"),
    F("clipping.max_norm", float, 1.0, POSITIVE, "norm bound (global_norm, layer_norm)"),
    F("clipping.max_value", float, 1.0, POSITIVE, "bound on each gradient entry (value)"),
    # early_stopping
    F("early_stopping.enabled", bool, False, None, "stop when the monitored metric stalls"),
    F("early_stopping.monitor", str, "val/loss", NonEmpty(), "metric to watch"),
    F("early_stopping.mode", str, "min", Choices(MONITOR_MODE_CHOICES), "whether lower or higher is better"),
    F("early_stopping.patience", int, 10, at_least(0), "epochs without improvement before stopping"),
    F("early_stopping.min_delta", float, 0.0, NON_NEGATIVE, "smallest change that counts as improvement"),
    F("early_stopping.baseline", float, None, None, "value the metric must beat", True, 0.5),
    F("early_stopping.restore_best_weights", bool, True, None, "end with the best epoch's weights"),
    F("early_stopping.start_from_epoch", int, 0, at_least(0), "epochs before watching starts"),
    # monitor
    F("monitor.every", int, 1, at_least(1), "statistics cadence, in steps"),
    F("monitor.log_every", int, 10, at_least(1), "MLflow metric cadence, in steps"),
    F("monitor.nan_guard", bool, True, None, "stop the run on a non-finite loss or gradient"),
    F("monitor.max_records", int, 100000, at_least(100), "cap on the statistics kept in memory"),
)
del F

FIELDS_BY_KEY: dict[str, Field] = {f.key: f for f in FIELDS}

# Names people reach for that difflib cannot relate to ours (unknown-key suggestions);
# a bare name applies in any section, a dotted one only there.
KEY_ALIASES = {
    "learning_rate": "optimizer.lr",
    "decay": "optimizer.weight_decay",
    "l2": "optimizer.weight_decay",
    "epsilon": "optimizer.eps",
    "optimiser": "optimizer",
    "optimizer.type": "optimizer.name",
    "optimizer.algorithm": "optimizer.name",
    "scheduler": "optimizer.schedule",
    "lr_schedule": "optimizer.schedule",
    "units": "model.hidden",
    "hidden_sizes": "model.hidden",
    "initializer": "model.init",
    "initialization": "model.init",
    "weight_init": "model.init",
    "criterion": "training.loss",
    "objective": "training.loss",
    "loss_fn": "training.loss",
    "clip_norm": "clipping.max_norm",
    "max_grad_norm": "clipping.max_norm",
    "grad_clip": "clipping.mode",
    "dataset": "data.source",
    "random_state": "seed",
    "random_seed": "seed",
    "precision": "dtype",
}


def known_keys() -> list[str]:
    """Every dotted key, in declaration order (top-level keys first)."""
    return [f.key for f in FIELDS]


def default(key: str) -> object:
    """The declared default of a dotted key (used by the dataclasses in `sections.py`)."""
    return FIELDS_BY_KEY[key].default
