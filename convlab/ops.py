"""The public operations: semantics, validation and shape logic live here, once.

Each function picks a backend (see :mod:`convlab.registry`), checks every
argument against the shapes involved, converts the inputs to the backend's
tensors of one float dtype, lifts them to 4-D and calls one primitive.
"""

from __future__ import annotations

import functools
import warnings
from typing import Any, Callable, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np

from convlab import algorithms
from convlab.arguments import (
    POOL_MODES,
    IntOrPair,
    Padding,
    Pads,
    _freeze,
    check_data_format,
    output_hw,
    resolve_pads,
    to_pair,
)
from convlab.backend import Backend
from convlab.errors import ConvlabTypeError, ConvlabValueError
from convlab.registry import _by_type, default_backend_name, select_backend

BackendArg = Union[str, Backend, None]
_NEUTRAL = (np.ndarray, np.generic, list, tuple, int, float, bool)


# -- inputs ---------------------------------------------------------------------------------------


class _Input(NamedTuple):
    value: Any  # a NumPy array for neutral inputs, else the framework tensor as given
    shape: Tuple[int, ...]
    dtype: str  # the float dtype it computes in on its own: "float32" or "float64"
    is_tensor: bool


_FLOAT_NAMES = {np.dtype(np.float32): "float32", np.dtype(np.float64): "float64"}


def _describe(backend: Backend, name: str, x: Any) -> _Input:
    """Shape and compute dtype of one input, without running framework code."""
    if type(x) is np.ndarray and x.dtype in _FLOAT_NAMES:  # the common case, kept cheap
        return _Input(x, x.shape, _FLOAT_NAMES[x.dtype], False)
    if isinstance(x, _NEUTRAL) or not backend.is_tensor(x):
        from_list = isinstance(x, (list, tuple, int, float, bool))
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # NumPy < 1.24 warns before building an object array
                array = np.asarray(x)
        except ValueError as error:  # ragged nested lists
            raise ConvlabValueError(f"{name} is not a rectangular array: {error}") from None
        if array.dtype == object and isinstance(x, (list, tuple)):  # NumPy < 1.24 does not raise
            raise ConvlabValueError(f"{name} is not a rectangular array (ragged nested sequences)")
        dtype = _compute_dtype(name, array.dtype.kind, array.dtype.itemsize, str(array.dtype), from_list)
        return _Input(array, tuple(array.shape), dtype, False)
    dtype_name = backend.dtype_name(x)
    try:
        dtype = np.dtype(dtype_name)
        kind, itemsize = dtype.kind, dtype.itemsize
    except TypeError:  # bfloat16 and friends NumPy does not know
        kind, itemsize = "?", 0
    try:
        shape = tuple(x.shape)
    except ValueError:  # TensorFlow: a symbolic tensor of unknown rank
        raise ConvlabValueError(f"{name} has an unknown rank; convlab needs static shapes") from None
    return _Input(x, shape, _compute_dtype(name, kind, itemsize, dtype_name, False), True)


def _compute_dtype(name: str, kind: str, itemsize: int, dtype_name: str, from_list: bool) -> str:
    if kind in "biu" or (from_list and kind == "f"):
        return "float32"  # integers, bools and Python lists compute in float32 (DESIGN.md section 3)
    if kind == "f" and itemsize in (4, 8):
        return "float32" if itemsize == 4 else "float64"
    raise ConvlabTypeError(
        f"{name} has dtype {dtype_name}; convlab computes in float32 or float64 "
        f"(integer and bool inputs are promoted to float32)"
    )


def _prepare(backend: Backend, inputs: Sequence[Optional[_Input]], names: Sequence[str]) -> Tuple[list, str]:
    """Convert described inputs to the backend's tensors of one dtype (float64 if any is float64)."""
    plan = _make_plan(backend, None, inputs, names)
    return _materialize(plan, [None if item is None else item.value for item in inputs], names), plan.dtype


_NO_CHECK = object()  # a plan's device when its algorithm holds on any device


class _Plan(NamedTuple):
    """How to run calls with one signature: checked once, then reused (see :func:`_plan`)."""

    backend: Backend
    geometry: Any
    dtype: str
    convert: Tuple[bool, ...]  # which inputs need backend.asarray
    tensors: Tuple[int, ...]  # which inputs are the backend's own tensors
    check_devices: bool  # several tensors on a framework with devices: compare them on every call
    place: Tuple[bool, ...]  # converted NumPy data to move to the tensors' device
    algorithm: str = "native"  # the formulation to run (see convlab.algorithms), "auto" already resolved
    device: Any = _NO_CHECK  # the device "auto" chose for; a call on another device chooses again
    direct: Optional[Callable[..., Any]] = None  # the native op bound to the geometry, for tensors as they come


_PLANS: dict = {}


