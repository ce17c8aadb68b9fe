"""Subsampling, train/validation/test splits and standardization.

Classification splits are stratified so every part keeps the class proportions;
everything is seeded so a seed gives the same arrays. Standardization is fitted on
the training part only, so validation and test scores are honest.
"""

from __future__ import annotations

import math

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
    try:
        keep, taken = shuffle_split(y if stratified else None, len(y), fraction, seed)
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
    return X[keep], y[keep], X[taken], y[taken]


def shuffle_split(labels: np.ndarray | None, n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(kept, taken) indices, ceil(fraction * n) of them taken, stratified by `labels` unless None.

    The indices scikit-learn's `train_test_split(..., test_size=fraction, random_state=seed, stratify=labels)`
    gives (its ShuffleSplit and StratifiedShuffleSplit: the same draws from a `RandomState(seed)` in the same
    order; tests/test_data.py holds them to scikit-learn's and to stored values), so that every split made so far
    stays as it was, without importing scikit-learn (2 s of CPU in every process that loads a toy problem)."""
    n_taken = math.ceil(fraction * n)
    n_kept = n - n_taken
    if n_kept <= 0:
        raise ValueError(f"the rest would be empty ({n_taken} of {n} taken)")
    rng = np.random.RandomState(seed)
    if labels is None:
        order = rng.permutation(n)
        return order[n_taken:], order[:n_taken]
    _, codes, counts = np.unique(labels, return_inverse=True, return_counts=True)
    if counts.min() < 2:
        raise ValueError("a class has a single example; stratifying needs at least 2 per class")
    if min(n_kept, n_taken) < len(counts):
        raise ValueError(f"{min(n_kept, n_taken)} examples cannot hold each of {len(counts)} classes once")
    members = np.split(np.argsort(codes, kind="stable"), np.cumsum(counts)[:-1])
    kept_per_class = _proportional_counts(counts, n_kept, rng)
    taken_per_class = _proportional_counts(counts - kept_per_class, n_taken, rng)
    kept, taken = [], []
    for k, indices in enumerate(members):
        shuffled = indices.take(rng.permutation(counts[k]), mode="clip")
        kept.append(shuffled[: kept_per_class[k]])
        taken.append(shuffled[kept_per_class[k] : kept_per_class[k] + taken_per_class[k]])
    return rng.permutation(np.concatenate(kept)), rng.permutation(np.concatenate(taken))


def _proportional_counts(counts: np.ndarray, draws: int, rng: np.random.RandomState) -> np.ndarray:
    """How many of `draws` each class gets: its floored share, then one more for the classes with the largest
    remainders, ties broken at random (scikit-learn's `_approximate_mode`, draw for draw)."""
    share = counts / counts.sum() * draws
    floored = np.floor(share)
    missing = int(draws - floored.sum())
    remainder = share - floored
    for value in np.unique(remainder)[::-1]:
        if missing <= 0:
            break
        (tied,) = np.where(remainder == value)
        chosen = rng.choice(tied, size=min(len(tied), missing), replace=False)
        floored[chosen] += 1
        missing -= len(chosen)
    return floored.astype(int)


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
