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
from typing import Any, Callable, NamedTuple, Optional, Sequence, Tuple

import numpy as np

import convlab
from convlab.backend import Backend, Pads, Pair
from convlab.errors import ConvlabTypeError, ConvlabValueError

__all__ = ["MxnetBackend", "MxnetConv2D", "MxnetPool2D"]

#: the most axes MXNet's pad operator accepts
MAX_PAD_RANK = 5


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


def _convolution(ops: _Ops, x, k, bias, window: Pair, out_channels: int, stride, pads, dilation, channels_last: bool):
    """Cross-correlation of NCHW x with OIHW k (NHWC / HWIO when channels_last), plus bias, on arrays or symbols."""
    if channels_last:  # why: MXNet 1.x runs layout="NHWC" convolutions on GPU only
        x, k = x.transpose((0, 3, 1, 2)), k.transpose((3, 2, 0, 1))
    pad = _native_pad(pads)
    if pad is None:  # why: npx.convolution pads symmetrically only
        x, pad = ops.pad(x, ((0, 0), (0, 0)) + pads, mode="constant", constant_value=0.0), (0, 0)
    y = ops.npx.convolution(
        x,
        k,
        bias,
        kernel=window,
        stride=stride,
        dilate=dilation,
        pad=pad,
        num_filter=out_channels,
        no_bias=bias is None,
    )
    return y.transpose((0, 2, 3, 1)) if channels_last else y


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


def _non_default(**options: Any) -> dict:
    """The operator keywords whose values differ from MXNet's defaults (stride and dilation 1, no padding)."""
    defaults = {"stride": (1, 1), "dilate": (1, 1), "pad": (0, 0)}
    return {name: value for name, value in options.items() if defaults.get(name) != value}


def _pooling(ops: _Ops, x, window: Pair, stride: Pair, pads: Pads, mode: str, count_include_pad: bool, channels_last):
    """Max (padding with -inf) or average pooling of NCHW (or NHWC) arrays or symbols."""
    if channels_last:  # why: MXNet 1.x pools layout="NHWC" on GPU only
        x = x.transpose((0, 3, 1, 2))
    pool, pad = ops.npx.pooling, _native_pad(pads, window)
    if pad is not None:
        y = pool(x, kernel=window, stride=stride, pad=pad, pool_type=mode, count_include_pad=count_include_pad)
    else:
        width = ((0, 0), (0, 0)) + pads
        fill = -float("inf") if mode == "max" else 0.0
        padded = ops.pad(x, width, mode="constant", constant_value=fill)
        if mode == "max" or count_include_pad:
            y = pool(padded, kernel=window, stride=stride, pool_type=mode)
        else:  # window sums divided by the number of real pixels in each window
            sums = pool(padded, kernel=window, stride=stride, pool_type="sum")
            real = ops.pad(ops.np.ones_like(x[:1, :1]), width, mode="constant", constant_value=0.0)
            y = sums / pool(real, kernel=window, stride=stride, pool_type="sum")
    return y.transpose((0, 2, 3, 1)) if channels_last else y


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
    # "auto" rule tables (benchmarks/algorithms.py, results/algorithms-mxnet*.json): empty, the native op wins
    # every measured shape (generic shift 3x slower than npx.convolution at 2048^2, gemm 13x on N=8 C64->64)
    conv_rules = ()
    pool_rules = ()

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
        shape, merged_shape, merged_width = x.shape, [], []
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
    def conv2d(self, x: Any, k: Any, stride: Pair, pads: Pads, dilation: Pair, channels_last: bool) -> Any:
        return self.conv2d_bias(x, k, None, stride, pads, dilation, channels_last)

    def conv2d_bias(self, x: Any, k: Any, bias: Any, stride: Pair, pads: Pads, dilation: Pair, channels_last: bool):
        # why: npx.convolution adds the bias itself; a separate broadcast add costs two more operator calls
        shape = k.shape
        window, out_channels = (shape[:2], shape[3]) if channels_last else (shape[2:], shape[0])
        return _convolution(self._ops, x, k, bias, window, out_channels, stride, pads, dilation, channels_last)

    def conv2d_bound(self, kernel_shape, stride, pads, dilation, channels_last) -> Callable[..., Any]:
        pad = _native_pad(pads)
        if channels_last or pad is None:
            return super().conv2d_bound(kernel_shape, stride, pads, dilation, channels_last)
        # why: every .shape read of an MXNet array is a C call of about 3 µs, and MXNet turns every keyword into
        # a string on every call: the kernel's shape is bound here once, and default options are left out
        options = _non_default(kernel=kernel_shape[2:], stride=stride, dilate=dilation, pad=pad)
        convolution, out_channels = self._ops.npx.convolution, kernel_shape[0]

        def run(x: Any, k: Any, bias: Any) -> Any:
            return convolution(x, k, bias, num_filter=out_channels, no_bias=bias is None, **options)

        return run

    def pool2d_bound(self, window, stride, pads, mode, count_include_pad, channels_last) -> Callable[[Any], Any]:
        pad = _native_pad(pads, window)
        if channels_last or pad is None:
            return super().pool2d_bound(window, stride, pads, mode, count_include_pad, channels_last)
        options = _non_default(kernel=window, stride=stride, pad=pad, pool_type=mode)
        if mode == "avg":
            options["count_include_pad"] = count_include_pad
        return functools.partial(self._ops.npx.pooling, **options)

    def pool2d(
        self,
        x: Any,
        window: Pair,
        stride: Pair,
        pads: Pads,
        mode: str,
        count_include_pad: bool,
        channels_last: bool,
    ) -> Any:
        return _pooling(self._ops, x, window, stride, pads, mode, count_include_pad, channels_last)

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

    def conv2d_layer(self, config: dict, weight: np.ndarray, bias: np.ndarray | None) -> Any:
        return _layer_classes()[0](config, weight, bias, self)

    def pool2d_layer(self, config: dict) -> Any:
        return _layer_classes()[1](config, self)


