"""One dispatcher for every public operation: a call's key selects a cached, ready-to-run plan.

A public operation is an :class:`Operation`: the names of its tensor inputs and a ``plan`` function that,
given a :class:`Call` (the chosen backend and the described inputs), validates the call and returns a
closure ``run(*values)``. :func:`dispatch` computes the key of a call (the operation, ``backend=``, each
input's type, shape and dtype, and the other arguments), runs the cached closure for it, and builds one
on a miss. Validation, dtype promotion, conversion, lifting to 4-D and the choice of algorithm happen
once per key; a repeated call costs the key, one dictionary look-up and the closure.

Backends with devices (``Backend.device_of``) get one plan per device: "auto" chooses per device (the
native op on accelerators, the measured rules on the CPU).
"""

from __future__ import annotations

import functools
import warnings
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np

from convlab import algorithms, autotune, registry
from convlab.arguments import freeze
from convlab.backend import Backend
from convlab.errors import ConvlabTypeError, ConvlabValueError
from convlab.geometry import ConvGeometry, PoolGeometry

BackendArg = Union[str, Backend, None]
_NEUTRAL = (np.ndarray, np.generic, list, tuple, int, float, bool)
_FLOAT_NAMES = {np.dtype(np.float32): "float32", np.dtype(np.float64): "float64"}

#: the Backend method that runs each ``algorithm=`` of conv2d and pool2d
CONV_METHODS = {"native": "conv2d", "shift": "conv2d_shift", "gemm": "conv2d_gemm"}
POOL_METHODS = {"native": "pool2d", "shift": "pool2d_shift", "layout": "pool2d_layout"}


# -- inputs ---------------------------------------------------------------------------------------


class Input(NamedTuple):
    """One input as the core sees it, before any framework code runs."""

    value: Any  # a NumPy array for neutral inputs (lists, scalars), else the tensor as given
    shape: Tuple[Any, ...]
    dtype: str  # the float dtype it computes in on its own: "float32" or "float64"
    is_tensor: bool  # one of the backend's own tensors


def describe(backend: Backend, name: str, x: Any) -> Input:
    """Shape and compute dtype of one input; lists and scalars become NumPy arrays."""
    if type(x) is np.ndarray and x.dtype in _FLOAT_NAMES:  # the common case, kept cheap
        return Input(x, x.shape, _FLOAT_NAMES[x.dtype], False)
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
        return Input(array, tuple(array.shape), dtype, False)
    dtype_name = backend.dtype_name(x)
    try:
        numpy_dtype = np.dtype(dtype_name)
        kind, itemsize = str(numpy_dtype.kind), numpy_dtype.itemsize
    except TypeError:  # bfloat16 and friends NumPy does not know
        kind, itemsize = "?", 0
    try:
        shape = tuple(x.shape)
    except ValueError:  # TensorFlow: a symbolic tensor of unknown rank
        raise ConvlabValueError(f"{name} has an unknown rank; convlab needs static shapes") from None
    return Input(x, shape, _compute_dtype(name, kind, itemsize, dtype_name, False), True)


def _compute_dtype(name: str, kind: str, itemsize: int, dtype_name: str, from_list: bool) -> str:
    if kind in "biu" or (from_list and kind == "f"):
        return "float32"  # integers, bools and Python lists compute in float32 (DESIGN.md section 3)
    if kind == "f" and itemsize in (4, 8):
        return "float32" if itemsize == 4 else "float64"
    raise ConvlabTypeError(
        f"{name} has dtype {dtype_name}; convlab computes in float32 or float64 "
        f"(integer and bool inputs are promoted to float32)"
    )


def _static(name: str, shape: Tuple[Any, ...], allow_unknown_batch: bool) -> None:
    dims = shape[1:] if allow_unknown_batch and len(shape) == 4 else shape
    if not all(type(n) is int or isinstance(n, (int, np.integer)) for n in dims):
        raise ConvlabValueError(
            f"{name} has unknown dimensions {shape}; convlab needs static shapes "
            f"(inside tf.function: an input_signature with full shapes, or none; "
            f"a dask array: compute its chunk sizes first with .compute_chunk_sizes())"
        )


# -- one call -------------------------------------------------------------------------------------


