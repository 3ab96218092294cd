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

import dataclasses
import math
from typing import Any, NamedTuple, Optional, Tuple

from convlab.errors import ConvlabValueError
from convlab.geometry import ConvGeometry, PoolGeometry, taps

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


def conv_shape(geometry: ConvGeometry, dtype: str) -> ConvShape:
    g = geometry
    return ConvShape(
        g.batch, g.in_channels, g.out_channels, *g.in_hw, *g.window, g.stride, g.dilation, g.channels_last, dtype
    )


def pool_shape(geometry: PoolGeometry, dtype: str) -> PoolShape:
    g = geometry
    return PoolShape(g.x4[0], g.channels, *g.in_hw, g.window, g.stride, g.mode, g.channels_last, dtype)


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


def _finish(be: Any, y: Any, bias: Optional[Any], channels_last: bool, out_channels: int) -> Any:
    """Bias added last (as the native ops round), then back to the caller's layout."""
    if channels_last:
        y = be.transpose(y, (0, 2, 3, 1))
    return add_bias(be, y, bias, channels_last)


def add_bias(be: Any, y: Any, bias: Optional[Any], channels_last: bool) -> Any:
    """``y + bias`` broadcast over the channel axis of a 4-D ``y``; ``y`` itself when bias is None."""
    if bias is None:
        return y
    return y + be.reshape(bias, (1, 1, 1, -1) if channels_last else (1, -1, 1, 1))


def conv2d_shift(be: Any, x: Any, k: Any, bias: Optional[Any], geometry: ConvGeometry) -> Any:
    """Shift-and-accumulate: ``y[:, o] += K[o, c, i, j] * Xpad[:, c, shifted by (i, j)]``, out of place.

    Works on any framework whose tensors slice with steps and broadcast ``*`` and ``+`` (all of them),
    and so differentiates under every framework's autodiff. Strided outputs are read with strided
    slices: the skipped positions are never computed.
    """
    g = geometry
    if g.channels_last:
        x, k = be.transpose(x, (0, 3, 1, 2)), be.transpose(k, (3, 2, 0, 1))
    x = be.pad(x, ((0, 0), (0, 0)) + g.pads)
    (out_h, out_w), (kernel_h, kernel_w), (sh, sw), (dh, dw) = g.out_hw, g.window, g.stride, g.dilation
    out_channels = g.out_channels
    y = None
    for c in range(g.in_channels):
        for i in range(kernel_h):
            rows = taps(i * dh, out_h, sh)
            for j in range(kernel_w):
                patch = x[:, c : c + 1, rows, taps(j * dw, out_w, sw)]
                term = patch * be.reshape(k[:, c, i, j], (1, out_channels, 1, 1))
                y = term if y is None else y + term
    return _finish(be, y, bias, g.channels_last, out_channels)


def conv2d_gemm(be: Any, x: Any, k: Any, bias: Optional[Any], geometry: ConvGeometry) -> Any:
    """One (N*Ho*Wo, C) x (C, Co) matrix product per kernel offset on channels-last data, accumulated."""
    g = geometry
    if not g.channels_last:  # NCHW -> NHWC, OIHW -> HWIO
        x, k = be.transpose(x, (0, 2, 3, 1)), be.transpose(k, (2, 3, 1, 0))
    x = be.pad(x, ((0, 0),) + g.pads + ((0, 0),))
    (out_h, out_w), (kernel_h, kernel_w), (sh, sw), (dh, dw) = g.out_hw, g.window, g.stride, g.dilation
    rows = g.batch * out_h * out_w
    y = None
    for i in range(kernel_h):
        for j in range(kernel_w):
            window = x[:, taps(i * dh, out_h, sh), taps(j * dw, out_w, sw), :]
            term = be.matmul(be.reshape(window, (rows, g.in_channels)), k[i, j])
            y = term if y is None else y + term
    y = add_bias(be, be.reshape(y, (g.batch, out_h, out_w, g.out_channels)), bias, True)
    return y if g.channels_last else be.transpose(y, (0, 3, 1, 2))


def pool2d_layout(be: Any, x: Any, geometry: PoolGeometry) -> Any:
    """Pool in the other layout: NCHW data is transposed to NHWC, pooled there and transposed back."""
    to_other, back = ((0, 3, 1, 2), (0, 2, 3, 1)) if geometry.channels_last else ((0, 2, 3, 1), (0, 3, 1, 2))
    return be.transpose(be.pool2d(be.transpose(x, to_other), other_layout(geometry)), back)


def other_layout(geometry: PoolGeometry) -> PoolGeometry:
    """The same pooling on the input transposed to the other memory layout."""
    g = geometry
    to_other = (0, 3, 1, 2) if g.channels_last else (0, 2, 3, 1)
    x4 = (g.x4[0], g.x4[to_other[1]], g.x4[to_other[2]], g.x4[to_other[3]])
    out4 = (g.out4[0], g.out4[to_other[1]], g.out4[to_other[2]], g.out4[to_other[3]])
    return dataclasses.replace(g, x4=x4, out4=out4, out=out4, channels_last=not g.channels_last, x_lifted=False)


