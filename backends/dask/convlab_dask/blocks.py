"""Blockwise correlation and pooling of dask arrays: every output block reads exactly its halo.

The output rows (and columns) are split into blocks that follow the input's chunks: output row ``p``
belongs to the input chunk that holds the centre of its window, clamped to the image, and runs of rows
of one chunk form a block (a chunk that no window is centred in gives no block). For an output block
of rows ``[p0, p1)`` and the kernel rows ``[i0, i1)`` the rows read are, in padded coordinates,
``[p0*s + i0*d, (p1-1)*s + (i1-1)*d + 1)``: the halo follows from the geometry, whatever the stride, the
dilation, the padding and the chunk sizes (chunks smaller than the halo simply contribute several pieces
to a block). The part of that range inside the image is gathered from the input chunks it crosses (a
``getitem`` of each - the thin strips of a chunk cut together, in one task per chunk - and one
concatenation); the part outside becomes the block's own explicit padding, and
each block runs the public :func:`convlab.conv2d` / :func:`convlab.pool2d` on the backend of its own array
type (NumPy chunks: convlab's NumPy backend and its "auto" algorithms). So a block computes exactly what the
whole-image call computes for those output pixels.

Why not ``dask.array.map_overlap`` (what ``dask_image.ndfilters`` uses): its halo is one depth per axis,
the same for every chunk, and its output blocks are the input's blocks. With a stride, the first output
row of a chunk depends on where the chunk starts modulo the stride, so the rows each block must produce
differ from chunk to chunk, some chunks produce none (chunks of 1 with stride 3) and the output chunks are
not the input chunks; with a depth larger than a chunk map_overlap rechunks the input first. Slicing per
output block handles all of that in one graph layer with no rechunking and no wasted rows.

Input channels are gathered into every block whole (the channel chunks of the input are concatenated in
the task): a block's correlation then contracts all channels in one call, with the NumPy backend's own
algorithm choice and summation order, which keeps results bit-identical to the whole-image NumPy call in
the exact tier (and in practice beyond it). Channels in images are few; a block holds C x block pixels.
Pooling keeps the input's channel chunks (it never mixes channels).

The kernel is a dask array (the core converts a NumPy kernel with ``da.from_array``). Its channel chunks
are concatenated once, in one task every block depends on (nothing is computed while the graph is
built). When the kernel is chunked along its spatial axes - convlab's analytic gradient correlates the
input with dY, an image-sized "kernel" - every kernel tile gives a partial correlation over the input rows
that tile reads, and the partials of one output block are summed in a tree (8 at a time), the bias added
last.
"""

from __future__ import annotations

import functools
import operator
from typing import Any, Dict, List, Optional, Sequence, Tuple

import dask.array as da
import numpy as np
from dask.array.core import concatenate3
from dask.array.utils import meta_from_array
from dask.base import tokenize
from dask.highlevelgraph import HighLevelGraph

import convlab
from convlab.geometry import ConvGeometry, PoolGeometry

#: partial results (one per kernel tile) summed per task in the reduction tree
FAN_IN = 8

Span = Tuple[int, int]


# -- one axis -------------------------------------------------------------------------------------


def _bounds(chunks: Sequence[int]) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(chunks)]).astype(np.int64)


def output_blocks(size: int, chunks: Sequence[int], out_len: int, stride: int, before: int, extent: int) -> List[Span]:
    """Output rows ``[(p0, p1), ...]`` grouped by the input chunk holding each window's centre.

    ``size`` is the input's length along the axis, ``chunks`` its chunk sizes, ``before`` the padding
    before it, ``extent`` the dilated window ((k - 1) * d + 1).

    Example:
        >>> output_blocks(8, (4, 4), 4, 2, 0, 2)   # 2x2 pooling with stride 2: two rows per chunk of 4
        [(0, 2), (2, 4)]
        >>> output_blocks(6, (1,) * 6, 2, 3, 0, 3)   # chunks of 1, stride 3: rows centred in chunks 1 and 4
        [(0, 1), (1, 2)]
    """
    bounds = _bounds(chunks)
    rows = np.arange(out_len, dtype=np.int64)
    centres = np.clip(rows * stride - before + (extent - 1) // 2, 0, size - 1)
    owners = np.searchsorted(bounds, centres, side="right") - 1
    edges = [0, *(np.flatnonzero(np.diff(owners)) + 1).tolist(), out_len]
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:])]


