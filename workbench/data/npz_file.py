"""Arrays saved with `np.savez(path, X=X, y=y)` (optionally `feature_names=`), read without pickle."""

from __future__ import annotations

import zipfile

import numpy as np

from workbench.data.checks import infer_task, require_file
from workbench.data.dataset import RawData, SourceOptions
from workbench.errors import UserError

HOW_TO_SAVE = "save it with np.savez(path, X=X, y=y)"


def _read(file: str, keys: tuple[str, ...]) -> dict[str, np.ndarray]:
    try:
        archive = np.load(file, allow_pickle=False)
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise UserError(f"{file}: holds a single array, not X and y: {HOW_TO_SAVE}")
        with archive:
            missing = [key for key in ("X", "y") if key not in archive.files]
            if missing:
                raise UserError(
                    f"{file}: no array named '{missing[0]}' (it holds {', '.join(archive.files) or 'nothing'}): "
                    f"{HOW_TO_SAVE}"
                )
            return {key: archive[key] for key in keys if key in archive.files}
    except ValueError as error:  # object arrays need pickle, which we refuse
        raise UserError(f"{file}: cannot read it without pickle ({error}): store numeric or string arrays") from None
    except (zipfile.BadZipFile, EOFError, OSError) as error:
        raise UserError(f"{file}: not a readable npz archive ({error}): {HOW_TO_SAVE}") from None


def load_npz(options: SourceOptions) -> RawData:
    file = require_file(options.path, "npz")
    origin = str(options.path)
    arrays = _read(str(file), ("X", "y", "feature_names"))
    X, y = arrays["X"], arrays["y"]
    sample_shape = None
    if X.ndim == 4 and X.size:  # images (N, C, H, W): kept flat until a model asks for their shape
        sample_shape = tuple(int(s) for s in X.shape[1:])
        X = X.reshape(len(X), -1)
    if X.ndim != 2:
        raise UserError(f"{origin}: X has shape {X.shape}, expected 2-D (examples, features) or 4-D images "
                        "(examples, channels, height, width): reshape it")
    if y.ndim not in (1, 2):
        raise UserError(f"{origin}: y has shape {y.shape}, expected (n,) labels or (n, targets)")
    if len(X) != len(y):
        raise UserError(f"{origin}: X has {len(X)} rows but y has {len(y)}: they must match one to one")
    if len(X) == 0 or X.shape[1] == 0:
        raise UserError(f"{origin}: X has shape {X.shape}: no examples or no features")
    if X.dtype.kind not in "biuf":
        raise UserError(f"{origin}: X has dtype {X.dtype}, expected numbers: encode it as numbers")
    names = arrays.get("feature_names")
    if names is not None and names.shape == (X.shape[1],):
        feature_names = tuple(str(n) for n in names)
    else:
        feature_names = tuple(f"x{i}" for i in range(X.shape[1]))
    X = X.astype(np.float64)
    if y.dtype.kind == "S":
        y = y.astype(str)
    if y.ndim == 2 or infer_task(y, origin, "y") == "regression":
        if y.dtype.kind not in "biuf":
            raise UserError(f"{origin}: y has dtype {y.dtype}: regression targets must be numbers")
        y2 = y.astype(np.float64).reshape(len(y), -1)
        targets = tuple(f"y{i}" for i in range(y2.shape[1])) if y2.shape[1] > 1 else ("y",)
        return RawData(file.name, origin, "regression", X, y2, feature_names, target_names=targets,
                       sample_shape=sample_shape)
    return RawData(file.name, origin, "classification", X, y, feature_names, target_names=("y",),
                   sample_shape=sample_shape)
