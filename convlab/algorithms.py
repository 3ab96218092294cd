"""Alternative formulations of the correlation and pooling, written once with the seam's array ops.

``conv2d(..., algorithm=...)`` picks how a backend computes:

- ``"native"``: the framework's own convolution (``backend.conv2d``);
- ``"shift"``: shift-and-accumulate, one multiply-add of a shifted view per kernel offset and channel
  pair: no patch matrix, memory-bound, the fastest formulation for one or a few channels;
- ``"gemm"``: one matrix product per kernel offset on a channels-last copy of the input, accumulated:
  the fastest for many channels where the native op is slow;
- ``"auto"`` (the default): the first row of the backend's rule table (:attr:`Backend.conv_rules`)
  whose predicate holds for the call's shape; native when none does, and always native on
  accelerators (GPUs) unless the backend says otherwise.

Every formulation sums the same products as the native op, in another order: integer-valued inputs
with partial sums below 2**24 give bit-identical results, and float inputs stay within the
section 4 bound of DESIGN.md (a sum of n products in any order). No FFT formulation is offered: its
error is not bounded by the section 4 rule and no benchmark shape (3x3 kernels) would choose it.

Pooling has ``"native"``, ``"shift"`` (an elementwise maximum or sum of one shifted view per window
offset: exact for max pooling, the same sum for average pooling), ``"layout"`` (pool in the other memory
layout, channels-last for NCHW input, where a framework's channels-last kernel is much faster) and
``"auto"``.

An adapter overrides :meth:`Backend.conv2d_shift` / :meth:`Backend.conv2d_gemm` /
:meth:`Backend.pool2d_layout` only where its framework has a faster spelling.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Optional, Tuple

from convlab.errors import ConvlabValueError

CONV_ALGORITHMS = ("auto", "native", "shift", "gemm")
POOL_ALGORITHMS = ("auto", "native", "shift", "layout")

Pair = Tuple[int, int]
Pads = Tuple[Pair, Pair]


class ConvShape(NamedTuple):
    """What a rule sees of a convolution call (channels-first naming whatever the data format)."""

    batch: int
    in_channels: int
    out_channels: int
    height: int  # of the input, before padding
    width: int
    kernel_h: int
    kernel_w: int
    stride: Pair
    dilation: Pair
    channels_last: bool
    dtype: str

    @property
    def pixels(self) -> int:
        return self.batch * self.height * self.width

    @property
    def channel_pairs(self) -> int:
        return self.in_channels * self.out_channels


class PoolShape(NamedTuple):
    batch: int
    channels: int
    height: int
    width: int
    window: Pair
    stride: Pair
    mode: str
    channels_last: bool
    dtype: str


def check_algorithm(algorithm: Any, choices: Tuple[str, ...]) -> str:
    if not isinstance(algorithm, str) or algorithm not in choices:
        raise ConvlabValueError(f"algorithm must be one of {choices}, got {algorithm!r}")
    return algorithm


def conv_shape(geometry: Any, dtype: str) -> ConvShape:
    x4, k4, channels_last = geometry.x4, geometry.k4, geometry.channels_last
    if channels_last:
        batch, height, width, channels = x4
        kernel_h, kernel_w, _, out_channels = k4
    else:
        batch, channels, height, width = x4
        out_channels, _, kernel_h, kernel_w = k4
    return ConvShape(
        batch, channels, out_channels, height, width, kernel_h, kernel_w,
        geometry.stride, geometry.dilation, channels_last, dtype,
    )  # fmt: skip


def pool_shape(geometry: Any, dtype: str) -> PoolShape:
    x4 = geometry.x4
    batch, height, width, channels = x4 if geometry.channels_last else (x4[0], x4[2], x4[3], x4[1])
    return PoolShape(
        batch, channels, height, width, geometry.window, geometry.stride, geometry.mode, geometry.channels_last, dtype
    )


def choose(backend: Any, rules: Any, shape: Any, device: Any) -> str:
    """The algorithm "auto" runs: native on accelerators, else the first matching rule, else native."""
    if device is not None and backend.is_accelerator(device):
        return "native"
    if not _rules_are_current(type(backend), "conv_rules" if isinstance(shape, ConvShape) else "pool_rules"):
        return "native"
    for _description, predicate, algorithm in rules:
        if predicate(shape):
            return algorithm
    return "native"


def _rules_are_current(cls: type, table: str) -> bool:
    """False when a subclass replaced the native op after its parent measured the rules (a plugin that
    overrides ``conv2d`` of the NumPy backend): the parent's measurements say nothing about it."""
    native = ("conv2d", "conv2d_bias") if table == "conv_rules" else ("pool2d",)
    rules_owner = next(klass for klass in cls.__mro__ if table in vars(klass))
    return not any(
        issubclass(owner, rules_owner) and owner is not rules_owner
        for name in native
        for owner in (next((klass for klass in cls.__mro__ if name in vars(klass)), rules_owner),)
    )


# -- generic formulations (seam ops only) ---------------------------------------------------------


def _taps(offset: int, count: int, stride: int) -> slice:
    return slice(offset, offset + (count - 1) * stride + 1, stride)


def _nchw(be: Any, x: Any, k: Any, channels_last: bool) -> Tuple[Any, Any]:
    if channels_last:
        return be.transpose(x, (0, 3, 1, 2)), be.transpose(k, (3, 2, 0, 1))
    return x, k


def _finish(be: Any, y: Any, bias: Optional[Any], channels_last: bool, out_channels: int) -> Any:
    """Bias added last (as the native ops round), then back to the caller's layout."""
    if channels_last:
        y = be.transpose(y, (0, 2, 3, 1))
    if bias is not None:
        y = y + be.reshape(bias, (1, 1, 1, out_channels) if channels_last else (1, out_channels, 1, 1))
    return y


