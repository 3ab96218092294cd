"""Shared cases and bounds of the adapters' conv_transpose2d tests (tests/backends/test_*_transpose.py).

Each adapter compares convlab against its framework's own transposed convolution over these geometries
(the ones the framework can express), its autodiff gradients against the closed-form VJP
(``cl.conv_transpose2d_vjp``) within the DESIGN.md section 4 bound, and its ConvTranspose2D layer's
training step against the same VJP.
"""

from __future__ import annotations

import numpy as np
import pytest
import reference

import convlab as cl

U32 = 2.0**-24

#: (id, X shape NCHW, K shape (C, Co, kh, kw), stride, pads ((top, bottom), (left, right)), dilation, output_padding)
GEOMETRIES = [
    ("plain", (2, 3, 5, 4), (3, 2, 3, 3), (1, 1), ((0, 0), (0, 0)), (1, 1), (0, 0)),
    ("stride2-pad1-op1", (1, 2, 5, 6), (2, 3, 3, 3), (2, 2), ((1, 1), (1, 1)), (1, 1), (1, 1)),
    ("stride2-4x4-pad1", (2, 2, 4, 4), (2, 2, 4, 4), (2, 2), ((1, 1), (1, 1)), (1, 1), (0, 0)),
    ("stride(2,3)-pad(1,2)-op(1,2)", (1, 3, 4, 5), (3, 2, 3, 2), (2, 3), ((1, 1), (2, 2)), (1, 1), (1, 2)),
    ("stride3-4x4", (1, 1, 6, 5), (1, 1, 4, 4), (3, 3), ((0, 0), (0, 0)), (1, 1), (0, 0)),
    ("dilation2", (1, 2, 5, 5), (2, 2, 3, 3), (1, 1), ((1, 1), (1, 1)), (2, 2), (0, 0)),
    ("dilation(2,3)-op1", (1, 2, 5, 6), (2, 3, 3, 2), (1, 1), ((2, 2), (0, 0)), (2, 3), (1, 1)),
    ("stride2-dilation2", (1, 2, 4, 5), (2, 2, 3, 3), (2, 2), ((1, 1), (2, 2)), (2, 2), (1, 0)),
    ("stride2-dilation3-op2", (1, 1, 4, 4), (1, 2, 2, 3), (2, 1), ((0, 0), (1, 1)), (3, 2), (2, 1)),
    ("asymmetric", (1, 2, 5, 4), (2, 3, 3, 3), (2, 2), ((0, 2), (1, 0)), (1, 1), (1, 1)),
    ("asymmetric-crop-past-full", (1, 2, 4, 4), (2, 2, 3, 2), (2, 3), ((2, 0), (0, 1)), (1, 1), (1, 2)),
    ("asymmetric-dilated", (2, 1, 5, 5), (1, 2, 2, 3), (1, 2), ((1, 0), (3, 1)), (2, 1), (1, 1)),
    ("one-channel-stride1", (1, 1, 6, 7), (1, 1, 3, 3), (1, 1), ((1, 1), (1, 1)), (1, 1), (0, 0)),
]
IDS = [case[0] for case in GEOMETRIES]


def options(stride, pads, dilation, output_padding, data_format="channels_first") -> dict:
    return dict(stride=stride, padding=pads, dilation=dilation, output_padding=output_padding, data_format=data_format)


def symmetric(pads) -> bool:
    return all(before == after for before, after in pads)


def integers(rng, shape, low=-4, high=5) -> np.ndarray:
    return rng.integers(low, high, size=shape).astype(np.float32)


def to_last(x: np.ndarray, kernel: bool = False) -> np.ndarray:
    """NCHW data as NHWC, or a (C, Co, kh, kw) kernel as (kh, kw, Co, C)."""
    return np.ascontiguousarray(x.transpose((2, 3, 1, 0) if kernel else (0, 2, 3, 1)))


def crop_full(full: np.ndarray, X, K, bias, stride, pads, dilation, output_padding) -> np.ndarray:
    """The NCHW result for ``pads`` from a framework's full (unpadded, bias-free) one: the rows and columns the
    pads keep, zero rows past its end added, plus the bias.

    How a test reaches asymmetric pads with a framework that pads symmetrically only.
    """
    geometry = options(stride, pads, dilation, output_padding)
    out_h, out_w = cl.conv_transpose2d(X, K, backend="numpy", **geometry).shape[2:]
    (top, _), (left, _) = pads
    extend = ((0, 0), (0, 0), (0, max(0, top + out_h - full.shape[2])), (0, max(0, left + out_w - full.shape[3])))
    y = np.pad(full, extend)[:, :, top : top + out_h, left : left + out_w]
    return y if bias is None else y + bias.reshape(1, -1, 1, 1)


def forward_bound(X, K, bias, geometry: dict, dtype: str = "float32") -> np.ndarray:
    """DESIGN.md section 4 for conv_transpose2d: ``c * n * u * (|X| (*)^T |K| + |bias|)``, n the products summed per
    output element (at most C*kh*kw) plus the bias."""
    X, K = np.abs(np.asarray(X, np.float64)), np.abs(np.asarray(K, np.float64))
    channels_last = geometry.get("data_format") == "channels_last"
    n = int(np.prod(K.shape[:2]) * K.shape[3] if channels_last else K.shape[0] * np.prod(K.shape[2:]))
    b = None if bias is None else np.abs(np.asarray(bias, np.float64))
    magnitude = cl.conv_transpose2d(X, K, b, backend="numpy", **geometry)
    return 2.0 * (n + (bias is not None)) * reference.UNIT_ROUNDOFF[dtype] * magnitude


