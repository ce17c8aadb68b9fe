"""Subsampling, train/validation/test splits and standardization.

Classification splits are stratified so every part keeps the class proportions;
everything is seeded so a seed gives the same arrays. Standardization is fitted on
the training part only, so validation and test scores are honest.
"""

from __future__ import annotations

import numpy as np

from workbench.errors import UserError


def subsample(y: np.ndarray, size: int, seed: int, stratified: bool, origin: str) -> np.ndarray:
    """Sorted indices of at most `size` examples; stratified keeps every class
    (at least 2 examples each, what the later splits need) and its proportion."""
    n = len(y)
    if size >= n:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    if not stratified:
        return np.sort(rng.choice(n, size=size, replace=False))
    codes = y
    counts = np.bincount(codes)
    minimum = np.minimum(counts, 2)
    if size < minimum.sum():
        raise UserError(
            f"{origin}: limit={size} is too small for {len(counts)} classes: "
            f"use limit >= {int(minimum.sum())} (2 examples per class)"
        )
    spare = counts - minimum
    quota = spare * ((size - minimum.sum()) / spare.sum())  # proportional share above the minimum
    take = np.floor(quota).astype(np.int64)
    leftover = size - int(minimum.sum()) - int(take.sum())
    take[np.argsort(take - quota, kind="stable")[:leftover]] += 1  # largest remainders
    take += minimum
    shuffled = rng.permutation(n)
    by_class = shuffled[np.argsort(codes[shuffled], kind="stable")]
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    rank = np.arange(n) - starts[codes[by_class]]
    return np.sort(by_class[rank < take[codes[by_class]]])


def split_off(
    X: np.ndarray, y: np.ndarray, fraction: float, *, seed: int, stratified: bool, origin: str, part: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(X_keep, y_keep, X_part, y_part) with `fraction` of the examples in the part;
    fraction 0 gives an empty part of the right shape."""
    if fraction == 0:
        return X, y, X[:0], y[:0]
    from sklearn.model_selection import train_test_split  # lazy: keeps `import workbench.data` fast

    try:
        X_keep, X_part, y_keep, y_part = train_test_split(
            X, y, test_size=fraction, random_state=seed, stratify=y if stratified else None
        )
    except ValueError as error:
        if stratified:
            counts = np.bincount(y)
            what = f"{len(y)} examples in {len(counts)} classes (the smallest has {counts.min()})"
            fix = f"add examples, use fewer classes or a larger {part}_fraction"
        else:
            what, fix = f"{len(y)} examples", f"add examples or change {part}_fraction"
        raise UserError(
            f"{origin}: cannot split off a {part} set of {fraction:g} from {what} ({error}): {fix}"
        ) from None
    return X_keep, y_keep, X_part, y_part


def fit_standardizer(X: np.ndarray, block: int = 8192) -> tuple[np.ndarray, np.ndarray]:
    """Column mean and std in float64, two passes over row blocks (no float64 copy of X).
    A constant column gets std 1, so it maps to 0 instead of NaN."""
    n = max(len(X), 1)
    mean = np.sum(X, axis=0, dtype=np.float64) / n
    squares = np.zeros(X.shape[1], dtype=np.float64)
    for start in range(0, len(X), block):
        centred = X[start : start + block] - mean
        squares += np.einsum("ij,ij->j", centred, centred)
    std = np.sqrt(squares / n)
    std[std == 0] = 1.0
    return mean, std
