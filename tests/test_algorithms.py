"""conv2d(..., algorithm=...) and pool2d(..., algorithm=...): every formulation on every backend gives the
native op's answer: bit-identical in the exact tier, within the section 4 bound on float inputs, with the
same gradients."""

from __future__ import annotations

import numpy as np
import pytest
import reference

import convlab as cl
from convlab import algorithms

CONV_ALGORITHMS = [a for a in algorithms.CONV_ALGORITHMS if a != "auto"] + ["auto"]
POOL_ALGORITHMS = [a for a in algorithms.POOL_ALGORITHMS if a != "auto"] + ["auto"]

CASES = [
    # (X shape NCHW, K shape OIHW, stride, padding, dilation, bias)
    ((1, 1, 9, 11), (1, 1, 3, 3), 1, 0, 1, False),
    ((2, 3, 8, 7), (4, 3, 3, 2), (2, 1), ((1, 0), (2, 1)), (1, 2), True),
    ((1, 2, 10, 10), (3, 2, 4, 4), 2, "same", 1, True),
    ((2, 5, 6, 6), (6, 5, 1, 1), 1, 0, 1, False),
    ((1, 4, 12, 9), (20, 4, 3, 3), 3, 2, 2, True),
    ((1, 1, 7, 7), (2, 1, 2, 3), 1, "same", (2, 1), False),
]


def _pads(x_shape, k_shape, stride, padding, dilation):
    geometry = cl.geometry.conv_geometry(x_shape, k_shape, stride=stride, padding=padding, dilation=dilation)
    return geometry.stride, geometry.pads, geometry.dilation


def _inputs(rng, x_shape, k_shape, with_bias, integers):
    if integers:
        X = rng.integers(-4, 5, size=x_shape).astype(np.float32)
        K = rng.integers(-3, 4, size=k_shape).astype(np.float32)
        b = rng.integers(-5, 6, size=k_shape[:1]).astype(np.float32) if with_bias else None
    else:
        X = rng.normal(size=x_shape).astype(np.float32)
        K = rng.normal(size=k_shape).astype(np.float32)
        b = rng.normal(size=k_shape[:1]).astype(np.float32) if with_bias else None
    return X, K, b


def _run(backend, algorithm, X, K, b, stride, padding, dilation, channels_last):
    if channels_last:
        X, K = X.transpose(0, 2, 3, 1), K.transpose(2, 3, 1, 0)
    y = cl.conv2d(
        backend.asarray(X, "float32"),
        backend.asarray(K, "float32"),
        None if b is None else backend.asarray(b, "float32"),
        stride=stride,
        padding=padding,
        dilation=dilation,
        data_format="channels_last" if channels_last else "channels_first",
        algorithm=algorithm,
    )
    y = backend.to_numpy(y)
    return y.transpose(0, 3, 1, 2) if channels_last else y


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("algorithm", CONV_ALGORITHMS)
@pytest.mark.parametrize("x_shape, k_shape, stride, padding, dilation, with_bias", CASES)
def test_conv_exact_on_integer_inputs(backend, algorithm, channels_last, x_shape, k_shape, stride, padding, dilation,
                                      with_bias):  # fmt: skip
    X, K, b = _inputs(np.random.default_rng(1), x_shape, k_shape, with_bias, integers=True)
    s, pads, d = _pads(x_shape, k_shape, stride, padding, dilation)
    expected = reference.conv2d(X.astype(float), K.astype(float), None if b is None else b.astype(float), s, pads, d)
    y = _run(backend, algorithm, X, K, b, stride, padding, dilation, channels_last)
    assert y.dtype == np.float32
    np.testing.assert_array_equal(y, expected)


@pytest.mark.parametrize("algorithm", CONV_ALGORITHMS)
@pytest.mark.parametrize("x_shape, k_shape, stride, padding, dilation, with_bias", CASES)
def test_conv_float_inputs_within_bound(backend, algorithm, x_shape, k_shape, stride, padding, dilation, with_bias):
    X, K, b = _inputs(np.random.default_rng(2), x_shape, k_shape, with_bias, integers=False)
    s, pads, d = _pads(x_shape, k_shape, stride, padding, dilation)
    X64, K64 = X.astype(float), K.astype(float)
    expected = reference.conv2d(X64, K64, None if b is None else b.astype(float), s, pads, d)
    bound = reference.conv2d_bound(X64, K64, s, pads, d)
    if b is not None:  # one more rounding: the bias add, as in convlab.testing
        n = K.shape[1] * K.shape[2] * K.shape[3]
        bound = bound * (n + 1) / n + 2 * 2.0**-24 * np.abs(b.astype(float)).reshape(1, -1, 1, 1)
    y = _run(backend, algorithm, X, K, b, stride, padding, dilation, False)
    reference.assert_within_bound(y, expected, bound, algorithm)


