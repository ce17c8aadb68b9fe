"""MNIST from the original IDX files in a directory the user names (no download).

IDX: a big-endian header, magic = (0, 0, type code, number of dimensions), one
uint32 size per dimension, then the values. MNIST images have magic 2051
(unsigned bytes, 3 dimensions: count, rows, columns), labels 2049 (1 dimension).
"""

from __future__ import annotations

import functools
import gzip
import zlib
from pathlib import Path

import numpy as np

from workbench.data.checks import read_bytes
from workbench.data.dataset import RawData, SourceOptions
from workbench.errors import UserError

IDX_TYPES = {0x08: "u1", 0x09: "i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
IMAGES_MAGIC, LABELS_MAGIC = 2051, 2049
# part -> (file stem, IDX dimensions); files may be named 'train-images-idx3-ubyte' or
# 'train-images.idx3-ubyte', plain or with '.gz'
MNIST_FILES = {
    "train_images": ("train-images", 3),
    "train_labels": ("train-labels", 1),
    "test_images": ("t10k-images", 3),
    "test_labels": ("t10k-labels", 1),
}


def _decompress(data: bytes, path: Path) -> bytes:
    """gunzip when the bytes start with the gzip signature, whatever the file is called."""
    if data[:2] != b"\x1f\x8b":
        return data
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as error:
        raise UserError(f"{path}: corrupt gzip data ({error}): download the file again") from None


def _parse_idx(path: Path) -> tuple[int, np.ndarray]:
    """(magic, array) of one IDX file, with its header checked against the file size."""
    data = _decompress(read_bytes(path), path)
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in IDX_TYPES or data[3] == 0:
        raise UserError(
            f"{path}: not an IDX file (bad magic number {data[:4].hex() or 'missing'}): "
            "the file is corrupt or not MNIST: download it again"
        )
    magic, ndim = int.from_bytes(data[:4], "big"), data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise UserError(f"{path}: IDX header truncated ({len(data)} bytes, needs {header})")
    shape = tuple(int(s) for s in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    dtype = np.dtype(IDX_TYPES[data[2]])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(data) - header != expected:
        raise UserError(
            f"{path}: IDX size mismatch: the header says shape {shape} ({expected} bytes of data) "
            f"but the file holds {len(data) - header}: the file is truncated or corrupt"
        )
    array = np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
    return magic, array if dtype.isnative else array.astype(dtype.newbyteorder("="))


def read_idx(path: str | Path) -> np.ndarray:
    """The array stored in an IDX file (gzipped or not), shaped as its header says.
    Unsigned-byte files come back as read-only views on the file's bytes (no copy)."""
    return _parse_idx(Path(path))[1]


def _find(directory: Path, stem: str, ndim: int) -> Path:
    for separator in "-.":
        for suffix in ("", ".gz"):
            candidate = directory / f"{stem}{separator}idx{ndim}-ubyte{suffix}"
            if candidate.is_file():
                return candidate
    raise UserError(
        f"{directory}: no {stem}-idx{ndim}-ubyte file (also tried '{stem}.idx{ndim}-ubyte' and '.gz'); "
        f"found {sorted(p.name for p in directory.iterdir())[:8] or 'nothing'}: point data.path at the MNIST folder"
    )


def _read_part(path: Path, magic_wanted: int, what: str) -> np.ndarray:
    magic, array = _parse_idx(path)
    if magic != magic_wanted:
        raise UserError(f"{path}: magic number {magic}, expected {magic_wanted} for {what}: wrong file?")
    return array


@functools.lru_cache(maxsize=4)
def _load_cached(files: tuple[Path, ...], stamps: tuple) -> tuple[np.ndarray, ...]:
    """Parse the four files once per process (about a second); `stamps` (mtime, size)
    make a changed file reload."""
    train_images, train_labels, test_images, test_labels = files
    arrays = []
    for images_path, labels_path in ((train_images, train_labels), (test_images, test_labels)):
        images = _read_part(images_path, IMAGES_MAGIC, "images")
        labels = _read_part(labels_path, LABELS_MAGIC, "labels")
        if len(images) != len(labels):
            raise UserError(
                f"{images_path}: {len(images)} images but {labels_path.name} has {len(labels)} labels: "
                "the files do not belong together"
            )
        arrays += [images.reshape(len(images), -1), labels]
    if arrays[0].shape[1] != arrays[2].shape[1]:
        raise UserError(
            f"{test_images}: images of {arrays[2].shape[1]} pixels but the training images have "
            f"{arrays[0].shape[1]}: the files do not belong together"
        )
    for array in arrays:
        array.flags.writeable = False  # shared by every caller through the cache
    return tuple(arrays)


def load_mnist_arrays(directory: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(X_train, y_train, X_test, y_test) as stored: uint8 pixels flattened to (n, rows*cols),
    uint8 labels. Cached per directory in-process; the arrays are read-only."""
    folder = Path(directory).expanduser()
    if not folder.is_dir():
        raise UserError(f"{directory}: not a directory: point data.path at the folder holding the MNIST IDX files")
    files = tuple(_find(folder.resolve(), stem, ndim) for stem, ndim in MNIST_FILES.values())
    stamps = tuple((f.stat().st_mtime_ns, f.stat().st_size) for f in files)
    return _load_cached(files, stamps)


def mnist(options: SourceOptions) -> RawData:
    if options.path is None:
        raise UserError("data source 'mnist' needs a path: set data.path to the folder holding the IDX files")
    X_train, y_train, X_test, y_test = load_mnist_arrays(options.path)
    side = int(round(np.sqrt(X_train.shape[1])))
    names = (
        tuple(f"pixel_{r}_{c}" for r in range(side) for c in range(side))
        if side * side == X_train.shape[1]
        else tuple(f"pixel_{i}" for i in range(X_train.shape[1]))
    )
    return RawData(
        "mnist", str(options.path), "classification", X_train, y_train, names, test=(X_test, y_test), x_divisor=255.0,
        sample_shape=(1, side, side) if side * side == X_train.shape[1] else None,
    )
