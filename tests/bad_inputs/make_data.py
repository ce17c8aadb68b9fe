"""Regenerate the binary files of the bad-input corpus (npz, IDX): python tests/bad_inputs/make_data.py.

The text files (CSV, TOML) are written by hand; this script only makes the binary ones,
deterministically, so they can be reviewed as code rather than as bytes.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parent / "data"


def good(n: int = 40, d: int = 3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.standard_normal((n, d)), np.arange(n) % 2


def idx(path: Path, magic: bytes, shape: tuple[int, ...], payload: bytes | None = None) -> None:
    header = magic + b"".join(struct.pack(">I", s) for s in shape)
    body = payload if payload is not None else bytes(int(np.prod(shape)))
    path.write_bytes(header + body)


def main() -> None:
    DATA.mkdir(exist_ok=True)
    X, y = good()
    X_nan = X.copy()
    X_nan[[3, 7], 1] = np.nan
    np.savez(DATA / "nan_in_X.npz", X=X_nan, y=y)
    X_inf = X.copy()
    X_inf[5, 0] = np.inf
    np.savez(DATA / "inf_in_X.npz", X=X_inf, y=y)
    np.savez(DATA / "X_3d.npz", X=X.reshape(40, 3, 1), y=y)
    np.savez(DATA / "y_length_mismatch.npz", X=X, y=y[:-5])
    np.savez(DATA / "no_y.npz", X=X, labels=y)
    np.savez(DATA / "fractional_labels.npz", X=X, y=(np.arange(40) % 4) + 0.5 + np.arange(40) * 0.01)
    np.savez(DATA / "text_X.npz", X=np.array([["a", "b", "c"]] * 40), y=y)
    np.savez(DATA / "negative_labels.npz", X=X, y=(np.arange(40) % 3) - 1)  # -1, 0, 1: valid, encoded
    np.save(DATA / "single_array.npy", X)
    (DATA / "single_array.npz").write_bytes((DATA / "single_array.npy").read_bytes())
    (DATA / "single_array.npy").unlink()
    (DATA / "not_a_zip.npz").write_bytes(b"PK\x03\x04 this is not really a zip archive")

    # MNIST folders: one with no IDX files, one with a bad magic number, one truncated.
    (DATA / "mnist_no_idx").mkdir(exist_ok=True)
    (DATA / "mnist_no_idx" / "README.txt").write_text("deliberately holds no IDX files\n")
    for folder, images_magic in (("mnist_bad_magic", b"\x12\x34\x08\x03"), ("mnist_truncated", None)):
        d = DATA / folder
        d.mkdir(exist_ok=True)
        for split, n in (("train", 12), ("t10k", 6)):
            if images_magic is not None:
                idx(d / f"{split}-images-idx3-ubyte", images_magic, (n, 2, 2))
            else:
                idx(d / f"{split}-images-idx3-ubyte", b"\x00\x00\x08\x03", (n, 2, 2), bytes(n * 4 - 3))
            idx(d / f"{split}-labels-idx1-ubyte", b"\x00\x00\x08\x01", (n,), bytes(np.arange(n, dtype=np.uint8) % 2))
    d = DATA / "mnist_labels_as_images"  # both files valid IDX, but the images file holds labels
    d.mkdir(exist_ok=True)
    for split, n in (("train", 12), ("t10k", 6)):
        idx(d / f"{split}-images-idx3-ubyte", b"\x00\x00\x08\x01", (n,), bytes(n))
        idx(d / f"{split}-labels-idx1-ubyte", b"\x00\x00\x08\x01", (n,), bytes(n))


if __name__ == "__main__":
    main()
