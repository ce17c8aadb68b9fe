"""Properties of `workbench run` on random input: never a traceback, never a half-created run.

Random specs (known keys with values of random types, unknown keys, random TOML fragments)
and random --set overrides go to the spec parser and to the CLI with tracking ON. Whatever
the input: the parser returns a Spec or raises UserError; the CLI exits 0, 1 or 2; exit 2
leaves no run in the MLflow store, 0 and 1 leave exactly one, closed (FINISHED / FAILED).
Every run is one epoch; half the examples are also forced tiny (iris or moons, hidden [4],
100 samples) by overrides placed after the random ones, which therefore win.
The examples are the same alone, in the suite and in any order (tests/conftest.py,
`pytest_runtest_setup`: every workbench module is loaded before the first property test of a process).
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
import tempfile
import warnings
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from support import sqlite_store

from workbench.cli import main
from workbench.errors import UserError
from workbench.spec import FIELDS, known_keys, load_spec

KEYS = known_keys()
SECTIONS = sorted({f.section for f in FIELDS if f.section})
NAMES = sorted({f.name for f in FIELDS})


# -- TOML text of random values ------------------------------------------------------------------
def toml_string(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)  # a JSON string is a TOML basic string (near enough)


def toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return toml_string(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{toml_string(k)} = {toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(value)


scalars = st.one_of(
    st.integers(-(2**70), 2**70),
    st.integers(-3, 300),
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(-2, 2),
    st.booleans(),
    st.text(max_size=12),
    st.sampled_from(["relu", "adam", "sgd", "iris", "moons", "csv", "npz", "mnist", "mse", "huber",
                     "binary_cross_entropy", "cross_entropy", "he_normal", "zeros", "cosine", "value", ""]),
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(NAMES) | st.text(max_size=6), inner,
                                                                max_size=3),
    max_leaves=6,
)
unknown_keys = st.one_of(
    st.text(min_size=1, max_size=15),
    st.builds(lambda s, n: f"{s}.{n}", st.sampled_from(SECTIONS) | st.text(max_size=8),
              st.sampled_from(NAMES) | st.text(max_size=8)),
)
keys = st.one_of(st.sampled_from(KEYS), st.sampled_from(KEYS), unknown_keys)


def plausible(field):
    """Values of the right type, mostly in range, for one known key (so some specs are valid)."""
    from workbench.constraints import Choices

    if isinstance(field.constraint, Choices):
        return st.sampled_from(field.constraint.names)
    if field.kind is bool:
        return st.booleans()
    if field.kind is int:
        return st.integers(0, 12) | st.integers(10, 200)
    if field.kind is float:
        return st.floats(0, 1, exclude_max=True) | st.sampled_from([1e-3, 0.1, 1.0, 2.0])
    if field.kind is list:
        return st.lists(st.integers(1, 6), max_size=2)
    return st.text(min_size=1, max_size=8)


known_assignments = st.sampled_from(FIELDS).flatmap(
    lambda f: plausible(f).map(lambda v, f=f: f"{f.key}={toml_value(v)}")
)


@st.composite
def spec_texts(draw) -> str:
    """A spec file: dotted-key assignments (mostly known keys), tables, or raw fragments;
    a third are a valid base plus a few plausible known keys."""
    if draw(st.integers(0, 2)) == 0:
        base = ['name = "prop"', 'data.source = "iris"']
        return "\n".join(base + [draw(known_assignments) for _ in range(draw(st.integers(0, 3)))]) + "\n"
    lines = []
    for _ in range(draw(st.integers(0, 5))):
        kind = draw(st.sampled_from(["dotted", "dotted", "table", "fragment"]))
        if kind == "dotted":
            key = draw(keys)
            lines.append(f"{'.'.join(toml_string(part) for part in key.split('.'))} = {toml_value(draw(values))}")
        elif kind == "table":
            section = draw(st.sampled_from(SECTIONS) | st.text(min_size=1, max_size=8))
            lines.append(f"[{toml_string(section)}]")
            lines.append(f"{toml_string(draw(st.sampled_from(NAMES)))} = {toml_value(draw(values))}")
        else:
            lines.append(draw(st.sampled_from(["[", "x = ", "= 1", "[[model]]", "model = 1", "a.b.c = 1", "\x00",
                                               'name = """', "[data]\n[data]"]) | st.text(max_size=20)))
    # a spec keeps a key once: a later [table] repeating an earlier one is a TOML error, which is fine too
    return "\n".join(lines) + "\n"


