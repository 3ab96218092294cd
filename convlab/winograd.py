"""Winograd minimal filtering F(m x m, 3 x 3) (Lavin & Gray 2016) for stride-1, dilation-1 3x3 correlation.

Each m x m block of outputs is computed from an (m+2) x (m+2) tile ``d`` of the padded input as

    Y = A^T [ sum_c (G g_c G^T) * (B^T d_c B) ] A

so the channel reduction becomes (m+2)^2 independent matrix products of shape (tiles, C) x (C, Co): for
F(4x4, 3x3) 36 products over N*H*W/16 tiles where a direct formulation does 9 over N*H*W pixels, 4x fewer
multiplications (F(2x2, 3x3): 16 over N*H*W/4, 2.25x fewer). The transforms are products with the small
constant matrices of :func:`transforms`.

- :func:`conv2d_winograd` is written once with the seam's array ops of a :class:`convlab.Backend` (``pad``,
  ``reshape``, ``transpose``, ``matmul`` of 2-D x N-D and batched 3-D operands, slicing, ``+``, ``*``): it
  runs, and differentiates, on every backend.
- Framework spellings of the same algorithm, for the adapters: :func:`numpy_winograd` and
  :func:`torch_winograd` (the tiles of one cache-sized block at a time, in preallocated buffers),
  :func:`fused_winograd` (the transforms as sums of strided slices, for a compiler to fuse:
  :func:`jax_winograd` jits it whole, :func:`tensorflow_winograd` compiles it with XLA) and
  :func:`mxnet_winograd`.

Accuracy: the transforms add and subtract pixels and taps that a direct sum never combines, so an output
whose own products are small next to its tile's neighbours picks up their rounding error, and the section 4
rule of DESIGN.md (``|y - y_ref| <= 2 n u (|X| (*) |K|)``) does not hold on every input for any tile size.
What does hold is :func:`error_bound`, the same rule with the magnitudes Winograd actually sums
(``benchmarks/winograd_accuracy.py``, ``benchmarks/WINOGRAD.md``).

Example:
    >>> import numpy as np, convlab as cl
    >>> from convlab.geometry import conv_geometry
    >>> from convlab.winograd import conv2d_winograd
    >>> x = np.arange(2 * 3 * 6 * 6, dtype=np.float32).reshape(2, 3, 6, 6)
    >>> k = np.ones((4, 3, 3, 3), np.float32)
    >>> g = conv_geometry(x.shape, k.shape, padding=1)
    >>> conv2d_winograd(cl.get_backend("numpy"), x, k, None, g).shape
    (2, 4, 6, 6)
"""

from __future__ import annotations

import functools
from fractions import Fraction
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from convlab.errors import ConvlabValueError
from convlab.geometry import ConvGeometry

#: output tile sizes m of F(m x m, 3 x 3) that :func:`conv2d_winograd` computes
TILES = (2, 4)
#: the fewest input channels at which ``tile=None`` picks F(4x4, 3x3) over F(2x2, 3x3) (see :func:`choose_tile`)
TILE4_MIN_CHANNELS = 64
#: interpolation points of each tile size (infinity is always the last point); 2 and 4 are Lavin & Gray's
POINTS: Dict[int, Tuple[Any, ...]] = {
    2: (0, 1, -1),
    4: (0, 1, -1, 2, -2),
    6: (0, 1, -1, 2, -2, Fraction(1, 2), Fraction(-1, 2)),
}
#: bytes of transformed data one block of :func:`numpy_winograd` / :func:`torch_winograd` works on (L2-sized)
BLOCK_BYTES = 2 * 1024 * 1024


# -- the transforms ---------------------------------------------------------------------------------


# Lavin & Gray 2016, section 4.1 and 4.2 (points 0, 1, -1 and 0, 1, -1, 2, -2, plus infinity)
_LAVIN = {
    2: (
        [[1, 1, 1, 0], [0, 1, -1, -1]],
        [[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]],
        [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]],
    ),
    4: (
        [[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]],
        [
            [1 / 4, 0, 0],
            [-1 / 6, -1 / 6, -1 / 6],
            [-1 / 6, 1 / 6, -1 / 6],
            [1 / 24, 1 / 12, 1 / 6],
            [1 / 24, -1 / 12, 1 / 6],
            [0, 0, 1],
        ],  # fmt: skip
        [
            [4, 0, -5, 0, 1, 0],
            [0, -4, -4, 1, 1, 0],
            [0, 4, -4, -1, 1, 0],
            [0, -2, -1, 2, 1, 0],
            [0, 2, -1, -2, 1, 0],
            [0, 4, 0, -5, 0, 1],
        ],  # fmt: skip
    ),
}