def tiles(chunks: Sequence[int]) -> List[Span]:
    """The ``[start, stop)`` spans of a chunked axis."""
    bounds = _bounds(chunks).tolist()
    return list(zip(bounds[:-1], bounds[1:]))


class Slab:
    """What one output block reads along one axis for one kernel tile: real rows, pads and chunk pieces."""

    __slots__ = ("start", "stop", "pads", "pieces", "length")

    def __init__(self, rows: Span, tile: Span, size: int, chunks: Sequence[int], stride: int, dilation: int,
                 before: int) -> None:  # fmt: skip
        (p0, p1), (i0, i1) = rows, tile
        first = p0 * stride + i0 * dilation - before  # in input coordinates; negative: in the padding
        end = (p1 - 1) * stride + (i1 - 1) * dilation + 1 - before
        self.length = end - first  # the padded length the block correlates
        start, stop = min(max(first, 0), size), min(max(end, 0), size)
        if stop <= start:  # only padding under this block and tile: the block correlates zeros
            self.start = self.stop = start
            self.pads = (0, 0)
            self.pieces: List[Tuple[int, Optional[slice]]] = []
            return
        self.start, self.stop, self.pads = start, stop, (start - first, end - stop)
        bounds = _bounds(chunks)
        self.pieces = []
        for index in range(len(chunks)):
            low, high = int(bounds[index]), int(bounds[index + 1])
            if high <= start or low >= stop:
                continue
            if start <= low and high <= stop:
                self.pieces.append((index, None))  # the whole chunk
            else:
                self.pieces.append((index, slice(max(start, low) - low, min(stop, high) - low)))

    @property
    def empty(self) -> bool:
        return not self.pieces


# -- graph helpers --------------------------------------------------------------------------------


class _Pieces:
    """The partial chunks (halo strips) blocks read, shared by every block that reads them: a neighbour chunk is
    released once its strips are cut, and between worker processes only the strips travel, never whole neighbour
    chunks (what ``map_overlap`` does too).

    The thin strips of one chunk (less than half of it: the halos) are cut in one task, which returns them all:
    one task per chunk instead of one per strip (8 around a 2-D chunk), so the scheduler and the workers' event
    loops handle a few hundred tasks fewer per thousand blocks; a block fetches the bundle (a few rows and
    columns of its neighbours) and takes its strips out of it in its own task. Thicker pieces, and pieces of
    an array whose chunk shapes are not given, keep a ``getitem`` task each (a bundle of them would move more
    than a block needs)."""

    def __init__(self, dsk: dict, name: str) -> None:
        self.dsk, self.name = dsk, name
        self.keys: Dict[tuple, Any] = {}  # (source, index, bounds per axis) -> its key, or its place in a bundle
        self.bundles: Dict[tuple, List[tuple]] = {}  # chunk key -> the indices of the strips cut from it

    def key(self, source: str, index: tuple, parts: tuple, chunks: Optional[Sequence[Sequence[int]]] = None) -> Any:
        chunk = (source,) + index
        if all(part is None for part in parts):
            return chunk
        spec = (source, index, tuple(None if p is None else (p.start, p.stop) for p in parts))
        key = self.keys.get(spec)
        if key is None:
            cut = tuple(slice(None) if p is None else p for p in parts)
            if chunks is not None and _thin(chunks, index, parts):
                strips = self.bundles.setdefault(chunk, [])
                key = self.keys[spec] = (operator.getitem, (self.name, "bundle") + index, len(strips))
                strips.append(cut)
            else:
                key = self.keys[spec] = (self.name, len(self.keys))
                self.dsk[key] = (_cut, chunk, cut)
        return key

    def gathered(self, source: str, per_axis: Sequence[Sequence[Tuple[int, Optional[slice]]]],
                 chunks: Optional[Sequence[Sequence[int]]] = None) -> Any:  # fmt: skip
        """A key, a strip taken out of a bundle, or a concatenation task, for the array the pieces make together."""

        def build(prefix: tuple, axis: int) -> Any:
            if axis == len(per_axis):
                return self.key(source, tuple(i for i, _ in prefix), tuple(p for _, p in prefix), chunks)
            return [build(prefix + (item,), axis + 1) for item in per_axis[axis]]

        nested = build((), 0)
        if any(len(items) > 1 for items in per_axis):
            return (concatenate3, nested)
        while isinstance(nested, list):
            (nested,) = nested
        return nested

    def finish(self) -> None:
        """The bundles' tasks, once every block has said which strips it reads."""
        for chunk, strips in self.bundles.items():
            self.dsk[(self.name, "bundle") + chunk[1:]] = (_cut_all, chunk, strips)


