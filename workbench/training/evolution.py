"""Gradient-free training: a genetic algorithm and an evolution strategy, as `[optimizer]` choices.

    [optimizer]
    name = "genetic"               # or "evolution_strategy"
    population = 50                # weight vectors evaluated per generation
    mutation_scale = 0.005         # genetic: std of the Gaussian mutation
    crossover_rate = 0.5           # genetic: fraction of children made by crossover
    sigma = 0.05                   # evolution_strategy: std of the perturbations
    lr = 1e-3                      # evolution_strategy: Adam's learning rate (schedules apply)

Both train the same model on the same data with the same trainer, hooks, early stopping,
checkpoints, tracking and studies as backpropagation. `training.epochs` and
`training.batch_size` keep their meaning: each generation evaluates the population on one
mini-batch, so an epoch is as many generations as there are batches. Fitness is the negative
training loss on that batch, from forward passes only (`workbench.training.population`:
vectorized across the population for dense-only models, a loop over members otherwise).

The trainer seam (`Trainer`, an optimizer with `uses_gradients = False`): per batch,
`output, loss = optimizer.evaluate(model, loss_fn, xb, yb)` evaluates the population and
returns the forward pass of the model being trained (what the hooks read: `train/loss`,
activation statistics), then `optimizer.step(grads)` makes the next generation and moves the
model, leaving the step it took, p_before - p_after, in `grads` (as every workbench optimizer
does, so the update ratio is measured the same way). There is no backward pass:
`on_after_backward` is not called, so clipping, the gradient NaN check and every statistic
that needs a gradient (grad_norm, backprop_norm, grad_norm_global) stay NaN in the record:
absent, not zero. `EvolutionStats` fills in what needs no gradient (weight_norm,
update_ratio) and records the fitness of each generation (`fitness_best`, `fitness_mean`,
`fitness_spread` in the record; their epoch means as `fitness/best`, `fitness/mean`,
`fitness/spread` in the epoch logs and MLflow).

- Genetic algorithm (`genetic`): member 0 starts as the spec's initialization, the others draw
  each tensor from a normal distribution with that tensor's initial standard deviation. Each
  generation keeps the best `ELITE_FRACTION` unchanged (elitism; they are evaluated again on
  the next batch), and fills the rest with children of parents chosen by tournaments of
  `TOURNAMENT` members: with probability `crossover_rate` a uniform crossover of two parents
  (each weight from either, Syswerda 1989), else a copy of one, plus Gaussian mutation
  N(0, mutation_scale^2) on every weight. The model holds the best member of the last
  evaluated generation.
- Evolution strategy (`evolution_strategy`, Salimans, Ho, Chen, Sidor & Sutskever 2017): the
  model's weights are the mean theta; each generation draws population // 2 directions eps_i
  and evaluates theta +- sigma eps_i (antithetic sampling), turns the 2k fitness values into
  centered ranks in [-0.5, 0.5] (fitness shaping), estimates the gradient of the fitness as
  sum_i (r_i+ - r_i-) eps_i / (2k sigma), and takes an Adam step on it (Kingma & Ba 2015,
  with `optimizer.lr`, `beta1`, `beta2`, `eps`, `weight_decay` and `schedule` as for `adam`).
  An odd population evaluates population - 1 perturbations.

Memory: the genetic algorithm holds two (population, parameters) matrices, the evolution
strategy one (population // 2, parameters) matrix of directions.

State for checkpoints (`state_dict` / `load_state_dict`, flat numpy arrays): the genetic
algorithm's population, its last fitness and its random generator; the evolution strategy's
Adam state and random generator; a resumed run continues bit for bit.
"""

from __future__ import annotations

import json
import math

import numpy as np

from workbench.errors import UserError
from workbench.training.hooks import Hook
from workbench.training.population import PopulationForward

GRADIENT_FREE = ("genetic", "evolution_strategy")
ELITE_FRACTION = 0.1  # of the population kept unchanged each generation (at least one)
TOURNAMENT = 3  # members per tournament


def _rng_state(rng: np.random.Generator) -> np.ndarray:
    return np.array(json.dumps(rng.bit_generator.state))


def _check_state(state: dict, expected: set[str], what: str) -> None:
    if set(state) != expected:
        missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
        raise UserError(f"optimizer state does not match this {what} (missing: {', '.join(missing) or 'none'}; "
                        f"unexpected: {', '.join(unexpected) or 'none'}): resume with the optimizer the "
                        "checkpoint was made with")


