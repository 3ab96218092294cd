"""The exercises as features: hand-designed kernels, test images, cross-correlation as a matrix product."""

from __future__ import annotations

import numpy as np
import pytest
import reference

import convlab as cl


def test_diagonal_image_under_the_edge_kernel(backend):
    X = cl.images.diagonal(6)
    K = cl.kernels.edge()
    y = backend.to_numpy(cl.corr2d(backend.asarray(X, "float32"), backend.asarray(K, "float32")))
    np.testing.assert_array_equal(y, reference.corr2d(X, K))
    np.testing.assert_array_equal(y, np.eye(6, 5))  # the edge shows on the diagonal
    y_t = backend.to_numpy(cl.corr2d(backend.asarray(X.T, "float32"), backend.asarray(K, "float32")))
    np.testing.assert_array_equal(y_t, -np.eye(6, 5, k=-1))
    y_kt = backend.to_numpy(cl.corr2d(backend.asarray(X, "float32"), backend.asarray(K.T, "float32")))
    np.testing.assert_array_equal(y_kt, -np.eye(5, 6, k=1))


@pytest.mark.parametrize("order", [0, 1, 2, 3, 4])
def test_derivative_kernel_differentiates_polynomials_exactly(backend, order):
    """A kernel of order+1 taps gives order! times the leading coefficient on x**order; fewer taps cannot."""
    x = np.arange(12, dtype=np.float64)
    row = (x**order + (3 * x ** (order - 1) if order else 0))[None, :]
    K = cl.kernels.derivative(order)
    assert K.shape == (1, cl.kernels.min_size(order)) == (1, order + 1)
    y = backend.to_numpy(cl.corr2d(backend.asarray(row, "float32"), backend.asarray(K, "float32")))
    np.testing.assert_array_equal(y, np.full((1, 12 - order), float(np.prod(range(1, order + 1)))))


def test_second_derivative_laplacian_integral_box_sobel(backend):
    ramp2 = np.add.outer(np.arange(6.0) ** 2, np.arange(7.0) ** 2)
    conv = lambda X, K: backend.to_numpy(cl.corr2d(backend.asarray(X, "float32"), backend.asarray(K, "float32")))  # noqa: E731
    np.testing.assert_array_equal(conv(ramp2, cl.kernels.second_derivative()), np.full((6, 5), 2.0))
    np.testing.assert_array_equal(conv(ramp2, cl.kernels.second_derivative("y")), np.full((4, 7), 2.0))
    np.testing.assert_array_equal(conv(ramp2, cl.kernels.laplacian()), np.full((4, 5), 4.0))
    np.testing.assert_array_equal(conv(np.ones((3, 5)), cl.kernels.integral(3)), np.full((3, 3), 3.0))
    np.testing.assert_allclose(conv(np.ones((4, 4)), cl.kernels.box(2)), np.ones((3, 3)))
    np.testing.assert_array_equal(conv(cl.images.stripes(), cl.kernels.sobel("y")), np.zeros((4, 6)))


@pytest.mark.parametrize(
    "shape, kernel, kwargs",
    [
        ((3, 3), (2, 2), {}),
        ((6, 8), (1, 2), {}),
        ((7, 6), (3, 2), dict(stride=2, padding=1)),
        ((5, 5), (2, 2), dict(dilation=2)),
    ],
)
def test_conv_matrix_and_corr2d_matmul(backend, shape, kernel, kwargs):
    rng = np.random.default_rng(2)
    X = rng.integers(-4, 5, size=shape).astype(np.float32)
    K = rng.integers(-3, 4, size=kernel).astype(np.float32)
    M = backend.to_numpy(cl.conv_matrix(backend.asarray(K, "float32"), shape, **kwargs))
    direct = backend.to_numpy(cl.conv2d(backend.asarray(X, "float32"), backend.asarray(K, "float32"), **kwargs))
    assert M.shape == (direct.size, X.size)
    np.testing.assert_array_equal((M @ X.ravel()).reshape(direct.shape), direct)
    via_matmul = cl.corr2d_matmul(backend.asarray(X, "float32"), backend.asarray(K, "float32"), **kwargs)
    np.testing.assert_array_equal(backend.to_numpy(via_matmul), direct)


def test_images():
    assert cl.images.stripes().shape == (6, 8) and cl.images.stripes().dtype == np.float32
    board = cl.images.checkerboard(4, 1)
    np.testing.assert_array_equal(board, [[1, 0, 1, 0], [0, 1, 0, 1], [1, 0, 1, 0], [0, 1, 0, 1]])
    np.testing.assert_array_equal(cl.images.ramp(), np.arange(9.0).reshape(3, 3))