def _thin(chunks: Sequence[Sequence[int]], index: tuple, parts: tuple) -> bool:
    """Whether a piece is less than half of its chunk (what :func:`_cut` copies)."""
    whole = piece = 1
    for axis_chunks, i, part in zip(chunks, index, parts):
        length = axis_chunks[i]
        whole *= length
        piece *= length if part is None else len(range(*part.indices(length)))
    return 2 * piece < whole


def _cut(chunk: Any, index: tuple) -> Any:
    """A piece of a chunk; a thin strip is copied, so that the chunk it came from can be freed."""
    piece = chunk[index]
    return piece.copy() if 2 * piece.size < chunk.size else piece


def _cut_all(chunk: Any, indices: list) -> tuple:
    """The thin strips of one chunk, copied (the chunk is freed once its own block has run too)."""
    return tuple(chunk[index].copy() for index in indices)


def _whole(chunks: Sequence[int]) -> List[Tuple[int, None]]:
    return [(index, None) for index in range(len(chunks))]


def _backend_for(block: Any) -> Optional[str]:
    """NumPy chunks run on convlab's NumPy backend by name (a default backend of "dask" must not recurse);
    a chunk of another framework's tensor selects that framework's backend as any call does."""
    return "numpy" if isinstance(block, np.ndarray) else None


def _meta(x: Any, dtype: Any) -> Any:
    return meta_from_array(x, ndim=4, dtype=dtype)


# -- the tasks ------------------------------------------------------------------------------------


def _conv_block(slab: Any, kernel: Any, bias: Any, *, stride, pads, dilation, data_format, algorithm, zeros):
    if slab is None:  # a block (and kernel tile) over padding only
        slab = np.zeros(zeros, dtype=kernel.dtype)
    return convlab.conv2d(
        slab, kernel, bias, stride=stride, padding=pads, dilation=dilation, data_format=data_format,
        algorithm=algorithm, backend=_backend_for(slab),
    )  # fmt: skip


def _sum_partials(partials: list, bias: Any = None, *, channels_last: bool = False) -> Any:
    total = partials[0].copy()
    for partial in partials[1:]:
        total += partial
    if bias is not None:
        total += bias.reshape((1, 1, 1, -1) if channels_last else (1, -1, 1, 1))
    return total


def _pool_block(slab: Any, *, pool_size, mode, stride, pads, count_include_pad, data_format, algorithm):
    return convlab.pool2d(
        slab, pool_size, mode, stride=stride, padding=pads, count_include_pad=count_include_pad,
        data_format=data_format, algorithm=algorithm, backend=_backend_for(slab),
    )  # fmt: skip


# -- the operations -------------------------------------------------------------------------------