class GradientFree:
    """Shared by both: the population layout, the forward pass for the hooks, the last fitness values."""

    uses_gradients = False  # the trainer calls evaluate() and step(), and no backward pass
    leaves_step_in_grads = True  # after step(), grads hold p_before - p_after
    name = "gradient_free"

    def __init__(self, model, population: int, rng: np.random.Generator) -> None:
        if int(population) < 2:
            raise UserError(f"optimizer.population = {population} is too small: a population needs at least 2 "
                            "members (e.g. optimizer.population = 50)")
        self.model = model
        self.population = int(population)
        self.rng = rng
        self.forward = PopulationForward(model)
        self.params = self.forward.params
        self.step_count = 0
        self.fitness = np.full(self.population, np.nan)  # of the last evaluated generation (-loss)
        self.forward_passes = 0  # member evaluations on a batch (one per member and generation)

    def lr(self) -> float:
        return math.nan

    def fitness_summary(self) -> tuple[float, float, float]:
        """(best, mean, spread = standard deviation) of the last generation's fitness, non-finite ones left out."""
        f = self.fitness[np.isfinite(self.fitness)]
        if not f.size:
            return math.nan, math.nan, math.nan
        return float(f.max()), float(f.mean()), float(f.std())

    def _model_forward(self, model, loss, xb, yb):
        output = model.forward(xb, training=True)
        return output, loss(output, yb)[0]

    def _moved_to(self, vector: np.ndarray, grads: dict[str, np.ndarray]) -> None:
        """Move the model to `vector`, leaving p_before - p_after in `grads`."""
        for key, shape, a, b in zip(self.forward.keys, self.forward.shapes, self.forward.offsets[:-1],
                                    self.forward.offsets[1:]):
            param, new = self.params[key], vector[a:b].reshape(shape)
            step = grads.get(key)
            if step is not None:
                np.subtract(param, new, out=step)
            param[...] = new


class GeneticAlgorithm(GradientFree):
    """Tournament selection, uniform crossover, Gaussian mutation and elitism over flat weight vectors."""

    name = "genetic"

    def __init__(self, model, *, population: int = 50, mutation_scale: float = 0.005, crossover_rate: float = 0.5,
                 rng: np.random.Generator | None = None) -> None:
        super().__init__(model, population, rng if rng is not None else np.random.default_rng(0))
        self.mutation_scale = float(mutation_scale)
        self.crossover_rate = float(crossover_rate)
        self.elite = max(1, int(round(ELITE_FRACTION * self.population)))
        P, n, fwd = self.population, self.forward.size, self.forward
        self.members = np.empty((P, n), fwd.dtype)
        fwd.flatten(out=self.members[0])
        for key, a, b in zip(fwd.keys, fwd.offsets[:-1], fwd.offsets[1:]):
            std = float(np.std(self.members[0, a:b]))
            self.members[1:, a:b] = self.rng.normal(0.0, std, (P - 1, b - a)) if std > 0 else self.members[0, a:b]
        self._children = np.empty_like(self.members)

    def evaluate(self, model, loss, xb, yb):
        """Fitness of every member on the batch; returns the model's own output and loss on it."""
        self.fitness = -self.forward.losses(self.members, loss, xb, yb)
        self.forward_passes += self.population
        return self._model_forward(model, loss, xb, yb)

    def step(self, grads: dict[str, np.ndarray]) -> None:
        """The next generation from the last evaluated one; the model becomes its best member."""
        P, n, rng = self.population, self.forward.size, self.rng
        fitness = np.where(np.isfinite(self.fitness), self.fitness, -np.inf)
        order = np.argsort(-fitness, kind="stable")
        children, members = self._children, self.members
        e = self.elite
        children[:e] = members[order[:e]]
        k = P - e
        if k:
            first, second = self._tournament(fitness, k), self._tournament(fitness, k)
            crossed = np.flatnonzero(rng.random(k) < self.crossover_rate)
            np.take(members, first, axis=0, out=children[e:])
            if len(crossed):  # uniform crossover: each weight from the second parent with probability 1/2
                rows = children[e + crossed]
                np.copyto(rows, members[second[crossed]], where=rng.random((len(crossed), n), np.float32) < 0.5)
                children[e + crossed] = rows
            noise = rng.standard_normal((k, n), dtype=np.float32 if members.dtype == np.float32 else np.float64)
            noise *= members.dtype.type(self.mutation_scale)
            children[e:] += noise
        self.members, self._children = children, members
        self._moved_to(self.members[0], grads)  # the best member of the generation just evaluated
        self.step_count += 1

    def _tournament(self, fitness: np.ndarray, k: int) -> np.ndarray:
        """k winners of tournaments of TOURNAMENT members drawn with replacement."""
        entrants = self.rng.integers(0, self.population, (k, TOURNAMENT))
        return entrants[np.arange(k), fitness[entrants].argmax(axis=1)]

    def state_dict(self) -> dict[str, np.ndarray]:
        return {"step": np.asarray(self.step_count, np.int64), "genetic.members": self.members.copy(),
                "genetic.fitness": self.fitness.copy(), "genetic.rng": _rng_state(self.rng),
                "genetic.forward_passes": np.asarray(self.forward_passes, np.int64)}

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        _check_state(state, set(self.state_dict()), "genetic algorithm")
        members = np.asarray(state["genetic.members"])
        if members.shape != self.members.shape:
            raise UserError(f"optimizer state 'genetic.members' has shape {members.shape}, expected "
                            f"{self.members.shape}: resume with the population and model the checkpoint was made with")
        self.members[...] = members
        self.fitness = np.array(state["genetic.fitness"], dtype=np.float64)
        self.rng.bit_generator.state = json.loads(str(state["genetic.rng"]))
        self.step_count = int(state["step"])
        self.forward_passes = int(state["genetic.forward_passes"])

    def __repr__(self) -> str:
        return (f"GeneticAlgorithm(population={self.population}, mutation_scale={self.mutation_scale:g}, "
                f"crossover_rate={self.crossover_rate:g}, elite={self.elite}, step_count={self.step_count})")


