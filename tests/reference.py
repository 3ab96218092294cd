"""A deliberately simple float64 oracle, in the spirit of JAX's lax_reference.py.

Plain loops over output pixels, written straight from DESIGN.md section 3 and sharing no code with
convlab: what the tests compare every backend against. Inputs are channels-first 4-D NumPy arrays
with explicit pads ((top, bottom), (left, right)).
"""

from __future__ import annotations

import math

import numpy as np

UNIT_ROUNDOFF = {"float32": 2.0**-24, "float64": 2.0**-53}


def same_pads(size, window, stride, dilation):
    """TensorFlow/JAX "same": output ceil(in / stride), odd extra pad at the end."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + (window - 1) * dilation + 1 - size, 0)
    return (total // 2, total - total // 2)


def conv2d(x, k, bias=None, stride=(1, 1), pads=((0, 0), (0, 0)), dilation=(1, 1)):
    """Cross-correlation, NCHW input and OIHW kernel, float64, one output pixel at a time."""
    x = np.asarray(x, dtype=np.float64)
    k = np.asarray(k, dtype=np.float64)
    n, c, h, w = x.shape
    o, c2, kh, kw = k.shape
    assert c == c2
    (top, bottom), (left, right) = pads
    padded = np.zeros((n, c, h + top + bottom, w + left + right))
    padded[:, :, top : top + h, left : left + w] = x
    out_h = (h + top + bottom - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    out_w = (w + left + right - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    y = np.zeros((n, o, out_h, out_w))
    for b in range(n):
        for oc in range(o):
            for p in range(out_h):
                for q in range(out_w):
                    total = 0.0
                    for ic in range(c):
                        for i in range(kh):
                            for j in range(kw):
                                total += (
                                    padded[b, ic, p * stride[0] + i * dilation[0], q * stride[1] + j * dilation[1]]
                                    * k[oc, ic, i, j]
                                )
                    y[b, oc, p, q] = total + (0.0 if bias is None else float(bias[oc]))
    return y


def conv2d_bound(x, k, stride=(1, 1), pads=((0, 0), (0, 0)), dilation=(1, 1), dtype="float32", c=2.0):
    """DESIGN.md section 4: c * n * u * (|X| (*) |K|), n the products per output element."""
    n_products = x.shape[1] * k.shape[2] * k.shape[3]
    magnitude = conv2d(np.abs(x), np.abs(k), None, stride, pads, dilation)
    return c * n_products * UNIT_ROUNDOFF[dtype] * magnitude


def pool2d(x, window, stride=(1, 1), pads=((0, 0), (0, 0)), mode="max", count_include_pad=True):
    x = np.asarray(x, dtype=np.float64)
    n, c, h, w = x.shape
    (top, bottom), (left, right) = pads
    out_h = (h + top + bottom - window[0]) // stride[0] + 1
    out_w = (w + left + right - window[1]) // stride[1] + 1
    y = np.zeros((n, c, out_h, out_w))
    for b in range(n):
        for ch in range(c):
            for p in range(out_h):
                for q in range(out_w):
                    values, real = [], 0
                    for i in range(window[0]):
                        for j in range(window[1]):
                            row, col = p * stride[0] + i - top, q * stride[1] + j - left
                            if 0 <= row < h and 0 <= col < w:
                                values.append(x[b, ch, row, col])
                                real += 1
                            else:
                                values.append(-np.inf if mode == "max" else 0.0)
                    if mode == "max":
                        y[b, ch, p, q] = max(values)
                    else:
                        y[b, ch, p, q] = sum(values) / (window[0] * window[1] if count_include_pad else real)
    return y


def corr2d(x, k):
    """The book's loop (section 6.2.1), in float64."""
    x, k = np.asarray(x, dtype=np.float64), np.asarray(k, dtype=np.float64)
    h, w = k.shape
    y = np.zeros((x.shape[0] - h + 1, x.shape[1] - w + 1))
    for i in range(y.shape[0]):
        for j in range(y.shape[1]):
            y[i, j] = (x[i : i + h, j : j + w] * k).sum()
    return y


def numeric_gradient(f, x, eps=1e-6):
    """Central finite differences of the scalar f at x (float64)."""
    x = np.array(x, dtype=np.float64)
    grad = np.zeros_like(x)
    for index in np.ndindex(x.shape):
        saved = x[index]
        x[index] = saved + eps
        up = f(x)
        x[index] = saved - eps
        down = f(x)
        x[index] = saved
        grad[index] = (up - down) / (2 * eps)
    return grad


def assert_within_bound(actual, expected, bound, what=""):
    actual = np.asarray(actual, dtype=np.float64)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    error = np.abs(actual - expected)
    # the smallest positive float32 normal keeps the bound honest where |X| (*) |K| is exactly 0
    worst = np.max(error - bound) if error.size else 0.0
    assert np.all(error <= bound + 1e-300), f"{what}: error exceeds the bound by {worst:g}"


def conv_transpose2d(x, k, bias=None, stride=(1, 1), pads=((0, 0), (0, 0)), dilation=(1, 1), output_padding=(0, 0)):
    """Transposed convolution, NCHW input, kernel (C, Co, kh, kw): every input pixel scattered over its window.

    The full result is (in - 1) * stride + dilation * (k - 1) + 1 (+ output_padding) rows; pads crop it.
    """
    x = np.asarray(x, dtype=np.float64)
    k = np.asarray(k, dtype=np.float64)
    n, c, h, w = x.shape
    c2, o, kh, kw = k.shape
    assert c == c2
    full_h = (h - 1) * stride[0] + dilation[0] * (kh - 1) + 1 + output_padding[0]
    full_w = (w - 1) * stride[1] + dilation[1] * (kw - 1) + 1 + output_padding[1]
    full = np.zeros((n, o, full_h, full_w))
    for b in range(n):
        for ic in range(c):
            for p in range(h):
                for q in range(w):
                    for oc in range(o):
                        for i in range(kh):
                            for j in range(kw):
                                full[b, oc, p * stride[0] + i * dilation[0], q * stride[1] + j * dilation[1]] += (
                                    x[b, ic, p, q] * k[ic, oc, i, j]
                                )
    (top, bottom), (left, right) = pads
    y = full[:, :, top : full_h - bottom, left : full_w - right]
    if bias is not None:
        y = y + np.asarray(bias, dtype=np.float64).reshape(1, -1, 1, 1)
    return y