def _make_plan(backend: Backend, geometry: Any, items: Sequence[Optional[_Input]], names: Sequence[str]) -> _Plan:
    """The one dtype a call computes in (float64 if any input is float64), after checking devices agree."""
    dtype = "float64" if any(item is not None and item.dtype == "float64" for item in items) else "float32"
    if dtype == "float64":
        backend.check_float64()
    tensors = tuple(i for i, item in enumerate(items) if item is not None and item.is_tensor)
    has_devices = type(backend).device_of is not Backend.device_of
    if has_devices and len(tensors) > 1:
        _check_devices(backend, [items[i].value for i in tensors], [names[i] for i in tensors])
    # asarray returns its input when nothing needs converting; anything else (NumPy data, another dtype,
    # a legacy array type the backend rewraps) is converted on every call
    convert = tuple(item is not None and backend.asarray(item.value, dtype) is not item.value for item in items)
    follows = bool(tensors) and type(backend).place_like is not Backend.place_like
    place = tuple(follows and item is not None and not item.is_tensor for item in items)
    return _Plan(backend, geometry, dtype, convert, tensors, has_devices and len(tensors) > 1, place)


def _plan(
    backend: Backend,
    geometry: Any,
    items: Sequence[Optional[_Input]],
    names: Sequence[str],
    key: Any,
    algorithm: str = "native",
    bind: Optional[Callable[[], Callable[..., Any]]] = None,
):
    """Validate the dtypes and devices of a call once and remember how to run calls like it.

    ``bind`` makes the backend's native op for this geometry (no lifting to 4-D); the plan keeps it when the
    call runs that op on its inputs as they are, so later calls skip everything but the device check.
    """
    plan = _make_plan(backend, geometry, items, names)
    if algorithm == "auto":
        device = _device(backend, items)
        algorithm = _choose(backend, geometry, plan.dtype, device)
        has_devices = type(backend).device_of is not Backend.device_of
        plan = plan._replace(device=device if has_devices and algorithm != "native" else _NO_CHECK)
    plan = plan._replace(algorithm=algorithm)
    if bind is not None and algorithm == "native" and not any(plan.convert) and not any(plan.place):
        plan = plan._replace(direct=bind())
    if key is not None:
        if len(_PLANS) > 4096:
            _PLANS.clear()
        _PLANS[key] = plan
    return plan


def _device(backend: Backend, items: Sequence[Optional[_Input]]) -> Any:
    """The device a call computes on: its first framework tensor's (NumPy data follows it), else None."""
    for item in items:
        if item is not None and item.is_tensor:
            return backend.device_of(item.value)
    return None


def _choose(backend: Backend, geometry: Any, dtype: str, device: Any) -> str:
    if isinstance(geometry, ConvGeometry):
        return algorithms.choose(backend, backend.conv_rules, algorithms.conv_shape(geometry, dtype), device)
    return algorithms.choose(backend, backend.pool_rules, algorithms.pool_shape(geometry, dtype), device)


def _algorithm_for(plan: _Plan, x: Any) -> str:
    """The plan's algorithm, chosen again when "auto" picked a non-native one for another device."""
    if plan.device is _NO_CHECK:
        return plan.algorithm
    device = plan.backend.device_of(x)
    return plan.algorithm if device == plan.device else _choose(plan.backend, plan.geometry, plan.dtype, device)


def _materialize(plan: _Plan, values: Sequence[Any], names: Sequence[str]) -> list:
    """The inputs of one call as the backend's tensors, following the plan."""
    backend = plan.backend
    if plan.check_devices:
        _same_device(plan, values, names)
    dtype = plan.dtype
    out = [backend.asarray(v, dtype) if c else v for v, c in zip(values, plan.convert)]
    if any(plan.place):  # NumPy data joins the framework tensors on their device
        like = values[plan.tensors[0]]
        out = [backend.place_like(v, like) if p else v for v, p in zip(out, plan.place)]
    return out


def _same_device(plan: _Plan, values: Sequence[Any], names: Sequence[str]) -> None:
    """Per call: the plan's tensors are on one device (a loop, not a set: this runs on every call)."""
    device_of = plan.backend.device_of
    tensors = plan.tensors
    first = device_of(values[tensors[0]])
    for i in tensors[1:]:
        device = device_of(values[i])
        if device != first and device is not None and first is not None:
            _check_devices(plan.backend, [values[i] for i in tensors], [names[i] for i in tensors])


def _check_devices(backend: Backend, values: Sequence[Any], names: Sequence[str]) -> None:
    devices = {}
    for name, value in zip(names, values):
        device = backend.device_of(value)
        if device is not None:  # None: this tensor follows the computation wherever it runs
            devices.setdefault(device, name)
    if len(devices) > 1:
        where = ", ".join(f"{name} on {device}" for device, name in devices.items())
        raise ConvlabValueError(f"inputs are on different devices ({where}); move them to one device first")


def _inputs(backend: BackendArg, **named: Any) -> Tuple[Backend, dict]:
    names = tuple(named)
    chosen = select_backend(tuple(named.values()), names, backend)
    described = {name: None if x is None else _describe(chosen, name, x) for name, x in named.items()}
    for name, item in described.items():
        if item is not None and None in item.shape:
            raise ConvlabValueError(
                f"{name} has unknown dimensions {item.shape}; convlab needs static shapes "
                f"(inside tf.function: an input_signature with full shapes, or none)"
            )
    return chosen, described


# -- geometry: shapes and validation, cached per argument combination ---------------------------


