"""Tests for workbench.nn.optim: hand-computed steps, schedules, dtypes, exact resume, a contract battery.

The references below are written from the published update rules, in plain
float64 numpy that allocates freely, independently of the in-place code.
"""

from __future__ import annotations

import io
import math
import os
import re
import tracemalloc

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from workbench.errors import UserError
from workbench.nn.optim import (
    OPTIMIZERS,
    SCHEDULES,
    ConstantSchedule,
    CosineSchedule,
    GradientTransformation,
    Optimizer,
    StepSchedule,
    WarmupCosineSchedule,
    add_decayed_weights,
    build_optimizer,
    build_schedule,
    chain,
    hyperparameters,
    is_weight_matrix,
    scale_by_adam,
    scale_by_momentum,
)

EXOTIC = dict(momentum=0.7, beta1=0.8, beta2=0.95, eps=0.1, rho=0.8)  # eps large: its placement shows
DEFAULTS = dict(momentum=0.9, beta1=0.9, beta2=0.999, eps=1e-8, rho=0.9)


def make_params(dtype=np.float64, seed=0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "lin.W": rng.normal(size=(2, 3)).astype(dtype),
        "lin.b": rng.normal(size=3).astype(dtype),
        "bn.gamma": (1.0 + 0.1 * rng.normal(size=3)).astype(dtype),
    }


def make_grads(params, steps, seed=1) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{key: rng.normal(size=value.shape).astype(value.dtype) for key, value in params.items()} for _ in range(steps)]


def copy(arrays):
    return {key: value.copy() for key, value in arrays.items()}


def reference_trajectory(name, params, grads_seq, *, lr, weight_decay, momentum, beta1, beta2, eps, rho):
    """Each optimizer's published rule (torch.optim conventions), step by step, float64."""
    p = {key: value.astype(np.float64).copy() for key, value in params.items()}
    first = {key: np.zeros_like(value) for key, value in p.items()}  # v, m, or s
    second = {key: np.zeros_like(value) for key, value in p.items()}  # v of adam
    trajectory = []
    for t, grads in enumerate(grads_seq, start=1):
        for key in p:
            decay = weight_decay if key.endswith(".W") else 0.0
            g = grads[key].astype(np.float64)
            if name != "adamw":
                g = g + decay * p[key]  # coupled L2
            if name == "sgd":
                p[key] = p[key] - lr * g
            elif name == "momentum":
                first[key] = momentum * first[key] + g
                p[key] = p[key] - lr * first[key]
            elif name == "nesterov":
                first[key] = momentum * first[key] + g
                p[key] = p[key] - lr * (g + momentum * first[key])
            elif name == "rmsprop":
                first[key] = rho * first[key] + (1 - rho) * g**2
                p[key] = p[key] - lr * g / (np.sqrt(first[key]) + eps)
            elif name in ("adam", "adamw"):
                first[key] = beta1 * first[key] + (1 - beta1) * g
                second[key] = beta2 * second[key] + (1 - beta2) * g**2
                m_hat = first[key] / (1 - beta1**t)
                v_hat = second[key] / (1 - beta2**t)
                if name == "adamw":
                    p[key] = p[key] - lr * decay * p[key]  # decoupled (Loshchilov & Hutter 2019)
                p[key] = p[key] - lr * m_hat / (np.sqrt(v_hat) + eps)
            elif name == "adagrad":
                first[key] = first[key] + g**2
                p[key] = p[key] - lr * g / (np.sqrt(first[key]) + eps)
            else:
                raise AssertionError(f"no reference for {name}")
        trajectory.append(copy(p))
    return trajectory


HAND_CHECKED = ["sgd", "momentum", "nesterov", "rmsprop", "adam", "adamw", "adagrad"]


def test_every_registered_optimizer_has_a_hand_checked_reference():
    assert sorted(OPTIMIZERS) == sorted(HAND_CHECKED)


