"""The bad-input corpus (tests/bad_inputs/): every malformed spec or data file exits 2 with one line.

Each case in tests/bad_inputs/cases.toml runs `workbench run` with tracking ON (a fresh
sqlite store per case) and must give exit code 2, exactly one line on stderr that holds
the expected culprit (and fix), no traceback, and no MLflow run left behind. The cases run
in-process through `workbench.cli.main` for speed; a few also run as real subprocesses to
prove the exit code and stderr of the installed command.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest
from support import DEADLINE_S

from workbench.cli import main

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO / "tests" / "bad_inputs"
CASES = tomllib.loads((CORPUS / "cases.toml").read_text())["case"]
VALID = "tests/bad_inputs/valid_tiny.toml"


def case_id(case: dict) -> str:
    name = Path(case["spec"]).stem
    return name + ("[" + ",".join(case["set"]) + "]" if case.get("set") else "")


def count_runs(db: Path) -> int:
    """Runs in a sqlite MLflow store; 0 when the store was never created."""
    if not db.exists():
        return 0
    with sqlite3.connect(db) as connection:
        tables = {row[0] for row in connection.execute("select name from sqlite_master where type='table'")}
        return connection.execute("select count(*) from runs").fetchone()[0] if "runs" in tables else 0


def argv(case: dict, db: Path) -> list[str]:
    overrides = [arg for text in case.get("set", []) for arg in ("--set", text)]
    return ["run", case["spec"], *overrides, "--tracking-uri", f"sqlite:///{db}", "--quiet"]


def assert_one_line(code: int, stderr: str, case: dict, db: Path) -> None:
    lines = stderr.strip().splitlines()
    assert code == 2, f"exit {code}, stderr: {stderr}"
    assert "Traceback" not in stderr
    assert len(lines) == 1, f"expected one line, got {len(lines)}: {stderr}"
    for expected in case["expect"]:
        assert expected in lines[0], f"{expected!r} not in {lines[0]!r}"
    assert lines[0].startswith("workbench: error: ")
    assert count_runs(db) == 0, "a rejected input left an MLflow run behind"


@pytest.fixture
def in_repo(monkeypatch):
    monkeypatch.chdir(REPO)  # the corpus' relative paths start at the repository root


@pytest.mark.parametrize("case", CASES, ids=[case_id(c) for c in CASES])
def test_bad_input_exits_2_with_one_line_and_no_run(case, in_repo, tmp_path, capsys):
    db = tmp_path / "mlflow.db"
    code = main(argv(case, db))
    captured = capsys.readouterr()
    assert_one_line(code, captured.err, case, db)
    assert captured.out == ""


SUBPROCESS_CASES = [c for c in CASES if Path(c["spec"]).stem in
                    {"lr_zero", "toml_syntax_error", "csv_nan", "npz_X_3d", "mnist_bad_magic", "empty"}]


@pytest.mark.parametrize("case", SUBPROCESS_CASES, ids=[case_id(c) for c in SUBPROCESS_CASES])
def test_bad_input_as_a_real_command(case, tmp_path):
    db = tmp_path / "mlflow.db"
    proc = subprocess.run([sys.executable, "-m", "workbench", *argv(case, db)], cwd=REPO,
                          capture_output=True, text=True, timeout=DEADLINE_S)
    assert_one_line(proc.returncode, proc.stderr, case, db)


def test_every_corpus_spec_is_a_case():
    """A spec file added to the corpus without a manifest entry would never be checked."""
    listed = {c["spec"] for c in CASES}
    on_disk = {str(p.relative_to(REPO)) for p in (CORPUS / "specs").glob("*.toml")}
    assert on_disk - listed == set()
    assert len(CASES) >= 30


def test_the_valid_base_runs(in_repo, tmp_path, capsys):
    """The --set cases fail because of their override, not because the base is broken."""
    assert main(["run", VALID, "--no-track", "--quiet"]) == 0


def test_unreadable_data_file(in_repo, tmp_path, capsys):
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        pytest.skip("root reads files whatever their mode")
    data = tmp_path / "locked.csv"
    data.write_text((CORPUS / "data" / "good.csv").read_text())
    data.chmod(0)
    spec = tmp_path / "spec.toml"
    spec.write_text(f'[data]\nsource = "csv"\npath = "{data}"\ntarget = "label"\n')
    db = tmp_path / "mlflow.db"
    code = main(["run", str(spec), "--tracking-uri", f"sqlite:///{db}", "--quiet"])
    assert_one_line(code, capsys.readouterr().err, {"expect": ["locked.csv", "cannot read it"]}, db)


def test_unreadable_spec_file(in_repo, tmp_path, capsys):
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        pytest.skip("root reads files whatever their mode")
    spec = tmp_path / "spec.toml"
    spec.write_text((CORPUS / "valid_tiny.toml").read_text())
    spec.chmod(0)
    db = tmp_path / "mlflow.db"
    code = main(["run", str(spec), "--tracking-uri", f"sqlite:///{db}", "--quiet"])
    assert_one_line(code, capsys.readouterr().err, {"expect": ["spec.toml", "permission denied"]}, db)


def test_negative_labels_are_encoded_not_rejected():
    """Documented behaviour: class labels are any distinct values (here -1, 0, 1); they are
    encoded as 0..K-1 and the originals kept in `classes`. Only non-integer labels make a
    regression target (and then a classification loss is rejected, see npz_fractional_labels)."""
    from workbench.data import load_dataset

    data = load_dataset("npz", path=str(CORPUS / "data" / "negative_labels.npz"))
    assert data.task == "classification" and data.classes == (-1, 0, 1)
    assert set(np.unique(data.y_train)) <= {0, 1, 2}


def test_study_over_a_key_that_does_not_exist(in_repo, tmp_path, capsys):
    """A search space over an unknown key is refused before any storage or run exists."""
    from workbench.studies import Float, Study

    study = Study(name="bad-space", base=VALID, space={"optimizer.learning_rate": Float(1e-4, 1e-1, log=True)},
                  metric="val/accuracy", direction="maximize", seeds=1, n_trials=1)
    db = tmp_path / "mlflow.db"
    journal = tmp_path / "optuna.journal"
    code = study.cli(["--tracking-uri", f"sqlite:///{db}", "--storage", str(journal), "--quiet"])
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert "optimizer.learning_rate" in lines[0] and "optimizer.lr" in lines[0]
    assert count_runs(db) == 0 and not journal.exists()
