"""Every rule of DESIGN.md section 3, checked on every backend against the float64 loop oracle."""

from __future__ import annotations

import numpy as np
import pytest
import reference
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import convlab as cl

PAD_FORMS = [
    (0, ((0, 0), (0, 0))),
    (1, ((1, 1), (1, 1))),
    ((2, 1), ((2, 2), (1, 1))),
    (((0, 2), (1, 0)), ((0, 2), (1, 0))),
    ("valid", ((0, 0), (0, 0))),
]


def integer_inputs(shape_x, shape_k, seed=0):
    rng = np.random.default_rng(seed)
    return (
        rng.integers(-4, 5, size=shape_x).astype(np.float32),
        rng.integers(-3, 4, size=shape_k).astype(np.float32),
    )


@pytest.mark.parametrize("padding, pads", PAD_FORMS)
@pytest.mark.parametrize("stride", [1, 2, (1, 3)])
@pytest.mark.parametrize("dilation", [1, (2, 1)])
def test_conv2d_integer_inputs_are_exact(backend, padding, pads, stride, dilation):
    """Integer-valued inputs with small partial sums: bit-identical to the oracle (DESIGN.md section 4)."""
    X, K = integer_inputs((2, 3, 7, 8), (4, 3, 3, 2))
    bias = np.array([1, -2, 0, 3], dtype=np.float32)
    y = cl.conv2d(
        backend.asarray(X, "float32"),
        backend.asarray(K, "float32"),
        backend.asarray(bias, "float32"),
        stride=stride,
        padding=padding,
        dilation=dilation,
    )
    s = stride if isinstance(stride, tuple) else (stride, stride)
    d = dilation if isinstance(dilation, tuple) else (dilation, dilation)
    expected = reference.conv2d(X, K, bias, s, pads, d)
    assert backend.dtype_name(y) == "float32"
    np.testing.assert_array_equal(backend.to_numpy(y), expected)


