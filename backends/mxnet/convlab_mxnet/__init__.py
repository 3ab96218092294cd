"""convlab's MXNet backend: primitives are ``mxnet.numpy`` / ``npx`` ops; layers are Gluon ``HybridBlock``s.

Importing this module does not import MXNet: the framework is imported when the backend is first
created (``convlab.get_backend("mxnet")``, or the first MXNet array convlab sees), and the layer
classes are built on first access. Nothing here switches MXNet's global NumPy mode (``npx.set_np()``):
the primitives and the layers work in either mode, and always return ``mxnet.np.ndarray``.

Example:
    >>> from mxnet import np
    >>> import convlab as cl
    >>> cl.corr2d(np.arange(9.0).reshape(3, 3), np.array([[0.0, 1.0], [2.0, 3.0]])).tolist()
    [[19.0, 25.0], [37.0, 43.0]]
"""

from __future__ import annotations

import functools
import os
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np

import convlab
from convlab import algorithms, rules
from convlab.arguments import to_pair
from convlab.backend import Backend, Pads, Pair
from convlab.conv_transpose import TransposeGeometry, transpose_primitive
from convlab.dispatch import prepare
from convlab.errors import ConvlabTypeError, ConvlabValueError
from convlab.geometry import ConvGeometry, PoolGeometry, conv_geometry, pool_geometry
from convlab.layers import lazy_classes

__all__ = ["MxnetBackend", "MxnetConv2D", "MxnetPool2D"]

#: the most axes MXNet's pad operator accepts
MAX_PAD_RANK = 5
#: conv_transpose2d of one channel pair at stride 1 keeps the core's formulation from this many output pixels up
TRANSPOSE_CORRELATION_PIXELS = 512 * 512


class _Ops(NamedTuple):
    """The MXNet namespaces one kind of value computes with: arrays (imperative) or symbols (hybridized)."""

    np: Any  # mxnet.numpy or mxnet.symbol.numpy
    npx: Any  # mxnet.numpy_extension or mxnet.symbol.numpy_extension
    pad: Callable[..., Any]  # the _npi_pad operator itself


@functools.cache
def _namespaces() -> Tuple[_Ops, _Ops]:
    """(array ops, symbol ops), importing MXNet on first use."""
    import mxnet
    import mxnet.ndarray.numpy._internal as array_internal
    import mxnet.symbol.numpy._internal as symbol_internal

    # why: mxnet.np.pad (1.9.1) drops constant_values (its "constant" branch has no return), so call _npi_pad
    return (
        _Ops(mxnet.np, mxnet.npx, array_internal.pad),
        _Ops(mxnet.symbol.np, mxnet.symbol.npx, symbol_internal.pad),
    )


@functools.lru_cache(maxsize=64)
def _dtype_name(dtype: Any) -> str:
    """``"float32"`` for any spelling of a dtype (numpy 1.23's ``dtype.name`` costs microseconds a call)."""
    return np.dtype(dtype).name


def _convolution(ops: _Ops, x: Any, k: Any, bias: Any, geometry: ConvGeometry, pads: Pads) -> Any:
    """Cross-correlation of NCHW x with OIHW k (NHWC / HWIO when channels_last), plus bias, on arrays or symbols.

    ``geometry`` gives the window, channels, stride, dilation and layout; ``pads`` are its pads, or a layer plan's.
    """
    g = geometry
    if g.channels_last:  # why: MXNet 1.x runs layout="NHWC" convolutions on GPU only
        x, k = x.transpose((0, 3, 1, 2)), k.transpose((3, 2, 0, 1))
    pad = _native_pad(pads)
    if pad is None:  # why: npx.convolution pads symmetrically only
        x, pad = ops.pad(x, ((0, 0), (0, 0)) + pads, mode="constant", constant_value=0.0), (0, 0)
    y = ops.npx.convolution(
        x,
        k,
        bias,
        kernel=g.window,
        stride=g.stride,
        dilate=g.dilation,
        pad=pad,
        num_filter=g.out_channels,
        no_bias=bias is None,
    )
    return y.transpose((0, 2, 3, 1)) if g.channels_last else y


def _native_pad(pads: Pads, window: Optional[Pair] = None) -> Optional[Pair]:
    """MXNet's ``pad`` argument for pads, or None where its operators cannot pad that way themselves.

    Convolution pads symmetrically only. Pooling (``window`` given) also needs every window to see a pixel:
    MXNet pads max pooling with the dtype's lowest finite value, not -inf, so a window of padding alone would
    give -3.4e38.
    """
    (top, bottom), (left, right) = pads
    if top != bottom or left != right or (window is not None and (top >= window[0] or left >= window[1])):
        return None
    return top, left