@functools.lru_cache(maxsize=64)
def transforms(tile: int, points: Optional[Tuple[Any, ...]] = None) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(A^T, G, B^T)`` of F(tile, 3) as float64 arrays of shapes (m, m+2), (m+2, 3), (m+2, m+2).

    In one dimension ``y = A^T [(G g) * (B^T d)]`` is the correlation ``y_i = sum_k d_{i+k} g_k`` of an
    (m+2)-vector d with a 3-vector g. Tile 2 and 4 (no ``points``) are Lavin & Gray's matrices; any other
    tile, or explicit finite interpolation points, is built by Toom-Cook with the points plus infinity (the
    construction of Lavin's ``wincnn``), the Lagrange denominators in G so that B^T has integer entries.
    The arrays are read-only.

    Example:
        >>> at, g, bt = transforms(2)
        >>> bt.astype(int).tolist()
        [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]]
    """
    if points is None and tile in _LAVIN:
        out = tuple(np.array(matrix, dtype=np.float64) for matrix in _LAVIN[tile])
    else:
        out = _toom_cook(tile, POINTS[tile] if points is None else points)
    for matrix in out:
        matrix.setflags(write=False)
    return out  # type: ignore[return-value]


def _toom_cook(tile: int, points: Tuple[Any, ...]) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """F(tile, 3) from its finite points: the transpose of Toom-Cook's linear convolution (Lavin & Gray, 4.1)."""
    pts = [Fraction(p) for p in points]
    m, r = tile, 3
    n = m + r - 1
    if len(pts) != n - 1 or len(set(pts)) != n - 1:
        raise ConvlabValueError(f"F({m}, 3) needs {n - 1} distinct finite points, got {points!r}")
    # s = V^-1 [(E_r g) * (E_m h)] is the product of polynomials g, h (E: evaluation at the points and at
    # infinity, the leading coefficient); correlation is its transpose in h: y = E_m^T [(E_r g) * (V^-T d)]
    vandermonde = [[p**j for j in range(n)] for p in pts] + [[Fraction(int(j == n - 1)) for j in range(n)]]
    inverse = _inverse(vandermonde)
    scale = [_prod(p - q for q in pts if q != p) for p in pts] + [Fraction(1)]
    at = [[pts[j] ** i if j < n - 1 else Fraction(int(i == m - 1)) for j in range(n)] for i in range(m)]
    g = [[pts[j] ** i / scale[j] if j < n - 1 else Fraction(int(i == r - 1)) for i in range(r)] for j in range(n)]
    bt = [[inverse[i][j] * scale[j] for i in range(n)] for j in range(n)]
    return tuple(np.array([[float(v) for v in row] for row in matrix]) for matrix in (at, g, bt))  # type: ignore


def _prod(values: Any) -> Fraction:
    total = Fraction(1)
    for v in values:
        total *= v
    return total


def _inverse(matrix: Sequence[Sequence[Fraction]]) -> list:
    """Exact inverse by Gauss-Jordan elimination on Fractions."""
    n = len(matrix)
    rows = [list(row) + [Fraction(int(i == j)) for j in range(n)] for i, row in enumerate(matrix)]
    for col in range(n):
        pivot = next(i for i in range(col, n) if rows[i][col] != 0)
        rows[col], rows[pivot] = rows[pivot], rows[col]
        lead = rows[col][col]
        rows[col] = [v / lead for v in rows[col]]
        for i in range(n):
            if i != col and rows[i][col] != 0:
                factor = rows[i][col]
                rows[i] = [a - factor * b for a, b in zip(rows[i], rows[col])]
    return [row[n:] for row in rows]


# -- which calls it serves ----------------------------------------------------------------------------


def supports_winograd(geometry: ConvGeometry) -> bool:
    """True for a 3x3 kernel with stride 1 and dilation 1 (any padding, either layout, any channels)."""
    return geometry.window == (3, 3) and geometry.stride == (1, 1) and geometry.dilation == (1, 1)


def check_winograd(geometry: ConvGeometry, tile: Optional[int] = None) -> int:
    """The tile size to run; ConvlabValueError naming the geometry when Winograd cannot compute it.

    Example:
        >>> from convlab.geometry import conv_geometry
        >>> check_winograd(conv_geometry((1, 3, 8, 8), (4, 3, 5, 5)))  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        convlab.errors.ConvlabValueError: algorithm="winograd" computes 3x3 kernels ... got a 5x5 kernel (K of ...
    """
    g = geometry
    if not supports_winograd(g):
        layout = "(kh, kw, C, Co)" if g.channels_last else "(Co, C, kh, kw)"
        raise ConvlabValueError(
            f'algorithm="winograd" computes 3x3 kernels with stride 1 and dilation 1; got a '
            f"{g.window[0]}x{g.window[1]} kernel (K of shape {g.k4}, {layout}), stride {g.stride}, "
            f"dilation {g.dilation}, for X of shape {g.x4}"
        )
    if tile is None:
        return choose_tile(g)
    if isinstance(tile, bool) or tile not in TILES:
        raise ConvlabValueError(f"the Winograd tile must be one of {TILES} (F(m x m, 3 x 3)), got {tile!r}")
    return int(tile)