@st.composite
def override_texts(draw) -> str:
    kind = draw(st.sampled_from(["plausible", "plausible", "typed", "typed", "raw"]))
    if kind == "plausible":
        return draw(known_assignments)
    if kind == "typed":
        return f"{draw(keys)}={toml_value(draw(values))}"
    return draw(st.text(max_size=25))


def runs(db: Path) -> list[str]:
    """Status of every run in the sqlite MLflow store (empty when it was never created)."""
    if not db.exists():
        return []
    with sqlite3.connect(db) as connection:
        tables = {row[0] for row in connection.execute("select name from sqlite_master where type='table'")}
        return [row[0] for row in connection.execute("select status from runs")] if "runs" in tables else []


# WORKBENCH_PROPERTY_EXAMPLES=500 hunts longer (the default keeps the test near 20 s)
EXAMPLES = int(os.environ.get("WORKBENCH_PROPERTY_EXAMPLES", "60"))
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                          HealthCheck.too_slow])


@pytest.mark.slow
@settings(max_examples=5 * EXAMPLES, deadline=None)
@given(text=spec_texts(), overrides=st.lists(override_texts(), max_size=4))
def test_parser_returns_a_spec_or_one_line_user_error(text, overrides):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "spec.toml"
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
        try:
            spec = load_spec(path, overrides)
        except UserError as error:
            assert "\n" not in str(error) and str(error).strip()
            return
    assert load_spec_roundtrip(spec) == spec


def load_spec_roundtrip(spec):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "again.toml"
        path.write_text(spec.to_toml(), encoding="utf-8")
        return load_spec(path)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One MLflow store for every example (a fresh sqlite store per example costs a second or two)."""
    folder = tmp_path_factory.mktemp("store")
    sqlite_store(folder)
    return folder / "mlflow.db"


@SETTINGS
@given(text=spec_texts(), overrides=st.lists(override_texts(), max_size=3), source=st.sampled_from(["iris", "moons"]),
       force=st.booleans())
@pytest.mark.slow
def test_cli_never_crashes_and_never_leaves_half_a_run(store, text, overrides, source, force, capsys):
    tiny = ["training.epochs=1", "model.hidden=[4]", f"data.source={source}", "data.n_samples=100"]
    # half the examples are forced tiny; the other half keep their random source and widths (one epoch)
    tail = tiny if force else ["training.epochs=1"]
    with tempfile.TemporaryDirectory() as tmp:
        spec = Path(tmp) / "spec.toml"
        spec.write_text(text, encoding="utf-8", errors="surrogatepass")
        argv = ["run", str(spec), *(f"--set={o}" for o in overrides), *(f"--set={o}" for o in tail),
                "--tracking-uri", f"sqlite:///{store}", "--quiet", "--json"]
        before = runs(store)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            code = main(argv)
        after = runs(store)
    err = capsys.readouterr().err
    event(f"exit {code}")
    assert code in (0, 1, 2), err
    assert "Traceback" not in err
    if code == 2:
        assert after == before, f"exit 2 left a run behind: {err}"
        assert len([line for line in err.splitlines() if line.startswith("workbench: error:")]) == 1, err
    else:
        assert len(after) == len(before) + 1, err
        assert set(after) - set(before) <= {"FINISHED", "FAILED"} and "RUNNING" not in after, after
        assert after.count("FINISHED") - before.count("FINISHED") == (1 if code == 0 else 0)