@pytest.mark.parametrize("hyper", [DEFAULTS, EXOTIC], ids=["defaults", "exotic"])
@pytest.mark.parametrize("weight_decay", [0.0, 0.3])
@pytest.mark.parametrize("name", HAND_CHECKED)
def test_three_steps_match_the_published_rule(name, weight_decay, hyper):
    params = make_params()
    grads_seq = make_grads(params, 3)
    expected = reference_trajectory(name, params, grads_seq, lr=0.05, weight_decay=weight_decay, **hyper)
    optimizer = build_optimizer(params, name, lr=0.05, weight_decay=weight_decay, **hyper)
    for step, grads in enumerate(grads_seq):
        optimizer.step(copy(grads))
        for key in params:
            np.testing.assert_allclose(params[key], expected[step][key], rtol=1e-6, atol=1e-12, err_msg=f"{name} {key} step {step}")


def test_adam_first_step_is_lr_times_sign():
    """Kingma & Ba: with bias correction the first step has size ~lr whatever the gradient scale."""
    params = {"x.W": np.array([1.0, -2.0, 3.0])}
    optimizer = build_optimizer(params, "adam", lr=0.01, eps=0.0)
    optimizer.step({"x.W": np.array([1e-3, -50.0, 4.0])})
    np.testing.assert_allclose(params["x.W"], [1.0 - 0.01, -2.0 + 0.01, 3.0 - 0.01], rtol=1e-12)


def test_momentum_first_steps_by_hand():
    params = {"x.W": np.array([1.0])}
    optimizer = build_optimizer(params, "momentum", lr=0.1, momentum=0.5)
    optimizer.step({"x.W": np.array([2.0])})  # v = 2, p = 1 - 0.2
    assert params["x.W"][0] == pytest.approx(0.8, rel=1e-12)
    optimizer.step({"x.W": np.array([2.0])})  # v = 0.5 * 2 + 2 = 3, p = 0.8 - 0.3
    assert params["x.W"][0] == pytest.approx(0.5, rel=1e-12)


def test_nesterov_first_step_by_hand():
    params = {"x.W": np.array([1.0])}
    optimizer = build_optimizer(params, "nesterov", lr=0.1, momentum=0.5)
    optimizer.step({"x.W": np.array([2.0])})  # v = 2, u = 2 + 0.5 * 2 = 3
    assert params["x.W"][0] == pytest.approx(0.7, rel=1e-12)


# ---------------------------------------------------------------- weight decay


def test_decay_masks_weight_matrices_only():
    assert is_weight_matrix("dense1.W")
    assert not any(map(is_weight_matrix, ["dense1.b", "bn1.gamma", "bn1.beta", "dense1.Wx"]))


@pytest.mark.parametrize("name, factor", [("sgd", 1.0), ("momentum", 1.0), ("nesterov", 1.9), ("adamw", 1.0)])
def test_decay_alone_shrinks_weights_by_lr_times_wd(name, factor):
    """With zero gradients the first step is p -= lr * wd * p on ".W" (nesterov: (1 + mu) times), nothing elsewhere."""
    params = make_params()
    before = copy(params)
    optimizer = build_optimizer(params, name, lr=0.1, weight_decay=0.5, momentum=0.9)
    optimizer.step({key: np.zeros_like(value) for key, value in params.items()})
    np.testing.assert_allclose(params["lin.W"], before["lin.W"] * (1 - 0.05 * factor), rtol=1e-12)
    for key in ("lin.b", "bn.gamma"):
        np.testing.assert_array_equal(params[key], before[key])


def test_adam_couples_decay_adamw_decouples_it():
    """Adam normalizes the L2 term (a step of ~lr whatever wd); AdamW does not (a step of lr*wd*W)."""
    coupled, decoupled = make_params(), make_params()
    before = copy(coupled)
    zeros = {key: np.zeros_like(value) for key, value in before.items()}
    build_optimizer(coupled, "adam", lr=0.01, weight_decay=1e-3).step(copy(zeros))
    build_optimizer(decoupled, "adamw", lr=0.01, weight_decay=1e-3).step(copy(zeros))
    np.testing.assert_allclose(coupled["lin.W"], before["lin.W"] - 0.01 * np.sign(before["lin.W"]), rtol=1e-4)
    np.testing.assert_allclose(decoupled["lin.W"], before["lin.W"] * (1 - 1e-5), rtol=1e-12)
    for params in (coupled, decoupled):
        np.testing.assert_array_equal(params["lin.b"], before["lin.b"])