def pool2d_shift(be: Any, x: Any, geometry: PoolGeometry) -> Any:
    """Max or sum over the window offsets of shifted strided views (``be.maximum`` / ``+``), then the divisor."""
    g = geometry
    if g.channels_last:
        x = be.transpose(x, (0, 3, 1, 2))
    x = be.pad(x, ((0, 0), (0, 0)) + g.pads, g.fill)
    (out_h, out_w), (sh, sw) = g.out_hw, g.stride
    y = None
    for i in range(g.window[0]):
        rows = taps(i, out_h, sh)
        for j in range(g.window[1]):
            patch = x[:, :, rows, taps(j, out_w, sw)]
            y = patch if y is None else be.maximum(y, patch) if g.mode == "max" else y + patch
    if g.mode == "avg":
        y = divide(be, y, g, channels_last=False)
    return be.transpose(y, (0, 2, 3, 1)) if g.channels_last else y


def divide(be: Any, sums: Any, geometry: PoolGeometry, channels_last: Optional[bool] = None) -> Any:
    """Window sums of average pooling divided by :attr:`PoolGeometry.divisor` (the one place it is applied).

    ``channels_last`` says the layout of ``sums`` when it is not the geometry's. The per-window counts are
    the product of a per-row and a per-column count (exact small integers), so the divisor is built from two
    short constants, and the sums are divided once, as the native ops do.
    """
    if geometry.counts is None:
        return sums / float(geometry.window[0] * geometry.window[1])
    layout = geometry.channels_last if channels_last is None else channels_last
    rows, cols = geometry.counts
    row_shape = (1, len(rows), 1, 1) if layout else (1, 1, len(rows), 1)
    col_shape = (1, 1, len(cols), 1) if layout else (1, 1, 1, len(cols))
    return sums / (be.constant(rows, sums, row_shape) * be.constant(cols, sums, col_shape))


# -- non-finite values in max pooling (DESIGN.md section 3) ----------------------------------------
#
# Max pooling propagates NaN like np.max, and a window of -inf only gives -inf. Its gradient goes to the pixel
# np.argmax picks among the window's real pixels (never padding): the first NaN when the window holds NaN, else
# its first maximum (the first pixel of a window of -inf only). TensorFlow's and MXNet's max pooling skip NaN and
# start from the lowest finite number; JAX's, TensorFlow's and MXNet's gradients send the gradient of a window
# holding NaN elsewhere, and pooling that pads by hand with -inf may send a window of -inf only to the padding.
# The adapters repair both with these helpers. ``xp`` is a NumPy-like namespace of the framework's own
# ``isnan`` and ``where`` (taking a Python number for either branch): mxnet.np, jax.numpy, torch, or a shim.

#: the code of a pixel (:func:`nonfinite_code`); padding must pool below CODE_MINUS_INF (-inf, a lowest number, 0).
#: Integers: they compare with float and integer tensors alike (TensorFlow pools the code as uint8)
CODE_NAN, CODE_NUMBER, CODE_MINUS_INF = 3, 2, 1


def free_of_nan_and_negative_inf(total: Any) -> Any:
    """Given ``total``, the sum of all of an input's elements: is the input free of NaN and -inf? (A boolean.)

    ``total > -inf`` is exactly that, in any order of summation: a NaN makes every partial sum that holds it
    NaN, a -inf makes it -inf or NaN (met by +inf); an overflow of numbers, or +inf, gives +inf, correctly true.
    One pass over the input, no temporary of its size. Where it holds, a native max pool and its gradient are
    already right: the adapters skip the repair.
    """
    return total > -math.inf


def free_of_nan_and_inf(total: Any) -> Any:
    """Given ``total``, the sum of all of an input's elements: is the input free of NaN and of both infinities?

    ``total * 0 == 0`` is true for a finite sum only; an overflow of finite numbers says False, which costs
    a slower exact path, never a wrong answer. (TensorFlow spells a dilated kernel out with zeros, whose
    products with NaN or inf pixels are NaN: its adapter takes another path for inputs that fail this.)
    """
    return total * 0.0 == 0.0


def nonfinite_code(xp: Any, x: Any) -> Any:
    """Per pixel CODE_NAN (3) for NaN, CODE_NUMBER (2) for a number above -inf, CODE_MINUS_INF (1) for -inf.

    In the dtype ``xp.where`` gives Python ints (adapters cast where they need ``x``'s). Max-pooled with
    padding below 1, it gives each window's class: 3 holds NaN, 1 holds only -inf, 2 has a number as its
    maximum. Its own native max-pool gradient sends a window's gradient to the window's first pixel of the
    highest code: the first NaN, or the first real pixel of a window of -inf only.
    """
    return xp.where(xp.isnan(x), CODE_NAN, xp.where(x > -math.inf, CODE_NUMBER, CODE_MINUS_INF))


def repair_max_pool(xp: Any, y: Any, classes: Any) -> Any:
    """A native max pool's ``y`` with NaN where the window holds NaN and -inf where it holds only -inf.

    ``classes`` is the max pool of :func:`nonfinite_code` of the same input with the same geometry.
    """
    return xp.where(classes == CODE_NAN, math.nan, xp.where(classes == CODE_MINUS_INF, -math.inf, y))


def split_max_pool_cotangent(xp: Any, classes: Any, dy: Any) -> Tuple[Any, Any]:
    """``dy`` of a max pool split by window class: ``(for the pool of x, for the pool of the code)``.

    The native gradient of the pool of x, given the first part, routes the windows whose maximum is a number
    to their first maximum; the native gradient of the pool of :func:`nonfinite_code`, given the second part,
    routes the others to their first NaN, or to the first real pixel of a window of -inf only. Their sum is the
    gradient convlab gives max pooling on every backend. (In forward mode: ``where(regular, t_x, t_code)``.)
    """
    regular = classes == CODE_NUMBER
    return xp.where(regular, dy, 0.0), xp.where(regular, 0.0, dy)