class ConvGeometry(NamedTuple):
    x4: Tuple[int, int, int, int]  # the input lifted to 4-D, in its data format
    k4: Tuple[int, int, int, int]  # the kernel lifted to 4-D (OIHW or HWIO)
    out4: Tuple[int, int, int, int]
    out: Tuple[int, ...]  # the output shape handed back to the user
    stride: Tuple[int, int]
    pads: Pads
    dilation: Tuple[int, int]
    channels_last: bool
    x_lifted: bool = False  # X is not 4-D: reshape it before the primitive
    k_lifted: bool = False


def _kernel_parts(k4: Tuple[int, ...], channels_last: bool) -> Tuple[int, int, Tuple[int, int]]:
    """(out_channels, in_channels, (kh, kw)) of a 4-D kernel."""
    if channels_last:
        return k4[3], k4[2], (k4[0], k4[1])
    return k4[0], k4[1], (k4[2], k4[3])


@functools.lru_cache(maxsize=4096)
def _conv_geometry(
    x_shape: Tuple[int, ...],
    k_shape: Tuple[int, ...],
    bias_shape: Optional[Tuple[int, ...]],
    stride: Any,
    padding: Any,
    dilation: Any,
    data_format: str,
) -> ConvGeometry:
    channels_last = check_data_format(data_format)
    stride_pair = to_pair("stride", stride)
    dilation_pair = to_pair("dilation", dilation)
    layout = "(N, H, W, C)" if channels_last else "(N, C, H, W)"
    kernel_layout = "(kh, kw, C, Co)" if channels_last else "(Co, C, kh, kw)"
    rank = len(x_shape)
    if rank not in (2, 3, 4):
        raise ConvlabValueError(f"X must be 2-D (H, W), 3-D or 4-D {layout}; got X of shape {x_shape}")
    if len(k_shape) == 2:
        if rank != 2:
            raise ConvlabValueError(
                f"a 2-D kernel K needs a 2-D X; got X of shape {x_shape} and K of shape {k_shape} "
                f"(use a 4-D kernel {kernel_layout} for channels)"
            )
        k4 = (k_shape[0], k_shape[1], 1, 1) if channels_last else (1, 1) + k_shape
    elif len(k_shape) == 4:
        k4 = k_shape
    else:
        raise ConvlabValueError(f"K must be 4-D {kernel_layout} (or 2-D with a 2-D X); got K of shape {k_shape}")
    if rank == 2:
        x4 = (1,) + x_shape + (1,) if channels_last else (1, 1) + x_shape
    elif rank == 3:
        x4 = (1,) + x_shape
    else:
        x4 = x_shape
    out_channels, in_channels, window = _kernel_parts(k4, channels_last)
    x_channels = x4[3] if channels_last else x4[1]
    spatial = (x4[1], x4[2]) if channels_last else (x4[2], x4[3])
    if x_channels != in_channels:
        raise ConvlabValueError(
            f"X has {x_channels} input channels but K expects {in_channels}: X of shape {x_shape} "
            f"({data_format}), K of shape {k_shape} {kernel_layout}"
        )
    if min(x4) < 1 or min(k4) < 1:
        raise ConvlabValueError(f"X and K must not be empty; got X of shape {x_shape}, K of shape {k_shape}")
    if bias_shape is not None and bias_shape != (out_channels,):
        raise ConvlabValueError(
            f"bias must have shape ({out_channels},), one value per output channel of K; got bias of shape "
            f"{bias_shape} with K of shape {k_shape}"
        )
    pads = resolve_pads(padding, spatial, window, stride_pair, dilation_pair)
    out_h, out_w = output_hw(spatial, pads, window, stride_pair, dilation_pair)
    out4 = (x4[0], out_h, out_w, out_channels) if channels_last else (x4[0], out_channels, out_h, out_w)
    if rank == 4:
        out = out4
    elif rank == 3 or out_channels > 1:
        out = out4[1:]
    else:
        out = (out_h, out_w)
    return ConvGeometry(
        x4, k4, out4, out, stride_pair, pads, dilation_pair, channels_last, x4 != x_shape, k4 != k_shape
    )


def _geometry(x_shape, k_shape, bias_shape, stride, padding, dilation, data_format) -> ConvGeometry:
    try:
        return _conv_geometry(
            x_shape, k_shape, bias_shape, _freeze(stride), _freeze(padding), _freeze(dilation), data_format
        )
    except TypeError as error:
        if isinstance(error, ConvlabTypeError):
            raise
        raise ConvlabTypeError(
            f"stride, padding, dilation and data_format must be ints, tuples or strings: {error}"
        ) from None


def _shape_of(name: str, value: Any) -> Tuple[int, ...]:
    shape = getattr(value, "shape", value)
    try:
        shape = tuple(int(n) for n in shape)
    except (TypeError, ValueError):
        raise ConvlabTypeError(f"{name} must be a shape (tuple of ints) or an array, got {value!r}") from None
    return shape


# -- cross-correlation ----------------------------------------------------------------------------


