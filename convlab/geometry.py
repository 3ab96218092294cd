"""The geometry of one convolution or pooling call, computed once from shapes and arguments.

:func:`conv_geometry` and :func:`pool_geometry` validate every argument against the shapes involved,
resolve any padding form to explicit ``((top, bottom), (left, right))`` pads and derive what a backend
needs (output size, whether the pads are symmetric, the divisor of average pooling). They are pure
functions of hashable arguments, cached, and the objects they return are frozen and hashable, so a
backend may use one as a cache key or a static argument of a compiled function (JAX's ``jit``).

Backend primitives take these objects: ``conv2d(x, k, bias, geometry)``, ``pool2d(x, geometry)``.
Their 4-D inputs are in the geometry's layout: channels-first NCHW input with an OIHW kernel, or
channels-last NHWC input with an HWIO kernel.

Example:
    >>> from convlab.geometry import conv_geometry, pool_geometry
    >>> g = conv_geometry((1, 3, 8, 8), (16, 3, 3, 3), stride=2, padding="same")
    >>> g.pads, g.out_hw, g.out
    (((0, 1), (0, 1)), (4, 4), (1, 16, 4, 4))
    >>> p = pool_geometry((5, 5), 3, "avg", stride=2, padding=1, count_include_pad=False)
    >>> p.divisor.tolist()
    [[[[4.0, 6.0, 4.0], [6.0, 9.0, 6.0], [4.0, 6.0, 4.0]]]]
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Optional, Tuple, Union

import numpy as np

from convlab.arguments import (
    POOL_MODES,
    IntOrPair,
    Padding,
    Pads,
    Pair,
    check_data_format,
    freeze,
    is_int,
    to_pair,
)
from convlab.errors import ConvlabTypeError, ConvlabValueError

Shape4 = Tuple[int, int, int, int]

_PADDING_FORMS = "padding must be an int, a pair (ph, pw), explicit ((top, bottom), (left, right)), 'valid' or 'same'"


# -- the formulas, each written once --------------------------------------------------------------


def output_size(size: int, pad: Pair, window: int, stride: int, dilation: int) -> int:
    """``floor((in + pad_before + pad_after - dilation*(k-1) - 1) / stride) + 1``."""
    return (size + pad[0] + pad[1] - dilation * (window - 1) - 1) // stride + 1


def output_hw(spatial: Pair, pads: Pads, window: Pair, stride: Pair, dilation: Pair = (1, 1)) -> Pair:
    """:func:`output_size` for height and width."""
    return (
        output_size(spatial[0], pads[0], window[0], stride[0], dilation[0]),
        output_size(spatial[1], pads[1], window[1], stride[1], dilation[1]),
    )


def taps(offset: int, count: int, stride: int) -> slice:
    """The slice of ``count`` input positions a kernel tap at ``offset`` reads with ``stride``."""
    return slice(offset, offset + (count - 1) * stride + 1, stride)


def resolve_pads(padding: Padding, spatial: Pair, window: Pair, stride: Pair, dilation: Pair = (1, 1)) -> Pads:
    """Any accepted padding form as explicit ``((top, bottom), (left, right))``; the window must fit.

    ``"same"`` gives an output of ``ceil(in / stride)`` with the odd extra pad at the bottom/right.

    Example:
        >>> resolve_pads("same", (8, 8), (3, 3), (2, 2))
        ((0, 1), (0, 1))
    """
    try:
        return _resolve_pads(freeze(padding), tuple(spatial), tuple(window), tuple(stride), tuple(dilation))
    except TypeError as error:
        if isinstance(error, ConvlabTypeError):
            raise
        raise ConvlabTypeError(_PADDING_FORMS + f", got {padding!r}") from None


@functools.lru_cache(maxsize=4096)
def _resolve_pads(padding: Any, spatial: Pair, window: Pair, stride: Pair, dilation: Pair) -> Pads:
    extent = tuple((k - 1) * d + 1 for k, d in zip(window, dilation))
    if isinstance(padding, str):
        mode = padding.lower()
        if mode == "valid":
            pads: Any = ((0, 0), (0, 0))
        elif mode == "same":
            totals = [max((-(-size // s) - 1) * s + e - size, 0) for size, s, e in zip(spatial, stride, extent)]
            pads = tuple((t // 2, t - t // 2) for t in totals)
        else:
            raise ConvlabValueError(_PADDING_FORMS + f", got {padding!r}")
    elif is_int(padding):
        pads = ((int(padding),) * 2, (int(padding),) * 2)
    elif isinstance(padding, tuple) and len(padding) == 2 and all(is_int(p) for p in padding):
        pads = ((int(padding[0]),) * 2, (int(padding[1]),) * 2)
    elif (
        isinstance(padding, tuple)
        and len(padding) == 2
        and all(isinstance(p, tuple) and len(p) == 2 and all(is_int(v) for v in p) for p in padding)
    ):
        pads = tuple((int(p[0]), int(p[1])) for p in padding)
    else:
        raise ConvlabTypeError(_PADDING_FORMS + f", got {padding!r}")
    if min(min(p) for p in pads) < 0:
        raise ConvlabValueError(f"padding must not be negative, got {padding!r}")
    for axis, size, pad, e in zip(("height", "width"), spatial, pads, extent):
        if size + pad[0] + pad[1] < e:
            raise ConvlabValueError(
                f"the window of {axis} {e} (size {window}, dilation {dilation}) is larger than the padded "
                f"input {axis} {size} + {pad[0]} + {pad[1]} (input spatial shape {spatial}, padding {padding!r})"
            )
    return pads


def _lift(x_shape: Tuple[int, ...], channels_last: bool, what: str) -> Shape4:
    rank = len(x_shape)
    layout = "(N, H, W, C)" if channels_last else "(N, C, H, W)"
    if rank not in (2, 3, 4):
        raise ConvlabValueError(f"X must be 2-D (H, W), 3-D or 4-D {layout}; got X of shape {x_shape}{what}")
    if rank == 2:
        return (1,) + x_shape + (1,) if channels_last else (1, 1) + x_shape  # type: ignore[return-value]
    return (1,) * (4 - rank) + x_shape  # type: ignore[return-value]


def _spatial(shape4: Shape4, channels_last: bool) -> Pair:
    return (shape4[1], shape4[2]) if channels_last else (shape4[2], shape4[3])


class _Windowed:
    """What convolution and pooling geometries derive alike from their input, output, pads and layout."""

    x4: Shape4
    out4: Shape4
    pads: Pads
    channels_last: bool

    @property
    def in_hw(self) -> Pair:
        return _spatial(self.x4, self.channels_last)

    @property
    def out_hw(self) -> Pair:
        return _spatial(self.out4, self.channels_last)

    @property
    def symmetric_pads(self) -> bool:
        """top == bottom and left == right: what frameworks with one pad per axis accept."""
        return self.pads[0][0] == self.pads[0][1] and self.pads[1][0] == self.pads[1][1]

    @property
    def padded(self) -> bool:
        return self.pads != ((0, 0), (0, 0))


# -- convolution ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ConvGeometry(_Windowed):
    """One convolution's shapes and arguments, validated; 4-D shapes are in the call's layout."""

    x4: Shape4  # the input lifted to 4-D: NCHW, or NHWC when channels_last
    k4: Shape4  # the kernel lifted to 4-D: OIHW, or HWIO when channels_last
    out4: Shape4  # the 4-D output, in the input's layout
    out: Tuple[int, ...]  # the output shape handed back to the user (X's rank)
    stride: Pair
    pads: Pads  # ((top, bottom), (left, right)), resolved
    dilation: Pair
    channels_last: bool
    x_lifted: bool  # X is not 4-D: reshape it to x4 before the primitive
    k_lifted: bool  # K is not 4-D: reshape it to k4

    @property
    def batch(self) -> int:
        return self.x4[0]

    @property
    def in_channels(self) -> int:
        return self.x4[3] if self.channels_last else self.x4[1]

    @property
    def out_channels(self) -> int:
        return self.k4[3] if self.channels_last else self.k4[0]

    @property
    def window(self) -> Pair:
        """The kernel's (kh, kw)."""
        return (self.k4[0], self.k4[1]) if self.channels_last else (self.k4[2], self.k4[3])

    @property
    def products(self) -> int:
        """Products summed per output element: C * kh * kw."""
        return self.in_channels * self.window[0] * self.window[1]

    @property
    def is_4d(self) -> bool:
        """X and K are 4-D and the result is handed back 4-D: a primitive runs on the inputs as they are."""
        return not (self.x_lifted or self.k_lifted or self.out != self.out4)


