"""convlab's JAX ops and Conv2D pytree under jax.jit on inputs sharded over 2 host devices = unsharded.

The sharded run needs ``--xla_force_host_platform_device_count=2`` before JAX starts, so it runs in a
subprocess (tests/backends/distributed_scripts/jax_sharding.py); this test computes the same functions
unsharded, in this process, and compares: max pooling bit for bit, everything that sums (conv2d, average
pooling, the layer, and jax.grad through the layer, where batch sharding adds an all-reduce) within twice the
DESIGN.md section 4 rounding bound (float32; two runs, each within the bound of the exact value). Both
runs are also checked against the float64 NumPy oracle, so that a fault common to both cannot pass.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import reference
import rounding_bounds
from conftest import require_adapter
from distributed_scripts import run_script

import convlab as cl

jax = pytest.importorskip("jax")
require_adapter("jax")
jnp = jax.numpy
pytestmark = pytest.mark.only_backend("jax")  # run only in the jax session

PADS = ((1, 1), (1, 1))
U = rounding_bounds.UNIT_ROUNDOFF["float32"]


def problem():
    rng = np.random.default_rng(1604)
    X = rng.normal(size=(4, 2, 8, 6)).astype(np.float32)
    T = rng.normal(size=(4, 3, 8, 6)).astype(np.float32)
    K = rng.normal(size=(3, 2, 3, 3)).astype(np.float32)
    b = rng.normal(size=3).astype(np.float32)
    return X, T, K, b


def unsharded(X, T, K, b):
    """The same jitted functions on one device, in this process."""
    layer = cl.Conv2D(3, X.shape[1], K.shape[0], padding=1, seed=0, backend="jax")

    def loss(layer, X, T):
        return ((layer(X) - T) ** 2).mean()

    grads = jax.jit(jax.grad(loss))(layer, jnp.asarray(X), jnp.asarray(T))
    results = {
        "conv2d": jax.jit(lambda X, K, b: cl.conv2d(X, K, b, padding=1))(jnp.asarray(X), K, b),
        "pool2d_max": jax.jit(lambda X: cl.pool2d(X, (3, 3), "max", stride=1, padding=1))(jnp.asarray(X)),
        "pool2d_avg": jax.jit(lambda X: cl.pool2d(X, (3, 3), "avg", stride=1, padding=1))(jnp.asarray(X)),
        "layer": jax.jit(lambda layer, X: layer(X))(layer, jnp.asarray(X)),
        "grad_weight": grads.weight,
        "grad_bias": grads.bias,
    }
    return {key: np.asarray(value) for key, value in results.items()}, layer


def oracle_and_bounds(X, T, K, b, layer):
    """Float64 values and the DESIGN.md section 4 bound of each result (one run against the exact value)."""
    weight, bias = np.asarray(layer.weight, np.float64), np.asarray(layer.bias, np.float64)
    absolute = np.abs(X.astype(np.float64))
    window = 9  # the 3x3 average: 9 additions (padded zeros included) and a division
    g_w, g_b = rounding_bounds.mse_gradients(X, T, weight, bias, PADS)
    bound_w, bound_b = rounding_bounds.mse_gradient_bound(X, T, weight, bias, PADS, "float32", workers=2)
    return {
        "conv2d": (rounding_bounds.conv2d(X, K, b, PADS), rounding_bounds.conv2d_bound(X, K, b, PADS, "float32")),
        "pool2d_max": (reference.pool2d(X, (3, 3), (1, 1), PADS, "max"), 0.0),
        "pool2d_avg": (
            reference.pool2d(X, (3, 3), (1, 1), PADS, "avg"),
            rounding_bounds.C * (window + 1) * U * reference.pool2d(absolute, (3, 3), (1, 1), PADS, "avg"),
        ),
        "layer": (
            rounding_bounds.conv2d(X, weight, bias, PADS),
            rounding_bounds.conv2d_bound(X, weight, bias, PADS, "float32"),
        ),
        "grad_weight": (g_w, bound_w),
        "grad_bias": (g_b, bound_b),
    }


def test_jit_on_inputs_sharded_over_two_devices_equals_unsharded(tmp_path):
    X, T, K, b = problem()
    np.savez(tmp_path / "inputs.npz", X=X, T=T, K=K, b=b)
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env.pop("XLA_FLAGS", None)  # the script sets the device count itself
    run_script("jax_sharding.py", tmp_path / "inputs.npz", tmp_path / "sharded.npz", env=env)
    sharded = np.load(tmp_path / "sharded.npz")

    expected, layer = unsharded(X, T, K, b)
    checks = oracle_and_bounds(X, T, K, b, layer)
    assert checks["grad_weight"][0].std() > 1e3 * checks["grad_weight"][1].max()  # gradients are not noise
    for sharding, axis in (("batch", 0), ("height", 2)):
        # the data really was split: each device holds half of the sharded axis of the conv's output
        shard = sharded[f"{sharding}/conv2d/shard_shape"]
        assert shard[axis] == expected["conv2d"].shape[axis] // 2, (sharding, shard)
        for name, (exact, bound) in checks.items():
            what = f"{name}, {sharding}-sharded"
            value = sharded[f"{sharding}/{name}"]
            assert str(sharded[f"{sharding}/{name}/dtype"]) == "float32", what
            assert value.shape == expected[name].shape, what
            if name == "pool2d_max":  # a max does not round: bit for bit
                np.testing.assert_array_equal(value, expected[name], err_msg=what)
                np.testing.assert_array_equal(value, exact.astype(np.float32), err_msg=what)
                continue
            for label, actual, limit in (
                ("sharded vs unsharded", value, rounding_bounds.TWO_RUNS * bound),
                ("sharded vs float64", value, bound),
                ("unsharded vs float64", expected[name], bound),
            ):
                other = expected[name] if label == "sharded vs unsharded" else exact
                error = np.abs(actual.astype(np.float64) - other)
                worst = tuple(int(i) for i in np.unravel_index(np.argmax(error - limit), error.shape))
                assert np.all(error <= limit), (
                    f"{what}: {label} differ by {error[worst]:.3g} at {worst}, bound {np.asarray(limit)[worst]:.3g}"
                )
