"""The experiment spec: defaults, round trips, overrides, and one-line errors for every mistake."""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from workbench.errors import UserError
from workbench.spec import (
    ACTIVATION_CHOICES,
    DATA_SOURCE_CHOICES,
    FIELDS,
    INIT_CHOICES,
    LOSS_CHOICES,
    OPTIMIZER_CHOICES,
    Spec,
    apply_overrides,
    known_keys,
    load_spec,
    spec_from_dict,
)
from workbench.constraints import Choices
from workbench.spec.sections import SECTION_CLASSES

NON_DEFAULT = {
    "name": 'tricky "name" \\ ünïcode\ttab',
    "seed": 7,
    "dtype": "float64",
    "data": {"source": "csv", "path": "data/my.csv", "target": "label", "limit": 500, "test_fraction": 0.3},
    "model": {"hidden": [], "activation": "tanh", "init": "orthogonal", "dropout": 0.1 + 0.2, "batch_norm": True},
    "optimizer": {"name": "sgd", "lr": 1e-7, "eps": 1.5e-300, "schedule": "step", "gamma": 1},
    "training": {"loss": "huber", "epochs": 3, "huber_delta": 2.5},
    "clipping": {"mode": "global_norm", "max_norm": 0.5},
    "early_stopping": {"enabled": True, "baseline": -0.25, "mode": "max", "monitor": "val/accuracy"},
    "monitor": {"every": 5, "max_records": 100},
}


def error_of(d: dict) -> str:
    with pytest.raises(UserError) as info:
        spec_from_dict(d)
    message = str(info.value)
    assert "\n" not in message
    return message


# --- defaults and shape -------------------------------------------------------------


def test_defaults() -> None:
    spec = spec_from_dict({})
    assert spec == Spec()
    assert (spec.name, spec.seed, spec.dtype) == ("workbench", 0, "float32")
    assert spec.data.source == "digits" and spec.data.path is None
    assert spec.model.hidden == (128, 64) and spec.model.init == "he_normal"
    assert spec.optimizer.name == "adam" and spec.optimizer.lr == 1e-3
    assert spec.training.loss == "cross_entropy" and spec.early_stopping.enabled is False
    assert spec.monitor.max_records == 100000


def test_defaults_satisfy_their_own_constraints() -> None:
    assert spec_from_dict(Spec().to_dict()) == Spec()


def test_dataclasses_match_the_declared_table() -> None:
    top = [f.name for f in dataclasses.fields(Spec) if f.name not in SECTION_CLASSES]
    keys = top + [f"{s}.{f.name}" for s, cls in SECTION_CLASSES.items() for f in dataclasses.fields(cls)]
    assert keys == known_keys() == [f.key for f in FIELDS]
    assert all(f.doc for f in FIELDS)


def test_choices_come_from_the_schema_constants() -> None:
    choices = {f.key: f.constraint.names for f in FIELDS if isinstance(f.constraint, Choices)}
    assert choices["model.activation"] is ACTIVATION_CHOICES
    assert choices["model.init"] is INIT_CHOICES
    assert choices["optimizer.name"] is OPTIMIZER_CHOICES
    assert choices["training.loss"] is LOSS_CHOICES
    assert choices["data.source"] is DATA_SOURCE_CHOICES


def test_to_dict_and_flatten() -> None:
    spec = Spec()
    assert "path" not in spec.to_dict()["data"]
    assert spec.to_dict()["model"]["hidden"] == [128, 64]
    flat = spec.flatten()
    assert list(flat) == known_keys()
    assert flat["optimizer.lr"] == 1e-3 and flat["model.hidden"] == [128, 64] and flat["data.path"] is None


def test_frozen() -> None:
    spec = Spec()
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.seed = 1  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.optimizer.lr = 1.0  # type: ignore[misc]
    assert isinstance(spec.model.hidden, tuple)
    assert hash(spec) == hash(Spec())


# --- round trips ----------------------------------------------------------------------


def test_round_trip_through_toml_file(tmp_path: Path) -> None:
    spec = spec_from_dict(NON_DEFAULT)
    path = tmp_path / "spec.toml"
    path.write_text(spec.to_toml(), encoding="utf-8")
    assert load_spec(path) == spec
    assert spec.optimizer.lr == 1e-7 and spec.model.dropout == 0.1 + 0.2