class Call:
    """A call being planned: the backend, its described inputs, and what they compute in."""

    def __init__(
        self,
        backend: Backend,
        names: Sequence[str],
        items: Sequence[Optional[Input]],
        options: tuple,
        values: Optional[Sequence[Any]] = None,
    ):
        self.backend = backend
        self.names = tuple(names)
        self.items = tuple(items)
        self.options = options
        self.dtype = "float64" if any(item is not None and item.dtype == "float64" for item in items) else "float32"
        if self.dtype == "float64":
            backend.check_float64()
        tensors = [(i, item.value) for i, item in enumerate(items) if item is not None and item.is_tensor]
        self.tensors = tuple(i for i, _ in tensors)
        self.has_devices = type(backend).device_of is not Backend.device_of
        self.device = backend.device_of(tensors[0][1]) if tensors else None
        if self.has_devices and len(tensors) > 1:
            _check_devices(backend, [value for _, value in tensors], [self.names[i] for i, _ in tensors])
        # asarray returns its input when nothing needs converting; anything else (NumPy data, another dtype,
        # a legacy array type the backend rewraps) is converted on every call
        given = [None if item is None else item.value for item in items] if values is None else list(values)
        self.convert = tuple(
            item is not None and (item.value is not value or backend.asarray(item.value, self.dtype) is not item.value)
            for item, value in zip(items, given)
        )  # a list or scalar is described as a NumPy array: every call converts what the caller passed
        follows = bool(self.tensors) and type(backend).place_like is not Backend.place_like
        self.place = tuple(follows and item is not None and not item.is_tensor for item in items)

    def __getitem__(self, name: str) -> Input:
        item = self.items[self.names.index(name)]
        assert item is not None
        return item

    def shape(self, name: str) -> Tuple[int, ...]:
        item = self.items[self.names.index(name)]
        return None if item is None else item.shape  # type: ignore[return-value]

    @property
    def as_given(self) -> bool:
        """Every input is already the backend's tensor of the compute dtype: nothing to convert or move."""
        return not any(self.convert) and not any(self.place)

    def converter(self) -> Callable[[Sequence[Any]], List[Any]]:
        """``convert(values)``: the inputs of one call as the backend's tensors of the call's dtype."""
        backend, dtype, convert, place, tensors = self.backend, self.dtype, self.convert, self.place, self.tensors

        def run(values: Sequence[Any]) -> List[Any]:
            out = [backend.asarray(v, dtype) if c else v for v, c in zip(values, convert)]
            if True in place:  # NumPy data joins the framework tensors on their device
                like = values[tensors[0]]
                out = [backend.place_like(v, like) if p else v for v, p in zip(out, place)]
            return out

        return run

    # -- algorithms ---------------------------------------------------------------------------------
    def choose(self, geometry: Union[ConvGeometry, PoolGeometry], algorithm: str) -> str:
        """The formulation to run; "auto" follows the backend's measured rules for this device, or, with
        autotuning on (:mod:`convlab.autotune`), the fastest formulation on this call's own data."""
        if algorithm != "auto":
            return algorithm
        if autotune.autotune_enabled():
            tuned = self._autotune(geometry)
            if tuned is not None:
                return tuned
        backend = self.backend
        if isinstance(geometry, ConvGeometry):
            return algorithms.choose(
                backend, backend.conv_rules, algorithms.conv_shape(geometry, self.dtype), self.device
            )
        return algorithms.choose(backend, backend.pool_rules, algorithms.pool_shape(geometry, self.dtype), self.device)

    def _autotune(self, geometry: Union[ConvGeometry, PoolGeometry]) -> Optional[str]:
        values = [None if item is None else item.value for item in self.items]
        if not all(self.backend.is_concrete(v) for v in values if v is not None):
            return None  # traced (jit): nothing to time
        conv = isinstance(geometry, ConvGeometry)
        methods = CONV_METHODS if conv else POOL_METHODS
        build = self.conv if conv else self.pool
        arguments = values[: 3 if conv else 1]
        candidates: Dict[str, Callable[[], Any]] = {}
        for name in self.applicable(geometry):
            candidates[name] = functools.partial(build(geometry, name), *arguments)  # type: ignore[arg-type]
        key = autotune.signature(self.backend, geometry, f"{self.dtype}|{self.device}")
        return autotune.choose(key, candidates, self.backend.synchronize, tuple(methods))

    def applicable(self, geometry: Union[ConvGeometry, PoolGeometry]) -> Tuple[str, ...]:
        """The formulations that compute this geometry (every registered one, but winograd: 3x3, stride 1)."""
        methods = CONV_METHODS if isinstance(geometry, ConvGeometry) else POOL_METHODS
        return tuple(methods)

    def conv(self, geometry: ConvGeometry, algorithm: str = "auto", out: Optional[Tuple[int, ...]] = None):
        """``run(x, k, bias=None)``: the correlation of ``geometry``, lifted, with ``algorithm``, shaped ``out``."""
        backend, algorithm, g = self.backend, self.choose(geometry, algorithm), geometry
        out = g.out if out is None else out
        primitive = backend.conv2d_bound(g) if algorithm == "native" else _bind(backend, CONV_METHODS[algorithm], g)
        if g.is_4d and out == g.out4 and self.as_given:
            return primitive  # the backend's own 4-D tensors: its op, geometry bound
        reshape, convert = backend.reshape, (None if self.as_given else self.converter())
        x_lifted, k_lifted, reshaped, arity = g.x_lifted, g.k_lifted, out != g.out4, len(self.items)

        def run(x: Any, k: Any, bias: Any = None) -> Any:
            if convert is not None:
                tensors = convert((x, k, bias)[:arity])
                x, k, bias = tensors[0], tensors[1], tensors[2] if arity > 2 else None
            y = primitive(reshape(x, g.x4) if x_lifted else x, reshape(k, g.k4) if k_lifted else k, bias)
            return reshape(y, out) if reshaped else y

        return run if convert is not None else backend.fuse(run)

    def pool(self, geometry: PoolGeometry, algorithm: str = "auto"):
        """``run(x)``: the pooling of ``geometry``, lifted, with ``algorithm``."""
        backend, algorithm, g = self.backend, self.choose(geometry, algorithm), geometry
        primitive = backend.pool2d_bound(g) if algorithm == "native" else _bind(backend, POOL_METHODS[algorithm], g)
        if g.is_4d and self.as_given:
            return primitive
        reshape, convert = backend.reshape, (None if self.as_given else self.converter())

        def run(x: Any) -> Any:
            if convert is not None:
                (x,) = convert((x,))
            y = primitive(reshape(x, g.x4) if g.x_lifted else x)
            return y if g.out == g.out4 else reshape(y, g.out)

        return run if convert is not None else backend.fuse(run)


