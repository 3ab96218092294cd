"""conv2d_vjp: the closed-form gradients, against finite differences and the oracle, on every backend."""

from __future__ import annotations

import numpy as np
import pytest
import reference
from adapter_cases import CONV_CASES, CONV_IDS

import convlab as cl


def _pads(padding, x_shape, k_shape, stride, dilation):
    s = stride if isinstance(stride, tuple) else (stride, stride)
    d = dilation if isinstance(dilation, tuple) else (dilation, dilation)
    if padding == "same":
        return s, tuple(reference.same_pads(n, k, st, di) for n, k, st, di in zip(x_shape[2:], k_shape[2:], s, d)), d
    geometry = cl.geometry.conv_geometry(x_shape, k_shape, stride=stride, padding=padding, dilation=dilation)
    return s, geometry.pads, d


@pytest.mark.parametrize("x_shape, k_shape, stride, padding, dilation", CONV_CASES, ids=CONV_IDS)
def test_vjp_matches_finite_differences_float64(x_shape, k_shape, stride, padding, dilation):
    """The reference backend in float64 against central differences of the oracle."""
    rng = np.random.default_rng(11)
    X, K = rng.normal(size=x_shape), rng.normal(size=k_shape)
    s, pads, d = _pads(padding, x_shape, k_shape, stride, dilation)
    dY = rng.normal(size=reference.conv2d(X, K, None, s, pads, d).shape)
    dX, dK, dbias = cl.conv2d_vjp(X, K, dY, stride=stride, padding=padding, dilation=dilation, backend="numpy")
    loss = lambda x, k: float((reference.conv2d(x, k, None, s, pads, d) * dY).sum())  # noqa: E731
    np.testing.assert_allclose(dX, reference.numeric_gradient(lambda x: loss(x, K), X), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(dK, reference.numeric_gradient(lambda k: loss(X, k), K), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(dbias, dY.sum(axis=(0, 2, 3)), rtol=1e-12)


def _exact_gradients(X, K, dY, s, pads, d):
    """dX and dK by the chain rule on the oracle's definition, in float64 loops (no convlab code)."""
    n, c, h, w = X.shape
    o, _, kh, kw = K.shape
    (top, _), (left, _) = pads
    dX, dK = np.zeros(X.shape), np.zeros(K.shape)
    for b, oc, p, q in np.ndindex(dY.shape):
        for ic, i, j in np.ndindex(c, kh, kw):
            row, col = p * s[0] + i * d[0] - top, q * s[1] + j * d[1] - left
            if 0 <= row < h and 0 <= col < w:
                dX[b, ic, row, col] += dY[b, oc, p, q] * K[oc, ic, i, j]
                dK[oc, ic, i, j] += dY[b, oc, p, q] * X[b, ic, row, col]
    return dX, dK


@pytest.mark.parametrize("x_shape, k_shape, stride, padding, dilation", CONV_CASES, ids=CONV_IDS)
def test_vjp_on_every_backend_integer_inputs_exact(backend, x_shape, k_shape, stride, padding, dilation):
    rng = np.random.default_rng(12)
    X = rng.integers(-3, 4, size=x_shape).astype(np.float32)
    K = rng.integers(-3, 4, size=k_shape).astype(np.float32)
    s, pads, d = _pads(padding, x_shape, k_shape, stride, dilation)
    out = cl.output_shape(x_shape, k_shape, stride=stride, padding=padding, dilation=dilation)
    dY = rng.integers(-2, 3, size=out).astype(np.float32)
    tensors = (backend.asarray(a, "float32") for a in (X, K, dY))
    dX, dK, dbias = cl.conv2d_vjp(*tensors, stride=stride, padding=padding, dilation=dilation)
    expected_dX, expected_dK = _exact_gradients(X, K, dY, s, pads, d)
    np.testing.assert_array_equal(backend.to_numpy(dX), expected_dX)
    np.testing.assert_array_equal(backend.to_numpy(dK), expected_dK)
    np.testing.assert_array_equal(backend.to_numpy(dbias), dY.sum(axis=(0, 2, 3)))
    for gradient, like in ((dX, X), (dK, K)):
        assert tuple(gradient.shape) == like.shape and backend.dtype_name(gradient) == "float32"


def test_vjp_channels_last_and_low_ranks(backend):
    rng = np.random.default_rng(13)
    X = rng.integers(-3, 4, size=(2, 6, 7, 3)).astype(np.float32)
    K = rng.integers(-3, 4, size=(3, 2, 3, 4)).astype(np.float32)  # HWIO
    dY = rng.integers(-2, 3, size=(2, 3, 4, 4)).astype(np.float32)
    grads_last = cl.conv2d_vjp(
        *(backend.asarray(a, "float32") for a in (X, K, dY)), stride=2, padding="same", data_format="channels_last"
    )
    grads_first = cl.conv2d_vjp(
        X.transpose(0, 3, 1, 2),
        K.transpose(3, 2, 0, 1),
        dY.transpose(0, 3, 1, 2),
        stride=2,
        padding="same",
        backend="numpy",
    )
    np.testing.assert_array_equal(backend.to_numpy(grads_last[0]), grads_first[0].transpose(0, 2, 3, 1))
    np.testing.assert_array_equal(backend.to_numpy(grads_last[1]), grads_first[1].transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(backend.to_numpy(grads_last[2]), grads_first[2])
    dX, dK, dbias = cl.conv2d_vjp(
        backend.asarray(X[0, :, :, 0], "float32"),
        backend.asarray(K[:, :, 0, 0], "float32"),
        backend.asarray(np.ones((4, 6), np.float32), "float32"),
    )
    assert tuple(dX.shape) == (6, 7) and tuple(dK.shape) == (3, 2) and tuple(dbias.shape) == (1,)


def test_vjp_float_inputs_within_bound(backend):
    rng = np.random.default_rng(14)
    X, K = rng.normal(size=(2, 4, 9, 9)).astype(np.float32), rng.normal(size=(3, 4, 3, 3)).astype(np.float32)
    dY = rng.normal(size=(2, 3, 5, 5)).astype(np.float32)
    dX, dK, _ = cl.conv2d_vjp(*(backend.asarray(a, "float32") for a in (X, K, dY)), stride=2, padding=1)
    expected_dX, expected_dK = _exact_gradients(
        X.astype(float), K.astype(float), dY.astype(float), (2, 2), ((1, 1), (1, 1)), (1, 1)
    )
    bound_dX, bound_dK = _exact_gradients(
        np.abs(X.astype(float)), np.abs(K.astype(float)), np.abs(dY.astype(float)), (2, 2), ((1, 1), (1, 1)), (1, 1)
    )
    u = 2.0**-24
    reference.assert_within_bound(backend.to_numpy(dX), expected_dX, 2 * 3 * 9 * u * bound_dX, "dX")
    reference.assert_within_bound(backend.to_numpy(dK), expected_dK, 2 * 2 * 25 * u * bound_dK, "dK")