def output_shape(
    X: Any,
    K: Any,
    *,
    stride: IntOrPair = 1,
    padding: Padding = 0,
    dilation: IntOrPair = 1,
    data_format: str = "channels_first",
) -> Tuple[int, ...]:
    """The shape :func:`conv2d` returns, computed from shapes (or arrays) alone.

    Example:
        >>> import convlab as cl
        >>> cl.output_shape((8, 8), (3, 3), padding="same", stride=2)
        (4, 4)
        >>> cl.output_shape((1, 1, 8, 8), (1, 1, 3, 5), padding="valid", stride=(3, 4))
        (1, 1, 2, 1)
    """
    geometry = _geometry(_shape_of("X", X), _shape_of("K", K), None, stride, padding, dilation, data_format)
    return geometry.out


def conv2d(
    X: Any,
    K: Any,
    bias: Any = None,
    *,
    stride: IntOrPair = 1,
    padding: Padding = 0,
    dilation: IntOrPair = 1,
    data_format: str = "channels_first",
    algorithm: str = "auto",
    backend: BackendArg = None,
) -> Any:
    """2-D cross-correlation (what deep learning calls convolution), with bias, padding, stride and dilation.

    X is (N, C, H, W), (C, H, W) or, with a 2-D kernel, (H, W); K is (Co, C, kh, kw). With
    ``data_format="channels_last"`` X is (N, H, W, C) and K is (kh, kw, C, Co). ``padding`` is an int,
    a pair, explicit ``((top, bottom), (left, right))``, ``"valid"`` or ``"same"``. ``algorithm`` is
    ``"auto"`` (the backend's measured rule), ``"native"``, ``"shift"`` or ``"gemm"`` (see
    :mod:`convlab.algorithms`).

    Example:
        >>> import convlab as cl
        >>> cl.conv2d([[0, 1, 2], [3, 4, 5], [6, 7, 8]], [[0, 1], [2, 3]]).tolist()
        [[19.0, 25.0], [37.0, 43.0]]
        >>> cl.conv2d(np.ones((1, 2, 5, 5)), np.ones((4, 2, 3, 3)), padding="same", stride=2).shape
        (1, 4, 3, 3)
    """
    try:  # a call like an earlier one reuses its plan: validation ran then, on the same types and shapes
        key = (
            backend or _by_type.get(type(X)) or default_backend_name(),  # a tensor's type names its backend
            type(X), X.shape, X.dtype, type(K), K.shape, K.dtype,
            None if bias is None else (type(bias), bias.shape, bias.dtype),
            stride if type(stride) is int else _freeze(stride),  # ints, the common case, are keys as they are
            padding if type(padding) is int else _freeze(padding),
            dilation if type(dilation) is int else _freeze(dilation),
            data_format, algorithm,
        )  # fmt: skip
        plan = _PLANS.get(key)
    except (AttributeError, TypeError):  # lists, or unhashable arguments: no plan
        key = plan = None
    if plan is None:
        algorithms.check_algorithm(algorithm, algorithms.CONV_ALGORITHMS)
        chosen, items = _inputs(backend, X=X, K=K, bias=bias)
        x_in, k_in, b_in = items["X"], items["K"], items["bias"]
        geometry = _geometry(
            x_in.shape, k_in.shape, None if b_in is None else b_in.shape, stride, padding, dilation, data_format
        )
        g = geometry
        bind = None
        if not (g.x_lifted or g.k_lifted or g.out != g.out4):
            bind = functools.partial(chosen.conv2d_bound, g.k4, g.stride, g.pads, g.dilation, g.channels_last)
        plan = _plan(chosen, geometry, (x_in, k_in, b_in), ("X", "K", "bias"), key, algorithm, bind)
    if plan.direct is not None:  # the backend's own 4-D tensors: its op, geometry bound, after the device check
        if plan.check_devices:
            device_of = plan.backend.device_of
            device = device_of(X)
            if device_of(K) != device or (bias is not None and device_of(bias) != device):
                _check_devices(plan.backend, (X, K, bias)[: len(plan.tensors)], ("X", "K", "bias"))
        return plan.direct(X, K, bias)
    if True in plan.place:  # NumPy data to move next to the tensors
        x, k, b = _materialize(plan, (X, K, bias), ("X", "K", "bias"))
    else:  # the common case, inlined
        if plan.check_devices:
            _same_device(plan, (X, K, bias), ("X", "K", "bias"))
        backend, dtype, convert = plan.backend, plan.dtype, plan.convert
        x = backend.asarray(X, dtype) if convert[0] else X
        k = backend.asarray(K, dtype) if convert[1] else K
        b = backend.asarray(bias, dtype) if convert[2] else bias
    return _run_conv(plan.backend, x, k, b, plan.geometry, _algorithm_for(plan, x))


def _conv(backend: Backend, x_in: _Input, k_in: _Input, b_in: Optional[_Input], geometry: ConvGeometry) -> Any:
    (x, k, b), dtype = _prepare(backend, (x_in, k_in, b_in), ("X", "K", "bias"))
    return _run_conv(backend, x, k, b, geometry, _choose(backend, geometry, dtype, _device(backend, (x_in, k_in))))