class _Deconvolution(NamedTuple):
    """How npx.deconvolution runs one transposed convolution: worked out once per geometry."""

    options: dict  # its keywords (the defaults left out)
    crop: Optional[Tuple[slice, ...]]  # what asymmetric pads keep of its result
    channels_last: bool
    strided_and_dilated: bool


@functools.lru_cache(maxsize=1024)
def _deconvolution_plan(geometry: TransposeGeometry) -> Optional[_Deconvolution]:
    """npx.deconvolution's plan for the geometry, or None where the core's formulation runs instead."""
    g = geometry.forward
    pad = (min(g.pads[0]), min(g.pads[1]))
    adj = tuple(max(0, e - (after - p)) for e, (_, after), p in zip(geometry.output_padding, g.pads, pad))
    if adj[0] >= g.stride[0] or adj[1] >= g.stride[1]:  # why: MXNet's adj must be smaller than the stride
        return None
    if _transpose_by_correlation(geometry):
        return None
    crop = None
    if not g.symmetric_pads:  # rows [before, full + extra - after) of the full result, from MXNet's [p, full - p + adj)
        (top, _), (left, _) = g.pads
        (height, width), (h0, w0) = g.in_hw, (top - pad[0], left - pad[1])
        crop = (slice(None), slice(None), slice(h0, h0 + height), slice(w0, w0 + width))
    options = _non_default(kernel=g.window, stride=g.stride, dilate=g.dilation, pad=pad, adj=adj)
    strided_and_dilated = any(s > 1 and d > 1 for s, d in zip(g.stride, g.dilation))
    return _Deconvolution(dict(options, num_filter=g.in_channels), crop, g.channels_last, strided_and_dilated)


def _transpose_by_correlation(geometry: TransposeGeometry) -> bool:
    """Whether the core's formulation beats npx.deconvolution: one channel pair, stride 1, from 512x512 output pixels
    up (benchmarks/conv_transpose.py, one thread: 1024^2 4x4 23 ms vs 32 ms, 512^2 3x3 5.0 vs 5.5; 256^2 loses)."""
    g = geometry.forward
    pixels = g.batch * g.in_hw[0] * g.in_hw[1]
    return g.stride == (1, 1) and g.in_channels * g.out_channels == 1 and pixels >= TRANSPOSE_CORRELATION_PIXELS


def _non_default(**options: Any) -> dict:
    """The operator keywords whose values differ from MXNet's defaults (stride and dilation 1, no padding)."""
    defaults = {"stride": (1, 1), "dilate": (1, 1), "pad": (0, 0), "adj": (0, 0)}
    return {name: value for name, value in options.items() if defaults.get(name) != value}


def _pooling(ops: _Ops, x: Any, geometry: PoolGeometry, pads: Pads) -> Any:
    """Max (padding with -inf) or average pooling of NCHW (or NHWC) arrays or symbols, with MXNet's own ops only.

    ``geometry`` gives the window, stride, mode and layout; ``pads`` are its pads, or a layer plan's. Nothing here
    depends on the input's size, so a layer inside a hybridized parent (no input shapes) runs it too.
    """
    g = geometry
    if g.channels_last:  # why: MXNet 1.x pools layout="NHWC" on GPU only
        x = x.transpose((0, 3, 1, 2))
    pool, pad = ops.npx.pooling, _native_pad(pads, g.window)
    if g.mode == "max":
        y = _max_pooling(ops, functools.partial(_raw_max_pool, ops, geometry=g, pads=pads), x)
    elif pad is not None:
        y = pool(x, kernel=g.window, stride=g.stride, pad=pad, pool_type=g.mode, count_include_pad=g.count_include_pad)
    elif g.count_include_pad:
        padded = ops.pad(x, ((0, 0), (0, 0)) + pads, mode="constant", constant_value=g.fill)
        y = pool(padded, kernel=g.window, stride=g.stride, pool_type=g.mode)
    else:
        y = _real_pixel_average(pool, x, g, pads)
    return y.transpose((0, 2, 3, 1)) if g.channels_last else y


def _raw_max_pool(ops: _Ops, x: Any, geometry: PoolGeometry, pads: Pads) -> Any:
    """MXNet's own max pooling of NCHW ``x`` (arrays or symbols), padding by itself or by hand with -inf."""
    pad = _native_pad(pads, geometry.window)
    if pad is None:
        x, pad = ops.pad(x, ((0, 0), (0, 0)) + pads, mode="constant", constant_value=geometry.fill), (0, 0)
    return ops.npx.pooling(x, kernel=geometry.window, stride=geometry.stride, pad=pad, pool_type="max")


