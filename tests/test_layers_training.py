"""Layers and train_kernel on every backend: seeded weights, forward passes, loss trajectories."""

from __future__ import annotations

import numpy as np
import pytest
import reference

import convlab as cl
from convlab.layers import initial_weights


def weights_of(backend, layer):
    """The layer's (weight, bias) as NumPy arrays, whatever the framework calls them."""

    def convert(parameter):
        if parameter is None:
            return None
        # a Gluon Parameter hands out its array through .data(); other frameworks' parameters are tensors
        data = getattr(parameter, "data", None)
        return backend.to_numpy(data() if callable(data) else parameter)

    return convert(layer.weight), convert(layer.bias)


def test_same_seed_same_initial_weights_everywhere(backend):
    layer = cl.Conv2D((3, 2), in_channels=2, out_channels=4, seed=7, backend=backend.name)
    weight, bias = weights_of(backend, layer)
    expected_weight, expected_bias = initial_weights((3, 2), 2, 4, True, 7)
    np.testing.assert_array_equal(weight, expected_weight)
    np.testing.assert_array_equal(bias, expected_bias)
    assert weight.dtype == np.float32


def test_conv2d_layer_forward_matches_functional(backend):
    layer = cl.Conv2D(3, in_channels=2, out_channels=3, stride=2, padding="same", seed=1, backend=backend.name)
    X = np.random.default_rng(0).integers(-3, 4, size=(2, 2, 7, 7)).astype(np.float32)
    y = backend.to_numpy(layer(backend.asarray(X, "float32")))
    weight, bias = initial_weights((3, 3), 2, 3, True, 1)
    pads = tuple(reference.same_pads(7, 3, 2, 1) for _ in range(2))
    expected = reference.conv2d(X, weight, bias, (2, 2), pads, (1, 1))
    reference.assert_within_bound(
        y, expected, reference.conv2d_bound(X, weight, (2, 2), pads) + 4 * 2.0**-24 * np.abs(expected), "layer"
    )


def test_conv2d_layer_book_usage(backend):
    """The book's Conv2D((1, 2)) applied to a 2-D image gives a 2-D output."""
    layer = cl.Conv2D((1, 2), bias=False, seed=0, backend=backend.name)
    y = layer(backend.asarray(cl.images.stripes(), "float32"))
    assert tuple(y.shape) == (6, 7)


def test_conv2d_layer_channels_last(backend):
    first = cl.Conv2D(3, 2, 3, padding=1, seed=3, backend=backend.name)
    last = cl.Conv2D(3, 2, 3, padding=1, seed=3, data_format="channels_last", backend=backend.name)
    X = np.random.default_rng(1).integers(-3, 4, size=(1, 2, 5, 5)).astype(np.float32)
    y_first = backend.to_numpy(first(backend.asarray(X, "float32")))
    y_last = backend.to_numpy(last(backend.asarray(X.transpose(0, 2, 3, 1), "float32")))
    np.testing.assert_allclose(y_last, y_first.transpose(0, 2, 3, 1), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    "layer, expected", [("MaxPool2D", [[5.0, 7.0], [13.0, 15.0]]), ("AvgPool2D", [[2.5, 4.5], [10.5, 12.5]])]
)
def test_pool_layers_default_stride_is_the_window(backend, layer, expected):
    pool = getattr(cl, layer)(2, backend=backend.name)
    y = pool(backend.asarray(np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4), "float32"))
    np.testing.assert_array_equal(backend.to_numpy(y)[0, 0], expected)


def _numpy_float64_losses(X, Y, kernel_size, lr, epochs, seed, bias):
    """The same loop in float64 NumPy, with gradients from the oracle's definition."""
    weight, bias_value = initial_weights(kernel_size, 1, 1, bias, seed)
    weight, b = weight.reshape(kernel_size).astype(np.float64), 0.0 if bias_value is None else float(bias_value[0])
    X = np.asarray(X, np.float64)
    losses = []
    for _ in range(epochs):
        residual = reference.corr2d(X, weight) + b - Y
        losses.append(float((residual**2).sum()))
        grad = np.zeros_like(weight)
        for i in range(kernel_size[0]):
            for j in range(kernel_size[1]):
                grad[i, j] = 2 * (residual * X[i : i + residual.shape[0], j : j + residual.shape[1]]).sum()
        weight = weight - lr * grad
        if bias:
            b = b - lr * 2 * residual.sum()
    return np.array(losses)


@pytest.mark.parametrize("gradient", ["autodiff", "analytic"])
@pytest.mark.parametrize("seed, bias", [(0, False), (1, True), (2, False), (3, True)])
def test_train_kernel_trajectory(backend, gradient, seed, bias):
    X = cl.images.stripes()
    Y = reference.corr2d(X, cl.kernels.edge()).astype(np.float32)
    result = cl.train_kernel(
        backend.asarray(X, "float32"),
        backend.asarray(Y, "float32"),
        (1, 2),
        epochs=10,
        seed=seed,
        bias=bias,
        gradient=gradient,
    )
    expected = _numpy_float64_losses(X, Y, (1, 2), 3e-2, 10, seed, bias)
    # float32 training from the same seed: the trajectories agree to a few float32 ULP per epoch
    tolerance = 64 * 2.0**-24 * np.arange(1, 11) * np.abs(expected) + 1e-6
    error = np.abs(np.asarray(result.losses) - expected)
    assert np.all(error <= tolerance), f"losses {result.losses} vs float64 {expected.tolist()}"
    assert result.backend == backend.name
    assert result.gradient == ("analytic" if not backend.has_autodiff else gradient)
    assert (result.bias is None) == (not bias)


def test_train_kernel_autodiff_equals_analytic(backend):
    X = backend.asarray(cl.images.checkerboard(8, 2), "float32")
    Y = cl.conv2d(X, backend.asarray(cl.kernels.laplacian(), "float32"))
    runs = [cl.train_kernel(X, Y, 3, lr=1e-2, epochs=5, bias=True, gradient=g) for g in ("autodiff", "analytic")]
    np.testing.assert_allclose(runs[0].losses, runs[1].losses, rtol=1e-5)
    np.testing.assert_allclose(backend.to_numpy(runs[0].kernel), backend.to_numpy(runs[1].kernel), rtol=1e-5, atol=1e-6)


def test_train_kernel_callback_and_batch(backend):
    calls = []
    X = np.stack([cl.images.stripes(), cl.images.stripes()[::-1]])[:, None]
    Y = cl.conv2d(X, cl.kernels.edge()[None, None])
    cl.train_kernel(
        backend.asarray(X, "float32"),
        backend.asarray(Y, "float32"),
        epochs=3,
        callback=lambda epoch, loss, kernel: calls.append((epoch, loss)),
    )
    assert [epoch for epoch, _ in calls] == [0, 1, 2]