def test_types_are_normalized() -> None:
    spec = spec_from_dict({"optimizer": {"lr": 1, "gamma": 1}, "model": {"hidden": (3, 4)}})
    assert type(spec.optimizer.lr) is float and spec.optimizer.lr == 1.0
    assert spec.model.hidden == (3, 4)


def test_dotted_keys_in_a_dict() -> None:
    assert spec_from_dict({"optimizer.lr": 0.5}).optimizer.lr == 0.5
    assert "given twice" in error_of({"optimizer.lr": 0.5, "optimizer": {"lr": 0.1}})


# --- mistakes -------------------------------------------------------------------------

MISTAKES = [
    ({"optimizer": {"lr": -0.1}}, "optimizer.lr = -0.1 is out of range: must be > 0 and <= 10"),
    ({"optimizer": {"lr": 11}}, "optimizer.lr = 11"),
    ({"optimizer": {"lr": float("nan")}}, "optimizer.lr = nan"),
    ({"optimizer": {"lr": "fast"}}, 'optimizer.lr = "fast" is not a number'),
    ({"training": {"epochs": 10.5}}, "training.epochs = 10.5 is not an integer"),
    ({"training": {"epochs": 10.0}}, "training.epochs = 10.0 is not an integer"),
    ({"training": {"epochs": True}}, "training.epochs = true is not an integer"),
    ({"training": {"epochs": 0}}, "training.epochs = 0 is out of range: must be >= 1"),
    ({"training": {"shuffle": 1}}, "training.shuffle = 1 is not a boolean"),
    ({"seed": -1}, "seed = -1"),
    ({"name": ""}, 'name = "" is not allowed'),
    ({"name": 3}, "name = 3 is not a string"),
    ({"dtype": "float16"}, 'dtype = "float16" is not allowed: choose one of float32, float64'),
    ({"model": {"dropout": 1}}, "model.dropout = 1 is out of range: must be >= 0 and < 1"),
    ({"model": {"hidden": [128, 0]}}, "model.hidden = [128, 0] is out of range"),
    ({"model": {"hidden": [128, 1.5]}}, "model.hidden = [128, 1.5] is not a list of integers"),
    ({"model": {"hidden": 128}}, "model.hidden = 128 is not a list of integers"),
    ({"model": {"activation": None}}, "model.activation = None"),
    ({"data": {"test_fraction": 1.0}}, "data.test_fraction = 1.0 is out of range: must be > 0 and < 1"),
    ({"data": {"val_fraction": 1}}, "data.val_fraction = 1"),
    ({"data": {"limit": 5}}, "data.limit = 5 is out of range: must be >= 10"),
    ({"data": {"path": ""}}, 'data.path = "" is not allowed'),
    ({"monitor": {"max_records": 99}}, "monitor.max_records = 99"),
    ({"model": 3}, "model = 3 should be a table"),
    ({"data": {"source": "csv"}}, 'set data.path = "data/my.csv"'),
    ({"data": {"source": "mnist"}}, "set data.path ="),
    ({"data": {"source": "csv", "path": "x.csv"}}, "data.target"),
    ({"data": {"source": "diabetes"}, "training": {"loss": "binary_cross_entropy"}}, "training.loss"),
]


@pytest.mark.parametrize(("d", "fragment"), MISTAKES)
def test_each_mistake_is_one_line_naming_key_and_value(d: dict, fragment: str) -> None:
    assert fragment in error_of(d)


def test_out_of_range_gives_an_example_and_dropout_a_fix() -> None:
    assert error_of({"optimizer": {"lr": -0.1}}).endswith("(e.g. optimizer.lr = 0.001)")
    assert "use 0 for none" in error_of({"model": {"dropout": 1.0}})


def test_regression_losses_fit_regression_sources_and_files_only() -> None:
    for loss in ("mse", "mae", "huber"):
        spec_from_dict({"data": {"source": "diabetes"}, "training": {"loss": loss}})
        spec_from_dict({"data": {"source": "npz", "path": "data/my.npz"}, "training": {"loss": loss}})
        message = error_of({"data": {"source": "iris"}, "training": {"loss": loss}})
        assert f'training.loss = "{loss}" is a regression loss' in message and '"cross_entropy"' in message