def _max_pooling(ops: _Ops, raw: Callable[[Any], Any], x: Any) -> Any:
    """``raw(x)`` (MXNet's max pooling) with convlab's non-finite rule: NaN propagates, a window of -inf only is
    -inf, and the gradient goes where np.argmax points (see the helpers in :mod:`convlab.algorithms`).

    Why: MXNet's pooling skips NaN and starts from the lowest finite number (-3.4e38 for a window of -inf).
    Arrays holding neither NaN nor -inf (one sum tells) run ``raw`` alone; a recorded call that needs the
    repair runs :class:`_RepairedMaxPool` for its gradient. Symbols (a hybridized layer) are always repaired;
    their gradient is MXNet's through the repair: zero for windows holding NaN or only -inf.
    """
    import mxnet

    if ops is not _namespaces()[0]:  # symbols
        xp = _ArrayBranches(ops.np)
        return algorithms.repair_max_pool(xp, raw(x), raw(algorithms.nonfinite_code(xp, x)))
    if algorithms.free_of_nan_and_negative_inf(_total(x)):
        return raw(x)
    if mxnet.autograd.is_recording():
        return _repaired_max_pool_class()(ops, raw)(x)
    return algorithms.repair_max_pool(ops.np, raw(x), raw(algorithms.nonfinite_code(ops.np, x)))


class _ArrayBranches:
    """mxnet.np (or mxnet.symbol.np) whose ``where`` makes a Python number next to an array an array first.

    Why: MXNet 1.9.1's np.where with a number for one branch differentiates the other with an inverted mask
    (``where(c, 0.0, x)`` sends x's gradient where c is true), which would break recorded or hybridized graphs.
    """

    def __init__(self, np: Any) -> None:
        self._np, self.isnan = np, np.isnan

    def where(self, condition: Any, a: Any, b: Any) -> Any:
        if isinstance(a, (int, float)) and not isinstance(b, (int, float)):
            a = self._np.ones_like(b) * a
        elif isinstance(b, (int, float)) and not isinstance(a, (int, float)):
            b = self._np.ones_like(a) * b
        return self._np.where(condition, a, b)


class _ReadOnly:
    """An MXNet array as a DLPack producer for NumPy: its memory read in place, once pending writes finish."""

    def __init__(self, x: Any) -> None:
        self._x = x

    def __dlpack__(self, stream: Any = None) -> Any:
        return self._x.to_dlpack_for_read()

    def __dlpack_device__(self) -> Tuple[int, int]:
        return (1, 0)  # kDLCPU


def _total(x: Any) -> float:
    """The sum of x's elements. Why NumPy's, on the array's memory read in place: MXNet's own sum costs 8x more
    (1.6M floats, one thread: 11.6 ms vs 1.4 ms) and about 60 µs a call on small arrays (6 µs this way)."""
    if x.ctx.device_type != "cpu":
        return float(x.sum())
    return float(np.from_dlpack(_ReadOnly(x)).sum())


@functools.cache
def _repaired_max_pool_class() -> type:
    """The autograd.Function of a repaired max pool, built on first use (importing MXNet)."""
    from mxnet import autograd

    class _RepairedMaxPool(autograd.Function):
        """Forward: the repaired max pool. Backward: MXNet's own max-pool gradients of ``x`` and of its code, each
        given its windows' share of ``dy`` (:func:`convlab.algorithms.split_max_pool_cotangent`), summed."""

        def __init__(self, ops: _Ops, raw: Callable[[Any], Any]):
            super().__init__()
            self._ops, self._raw = ops, raw

        def forward(self, x: Any) -> Any:
            code = algorithms.nonfinite_code(self._ops.np, x)
            classes = self._raw(code)
            self.save_for_backward(x, code, classes)
            return algorithms.repair_max_pool(self._ops.np, self._raw(x), classes)

        def backward(self, dy: Any) -> Any:
            x, code, classes = self.saved_tensors
            to_x, to_code = algorithms.split_max_pool_cotangent(self._ops.np, classes, dy.as_np_ndarray())
            from_code = self._vjp(code, to_code.astype(code.dtype)).astype(x.dtype)  # the code is float32
            return (self._vjp(x, to_x) + from_code).as_nd_ndarray()

        def _vjp(self, value: Any, cotangent: Any) -> Any:
            leaf = value.detach()
            leaf.attach_grad()
            with autograd.record():
                y = self._raw(leaf)
            y.backward(cotangent)
            return leaf.grad

    return _RepairedMaxPool


