"""The NumPy reference backend: vectorised, no Python loop over output pixels.

Two formulations of the correlation, picked by the number of channel pairs:
few channels shift-and-accumulate over the kernel offsets in cache-sized row
blocks; many channels do one matrix product per kernel offset (BLAS).
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence, Tuple

import numpy as np

from convlab import algorithms, ops
from convlab.backend import Backend, Pair
from convlab.errors import ConvlabValueError
from convlab.geometry import ConvGeometry, PoolGeometry, taps

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

    def synchronize(self, y: Any) -> Any:
        return y

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

    def conv2d(self, x: np.ndarray, k: np.ndarray, bias: Any, geometry: ConvGeometry) -> np.ndarray:
        formulation = (
            _conv_shift if geometry.in_channels * geometry.out_channels < GEMM_MIN_CHANNEL_PAIRS else _conv_gemm
        )
        return _in_nchw(formulation, x, k, bias, geometry)

    def conv2d_shift(self, x, k, bias, geometry):
        return _in_nchw(_conv_shift, x, k, bias, geometry)

    def conv2d_gemm(self, x, k, bias, geometry):
        return _in_nchw(_conv_gemm, x, k, bias, geometry)

    def pool2d(self, x: np.ndarray, geometry: PoolGeometry) -> np.ndarray:
        g = geometry
        if g.channels_last:  # compute in NCHW on a view, hand back NHWC
            nchw = self.pool2d(x.transpose(0, 3, 1, 2), algorithms.other_layout(g))
            return np.ascontiguousarray(nchw.transpose(0, 2, 3, 1))
        padded = self.pad(x, ((0, 0), (0, 0)) + g.pads, g.fill)
        (out_h, out_w), (sh, sw) = g.out_hw, g.stride
        combine = np.maximum if g.mode == "max" else np.add
        y: Optional[np.ndarray] = None
        for i in range(g.window[0]):
            for j in range(g.window[1]):
                patch = padded[:, :, taps(i, out_h, sh), taps(j, out_w, sw)]
                y = patch.copy() if y is None else combine(y, patch, out=y)
        assert y is not None
        if g.mode == "max":
            return y
        divisor = g.divisor
        y /= y.dtype.type(divisor) if isinstance(divisor, float) else divisor.astype(y.dtype)
        return y

    def value_and_grad(self, fn: Callable[[list], Any]) -> Callable[[list], Tuple[Any, list]]:
        raise ConvlabValueError("the numpy backend has no automatic differentiation; use gradient='analytic'")

    def conv2d_layer(self, config: dict, weight: np.ndarray, bias: Optional[np.ndarray]) -> NumpyConv2D:
        return NumpyConv2D(config, weight, bias)

    def pool2d_layer(self, config: dict) -> NumpyPool2D:
        return NumpyPool2D(config)


def _in_nchw(formulation: Callable[..., np.ndarray], x, k, bias, geometry: ConvGeometry) -> np.ndarray:
    """Run an NCHW formulation on views of channels-last data, add the bias, hand back the caller's layout."""
    g = geometry
    if g.channels_last:
        y = formulation(x.transpose(0, 3, 1, 2), k.transpose(3, 2, 0, 1), g)
        y = np.ascontiguousarray(y.transpose(0, 2, 3, 1))
    else:
        y = formulation(x, k, g)
    if bias is not None:
        y += bias.reshape((1, 1, 1, -1) if g.channels_last else (1, -1, 1, 1))
    return y


def _conv_shift(x, k, geometry: ConvGeometry):
    """Shift-and-accumulate over kernel offsets and channel pairs, one block of output rows at a time."""
    stride, dilation = geometry.stride, geometry.dilation
    padded = np.pad(x, ((0, 0), (0, 0)) + geometry.pads) if geometry.padded else x
    batch, in_channels = x.shape[:2]
    out_channels, _, kernel_h, kernel_w = k.shape
    out_h, out_w = geometry.out_hw
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
                cols = taps(j * dilation[1], out_w, stride[1])
                for c in range(in_channels):
                    patch = padded[:, c, rows, cols]
                    for o in range(out_channels):
                        np.multiply(patch, y.dtype.type(weights[o][c][i][j]), out=tmp)
                        target = y[:, o, start:stop]
                        np.add(target, tmp, out=target)
    return y