def choose_tile(geometry: ConvGeometry) -> int:
    """F(4x4, 3x3) from :data:`TILE4_MIN_CHANNELS` input channels on, else F(2x2, 3x3).

    With few channels F(4x4)'s larger transform coefficients (up to 8 in A^T, 5 in B^T) dominate the error
    against a short sum; see WINOGRAD.md for the measurements behind the threshold.
    """
    return 4 if geometry.in_channels >= TILE4_MIN_CHANNELS else 2


def _tiles(geometry: ConvGeometry, m: int) -> Tuple[int, int]:
    out_h, out_w = geometry.out_hw
    return -(-out_h // m), -(-out_w // m)


def _constant(be: Any, matrix: np.ndarray, dtype: str, like: Any) -> Any:
    return be.place_like(be.asarray(np.ascontiguousarray(matrix), dtype), like)


# -- the formulation, written once with seam ops --------------------------------------------------------


def winograd_kernel(be: Any, k: Any, geometry: ConvGeometry, tile: Optional[int] = None) -> Any:
    """The kernel transform ``U = G g G^T`` of every (input, output) channel pair: ((m+2)^2, C, Co).

    Computed once per kernel, it serves every later call with the same weights
    (:func:`conv2d_winograd_transformed`).
    """
    tile = check_winograd(geometry, tile)
    return _kernel_transform(be, k, geometry, transforms(tile)[1])


def _kernel_transform(be: Any, k: Any, geometry: ConvGeometry, g_matrix: np.ndarray) -> Any:
    a = g_matrix.shape[0]
    c, co = geometry.in_channels, geometry.out_channels
    if not geometry.channels_last:
        k = be.transpose(k, (2, 3, 1, 0))  # OIHW -> HWIO
    g_t = _constant(be, g_matrix, be.dtype_name(k), k)
    u = be.matmul(g_t, be.reshape(k, (3, 3 * c * co)))  # (a, kw*C*Co): the kernel rows transformed
    u = be.matmul(g_t, be.reshape(u, (a, 3, c * co)))  # (a, a, C*Co): then its columns, batched over rows
    return be.reshape(u, (a * a, c, co))


def conv2d_winograd(
    be: Any, x: Any, k: Any, bias: Optional[Any], geometry: ConvGeometry, tile: Optional[int] = None
) -> Any:
    """3x3, stride-1 correlation by Winograd F(tile x tile, 3 x 3), plus ``bias`` (Co,) unless None.

    ``x`` and ``k`` are 4-D in the geometry's layout (NCHW/OIHW, or NHWC/HWIO when channels_last), any
    padding; the result is 4-D in the same layout. ``tile`` None: :func:`choose_tile`. Only seam ops of
    ``be`` run, so every framework's autodiff differentiates it. ConvlabValueError for any other kernel
    size, stride or dilation.
    """
    tile = check_winograd(geometry, tile)
    u = _kernel_transform(be, k, geometry, transforms(tile)[1])
    return _winograd(be, x, u, bias, geometry, tile)


def conv2d_winograd_transformed(
    be: Any, x: Any, u: Any, bias: Optional[Any], geometry: ConvGeometry, tile: Optional[int] = None
) -> Any:
    """:func:`conv2d_winograd` with the kernel already transformed by :func:`winograd_kernel`."""
    return _winograd(be, x, u, bias, geometry, check_winograd(geometry, tile))


def _winograd(
    be: Any,
    x: Any,
    u: Any,
    bias: Optional[Any],
    geometry: ConvGeometry,
    tile: int,
    matrices: Optional[Tuple[np.ndarray, ...]] = None,
) -> Any:
    """The seam formulation; ``matrices`` overrides ``transforms(tile)`` (the accuracy study's F(6x6, 3x3))."""
    g, m = geometry, tile
    at, _, bt = transforms(m) if matrices is None else matrices
    a = m + 2
    dtype = be.dtype_name(x)
    n, c, co = g.batch, g.in_channels, g.out_channels
    height, width = g.in_hw
    tiles_h, tiles_w = _tiles(g, m)
    (top, _), (left, _) = g.pads
    # Padded to tiles + 1 blocks of m rows and columns: tile t reads all of block t and the first two rows
    # of block t + 1. The padding beyond the geometry's only feeds outputs that are cropped at the end.
    rows, cols = (tiles_h + 1) * m, (tiles_w + 1) * m
    pads_hw = ((top, rows - height - top), (left, cols - width - left))
    if g.channels_last:
        x = be.pad(x, ((0, 0),) + pads_hw + ((0, 0),))
        z = be.transpose(be.reshape(x, (n, tiles_h + 1, m, tiles_w + 1, m, c)), (2, 4, 1, 3, 0, 5))
    else:
        x = be.pad(x, ((0, 0), (0, 0)) + pads_hw)
        z = be.transpose(be.reshape(x, (n, c, tiles_h + 1, m, tiles_w + 1, m)), (3, 5, 2, 4, 0, 1))
    # z: (row in block, column in block, block row, block column, N, C). One product per direction with
    # [B^T[:, :m]; B^T[:, m:] 0]: the first a rows are what a tile takes from its own block, the last a rows
    # what it takes from the first two rows (columns) of the next block.
    both = np.zeros((2 * a, m))
    both[:a], both[a:, :2] = bt[:, :m], bt[:, m:]
    both_t = _constant(be, both, dtype, x)
    at_t = _constant(be, at, dtype, x)
    block = (tiles_w + 1) * n * c
    r = be.reshape(be.matmul(both_t, be.reshape(z, (m, m * (tiles_h + 1) * block))), (2 * a, m, tiles_h + 1, block))
    v = r[:a, :, :tiles_h] + r[a:, :, 1:]  # (a, m, tiles_h, (tiles_w + 1) N C): the tiles' rows transformed
    r = be.matmul(both_t, be.reshape(v, (a, m, tiles_h * block)))  # (a, 2a, ...): then their columns
    r = be.reshape(r, (a, 2 * a, tiles_h, tiles_w + 1, n * c))
    v = r[:, :a, :, :tiles_w] + r[:, a:, :, 1:]  # (a, a, tiles_h, tiles_w, N C)

    count = tiles_h * tiles_w * n
    prods = be.matmul(be.reshape(v, (a * a, count, c)), u)  # the channel sums: (a*a, tiles, Co)

    y = be.matmul(at_t, be.reshape(prods, (a, a * count * co)))  # (m, a, tiles Co): output rows
    y = be.matmul(at_t, be.reshape(y, (m, a, count * co)))  # (m, m, tiles Co): output columns
    return _assemble(be, be.reshape(y, (m, m, tiles_h, tiles_w, n, co)), bias, g, (2, 0, 3, 1), (4, 5))


def _assemble(
    be: Any,
    y: Any,
    bias: Optional[Any],
    g: ConvGeometry,
    spatial: Tuple[int, int, int, int],
    batch_channel: Tuple[int, int],
) -> Any:
    """Tiles (axes ``spatial`` = tile row, row in tile, tile column, column in tile) back into an image in the
    geometry's layout (``batch_channel``: the N and Co axes), cropped, plus the bias."""
    (out_h, out_w), co, n = g.out_hw, g.out_channels, g.batch
    tile_h, tile_w = (
        _shape_of(y, spatial[0]) * _shape_of(y, spatial[1]),
        _shape_of(y, spatial[2]) * _shape_of(y, spatial[3]),
    )
    nb, cb = batch_channel
    if g.channels_last:
        y = be.reshape(be.transpose(y, (nb,) + spatial + (cb,)), (n, tile_h, tile_w, co))
        if (tile_h, tile_w) != (out_h, out_w):
            y = y[:, :out_h, :out_w, :]
        return y if bias is None else y + be.reshape(bias, (1, 1, 1, co))
    y = be.reshape(be.transpose(y, (nb, cb) + spatial), (n, co, tile_h, tile_w))
    if (tile_h, tile_w) != (out_h, out_w):
        y = y[:, :, :out_h, :out_w]
    return y if bias is None else y + be.reshape(bias, (1, co, 1, 1))


def _shape_of(y: Any, axis: int) -> int:
    return int(y.shape[axis])


# -- the rounding-error bound Winograd does satisfy -------------------------------------------------------


def roundings(tile: int) -> int:
    """Roundings on the longest path from one product to an output, outside the channel sum (kappa).

    A transform row with ``k`` non-zero entries costs ``k - 1`` additions, plus one rounding when an entry is
    not a power of two (B^T's 5s, G's 1/6); G's entries are rounded once more when the dtype cannot hold them;
    then the product. The larger count of the two ways the spellings here compute a transform: one direction
    at a time, or both at once with the Kronecker product (``separable=False``, :func:`mxnet_winograd`).
    """
    at, g, bt = transforms(tile)
    g_rounded = int(any(float(np.float32(v)) != v for v in g.ravel()))
    kernel = 2 * (_row_roundings(g) + g_rounded)
    separable = 2 * _row_roundings(bt) + kernel + 2 * _row_roundings(at) + 1
    kronecker = _row_roundings(np.kron(bt, bt)) + kernel + _row_roundings(np.kron(at, at)) + 1
    return max(separable, kronecker)


def _row_roundings(matrix: np.ndarray) -> int:
    worst = 0
    for row in matrix:
        nonzero = np.abs(row[row != 0])
        inexact = bool(np.any(nonzero != 2.0 ** np.round(np.log2(nonzero))))
        worst = max(worst, len(nonzero) - 1 + int(inexact))
    return worst


def error_bound(
    x: np.ndarray,
    k: np.ndarray,
    geometry: ConvGeometry,
    tile: Optional[int] = None,
    *,
    dtype: str = "float32",
    c: float = 2.0,
) -> np.ndarray:
    """``c * (C + kappa) * u * W``: the rounding-error bound of :func:`conv2d_winograd`, NumPy float64.

    ``W = |A^T| (sum_c |G||g_c||G^T| * |B^T||d_c||B|) |A|`` is Winograd's own magnitude: the section 4 rule
    of DESIGN.md with ``|X| (*) |K|`` replaced by the sums Winograd forms (it computes W with the absolute
    values of its transforms on |X| and |K|), and the products per output by the channel sum plus
    :func:`roundings`. It is at least ``|X| (*) |K|``, and much larger where a tile holds large pixels next
    to an output whose own products are small. ``x`` and ``k`` in the geometry's layout.
    """
    return _error_bound(x, k, geometry, check_winograd(geometry, tile), dtype, c)


def _error_bound(x: np.ndarray, k: np.ndarray, geometry: ConvGeometry, tile: int, dtype: str, c: float) -> np.ndarray:
    """:func:`error_bound` for any tile of :data:`POINTS` (the accuracy study's F(6x6, 3x3) too)."""
    from convlab.registry import get_backend

    at, g_matrix, bt = (np.abs(mat) for mat in transforms(tile))
    be = get_backend("numpy")
    x64, k64 = np.abs(np.asarray(x, np.float64)), np.abs(np.asarray(k, np.float64))
    u = _kernel_transform(be, k64, geometry, g_matrix)
    magnitude = _winograd(be, x64, u, None, geometry, tile, (at, g_matrix, bt))
    unit = {"float32": 2.0**-24, "float64": 2.0**-53}[dtype]
    return c * (geometry.in_channels + roundings(tile)) * unit * magnitude


# -- framework spellings (for the adapters) --------------------------------------------------------------


def _blocks(n: int, tiles_h: int, per_tile_row: int) -> List[Tuple[int, int, int, int]]:
    """(n0, n1, t0, t1) blocks of images and tile rows whose transformed data is about BLOCK_BYTES."""
    rows = max(1, BLOCK_BYTES // max(per_tile_row, 1))
    if rows >= tiles_h:
        images = max(1, rows // tiles_h)
        return [(n0, min(n, n0 + images), 0, tiles_h) for n0 in range(0, n, images)]
    return [(b, b + 1, t0, min(tiles_h, t0 + rows)) for b in range(n) for t0 in range(0, tiles_h, rows)]


def _kernel_transform_numpy(k: np.ndarray, geometry: ConvGeometry, g_matrix: np.ndarray, dtype: Any) -> np.ndarray:
    """U = G g G^T computed in float64 and rounded once to ``dtype``: ((m+2)^2, C, Co), contiguous."""
    a, c, co = g_matrix.shape[0], geometry.in_channels, geometry.out_channels
    hwio = np.asarray(k, np.float64) if geometry.channels_last else np.asarray(k, np.float64).transpose(2, 3, 1, 0)
    u = (g_matrix @ hwio.reshape(3, 3 * c * co)).reshape(a, 3, c * co)
    return np.ascontiguousarray((g_matrix @ u).reshape(a * a, c, co), dtype=dtype)


def numpy_winograd(
    x: np.ndarray,
    k: np.ndarray,
    bias: Optional[np.ndarray],
    geometry: ConvGeometry,
    tile: Optional[int] = None,
    separable: bool = True,
) -> np.ndarray:
    """:func:`conv2d_winograd` for NumPy arrays, on blocks of about :data:`BLOCK_BYTES` that stay in cache.

    The tiles are a strided view of one padded channels-last copy of ``x``; per block, one copy gathers them
    into ((m+2)^2, tiles, C), two products with B^T transform their rows and columns, ``(m+2)^2`` products of
    (tiles, C) x (C, Co) sum the channels (``numpy.matmul`` on 3-D operands) and two products with A^T make
    the outputs, written channels-last into the result. ``separable=False``: one product with
    ``kron(B^T, B^T)`` and one with ``kron(A^T, A^T)`` instead (K = (m+2)^2 runs at BLAS speed where K = m+2
    does not, but does 3x the work; the two were within the noise of each other here). The kernel transform
    is computed in float64 and rounded once. Returns a new C-contiguous array in the geometry's layout.
    """
    from numpy.lib.stride_tricks import as_strided

    g = geometry
    m = check_winograd(g, tile)
    at, g_matrix, bt = transforms(m)
    a = m + 2
    dtype = np.result_type(x, k)
    n, c, co = g.batch, g.in_channels, g.out_channels
    (height, width), (out_h, out_w) = g.in_hw, g.out_hw
    tiles_h, tiles_w = _tiles(g, m)
    (top, _), (left, _) = g.pads
    padded = np.zeros((n, tiles_h * m + 2, tiles_w * m + 2, c), dtype)
    padded[:, top : top + height, left : left + width, :] = x if g.channels_last else x.transpose(0, 2, 3, 1)
    s_n, s_h, s_w, s_c = padded.strides
    tiles = as_strided(padded, (a, a, n, tiles_h, tiles_w, c), (s_h, s_w, s_n, s_h * m, s_w * m, s_c), writeable=False)
    u = _kernel_transform_numpy(k, g, g_matrix, dtype)
    k_in, k_out = np.kron(bt, bt).astype(dtype), np.kron(at, at).astype(dtype)
    bt, at = bt.astype(dtype), at.astype(dtype)
    out = np.empty((n, tiles_h * m, tiles_w * m, co), dtype)
    width_c = tiles_w * max(c, co)
    blocks = _blocks(n, tiles_h, a * a * width_c * dtype.itemsize)
    most = max((n1 - n0) * (t1 - t0) for n0, n1, t0, t1 in blocks) * tiles_w
    buffers = [np.empty(a * a * most * max(c, co), dtype) for _ in range(4)]  # sliced to each block: contiguous
    for n0, n1, t0, t1 in blocks:
        count = (n1 - n0) * (t1 - t0) * tiles_w
        gathered, transformed, sums, outputs = (
            buffers[0][: a * a * count * c].reshape(a * a, count * c),
            buffers[1][: a * a * count * c].reshape(a * a, count * c),
            buffers[2][: a * a * count * co].reshape(a * a, count, co),
            buffers[3][: m * m * count * co].reshape(m * m, count * co),
        )
        d = gathered
        d.reshape(a, a, n1 - n0, t1 - t0, tiles_w, c)[...] = tiles[:, :, n0:n1, t0:t1]
        if separable:
            t = np.matmul(bt, d.reshape(a, a * count * c))
            np.matmul(bt, t.reshape(a, a, count * c), out=transformed.reshape(a, a, count * c))
        else:
            np.matmul(k_in, d, out=transformed)
        p = np.matmul(transformed.reshape(a * a, count, c), u, out=sums)
        if separable:
            t = np.matmul(at, p.reshape(a, a * count * co))
            y = np.matmul(at, t.reshape(m, a, count * co), out=outputs.reshape(m, m, count * co))
        else:
            y = np.matmul(k_out, p.reshape(a * a, count * co), out=outputs)
        target = out[n0:n1, t0 * m : t1 * m].reshape(n1 - n0, t1 - t0, m, tiles_w, m, co)
        target[...] = y.reshape(m, m, n1 - n0, t1 - t0, tiles_w, co).transpose(2, 3, 0, 4, 1, 5)
    y = out[:, :out_h, :out_w, :]
    y = np.ascontiguousarray(y if g.channels_last else y.transpose(0, 3, 1, 2))
    if bias is not None:
        y += np.asarray(bias, dtype).reshape((1, 1, 1, co) if g.channels_last else (1, co, 1, 1))
    return y


def torch_winograd(
    x: Any, k: Any, bias: Optional[Any], geometry: ConvGeometry, tile: Optional[int] = None, separable: bool = True
) -> Any:
    """:func:`numpy_winograd`'s blocked algorithm with torch ops (``as_strided`` tiles, ``mm``/``bmm`` into
    preallocated buffers), when no input requires grad; under autograd, the seam formulation.

    ``separable``: the transforms as two products with the 1-D matrices per block (measured faster with MKL
    than one product with their Kronecker product, the NumPy choice). A channels-first result is returned
    in ``torch.channels_last`` memory format (logically NCHW, as ``torch.nn.functional.conv2d`` returns for
    channels_last inputs): the tiles are assembled channels-last.
    """
    import torch

    from convlab.registry import get_backend

    g = geometry
    m = check_winograd(g, tile)
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (x, k, bias)):
        return conv2d_winograd(get_backend("torch"), x, k, bias, g, m)
    at, g_matrix, bt = transforms(m)
    a = m + 2
    n, c, co = g.batch, g.in_channels, g.out_channels
    (height, width), (out_h, out_w) = g.in_hw, g.out_hw
    tiles_h, tiles_w = _tiles(g, m)
    (top, _), (left, _) = g.pads
    dtype, device = x.dtype, x.device
    padded = x.new_empty((n, tiles_h * m + 2, tiles_w * m + 2, c))
    for border in (padded[:, :top], padded[:, top + height :], padded[:, :, :left], padded[:, :, left + width :]):
        border.zero_()
    padded[:, top : top + height, left : left + width, :].copy_(x if g.channels_last else x.permute(0, 2, 3, 1))
    s_n, s_h, s_w, s_c = padded.stride()
    tiles = padded.as_strided((a, a, n, tiles_h, tiles_w, c), (s_h, s_w, s_n, s_h * m, s_w * m, s_c))
    u = torch_kernel_transform(k, g, m)

    def constant(matrix: np.ndarray) -> Any:
        return torch.tensor(matrix.tolist(), dtype=dtype, device=device)

    k_in, k_out, bt_t, at_t = constant(np.kron(bt, bt)), constant(np.kron(at, at)), constant(bt), constant(at)
    out = x.new_empty((n, tiles_h * m, tiles_w * m, co))
    blocks = _blocks(n, tiles_h, a * a * tiles_w * max(c, co) * x.element_size())
    most = max((n1 - n0) * (t1 - t0) for n0, n1, t0, t1 in blocks) * tiles_w
    buffers = [x.new_empty(a * a * most * max(c, co)) for _ in range(4)]  # sliced to each block: contiguous
    for n0, n1, t0, t1 in blocks:
        count = (n1 - n0) * (t1 - t0) * tiles_w
        d, transformed, sums, outputs = (
            buffers[0][: a * a * count * c].view(a * a, count * c),
            buffers[1][: a * a * count * c].view(a * a, count * c),
            buffers[2][: a * a * count * co].view(a * a, count, co),
            buffers[3][: m * m * count * co].view(m * m, count * co),
        )
        d.view(a, a, n1 - n0, t1 - t0, tiles_w, c).copy_(tiles[:, :, n0:n1, t0:t1])
        if separable:  # rows: one (m+2, m+2) x (m+2, ...) product; columns: the same batched over the rows
            v = torch.matmul(bt_t, torch.mm(bt_t, d.view(a, a * count * c)).view(a, a, count * c))
            v = v.view(a * a, count * c)
        else:
            v = torch.mm(k_in, d, out=transformed)
        p = torch.bmm(v.view(a * a, count, c), u, out=sums)
        if separable:
            y = torch.matmul(at_t, torch.mm(at_t, p.view(a, a * count * co)).view(m, a, count * co))
            y = y.view(m * m, count * co)
        else:
            y = torch.mm(k_out, p.view(a * a, count * co), out=outputs)
        target = out[n0:n1, t0 * m : t1 * m].view(n1 - n0, t1 - t0, m, tiles_w, m, co)
        target.copy_(y.view(m, m, n1 - n0, t1 - t0, tiles_w, co).permute(2, 3, 0, 4, 1, 5))
    y = out if (tiles_h * m, tiles_w * m) == (out_h, out_w) else out[:, :out_h, :out_w, :].contiguous()
    if bias is not None:
        y += bias.to(dtype)
    return y if g.channels_last else y.permute(0, 3, 1, 2)


def torch_kernel_transform(k: Any, geometry: ConvGeometry, tile: int) -> Any:
    """U = G g G^T for torch, in float64 and rounded once to k's dtype: ((m+2)^2, C, Co), contiguous."""
    import torch

    g_matrix = transforms(tile)[1]
    a, c, co = tile + 2, geometry.in_channels, geometry.out_channels
    hwio = k if geometry.channels_last else k.permute(2, 3, 1, 0)
    g_t = torch.tensor(g_matrix.tolist(), dtype=torch.float64, device=k.device)
    u = (g_t @ hwio.to(torch.float64).reshape(3, 3 * c * co)).reshape(a, 3, c * co)
    return (g_t @ u).reshape(a * a, c, co).to(k.dtype).contiguous()


def _combine(coefficients: np.ndarray, terms: Sequence[Any]) -> Any:
    """``sum(c * t)`` skipping zero coefficients, with ``+``/``-`` for +-1 (exact)."""
    total = None
    for coefficient, term in zip(coefficients.tolist(), terms):
        if coefficient == 0:
            continue
        if coefficient == 1:
            value = term
        elif coefficient == -1:
            value = -term
        else:
            value = term * coefficient
        total = value if total is None else total + value
    return total


def fused_winograd(
    be: Any, stack: Callable[..., Any], x: Any, u: Any, bias: Optional[Any], geometry: ConvGeometry, tile: int
) -> Any:
    """Winograd with the transforms as sums of strided slices, for a compiler (XLA) to fuse into a few loops.

    ``stack(list, axis)`` is the framework's stack (``jax.numpy.stack``, ``tf.stack``); ``u`` the transformed
    kernel (:func:`winograd_kernel`). Channels-last inside: the rows of every tile are transformed in one
    pass over the padded input, then the columns, one batched product, then the output transform's rows and
    columns. Differentiable like :func:`conv2d_winograd`.
    """
    g, m = geometry, tile
    at, _, bt = transforms(m)
    a = m + 2
    n, c, co = g.batch, g.in_channels, g.out_channels
    (height, width) = g.in_hw
    tiles_h, tiles_w = _tiles(g, m)
    (top, _), (left, _) = g.pads
    if not g.channels_last:
        x = be.transpose(x, (0, 2, 3, 1))
    pads = ((top, tiles_h * m + 2 - height - top), (left, tiles_w * m + 2 - width - left))
    x = be.pad(x, ((0, 0),) + pads + ((0, 0),))
    rows = [x[:, i : i + (tiles_h - 1) * m + 1 : m] for i in range(a)]  # (N, tiles_h, W', C) each
    t = stack([_combine(bt[alpha], rows) for alpha in range(a)], 0)  # (a, N, tiles_h, W', C)
    cols = [t[:, :, :, j : j + (tiles_w - 1) * m + 1 : m] for j in range(a)]  # (a, N, tiles_h, tiles_w, C)
    v = stack([_combine(bt[beta], cols) for beta in range(a)], 1)  # (a, a, N, tiles_h, tiles_w, C)
    count = n * tiles_h * tiles_w
    prods = be.reshape(be.matmul(be.reshape(v, (a * a, count, c)), u), (a, a, n, tiles_h, tiles_w, co))
    r = stack([_combine(at[p], [prods[alpha] for alpha in range(a)]) for p in range(m)], 0)  # (m, a, ...)
    y = stack([_combine(at[q], [r[:, beta] for beta in range(a)]) for q in range(m)], 0)  # (m_q, m_p, N, th, tw, Co)
    return _assemble(be, y, bias, g, (3, 1, 4, 0), (2, 5))


@functools.lru_cache(maxsize=256)
def jax_winograd(geometry: ConvGeometry, tile: Optional[int] = None) -> Callable[[Any, Any, Any], Any]:
    """``run(x, k, bias)``: :func:`fused_winograd` with the kernel transform, jitted whole for one geometry.

    Differentiable (``jax.grad`` through it traces the same code) and usable inside other jitted functions.
    """
    import jax

    from convlab.registry import get_backend

    m = check_winograd(geometry, tile)
    be, g_matrix = get_backend("jax"), transforms(m)[1]

    def run(x: Any, k: Any, bias: Any = None) -> Any:
        u = _kernel_transform(be, k, geometry, g_matrix)
        return fused_winograd(be, jax.numpy.stack, x, u, bias, geometry, m)

    return jax.jit(run)


@functools.lru_cache(maxsize=256)
def tensorflow_winograd(
    geometry: ConvGeometry, tile: Optional[int] = None, jit_compile: bool = True
) -> Callable[[Any, Any, Any], Any]:
    """``run(x, k, bias)``: :func:`fused_winograd` as one ``tf.function`` compiled by XLA (``jit_compile``)."""
    import tensorflow as tf

    from convlab.registry import get_backend

    m = check_winograd(geometry, tile)
    be, g_matrix = get_backend("tensorflow"), transforms(m)[1]

    def run(x: Any, k: Any, bias: Any = None) -> Any:
        u = _kernel_transform(be, k, geometry, g_matrix)
        return fused_winograd(be, lambda values, axis: tf.stack(values, axis), x, u, bias, geometry, m)

    return tf.function(run, jit_compile=jit_compile, autograph=False)


def mxnet_winograd(x: Any, k: Any, bias: Optional[Any], geometry: ConvGeometry, tile: Optional[int] = None) -> Any:
    """Winograd with MXNet's numpy operators: the tiles as (m+2)^2 strided slices of a padded channels-last
    copy, stacked; one product with ``kron(B^T, B^T)``, the batched channel sums, one with ``kron(A^T, A^T)``.

    (MXNet's slice operator refuses the 6-D slices of :func:`fused_winograd`.) Differentiable under
    ``mxnet.autograd`` like every ``mx.np`` operator.
    """
    import mxnet as mx

    g = geometry
    m = check_winograd(g, tile)
    at, g_matrix, bt = transforms(m)
    a = m + 2
    mnp = mx.np
    n, c, co = g.batch, g.in_channels, g.out_channels
    (height, width), (out_h, out_w) = g.in_hw, g.out_hw
    tiles_h, tiles_w = _tiles(g, m)
    (top, _), (left, _) = g.pads
    dtype = x.dtype
    if not g.channels_last:
        x = x.transpose(0, 2, 3, 1)
        k = k.transpose(2, 3, 1, 0)
    pads = ((0, 0), (top, tiles_h * m + 2 - height - top), (left, tiles_w * m + 2 - width - left), (0, 0))
    x = mnp.pad(x, pads)
    span_h, span_w = (tiles_h - 1) * m + 1, (tiles_w - 1) * m + 1
    d = mnp.stack([x[:, i : i + span_h : m, j : j + span_w : m, :] for i in range(a) for j in range(a)], 0)
    count = n * tiles_h * tiles_w
    g_t = mnp.array(g_matrix, dtype=dtype, ctx=x.ctx)
    u = mnp.matmul(g_t, k.reshape(3, 3 * c * co)).reshape(a, 3, c * co)
    u = mnp.matmul(g_t, u).reshape(a * a, c, co)
    v = mnp.matmul(mnp.array(np.kron(bt, bt), dtype=dtype, ctx=x.ctx), d.reshape(a * a, count * c))
    p = mnp.matmul(v.reshape(a * a, count, c), u)
    y = mnp.matmul(mnp.array(np.kron(at, at), dtype=dtype, ctx=x.ctx), p.reshape(a * a, count * co))
    y = y.reshape(m, m, n, tiles_h, tiles_w, co).transpose(2, 3, 0, 4, 1, 5).reshape(n, tiles_h * m, tiles_w * m, co)
    if (tiles_h * m, tiles_w * m) != (out_h, out_w):
        y = y[:, :out_h, :out_w, :]
    if bias is not None:
        y = y + bias.reshape(1, 1, 1, co)
    return y if g.channels_last else y.transpose(0, 3, 1, 2)
