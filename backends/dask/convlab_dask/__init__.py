"""convlab's Dask backend: convolution and pooling of images larger than memory, block by block.

``dask.array.Array`` inputs select this backend like any framework's tensors; every result is a lazy dask
array (building it computes nothing). Each output block reads its halo from the input chunks it needs and
runs the public :func:`convlab.conv2d` / :func:`convlab.pool2d` on the backend of the block's own array type
(NumPy chunks: convlab's NumPy backend), so the semantics stay in the core; :mod:`convlab_dask.blocks` says
how the blocks are cut. Importing this module does not import dask.

Example:
    >>> import dask.array as da, numpy as np, convlab as cl
    >>> x = da.from_array(np.arange(36.0).reshape(6, 6), chunks=2)
    >>> y = cl.corr2d(x, np.array([[0.0, 1.0], [2.0, 3.0]]))
    >>> type(y).__name__, y.shape, y.chunks
    ('Array', (5, 5), ((2, 2, 1), (2, 2, 1)))
    >>> y.compute()[0].tolist()
    [34.0, 40.0, 46.0, 52.0, 58.0]
"""

from __future__ import annotations

import math
from typing import Any, Callable, Optional, Sequence, Tuple

import numpy as np

import convlab
from convlab.backend import Backend, Pair
from convlab.errors import ConvlabValueError
from convlab.geometry import ConvGeometry, PoolGeometry

__all__ = ["DaskBackend", "DaskConv2D", "DaskPool2D"]


class DaskBackend(Backend):
    """The convlab backend for ``dask.array.Array``: lazy, blockwise, on any dask scheduler.

    Example:
        >>> import dask.array as da, convlab as cl
        >>> y = cl.pool2d(da.ones((1, 1, 8, 8), chunks=(1, 1, 3, 3)), 2, stride=2, backend="dask")
        >>> y.chunks
        ((1,), (1,), (2, 1, 1), (2, 1, 1))
    """

    name = "dask"
    framework_modules = ("dask",)
    package = "convlab-dask"
    has_autodiff = False
    # no rules: "auto" is "native", the blockwise op; each block then runs "auto" on its own backend

    def __init__(self) -> None:
        import dask
        import dask.array

        from convlab_dask import blocks

        self._dask = dask
        self._da = dask.array
        self._blocks = blocks

    # -- tensors ----------------------------------------------------------------------------------
    def version(self) -> str:
        return str(self._dask.__version__)

    def is_tensor(self, x: Any) -> bool:
        return isinstance(x, self._da.Array)

    def asarray(self, x: Any, dtype: str) -> Any:
        if isinstance(x, self._da.Array):
            _check_known_chunks(x)
            return x if x.dtype == dtype else x.astype(dtype)
        return self._da.from_array(np.asarray(x, dtype=dtype))

    def to_numpy(self, x: Any) -> np.ndarray:
        return np.asarray(x.compute() if isinstance(x, self._da.Array) else x)

    def is_concrete(self, x: Any) -> bool:
        # why: timing candidates here would compute the whole (possibly larger than memory) graph several times;
        # with autotuning on, each block's own call ("auto" on its NumPy chunk) is tuned instead, on its backend
        return not isinstance(x, self._da.Array)

    # -- array plumbing -----------------------------------------------------------------------------
    def reshape(self, x: Any, shape: Sequence[int]) -> Any:
        shape = tuple(shape)
        try:
            return x.reshape(shape)
        except NotImplementedError:
            # why: dask reshapes only when the chunks line up with the dimensions merged or split; the core's generic
            # formulations (winograd's tiles, the stride spreading of the gradients) may need more: the axes after the
            # ones that stay as they are become one chunk each, which any reshape accepts
            keep = 0
            while keep < min(len(shape), x.ndim) and shape[keep] == x.shape[keep]:
                keep += 1
            return x.rechunk({axis: -1 for axis in range(keep, x.ndim)}).reshape(shape)

    def transpose(self, x: Any, axes: Sequence[int]) -> Any:
        return x.transpose(tuple(axes))

    def flip(self, x: Any, axes: Sequence[int]) -> Any:
        return self._da.flip(x, tuple(axes))

    def pad(self, x: Any, pads: Sequence[Pair], value: float = 0.0) -> Any:
        if not any(before or after for before, after in pads):
            return x
        return self._da.pad(x, tuple(tuple(p) for p in pads), mode="constant", constant_values=value)

    def sum(self, x: Any, axes: Sequence[int]) -> Any:
        return x.sum(axis=tuple(axes)) if len(axes) else x

    def matmul(self, a: Any, b: Any) -> Any:
        return self._da.matmul(a, b)

    def maximum(self, a: Any, b: Any) -> Any:
        return self._da.maximum(a, b)

    # -- compute primitives: blockwise, each block through the public API on its own backend ------------
    def conv2d(self, x: Any, k: Any, bias: Any, geometry: ConvGeometry) -> Any:
        return self._conv(x, k, bias, geometry, "auto")

    def conv2d_shift(self, x: Any, k: Any, bias: Any, geometry: ConvGeometry) -> Any:
        return self._conv(x, k, bias, geometry, "shift")

    def conv2d_gemm(self, x: Any, k: Any, bias: Any, geometry: ConvGeometry) -> Any:
        return self._conv(x, k, bias, geometry, "gemm")

    def pool2d(self, x: Any, geometry: PoolGeometry) -> Any:
        return self._blocks.pool2d(self._dask_array(x, "X"), geometry, "auto")

    def pool2d_shift(self, x: Any, geometry: PoolGeometry) -> Any:
        return self._blocks.pool2d(self._dask_array(x, "X"), geometry, "shift")

    def pool2d_layout(self, x: Any, geometry: PoolGeometry) -> Any:
        return self._blocks.pool2d(self._dask_array(x, "X"), geometry, "layout")

    def _conv(self, x: Any, k: Any, bias: Any, geometry: ConvGeometry, algorithm: str) -> Any:
        x, k = self._dask_array(x, "X"), self._dask_array(k, "K")
        bias = None if bias is None else self._dask_array(bias, "bias")
        return self._blocks.conv2d(x, k, bias, geometry, algorithm)

    def _dask_array(self, x: Any, name: str) -> Any:
        """The primitives' inputs are dask arrays (the core converted them); internal callers may pass NumPy."""
        if isinstance(x, self._da.Array):
            _check_known_chunks(x, name)
            return x
        return self._da.from_array(np.asarray(x))

    # -- training and layers -------------------------------------------------------------------------
    def value_and_grad(self, fn: Callable[[list], Any]) -> Callable[[list], Tuple[Any, list]]:
        raise ConvlabValueError(
            "the dask backend has no automatic differentiation; use gradient='analytic' "
            "(convlab's closed-form gradients, cl.conv2d_vjp, run blockwise on dask arrays)"
        )

    def conv2d_layer(self, config: dict, weight: np.ndarray, bias: Optional[np.ndarray]) -> DaskConv2D:
        return DaskConv2D(config, weight, bias, self.name)

    def pool2d_layer(self, config: dict) -> DaskPool2D:
        return DaskPool2D(config, self.name)