def _real_pixel_average(pool: Callable[..., Any], x: Any, geometry: PoolGeometry, pads: Pads) -> Any:
    """Average pooling of NCHW x over real pixels only, with pads MXNet cannot take (top != bottom or left != right).

    MXNet pools with each axis padded by its larger pad and counts the real pixels itself (no divisor in the
    graph: a traced graph holds no array constants, and a hybridized parent gives no input size). Along an
    asymmetric axis the windows must start ``larger - before`` positions later, so that axis pools at stride 1
    and keeps every ``stride``-th window from there; the windows kept never reach the extra padding. The layers
    run this; :meth:`MxnetBackend.pool2d` divides by ``geometry.divisor`` instead (in float64 MXNet divides each
    pixel before summing, an ulp or two from the correctly rounded average; float32 is the same to the bit).
    """
    larger = tuple(max(pair) for pair in pads)
    native_stride = tuple(s if before == after else 1 for (before, after), s in zip(pads, geometry.stride))
    y = pool(x, kernel=geometry.window, stride=native_stride, pad=larger, pool_type="avg", count_include_pad=False)
    kept = tuple(
        slice(None) if before == after else slice(most - before, (after - most) or None, s)
        for (before, after), most, s in zip(pads, larger, geometry.stride)
    )
    return y[(slice(None), slice(None)) + kept]