def _run_conv(backend: Backend, x: Any, k: Any, b: Any, geometry: ConvGeometry, algorithm: str = "native") -> Any:
    if geometry.x_lifted:
        x = backend.reshape(x, geometry.x4)
    if geometry.k_lifted:
        k = backend.reshape(k, geometry.k4)
    if algorithm != "native":
        run = backend.conv2d_shift if algorithm == "shift" else backend.conv2d_gemm
        y = run(x, k, b, geometry.stride, geometry.pads, geometry.dilation, geometry.channels_last)
    elif b is None:
        y = backend.conv2d(x, k, geometry.stride, geometry.pads, geometry.dilation, geometry.channels_last)
    else:
        y = backend.conv2d_bias(x, k, b, geometry.stride, geometry.pads, geometry.dilation, geometry.channels_last)
    if geometry.out != geometry.out4:
        y = backend.reshape(y, geometry.out)
    return y


def corr2d(X: Any, K: Any, *, backend: BackendArg = None) -> Any:
    """The book's 2-D cross-correlation (section 6.2.1): (H, W) * (kh, kw) -> (H - kh + 1, W - kw + 1).

    Example:
        >>> import convlab as cl
        >>> cl.corr2d([[0, 1, 2], [3, 4, 5], [6, 7, 8]], [[0, 1], [2, 3]]).tolist()
        [[19.0, 25.0], [37.0, 43.0]]
    """
    chosen, items = _inputs(backend, X=X, K=K)
    _require_rank("corr2d", items, X=2, K=2)
    x_in, k_in = items["X"], items["K"]
    return _conv(chosen, x_in, k_in, None, _geometry(x_in.shape, k_in.shape, None, 1, 0, 1, "channels_first"))


def corr2d_multi_in(X: Any, K: Any, *, backend: BackendArg = None) -> Any:
    """Cross-correlation summed over input channels (section 6.4.1): (C, H, W) * (C, kh, kw) -> (Ho, Wo).

    Example:
        >>> import convlab as cl
        >>> X = [[[0, 1, 2], [3, 4, 5], [6, 7, 8]], [[1, 2, 3], [4, 5, 6], [7, 8, 9]]]
        >>> K = [[[0, 1], [2, 3]], [[1, 2], [3, 4]]]
        >>> cl.corr2d_multi_in(X, K).tolist()
        [[56.0, 72.0], [104.0, 120.0]]
    """
    chosen, items = _inputs(backend, X=X, K=K)
    _require_rank("corr2d_multi_in", items, X=3, K=3)
    x_in, k_in = items["X"], items["K"]
    # K (C, kh, kw) is one output channel of a 4-D kernel
    geometry = _geometry(x_in.shape, (1,) + k_in.shape, None, 1, 0, 1, "channels_first")._replace(k_lifted=True)
    y = _conv(chosen, x_in, k_in, None, geometry)
    return chosen.reshape(y, geometry.out4[2:])


def corr2d_multi_in_out(X: Any, K: Any, *, backend: BackendArg = None) -> Any:
    """Multiple input and output channels (section 6.4.2): (C, H, W) * (Co, C, kh, kw) -> (Co, Ho, Wo).

    Example:
        >>> import convlab as cl
        >>> X = np.arange(18.0).reshape(2, 3, 3)
        >>> cl.corr2d_multi_in_out(X, np.ones((3, 2, 2, 2))).shape
        (3, 2, 2)
    """
    chosen, items = _inputs(backend, X=X, K=K)
    _require_rank("corr2d_multi_in_out", items, X=3, K=4)
    x_in, k_in = items["X"], items["K"]
    return _conv(chosen, x_in, k_in, None, _geometry(x_in.shape, k_in.shape, None, 1, 0, 1, "channels_first"))


def corr2d_multi_in_out_1x1(X: Any, K: Any, *, backend: BackendArg = None) -> Any:
    """A 1x1 convolution as one matrix product (section 6.4.3): (C, H, W) * (Co, C, 1, 1) -> (Co, H, W).

    Example:
        >>> import convlab as cl
        >>> cl.corr2d_multi_in_out_1x1(np.ones((3, 2, 2)), np.ones((2, 3, 1, 1))).tolist()
        [[[3.0, 3.0], [3.0, 3.0]], [[3.0, 3.0], [3.0, 3.0]]]
    """
    chosen, items = _inputs(backend, X=X, K=K)
    _require_rank("corr2d_multi_in_out_1x1", items, X=3, K=4)
    x_in, k_in = items["X"], items["K"]
    channels, height, width = x_in.shape
    if k_in.shape[1:] != (channels, 1, 1):
        raise ConvlabValueError(
            f"K must have shape (Co, {channels}, 1, 1) for X of shape {x_in.shape}; got K of shape {k_in.shape}"
        )
    if min(x_in.shape) < 1 or k_in.shape[0] < 1:
        raise ConvlabValueError(f"X and K must not be empty; got X of shape {x_in.shape}, K of shape {k_in.shape}")
    (x, k), _ = _prepare(chosen, (x_in, k_in), ("X", "K"))
    out_channels = k_in.shape[0]
    y = chosen.matmul(chosen.reshape(k, (out_channels, channels)), chosen.reshape(x, (channels, height * width)))
    return chosen.reshape(y, (out_channels, height, width))