def conv2d_shift(
    be: Any, x: Any, k: Any, bias: Optional[Any], stride: Pair, pads: Pads, dilation: Pair, channels_last: bool
) -> Any:
    """Shift-and-accumulate: ``y[:, o] += K[o, c, i, j] * Xpad[:, c, shifted by (i, j)]``, out of place.

    Works on any framework whose tensors slice with steps and broadcast ``*`` and ``+`` (all of them),
    and so differentiates under every framework's autodiff.
    """
    x, k = _nchw(be, x, k, channels_last)
    (top, bottom), (left, right) = pads
    x = be.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))
    out_channels, in_channels, kernel_h, kernel_w = k.shape
    height, width = x.shape[2], x.shape[3]
    out_h = (height - dilation[0] * (kernel_h - 1) - 1) // stride[0] + 1
    out_w = (width - dilation[1] * (kernel_w - 1) - 1) // stride[1] + 1
    y = None
    for c in range(in_channels):
        for i in range(kernel_h):
            rows = _taps(i * dilation[0], out_h, stride[0])
            for j in range(kernel_w):
                patch = x[:, c : c + 1, rows, _taps(j * dilation[1], out_w, stride[1])]
                weight = be.reshape(k[:, c, i, j], (1, out_channels, 1, 1))
                term = patch * weight
                y = term if y is None else y + term
    return _finish(be, y, bias, channels_last, out_channels)


def conv2d_gemm(
    be: Any, x: Any, k: Any, bias: Optional[Any], stride: Pair, pads: Pads, dilation: Pair, channels_last: bool
) -> Any:
    """One (N*Ho*Wo, C) x (C, Co) matrix product per kernel offset on channels-last data, accumulated."""
    if not channels_last:  # NCHW -> NHWC, OIHW -> HWIO
        x, k = be.transpose(x, (0, 2, 3, 1)), be.transpose(k, (2, 3, 1, 0))
    (top, bottom), (left, right) = pads
    x = be.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))
    batch, height, width, in_channels = x.shape
    kernel_h, kernel_w, _, out_channels = k.shape
    out_h = (height - dilation[0] * (kernel_h - 1) - 1) // stride[0] + 1
    out_w = (width - dilation[1] * (kernel_w - 1) - 1) // stride[1] + 1
    rows = batch * out_h * out_w
    y = None
    for i in range(kernel_h):
        for j in range(kernel_w):
            window = x[:, _taps(i * dilation[0], out_h, stride[0]), _taps(j * dilation[1], out_w, stride[1]), :]
            term = be.matmul(be.reshape(window, (rows, in_channels)), k[i, j])
            y = term if y is None else y + term
    y = be.reshape(y, (batch, out_h, out_w, out_channels))
    if bias is not None:
        y = y + be.reshape(bias, (1, 1, 1, out_channels))
    return y if channels_last else be.transpose(y, (0, 3, 1, 2))


def pool2d_layout(
    be: Any, x: Any, window: Pair, stride: Pair, pads: Pads, mode: str, count_include_pad: bool, channels_last: bool
) -> Any:
    """Pool in the other layout: NCHW data is transposed to NHWC, pooled there and transposed back."""
    if channels_last:
        y = be.pool2d(be.transpose(x, (0, 3, 1, 2)), window, stride, pads, mode, count_include_pad, False)
        return be.transpose(y, (0, 2, 3, 1))
    y = be.pool2d(be.transpose(x, (0, 2, 3, 1)), window, stride, pads, mode, count_include_pad, True)
    return be.transpose(y, (0, 3, 1, 2))


def pool2d_shift(
    be: Any, x: Any, window: Pair, stride: Pair, pads: Pads, mode: str, count_include_pad: bool, channels_last: bool
) -> Any:
    """Max or sum over the window offsets of shifted strided views (``be.maximum`` / ``+``), then the divisor."""
    if channels_last:
        x = be.transpose(x, (0, 3, 1, 2))
    (top, bottom), (left, right) = pads
    x = be.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)), float("-inf") if mode == "max" else 0.0)
    out_h = (x.shape[2] - window[0]) // stride[0] + 1
    out_w = (x.shape[3] - window[1]) // stride[1] + 1
    y = None
    for i in range(window[0]):
        rows = _taps(i, out_h, stride[0])
        for j in range(window[1]):
            patch = x[:, :, rows, _taps(j, out_w, stride[1])]
            y = patch if y is None else be.maximum(y, patch) if mode == "max" else y + patch
    if mode == "avg":
        if count_include_pad or top + bottom + left + right == 0:
            y = y / float(window[0] * window[1])
        else:
            y = y / be.place_like(be.asarray(_real_counts(x.shape[2:], pads, window, stride), be.dtype_name(x)), x)
    return be.transpose(y, (0, 2, 3, 1)) if channels_last else y


def _real_counts(padded: Tuple[int, int], pads: Pads, window: Pair, stride: Pair) -> Any:
    """The number of real (not padded) pixels under each window, shape (1, 1, Ho, Wo)."""
    import numpy as np

    (top, bottom), (left, right) = pads
    ones = np.zeros(padded)
    ones[top : padded[0] - bottom, left : padded[1] - right] = 1.0
    out_h, out_w = (padded[0] - window[0]) // stride[0] + 1, (padded[1] - window[1]) // stride[1] + 1
    counts = sum(
        ones[_taps(i, out_h, stride[0]), _taps(j, out_w, stride[1])] for i in range(window[0]) for j in range(window[1])
    )
    return counts.reshape(1, 1, out_h, out_w)
