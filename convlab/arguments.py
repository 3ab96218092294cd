"""Normalising the small arguments every op shares (pairs, data formats, cache keys).

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


def is_int(value: Any) -> bool:
    """An int (not a bool) or a NumPy integer."""
    return (
        isinstance(value, int)
        and not isinstance(value, bool)
        or (type(value).__module__ == "numpy" and hasattr(value, "dtype") and value.dtype.kind in "iu")
    )


@functools.lru_cache(maxsize=1024)
def _pair_cached(name: str, value: Any, minimum: int) -> Pair:
    if is_int(value):
        pair = (int(value), int(value))
    elif isinstance(value, tuple) and len(value) == 2 and all(is_int(v) for v in value):
        pair = (int(value[0]), int(value[1]))
    else:
        raise ConvlabTypeError(f"{name} must be an int or a pair of ints (height, width), got {value!r}")
    if min(pair) < minimum:
        raise ConvlabValueError(f"{name} must be >= {minimum} in both dimensions, got {value!r}")
    return pair


def to_pair(name: str, value: IntOrPair, minimum: int = 1) -> Pair:
    """``3 -> (3, 3)``, ``(2, 3) -> (2, 3)``; checks ``>= minimum``."""
    value = freeze(value)
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


def freeze(value: Any) -> Any:
    """A hashable, type-exact cache key: tuples for sequences, ints and strings as they are."""
    if type(value) is int or type(value) is str:
        return value
    if isinstance(value, (list, tuple)):
        return tuple(freeze(v) for v in value)
    if isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    if is_int(value):
        return int(value)
    return _Opaque(value)