def _require_rank(function: str, items: dict, **ranks: int) -> None:
    for name, rank in ranks.items():
        shape = items[name].shape
        if len(shape) != rank:
            shapes = ", ".join(f"{n} of shape {items[n].shape}" for n in ranks)
            raise ConvlabValueError(f"{function} needs a {rank}-D {name}; got {shapes}")


# -- gradients ------------------------------------------------------------------------------------


def conv2d_vjp(
    X: Any,
    K: Any,
    dY: Any,
    *,
    stride: IntOrPair = 1,
    padding: Padding = 0,
    dilation: IntOrPair = 1,
    data_format: str = "channels_first",
    backend: BackendArg = None,
) -> Tuple[Any, Any, Any]:
    """Gradients ``(dX, dK, dbias)`` of ``sum(conv2d(X, K, bias) * dY)``, in closed form.

    Both gradients are themselves cross-correlations, computed with the backend's own primitive:
    dK correlates the padded input with dY (stride and dilation swap roles); dX correlates dY,
    spread out by the stride and padded, with the flipped kernel (channels swapped).

    Example:
        >>> import convlab as cl
        >>> dX, dK, dbias = cl.conv2d_vjp(np.ones((3, 3)), np.ones((2, 2)), np.ones((2, 2)))
        >>> dX.tolist(), dK.tolist(), dbias.tolist()
        ([[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]], [[4.0, 4.0], [4.0, 4.0]], [4.0])
    """
    be, items = _inputs(backend, X=X, K=K, dY=dY)
    x_in, k_in, dy_in = items["X"], items["K"], items["dY"]
    geometry = _geometry(x_in.shape, k_in.shape, None, stride, padding, dilation, data_format)
    if dy_in.shape != geometry.out:
        raise ConvlabValueError(
            f"dY must have the shape of conv2d's output {geometry.out}; got dY of shape {dy_in.shape} "
            f"for X of shape {x_in.shape} and K of shape {k_in.shape}"
        )
    (x, k, dy), _ = _prepare(be, (x_in, k_in, dy_in), ("X", "K", "dY"))
    x = be.reshape(x, geometry.x4)
    k = be.reshape(k, geometry.k4)
    dy = be.reshape(dy, geometry.out4)
    if geometry.channels_last:  # the formulas below are written for NCHW / OIHW
        x, k, dy = be.transpose(x, (0, 3, 1, 2)), be.transpose(k, (3, 2, 0, 1)), be.transpose(dy, (0, 3, 1, 2))
    x4, k4, out4 = geometry.x4, geometry.k4, geometry.out4
    if geometry.channels_last:  # shapes in NCHW / OIHW from here on
        x4, k4, out4 = (x4[0], x4[3], x4[1], x4[2]), (k4[3], k4[2], k4[0], k4[1]), (out4[0], out4[3], out4[1], out4[2])
    batch, channels, height, width = x4
    out_channels, _, kernel_h, kernel_w = k4
    (sh, sw), (dh, dw), ((top, bottom), (left, right)) = geometry.stride, geometry.dilation, geometry.pads
    out_h, out_w = out4[2], out4[3]
    padded_h, padded_w = height + top + bottom, width + left + right

    # dK[o, c, i, j] = sum_{n, y, x} Xpad[n, c, i*dh + y*sh, j*dw + x*sw] * dY[n, o, y, x]:
    # a correlation with channels as the batch, the batch as channels, stride and dilation swapped.
    x_padded = be.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))
    dk = be.conv2d(
        be.transpose(x_padded, (1, 0, 2, 3)),
        be.transpose(dy, (1, 0, 2, 3)),
        (dh, dw),
        ((0, 0), (0, 0)),
        (sh, sw),
        False,
    )
    dk = be.transpose(dk[:, :, :kernel_h, :kernel_w], (1, 0, 2, 3))

    # dXpad = dY spread out by the stride, fully padded, correlated with the flipped, channel-swapped K.
    spread = dy
    if (sh, sw) != (1, 1):
        spread = be.reshape(dy, (batch, out_channels, out_h, 1, out_w, 1))
        spread = be.pad(spread, ((0, 0), (0, 0), (0, 0), (0, sh - 1), (0, 0), (0, sw - 1)))
        spread = be.reshape(spread, (batch, out_channels, out_h * sh, out_w * sw))
        spread = spread[:, :, : (out_h - 1) * sh + 1, : (out_w - 1) * sw + 1]
    spread_h, spread_w = (out_h - 1) * sh + 1, (out_w - 1) * sw + 1
    flipped = be.flip(be.transpose(k, (1, 0, 2, 3)), (2, 3))
    full_pads = (
        ((kernel_h - 1) * dh, padded_h - spread_h),
        ((kernel_w - 1) * dw, padded_w - spread_w),
    )
    dx = be.conv2d(spread, flipped, (1, 1), full_pads, (dh, dw), False)
    if (top, bottom, left, right) != (0, 0, 0, 0):
        dx = dx[:, :, top : top + height, left : left + width]
    dbias = be.sum(dy, (0, 2, 3))
    if geometry.channels_last:
        dx, dk = be.transpose(dx, (0, 2, 3, 1)), be.transpose(dk, (2, 3, 1, 0))
    return be.reshape(dx, x_in.shape), be.reshape(dk, k_in.shape), dbias