def test_no_decay_link_when_weight_decay_is_zero():
    assert build_optimizer(make_params(), "sgd", lr=0.1).transform.links == ()
    optimizer = build_optimizer(make_params(), "adam", lr=0.1)
    assert [link.name for link in optimizer.transform.links] == ["adam"]
    assert [link.name for link in build_optimizer(make_params(), "adamw", lr=0.1, weight_decay=0.1).transform.links] == [
        "adam",
        "weight_decay",
    ]


# ---------------------------------------------------------------- schedules


def test_constant_schedule():
    schedule = build_schedule("constant", 0.1)
    assert schedule(0) == schedule(10**6) == 0.1
    assert isinstance(schedule(3), float)


def test_step_schedule_multiplies_every_step_size_epochs():
    schedule = build_schedule("step", 0.1, steps_per_epoch=10, step_size=3, gamma=0.5)
    assert schedule(0) == 0.1
    assert schedule(29) == 0.1  # last step of epoch 2
    assert schedule(30) == pytest.approx(0.05)  # first step of epoch 3
    assert schedule(59) == pytest.approx(0.05)
    assert schedule(60) == pytest.approx(0.025)


def test_cosine_schedule_key_steps():
    schedule = build_schedule("cosine", 1.0, steps_per_epoch=10, epochs=10, min_lr=0.1)  # 100 steps
    assert schedule(0) == 1.0
    assert schedule(50) == pytest.approx(0.55)  # halfway: the mean of lr and min_lr
    assert schedule(25) == pytest.approx(0.1 + 0.9 * (1 + math.cos(math.pi / 4)) / 2)
    assert 0.1 < schedule(99) < 0.1 + 1e-3  # last update, just above min_lr
    assert schedule(100) == pytest.approx(0.1)
    assert schedule(10**6) == pytest.approx(0.1)


def test_warmup_cosine_schedule_key_steps():
    schedule = build_schedule("warmup_cosine", 1.0, steps_per_epoch=10, epochs=10, warmup_epochs=2, min_lr=0.0)
    assert schedule(0) == pytest.approx(0.05)  # lr / warmup: small, not 0
    assert schedule(9) == pytest.approx(0.5)
    assert schedule(19) == pytest.approx(1.0)  # end of warmup
    assert schedule(20) == pytest.approx(1.0)  # cosine starts at lr
    assert schedule(60) == pytest.approx(0.5)  # halfway through the 80 decay steps
    assert schedule(100) == pytest.approx(0.0, abs=1e-15)
    assert all(schedule(t) < schedule(t + 1) for t in range(19))


def test_warmup_longer_than_the_run_is_capped():
    schedule = WarmupCosineSchedule(1.0, warmup_steps=50, total_steps=10)
    assert schedule(9) == pytest.approx(1.0)
    assert schedule(10) == pytest.approx(0.0, abs=1e-15)


@settings(max_examples=50, deadline=None)
@given(
    name=st.sampled_from(sorted(SCHEDULES)),
    lr=st.floats(1e-6, 10.0),
    min_fraction=st.floats(0.0, 1.0),
    steps_per_epoch=st.integers(1, 50),
    epochs=st.integers(1, 30),
    warmup_epochs=st.integers(0, 10),
    step_size=st.integers(1, 10),
    gamma=st.floats(0.01, 1.0),
)
def test_schedules_stay_between_zero_and_lr(name, lr, min_fraction, steps_per_epoch, epochs, warmup_epochs, step_size, gamma):
    schedule = build_schedule(
        name,
        lr,
        steps_per_epoch=steps_per_epoch,
        epochs=epochs,
        step_size=step_size,
        gamma=gamma,
        warmup_epochs=warmup_epochs,
        min_lr=lr * min_fraction,
    )
    values = [schedule(t) for t in range(0, epochs * steps_per_epoch + 5)]
    assert all(type(value) is float and 0.0 <= value <= lr * (1 + 1e-12) for value in values)


