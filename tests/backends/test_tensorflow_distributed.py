"""convlab's Keras Conv2D trained by model.fit under MirroredStrategy on 2 logical CPUs = one device.

The logical devices must be configured before TensorFlow initialises, so the distributed run is a
subprocess (tests/backends/distributed_scripts/tf_mirrored.py); this test trains the same model with
model.fit on one device, in this process, and checks that the weights agree within the rounding-error bound
of rounding_bounds.py (float64; the all-reduce of the replicas' gradients reorders the sums). A NumPy
float64 trajectory checks the single-device run itself, so that a fault common to both runs cannot pass.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import rounding_bounds
from conftest import require_adapter
from distributed_scripts import run_script

import convlab as cl

tf = pytest.importorskip("tensorflow")
require_adapter("tensorflow")
keras = pytest.importorskip("keras")
pytestmark = pytest.mark.only_backend("tensorflow")  # run only in the tensorflow session

PADS = ((1, 1), (1, 1))
LR, STEPS = 0.4, 5


def problem():
    """Channels-last float64 inputs, targets from a different kernel, and the layer's seeded weights."""
    rng = np.random.default_rng(1603)
    X = rng.normal(size=(8, 2, 7, 6))
    T = rounding_bounds.conv2d(X, rng.normal(size=(3, 2, 3, 3)), rng.normal(size=3), PADS)
    T = T + 0.1 * rng.normal(size=T.shape)
    layer = cl.Conv2D(3, 2, 3, padding=1, seed=0, data_format="channels_last", backend="tensorflow")
    weight, bias = layer.weight.numpy().astype(np.float64), layer.bias.numpy().astype(np.float64)
    return X.transpose(0, 2, 3, 1), T.transpose(0, 2, 3, 1), weight, bias


def fit_on_one_device(X, T, weight, bias):
    """The same model and model.fit call, no strategy, in this process."""
    floatx, policy = keras.config.floatx(), keras.config.dtype_policy()
    keras.config.set_floatx("float64")
    keras.config.set_dtype_policy("float64")  # the layer's variables in float64 (the policy outlives floatx)
    try:
        layer = cl.Conv2D(3, 2, 3, padding=1, data_format="channels_last", backend="tensorflow")
        model = keras.Sequential([keras.Input(X.shape[1:]), layer])
        layer.weight.assign(weight)
        layer.bias.assign(bias)
        model.compile(optimizer=keras.optimizers.SGD(learning_rate=LR), loss="mse")
        repeated = np.concatenate([X] * STEPS), np.concatenate([T] * STEPS)  # STEPS steps on the whole batch
        model.fit(*repeated, batch_size=len(X), shuffle=False, verbose=0)
        assert layer.weight.dtype == "float64"
        return layer.weight.numpy(), layer.bias.numpy()
    finally:
        keras.config.set_floatx(floatx)
        keras.config.set_dtype_policy(policy)


def test_mirrored_strategy_fit_trains_like_one_device(tmp_path):
    X, T, weight0, bias0 = problem()
    np.savez(tmp_path / "inputs.npz", X=X, T=T, weight=weight0, bias=bias0, lr=LR, steps=STEPS)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    run_script("tf_mirrored.py", tmp_path / "inputs.npz", tmp_path / "mirrored.npz", env=env)
    mirrored = np.load(tmp_path / "mirrored.npz")
    assert int(mirrored["replicas"]) == 2 and str(mirrored["dtype"]) == "float64"

    weight, bias = fit_on_one_device(X, T, weight0, bias0)

    # the bound in the oracle's channels-first layout (HWIO -> OIHW)
    def oihw(w):
        return np.asarray(w).transpose(3, 2, 0, 1)

    X_nchw, T_nchw = X.transpose(0, 3, 1, 2), T.transpose(0, 3, 1, 2)
    w_ref, b_ref, bound = rounding_bounds.sgd(X_nchw, T_nchw, oihw(weight0), bias0, LR, STEPS, PADS, "float64")
    # the single-device run is right (a fault shared with the distributed run cannot pass) ...
    assert rounding_bounds.difference(oihw(weight), bias, w_ref, b_ref) <= bound
    # ... training moved the weights far beyond the tolerance (the comparison below can fail) ...
    assert rounding_bounds.difference(weight, bias, weight0, bias0) > 1e6 * bound
    # ... and two replicas on half a batch each end where one device on the whole batch ends
    error = rounding_bounds.difference(mirrored["weight"], mirrored["bias"], weight, bias)
    assert error <= bound, f"MirroredStrategy weights differ by {error:.3g} (2-norm), bound {bound:.3g}"