def conv_geometry(
    x_shape: Any,
    k_shape: Any,
    bias_shape: Optional[Any] = None,
    *,
    stride: IntOrPair = 1,
    padding: Padding = 0,
    dilation: IntOrPair = 1,
    data_format: str = "channels_first",
) -> ConvGeometry:
    """Validate a convolution and compute its geometry; X is (H, W), (C, H, W) or 4-D, K 2-D or 4-D.

    Raises ConvlabValueError / ConvlabTypeError naming the argument and the shapes.

    Example:
        >>> conv_geometry((6, 8), (1, 2)).out
        (6, 7)
    """
    try:
        return _conv_geometry(
            _shape("X", x_shape),
            _shape("K", k_shape),
            None if bias_shape is None else _shape("bias", bias_shape),
            freeze(stride),
            freeze(padding),
            freeze(dilation),
            data_format,
        )
    except TypeError as error:
        if isinstance(error, ConvlabTypeError):
            raise
        raise ConvlabTypeError(
            f"stride, padding, dilation and data_format must be ints, tuples or strings: {error}"
        ) from None


@functools.lru_cache(maxsize=4096)
def _conv_geometry(x_shape, k_shape, bias_shape, stride, padding, dilation, data_format) -> ConvGeometry:
    channels_last = check_data_format(data_format)
    stride_pair = to_pair("stride", stride)
    dilation_pair = to_pair("dilation", dilation)
    kernel_layout = "(kh, kw, C, Co)" if channels_last else "(Co, C, kh, kw)"
    x4 = _lift(x_shape, channels_last, "")
    if len(k_shape) == 2:
        if len(x_shape) != 2:
            raise ConvlabValueError(
                f"a 2-D kernel K needs a 2-D X; got X of shape {x_shape} and K of shape {k_shape} "
                f"(use a 4-D kernel {kernel_layout} for channels)"
            )
        k4 = (k_shape[0], k_shape[1], 1, 1) if channels_last else (1, 1) + k_shape
    elif len(k_shape) == 4:
        k4 = k_shape
    else:
        raise ConvlabValueError(f"K must be 4-D {kernel_layout} (or 2-D with a 2-D X); got K of shape {k_shape}")
    out_channels, in_channels = (k4[3], k4[2]) if channels_last else (k4[0], k4[1])
    window = (k4[0], k4[1]) if channels_last else (k4[2], k4[3])
    x_channels = x4[3] if channels_last else x4[1]
    if x_channels != in_channels:
        raise ConvlabValueError(
            f"X has {x_channels} input channels but K expects {in_channels}: X of shape {x_shape} "
            f"({data_format}), K of shape {k_shape} {kernel_layout}"
        )
    if min(x4) < 1 or min(k4) < 1:
        raise ConvlabValueError(f"X and K must not be empty; got X of shape {x_shape}, K of shape {k_shape}")
    if bias_shape is not None and bias_shape != (out_channels,):
        raise ConvlabValueError(
            f"bias must have shape ({out_channels},), one value per output channel of K; got bias of shape "
            f"{bias_shape} with K of shape {k_shape}"
        )
    spatial = _spatial(x4, channels_last)
    pads = resolve_pads(padding, spatial, window, stride_pair, dilation_pair)
    out_h, out_w = output_hw(spatial, pads, window, stride_pair, dilation_pair)
    out4 = (x4[0], out_h, out_w, out_channels) if channels_last else (x4[0], out_channels, out_h, out_w)
    rank = len(x_shape)
    out = out4 if rank == 4 else out4[1:] if rank == 3 or out_channels > 1 else (out_h, out_w)
    return ConvGeometry(
        x4, k4, out4, out, stride_pair, pads, dilation_pair, channels_last, x4 != x_shape, k4 != k_shape
    )