def test_optimizer_steps_at_the_scheduled_rate():
    params = {"x.W": np.zeros(1)}
    optimizer = Optimizer(params, chain(), StepSchedule(1.0, step_size=2, gamma=0.1))
    rates = []
    for _ in range(5):
        rates.append(optimizer.lr())
        optimizer.step({"x.W": np.ones(1)})
    assert rates == pytest.approx([1.0, 1.0, 0.1, 0.1, 0.01])
    assert params["x.W"][0] == pytest.approx(-2.21)
    assert optimizer.step_count == 5


def test_a_number_is_a_constant_schedule():
    assert Optimizer(make_params(), chain(), 0.3).schedule == ConstantSchedule(0.3)


# ---------------------------------------------------------------- dtypes, state, resume


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_float32_params_and_state_stay_float32(name):
    params = make_params(np.float32)
    optimizer = build_optimizer(
        params, name, lr=np.float64(0.01), weight_decay=np.float64(0.1), schedule="warmup_cosine", epochs=3, warmup_epochs=1
    )
    for grads in make_grads(params, 3):
        optimizer.step(grads)
    assert all(value.dtype == np.float32 for value in params.values())
    for key, value in optimizer.state_dict().items():
        if key == "step" or key.endswith(".count"):
            assert value.dtype == np.int64
        else:
            assert value.dtype == np.float32, key


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_state_dict_round_trip_resumes_bit_for_bit(name):
    params = make_params(np.float32)
    grads_seq = make_grads(params, 6)
    hyper = dict(lr=0.01, weight_decay=0.05, schedule="cosine", steps_per_epoch=2, epochs=3)
    optimizer = build_optimizer(params, name, **hyper)
    for grads in grads_seq[:3]:
        optimizer.step(copy(grads))
    buffer = io.BytesIO()
    np.savez(buffer, **optimizer.state_dict())
    buffer.seek(0)
    with np.load(buffer, allow_pickle=False) as saved:
        state = dict(saved)
    resumed_params = copy(params)
    for grads in grads_seq[3:]:
        optimizer.step(copy(grads))

    resumed = build_optimizer(resumed_params, name, **hyper)
    resumed.load_state_dict(state)
    assert resumed.step_count == 3
    for grads in grads_seq[3:]:
        resumed.step(copy(grads))
    for key in params:
        np.testing.assert_array_equal(resumed_params[key], params[key])
    for key, value in optimizer.state_dict().items():
        np.testing.assert_array_equal(resumed.state_dict()[key], value)


def test_state_dict_is_a_copy_with_stable_keys():
    params = make_params(np.float32)
    optimizer = build_optimizer(params, "adam", lr=0.01)
    state = optimizer.state_dict()
    assert set(state) == {"step", "adam.count"} | {f"adam.{slot}.{key}" for slot in "mv" for key in params}
    optimizer.step(make_grads(params, 1)[0])
    assert int(state["step"]) == 0 and not state["adam.m.lin.W"].any()


def test_load_state_dict_rejects_another_optimizers_state():
    params = make_params()
    state = build_optimizer(params, "momentum", lr=0.1).state_dict()
    with pytest.raises(UserError, match="missing: adam.count"):
        build_optimizer(params, "adam", lr=0.1).load_state_dict(state)
    state = build_optimizer(params, "adam", lr=0.1).state_dict()
    state["adam.m.lin.W"] = np.zeros((3, 3))
    with pytest.raises(UserError, match="shape"):
        build_optimizer(params, "adam", lr=0.1).load_state_dict(state)


# ---------------------------------------------------------------- chains and registries


