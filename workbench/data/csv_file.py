"""A CSV table with a header: numeric feature columns and one target column.

Read with the standard library's csv module and converted column-wise with numpy.
Errors point at the file line (line 1 is the header), as an editor shows it.
"""

from __future__ import annotations

import csv
import io

import numpy as np

from workbench.data.checks import did_you_mean, infer_task, raise_bad_values, read_bytes, require_file
from workbench.data.dataset import RawData, SourceOptions
from workbench.errors import UserError

MISSING = ("", "na", "n/a", "nan", "null", "none", "?")  # cells read as missing (NaN)
DELIMITERS = ",;\t"


def _rows(text: str, origin: str) -> tuple[list[str], list[list[str]], np.ndarray]:
    """Header, data rows and the file line of each row; blank lines are skipped."""
    first_line = text.split("\n", 1)[0]
    delimiter = max(DELIMITERS, key=first_line.count)  # ',' unless ';' or tabs dominate the header
    reader = csv.reader(io.StringIO(text), delimiter=delimiter)
    header = [name.strip() for name in next(reader)]
    rows, lines = [], []
    for row in reader:
        if not row or all(not cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            raise UserError(
                f"{origin}: line {reader.line_num} has {len(row)} fields but the header has {len(header)}: "
                "fix that line (a stray delimiter or quote?)"
            )
        rows.append(row)
        lines.append(reader.line_num)
    return header, rows, np.asarray(lines)


def _missing(cells: np.ndarray) -> np.ndarray:
    return np.isin(np.char.lower(cells), MISSING)


def _first_non_number(cells: np.ndarray, missing: np.ndarray) -> tuple[int, int]:
    """(row, column) of the first cell that is neither a number nor missing (slow path, errors only)."""
    for column in range(cells.shape[1]):
        for row in range(cells.shape[0]):
            if not missing[row, column]:
                try:
                    float(cells[row, column])
                except ValueError:
                    return row, column
    raise AssertionError("no bad cell found")


def _target(cells: np.ndarray, lines: np.ndarray, origin: str, name: str) -> tuple[str, np.ndarray]:
    """(task, y) from the target column: numbers when they all parse, else text labels."""
    missing = _missing(cells)
    if missing.any():
        raise_bad_values(origin, name, f"{int(missing.sum())} NaN/missing", lines[missing], "line")
    try:
        y = cells.astype(np.float64)
    except ValueError:
        y = cells
    task = infer_task(y, origin, name)
    if task == "classification" and y.dtype.kind == "f":
        y = y.astype(np.int64)  # integer-valued floats such as '1.0' are the labels 1
    return task, y if task == "classification" else y.reshape(-1, 1)


def load_csv(options: SourceOptions) -> RawData:
    file = require_file(options.path, "csv")
    origin = str(options.path)
    try:
        text = read_bytes(file).decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise UserError(f"{origin}: not UTF-8 text (byte {error.start}): save the CSV as UTF-8") from None
    if not text.strip():
        raise UserError(f"{origin}: the file is empty")
    header, rows, lines = _rows(text, origin)
    duplicates = sorted({name for name in header if header.count(name) > 1})
    if duplicates:
        raise UserError(f"{origin}: duplicate column name '{duplicates[0]}' in the header: rename one")
    if options.target is None:
        raise UserError(f"{origin}: set data.target to the label column; columns: {', '.join(header)}")
    if options.target not in header:
        raise UserError(
            f"{origin}: no target column '{options.target}'; columns: {', '.join(header)}"
            f"{did_you_mean(options.target, header)}"
        )
    if not rows:
        raise UserError(f"{origin}: the header has no data rows below it")
    if len(header) < 2:
        raise UserError(f"{origin}: only the target column '{options.target}', no feature columns")
    cells = np.char.strip(np.asarray(rows, dtype=str))
    target_index = header.index(options.target)
    feature_names = tuple(name for i, name in enumerate(header) if i != target_index)
    features = np.delete(cells, target_index, axis=1)
    missing = _missing(features)
    try:
        X = np.where(missing, "nan", features).astype(np.float64)
    except ValueError:
        row, column = _first_non_number(features, missing)
        raise UserError(
            f"{origin}: column '{feature_names[column]}' is not numeric: line {lines[row]} holds "
            f"{str(features[row, column])!r}: encode it as numbers or drop the column"
        ) from None
    if missing.any():
        column = int(np.flatnonzero(missing.any(axis=0))[0])
        extra = int(missing.any(axis=0).sum()) - 1
        rows_missing = lines[missing[:, column]]
        raise_bad_values(
            origin, feature_names[column], f"{len(rows_missing)} NaN/missing", rows_missing, "line", extra
        )
    task, y = _target(cells[:, target_index], lines, origin, options.target)
    name = file.name
    return RawData(
        name, origin, task, X, y, feature_names, target_names=(options.target,), row_labels=lines, row_word="line"
    )