def vjp_reference_and_bounds(X, K, dY, geometry: dict, dtype: str = "float32"):
    """The float64 closed-form gradients (dX, dK, dbias) and their section 4 bounds.

    dX = conv2d(dY, K): Co*kh*kw products per element; dK: one product per input pixel (N*H*W); dbias: the
    output's pixels (N*Ho*Wo); magnitudes from the same VJP on absolute values.
    """
    X64, K64, dY64 = (np.asarray(a, np.float64) for a in (X, K, dY))
    expected = cl.conv_transpose2d_vjp(X64, K64, dY64, backend="numpy", **geometry)
    magnitudes = cl.conv_transpose2d_vjp(np.abs(X64), np.abs(K64), np.abs(dY64), backend="numpy", **geometry)
    channels_last = geometry.get("data_format") == "channels_last"
    in_channels, out_channels = (K64.shape[3], K64.shape[2]) if channels_last else K64.shape[:2]
    counts = (K64.size // in_channels, X64.size // in_channels, dY64.size // out_channels)
    u = reference.UNIT_ROUNDOFF[dtype]
    bounds = [2.0 * n * u * np.asarray(m) for n, m in zip(counts, magnitudes)]
    return [np.asarray(e) for e in expected], bounds


def check_gradients(grads, X, K, dY, geometry: dict, what: str, dtype: str = "float32") -> None:
    """Assert (dX, dK, dbias) as NumPy arrays are within the section 4 bound of the float64 closed form."""
    expected, bounds = vjp_reference_and_bounds(X, K, dY, geometry, dtype)
    for name, got, want, bound in zip(("dX", "dK", "dbias"), grads, expected, bounds):
        reference.assert_within_bound(np.asarray(got, np.float64), want, bound, f"{what} {name}")


def each_case_layout_and_algorithm(test):
    """Parametrize ``test`` over GEOMETRIES (``case``), both data formats and both formulations ("auto" and
    "correlation")."""
    test = pytest.mark.parametrize("algorithm", ["auto", "correlation"])(test)
    test = pytest.mark.parametrize("data_format", ["channels_first", "channels_last"])(test)
    return pytest.mark.parametrize("case", GEOMETRIES, ids=IDS)(test)


def check_equals_on_integers(case, data_format, algorithm, framework_transpose, tensor, to_numpy, expressible=None):
    """convlab's float32 conv_transpose2d of integer data, on the framework's tensors (``tensor``), equals the
    framework's own op exactly: ``framework_transpose(X, K, bias, stride, pads, dilation, output_padding)``, NCHW;
    the oracle's where ``expressible`` of the same geometry is false (the framework has no such op).

    Returns convlab's result, for the caller's checks of its type.
    """
    _, x_shape, k_shape, stride, pads, dilation, extra = case
    rng = np.random.default_rng(len(case[0]))
    X, K, bias = integers(rng, x_shape), integers(rng, k_shape), integers(rng, k_shape[1:2])
    if expressible is None or expressible(stride, pads, dilation, extra):
        expected = framework_transpose(X, K, bias, stride, pads, dilation, extra)
    else:
        expected = reference.conv_transpose2d(X, K, bias, stride, pads, dilation, extra).astype(np.float32)
    x, k = (to_last(X), to_last(K, kernel=True)) if data_format == "channels_last" else (X, K)
    geometry = options(stride, pads, dilation, extra, data_format)
    y = cl.conv_transpose2d(tensor(x), tensor(k), tensor(bias), algorithm=algorithm, **geometry)
    got = to_numpy(y)
    np.testing.assert_array_equal(got.transpose(0, 3, 1, 2) if data_format == "channels_last" else got, expected)
    return y


def gradient_operands(case, data_format):
    """Random float32 X, K, bias and cotangent dY for a GEOMETRIES case in ``data_format``, and its options."""
    _, x_shape, k_shape, stride, pads, dilation, extra = case
    rng = np.random.default_rng(11)
    X, K = rng.standard_normal(x_shape).astype(np.float32), rng.standard_normal(k_shape).astype(np.float32)
    bias = rng.standard_normal(k_shape[1:2]).astype(np.float32)
    if data_format == "channels_last":
        X, K = to_last(X), to_last(K, kernel=True)
    geometry = options(stride, pads, dilation, extra, data_format)
    dY = rng.standard_normal(cl.conv_transpose2d(X, K, **geometry).shape).astype(np.float32)
    return X, K, bias, dY, geometry


def training_problem(backend: str):
    """The layer the adapters' training tests step (ConvTranspose2D 2 -> 3 channels, 3x3, stride 2, padding 1,
    output_padding 1, seed 4) on ``backend``, an input X (2, 2, 4, 5) and a target of the output's shape."""
    layer = cl.ConvTranspose2D(3, 2, 3, stride=2, padding=1, output_padding=1, seed=4, backend=backend)
    X = np.random.default_rng(0).standard_normal((2, 2, 4, 5)).astype(np.float32)
    return layer, X, np.random.default_rng(5).standard_normal((2, 3, 8, 10)).astype(np.float32)


def check_sgd_step(X, dY, before, grads, after, learning_rate=1e-3) -> None:
    """One SGD step of the training_problem layer: its (weight, bias) gradients within the section 4 bound of
    the closed-form VJP at (X, dY), and the parameters ``after`` equal to ``before - learning_rate * grads``."""
    geometry = options((2, 2), ((1, 1), (1, 1)), (1, 1), (1, 1))
    expected, bounds = vjp_reference_and_bounds(X, before[0], dY, geometry)
    for name, grad, want, bound in zip(("weight", "bias"), grads, expected[1:], bounds[1:]):
        reference.assert_within_bound(grad, want, bound, f"{name} gradient")
    for new, old, grad in zip(after, before, grads):
        np.testing.assert_allclose(new, old - learning_rate * grad, rtol=1e-6, atol=1e-7)