# -- pooling -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PoolGeometry(_Windowed):
    """One pooling call's shapes and arguments, validated; 4-D shapes are in the call's layout."""

    x4: Shape4
    out4: Shape4
    out: Tuple[int, ...]
    window: Pair
    stride: Pair
    pads: Pads
    mode: str  # "max" or "avg"
    count_include_pad: bool
    channels_last: bool
    x_lifted: bool
    #: real pixels under each window, per output row and per output column (their product is the count), when
    #: they differ from window to window; plain ints, computed once with the geometry (see :attr:`divisor`)
    counts: Optional[Tuple[Tuple[int, ...], Tuple[int, ...]]] = None

    @property
    def channels(self) -> int:
        return self.x4[3] if self.channels_last else self.x4[1]

    @property
    def fill(self) -> float:
        """What padding holds: -inf for max pooling, 0 for average pooling."""
        return float("-inf") if self.mode == "max" else 0.0

    @property
    def uniform_divisor(self) -> bool:
        """Every average divides by the window's area (padded zeros counted, or no padding)."""
        return self.count_include_pad or not self.padded

    @property
    def divisor(self) -> Union[float, np.ndarray]:
        """What each window sum of average pooling is divided by.

        The window's area when :attr:`uniform_divisor`; else the number of real (not padded) pixels under
        each window, a read-only float64 array shaped to broadcast against the 4-D output
        ((1, 1, Ho, Wo), or (1, Ho, Wo, 1) channels-last).
        """
        if self.counts is None:
            return float(self.window[0] * self.window[1])
        return _count_array(self.counts, self.channels_last)

    @property
    def is_4d(self) -> bool:
        return not (self.x_lifted or self.out != self.out4)