def test_chain_flattens_and_names_links_uniquely():
    inner = chain(add_decayed_weights(0.1), scale_by_momentum(0.9))
    outer = chain(inner, scale_by_momentum(0.5))
    assert [link.name for link in outer.links] == ["weight_decay", "momentum", "momentum"]
    params = make_params()
    optimizer = Optimizer(params, outer, 0.1)
    assert {key.split(".")[0] for key in optimizer.state_dict()} == {"step", "momentum", "momentum_2"}


def test_a_custom_link_composes():
    """A stateless link written outside the package (a clipping link, say) slots into a chain."""

    def clip_by_value(limit: float) -> GradientTransformation:
        def update(grads, state, params):
            for grad in grads.values():
                np.clip(grad, -limit, limit, out=grad)

        return GradientTransformation("clip_by_value", lambda params: {}, update)

    params = {"x.W": np.zeros(2)}
    Optimizer(params, chain(clip_by_value(1.0), scale_by_adam(0.9, 0.999, 1e-8)), 0.1).step({"x.W": np.array([100.0, -0.5])})
    np.testing.assert_allclose(params["x.W"], [-0.1, 0.1], rtol=1e-6)


def test_unknown_names_raise_user_errors_listing_the_allowed():
    with pytest.raises(UserError, match="allowed: adagrad, adam, adamw, momentum, nesterov, rmsprop, sgd"):
        build_optimizer(make_params(), "lbfgs", lr=0.1)
    with pytest.raises(UserError, match="allowed: constant, cosine, step, warmup_cosine"):
        build_optimizer(make_params(), "sgd", lr=0.1, schedule="cyclic")


def test_hyperparameters_are_declared_per_optimizer():
    assert hyperparameters(OPTIMIZERS["sgd"]) == ("weight_decay",)
    assert set(hyperparameters(OPTIMIZERS["adam"])) == {"beta1", "beta2", "eps", "weight_decay"}
    assert set(hyperparameters(OPTIMIZERS["rmsprop"])) == {"rho", "eps", "weight_decay"}


def test_every_optimizer_has_a_docstring_with_its_rule():
    for name, factory in OPTIMIZERS.items():
        doc = factory.__doc__ or ""
        assert "p -=" in doc and re.search(r"\b(19|20)\d\d\b", doc), name  # the rule and its source


# ---------------------------------------------------------------- contract battery over OPTIMIZERS