def _bind(backend: Backend, method: str, geometry: Any) -> Callable[..., Any]:
    """A formulation with its geometry fixed: ``run(x, k, bias)`` for convolution, ``run(x)`` for pooling."""
    formulation = getattr(backend, method)

    def run(*tensors: Any) -> Any:
        return formulation(*tensors, geometry)

    return run


def _check_devices(backend: Backend, values: Sequence[Any], names: Sequence[str]) -> None:
    devices: Dict[Any, str] = {}
    for name, value in zip(names, values):
        device = backend.device_of(value)
        if device is not None:  # None: this tensor follows the computation wherever it runs
            devices.setdefault(device, name)
    if len(devices) > 1:
        where = ", ".join(f"{name} on {device}" for device, name in devices.items())
        raise ConvlabValueError(f"inputs are on different devices ({where}); move them to one device first")


# -- operations and the plan cache ----------------------------------------------------------------


class Operation(NamedTuple):
    """A public operation: its tensor inputs' names and ``plan(call) -> run``."""

    name: str
    inputs: Tuple[str, ...]
    plan: Callable[[Call], Callable[..., Any]]
    optional: Tuple[str, ...] = ()  # inputs that may be None (bias)


class _Plan(NamedTuple):
    run: Callable[..., Any]
    tensors: Tuple[int, ...]  # the inputs whose devices every call checks (none where devices do not matter)
    device: Any  # the device the plan was made for
    device_of: Callable[[Any], Any]
    probe: Optional[str]  # an attribute that equals ``on_device`` on the plan's device (Backend.device_probe)
    on_device: Any


_PLANS: Dict[Any, _Plan] = {}
registry.on_change(_PLANS.clear)  # a backend registered or replaced: plans that named the old one go
_cached_owner = registry.cached_owner


def clear_plans() -> None:
    """Forget every plan (the next call of each signature validates and chooses again)."""
    _PLANS.clear()


def _key_part(value: Any) -> Any:
    """An option as a type-exact key: 1, True and 1.0 are different keys."""
    if type(value) is int or type(value) is str or value is None:
        return value
    if type(value) is bool:
        return ("bool", value)
    return freeze(value)