@pytest.mark.parametrize("algorithm", CONV_ALGORITHMS)
def test_conv_float64_stays_float64(backend, supports_float64, algorithm):
    if not supports_float64:
        pytest.skip("float64 not enabled on this backend")
    rng = np.random.default_rng(3)
    X, K = rng.normal(size=(1, 2, 6, 6)), rng.normal(size=(3, 2, 3, 3))
    y = cl.conv2d(backend.asarray(X, "float64"), backend.asarray(K, "float64"), padding=1, algorithm=algorithm)
    assert backend.dtype_name(y) == "float64"
    expected = reference.conv2d(X, K, None, (1, 1), ((1, 1), (1, 1)))
    reference.assert_within_bound(
        backend.to_numpy(y), expected, reference.conv2d_bound(X, K, pads=((1, 1), (1, 1)), dtype="float64")
    )


@pytest.mark.parametrize("algorithm", CONV_ALGORITHMS)
def test_low_rank_inputs_and_book_functions(backend, algorithm):
    X = backend.asarray(np.arange(20.0).reshape(4, 5), "float32")
    K = backend.asarray(np.array([[0.0, 1.0], [2.0, 3.0]]), "float32")
    y = cl.conv2d(X, K, algorithm=algorithm)
    expected = reference.corr2d(np.arange(20.0).reshape(4, 5), [[0, 1], [2, 3]])
    np.testing.assert_array_equal(backend.to_numpy(y), expected)


def _autodiff(backend, conv, params, dY) -> list:
    """The backend's autodiff gradients of ``sum(conv(*params) * dY)`` at the float32 tensors of ``params``."""
    if not backend.has_autodiff:
        pytest.skip("no automatic differentiation on this backend")
    dy = backend.asarray(dY, "float32")

    def loss(tensors):
        return backend.sum(conv(*tensors) * dy, (0, 1, 2, 3))

    _, grads = backend.value_and_grad(loss)([backend.asarray(p, "float32") for p in params])
    return [backend.to_numpy(g) for g in grads]


@pytest.mark.parametrize("algorithm", CONV_ALGORITHMS)
def test_gradients_through_every_algorithm(backend, algorithm):
    """value_and_grad through the formulation equals the closed-form conv2d_vjp (exact on integers)."""
    rng = np.random.default_rng(4)
    X, K, b = _inputs(rng, (2, 3, 7, 6), (4, 3, 3, 2), True, integers=True)
    dY = rng.integers(-2, 3, size=(2, 4, 4, 7)).astype(np.float32)
    x, config = backend.asarray(X, "float32"), dict(stride=(2, 1), padding=((1, 1), (0, 2)))
    dK, dbias = _autodiff(backend, lambda k, b: cl.conv2d(x, k, b, algorithm=algorithm, **config), (K, b), dY)
    _, expected_dK, expected_dbias = cl.conv2d_vjp(X, K, dY, backend="numpy", **config)
    np.testing.assert_array_equal(dK, expected_dK)
    np.testing.assert_array_equal(dbias, expected_dbias)