class MxnetBackend(Backend):
    """The convlab backend for ``mxnet.np.ndarray`` (and legacy ``mxnet.nd.NDArray``, taken without a copy).

    Results are ``mxnet.np.ndarray`` on the input's context, in float32 or float64 like the input.

    Example:
        >>> from mxnet import np
        >>> import convlab as cl
        >>> y = cl.pool2d(np.ones((1, 1, 4, 4), dtype="float64"), 2, "avg", stride=2)
        >>> y.dtype.name, y.shape
        ('float64', (1, 1, 2, 2))
    """

    name = "mxnet"
    framework_modules = ("mxnet",)
    package = "convlab-mxnet"
    # "auto": decision lists generated by benchmarks/fit_rules.py from the sweep of benchmarks/algorithms.py --sweep
    # (convlab/rules/mxnet.json; benchmarks/results/sweep.md): native convolution everywhere (no formulation won
    # without losing elsewhere), shift pooling on large float32 inputs
    conv_rules = rules.load("mxnet", "conv")
    pool_rules = rules.load("mxnet", "pool")

    def __init__(self) -> None:
        import mxnet

        self._mx = mxnet
        self._ops, self._symbol_ops = _namespaces()
        self._NDArray = mxnet.nd.NDArray  # the base class of mxnet.np.ndarray too
        self._ndarray = mxnet.np.ndarray
        self._Symbol = mxnet.sym.Symbol
        self._dtypes = {"float32": np.dtype("float32"), "float64": np.dtype("float64")}
        self._gpus = mxnet.context.num_gpus() > 0

    # -- tensors ----------------------------------------------------------------------------------
    def version(self) -> str:
        return str(self._mx.__version__)

    def equivalence_settings(self) -> dict:
        # MXNet 1.x has no TF32 mode; determinism is an environment switch read at start-up
        return {
            "tf32": "not in MXNet 1.x",
            "MXNET_ENFORCE_DETERMINISM": os.environ.get("MXNET_ENFORCE_DETERMINISM", "0"),
        }

    def is_tensor(self, x: Any) -> bool:
        return isinstance(x, (self._NDArray, self._Symbol))

    def dtype_name(self, x: Any) -> str:
        if isinstance(x, self._Symbol):  # claimed by is_tensor so that the error names MXNet, not a missing backend
            raise ConvlabTypeError(
                "convlab functions need concrete MXNet arrays, got a Symbol: inside a hybridized block use "
                "cl.Conv2D / cl.MaxPool2D / cl.AvgPool2D (Gluon HybridBlocks) instead"
            )
        return _dtype_name(x.dtype)

    def device_of(self, x: Any) -> Any:
        # why: a CPU-only MXNet has one device (its CPU contexts mix freely) and reading x.ctx costs microseconds
        return x.ctx if self._gpus else None

    def place_like(self, x: Any, like: Any) -> Any:
        # why: mxnet.np.array puts NumPy data on the default context (the CPU), not next to a GPU tensor
        return x.as_in_context(like.ctx) if self._gpus else x

    def asarray(self, x: Any, dtype: str) -> Any:
        target = self._dtypes[dtype]
        if isinstance(x, self._NDArray):
            if not isinstance(x, self._ndarray):
                x = x.as_np_ndarray()  # legacy NDArray: a new handle on the same memory, no copy
            return x if x.dtype == target else x.astype(target)
        return self._mx.np.array(x, dtype=target)

    def to_numpy(self, x: Any) -> np.ndarray:
        return x.asnumpy()

    # -- array plumbing ---------------------------------------------------------------------------
    def transpose(self, x: Any, axes: Sequence[int]) -> Any:
        return x.transpose(tuple(axes))

    def flip(self, x: Any, axes: Sequence[int]) -> Any:
        return self._mx.np.flip(x, tuple(axes))

    def pad(self, x: Any, pads: Sequence[Pair], value: float = 0.0) -> Any:
        if not any(before or after for before, after in pads):
            return x
        width = tuple((int(before), int(after)) for before, after in pads)
        if len(width) <= MAX_PAD_RANK:
            return self._ops.pad(x, width, mode="constant", constant_value=float(value))
        # why: _npi_pad handles at most 5 axes (the core's stride spreading pads 6); padding an axis is padding
        # the block it forms with the unpadded axes after it, so merge those and pad fewer, longer axes
        half = len(width) // 2
        if any(any(pair) for pair in width[:half]) and any(any(pair) for pair in width[half:]):
            front = width[:half] + ((0, 0),) * (len(width) - half)
            return self.pad(self.pad(x, front, value), ((0, 0),) * half + width[half:], value)
        shape = x.shape
        merged_shape: List[int] = []
        merged_width: List[Pair] = []
        for size, (before, after) in zip(x.shape, width):
            if merged_shape and before == after == 0:
                merged_shape[-1] *= size
                merged_width[-1] = (merged_width[-1][0] * size, merged_width[-1][1] * size)
            else:
                merged_shape.append(size)
                merged_width.append((before, after))
        padded = self.pad(x.reshape(tuple(merged_shape)), tuple(merged_width), value)
        return padded.reshape(tuple(n + before + after for n, (before, after) in zip(shape, width)))

    def maximum(self, a: Any, b: Any) -> Any:
        return self._mx.np.maximum(a, b)

    def sum(self, x: Any, axes: Sequence[int]) -> Any:
        return x.sum(axis=tuple(axes))

    # -- compute primitives -----------------------------------------------------------------------
    def conv2d(self, x: Any, k: Any, bias: Any, geometry: ConvGeometry) -> Any:
        # why: npx.convolution adds the bias itself; a separate broadcast add costs two more operator calls
        return _convolution(self._ops, x, k, bias, geometry, geometry.pads)

    def conv2d_bound(self, geometry: ConvGeometry) -> Callable[[Any, Any, Any], Any]:
        pad = _native_pad(geometry.pads)
        if geometry.channels_last or pad is None:
            return super().conv2d_bound(geometry)
        # why: every .shape read of an MXNet array is a C call of about 3 µs, and MXNet turns every keyword into
        # a string on every call: the kernel's shape is bound here once, and default options are left out
        options = _non_default(kernel=geometry.window, stride=geometry.stride, dilate=geometry.dilation, pad=pad)
        convolution, out_channels = self._ops.npx.convolution, geometry.out_channels

        def run(x: Any, k: Any, bias: Any) -> Any:
            return convolution(x, k, bias, num_filter=out_channels, no_bias=bias is None, **options)

        return run

    def conv_transpose2d(self, x: Any, k: Any, bias: Any, geometry: TransposeGeometry) -> Any:
        """``convlab.conv_transpose2d``'s binding: ``npx.deconvolution`` where it is right and faster.

        npx.deconvolution is up to 10x faster than the core's formulation at stride 2 and 1.5-2x at stride 1
        with 16 channels (benchmarks/conv_transpose.py, one thread); one channel pair at stride 1 from 512x512
        up, the core's correlation (npx.convolution) is faster and runs instead. Not while autograd records a
        computed weight, not where MXNet needs adj >= stride, not float64 strided and dilated (comments below).
        Asymmetric pads run it with the smaller pad of each axis (``adj`` where the crop needs rows past the full
        result) and crop the rest.
        """
        plan = _deconvolution_plan(geometry)
        # why: under autograd.record MXNet 1.9.1's float32 Deconvolution fails in its backward pass ("could not
        # execute a primitive", then heap corruption) whenever the weight is computed (transposed, reshaped, cast:
        # not a leaf); it works for a leaf with a gradient buffer (a Gluon parameter, an array after attach_grad),
        # so only that runs it while recording, and the core's formulation (npx.convolution) differentiates the rest
        if (
            plan is None
            or (self._mx.autograd.is_recording() and (plan.channels_last or k.grad is None))
            or (plan.strided_and_dilated and x.dtype == np.float64)  # why: MXNet's own float64 kernel is wrong there
        ):
            return transpose_primitive(self, x, k, bias, geometry)
        if plan.channels_last:  # why: MXNet 1.x runs layout="NHWC" on GPU only
            x, k = x.transpose((0, 3, 1, 2)), k.transpose((3, 2, 0, 1))
        y = self._ops.npx.deconvolution(x, k, bias, no_bias=bias is None, **plan.options)
        if plan.crop is not None:
            y = y[plan.crop]
        return y.transpose((0, 2, 3, 1)) if plan.channels_last else y

    def pool2d(self, x: Any, geometry: PoolGeometry) -> Any:
        g = geometry
        if g.mode == "max" or g.uniform_divisor or _native_pad(g.pads, g.window) is not None:
            return _pooling(self._ops, x, g, g.pads)
        # the average of real pixels with pads MXNet cannot take: window sums divided by convlab's count, as
        # every backend rounds (MXNet's own float64 pooling divides each pixel by the count before summing)
        if g.channels_last:
            x = x.transpose((0, 3, 1, 2))
        padded = self._ops.pad(x, ((0, 0), (0, 0)) + g.pads, mode="constant", constant_value=0.0)
        sums = self._ops.npx.pooling(padded, kernel=g.window, stride=g.stride, pool_type="sum")
        y = algorithms.divide(self, sums, g, channels_last=False)
        return y.transpose((0, 2, 3, 1)) if g.channels_last else y

    def pool2d_bound(self, geometry: PoolGeometry) -> Callable[[Any], Any]:
        g = geometry
        pad = _native_pad(g.pads, g.window)
        if g.channels_last or pad is None:
            return super().pool2d_bound(g)
        options = _non_default(kernel=g.window, stride=g.stride, pad=pad, pool_type=g.mode)
        if g.mode == "max":  # why: MXNet's max pooling skips NaN (see _max_pooling)
            return functools.partial(_max_pooling, self._ops, functools.partial(self._ops.npx.pooling, **options))
        options["count_include_pad"] = g.count_include_pad
        return functools.partial(self._ops.npx.pooling, **options)

    # why: outside autograd.record(), MXNet's oneDNN convolution queues an in-place reorder of its weight to its
    # own blocked layout; a slice of that weight taken before the reorder runs kills the process (SIGFPE). Shift
    # slices the caller's OIHW kernel, so it slices a copy: the copy is an engine operation, ordered after it (gemm
    # and every channels-last path transpose the kernel first, which is such an operation too)
    def conv2d_shift(self, x: Any, k: Any, bias: Any, geometry: ConvGeometry) -> Any:
        return super().conv2d_shift(x, k if geometry.channels_last else k.copy(), bias, geometry)

    def pool2d_shift(self, x: Any, geometry: PoolGeometry) -> Any:
        if geometry.mode == "max" and self._mx.autograd.is_recording():
            # why: np.maximum's gradient gives a window holding NaN nothing; max pooling's goes to its first NaN
            return self.pool2d(x, geometry)
        return super().pool2d_shift(x, geometry)

    # -- training and layers ----------------------------------------------------------------------
    def value_and_grad(self, fn: Callable[[list], Any]) -> Callable[[list], Tuple[Any, list]]:
        autograd = self._mx.autograd

        def step(params: list) -> Tuple[Any, list]:
            leaves = [p.detach() for p in params]  # new handles on the same memory: the caller's arrays stay untouched
            for leaf in leaves:
                leaf.attach_grad()
            with autograd.record():
                loss = fn(leaves)
            loss.backward()
            return loss.detach(), [leaf.grad for leaf in leaves]

        return step

    def conv2d_layer(self, config: dict, weight: np.ndarray, bias: Optional[np.ndarray]) -> Any:
        return classes()["MxnetConv2D"](config, weight, bias, self)

    def pool2d_layer(self, config: dict) -> Any:
        return classes()["MxnetPool2D"](config, self)