def _conv_gemm(x, k, geometry: ConvGeometry):
    """One matrix product per kernel offset on an NHWC copy of the padded input."""
    stride, dilation, ((top, bottom), (left, right)) = geometry.stride, geometry.dilation, geometry.pads
    batch, in_channels, height, width = x.shape
    out_channels, _, kernel_h, kernel_w = k.shape
    out_h, out_w = geometry.out_hw
    dtype = np.result_type(x, k)
    padded_h, padded_w = height + top + bottom, width + left + right
    nhwc = np.zeros((batch, padded_h, padded_w, in_channels), dtype=dtype)
    nhwc[:, top : top + height, left : left + width, :] = x.transpose(0, 2, 3, 1)
    weights = np.ascontiguousarray(k.transpose(2, 3, 1, 0), dtype=dtype)  # (kh, kw, C, O)
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
                np.matmul(flat[start : start + rows], weights[i, j], out=tmp)
                y[:rows] += tmp
        y = y.reshape(batch, padded_h, padded_w, out_channels)[:, :out_h, :out_w]
    else:
        y = np.zeros((batch * out_h * out_w, out_channels), dtype=dtype)
        for i in range(kernel_h):
            for j in range(kernel_w):
                window = nhwc[:, taps(i * dilation[0], out_h, stride[0]), taps(j * dilation[1], out_w, stride[1])]
                product = np.ascontiguousarray(window).reshape(-1, in_channels) @ weights[i, j]
                y += product
        y = y.reshape(batch, out_h, out_w, out_channels)
    return np.ascontiguousarray(y.transpose(0, 3, 1, 2))


class NumpyConv2D:
    """Conv2D on the NumPy backend: ``weight`` and ``bias`` are plain arrays you may update in place.

    ``backward(X, dY)`` returns the gradients ``(dX, dweight, dbias)`` from :func:`convlab.conv2d_vjp`.
    """

    def __init__(self, config: dict, weight: np.ndarray, bias: Optional[np.ndarray]):
        self.config = dict(config)
        self.operation = self.config.pop("operation", "conv2d")  # or "conv_transpose2d"
        self.weight = weight
        self.bias = bias

    def __call__(self, X: Any) -> np.ndarray:
        forward = ops.conv2d if self.operation == "conv2d" else _conv_transpose().conv_transpose2d
        return forward(X, self.weight, self.bias, backend="numpy", **self.config)

    def backward(self, X: Any, dY: Any) -> Tuple[np.ndarray, np.ndarray, Optional[np.ndarray]]:
        vjp = ops.conv2d_vjp if self.operation == "conv2d" else _conv_transpose().conv_transpose2d_vjp
        dX, dweight, dbias = vjp(X, self.weight, dY, backend="numpy", **self.config)
        return dX, dweight, (dbias if self.bias is not None else None)

    def parameters(self) -> list:
        return [self.weight] if self.bias is None else [self.weight, self.bias]

    def __repr__(self) -> str:
        return f"NumpyConv2D(weight shape {self.weight.shape}, bias={self.bias is not None}, {self.config})"


class NumpyPool2D:
    """MaxPool2D / AvgPool2D on the NumPy backend."""

    def __init__(self, config: dict):
        self.config = dict(config)

    def __call__(self, X: Any) -> np.ndarray:
        return ops.pool2d(X, backend="numpy", **self.config)

    def __repr__(self) -> str:
        return f"NumpyPool2D({self.config})"


def _conv_transpose() -> Any:
    from convlab import conv_transpose

    return conv_transpose
