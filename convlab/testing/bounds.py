"""The rule of DESIGN.md section 4 as functions: the unit roundoff, one bound per kind of operation, and the checks.

A bounded output element y must satisfy ``|y - y_ref| <= c * n * u * m``: ``y_ref`` the float64 NumPy
reference, ``m`` the same operation on absolute values, ``n`` the products (or terms) summed per element,
``u`` the dtype's unit roundoff and ``c = 2``. Each kind of operation says its ``n`` once, here.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence, Tuple

import numpy as np

import convlab as cl
from convlab.registry import backend_of

C = 2.0
UNIT_ROUNDOFF = {"float32": 2.0**-24, "float64": 2.0**-53}
EXACT_LIMIT = 2.0**24


def conv_bound(magnitude: np.ndarray, products: int, dtype: str, c: float = C) -> np.ndarray:
    """A correlation's bound: ``products`` (taps x input channels, plus one for a bias) summed per element."""
    return c * products * UNIT_ROUNDOFF[dtype] * magnitude


def conv_vjp_bounds(
    magnitudes: Sequence[np.ndarray], counts: Sequence[int], dtype: str, c: float = C
) -> Tuple[np.ndarray, ...]:
    """The bounds of a gradient's parts (dX, dK, dbias): each part a correlation of ``counts[i]`` products."""
    return tuple(conv_bound(m, n, dtype, c) for m, n in zip(magnitudes, counts))


def pool_bound(magnitude: np.ndarray, window_pixels: int, dtype: str, c: float = C) -> np.ndarray:
    """An average pooling's bound: ``window_pixels`` terms summed, and one division."""
    return c * (window_pixels + 1) * UNIT_ROUNDOFF[dtype] * magnitude


def _numpy(value: Any) -> np.ndarray:
    """Any backend's tensor (or a list/array) as a NumPy array: test code only."""
    if isinstance(value, np.ndarray):
        return value
    owner = backend_of(value)
    return owner.to_numpy(value) if owner is not None else np.asarray(value)


def _f64(value: Any) -> np.ndarray:
    return np.asarray(_numpy(value), dtype=np.float64)


def _products_per_element(K: np.ndarray, data_format: str = "channels_first") -> int:
    if K.ndim == 4:
        return int(np.prod(K.shape[:3]) if data_format == "channels_last" else np.prod(K.shape[1:]))
    return int(np.prod(K.shape))


def conv2d_bound(X: Any, K: Any, bias: Any = None, *, dtype: str = "float32", c: float = C, **conv_kwargs: Any):
    """The per-element bound ``c * n * u * (|X| (*) |K| + |bias|)`` for :func:`convlab.conv2d` (float64 NumPy)."""
    X, K = _f64(X), _f64(K)
    n = _products_per_element(K, conv_kwargs.get("data_format", "channels_first")) + (bias is not None)
    magnitude = cl.conv2d(
        np.abs(X), np.abs(K), None if bias is None else np.abs(_f64(bias)), backend="numpy", **conv_kwargs
    )
    return conv_bound(magnitude, n, dtype, c)


def _integer_valued(*arrays: Optional[np.ndarray]) -> bool:
    return all(a is None or bool(np.all(np.round(a) == a)) for a in arrays)


def _max_partial_sum(X: np.ndarray, K: np.ndarray, bias: Optional[np.ndarray], conv_kwargs: dict) -> float:
    magnitude = cl.conv2d(np.abs(X), np.abs(K), None if bias is None else np.abs(bias), backend="numpy", **conv_kwargs)
    return _finite_max(magnitude)


def _finite_max(magnitude: np.ndarray) -> float:
    """The largest finite element (0.0 when none): what decides the exact tier where some outputs are NaN or inf."""
    finite = np.asarray(magnitude)[np.isfinite(magnitude)]
    return float(np.max(finite)) if finite.size else 0.0


def _check_nonfinite(actual: np.ndarray, expected: np.ndarray, what: str) -> np.ndarray:
    """NaN, +inf and -inf must sit exactly where the reference has them; returns the mask of the other positions.

    (DESIGN.md section 3: max pooling propagates NaN like np.max, infinities follow IEEE arithmetic.)
    """
    for label, test in (("NaN", np.isnan), ("+inf", np.isposinf), ("-inf", np.isneginf)):
        wrong = test(actual) != test(expected)
        if np.any(wrong):
            index = tuple(int(i) for i in np.argwhere(wrong)[0])
            raise AssertionError(
                f"{what}: {label} where the reference has none, or the other way round: {int(wrong.sum())} of "
                f"{wrong.size} elements, first at {index}: {actual[index]!r} vs reference {expected[index]!r}"
            )
    return np.isfinite(expected)


def _check_exact(actual: np.ndarray, reference: np.ndarray, what: str) -> float:
    expected = np.asarray(reference).astype(actual.dtype)
    if actual.shape != expected.shape:
        raise AssertionError(f"{what}: shape {actual.shape} differs from the reference's {expected.shape}")
    same = (actual == expected) | (np.isnan(actual) & np.isnan(expected))
    if not np.all(same):
        index = tuple(int(i) for i in np.argwhere(~same)[0])
        raise AssertionError(
            f"{what}: not bit-identical (exact tier): {int((~same).sum())} of {same.size} elements differ, "
            f"first at {index}: {actual[index]!r} vs reference {expected[index]!r}"
        )
    return 0.0


def _check_bound(actual: np.ndarray, reference: np.ndarray, bound: np.ndarray, what: str) -> float:
    if actual.shape != reference.shape:
        raise AssertionError(f"{what}: shape {actual.shape} differs from the reference's {reference.shape}")
    finite = _check_nonfinite(actual, reference, what)  # then the bound, on the finite positions only
    with np.errstate(invalid="ignore"):
        error = np.where(finite, np.abs(actual.astype(np.float64) - reference), 0.0)
    ratio = _ratio(error, np.where(finite, bound, 1.0))
    worst = float(ratio.max()) if ratio.size else 0.0
    if not worst <= 1.0:
        index = tuple(
            int(i) for i in np.unravel_index(int(np.nanargmax(np.where(np.isnan(ratio), np.inf, ratio))), ratio.shape)
        )
        raise AssertionError(
            f"{what}: error {abs(float(actual[index]) - float(reference[index])):.3g} at {index} is {worst:.3g} "
            f"times the bound {float(bound[index]):.3g} "
            f"(value {float(actual[index])!r}, reference {float(reference[index])!r})"
        )
    return worst


def _ratio(error: np.ndarray, bound: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(error == 0, 0.0, error / bound)
    return np.where(np.isnan(error), np.inf, ratio)


def _as_tuple(value: Any) -> tuple:
    return tuple(value) if isinstance(value, (tuple, list)) else (value,)


def _power_of_two(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0