def conv2d(x: Any, k: Any, bias: Any, geometry: ConvGeometry, algorithm: str = "auto") -> Any:
    """The correlation of 4-D dask arrays in the geometry's layout, as a lazy dask array."""
    g = geometry
    cl = g.channels_last
    h_axis, w_axis, c_axis = (1, 2, 3) if cl else (2, 3, 1)
    kh_axis, kw_axis = (0, 1) if cl else (2, 3)
    (sh, sw), (dh, dw), ((top, _), (left, _)) = g.stride, g.dilation, g.pads
    (height, width), (kernel_h, kernel_w), (out_h, out_w) = g.in_hw, g.window, g.out_hw
    data_format = "channels_last" if cl else "channels_first"
    token = tokenize(x.name, k.name, None if bias is None else bias.name, g, algorithm)
    name, kernel_name, partial_name = f"conv2d-{token}", f"conv2d-kernel-{token}", f"conv2d-partial-{token}"
    dtype = np.result_type(x.dtype, k.dtype)

    row_blocks = output_blocks(height, x.chunks[h_axis], out_h, sh, top, (kernel_h - 1) * dh + 1)
    col_blocks = output_blocks(width, x.chunks[w_axis], out_w, sw, left, (kernel_w - 1) * dw + 1)
    row_tiles, col_tiles = tiles(k.chunks[kh_axis]), tiles(k.chunks[kw_axis])

    dsk: dict = {}
    pieces = _Pieces(dsk, f"conv2d-halo-{token}")
    # one task per kernel tile: the tile with its channel chunks put together
    tile_keys = {}
    for ti in range(len(row_tiles)):
        for tj in range(len(col_tiles)):
            tile_axes = [_whole(c) for c in k.chunks]
            tile_axes[kh_axis], tile_axes[kw_axis] = [(ti, None)], [(tj, None)]
            gathered = pieces.gathered(k.name, tile_axes)
            if gathered[0] is concatenate3:
                dsk[(kernel_name, ti, tj)] = gathered
                gathered = (kernel_name, ti, tj)
            tile_keys[ti, tj] = gathered
    bias_key = None
    if bias is not None:
        bias_key = (bias.name, 0) if len(bias.chunks[0]) == 1 else (f"conv2d-bias-{token}",)
        if len(bias.chunks[0]) > 1:
            dsk[bias_key] = (concatenate3, [(bias.name, i) for i in range(len(bias.chunks[0]))])
    single_tile = len(row_tiles) * len(col_tiles) == 1

    for bn in range(len(x.chunks[0])):
        batch = x.chunks[0][bn]
        for bh, rows in enumerate(row_blocks):
            for bw, cols in enumerate(col_blocks):
                out_key = (name, bn, bh, bw, 0) if cl else (name, bn, 0, bh, bw)
                partial_keys = []
                for ti, row_tile in enumerate(row_tiles):
                    slab_h = Slab(rows, row_tile, height, x.chunks[h_axis], sh, dh, top)
                    for tj, col_tile in enumerate(col_tiles):
                        slab_w = Slab(cols, col_tile, width, x.chunks[w_axis], sw, dw, left)
                        if slab_h.empty or slab_w.empty:
                            slab = None
                            spatial = (slab_h.length, slab_w.length)
                            zeros = (batch,) + spatial + (g.in_channels,) if cl else (batch, g.in_channels) + spatial
                            pads = ((0, 0), (0, 0))
                        else:
                            per_axis: list = [None] * 4
                            per_axis[0] = [(bn, None)]
                            per_axis[c_axis] = _whole(x.chunks[c_axis])
                            per_axis[h_axis], per_axis[w_axis] = slab_h.pieces, slab_w.pieces
                            slab, zeros = pieces.gathered(x.name, per_axis, x.chunks), None
                            pads = (slab_h.pads, slab_w.pads)
                        run = functools.partial(
                            _conv_block, stride=g.stride, pads=pads, dilation=g.dilation, data_format=data_format,
                            algorithm=algorithm, zeros=zeros,
                        )  # fmt: skip
                        task = (run, slab, tile_keys[ti, tj], bias_key if single_tile else None)
                        if single_tile:
                            dsk[out_key] = task
                        else:
                            key = (partial_name, bn, bh, bw, ti, tj)
                            dsk[key] = task
                            partial_keys.append(key)
                if not single_tile:
                    _reduce(dsk, partial_keys, out_key, bias_key, cl, f"conv2d-sum-{token}")
    pieces.finish()

    rows_out = tuple(b - a for a, b in row_blocks)
    cols_out = tuple(b - a for a, b in col_blocks)
    channels = (g.out_channels,)
    chunks = (x.chunks[0], rows_out, cols_out, channels) if cl else (x.chunks[0], channels, rows_out, cols_out)
    dependencies = [x, k] + ([] if bias is None else [bias])
    graph = HighLevelGraph.from_collections(name, dsk, dependencies=dependencies)
    return da.Array(graph, name, chunks, meta=_meta(x, dtype))