def dispatch(op: Operation, backend: BackendArg, values: tuple, options: tuple) -> Any:
    """Run ``op`` on ``values`` (its tensor inputs) with ``options`` (everything else, hashable or not)."""
    key: Any = [op.name, backend]  # flat: each input's type, shape and dtype, the options, the owner last
    try:
        for value in values:
            if value is None:
                key.append(None)
            else:
                key += (type(value), value.shape, value.dtype)
        for option in options:
            key.append(option if type(option) is int or type(option) is str else _key_part(option))
        if backend is None:  # _owner, inlined (one call fewer on every call): neutral inputs take the default
            owner = _cached_owner(type(values[0]))
            key.append(owner if owner is not None else registry.default_backend_name())
        key = tuple(key)
        plan = _PLANS[key]
    except KeyError:  # built outside the handler: a validation error must not chain a KeyError
        plan = None
    except (AttributeError, TypeError):  # lists, or unhashable arguments: no plan is kept
        key = plan = None
    if plan is None:
        plan = _build(op, backend, values, options, key)
    elif plan.tensors:  # every tensor on the plan's device, or a plan for theirs ("auto" chooses per device)
        probe, on_device = plan.probe, plan.on_device
        for i in plan.tensors:
            if (getattr(values[i], probe) if probe else plan.device_of(values[i])) != on_device:
                plan = _for_devices(op, backend, values, options, key, plan)
                break
    return plan.run(*values)


def _for_devices(op: Operation, backend: BackendArg, values: tuple, options: tuple, key: Any, plan: _Plan) -> _Plan:
    devices = {plan.device_of(values[i]) for i in plan.tensors} - {None}
    if len(devices) > 1:
        backend_object = registry.backend_of(values[plan.tensors[0]])
        names = [op.inputs[i] for i in plan.tensors]
        _check_devices(backend_object, [values[i] for i in plan.tensors], names)  # type: ignore[arg-type]
    (device,) = devices or {None}
    if device == plan.device:
        return plan
    return _PLANS.get(key + (device,)) or _build(op, backend, values, options, key + (device,))


def _owner(value: Any) -> Any:
    """What, besides the inputs' types, decides the backend: the default for neutral inputs."""
    owner = registry.cached_owner(type(value))
    return owner if owner is not None else registry.default_backend_name()


def _build(op: Operation, backend: BackendArg, values: tuple, options: tuple, key: Any) -> _Plan:
    chosen, items = inputs(backend, op.inputs, values)
    call = Call(chosen, op.inputs, items, options, values)
    run = op.plan(call)
    tensors = call.tensors if call.has_devices else ()
    probe, on_device = (tensors and chosen.device_probe(call.device)) or (None, call.device)
    plan = _Plan(run, tensors, call.device, chosen.device_of, probe, on_device)
    if key is not None:
        if len(_PLANS) > 4096:
            _PLANS.clear()
        if backend is None:  # the key as later calls compute it, now that the tensor type's owner is known
            position = 2 + sum(1 if value is None else 3 for value in values) + len(options)
            key = key[:position] + (_owner(values[0]),) + key[position + 1 :]  # a device may follow it
        _PLANS[key] = plan
    return plan


def inputs(
    backend: BackendArg, names: Sequence[str], values: Sequence[Any], allow_unknown_batch: bool = False
) -> Tuple[Backend, List[Optional[Input]]]:
    """Select the backend for a call (DESIGN.md section 2) and describe each input (None stays None)."""
    chosen = registry.select_backend(tuple(values), tuple(names), backend)
    items: List[Optional[Input]] = []
    for name, value in zip(names, values):
        item = None if value is None else describe(chosen, name, value)
        if item is not None:
            _static(name, item.shape, allow_unknown_batch)
        items.append(item)
    return chosen, items


def prepare(backend: BackendArg, allow_unknown_batch: bool = False, **named: Any) -> Tuple[List[Any], str]:
    """The inputs as the backend's tensors of one float dtype (float64 if any is float64), and that dtype.

    For layers and other code that validates a call's geometry itself (:mod:`convlab.geometry`) and then
    runs a backend primitive; a 4-D input may have an unknown batch size when ``allow_unknown_batch``.

    Example:
        >>> (x, k), dtype = prepare("numpy", X=[[1, 2], [3, 4]], K=np.ones((1, 1)))
        >>> x.dtype, k.dtype, dtype
        (dtype('float32'), dtype('float32'), 'float32')
    """
    names, values = tuple(named), tuple(named.values())
    chosen, items = inputs(backend, names, values, allow_unknown_batch)
    call = Call(chosen, names, items, ())
    return call.converter()([None if item is None else item.value for item in items]), call.dtype