@pytest.mark.parametrize("algorithm", CONV_ALGORITHMS)
def test_training_with_input_gradients(backend, algorithm):
    """Gradient with respect to X too (in-place formulations must not run when X requires grad)."""
    rng = np.random.default_rng(5)
    X, K, _ = _inputs(rng, (1, 1, 9, 9), (1, 1, 3, 3), False, integers=True)
    dY = rng.integers(-2, 3, size=(1, 1, 9, 9)).astype(np.float32)
    dX, dK = _autodiff(backend, lambda x, k: cl.conv2d(x, k, padding=1, algorithm=algorithm), (X, K), dY)
    expected_dX, expected_dK, _ = cl.conv2d_vjp(X, K, dY, padding=1, backend="numpy")
    np.testing.assert_array_equal(dX, expected_dX)
    np.testing.assert_array_equal(dK, expected_dK)


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("algorithm", POOL_ALGORITHMS)
@pytest.mark.parametrize(
    "window, stride, padding, mode, count_include_pad",
    [
        (3, 1, 0, "max", True),
        (2, 2, 0, "avg", True),
        ((3, 2), (2, 1), ((1, 0), (0, 1)), "max", True),
        (4, 2, ((1, 2), (2, 1)), "avg", False),
        (4, 2, 1, "avg", True),
    ],
)
def test_pool_exact(backend, algorithm, channels_last, window, stride, padding, mode, count_include_pad):
    rng = np.random.default_rng(6)
    X = rng.integers(-8, 9, size=(2, 3, 9, 10)).astype(np.float32)
    expected = cl.pool2d(X, window, mode, stride, padding, count_include_pad, backend="numpy", algorithm="native")
    x = X.transpose(0, 2, 3, 1) if channels_last else X
    y = cl.pool2d(
        backend.asarray(x, "float32"),
        window,
        mode,
        stride,
        padding,
        count_include_pad,
        data_format="channels_last" if channels_last else "channels_first",
        algorithm=algorithm,
    )
    y = backend.to_numpy(y)
    y = y.transpose(0, 3, 1, 2) if channels_last else y
    if mode == "avg" and not count_include_pad:  # divisions by 1..16 real pixels: not all power-of-two windows
        np.testing.assert_allclose(y, expected, rtol=2.0**-22)
    else:
        np.testing.assert_array_equal(y, expected)


@pytest.mark.parametrize("algorithm", POOL_ALGORITHMS)
def test_pool_gradients(backend, algorithm):
    if not backend.has_autodiff:
        pytest.skip("no automatic differentiation on this backend")
    X = np.random.default_rng(7).permutation(2 * 3 * 8 * 8).reshape(2, 3, 8, 8).astype(np.float32)

    def loss(params):
        return backend.sum(cl.pool2d(params[0], 2, "max", 2, algorithm=algorithm), (0, 1, 2, 3))

    _, (dX,) = backend.value_and_grad(loss)([backend.asarray(X, "float32")])
    windows = X.reshape(2, 3, 4, 2, 4, 2)
    expected = (windows == windows.max(axis=(3, 5), keepdims=True)).astype(np.float32).reshape(X.shape)
    np.testing.assert_array_equal(backend.to_numpy(dX), expected)


@pytest.mark.parametrize("bad", ["fft2", "", "Native", None, 3])
def test_unknown_algorithm_is_an_error(backend, bad):
    x = backend.asarray(np.ones((1, 1, 4, 4)), "float32")
    with pytest.raises(cl.ConvlabValueError, match="algorithm must be one of .*'shift'.*'gemm'"):
        cl.conv2d(x, x, algorithm=bad)
    with pytest.raises(cl.ConvlabValueError, match="algorithm must be one of .*'layout'"):
        cl.pool2d(x, 2, algorithm=bad)


def test_rule_tables_are_well_formed(backend):
    shape = algorithms.ConvShape(1, 1, 1, 64, 64, 3, 3, (1, 1), (1, 1), False, "float32")
    for description, predicate, algorithm in backend.conv_rules:
        assert isinstance(description, str) and description
        assert algorithm in algorithms.CONV_ALGORITHMS[1:]
        assert predicate(shape) in (True, False)
    pool = algorithms.PoolShape(1, 1, 64, 64, (3, 3), (1, 1), "max", False, "float32")
    for description, predicate, algorithm in backend.pool_rules:
        assert isinstance(description, str) and description
        assert algorithm in algorithms.POOL_ALGORITHMS[1:]
        assert predicate(pool) in (True, False)


def test_subclass_replacing_the_native_op_is_not_steered_by_inherited_rules():
    """A plugin that overrides NumpyBackend.conv2d gets its own op under "auto", not the parent's shift/gemm."""
    from convlab.numpy_backend import NumpyBackend

    calls = []

    class Counting(NumpyBackend):
        name = "counting"

        def conv2d(self, x, k, *args):
            calls.append(1)
            return super().conv2d(x, k, *args)

    be = Counting()
    shape = algorithms.ConvShape(2, 2, 4, 32, 32, 2, 2, (2, 2), (1, 1), False, "float32")  # NumPy's table: gemm
    assert algorithms.choose(NumpyBackend(), NumpyBackend.conv_rules, shape, None) == "gemm"
    assert algorithms.choose(be, be.conv_rules, shape, None) == "native"
    cl.conv2d(np.ones((1, 1, 8, 8)), np.ones((1, 1, 3, 3)), backend=be)
    assert calls