# -- Gluon layers ---------------------------------------------------------------------------------


class _Plan(NamedTuple):
    """How a layer runs inputs of one signature; a hybridized graph is traced again when it changes."""

    lift: Optional[Tuple[Tuple[int, ...], Tuple[int, ...]]]  # (4-D input shape, output shape) for 2-D/3-D inputs
    pads: Pads
    cast: Optional[str]  # the dtype to cast the input to (integers, float32 meeting float64 weights), if any
    dtype: str  # the dtype the layer computes in


def _smallest_input(window: Pair, channels: int, dilation: Pair, channels_last: bool) -> Tuple[int, int, int, int]:
    """The smallest 4-D input shape a window fits."""
    extent = tuple((k - 1) * d + 1 for k, d in zip(window, dilation))
    return (1,) + extent + (channels,) if channels_last else (1, channels) + extent  # type: ignore[return-value]


def _build_layers() -> Dict[str, type]:
    """The HybridBlock classes, built on first use so that importing this module does not import MXNet."""
    import mxnet
    from mxnet.gluon import HybridBlock

    array_ops, symbol_ops = _namespaces()
    NDArray, Symbol = mxnet.nd.NDArray, mxnet.sym.Symbol
    numpy_types = (mxnet.np.ndarray, mxnet.sym.np._Symbol)

    def numpy_mode(value: Any) -> Any:
        # why: outside numpy mode Gluon hands out legacy parameters and inputs; npx ops take numpy ones
        return value if value is None or isinstance(value, numpy_types) else value.as_np_ndarray()

    class ConvlabBlock(HybridBlock):
        """What both layers share: the core validates each new input signature, then MXNet ops run the plan.

        Imperative and hybridized calls run the same ops (the adapter's, with the stored, validated
        configuration), so a hybridized layer equals the imperative one; a hybridized graph is traced again
        when the plan (pads, lifting of 2-D/3-D inputs, dtype) changes.
        """

        def __init__(self, config: dict, backend: MxnetBackend):
            super().__init__()
            self.config = dict(config)
            self._convlab_backend = backend  # why: HybridBlock already uses self._backend (graph partitioning)
            self._signature: Any = None  # (shape, dtype, parameter dtype) of the input the plan was made for
            self._plan: Optional[_Plan] = None

        def forward(self, x: Any) -> Any:
            if isinstance(x, NDArray):
                x = numpy_mode(x)
                self._plan_for(x)
                return super().forward(x)
            if isinstance(x, Symbol):  # inside a hybridized parent: no input shape, so no shape-dependent padding
                padding, stride = self.config["padding"], self.config["stride"]
                if isinstance(padding, str) and padding.lower() == "same" and stride not in (1, (1, 1)):
                    raise ConvlabValueError(
                        f"padding='same' with stride {stride} needs the input size, which a hybridized parent block "
                        f"does not give its children: use explicit padding, or do not hybridize the parent"
                    )
                self._signature = None
                self._plan = _Plan(None, self._template.pads, None, self._parameter_dtype())
                return super().forward(x)
            return self._call_core(x)  # NumPy arrays and lists are converted, other frameworks' tensors refused

        def _plan_for(self, x: Any) -> None:
            """Validate a concrete input with the core now (MXNet would fail at the next read); retrace if needed."""
            signature = (x.shape, self._convlab_backend.dtype_name(x), self._parameter_dtype())
            if signature == self._signature:
                return
            dtype = self._dtype(x)
            geometry = self._geometry(x.shape)
            lift = None if len(x.shape) == 4 else (geometry.x4, geometry.out)
            plan = _Plan(lift, geometry.pads, None if signature[1] == dtype else dtype, dtype)
            self._signature = signature
            if plan != self._plan:
                if self._active:
                    self._clear_cached_op()
                self._plan = plan

        def _parameter_dtype(self) -> str:
            return "float32"

        def _planned(self) -> _Plan:
            """The plan of the input being run: forward() makes it before MXNet calls hybrid_forward."""
            assert self._plan is not None, "hybrid_forward runs only inside forward(), which makes the plan"
            return self._plan

        def _lifted(self, x: Any) -> Any:
            plan = self._planned()
            x = numpy_mode(x)
            if plan.cast is not None:
                x = x.astype(plan.cast)
            return x if plan.lift is None else x.reshape(plan.lift[0])

        def _unlifted(self, y: Any) -> Any:
            lift = self._planned().lift
            return y if lift is None else y.reshape(lift[1])

        def __repr__(self) -> str:
            return f"{type(self).__name__}({self.config})"

    class MxnetConv2D(ConvlabBlock):
        """convlab's Conv2D as a Gluon ``HybridBlock``: ``weight`` (Co, C, kh, kw) and ``bias`` (Co,) parameters.

        The parameters come initialized with convlab's seeded weights (``force_reinit`` restores them), as
        numpy-mode arrays in numpy mode and legacy ones otherwise, like Gluon's own layers. Trains with
        ``autograd.record`` and ``gluon.Trainer``, imperative or after ``hybridize()``.

        :func:`convlab.ConvTranspose2D` builds one too (weight (C, Co, kh, kw)), whose forward pass is
        :func:`convlab.conv_transpose2d` on the parameters, run imperatively even after ``hybridize()``: MXNet
        1.9.1's float32 deconvolution fails in its backward pass whenever the weight is not a leaf (a
        channels-last or cast weight), so the layer leaves the choice to :meth:`MxnetBackend.conv_transpose2d`,
        which runs npx.deconvolution on the parameter itself and convlab's formulation otherwise.

        Example:
            >>> from mxnet import np
            >>> import convlab as cl
            >>> layer = cl.Conv2D(3, 2, 4, padding=1, seed=0, backend="mxnet")
            >>> layer.hybridize()
            >>> layer(np.ones((1, 2, 5, 5))).shape, layer.weight.shape
            ((1, 4, 5, 5), (4, 2, 3, 3))
        """

        def __init__(self, config: dict, weight: np.ndarray, bias: Optional[np.ndarray], backend: MxnetBackend):
            config = dict(config)
            operation = config.pop("operation", "conv2d")  # or "conv_transpose2d" (cl.ConvTranspose2D)
            super().__init__(config, backend)
            self.operation = operation
            with self.name_scope():
                self.weight = self.params.get("weight", shape=weight.shape, init=mxnet.init.Constant(weight))
                self.bias = None
                if bias is not None:
                    self.bias = self.params.get("bias", shape=bias.shape, init=mxnet.init.Constant(bias))
            self.initialize()
            if operation == "conv2d":
                # the geometry of the smallest input: window, channels, stride, dilation, and the pads when they do
                # not depend on the input's size (all that a graph inside a hybridized parent gets)
                last = config["data_format"] == "channels_last"
                window, channels = (weight.shape[:2], weight.shape[2]) if last else (weight.shape[2:], weight.shape[1])
                dilation = to_pair("dilation", config["dilation"])
                self._template = self._geometry(_smallest_input(window, channels, dilation, last))

        def forward(self, x: Any) -> Any:
            if self.operation == "conv2d":
                return super().forward(x)
            if isinstance(x, Symbol):
                raise ConvlabValueError(
                    "a ConvTranspose2D layer on MXNet runs imperatively (cl.conv_transpose2d), so a hybridized "
                    "parent block cannot trace it: do not hybridize the parent"
                )
            return self._call_core(x)

        def _parameter_dtype(self) -> str:
            return _dtype_name(self.weight.dtype)

        def _dtype(self, x: Any) -> str:
            bias = None if self.bias is None else self.bias.data()
            return prepare(self._convlab_backend, X=x, K=self.weight.data(), bias=bias)[1]

        def _geometry(self, x_shape: Tuple[int, ...]) -> ConvGeometry:
            bias_shape = None if self.bias is None else self.bias.shape
            return conv_geometry(x_shape, self.weight.shape, bias_shape, **self.config)

        def _call_core(self, x: Any) -> Any:
            bias = None if self.bias is None else numpy_mode(self.bias.data())
            forward = convlab.conv2d if self.operation == "conv2d" else convlab.conv_transpose2d
            return forward(x, numpy_mode(self.weight.data()), bias, backend=self._convlab_backend, **self.config)

        def hybrid_forward(self, F: Any, x: Any, weight: Any, bias: Any = None) -> Any:
            ops = symbol_ops if isinstance(x, Symbol) else array_ops
            plan = self._planned()
            weight, bias, dtype = numpy_mode(weight), numpy_mode(bias), plan.dtype
            if self._parameter_dtype() != dtype:
                weight = weight.astype(dtype)
                bias = None if bias is None else bias.astype(dtype)
            y = _convolution(ops, self._lifted(x), weight, bias, self._template, plan.pads)
            return self._unlifted(y)

        def __repr__(self) -> str:
            what = "" if self.operation == "conv2d" else f"{self.operation}, "
            return f"MxnetConv2D({what}weight {self.weight.shape}, bias={self.bias is not None}, {self.config})"

    class MxnetPool2D(ConvlabBlock):
        """convlab's MaxPool2D / AvgPool2D as a parameter-free Gluon ``HybridBlock``.

        Example:
            >>> from mxnet import np
            >>> import convlab as cl
            >>> cl.MaxPool2D(2, backend="mxnet")(np.arange(16.0).reshape(4, 4)).tolist()
            [[5.0, 7.0], [13.0, 15.0]]
        """

        def __init__(self, config: dict, backend: MxnetBackend):
            super().__init__(config, backend)
            last = config["data_format"] == "channels_last"
            # window, stride, mode, layout and the size-free pads (see MxnetConv2D)
            self._template = self._geometry(_smallest_input(config["pool_size"], 1, (1, 1), last))

        def _dtype(self, x: Any) -> str:
            return prepare(self._convlab_backend, X=x)[1]

        def _geometry(self, x_shape: Tuple[int, ...]) -> PoolGeometry:
            return pool_geometry(x_shape, **self.config)

        def _call_core(self, x: Any) -> Any:
            return convlab.pool2d(x, backend=self._convlab_backend, **self.config)

        def hybrid_forward(self, F: Any, x: Any) -> Any:
            ops = symbol_ops if isinstance(x, Symbol) else array_ops
            return self._unlifted(_pooling(ops, self._lifted(x), self._template, self._planned().pads))

    return {"MxnetConv2D": MxnetConv2D, "MxnetPool2D": MxnetPool2D}


#: ``convlab_mxnet.MxnetConv2D`` / ``MxnetPool2D``, built (and MXNet imported) on first access
classes, __getattr__ = lazy_classes(__name__, _build_layers)