# -- pooling --------------------------------------------------------------------------------------


class PoolGeometry(NamedTuple):
    x4: Tuple[int, int, int, int]
    out: Tuple[int, ...]
    out4: Tuple[int, int, int, int]
    window: Tuple[int, int]
    stride: Tuple[int, int]
    pads: Pads
    mode: str
    channels_last: bool
    x_lifted: bool = False


@functools.lru_cache(maxsize=4096)
def _pool_geometry(x_shape, pool_size, mode, stride, padding, data_format) -> PoolGeometry:
    channels_last = check_data_format(data_format)
    if mode not in POOL_MODES:
        raise ConvlabValueError(f"mode must be one of {POOL_MODES}, got {mode!r}")
    window = to_pair("pool_size", pool_size)
    stride_pair = to_pair("stride", stride)
    rank = len(x_shape)
    layout = "(N, H, W, C)" if channels_last else "(N, C, H, W)"
    if rank not in (2, 3, 4):
        raise ConvlabValueError(f"X must be 2-D (H, W), 3-D or 4-D {layout}; got X of shape {x_shape}")
    if rank == 2:
        x4 = (1,) + x_shape + (1,) if channels_last else (1, 1) + x_shape
    else:
        x4 = (1,) * (4 - rank) + x_shape
    if min(x4) < 1:
        raise ConvlabValueError(f"X must not be empty; got X of shape {x_shape}")
    spatial = (x4[1], x4[2]) if channels_last else (x4[2], x4[3])
    pads = resolve_pads(padding, spatial, window, stride_pair, (1, 1))
    if any(max(pad) >= size for pad, size in zip(pads, window)):
        raise ConvlabValueError(
            f"padding must be smaller than pool_size on each side, so that every window sees a real pixel; "
            f"got padding {padding!r} (pads {pads}) with pool_size {window}"
        )
    out_h, out_w = output_hw(spatial, pads, window, stride_pair, (1, 1))
    if channels_last:
        out4 = (x4[0], out_h, out_w, x4[3])
    else:
        out4 = (x4[0], x4[1], out_h, out_w)
    out = (out_h, out_w) if rank == 2 else out4[4 - rank :]
    return PoolGeometry(x4, out, out4, window, stride_pair, pads, mode, channels_last, x4 != x_shape)


def pool2d(
    X: Any,
    pool_size: IntOrPair,
    mode: str = "max",
    stride: IntOrPair = 1,
    padding: Padding = 0,
    count_include_pad: bool = True,
    *,
    data_format: str = "channels_first",
    algorithm: str = "auto",
    backend: BackendArg = None,
) -> Any:
    """Max or average pooling over each channel (section 6.5); X is (H, W), (C, H, W) or (N, C, H, W).

    ``stride`` defaults to 1 as in the book's function (the layers default it to the window).
    Max pooling pads with -inf; average pooling counts padded zeros unless ``count_include_pad=False``.
    ``algorithm`` is ``"auto"`` (the backend's measured rule), ``"native"``, ``"shift"`` (shifted views) or
    ``"layout"`` (pool in the other memory layout; see :mod:`convlab.algorithms`).

    Example:
        >>> import convlab as cl
        >>> cl.pool2d([[0, 1, 2], [3, 4, 5], [6, 7, 8]], (2, 2)).tolist()
        [[4.0, 5.0], [7.0, 8.0]]
        >>> cl.pool2d([[0, 1, 2], [3, 4, 5], [6, 7, 8]], (2, 2), "avg").tolist()
        [[2.0, 3.0], [5.0, 6.0]]
    """
    try:
        key = (
            backend or _by_type.get(type(X)) or default_backend_name(), type(X), X.shape, X.dtype,
            _freeze(pool_size), mode, _freeze(stride), _freeze(padding), count_include_pad, data_format, algorithm,
        )  # fmt: skip
        plan = _PLANS.get(key) if type(count_include_pad) is bool else None  # NumPy bools: checked, not cached
    except (AttributeError, TypeError):
        key = plan = None
    if plan is None:
        algorithms.check_algorithm(algorithm, algorithms.POOL_ALGORITHMS)
        chosen, items = _inputs(backend, X=X)
        x_in = items["X"]
        if not isinstance(count_include_pad, (bool, np.bool_)):
            raise ConvlabTypeError(f"count_include_pad must be True or False, got {count_include_pad!r}")
        try:
            geometry = _pool_geometry(
                x_in.shape, _freeze(pool_size), mode, _freeze(stride), _freeze(padding), data_format
            )
        except TypeError as error:
            if isinstance(error, ConvlabTypeError):
                raise
            message = f"pool_size, mode, stride, padding and data_format have wrong types: {error}"
            raise ConvlabTypeError(message) from None
        g, bind = geometry, None
        if not (g.x_lifted or g.out != g.out4):
            options = (g.window, g.stride, g.pads, g.mode, bool(count_include_pad), g.channels_last)
            bind = functools.partial(chosen.pool2d_bound, *options)
        cacheable = type(count_include_pad) is bool
        plan = _plan(chosen, geometry, (x_in,), ("X",), key if cacheable else None, algorithm, bind)
    if plan.direct is not None:  # the backend's own 4-D tensor: its op with the geometry bound
        return plan.direct(X)
    (x,) = _materialize(plan, (X,), ("X",))
    return _run_pool(plan.backend, x, plan.geometry, bool(count_include_pad), _algorithm_for(plan, x))