def real_counts(size: int, pad: Pair, window: int, stride: int) -> Tuple[int, ...]:
    """Along one axis: how many real (not padded) pixels each output position's window covers."""
    out = output_size(size, pad, window, stride, 1)
    return tuple(min(o * stride - pad[0] + window, size) - max(o * stride - pad[0], 0) for o in range(out))


@functools.lru_cache(maxsize=256)
def _count_array(counts: Tuple[Tuple[int, ...], Tuple[int, ...]], channels_last: bool) -> np.ndarray:
    rows, cols = counts
    array = np.outer(np.asarray(rows, np.float64), np.asarray(cols, np.float64))
    array = array.reshape((1,) + array.shape + (1,) if channels_last else (1, 1) + array.shape)
    array.setflags(write=False)
    return array


def pool_geometry(
    x_shape: Any,
    pool_size: IntOrPair,
    mode: str = "max",
    *,
    stride: IntOrPair = 1,
    padding: Padding = 0,
    count_include_pad: bool = True,
    data_format: str = "channels_first",
) -> PoolGeometry:
    """Validate a pooling call and compute its geometry; X is (H, W), (C, H, W) or 4-D.

    Example:
        >>> pool_geometry((4, 4), 2, stride=2).out
        (2, 2)
    """
    if not isinstance(count_include_pad, (bool, np.bool_)):
        raise ConvlabTypeError(f"count_include_pad must be True or False, got {count_include_pad!r}")
    try:
        return _pool_geometry(
            _shape("X", x_shape),
            freeze(pool_size),
            mode,
            freeze(stride),
            freeze(padding),
            bool(count_include_pad),
            data_format,
        )
    except TypeError as error:
        if isinstance(error, ConvlabTypeError):
            raise
        raise ConvlabTypeError(f"pool_size, mode, stride, padding and data_format have wrong types: {error}") from None


@functools.lru_cache(maxsize=4096)
def _pool_geometry(x_shape, pool_size, mode, stride, padding, count_include_pad, data_format) -> PoolGeometry:
    channels_last = check_data_format(data_format)
    if mode not in POOL_MODES:
        raise ConvlabValueError(f"mode must be one of {POOL_MODES}, got {mode!r}")
    window = to_pair("pool_size", pool_size)
    stride_pair = to_pair("stride", stride)
    x4 = _lift(x_shape, channels_last, "")
    if min(x4) < 1:
        raise ConvlabValueError(f"X must not be empty; got X of shape {x_shape}")
    spatial = _spatial(x4, channels_last)
    pads = resolve_pads(padding, spatial, window, stride_pair)
    if any(max(pad) >= size for pad, size in zip(pads, window)):
        raise ConvlabValueError(
            f"padding must be smaller than pool_size on each side, so that every window sees a real pixel; "
            f"got padding {padding!r} (pads {pads}) with pool_size {window}"
        )
    out_h, out_w = output_hw(spatial, pads, window, stride_pair)
    out4 = (x4[0], out_h, out_w, x4[3]) if channels_last else (x4[0], x4[1], out_h, out_w)
    rank = len(x_shape)
    out = (out_h, out_w) if rank == 2 else out4[4 - rank :]
    counts = None
    if not count_include_pad and pads != ((0, 0), (0, 0)):
        counts = (real_counts(spatial[0], pads[0], window[0], stride_pair[0]),
                  real_counts(spatial[1], pads[1], window[1], stride_pair[1]))  # fmt: skip
    return PoolGeometry(
        x4, out4, out, window, stride_pair, pads, mode, count_include_pad, channels_last, x4 != x_shape, counts
    )


def _shape(name: str, value: Any) -> Tuple[int, ...]:
    """A shape tuple from a tuple of ints or anything with ``.shape``."""
    shape = getattr(value, "shape", value)
    try:
        return tuple(int(n) for n in shape)
    except (TypeError, ValueError):
        raise ConvlabTypeError(f"{name} must be a shape (tuple of ints) or an array, got {value!r}") from None