@pytest.mark.parametrize("kernel", [(3, 3), (2, 2), (4, 3), (1, 5)])
@pytest.mark.parametrize("stride", [1, 2, 3])
@pytest.mark.parametrize("size", [(7, 7), (8, 6)])
def test_same_padding_rule(backend, kernel, stride, size):
    """'same': output ceil(in / stride), total pad as TF/JAX, odd extra at the bottom/right, any stride."""
    X, K = integer_inputs((1, 1) + size, (1, 1) + kernel, seed=3)
    y = cl.conv2d(backend.asarray(X, "float32"), backend.asarray(K, "float32"), padding="same", stride=stride)
    pads = tuple(reference.same_pads(n, k, stride, 1) for n, k in zip(size, kernel))
    expected = reference.conv2d(X, K, None, (stride, stride), pads, (1, 1))
    assert expected.shape[2:] == tuple(-(-n // stride) for n in size)
    np.testing.assert_array_equal(backend.to_numpy(y), expected)


def test_channels_last_matches_channels_first(backend):
    X, K = integer_inputs((2, 3, 6, 7), (5, 3, 3, 3), seed=4)
    first = cl.conv2d(backend.asarray(X, "float32"), backend.asarray(K, "float32"), padding="same", stride=2)
    last = cl.conv2d(
        backend.asarray(X.transpose(0, 2, 3, 1), "float32"),
        backend.asarray(K.transpose(2, 3, 1, 0), "float32"),
        padding="same",
        stride=2,
        data_format="channels_last",
    )
    np.testing.assert_array_equal(backend.to_numpy(last), backend.to_numpy(first).transpose(0, 2, 3, 1))


@pytest.mark.parametrize("scale", [1e-4, 1.0, 1e4])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_conv2d_random_floats_within_bound(backend, supports_float64, scale, dtype):
    if dtype == "float64" and not supports_float64:
        pytest.skip(f"{backend.name} has float64 turned off")
    rng = np.random.default_rng(5)
    X = (rng.normal(size=(2, 4, 9, 9)) * scale).astype(dtype)
    K = rng.normal(size=(3, 4, 3, 3)).astype(dtype)
    pads = ((1, 2), (0, 1))
    y = cl.conv2d(backend.asarray(X, dtype), backend.asarray(K, dtype), padding=pads, stride=2, dilation=(1, 2))
    assert backend.dtype_name(y) == dtype
    expected = reference.conv2d(X, K, None, (2, 2), pads, (1, 2))
    bound = reference.conv2d_bound(X, K, (2, 2), pads, (1, 2), dtype)
    reference.assert_within_bound(backend.to_numpy(y), expected, bound, f"{backend.name} {dtype} scale {scale}")


def test_cancellation_within_bound(backend):
    """Large terms that cancel: a fixed rtol would fail here for honest reasons; the bound does not."""
    rng = np.random.default_rng(6)
    X = rng.normal(size=(1, 8, 10, 10)).astype(np.float32) * 1e3
    K = rng.normal(size=(2, 8, 3, 3)).astype(np.float32)
    K[1] = -K[0] * (1 + 1e-6)
    y = cl.conv2d(backend.asarray(X, "float32"), backend.asarray(K, "float32"))
    expected = reference.conv2d(X, K)
    reference.assert_within_bound(backend.to_numpy(y), expected, reference.conv2d_bound(X, K), "cancellation")


@pytest.mark.parametrize("mode", ["max", "avg"])
@pytest.mark.parametrize("count_include_pad", [True, False])
@pytest.mark.parametrize(
    "window, stride, padding, pads",
    [
        ((2, 2), (2, 2), 0, ((0, 0), (0, 0))),
        ((3, 3), (2, 2), 1, ((1, 1), (1, 1))),
        ((2, 4), (1, 3), ((1, 0), (2, 1)), ((1, 0), (2, 1))),
        ((3, 2), (2, 1), "same", None),
    ],
)
def test_pool2d_matches_oracle(backend, mode, count_include_pad, window, stride, padding, pads):
    rng = np.random.default_rng(7)
    X = rng.integers(-9, 10, size=(2, 3, 7, 8)).astype(np.float32) - 20  # all negative: -inf pads matter
    if pads is None:
        pads = tuple(reference.same_pads(n, w, s, 1) for n, w, s in zip(X.shape[2:], window, stride))
    y = cl.pool2d(backend.asarray(X, "float32"), window, mode, stride, padding, count_include_pad)
    expected = reference.pool2d(X, window, stride, pads, mode, count_include_pad)
    actual = backend.to_numpy(y)
    power_of_two = window[0] * window[1] in (1, 2, 4, 8, 16)
    if mode == "max" or (power_of_two and (count_include_pad or pads == ((0, 0), (0, 0)))):
        np.testing.assert_array_equal(actual, expected)  # the exact tier
    else:
        np.testing.assert_allclose(actual, expected, rtol=4 * 2.0**-24 * window[0] * window[1], atol=0)


@pytest.mark.parametrize("shape", [(5, 6), (2, 5, 6), (1, 2, 5, 6)])
def test_pool2d_ranks_and_channels_last(backend, shape):
    X = np.arange(np.prod(shape), dtype=np.float32).reshape(shape)
    y = cl.pool2d(backend.asarray(X, "float32"), 2, "avg", 2)
    assert tuple(y.shape) == shape[:-2] + (2, 3)
    if len(shape) == 4:
        last = cl.pool2d(backend.asarray(X.transpose(0, 2, 3, 1), "float32"), 2, "avg", 2, data_format="channels_last")
        np.testing.assert_array_equal(backend.to_numpy(last), backend.to_numpy(y).transpose(0, 2, 3, 1))


def test_input_ranks(backend):
    X, K = integer_inputs((3, 5, 5), (2, 3, 2, 2))
    y3 = cl.conv2d(backend.asarray(X, "float32"), backend.asarray(K, "float32"))
    assert tuple(y3.shape) == (2, 4, 4)
    y4 = cl.conv2d(backend.asarray(X[None], "float32"), backend.asarray(K, "float32"))
    np.testing.assert_array_equal(backend.to_numpy(y4)[0], backend.to_numpy(y3))
    single = cl.conv2d(backend.asarray(X[0], "float32"), backend.asarray(K[:1, :1], "float32"))
    assert tuple(single.shape) == (4, 4)  # a 2-D X with one output channel stays 2-D
    many = cl.conv2d(backend.asarray(X[0], "float32"), backend.asarray(K[:, :1], "float32"))
    assert tuple(many.shape) == (2, 4, 4)


def test_dtype_rules(backend, supports_float64):
    ints = np.arange(9).reshape(3, 3)
    y = cl.corr2d(ints, np.ones((2, 2), dtype=np.int32), backend=backend.name)
    assert backend.dtype_name(y) == "float32"
    np.testing.assert_array_equal(backend.to_numpy(y), [[8, 12], [20, 24]])
    y = cl.corr2d([[0.5, 1.5], [2.5, 3.5]], [[True]], backend=backend.name)  # lists and bools become float32
    assert backend.dtype_name(y) == "float32"
    if supports_float64:
        y = cl.corr2d(
            backend.asarray(ints.astype(np.float32), "float32"),
            backend.asarray(np.ones((2, 2)), "float64"),
        )
        assert backend.dtype_name(y) == "float64"  # float32 X with float64 K promotes to float64
        p = cl.pool2d(backend.asarray(ints.astype(np.float64), "float64"), 2)
        assert backend.dtype_name(p) == "float64"


def test_backend_tensors_in_backend_tensors_out(backend):
    X = backend.asarray(np.ones((4, 4), dtype=np.float32), "float32")
    for result in (
        cl.corr2d(X, np.ones((2, 2), np.float32)),
        cl.conv2d(X, [[1.0]]),
        cl.pool2d(X, 2),
        cl.corr2d_matmul(X, np.ones((2, 2), np.float32)),
    ):
        assert backend.is_tensor(result) and type(result) is type(X) or backend.name == "numpy"


def test_output_shape_formula():
    # floor((in + pad_before + pad_after - dilation*(k-1) - 1) / stride) + 1
    assert cl.output_shape((1, 1, 10, 11), (1, 1, 3, 2), stride=(2, 3), padding=((1, 0), (2, 2)), dilation=(2, 1)) == (
        1,
        1,
        (10 + 1 - 2 * 2 - 1) // 2 + 1,
        (11 + 4 - 1 - 1) // 3 + 1,
    )
    assert cl.output_shape(np.zeros((3, 8, 8)), np.zeros((4, 3, 3, 3)), padding="same") == (4, 8, 8)
    assert cl.output_shape((8, 8, 3), (3, 3, 3, 4), padding="same", stride=2, data_format="channels_last") == (4, 4, 4)


conv_case = st.fixed_dictionaries(
    {
        "size": st.tuples(st.integers(1, 9), st.integers(1, 9)),
        "kernel": st.tuples(st.integers(1, 4), st.integers(1, 4)),
        "channels": st.tuples(st.integers(1, 3), st.integers(1, 3)),
        "stride": st.tuples(st.integers(1, 3), st.integers(1, 3)),
        "dilation": st.tuples(st.integers(1, 3), st.integers(1, 3)),
        "pads": st.tuples(
            st.tuples(st.integers(0, 3), st.integers(0, 3)), st.tuples(st.integers(0, 3), st.integers(0, 3))
        ),
        "seed": st.integers(0, 2**16),
    }
)


def _fits(case):
    return all(
        n + p[0] + p[1] >= (k - 1) * d + 1
        for n, p, k, d in zip(case["size"], case["pads"], case["kernel"], case["dilation"])
    )


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=conv_case)
def test_property_conv2d_matches_oracle(backend, case):
    """Random shapes, strides, explicit pads and dilations: exact on integer inputs, conv2d_vjp too."""
    if not _fits(case):
        with pytest.raises(cl.ConvlabValueError, match="larger than the padded input"):
            cl.output_shape(
                (1, case["channels"][0]) + case["size"],
                (case["channels"][1], case["channels"][0]) + case["kernel"],
                stride=case["stride"],
                padding=case["pads"],
                dilation=case["dilation"],
            )
        return
    c_in, c_out = case["channels"]
    X, K = integer_inputs((1, c_in) + case["size"], (c_out, c_in) + case["kernel"], case["seed"])
    y = cl.conv2d(
        backend.asarray(X, "float32"),
        backend.asarray(K, "float32"),
        stride=case["stride"],
        padding=case["pads"],
        dilation=case["dilation"],
    )
    expected = reference.conv2d(X, K, None, case["stride"], case["pads"], case["dilation"])
    np.testing.assert_array_equal(backend.to_numpy(y), expected)
    options = dict(stride=case["stride"], padding=case["pads"], dilation=case["dilation"])
    dY = np.random.default_rng(case["seed"] + 2).integers(-4, 5, size=expected.shape).astype(np.float32)
    gradients = cl.conv2d_vjp(backend.asarray(X, "float32"), backend.asarray(K, "float32"),
                              backend.asarray(dY, "float32"), **options)  # fmt: skip
    for got, want in zip(gradients, cl.conv2d_vjp(X, K, dY, backend="numpy", **options)):
        np.testing.assert_array_equal(backend.to_numpy(got), want)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=conv_case, mode=st.sampled_from(["max", "avg"]))