def test_not_a_mapping() -> None:
    with pytest.raises(UserError, match="table of keys"):
        spec_from_dict([1, 2])  # type: ignore[arg-type]


# --- typo suggestions -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("d", "key", "suggestion"),
    [
        ({"optimizer": {"learning_rate": 0.1}}, "optimizer.learning_rate", "optimizer.lr"),
        ({"training": {"epoch": 3}}, "training.epoch", "training.epochs"),
        ({"model": {"activaton": "relu"}}, "model.activaton", "model.activation"),
        ({"lr": 0.1}, "lr", "optimizer.lr"),
        ({"training": {"lr": 0.1}}, "training.lr", "optimizer.lr"),
        ({"optimiser": {"lr": 0.1}}, "optimiser", "optimizer"),
        ({"sed": 1}, "sed", "seed"),
    ],
)
def test_unknown_key_suggests_the_close_match(d: dict, key: str, suggestion: str) -> None:
    message = error_of(d)
    assert f"unknown key '{key}'" in message
    assert f"did you mean '{suggestion}'?" in message
    assert "allowed" in message


@pytest.mark.parametrize(
    ("d", "suggestion"),
    [
        ({"model": {"activation": "relu6"}}, "relu"),
        ({"model": {"activation": "ReLU"}}, "relu"),
        ({"model": {"init": "he_norm"}}, "he_normal"),
        ({"optimizer": {"name": "adamW"}}, "adamw"),
        ({"data": {"source": "mnst", "path": "x"}}, "mnist"),
    ],
)
def test_unknown_choice_suggests_the_close_match(d: dict, suggestion: str) -> None:
    message = error_of(d)
    assert "is not allowed: choose one of" in message
    assert message.endswith(f'(did you mean "{suggestion}"?)')


# --- files ----------------------------------------------------------------------------


def load_error(path: Path | str, overrides: tuple[str, ...] = ()) -> str:
    with pytest.raises(UserError) as info:
        load_spec(path, overrides)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_missing_file_suggests_a_sibling(tmp_path: Path) -> None:
    (tmp_path / "digits_mlp.toml").write_text("")
    message = load_error(tmp_path / "digits_mpl.toml")
    assert "not found" in message and "digits_mlp.toml" in message


def test_directory_unreadable_and_binary_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert "is a directory" in load_error(tmp_path)
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"\xff\xfe\x00")
    assert "not UTF-8" in load_error(binary)

    def denied(self: Path) -> bytes:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "read_bytes", denied)
    assert "permission denied" in load_error(binary)


def test_toml_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('name = "x"\n[optimizer]\nlr = ,\n')
    message = load_error(path)
    assert f"{path}:3:" in message and "invalid TOML" in message and "lr = ," in message


def test_unknown_key_in_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "x.toml"
    path.write_text("[optimizer]\nlearning_rate = 0.1\n")
    message = load_error(path)
    assert f"unknown key 'optimizer.learning_rate' in {path}: did you mean 'optimizer.lr'?" in message


def test_bad_value_in_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "x.toml"
    path.write_text("[training]\nepochs = 1.5\n")
    assert load_error(path).startswith(f"{path}: training.epochs = 1.5 is not an integer")


# --- overrides ------------------------------------------------------------------------


def test_overrides_parse_toml_values_and_bare_strings() -> None:
    d = apply_overrides(
        {"model": {"hidden": [1]}},
        [
            "optimizer.lr=0.01",
            "model.hidden=[256, 256]",
            "model.activation=tanh",
            'model.init="orthogonal"',
            "training.shuffle=false",
            "seed = 3",
            "name=2024",
            "data.path=data/my file.csv",
        ],
    )
    assert d["optimizer"]["lr"] == 0.01 and d["model"]["hidden"] == [256, 256]
    assert d["model"]["activation"] == "tanh" and d["model"]["init"] == "orthogonal"
    assert d["training"]["shuffle"] is False and d["seed"] == 3
    assert d["name"] == "2024" and d["data"]["path"] == "data/my file.csv"
    assert spec_from_dict(d).model.hidden == (256, 256)


def test_overrides_copy_their_input_and_last_wins() -> None:
    original = {"optimizer": {"lr": 0.1}}
    d = apply_overrides(original, ["optimizer.lr=0.2", "optimizer.lr=0.3"])
    assert d["optimizer"]["lr"] == 0.3 and original == {"optimizer": {"lr": 0.1}}
    assert apply_overrides({}, "model.hidden=[]") == {"model": {"hidden": []}}


