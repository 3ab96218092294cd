"""Hand-designed kernels (exercise 4 of section 6.2), as float32 NumPy arrays usable on any backend.

All are cross-correlation kernels: ``corr2d(X, derivative(1))`` is the forward difference
``X[:, j + 1] - X[:, j]``.
"""

from __future__ import annotations

from math import comb

import numpy as np

from convlab.errors import ConvlabTypeError, ConvlabValueError


def _positive_int(name: str, value: object, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ConvlabTypeError(f"{name} must be an int, got {value!r}")
    if value < minimum:
        raise ConvlabValueError(f"{name} must be >= {minimum}, got {value!r}")
    return int(value)


def edge() -> np.ndarray:
    """The book's vertical-edge detector ``[[1, -1]]``: 1 where white turns black, -1 the other way.

    Example:
        >>> edge().tolist()
        [[1.0, -1.0]]
    """
    return np.array([[1.0, -1.0]], dtype=np.float32)


def derivative(order: int = 1, axis: str = "x") -> np.ndarray:
    """The forward finite difference of ``order`` along ``axis`` ("x": a row kernel, "y": a column).

    It has ``order + 1`` taps, the binomial coefficients with alternating signs: the smallest
    kernel that gives a derivative of order d has d + 1 taps (see :func:`min_size`).

    Example:
        >>> derivative(2).tolist()
        [[1.0, -2.0, 1.0]]
    """
    order = _positive_int("order", order, 0)
    taps = [(-1) ** (order - k) * comb(order, k) for k in range(order + 1)]
    row = np.array([taps], dtype=np.float32)
    if axis == "x":
        return row
    if axis == "y":
        return np.ascontiguousarray(row.T)
    raise ConvlabValueError(f"axis must be 'x' or 'y', got {axis!r}")


def second_derivative(axis: str = "x") -> np.ndarray:
    """``[[1, -2, 1]]``: the second difference, the smallest second-derivative kernel.

    Example:
        >>> second_derivative("y").ravel().tolist()
        [1.0, -2.0, 1.0]
    """
    return derivative(2, axis)


def laplacian() -> np.ndarray:
    """The 3x3 Laplacian, the sum of the second derivatives along both axes.

    Example:
        >>> laplacian().tolist()
        [[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]]
    """
    return np.array([[0, 1, 0], [1, -4, 1], [0, 1, 0]], dtype=np.float32)


def integral(size: int = 3, axis: str = "x") -> np.ndarray:
    """A row (or column) of ones: the discrete integral (running sum) over ``size`` pixels.

    Example:
        >>> integral(3).tolist()
        [[1.0, 1.0, 1.0]]
    """
    size = _positive_int("size", size)
    row = np.ones((1, size), dtype=np.float32)
    if axis in ("x", "y"):
        return row if axis == "x" else np.ascontiguousarray(row.T)
    raise ConvlabValueError(f"axis must be 'x' or 'y', got {axis!r}")


def box(size: int = 3) -> np.ndarray:
    """The ``size`` x ``size`` mean (box blur): the 2-D integral, normalised.

    Example:
        >>> float(box(2).sum())
        1.0
    """
    size = _positive_int("size", size)
    return np.full((size, size), 1.0 / (size * size), dtype=np.float32)


def sobel(axis: str = "x") -> np.ndarray:
    """Sobel's smoothed derivative along ``axis``.

    Example:
        >>> sobel("x").tolist()
        [[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]
    """
    kernel = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], dtype=np.float32)
    if axis == "x":
        return kernel
    if axis == "y":
        return np.ascontiguousarray(kernel.T)
    raise ConvlabValueError(f"axis must be 'x' or 'y', got {axis!r}")


def min_size(order: int) -> int:
    """The fewest taps a kernel needs to give a derivative of ``order``: ``order + 1``.

    A kernel of n taps fits a polynomial of degree n - 1, whose n - 1-th derivative is the
    highest one it can represent.

    Example:
        >>> [min_size(d) for d in range(4)]
        [1, 2, 3, 4]
    """
    return _positive_int("order", order, 0) + 1