def _reduce(dsk: dict, keys: list, out_key: tuple, bias_key: Any, channels_last: bool, name: str) -> None:
    """Sum ``keys`` into ``out_key`` in a tree of FAN_IN inputs per task, adding the bias at the root."""
    level = 0
    while len(keys) > FAN_IN:
        grouped = []
        for start in range(0, len(keys), FAN_IN):
            key = (name,) + out_key[1:] + (level, start)
            dsk[key] = (_sum_partials, keys[start : start + FAN_IN])
            grouped.append(key)
        keys, level = grouped, level + 1
    dsk[out_key] = (functools.partial(_sum_partials, channels_last=channels_last), keys, bias_key)


def pool2d(x: Any, geometry: PoolGeometry, algorithm: str = "auto") -> Any:
    """Max or average pooling of a 4-D dask array in the geometry's layout, as a lazy dask array."""
    g = geometry
    cl = g.channels_last
    h_axis, w_axis, c_axis = (1, 2, 3) if cl else (2, 3, 1)
    (sh, sw), ((top, _), (left, _)) = g.stride, g.pads
    (height, width), (window_h, window_w), (out_h, out_w) = g.in_hw, g.window, g.out_hw
    data_format = "channels_last" if cl else "channels_first"
    token = tokenize(x.name, g, algorithm)
    name = f"pool2d-{token}"
    row_blocks = output_blocks(height, x.chunks[h_axis], out_h, sh, top, window_h)
    col_blocks = output_blocks(width, x.chunks[w_axis], out_w, sw, left, window_w)
    dsk: dict = {}
    pieces = _Pieces(dsk, f"pool2d-halo-{token}")
    for bh, rows in enumerate(row_blocks):
        slab_h = Slab(rows, (0, window_h), height, x.chunks[h_axis], sh, 1, top)
        for bw, cols in enumerate(col_blocks):
            slab_w = Slab(cols, (0, window_w), width, x.chunks[w_axis], sw, 1, left)
            # a padding smaller than the window (checked by the geometry) leaves every window a real pixel
            assert not (slab_h.empty or slab_w.empty)
            run = functools.partial(
                _pool_block, pool_size=g.window, mode=g.mode, stride=g.stride, pads=(slab_h.pads, slab_w.pads),
                count_include_pad=g.count_include_pad, data_format=data_format, algorithm=algorithm,
            )  # fmt: skip
            for bn in range(len(x.chunks[0])):
                for bc in range(len(x.chunks[c_axis])):
                    per_axis: list = [None] * 4
                    per_axis[0], per_axis[c_axis] = [(bn, None)], [(bc, None)]
                    per_axis[h_axis], per_axis[w_axis] = slab_h.pieces, slab_w.pieces
                    key = (name, bn, bh, bw, bc) if cl else (name, bn, bc, bh, bw)
                    dsk[key] = (run, pieces.gathered(x.name, per_axis, x.chunks))
    pieces.finish()
    rows_out = tuple(b - a for a, b in row_blocks)
    cols_out = tuple(b - a for a, b in col_blocks)
    c_chunks = x.chunks[c_axis]
    chunks = (x.chunks[0], rows_out, cols_out, c_chunks) if cl else (x.chunks[0], c_chunks, rows_out, cols_out)
    graph = HighLevelGraph.from_collections(name, dsk, dependencies=[x])
    return da.Array(graph, name, chunks, meta=_meta(x, x.dtype))