@pytest.mark.parametrize(
    ("override", "fragment"),
    [
        ("optimizer.lr", "malformed override 'optimizer.lr': expected KEY=VALUE"),
        ("=3", "malformed override"),
        ("optimizer.learning_rate=0.1", "did you mean 'optimizer.lr'?"),
        ("optimiser.lr=0.1", "did you mean 'optimizer.lr'?"),
        ("model=3", "unknown key 'model'"),
    ],
)
def test_bad_overrides(override: str, fragment: str) -> None:
    with pytest.raises(UserError) as info:
        apply_overrides({}, [override])
    assert fragment in str(info.value)


def test_load_with_overrides_names_the_set_argument(tmp_path: Path) -> None:
    path = tmp_path / "x.toml"
    path.write_text("[optimizer]\nlr = 0.1\n")
    assert load_spec(path, ["optimizer.lr=1e-2", "training.shuffle=false"]).optimizer.lr == 0.01
    message = load_error(path, ("optimizer.lr=-1",))
    assert message.startswith("--set optimizer.lr=-1: optimizer.lr = -1 is out of range")
    assert "is not a boolean" in load_error(path, ("training.shuffle=True",))


def test_with_overrides() -> None:
    spec = Spec()
    changed = spec.with_overrides({"optimizer.lr": 0.1, "model.hidden": [8], "data.limit": 100})
    assert changed.optimizer.lr == 0.1 and changed.model.hidden == (8,) and changed.data.limit == 100
    assert spec == Spec()
    assert changed.with_overrides({"data.limit": None}).data.limit is None
    with pytest.raises(UserError, match="optimizer.lr"):
        spec.with_overrides({"optimizer.lr": 0})
    with pytest.raises(UserError, match="did you mean 'optimizer.lr'"):
        spec.with_overrides({"optimizer.learning_rate": 0.1})
    assert spec.with_overrides(changed.flatten()) == changed


# --- properties -----------------------------------------------------------------------

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**20), max_value=10**20),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from([c for f in FIELDS if isinstance(f.constraint, Choices) for c in f.constraint.names]),
)
values = st.one_of(
    scalars,
    st.lists(st.one_of(st.integers(-5, 300), scalars), max_size=4),
    st.dictionaries(st.text(max_size=4), scalars, max_size=2),
)
keys = st.one_of(st.sampled_from(known_keys()), st.text(max_size=10), st.sampled_from(["model", "optimizer", "data"]))
override_texts = st.one_of(st.builds(lambda k, v: f"{k}={v}", keys, st.text(max_size=12)), st.text(max_size=12))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(keys, values, max_size=6), st.lists(override_texts, max_size=3))
def test_any_input_gives_a_spec_or_a_user_error(flat: dict, overrides: list[str]) -> None:
    d: dict = {}
    for key, value in flat.items():
        section, _, name = key.rpartition(".")
        if section and key in known_keys() and isinstance(d.setdefault(section, {}), dict):
            d[section][name] = value  # nested, as TOML gives
        else:
            d[key] = value
    try:
        spec = spec_from_dict(apply_overrides(d, overrides))
    except UserError as error:
        assert "\n" not in str(error) and str(error)
        return
    assert spec_from_dict(tomllib.loads(spec.to_toml())) == spec


valid_values = {
    "name": st.text(min_size=1, max_size=20).filter(str.strip),
    "model.hidden": st.lists(st.integers(1, 4096), max_size=4),
    "optimizer.lr": st.floats(min_value=1e-300, max_value=10),
    "early_stopping.baseline": st.floats(allow_nan=False, allow_infinity=False),
    "data.noise": st.floats(min_value=0, max_value=1e300),
    "model.activation": st.sampled_from(ACTIVATION_CHOICES),
}


@settings(max_examples=200, deadline=None)
@given(st.fixed_dictionaries({}, optional=valid_values))
def test_valid_specs_round_trip_exactly(d: dict) -> None:
    d = {k: v for k, v in d.items() if not (isinstance(v, str) and not _encodable(v))}
    spec = Spec().with_overrides(d)
    assert spec_from_dict(tomllib.loads(spec.to_toml())) == spec


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