def quadratic(params, curvature, target):
    """f = sum(c/2 * (p - target)^2), convex; returns loss and gradients."""
    loss = sum(float(0.5 * np.sum(curvature[key] * (params[key] - target[key]) ** 2)) for key in params)
    return loss, {key: (curvature[key] * (params[key] - target[key])).astype(params[key].dtype) for key in params}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_contract_minimizes_a_convex_quadratic(name, dtype):
    params = make_params(dtype)
    rng = np.random.default_rng(2)
    curvature = {key: rng.uniform(0.5, 2.0, size=value.shape) for key, value in params.items()}
    target = {key: rng.normal(size=value.shape) for key, value in params.items()}
    live = {key: value for key, value in params.items()}  # the arrays the model holds
    optimizer = build_optimizer(params, name, lr=0.1, schedule="cosine", epochs=200)
    initial, _ = quadratic(params, curvature, target)
    for _ in range(200):
        _, grads = quadratic(params, curvature, target)
        optimizer.step(grads)
    final, _ = quadratic(params, curvature, target)
    assert np.isfinite(final) and final < 0.1 * initial, (name, initial, final)
    assert all(params[key] is live[key] and params[key].dtype == dtype for key in live)  # updated in place


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_contract_grads_hold_the_step_taken(name):
    params = make_params()
    before = copy(params)
    grads = make_grads(params, 1)[0]
    build_optimizer(params, name, lr=0.1, weight_decay=0.1).step(grads)
    for key in params:
        np.testing.assert_allclose(grads[key], before[key] - params[key], rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_contract_zero_gradients_leave_params_unchanged(name):
    params = make_params(np.float32)
    before = copy(params)
    optimizer = build_optimizer(params, name, lr=0.1)
    for _ in range(3):
        optimizer.step({key: np.zeros_like(value) for key, value in params.items()})
    for key in params:
        np.testing.assert_array_equal(params[key], before[key])


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_contract_no_parameter_sized_allocation_per_step(name):
    """The hot path works in preallocated buffers: a step allocates far less than one parameter."""
    params = {"big.W": np.ones((256, 256), np.float32), "big.b": np.ones(256, np.float32)}
    optimizer = build_optimizer(params, name, lr=1e-3, weight_decay=1e-4, schedule="warmup_cosine", epochs=2)
    grads = {key: np.full_like(value, 0.5) for key, value in params.items()}
    optimizer.step({key: value.copy() for key, value in grads.items()})  # warm up
    step_grads = {key: value.copy() for key, value in grads.items()}
    tracemalloc.start()
    try:
        baseline, _ = tracemalloc.get_traced_memory()
        optimizer.step(step_grads)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak - baseline < params["big.W"].nbytes // 8, (name, peak - baseline)


# ---------------------------------------------------------------- PyTorch reference (skipped without torch)


def torch_optimizer(torch, name, groups, lr, hyper):
    if name in ("sgd", "momentum", "nesterov"):
        mu = 0.0 if name == "sgd" else hyper["momentum"]
        return torch.optim.SGD(groups, lr=lr, momentum=mu, nesterov=name == "nesterov")
    if name == "rmsprop":
        return torch.optim.RMSprop(groups, lr=lr, alpha=hyper["rho"], eps=hyper["eps"])
    if name in ("adam", "adamw"):
        cls = torch.optim.Adam if name == "adam" else torch.optim.AdamW
        return cls(groups, lr=lr, betas=(hyper["beta1"], hyper["beta2"]), eps=hyper["eps"])
    if name == "adagrad":
        return torch.optim.Adagrad(groups, lr=lr, eps=hyper["eps"], initial_accumulator_value=0.0)
    raise AssertionError(f"no torch counterpart for {name}")


@pytest.mark.parametrize("hyper", [DEFAULTS, EXOTIC], ids=["defaults", "exotic"])
@pytest.mark.parametrize("name", HAND_CHECKED)
def test_trajectories_match_torch(name, hyper):
    torch = pytest.importorskip("torch")
    params = make_params()
    grads_seq = make_grads(params, 8)
    tensors = {key: torch.tensor(value.copy(), requires_grad=True) for key, value in params.items()}
    groups = [
        {"params": [tensors[key] for key in params if key.endswith(".W")], "weight_decay": 0.1},
        {"params": [tensors[key] for key in params if not key.endswith(".W")], "weight_decay": 0.0},
    ]
    reference = torch_optimizer(torch, name, groups, 0.03, hyper)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(reference, T_max=8, eta_min=0.001)
    optimizer = build_optimizer(params, name, lr=0.03, weight_decay=0.1, schedule="cosine", epochs=8, min_lr=0.001, **hyper)
    for grads in grads_seq:
        for key, tensor in tensors.items():
            tensor.grad = torch.tensor(grads[key])
        reference.step()
        scheduler.step()
        optimizer.step(copy(grads))
        for key, tensor in tensors.items():
            np.testing.assert_allclose(params[key], tensor.detach().numpy(), rtol=1e-9, atol=1e-12, err_msg=f"{name} {key}")


def test_step_schedule_matches_torch():
    torch = pytest.importorskip("torch")
    reference = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.2)
    scheduler = torch.optim.lr_scheduler.StepLR(reference, step_size=3, gamma=0.5)
    schedule = StepSchedule(0.2, 3, 0.5)
    for t in range(12):
        assert schedule(t) == pytest.approx(scheduler.get_last_lr()[0], rel=1e-12)
        reference.step()
        scheduler.step()


def test_cosine_schedule_matches_torch():
    torch = pytest.importorskip("torch")
    reference = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.2)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(reference, T_max=20, eta_min=0.01)
    schedule = CosineSchedule(0.2, 20, 0.01)
    for t in range(21):
        assert schedule(t) == pytest.approx(scheduler.get_last_lr()[0], rel=1e-9)
        reference.step()
        scheduler.step()