def _run_pool(
    backend: Backend, x: Any, geometry: PoolGeometry, count_include_pad: bool, algorithm: str = "native"
) -> Any:
    if geometry.x_lifted:
        x = backend.reshape(x, geometry.x4)
    run = {"native": backend.pool2d, "shift": backend.pool2d_shift}.get(algorithm) or backend.pool2d_layout
    y = run(
        x, geometry.window, geometry.stride, geometry.pads, geometry.mode, count_include_pad, geometry.channels_last
    )
    if geometry.out != geometry.out4:
        y = backend.reshape(y, geometry.out)
    return y


# -- conv2d as a matrix product (exercise 3 of section 6.2) ---------------------------------------


def conv_matrix(
    K: Any,
    input_shape: Sequence[int],
    *,
    stride: IntOrPair = 1,
    padding: Padding = 0,
    dilation: IntOrPair = 1,
    backend: BackendArg = None,
) -> Any:
    """The matrix M with ``conv2d(X, K).ravel() == M @ X.ravel()`` for a 2-D K and X of ``input_shape``.

    M has shape (Ho * Wo, H * W); it is built from K with the backend's own ops, so it is
    differentiable with respect to K.

    Example:
        >>> import convlab as cl
        >>> cl.conv_matrix([[1, -1]], (1, 3)).tolist()
        [[1.0, -1.0, 0.0], [0.0, 1.0, -1.0]]
    """
    chosen, items = _inputs(backend, K=K)
    k_in = items["K"]
    input_shape = _shape_of("input_shape", input_shape)
    if len(input_shape) != 2 or len(k_in.shape) != 2:
        raise ConvlabValueError(
            f"conv_matrix needs a 2-D K and a 2-D input_shape; got K of shape {k_in.shape}, input_shape {input_shape}"
        )
    geometry = _geometry(input_shape, k_in.shape, None, stride, padding, dilation, "channels_first")
    (k,), dtype = _prepare(chosen, (k_in,), ("K",))
    selector = _selection_tensor(input_shape, k_in.shape, geometry.stride, geometry.pads, geometry.dilation)
    taps = k_in.shape[0] * k_in.shape[1]
    selector = chosen.asarray(selector.reshape(taps, -1), dtype)
    if k_in.is_tensor:
        selector = chosen.place_like(selector, k)
    matrix = chosen.matmul(chosen.reshape(k, (1, taps)), selector)
    out_h, out_w = geometry.out
    return chosen.reshape(matrix, (out_h * out_w, input_shape[0] * input_shape[1]))


@functools.lru_cache(maxsize=64)
def _selection_tensor(input_shape, kernel_shape, stride, pads, dilation) -> np.ndarray:
    """E[i, j, p, q] = 1 where output pixel p reads input pixel q through kernel tap (i, j)."""
    height, width = input_shape
    kernel_h, kernel_w = kernel_shape
    out_h, out_w = output_hw(input_shape, pads, kernel_shape, stride, dilation)
    selector = np.zeros((kernel_h, kernel_w, out_h * out_w, height * width))
    oy, ox = np.meshgrid(np.arange(out_h), np.arange(out_w), indexing="ij")
    for i in range(kernel_h):
        for j in range(kernel_w):
            rows = oy * stride[0] + i * dilation[0] - pads[0][0]
            cols = ox * stride[1] + j * dilation[1] - pads[1][0]
            inside = (rows >= 0) & (rows < height) & (cols >= 0) & (cols < width)
            selector[i, j, (oy * out_w + ox)[inside], (rows * width + cols)[inside]] = 1.0
    selector.setflags(write=False)
    return selector


def corr2d_matmul(
    X: Any,
    K: Any,
    *,
    stride: IntOrPair = 1,
    padding: Padding = 0,
    dilation: IntOrPair = 1,
    backend: BackendArg = None,
) -> Any:
    """2-D cross-correlation computed as one matrix product with :func:`conv_matrix`.

    Example:
        >>> import convlab as cl
        >>> cl.corr2d_matmul([[0, 1, 2], [3, 4, 5], [6, 7, 8]], [[0, 1], [2, 3]]).tolist()
        [[19.0, 25.0], [37.0, 43.0]]
    """
    chosen, items = _inputs(backend, X=X, K=K)
    _require_rank("corr2d_matmul", items, X=2, K=2)
    x_in, k_in = items["X"], items["K"]
    geometry = _geometry(x_in.shape, k_in.shape, None, stride, padding, dilation, "channels_first")
    (x, k), _ = _prepare(chosen, (x_in, k_in), ("X", "K"))
    matrix = conv_matrix(k, x_in.shape, stride=stride, padding=padding, dilation=dilation, backend=chosen)
    y = chosen.matmul(matrix, chosen.reshape(x, (x_in.shape[0] * x_in.shape[1], 1)))
    return chosen.reshape(y, geometry.out)
