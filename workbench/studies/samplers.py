"""Samplers and pruners of a study, by name: "tpe", "random", "qmc"; "median", "hyperband", "none".

"qmc" is `SobolSampler`: scrambled Sobol points (scipy.stats.qmc) over the space, the i-th trial of
a study taking the i-th point. With few trials it covers the range evenly where random draws leave
gaps (8 points on a log learning-rate axis fall one in each eighth of it), and it is the same for
every study with the same seed: in a comparison every arm tries the same learning rates, whatever
the other arms found and whichever worker asks. Retries (trials enqueued with fixed parameters)
take no point.
"""

from __future__ import annotations

import math
import warnings

import optuna


def build_sampler(study, settings, worker_index: int, n_existing: int):
    """The study's sampler; TPE and random are seeded per worker and per resume so that workers do not
    propose the same points; "qmc" is seeded by --sampler-seed alone (its points are indexed by trial)."""
    if not isinstance(study.sampler, str):
        return study.sampler
    if study.sampler == "qmc":
        return SobolSampler(study.space, seed=settings.sampler_seed)
    seed = settings.sampler_seed * 1_000_003 + worker_index * 7919 + n_existing
    if study.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, constant_liar=True)


def build_pruner(study, settings):
    """The study's pruner. In a comparison each arm is its own Optuna study, so a pruner compares a
    trial only with the trials of its own arm."""
    if not isinstance(study.pruner, str):
        return study.pruner
    epochs = settings.base.training.epochs
    if study.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=max(1, epochs // 3))
    if study.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=epochs * settings.seeds, reduction_factor=3)
    return optuna.pruners.NopPruner()


def distribution(dimension):
    """The Optuna distribution `dimension.suggest` asks for (same type, bounds and choices)."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    from workbench.studies.space import Categorical, Float

    if isinstance(dimension, Categorical):
        return CategoricalDistribution(dimension.labels())
    if isinstance(dimension, Float):
        return FloatDistribution(dimension.low, dimension.high, log=dimension.log, step=dimension.step)
    return IntDistribution(dimension.low, dimension.high, log=dimension.log, step=dimension.step)


def from_unit(dist, u: float):
    """The value at quantile `u` in [0, 1) of a distribution (log-uniform for log scales)."""
    from optuna.distributions import CategoricalDistribution, IntDistribution

    if isinstance(dist, CategoricalDistribution):
        return dist.choices[min(int(u * len(dist.choices)), len(dist.choices) - 1)]
    low, high = float(dist.low), float(dist.high)
    if dist.log:
        value = math.exp(math.log(low) + u * (math.log(high) - math.log(low)))
    elif dist.step is not None:
        steps = int(round((high - low) / dist.step))
        value = low + min(int(u * (steps + 1)), steps) * dist.step
    else:
        value = low + u * (high - low)
    if isinstance(dist, IntDistribution):
        return int(min(max(round(value), dist.low), dist.high)) if dist.log else int(value)
    return min(max(value, low), high)


def sobol_point(dimensions: int, seed: int, index: int) -> list[float]:
    """The `index`-th point of the scrambled Sobol sequence of `seed` (the same for every caller)."""
    from scipy.stats import qmc

    m = max(0, math.ceil(math.log2(index + 1)))
    points = qmc.Sobol(d=dimensions, scramble=True, seed=seed).random_base2(m)
    return [float(x) for x in points[index]]


class SobolSampler(optuna.samplers.BaseSampler):
    """Scrambled Sobol points over a workbench search space; trial i of a study gets point i."""

    def __init__(self, space: dict, seed: int = 0) -> None:
        self.space, self.seed = dict(space), int(seed)
        self._distributions = {key: distribution(d) for key, d in self.space.items()}
        self._fallback = optuna.samplers.RandomSampler(seed=seed)

    def infer_relative_search_space(self, study, trial) -> dict:
        return dict(self._distributions)

    def sample_relative(self, study, trial, search_space: dict) -> dict:
        if not search_space:
            return {}
        earlier = [t for t in study.get_trials(deepcopy=False) if t.number < trial.number]
        index = sum("fixed_params" not in t.system_attrs for t in earlier)  # retries take no point
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            u = sobol_point(len(search_space), self.seed, index)
        return {key: from_unit(dist, u[j]) for j, (key, dist) in enumerate(search_space.items())}

    def sample_independent(self, study, trial, param_name, param_distribution):
        return self._fallback.sample_independent(study, trial, param_name, param_distribution)