# -- blocked steps: the chain on cache-sized blocks, in threads, bit for bit the plain step --------------
BIG_SHAPES = {"dense1.W": (300, 500), "dense1.b": (500,), "dense2.W": (500, 300), "dense2.b": (300,),
              "dense3.W": (300, 7), "dense3.b": (7,)}  # 303,607 parameters: above BLOCKED_MIN_SIZE


def _big_params(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {k: rng.standard_normal(shape).astype(np.float32) for k, shape in BIG_SHAPES.items()}


def _run_steps(name: str, weight_decay: float, *, blocked: bool, threads: int | None, monkeypatch, steps: int = 4):
    from workbench.nn.optim import optimizer as optimizer_module

    with monkeypatch.context() as patch:
        if not blocked:
            patch.setattr(optimizer_module, "BLOCKED_MIN_SIZE", 10**12)
        params = _big_params()
        opt = build_optimizer(params, name, lr=0.05, weight_decay=weight_decay, schedule="cosine",
                              steps_per_epoch=2, epochs=3)
        opt.threads = threads
        rng = np.random.default_rng(1)
        grads = {k: np.empty_like(v) for k, v in params.items()}  # the same buffers every step, as a model's
        for _ in range(steps):
            for k, g in grads.items():
                g[...] = rng.standard_normal(g.shape).astype(np.float32) * 0.1
            opt.step(grads)
        assert (opt._plan is not None and opt._plan[1] is not None) == blocked
    return params, grads, opt.state_dict(), opt


@pytest.mark.parametrize("name", ["sgd", "momentum", "nesterov", "rmsprop", "adam", "adamw", "adagrad"])
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_blocked_steps_are_bit_identical_to_plain_ones(name, threads, monkeypatch):
    weight_decay = 0.01
    plain = _run_steps(name, weight_decay, blocked=False, threads=None, monkeypatch=monkeypatch)
    blocked = _run_steps(name, weight_decay, blocked=True, threads=threads, monkeypatch=monkeypatch)
    assert len(blocked[3]._plan[1]) == min(threads, 3)  # the blocks really were split among the threads
    for mine, reference in zip(blocked[:3], plain[:3]):
        assert mine.keys() == reference.keys()
        for key in reference:
            assert np.asarray(mine[key]).dtype == np.asarray(reference[key]).dtype, key
            np.testing.assert_array_equal(mine[key], reference[key], err_msg=key)  # params, steps left in grads, state


def test_a_forked_child_gets_its_own_thread_pool(monkeypatch):
    """A pool inherited through fork has no threads in the child: the optimizer makes a new one there."""
    params, grads, _, opt = _run_steps("momentum", 0.0, blocked=True, threads=2, monkeypatch=monkeypatch, steps=1)
    inherited = opt._pool[1]
    opt._pool = (-1, inherited)  # as seen from a child process: another pid made it
    opt.step(grads)
    assert opt._pool[0] == os.getpid() and opt._pool[1] is not inherited


def test_small_models_take_the_plain_step_without_threads():
    params = {"dense1.W": np.ones((64, 32), np.float32), "dense1.b": np.zeros(32, np.float32)}
    opt = build_optimizer(params, "adam", lr=1e-3)
    opt.step({k: np.ones_like(v) for k, v in params.items()})
    assert (opt._plan is None or opt._plan[1] is None) and opt._pool is None


def test_blocked_step_threads_keep_the_callers_numpy_error_state(monkeypatch):
    """Studies silence overflow while a divergent trial runs: the pool's threads must stay as silent."""
    import warnings

    params, grads, _, opt = _run_steps("adam", 0.0, blocked=True, threads=2, monkeypatch=monkeypatch, steps=1)
    for g in grads.values():
        g[...] = np.float32(3e38)  # g * g overflows float32
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with np.errstate(over="ignore", invalid="ignore"):
            opt.step(grads)
    assert len(opt._plan[1]) == 2