class EvolutionStrategy(GradientFree):
    """Salimans et al. 2017: antithetic Gaussian perturbations, centered-rank fitness shaping, an Adam step."""

    name = "evolution_strategy"

    def __init__(self, model, *, population: int = 50, sigma: float = 0.05, adam=None,
                 rng: np.random.Generator | None = None) -> None:
        super().__init__(model, population, rng if rng is not None else np.random.default_rng(0))
        self.sigma = float(sigma)
        self.pairs = self.population // 2
        if adam is None:
            from workbench.nn.optim import build_optimizer

            adam = build_optimizer(self.params, "adam", lr=1e-3)
        self.adam = adam  # a workbench Optimizer over the model's parameters
        n, dtype = self.forward.size, self.forward.dtype
        self._eps = np.empty((self.pairs, n), dtype)
        self._candidates = np.empty((2 * self.pairs, n), dtype)
        self._gradient = np.empty(n, dtype)
        self.forward.flatten()  # checks the layout once

    def lr(self) -> float:
        return self.adam.lr()

    def evaluate(self, model, loss, xb, yb):
        k, sigma = self.pairs, self.sigma
        theta = self.forward.flatten()
        self._eps[...] = self.rng.standard_normal(self._eps.shape, dtype=self._eps.dtype)
        scaled = self._candidates[:k]
        np.multiply(self._eps, self._eps.dtype.type(sigma), out=scaled)
        np.subtract(theta, scaled, out=self._candidates[k:])
        scaled += theta
        self.fitness = -self.forward.losses(self._candidates, loss, xb, yb)
        self.forward_passes += 2 * k
        return self._model_forward(model, loss, xb, yb)

    def step(self, grads: dict[str, np.ndarray]) -> None:
        """An Adam step on the estimated loss gradient; grads end holding the step taken."""
        k = self.pairs
        shaped = centered_ranks(self.fitness)
        weights = (shaped[:k] - shaped[k:]) / (2 * k * self.sigma)  # fitness gradient along each direction
        np.matmul(weights.astype(self._eps.dtype), self._eps, out=self._gradient)
        self._gradient *= -1.0  # the loss gradient: Adam descends
        fwd = self.forward
        for key, shape, a, b in zip(fwd.keys, fwd.shapes, fwd.offsets[:-1], fwd.offsets[1:]):
            grads[key][...] = self._gradient[a:b].reshape(shape)
        self.adam.step(grads)
        self.step_count += 1

    def state_dict(self) -> dict[str, np.ndarray]:
        state = {"step": np.asarray(self.step_count, np.int64), "es.rng": _rng_state(self.rng),
                 "es.fitness": self.fitness.copy(), "es.forward_passes": np.asarray(self.forward_passes, np.int64)}
        state.update({f"es.adam.{k}": v for k, v in self.adam.state_dict().items()})
        return state

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        _check_state(state, set(self.state_dict()), "evolution strategy")
        self.adam.load_state_dict({k[len("es.adam."):]: v for k, v in state.items() if k.startswith("es.adam.")})
        self.rng.bit_generator.state = json.loads(str(state["es.rng"]))
        self.fitness = np.array(state["es.fitness"], dtype=np.float64)
        self.step_count = int(state["step"])
        self.forward_passes = int(state["es.forward_passes"])

    def __repr__(self) -> str:
        return (f"EvolutionStrategy(population={2 * self.pairs}, sigma={self.sigma:g}, adam={self.adam!r}, "
                f"step_count={self.step_count})")