# -- Gluon layers ---------------------------------------------------------------------------------


class _Plan(NamedTuple):
    """How a layer runs inputs of one signature; a hybridized graph is traced again when it changes."""

    lift: Optional[Tuple[Tuple[int, ...], Tuple[int, ...]]]  # (4-D input shape, output shape) for 2-D/3-D inputs
    pads: Pads
    cast: Optional[str]  # the dtype to cast the input to (integers, float32 meeting float64 weights), if any
    dtype: str  # the dtype the layer computes in


@functools.cache
def _layer_classes() -> Tuple[type, type]:
    """Build the HybridBlock classes on first use, so that importing this module does not import MXNet."""
    import mxnet
    from mxnet.gluon import HybridBlock

    from convlab.arguments import to_pair
    from convlab.ops import _describe, _geometry, _pool_geometry

    array_ops, symbol_ops = _namespaces()
    NDArray, Symbol = mxnet.nd.NDArray, mxnet.sym.Symbol
    numpy_types = (mxnet.np.ndarray, mxnet.sym.np._Symbol)

    def numpy_mode(value: Any) -> Any:
        # why: outside numpy mode Gluon hands out legacy parameters and inputs; npx ops take numpy ones
        return value if value is None or isinstance(value, numpy_types) else value.as_np_ndarray()

    class ConvlabBlock(HybridBlock):
        """What both layers share: the core validates each new input signature, then MXNet ops run the plan.

        Imperative and hybridized calls run the same ops (the adapter's primitives with the stored, validated
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
                self._signature, self._plan = None, self._shape_free_plan()
                return super().forward(x)
            return self._call_core(x)  # NumPy arrays and lists are converted, other frameworks' tensors refused

        def _plan_for(self, x: Any) -> None:
            """Validate a concrete input with the core now (MXNet would fail at the next read); retrace if needed."""
            signature = (x.shape, self._convlab_backend.dtype_name(x), self._parameter_dtype())
            if signature == self._signature:
                return
            described = _describe(self._convlab_backend, "X", x)
            geometry = self._geometry(described.shape)
            dtype = "float64" if "float64" in (described.dtype, signature[2]) else "float32"
            lift = None if len(described.shape) == 4 else (geometry.x4, geometry.out)
            plan = _Plan(lift, geometry.pads, None if signature[1] == dtype else dtype, dtype)
            self._signature = signature
            if plan != self._plan:
                if self._active:
                    self._clear_cached_op()
                self._plan = plan

        def _parameter_dtype(self) -> str:
            return "float32"

        def _lifted(self, x: Any) -> Any:
            plan = self._plan
            x = numpy_mode(x)
            if plan.cast is not None:
                x = x.astype(plan.cast)
            return x if plan.lift is None else x.reshape(plan.lift[0])

        def _unlifted(self, y: Any) -> Any:
            return y if self._plan.lift is None else y.reshape(self._plan.lift[1])

        def __repr__(self) -> str:
            return f"{type(self).__name__}({self.config})"

    class MxnetConv2D(ConvlabBlock):
        """convlab's Conv2D as a Gluon ``HybridBlock``: ``weight`` (Co, C, kh, kw) and ``bias`` (Co,) parameters.

        The parameters come initialized with convlab's seeded weights (``force_reinit`` restores them), as
        numpy-mode arrays in numpy mode and legacy ones otherwise, like Gluon's own layers. Trains with
        ``autograd.record`` and ``gluon.Trainer``, imperative or after ``hybridize()``.

        Example:
            >>> from mxnet import np
            >>> import convlab as cl
            >>> layer = cl.Conv2D(3, 2, 4, padding=1, seed=0, backend="mxnet")
            >>> layer.hybridize()
            >>> layer(np.ones((1, 2, 5, 5))).shape, layer.weight.shape
            ((1, 4, 5, 5), (4, 2, 3, 3))
        """

        def __init__(self, config: dict, weight: np.ndarray, bias: Optional[np.ndarray], backend: MxnetBackend):
            super().__init__(config, backend)
            self._channels_last = config["data_format"] == "channels_last"
            self._stride = to_pair("stride", config["stride"])
            self._dilation = to_pair("dilation", config["dilation"])
            with self.name_scope():
                self.weight = self.params.get("weight", shape=weight.shape, init=mxnet.init.Constant(weight))
                self.bias = None
                if bias is not None:
                    self.bias = self.params.get("bias", shape=bias.shape, init=mxnet.init.Constant(bias))
            self.initialize()

        def _parameter_dtype(self) -> str:
            return _dtype_name(self.weight.dtype)

        def _geometry(self, x_shape: Tuple[int, ...]) -> Any:
            config, bias_shape = self.config, None if self.bias is None else self.bias.shape
            return _geometry(
                x_shape,
                self.weight.shape,
                bias_shape,
                self._stride,
                config["padding"],
                self._dilation,
                config["data_format"],
            )

        def _shape_free_plan(self) -> _Plan:
            shape = self.weight.shape
            channels, window = (shape[2], shape[:2]) if self._channels_last else (shape[1], shape[2:])
            smallest = tuple((k - 1) * d + 1 for k, d in zip(window, self._dilation))
            x4 = (1,) + smallest + (channels,) if self._channels_last else (1, channels) + smallest
            return _Plan(None, self._geometry(x4).pads, None, self._parameter_dtype())

        def _call_core(self, x: Any) -> Any:
            bias = None if self.bias is None else numpy_mode(self.bias.data())
            return convlab.conv2d(x, numpy_mode(self.weight.data()), bias, backend=self._convlab_backend, **self.config)

        def hybrid_forward(self, F: Any, x: Any, weight: Any, bias: Any = None) -> Any:
            ops = symbol_ops if isinstance(x, Symbol) else array_ops
            weight, bias, dtype = numpy_mode(weight), numpy_mode(bias), self._plan.dtype
            if self._parameter_dtype() != dtype:
                weight = weight.astype(dtype)
                bias = None if bias is None else bias.astype(dtype)
            shape = self.weight.shape
            window, out_channels = (shape[:2], shape[3]) if self._channels_last else (shape[2:], shape[0])
            y = _convolution(
                ops,
                self._lifted(x),
                weight,
                bias,
                window,
                out_channels,
                self._stride,
                self._plan.pads,
                self._dilation,
                self._channels_last,
            )
            return self._unlifted(y)

        def __repr__(self) -> str:
            return f"MxnetConv2D(weight {self.weight.shape}, bias={self.bias is not None}, {self.config})"

    class MxnetPool2D(ConvlabBlock):
        """convlab's MaxPool2D / AvgPool2D as a parameter-free Gluon ``HybridBlock``.

        Example:
            >>> from mxnet import np
            >>> import convlab as cl
            >>> cl.MaxPool2D(2, backend="mxnet")(np.arange(16.0).reshape(4, 4)).tolist()
            [[5.0, 7.0], [13.0, 15.0]]
        """

        def _geometry(self, x_shape: Tuple[int, ...]) -> Any:
            config = self.config
            return _pool_geometry(
                x_shape, config["pool_size"], config["mode"], config["stride"], config["padding"], config["data_format"]
            )

        def _shape_free_plan(self) -> _Plan:
            window = self.config["pool_size"]
            x4 = (1,) + window + (1,) if self.config["data_format"] == "channels_last" else (1, 1) + window
            return _Plan(None, self._geometry(x4).pads, None, "")

        def _call_core(self, x: Any) -> Any:
            return convlab.pool2d(x, backend=self._convlab_backend, **self.config)

        def hybrid_forward(self, F: Any, x: Any) -> Any:
            config = self.config
            y = _pooling(
                symbol_ops if isinstance(x, Symbol) else array_ops,
                self._lifted(x),
                config["pool_size"],
                config["stride"],
                self._plan.pads,
                config["mode"],
                config["count_include_pad"],
                config["data_format"] == "channels_last",
            )
            return self._unlifted(y)

    for cls in (MxnetConv2D, MxnetPool2D):
        cls.__qualname__ = cls.__name__  # why: pickle finds the class as convlab_mxnet.<name> (module __getattr__)
        cls.__module__ = __name__
    return MxnetConv2D, MxnetPool2D


def __getattr__(name: str) -> Any:
    """``convlab_mxnet.MxnetConv2D`` / ``MxnetPool2D``, built (and MXNet imported) on first access."""
    if name == "MxnetConv2D":
        return _layer_classes()[0]
    if name == "MxnetPool2D":
        return _layer_classes()[1]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
