"""Checks every source shares: paths, finite values, labels, task inference.

Each raises a one-line `UserError` that names the file or source, the culprit
(column, rows, class) and the fix, so bad data stops a run before any training.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from workbench.errors import UserError

MAX_CLASSES = 50  # a target with more distinct values is a quantity, not a label
LISTED_ROWS = 5  # how many offending rows an error message lists


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """A '; did you mean X?' suffix for typos, or '' when nothing is close."""
    match = difflib.get_close_matches(word, list(choices), n=1)
    return f"; did you mean '{match[0]}'?" if match else ""


def require_file(path: str | Path | None, source: str) -> Path:
    """The path of a file source, or a UserError saying what is wrong with it."""
    if path is None or str(path) == "":
        raise UserError(f"data source '{source}' needs a path: set data.path to the file")
    file = Path(path)
    if not file.exists():
        siblings = [p.name for p in file.parent.iterdir()] if file.parent.is_dir() else []
        raise UserError(f"{path}: no such file{did_you_mean(file.name, siblings)}")
    if not file.is_file():
        raise UserError(f"{path}: is a directory, not a file: point data.path at the {source} file")
    if file.stat().st_size == 0:
        raise UserError(f"{path}: the file is empty")
    return file


def read_bytes(file: Path) -> bytes:
    """The file's bytes; an unreadable file is a user problem, not a crash."""
    try:
        return file.read_bytes()
    except OSError as error:
        raise UserError(f"{file}: cannot read it ({error.strerror or error})") from None


def raise_bad_values(
    origin: str, column: str, what: str, rows: np.ndarray, row_word: str, more_columns: int = 0
) -> None:
    """Raise the shared 'column has N bad values (rows ...)' error."""
    listed = ", ".join(str(r) for r in rows[:LISTED_ROWS]) + (", ..." if len(rows) > LISTED_ROWS else "")
    plural = "s" if len(rows) != 1 else ""
    more = f" (and {more_columns} more column{'s' if more_columns != 1 else ''})" if more_columns else ""
    raise UserError(
        f"{origin}: column '{column}' has {what} value{plural} ({row_word}{plural} {listed}){more}: "
        "clean or impute them first"
    )


def check_finite(
    values: np.ndarray,
    columns: Sequence[str],
    origin: str,
    row_labels: np.ndarray | None = None,
    row_word: str = "row",
) -> None:
    """Reject NaN and Inf, naming the first offending column, the count and the rows."""
    if values.dtype.kind not in "fc" or values.size == 0:
        return
    table = values.reshape(len(values), -1)
    bad = ~np.isfinite(table)
    if not bad.any():
        return
    bad_columns = np.flatnonzero(bad.any(axis=0))
    column = int(bad_columns[0])
    n_nan = int(np.isnan(table[:, column]).sum())
    n_inf = int(bad[:, column].sum()) - n_nan
    what = " and ".join(text for count, text in ((n_nan, f"{n_nan} NaN"), (n_inf, f"{n_inf} Inf")) if count)
    rows = np.flatnonzero(bad[:, column])
    labels = rows if row_labels is None else row_labels[rows]
    raise_bad_values(origin, columns[column], what, labels, row_word, len(bad_columns) - 1)


def is_text(y: np.ndarray) -> bool:
    return y.dtype.kind in "USO"


def infer_task(y: np.ndarray, origin: str, target: str) -> str:
    """Classification when the target is text, boolean, or integer-valued with few
    distinct values (<= MAX_CLASSES and fewer than half the rows); else regression."""
    if y.dtype.kind == "b":
        return "classification"
    n_distinct = len(np.unique(y))
    few = n_distinct <= MAX_CLASSES and n_distinct < len(y) / 2
    if is_text(y):
        if not few:
            raise UserError(
                f"{origin}: target '{target}' is text with {n_distinct} distinct values among {len(y)} rows, "
                f"too many to be classes (at most {MAX_CLASSES} and fewer than half the rows): "
                "give it numeric values for regression or group it into fewer classes"
            )
        return "classification"
    integer_valued = y.dtype.kind in "iu" or bool(np.all(np.isfinite(y) & (y == np.round(y))))
    return "classification" if integer_valued and few else "regression"


def encode_labels(y: np.ndarray, origin: str, names: Sequence | None = None) -> tuple[np.ndarray, tuple]:
    """Labels as consecutive int64 codes 0..K-1 and the original value (or name) of each code."""
    values, codes = np.unique(y, return_inverse=True)
    if len(values) < 2:
        shown = values[0].item() if len(values) else "none"
        raise UserError(
            f"{origin}: the target has a single class ({shown!r}); classification needs at least 2 classes"
        )
    classes = tuple(names[int(v)] if names is not None else v.item() for v in values)
    return codes.astype(np.int64).reshape(-1), classes


def check_class_sizes(codes: np.ndarray, classes: tuple, origin: str, val_fraction: float, own_test: bool) -> None:
    """Each stratified split needs 2 examples of every class in what it splits: 2 per class
    for a test split, 3 for test and validation splits (2 when the source has its own test set)."""
    splits = (0 if own_test else 1) + (1 if val_fraction > 0 else 0)
    if splits == 0:
        return
    need = splits + 1
    counts = np.bincount(codes, minlength=len(classes))
    smallest = int(np.argmin(counts))
    if counts[smallest] < need:
        names = "a stratified split needs" if splits == 1 else "stratified test and validation splits need"
        fix = "add examples of it or remove it" + (", or set val_fraction = 0" if val_fraction > 0 else "")
        count = int(counts[smallest])
        raise UserError(
            f"{origin}: class {classes[smallest]!r} has only {count} example{'s' if count != 1 else ''}; "
            f"{names} at least {need} per class: {fix}"
        )