def test_property_pool2d_matches_oracle(backend, case, mode):
    window = case["kernel"]
    pads = tuple((min(p[0], w - 1), min(p[1], w - 1)) for p, w in zip(case["pads"], window))  # a window sees a pixel
    if any(n + p[0] + p[1] < w for n, p, w in zip(case["size"], pads, window)):
        return
    X = np.random.default_rng(case["seed"]).integers(-8, 8, size=(1, 2) + case["size"]).astype(np.float32)
    y = cl.pool2d(backend.asarray(X, "float32"), window, mode, case["stride"], pads)
    expected = reference.pool2d(X, window, case["stride"], pads, mode, True)
    np.testing.assert_allclose(backend.to_numpy(y), expected, rtol=2 * 2.0**-24 * window[0] * window[1], atol=0)


@pytest.mark.parametrize("pads", [((0, 0), (0, 0)), ((1, 1), (1, 1)), ((1, 1), (0, 0)), ((0, 1), (1, 0))])
@pytest.mark.parametrize("stride, dilation", [((1, 1), (1, 1)), ((2, 1), (1, 2))])
@pytest.mark.parametrize("with_bias", [False, True])
def test_bound_conv2d_equals_the_primitive(backend, pads, stride, dilation, with_bias):
    """What repeated calls run (Backend.conv2d_bound, which adapters bind to their op) is conv2d_bias, bit for bit."""
    X, K = integer_inputs((2, 3, 7, 8), (4, 3, 3, 2), seed=5)
    x, k = backend.asarray(X, "float32"), backend.asarray(K, "float32")
    bias = backend.asarray(np.array([1, -2, 0, 3], np.float32), "float32") if with_bias else None
    bias_shape = (4,) if with_bias else None
    geometry = cl.geometry.conv_geometry(X.shape, K.shape, bias_shape, stride=stride, padding=pads, dilation=dilation)
    bound = backend.conv2d_bound(geometry)(x, k, bias)
    direct = backend.conv2d(x, k, bias, geometry)
    np.testing.assert_array_equal(backend.to_numpy(bound), backend.to_numpy(direct))
    bias_values = np.array([1, -2, 0, 3], np.float32) if with_bias else None
    expected = reference.conv2d(X, K, bias_values, stride, pads, dilation)
    np.testing.assert_array_equal(backend.to_numpy(bound), expected)


@pytest.mark.parametrize("mode, count_include_pad", [("max", True), ("avg", True), ("avg", False)])
@pytest.mark.parametrize("pads", [((0, 0), (0, 0)), ((1, 1), (1, 1)), ((0, 1), (1, 0))])
def test_bound_pool2d_equals_the_primitive(backend, mode, count_include_pad, pads):
    X, _ = integer_inputs((2, 3, 7, 8), (1, 1, 1, 1), seed=6)
    x = backend.asarray(X, "float32")
    geometry = cl.geometry.pool_geometry(X.shape, (3, 2), mode, stride=(2, 1), padding=pads,
                                         count_include_pad=count_include_pad)  # fmt: skip
    bound = backend.pool2d_bound(geometry)(x)
    np.testing.assert_array_equal(backend.to_numpy(bound), backend.to_numpy(backend.pool2d(x, geometry)))
