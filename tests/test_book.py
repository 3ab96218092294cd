"""Every value the seed notebooks (../shared/seeds) print, on every backend."""

from __future__ import annotations

import numpy as np
import pytest

import convlab as cl

RAMP = [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0], [6.0, 7.0, 8.0]]


def tensor(backend, values, dtype="float32"):
    return backend.asarray(np.asarray(values, dtype=dtype), dtype)


def test_corr2d_3x3_example(backend):
    y = cl.corr2d(tensor(backend, RAMP), tensor(backend, [[0.0, 1.0], [2.0, 3.0]]))
    np.testing.assert_array_equal(backend.to_numpy(y), [[19.0, 25.0], [37.0, 43.0]])
    assert backend.dtype_name(y) == "float32"


def test_edge_detection_on_stripes(backend):
    X = tensor(backend, cl.images.stripes())
    y = backend.to_numpy(cl.corr2d(X, tensor(backend, cl.kernels.edge())))
    np.testing.assert_array_equal(y, np.tile([0.0, 1.0, 0.0, 0.0, 0.0, -1.0, 0.0], (6, 1)))
    transposed = backend.to_numpy(cl.corr2d(tensor(backend, cl.images.stripes().T), tensor(backend, [[1.0, -1.0]])))
    np.testing.assert_array_equal(transposed, np.zeros((8, 5)))


def test_exercise_horizontal_stripes_and_transposes(backend):
    # seed 000: X = ones((8, 6)) with rows 2:6 zero; K finds nothing, X.T finds edges, K.T on X.T nothing
    X = np.ones((8, 6), dtype=np.float32)
    X[2:6, :] = 0
    K = np.array([[1.0, -1.0]], dtype=np.float32)
    np.testing.assert_array_equal(backend.to_numpy(cl.corr2d(tensor(backend, X), tensor(backend, K))), np.zeros((8, 5)))
    np.testing.assert_array_equal(
        backend.to_numpy(cl.corr2d(tensor(backend, X.T), tensor(backend, K))),
        np.tile([0.0, 1.0, 0.0, 0.0, 0.0, -1.0, 0.0], (6, 1)),
    )
    np.testing.assert_array_equal(
        backend.to_numpy(cl.corr2d(tensor(backend, X.T), tensor(backend, K.T))), np.zeros((5, 8))
    )


@pytest.mark.parametrize(
    "kernel, padding, stride, expected",
    [
        ((3, 3), "same", 1, (8, 8)),
        ((5, 3), "same", 1, (8, 8)),
        ((5, 3), (2, 1), 1, (8, 8)),  # the torch notebook's explicit pads
        ((3, 3), "same", 2, (4, 4)),
        ((3, 3), 1, 2, (4, 4)),
        ((3, 5), "valid", (3, 4), (2, 1)),
        ((3, 5), (0, 1), (3, 4), (2, 2)),  # the torch/MXNet book's version of the last example
    ],
)
def test_padding_and_stride_shapes(backend, kernel, padding, stride, expected):
    X = tensor(backend, np.random.default_rng(0).uniform(size=(8, 8)))
    K = tensor(backend, np.ones(kernel))
    y = cl.conv2d(X, K, padding=padding, stride=stride)
    assert tuple(y.shape) == expected
    assert cl.output_shape((8, 8), kernel, padding=padding, stride=stride) == expected


MULTI_X = [RAMP, [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]]]
MULTI_K = [[[0.0, 1.0], [2.0, 3.0]], [[1.0, 2.0], [3.0, 4.0]]]


def test_multiple_input_channels(backend):
    y = cl.corr2d_multi_in(tensor(backend, MULTI_X), tensor(backend, MULTI_K))
    np.testing.assert_array_equal(backend.to_numpy(y), [[56.0, 72.0], [104.0, 120.0]])


def test_multiple_output_channels(backend):
    K = np.stack([np.asarray(MULTI_K) + i for i in range(3)])
    assert K.shape == (3, 2, 2, 2)
    y = cl.corr2d_multi_in_out(tensor(backend, MULTI_X), tensor(backend, K))
    np.testing.assert_array_equal(
        backend.to_numpy(y),
        [[[56.0, 72.0], [104.0, 120.0]], [[76.0, 100.0], [148.0, 172.0]], [[96.0, 128.0], [192.0, 224.0]]],
    )


def test_1x1_convolution_is_a_matrix_product(backend):
    rng = np.random.default_rng(1)
    X = tensor(backend, rng.normal(size=(3, 3, 3)))
    K = tensor(backend, rng.normal(size=(2, 3, 1, 1)))
    y1 = backend.to_numpy(cl.corr2d_multi_in_out_1x1(X, K))
    y2 = backend.to_numpy(cl.corr2d_multi_in_out(X, K))
    assert float(np.abs(y1 - y2).sum()) < 1e-6


def test_pooling_examples(backend):
    X = tensor(backend, RAMP)
    np.testing.assert_array_equal(backend.to_numpy(cl.pool2d(X, (2, 2))), [[4.0, 5.0], [7.0, 8.0]])
    np.testing.assert_array_equal(backend.to_numpy(cl.pool2d(X, (2, 2), "avg")), [[2.0, 3.0], [5.0, 6.0]])


def test_pooling_padding_and_stride(backend):
    X = tensor(backend, np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4))
    assert backend.to_numpy(cl.MaxPool2D(3, backend=backend.name)(X)).ravel().tolist() == [10.0]
    # the TensorFlow notebook pads one row and column at the top/left with zeros, window 3, stride 2
    expected = [[5.0, 7.0], [13.0, 15.0]]
    y = cl.pool2d(X, 3, stride=2, padding=((1, 0), (1, 0)))
    np.testing.assert_array_equal(backend.to_numpy(y)[0, 0], expected)
    y = cl.MaxPool2D(3, padding=1, stride=2, backend=backend.name)(X)  # the torch notebook's form
    np.testing.assert_array_equal(backend.to_numpy(y)[0, 0], expected)
    y = cl.MaxPool2D((2, 3), stride=(2, 3), padding=(0, 1), backend=backend.name)(X)
    np.testing.assert_array_equal(backend.to_numpy(y)[0, 0], expected)


def test_pooling_over_channels(backend):
    X = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)
    X = tensor(backend, np.concatenate([X, X + 1], axis=1))
    y = backend.to_numpy(cl.MaxPool2D(3, padding=1, stride=2, backend=backend.name)(X))
    np.testing.assert_array_equal(y, [[[[5.0, 7.0], [13.0, 15.0]], [[6.0, 8.0], [14.0, 16.0]]]])
    y_last = cl.pool2d(
        backend.asarray(np.transpose(backend.to_numpy(X), (0, 2, 3, 1)), "float32"),
        3,
        stride=2,
        padding=((1, 0), (1, 0)),
        data_format="channels_last",
    )
    np.testing.assert_array_equal(backend.to_numpy(y_last), np.transpose(y, (0, 2, 3, 1)))


def test_learning_the_edge_kernel(backend):
    """Section 6.2.4: from the stripes and their edges, ten epochs recover K = [1, -1]."""
    X = tensor(backend, cl.images.stripes())
    Y = cl.corr2d(X, tensor(backend, cl.kernels.edge()))
    result = cl.train_kernel(X, Y, (1, 2), lr=3e-2, epochs=10, seed=0)
    assert len(result.losses) == 10
    assert all(later < earlier for earlier, later in zip(result.losses, result.losses[1:]))
    assert result.losses[-1] < 0.05
    np.testing.assert_allclose(backend.to_numpy(result.kernel).ravel(), [1.0, -1.0], atol=0.05)
