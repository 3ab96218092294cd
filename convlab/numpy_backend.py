"""The NumPy reference backend: vectorised, no Python loop over output pixels.

Two formulations of the correlation, picked by the number of channel pairs:
few channels shift-and-accumulate over the kernel offsets in cache-sized row
blocks; many channels do one matrix product per kernel offset (BLAS).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence, Tuple

import numpy as np

from convlab.backend import Backend, Pads, Pair
from convlab.errors import ConvlabValueError

#: below this many (in, out) channel pairs, shift-and-accumulate beats a matrix product per offset
GEMM_MIN_CHANNEL_PAIRS = 16
#: rows of output per block in shift-and-accumulate, sized so a block stays in the L2 cache
BLOCK_BYTES = 256 * 1024


class NumpyBackend(Backend):
    name = "numpy"
    framework_modules = ("numpy",)
    package = "convlab"
    has_autodiff = False
    # NumPy has no convolution of its own: "native" is this same choice, the table makes it explicit.
    # From benchmarks/algorithms.py (results/algorithms-numpy*.json, one thread): one channel pair, 3x3,
    # 512^2 shift 2.4 ms vs gemm 16.9 ms, 2048^2 29.6 vs 279; C16->16 56^2 gemm 6.0 vs shift 50.6 ms;
    # N=8 C64->64 56^2 gemm 31 ms (60 GFLOP/s on one core) vs shift 616 ms
    conv_rules = (
        (
            f"fewer than {GEMM_MIN_CHANNEL_PAIRS} channel pairs",
            lambda s: s.channel_pairs < GEMM_MIN_CHANNEL_PAIRS,
            "shift",
        ),
        ("otherwise", lambda s: True, "gemm"),
    )

    def version(self) -> str:
        return np.__version__

    def is_tensor(self, x: Any) -> bool:
        return isinstance(x, np.ndarray)

    def asarray(self, x: Any, dtype: str) -> np.ndarray:
        return np.asarray(x, dtype=dtype)

    def to_numpy(self, x: Any) -> np.ndarray:
        return np.asarray(x)

    def transpose(self, x: np.ndarray, axes: Sequence[int]) -> np.ndarray:
        return np.ascontiguousarray(x.transpose(tuple(axes)))

    def flip(self, x: np.ndarray, axes: Sequence[int]) -> np.ndarray:
        return np.flip(x, tuple(axes))

    def pad(self, x: np.ndarray, pads: Sequence[Pair], value: float = 0.0) -> np.ndarray:
        if not any(any(p) for p in pads):
            return x
        return np.pad(x, tuple(pads), constant_values=value)

    def maximum(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.maximum(a, b)

    def sum(self, x: np.ndarray, axes: Sequence[int]) -> np.ndarray:
        return x.sum(axis=tuple(axes))

    def conv2d(self, x: np.ndarray, k: np.ndarray, stride: Pair, pads: Pads, dilation: Pair, channels_last: bool):
        if channels_last:  # compute in NCHW on views, hand back NHWC
            y = self.conv2d(x.transpose(0, 3, 1, 2), k.transpose(3, 2, 0, 1), stride, pads, dilation, False)
            return np.ascontiguousarray(y.transpose(0, 2, 3, 1))
        out_channels, in_channels = k.shape[:2]
        if out_channels * in_channels < GEMM_MIN_CHANNEL_PAIRS:
            return _conv_shift(x, k, stride, pads, dilation)
        return _conv_gemm(x, k, stride, pads, dilation)

    def conv2d_shift(self, x, k, bias, stride, pads, dilation, channels_last):
        return _with_bias(self._in_nchw(_conv_shift, x, k, stride, pads, dilation, channels_last), bias, channels_last)

    def conv2d_gemm(self, x, k, bias, stride, pads, dilation, channels_last):
        return _with_bias(self._in_nchw(_conv_gemm, x, k, stride, pads, dilation, channels_last), bias, channels_last)

    def _in_nchw(self, formulation, x, k, stride, pads, dilation, channels_last):
        if not channels_last:
            return formulation(x, k, stride, pads, dilation)
        y = formulation(x.transpose(0, 3, 1, 2), k.transpose(3, 2, 0, 1), stride, pads, dilation)
        return np.ascontiguousarray(y.transpose(0, 2, 3, 1))

    def pool2d(self, x, window, stride, pads, mode, count_include_pad, channels_last):
        if channels_last:
            y = self.pool2d(x.transpose(0, 3, 1, 2), window, stride, pads, mode, count_include_pad, False)
            return np.ascontiguousarray(y.transpose(0, 2, 3, 1))
        (top, bottom), (left, right) = pads
        fill = -np.inf if mode == "max" else 0.0
        padded = self.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)), fill)
        out_h, out_w = _out_hw(x.shape[2:], pads, window, stride, (1, 1))
        combine = np.maximum if mode == "max" else np.add
        y = None
        for i in range(window[0]):
            for j in range(window[1]):
                patch = padded[:, :, _rows(i, out_h, stride[0]), _rows(j, out_w, stride[1])]
                y = patch.copy() if y is None else combine(y, patch, out=y)
        if mode == "max":
            return y
        if count_include_pad or top + bottom + left + right == 0:
            y /= y.dtype.type(window[0] * window[1])
            return y
        ones = np.pad(np.ones(x.shape[2:], dtype=y.dtype), ((top, bottom), (left, right)))
        counts = sum(
            ones[_rows(i, out_h, stride[0]), _rows(j, out_w, stride[1])]
            for i in range(window[0])
            for j in range(window[1])
        )
        y /= counts
        return y

    def value_and_grad(self, fn: Callable[[list], Any]) -> Callable[[list], Tuple[Any, list]]:
        raise ConvlabValueError("the numpy backend has no automatic differentiation; use gradient='analytic'")

    def conv2d_layer(self, config: dict, weight: np.ndarray, bias):
        from convlab.layers import NumpyConv2D

        return NumpyConv2D(config, weight, bias)

    def pool2d_layer(self, config: dict):
        from convlab.layers import NumpyPool2D

        return NumpyPool2D(config)


def _rows(offset: int, count: int, stride: int) -> slice:
    return slice(offset, offset + (count - 1) * stride + 1, stride)


def _out_hw(spatial, pads, window, stride, dilation):
    return tuple(
        (size + p[0] + p[1] - d * (w - 1) - 1) // s + 1
        for size, p, w, s, d in zip(spatial, pads, window, stride, dilation)
    )


def _with_bias(y: np.ndarray, bias, channels_last: bool) -> np.ndarray:
    if bias is not None:
        y += bias.reshape((1, 1, 1, -1) if channels_last else (1, -1, 1, 1))
    return y


def _conv_shift(x, k, stride, pads, dilation):
    """Shift-and-accumulate over kernel offsets and channel pairs, one block of output rows at a time."""
    (top, bottom), (left, right) = pads
    padded = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right))) if top + bottom + left + right else x
    batch, in_channels = x.shape[:2]
    out_channels, _, kernel_h, kernel_w = k.shape
    out_h, out_w = _out_hw(x.shape[2:], pads, (kernel_h, kernel_w), stride, dilation)
    y = np.zeros((batch, out_channels, out_h, out_w), dtype=np.result_type(x, k))
    weights = k.tolist()  # Python floats: a scalar multiply without a 0-d array per call
    row_bytes = max(batch * out_w * y.itemsize, 1)
    block = max(1, BLOCK_BYTES // row_bytes)
    scratch = np.empty((batch, min(block, out_h), out_w), dtype=y.dtype)
    for start in range(0, out_h, block):
        stop = min(start + block, out_h)
        tmp = scratch[:, : stop - start]
        for i in range(kernel_h):
            first_row = start * stride[0] + i * dilation[0]
            rows = slice(first_row, first_row + (stop - start - 1) * stride[0] + 1, stride[0])
            for j in range(kernel_w):
                cols = _rows(j * dilation[1], out_w, stride[1])
                for c in range(in_channels):
                    patch = padded[:, c, rows, cols]
                    for o in range(out_channels):
                        np.multiply(patch, y.dtype.type(weights[o][c][i][j]), out=tmp)
                        target = y[:, o, start:stop]
                        np.add(target, tmp, out=target)
    return y


def _conv_gemm(x, k, stride, pads, dilation):
    """One matrix product per kernel offset on an NHWC copy of the padded input."""
    (top, bottom), (left, right) = pads
    batch, in_channels, height, width = x.shape
    out_channels, _, kernel_h, kernel_w = k.shape
    out_h, out_w = _out_hw((height, width), pads, (kernel_h, kernel_w), stride, dilation)
    dtype = np.result_type(x, k)
    padded_h, padded_w = height + top + bottom, width + left + right
    nhwc = np.zeros((batch, padded_h, padded_w, in_channels), dtype=dtype)
    nhwc[:, top : top + height, left : left + width, :] = x.transpose(0, 2, 3, 1)
    taps = np.ascontiguousarray(k.transpose(2, 3, 1, 0), dtype=dtype)  # (kh, kw, C, O)
    tmp = None
    if stride == (1, 1):
        # Stride 1: with the whole batch flattened to rows of pixels, the window at offset (i, j) is one
        # contiguous run of rows, so each offset is a single 2-D product reading the input in place.
        # Rows whose window straddles an image's edge are computed too, and dropped at the end.
        flat = nhwc.reshape(-1, in_channels)
        last = (kernel_h - 1) * dilation[0] * padded_w + (kernel_w - 1) * dilation[1]
        rows = flat.shape[0] - last
        y = np.zeros((flat.shape[0], out_channels), dtype=dtype)
        tmp = np.empty((rows, out_channels), dtype=dtype)
        for i in range(kernel_h):
            for j in range(kernel_w):
                start = i * dilation[0] * padded_w + j * dilation[1]
                np.matmul(flat[start : start + rows], taps[i, j], out=tmp)
                y[:rows] += tmp
        y = y.reshape(batch, padded_h, padded_w, out_channels)[:, :out_h, :out_w]
    else:
        y = np.zeros((batch * out_h * out_w, out_channels), dtype=dtype)
        for i in range(kernel_h):
            for j in range(kernel_w):
                window = nhwc[:, _rows(i * dilation[0], out_h, stride[0]), _rows(j * dilation[1], out_w, stride[1])]
                product = np.ascontiguousarray(window).reshape(-1, in_channels) @ taps[i, j]
                y += product
        y = y.reshape(batch, out_h, out_w, out_channels)
    return np.ascontiguousarray(y.transpose(0, 3, 1, 2))
