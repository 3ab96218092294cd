"""The seam between convlab's core and a framework: the :class:`Backend` base class.

A backend is a small class whose methods are one or two lines of its
framework's own ops. The core has already validated every argument, resolved
padding to explicit ``((top, bottom), (left, right))`` pairs in a geometry object
(:mod:`convlab.geometry`), converted inputs to the backend's tensors of one float
dtype and lifted them to 4-D, so a primitive never has to check anything. Frameworks are imported inside the
methods (or in ``__init__``), never at module import, so that registering a
backend costs nothing.

To plug in a new framework, subclass :class:`Backend`, implement the methods
that raise ``NotImplementedError`` and register the class under the
``convlab.backends`` entry-point group or with :func:`convlab.register_backend`.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Optional, Sequence, Tuple

import numpy as np

from convlab import algorithms
from convlab.geometry import ConvGeometry, PoolGeometry

Pair = Tuple[int, int]
Pads = Tuple[Pair, Pair]


class Backend:
    #: the name users pass as ``backend=``
    name: str = ""
    #: top-level modules whose tensors this backend owns (checked in ``sys.modules`` before ``is_tensor``)
    framework_modules: Tuple[str, ...] = ()
    #: what to ``pip install`` to get this backend
    package: str = ""
    #: whether :meth:`value_and_grad` works (NumPy has no automatic differentiation)
    has_autodiff: bool = True
    #: what ``algorithm="auto"`` runs on the CPU: ``(description, predicate of a ConvShape, algorithm)``
    #: rows, first match wins, no match is ``"native"`` (see :mod:`convlab.algorithms`)
    conv_rules: Tuple[Tuple[str, Callable[[algorithms.ConvShape], bool], str], ...] = ()
    #: the same for pooling, predicates of a PoolShape
    pool_rules: Tuple[Tuple[str, Callable[[algorithms.PoolShape], bool], str], ...] = ()

    # -- tensors ----------------------------------------------------------------------------
    def version(self) -> str:
        """The framework's version string."""
        raise NotImplementedError

    def is_tensor(self, x: Any) -> bool:
        """True when ``x`` is one of this framework's tensors (or variables, parameters, tracers)."""
        raise NotImplementedError

    def dtype_name(self, x: Any) -> str:
        """NumPy-style dtype name of a tensor of this framework: ``"float32"``, ``"int64"``, ``"bool"``..."""
        return np.dtype(x.dtype).name

    def device_of(self, x: Any) -> Any:
        """Where a tensor lives (for the mixed-device check); None if the framework has one device."""
        return None

    def device_probe(self, device: Any) -> Optional[Tuple[str, Any]]:
        """``(attribute, value)``: a tensor is on ``device`` (from :meth:`device_of`) when its ``attribute``
        equals ``value``. Every call of a plan checks each tensor's device; a framework with an attribute
        cheaper to read than its device (torch's ``is_cpu``) names it here. None: compare :meth:`device_of`."""
        return None

    def is_accelerator(self, device: Any) -> bool:
        """True for a device (from :meth:`device_of`) where "auto" keeps the native op (cuDNN and friends)."""
        return False

    def place_like(self, x: Any, like: Any) -> Any:
        """``x`` (converted from NumPy data) on the device of ``like``, one of the call's tensors."""
        return x

    def constant(self, values: Sequence[float], like: Any, shape: Sequence[int]) -> Any:
        """Python numbers (a divisor's counts) as a tensor of ``shape`` with ``like``'s dtype and device."""
        array = np.asarray(values, dtype=self.dtype_name(like)).reshape(tuple(shape))
        return self.place_like(self.asarray(array, self.dtype_name(like)), like)

    def is_concrete(self, x: Any) -> bool:
        """False for a value being traced (JAX inside ``jit``): there is nothing to time (autotuning)."""
        return True

    def synchronize(self, y: Any) -> Any:
        """Wait until ``y`` is computed (asynchronous frameworks); autotuning times through it."""
        return self.to_numpy(y)

    def check_float64(self) -> None:
        """Raise a ConvlabTypeError when this backend cannot compute in float64 right now."""

    def asarray(self, x: Any, dtype: str) -> Any:
        """A tensor of this framework with ``dtype`` from a NumPy array or one of its own tensors."""
        raise NotImplementedError

    def to_numpy(self, x: Any) -> np.ndarray:
        """Copy a tensor to a NumPy array (tests and bundles only; no op uses this)."""
        raise NotImplementedError

    def fuse(self, run: Callable[..., Any]) -> Callable[..., Any]:
        """A plan's closure of several seam ops (reshapes around the op, a matrix product) as one compiled
        call, where the framework has one (JAX: ``jax.jit``); it runs once per call signature. Default: as is."""
        return run

    # -- array plumbing used by the core (reshapes, the analytic gradients) -----------------
    def reshape(self, x: Any, shape: Sequence[int]) -> Any:
        return x.reshape(tuple(shape))

    def transpose(self, x: Any, axes: Sequence[int]) -> Any:
        raise NotImplementedError

    def flip(self, x: Any, axes: Sequence[int]) -> Any:
        raise NotImplementedError

    def pad(self, x: Any, pads: Sequence[Pair], value: float = 0.0) -> Any:
        """Constant padding; ``pads`` has one ``(before, after)`` pair per axis."""
        raise NotImplementedError

    def sum(self, x: Any, axes: Sequence[int]) -> Any:
        raise NotImplementedError

    def matmul(self, a: Any, b: Any) -> Any:
        return a @ b

    def maximum(self, a: Any, b: Any) -> Any:
        """Elementwise maximum (pool2d's "shift"); by default from the array-API namespace of ``a``."""
        namespace = getattr(a, "__array_namespace__", None)  # NumPy < 2 arrays have none
        return namespace().maximum(a, b) if namespace is not None else np.maximum(a, b)

    # -- compute primitives: 4-D tensors in the geometry's layout (see convlab.geometry) ---------------
    def conv2d(self, x: Any, k: Any, bias: Any, geometry: ConvGeometry) -> Any:
        """Cross-correlation of a 4-D input with a 4-D kernel, plus ``bias`` (Co,) unless it is None.

        channels_first: x is NCHW and k is OIHW; channels_last: x is NHWC and k is HWIO. ``geometry``
        carries the resolved pads, stride and dilation.
        """
        raise NotImplementedError

    def pool2d(self, x: Any, geometry: PoolGeometry) -> Any:
        """Max (padding with -inf) or average pooling of a 4-D input (divided by ``geometry.divisor``)."""
        raise NotImplementedError

    # -- repeated calls: the native op with its geometry fixed -------------------------------
    def conv2d_bound(self, geometry: ConvGeometry) -> Callable[[Any, Any, Any], Any]:
        """``run(x, k, bias)``: :meth:`conv2d` for one geometry.

        The core asks once per call signature and runs it on every later call with 4-D tensors that need no
        conversion; override it to bind the framework's op directly where the microseconds per call count.
        """
        return functools.partial(self._conv2d_as_bound, geometry=geometry)

    def pool2d_bound(self, geometry: PoolGeometry) -> Callable[[Any], Any]:
        """``run(x)``: :meth:`pool2d` for one geometry (see :meth:`conv2d_bound`)."""
        return functools.partial(self.pool2d, geometry=geometry)

    def _conv2d_as_bound(self, x: Any, k: Any, bias: Any, geometry: ConvGeometry) -> Any:
        return self.conv2d(x, k, bias, geometry)

    # -- alternative formulations (``algorithm=``); generic versions in convlab.algorithms --------
    def conv2d_shift(self, x: Any, k: Any, bias: Any, geometry: ConvGeometry) -> Any:
        """Shift-and-accumulate over kernel offsets; ``bias`` may be None."""
        return algorithms.conv2d_shift(self, x, k, bias, geometry)

    def conv2d_gemm(self, x: Any, k: Any, bias: Any, geometry: ConvGeometry) -> Any:
        """One matrix product per kernel offset, accumulated; ``bias`` may be None."""
        return algorithms.conv2d_gemm(self, x, k, bias, geometry)

    def pool2d_shift(self, x: Any, geometry: PoolGeometry) -> Any:
        """:meth:`pool2d` as a maximum or sum of shifted views."""
        return algorithms.pool2d_shift(self, x, geometry)

    def pool2d_layout(self, x: Any, geometry: PoolGeometry) -> Any:
        """:meth:`pool2d` computed in the other memory layout."""
        return algorithms.pool2d_layout(self, x, geometry)

    def equivalence_settings(self) -> dict:
        """Make results reproducible for the equivalence checks (TF32 off, deterministic algorithms on)
        and return the settings in force, which the result bundles record."""
        return {}

    # -- training and layers ----------------------------------------------------------------
    def value_and_grad(self, fn: Callable[[list], Any]) -> Callable[[list], Tuple[Any, list]]:
        """A function of ``params`` returning ``(fn(params), gradients of fn w.r.t. each param)``.

        ``fn`` maps a list of tensors to a scalar tensor; the returned function is called once per
        training step, so a framework may compile it (JAX jits it).
        """
        raise NotImplementedError

    def conv2d_layer(self, config: dict, weight: np.ndarray, bias: Optional[np.ndarray]) -> Any:
        """A native trainable layer; ``config`` holds the keyword arguments of :func:`convlab.conv2d`."""
        raise NotImplementedError

    def pool2d_layer(self, config: dict) -> Any:
        """A native pooling layer; ``config`` holds the keyword arguments of :func:`convlab.pool2d`."""
        raise NotImplementedError
