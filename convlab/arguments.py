"""Normalising and validating the arguments every op shares.

Everything here is pure Python on shapes and small tuples: it runs before any
framework code, and its results are cached because the same stride/padding
combinations come back call after call.
"""

from __future__ import annotations

import functools
from typing import Any, Sequence, Tuple, Union

from convlab.errors import ConvlabTypeError, ConvlabValueError

Pair = Tuple[int, int]
Pads = Tuple[Pair, Pair]
IntOrPair = Union[int, Sequence[int]]
Padding = Union[int, str, Sequence[int], Sequence[Sequence[int]]]

DATA_FORMATS = ("channels_first", "channels_last")
POOL_MODES = ("max", "avg")


def _is_int(value: Any) -> bool:
    return (
        isinstance(value, int)
        and not isinstance(value, bool)
        or (type(value).__module__ == "numpy" and hasattr(value, "dtype") and value.dtype.kind in "iu")
    )


@functools.lru_cache(maxsize=1024)
def _pair_cached(name: str, value: Any, minimum: int) -> Pair:
    if _is_int(value):
        pair = (int(value), int(value))
    elif isinstance(value, tuple) and len(value) == 2 and all(_is_int(v) for v in value):
        pair = (int(value[0]), int(value[1]))
    else:
        raise ConvlabTypeError(f"{name} must be an int or a pair of ints (height, width), got {value!r}")
    if min(pair) < minimum:
        raise ConvlabValueError(f"{name} must be >= {minimum} in both dimensions, got {value!r}")
    return pair


def to_pair(name: str, value: IntOrPair, minimum: int = 1) -> Pair:
    """``3 -> (3, 3)``, ``(2, 3) -> (2, 3)``; checks ``>= minimum``."""
    value = _freeze(value)
    try:
        return _pair_cached(name, value, minimum)
    except TypeError as error:  # unhashable entries
        if isinstance(error, ConvlabTypeError):
            raise
        raise ConvlabTypeError(f"{name} must be an int or a pair of ints (height, width), got {value!r}") from None


def check_data_format(data_format: str) -> bool:
    """Return True for channels_last, False for channels_first."""
    if data_format == "channels_first":
        return False
    if data_format == "channels_last":
        return True
    raise ConvlabValueError(f"data_format must be one of {DATA_FORMATS}, got {data_format!r}")


class _Opaque:
    """Wraps a value that is neither int nor str in a cache key, so that 1.0 or True never hits the entry of 1."""

    __slots__ = ("value",)

    def __init__(self, value: Any):
        self.value = value

    def __repr__(self) -> str:
        return repr(self.value)


def _freeze(value: Any) -> Any:
    """A hashable, type-exact cache key: tuples for sequences, ints and strings as they are."""
    if type(value) is int or type(value) is str:
        return value
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    if isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    if _is_int(value):
        return int(value)
    return _Opaque(value)


def resolve_pads(
    padding: Padding,
    spatial: Pair,
    window: Pair,
    stride: Pair,
    dilation: Pair,
) -> Pads:
    """Turn any accepted padding form into explicit ``((top, bottom), (left, right))``.

    ``window`` is the kernel or pool size; ``spatial`` the input's (H, W).
    Also checks that the (dilated) window fits in the padded input.
    """
    try:
        return _resolve_pads_cached(_freeze(padding), spatial, window, stride, dilation)
    except TypeError as error:
        if isinstance(error, ConvlabTypeError):
            raise
        raise ConvlabTypeError(_PADDING_FORMS + f", got {padding!r}") from None


_PADDING_FORMS = "padding must be an int, a pair (ph, pw), explicit ((top, bottom), (left, right)), 'valid' or 'same'"


@functools.lru_cache(maxsize=4096)
def _resolve_pads_cached(padding: Any, spatial: Pair, window: Pair, stride: Pair, dilation: Pair) -> Pads:
    extent = tuple((k - 1) * d + 1 for k, d in zip(window, dilation))
    if isinstance(padding, str):
        mode = padding.lower()
        if mode == "valid":
            pads: Pads = ((0, 0), (0, 0))
        elif mode == "same":
            totals = []
            for size, s, e in zip(spatial, stride, extent):
                out = -(-size // s)  # ceil(size / stride)
                totals.append(max((out - 1) * s + e - size, 0))
            pads = tuple((t // 2, t - t // 2) for t in totals)  # odd extra at the bottom/right
        else:
            raise ConvlabValueError(_PADDING_FORMS + f", got {padding!r}")
    elif _is_int(padding):
        pads = ((int(padding),) * 2, (int(padding),) * 2)
    elif isinstance(padding, tuple) and len(padding) == 2 and all(_is_int(p) for p in padding):
        pads = ((int(padding[0]),) * 2, (int(padding[1]),) * 2)
    elif (
        isinstance(padding, tuple)
        and len(padding) == 2
        and all(isinstance(p, tuple) and len(p) == 2 and all(_is_int(v) for v in p) for p in padding)
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
    return pads  # type: ignore[return-value]


def output_size(size: int, pad: Pair, window: int, stride: int, dilation: int) -> int:
    """``floor((in + pad_before + pad_after - dilation*(k-1) - 1) / stride) + 1``."""
    return (size + pad[0] + pad[1] - dilation * (window - 1) - 1) // stride + 1


def output_hw(spatial: Pair, pads: Pads, window: Pair, stride: Pair, dilation: Pair) -> Pair:
    return (
        output_size(spatial[0], pads[0], window[0], stride[0], dilation[0]),
        output_size(spatial[1], pads[1], window[1], stride[1], dilation[1]),
    )