def centered_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks scaled to [-0.5, 0.5] (Salimans et al. 2017's fitness shaping); ties and non-finite values
    (ranked lowest) are ordered stably."""
    values = np.where(np.isfinite(values), values, -np.inf)
    n = len(values)
    ranks = np.empty(n)
    ranks[np.argsort(values, kind="stable")] = np.arange(n)
    return ranks / max(n - 1, 1) - 0.5


def build_gradient_free(model, spec, *, steps_per_epoch: int, rng: np.random.Generator) -> GradientFree:
    """The gradient-free optimizer the spec names, over `model` (checked against clipping)."""
    o = spec.optimizer
    if spec.clipping.mode != "none":
        raise UserError(f'clipping.mode = "{spec.clipping.mode}" clips gradients, but optimizer.name = "{o.name}" '
                        'computes none: set clipping.mode = "none"')
    if o.name == "genetic":
        return GeneticAlgorithm(model, population=o.population, mutation_scale=o.mutation_scale,
                                crossover_rate=o.crossover_rate, rng=rng)
    if o.name == "evolution_strategy":
        from workbench.nn.optim import build_optimizer

        adam = build_optimizer(
            model.parameters(), "adam", lr=o.lr, weight_decay=o.weight_decay, beta1=o.beta1, beta2=o.beta2,
            eps=o.eps, schedule=o.schedule, steps_per_epoch=steps_per_epoch, epochs=spec.training.epochs,
            step_size=o.step_size, gamma=o.gamma, warmup_epochs=o.warmup_epochs, min_lr=o.min_lr,
            weights=model.weight_names(),
        )
        return EvolutionStrategy(model, population=o.population, sigma=o.sigma, adam=adam, rng=rng)
    raise UserError(f"optimizer.name = {o.name!r} is not gradient-free; gradient-free ones: {', '.join(GRADIENT_FREE)}")


class EvolutionStats(Hook):
    """Records what gradient-free training measures: fitness per generation, weight norms and update ratios.

    Per recorded step (the monitor's cadence), after the monitor wrote its row: the global
    statistics `fitness_best`, `fitness_mean`, `fitness_spread` and the per-layer `weight_norm`
    (||W_t||, before the update) and `update_ratio` (||W_{t+1} - W_t|| / ||W_t||), which the
    monitor computes in its backward stage and so leaves NaN here. Per epoch, the means of the
    three fitness values go into the epoch logs as `fitness/best`, `fitness/mean`, `fitness/spread`.
    """

    def __init__(self, monitor=None) -> None:
        self.monitor = monitor
        self._sums = np.zeros(3)
        self._count = 0

    def on_epoch_begin(self, trainer) -> None:
        self._sums[:] = 0.0
        self._count = 0

    def on_after_update(self, trainer) -> None:
        optimizer = trainer.optimizer
        summary = optimizer.fitness_summary()
        if all(math.isfinite(v) for v in summary):
            self._sums += summary
            self._count += 1
        record = getattr(self.monitor, "record", None)
        if record is None or not record.recording:
            return
        for name, value in zip(("fitness_best", "fitness_mean", "fitness_spread"), summary):
            record.log(name, value)
        for column in trainer.model.columns():
            layer = column.layer
            weight = layer.weights[0]
            W, step = layer.params[weight], layer.grads[weight]
            before = float(np.linalg.norm((W + step).ravel()))  # grads hold p_before - p_after
            record.log_layer("weight_norm", layer.name, before)
            record.log_layer("update_ratio", layer.name,
                             float(np.linalg.norm(step.ravel())) / before if before > 0 else math.nan)

    def on_epoch_end(self, trainer, logs) -> None:
        if self._count:
            means = self._sums / self._count
            logs.update({"fitness/best": float(means[0]), "fitness/mean": float(means[1]),
                         "fitness/spread": float(means[2])})