def _check_known_chunks(x: Any, name: str = "input") -> None:
    if any(isinstance(n, float) and math.isnan(n) for n in x.shape):
        raise ConvlabValueError(
            f"{name} is a dask array with unknown chunk sizes (shape {x.shape}); convlab needs static shapes: "
            f"call .compute_chunk_sizes() on it first"
        )


class DaskConv2D:
    """Conv2D on the dask backend: ``weight`` and ``bias`` are NumPy arrays you may update in place.

    Calling it on a dask array (or NumPy data) returns a lazy dask array; ``backward(X, dY)`` returns the
    lazy gradients ``(dX, dweight, dbias)`` from :func:`convlab.conv2d_vjp`. No autodiff: train with
    ``gradient="analytic"``.

    Example:
        >>> import dask.array as da, convlab as cl
        >>> layer = cl.Conv2D(3, 1, 2, padding=1, seed=0, backend="dask")
        >>> layer(da.ones((1, 1, 64, 64), chunks=16)).chunks
        ((1,), (2,), (16, 16, 16, 16), (16, 16, 16, 16))
    """

    def __init__(self, config: dict, weight: np.ndarray, bias: Optional[np.ndarray], backend: str = "dask"):
        self.config = dict(config)
        self.operation = self.config.pop("operation", "conv2d")  # or "conv_transpose2d"
        self.weight = weight
        self.bias = bias
        self.backend = backend

    def __call__(self, X: Any) -> Any:
        forward = convlab.conv2d if self.operation == "conv2d" else convlab.conv_transpose2d
        return forward(X, self.weight, self.bias, backend=self.backend, **self.config)

    def backward(self, X: Any, dY: Any) -> Tuple[Any, Any, Any]:
        vjp = convlab.conv2d_vjp if self.operation == "conv2d" else _conv_transpose_vjp()
        dX, dweight, dbias = vjp(X, self.weight, dY, backend=self.backend, **self.config)
        return dX, dweight, (dbias if self.bias is not None else None)

    def parameters(self) -> list:
        return [self.weight] if self.bias is None else [self.weight, self.bias]

    def __repr__(self) -> str:
        return f"DaskConv2D(weight shape {self.weight.shape}, bias={self.bias is not None}, {self.config})"


def _conv_transpose_vjp() -> Callable[..., Any]:
    from convlab.conv_transpose import conv_transpose2d_vjp

    return conv_transpose2d_vjp


class DaskPool2D:
    """MaxPool2D / AvgPool2D on the dask backend: returns lazy dask arrays."""

    def __init__(self, config: dict, backend: str = "dask"):
        self.config = dict(config)
        self.backend = backend

    def __call__(self, X: Any) -> Any:
        return convlab.pool2d(X, backend=self.backend, **self.config)

    def __repr__(self) -> str:
        return f"DaskPool2D({self.config})"
