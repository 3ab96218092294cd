"""conv_transpose2d (d2l section 14.10): the book's examples, the oracle, the adjoint identity, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import reference
import transpose_cases as tc
from hypothesis import given, settings
from hypothesis import strategies as st

import convlab as cl

BOOK_X = [[0, 1], [2, 3]]
BOOK_K = [[0, 1], [2, 3]]


def test_book_examples(backend):
    X, K = backend.asarray(np.array(BOOK_X, np.float32), "float32"), backend.asarray(np.array(BOOK_K), "float32")
    assert backend.to_numpy(cl.conv_transpose2d(X, K)).tolist() == [[0, 0, 1], [0, 4, 6], [4, 12, 9]]
    assert backend.to_numpy(cl.conv_transpose2d(X, K, stride=2)).tolist() == [
        [0, 0, 0, 1], [0, 0, 2, 3], [0, 2, 0, 3], [4, 6, 6, 9],
    ]  # fmt: skip
    assert backend.to_numpy(cl.conv_transpose2d(X, K, padding=1)).tolist() == [[4]]


GEOMETRIES = [
    dict(stride=1, padding=0, dilation=1, output_padding=0),
    dict(stride=2, padding=1, dilation=1, output_padding=1),
    dict(stride=(2, 3), padding=((0, 2), (1, 0)), dilation=(1, 2), output_padding=(1, 0)),
    dict(stride=1, padding=(1, 0), dilation=2, output_padding=1),
]


@pytest.mark.parametrize("geometry", GEOMETRIES, ids=lambda g: str(tuple(g.values())))
@pytest.mark.parametrize("data_format", ["channels_first", "channels_last"])
@pytest.mark.parametrize("algorithm", ["auto", "correlation"])
def test_exact_against_the_oracle(backend, geometry, data_format, algorithm):
    rng = np.random.default_rng(3)
    X = rng.integers(-4, 5, (2, 3, 5, 4)).astype(np.float32)
    K = rng.integers(-4, 5, (3, 2, 3, 2)).astype(np.float32)
    bias = np.array([1.0, -2.0], np.float32)
    pair = lambda v: v if isinstance(v, tuple) else (v, v)  # noqa: E731
    padding = geometry["padding"]
    pads = (
        padding
        if isinstance(padding, tuple) and isinstance(padding[0], tuple)
        else tuple((p, p) for p in pair(padding))
    )
    expected = reference.conv_transpose2d(
        X, K, bias, pair(geometry["stride"]), pads, pair(geometry["dilation"]), pair(geometry["output_padding"])
    )
    x, k = X, K
    if data_format == "channels_last":
        x, k = X.transpose(0, 2, 3, 1), K.transpose(2, 3, 1, 0)
    y = cl.conv_transpose2d(
        backend.asarray(x, "float32"), backend.asarray(k, "float32"), backend.asarray(bias, "float32"),
        data_format=data_format, algorithm=algorithm, **geometry,
    )  # fmt: skip
    y = backend.to_numpy(y)
    if data_format == "channels_last":
        y = y.transpose(0, 3, 1, 2)
    np.testing.assert_array_equal(y, expected)


STRIDE_ONE = [  # padding, dilation, output_padding; the last two pad more than dilation * (k - 1): a crop, so None
    (0, 1, 0), (1, 1, 0), (((0, 2), (1, 0)), 1, 0), ((1, 0), 2, 1), (((3, 0), (1, 2)), (2, 3), (1, 2)),
    (3, 1, 0), (((0, 0), (0, 3)), (2, 1), 0),
]  # fmt: skip


@pytest.mark.parametrize("padding, dilation, output_padding", STRIDE_ONE, ids=str)
@pytest.mark.parametrize("data_format", ["channels_first", "channels_last"])
def test_stride_one_correlation_is_the_oracle(backend, padding, dilation, output_padding, data_format):
    from convlab.conv_transpose import conv_transpose_geometry, correlation_kernel, stride_one_correlation

    rng = np.random.default_rng(5)
    X, K = rng.integers(-4, 5, (2, 3, 6, 7)).astype(np.float32), rng.integers(-4, 5, (3, 2, 3, 3)).astype(np.float32)
    bias = np.array([1.0, -2.0], np.float32)
    x, k = (X.transpose(0, 2, 3, 1), K.transpose(2, 3, 1, 0)) if data_format == "channels_last" else (X, K)
    options = dict(padding=padding, dilation=dilation, output_padding=output_padding)
    geometry = conv_transpose_geometry(x.shape, k.shape, data_format=data_format, **options)
    inner = stride_one_correlation(geometry)
    (top, bottom), (left, right) = geometry.forward.pads
    if max(top, bottom) > 2 * geometry.forward.dilation[0] or max(left, right) > 2 * geometry.forward.dilation[1]:
        assert inner is None, inner
        return
    assert inner is not None and inner.out4 == geometry.out4
    xt, kt, bt = (backend.asarray(a, "float32") for a in (x, k, bias))
    y = backend.to_numpy(backend.conv2d(xt, correlation_kernel(backend, kt, geometry), bt, inner))
    y = y.transpose(0, 3, 1, 2) if data_format == "channels_last" else y
    pair = lambda v: v if isinstance(v, tuple) else (v, v)  # noqa: E731
    expected = reference.conv_transpose2d(
        X, K, bias, (1, 1), geometry.forward.pads, pair(dilation), pair(output_padding)
    )
    np.testing.assert_array_equal(y, expected)


@settings(max_examples=40, deadline=None)
@given(
    stride=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    dilation=st.tuples(st.integers(1, 2), st.integers(1, 2)),
    pads=st.tuples(st.tuples(st.integers(0, 2), st.integers(0, 2)), st.tuples(st.integers(0, 2), st.integers(0, 2))),
    kernel=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    size=st.tuples(st.integers(4, 9), st.integers(4, 9)),
    seed=st.integers(0, 2**16),
)
def test_adjoint_of_conv2d(stride, dilation, pads, kernel, size, seed):
    """sum(conv2d(A, W) * B) == sum(A * conv_transpose2d(B, W)), exactly for integer data."""
    rng = np.random.default_rng(seed)
    A = rng.integers(-3, 4, (1, 2) + size).astype(np.float64)
    W = rng.integers(-3, 4, (3, 2) + kernel).astype(np.float64)
    try:
        Y = cl.conv2d(A, W, stride=stride, padding=pads, dilation=dilation)
    except cl.ConvlabValueError:
        return  # the window does not fit
    B = rng.integers(-3, 4, Y.shape).astype(np.float64)
    extra = tuple(
        (n + p[0] + p[1] - d * (k - 1) - 1) % s for n, p, d, k, s in zip(size, pads, dilation, kernel, stride)
    )
    if any(e >= max(s, d) for e, s, d in zip(extra, stride, dilation)):
        return  # no output_padding reaches A's size (torch's rule)
    T = cl.conv_transpose2d(B, W, stride=stride, padding=pads, dilation=dilation, output_padding=extra)
    assert T.shape == A.shape
    assert float((Y * B).sum()) == float((A * T).sum())


def test_numpy_vjp_matches_numeric_gradient():
    rng = np.random.default_rng(0)
    X, K = rng.standard_normal((1, 2, 3, 4)), rng.standard_normal((2, 3, 2, 2))
    options = dict(stride=2, padding=1, output_padding=1)
    dY = rng.standard_normal(cl.conv_transpose2d(X, K, **options).shape)
    dX, dK, db = cl.conv_transpose2d_vjp(X, K, dY, **options)
    f_x = lambda x: float((cl.conv_transpose2d(x, K, **options) * dY).sum())  # noqa: E731
    f_k = lambda k: float((cl.conv_transpose2d(X, k, **options) * dY).sum())  # noqa: E731
    np.testing.assert_allclose(dX, reference.numeric_gradient(f_x, X), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(dK, reference.numeric_gradient(f_k, K), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(db, dY.sum(axis=(0, 2, 3)), rtol=1e-12)


def test_layer_is_seeded_and_native(backend):
    layer = cl.ConvTranspose2D(3, 2, 4, stride=2, padding=1, output_padding=1, seed=7, backend=backend.name)
    twin = cl.ConvTranspose2D(3, 2, 4, stride=2, padding=1, output_padding=1, seed=7, backend="numpy")
    X = np.random.default_rng(1).standard_normal((1, 2, 5, 5)).astype(np.float32)
    y = backend.to_numpy(layer(backend.asarray(X, "float32")))
    assert y.shape == (1, 4, 10, 10)
    np.testing.assert_allclose(y, twin(X), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(stride=2, output_padding=2), "output_padding must be smaller than the stride or the dilation"),
        (dict(padding=3), "the output would be"),
        (dict(padding="same"), "padding of conv_transpose2d"),
        (dict(padding=-1), "must not be negative"),
    ],
)
def test_bad_input(kwargs, message):
    with pytest.raises(cl.ConvlabValueError, match=message):
        cl.conv_transpose2d(np.ones((1, 2, 3, 3)), np.ones((2, 4, 2, 2)), **kwargs)


def test_channel_mismatch_names_the_shapes():
    with pytest.raises(cl.ConvlabValueError, match=r"X has 3 channels but K expects 2.*\(1, 3, 3, 3\)"):
        cl.conv_transpose2d(np.ones((1, 3, 3, 3)), np.ones((2, 4, 2, 2)))


# -- every backend, on the geometries of tests/transpose_cases.py (framework-specific behaviour: tests/backends/) --


@pytest.mark.parametrize("case", tc.GEOMETRIES, ids=tc.IDS)
def test_float64_random_within_the_bound(backend, supports_float64, case):
    if not supports_float64:
        pytest.skip(f"{backend.name}: float64 is off")
    _, x_shape, k_shape, stride, pads, dilation, extra = case
    rng = np.random.default_rng(7)
    X, K = rng.standard_normal(x_shape), rng.standard_normal(k_shape)
    geometry = tc.options(stride, pads, dilation, extra)
    y = cl.conv_transpose2d(backend.asarray(X, "float64"), backend.asarray(K, "float64"), **geometry)
    assert backend.dtype_name(y) == "float64"
    exact = reference.conv_transpose2d(X, K, None, stride, pads, dilation, extra)
    bound = tc.forward_bound(X, K, None, geometry, "float64")
    reference.assert_within_bound(backend.to_numpy(y), exact, bound, backend.name)


@tc.each_case_layout_and_algorithm
def test_autodiff_and_the_closed_form_vjp_within_the_bound(backend, case, data_format, algorithm):
    """The framework's autodiff through either formulation, and conv_transpose2d_vjp on the backend's tensors."""
    if not backend.has_autodiff:
        pytest.skip(f"{backend.name} has no automatic differentiation")
    X, K, bias, dY, geometry = tc.gradient_operands(case, data_format)
    x, k, b, dy = (backend.asarray(a, "float32") for a in (X, K, bias, dY))
    axes = tuple(range(dY.ndim))

    def loss(params):
        y = cl.conv_transpose2d(params[0], params[1], params[2], algorithm=algorithm, **geometry)
        return backend.sum(y * dy, axes)

    _, grads = backend.value_and_grad(loss)([x, k, b])
    tc.check_gradients([backend.to_numpy(g) for g in grads], X, K, dY, geometry, f"autodiff ({algorithm})")
    closed = cl.conv_transpose2d_vjp(x, k, dy, **geometry)
    assert all(backend.is_tensor(g) for g in closed)
    tc.check_gradients([backend.to_numpy(g) for g in closed], X, K, dY, geometry, "conv_transpose2d_vjp")
