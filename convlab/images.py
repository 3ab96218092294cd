"""Small test images from the chapter and its exercises, as float32 NumPy arrays."""

from __future__ import annotations

import numpy as np

from convlab.kernels import _positive_int


def stripes(height: int = 6, width: int = 8, dark: slice = slice(2, 6)) -> np.ndarray:
    """The book's image (section 6.2.3): white (1) with the columns in ``dark`` black (0).

    Example:
        >>> stripes()[0].tolist()
        [1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0]
    """
    image = np.ones((_positive_int("height", height), _positive_int("width", width)), dtype=np.float32)
    image[:, dark] = 0
    return image


def diagonal(size: int = 8) -> np.ndarray:
    """Ones on and below the diagonal: one diagonal edge (the exercise of section 6.2).

    Example:
        >>> diagonal(3).tolist()
        [[1.0, 0.0, 0.0], [1.0, 1.0, 0.0], [1.0, 1.0, 1.0]]
    """
    size = _positive_int("size", size)
    return np.tril(np.ones((size, size), dtype=np.float32))


def checkerboard(size: int = 8, square: int = 2) -> np.ndarray:
    """Alternating ``square`` x ``square`` blocks of 1 and 0: edges in both directions.

    Example:
        >>> checkerboard(4, 2)[0].tolist()
        [1.0, 1.0, 0.0, 0.0]
    """
    size, square = _positive_int("size", size), _positive_int("square", square)
    index = np.arange(size) // square
    return ((index[:, None] + index[None, :]) % 2 == 0).astype(np.float32)


def ramp(height: int = 3, width: int = 3) -> np.ndarray:
    """``0, 1, 2, ...`` row by row: the book's 3x3 example input.

    Example:
        >>> ramp().tolist()
        [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0], [6.0, 7.0, 8.0]]
    """
    height, width = _positive_int("height", height), _positive_int("width", width)
    return np.arange(height * width, dtype=np.float32).reshape(height, width)
