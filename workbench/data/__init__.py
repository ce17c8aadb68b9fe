"""Data for training runs: bundled, synthetic, MNIST (IDX) and user files (CSV, npz).

`load_dataset(source, ...)` returns a `Dataset` with stratified train / val / test
splits, labels encoded 0..K-1 and features standardized on the training part.
`SOURCES` is the registry the spec validates `data.source` against.
"""

from __future__ import annotations

from workbench.data.dataset import Dataset
from workbench.data.loader import SOURCES, load_dataset
from workbench.data.mnist import load_mnist_arrays, read_idx

__all__ = ["Dataset", "SOURCES", "load_dataset", "load_mnist_arrays", "read_idx"]
