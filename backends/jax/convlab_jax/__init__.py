"""convlab's JAX backend: each primitive is one jitted ``jax.lax`` op, so it works under jit, vmap and grad.

The configuration reaches the kernels as a static argument, the call's geometry object
(:mod:`convlab.geometry`: frozen and hashable): each geometry compiles once, and an eager call then takes
JAX's C++ fast path for jitted functions.
``Conv2D`` is a pytree (weight and bias are its leaves), so ``jax.grad`` and ``jax.tree_util.tree_map``
train it like any JAX model. Importing this module does not import JAX; creating the backend does.

Example:
    >>> import jax.numpy as jnp
    >>> import convlab as cl
    >>> cl.corr2d(jnp.arange(9.0).reshape(3, 3), jnp.array([[0.0, 1.0], [2.0, 3.0]])).tolist()
    [[19.0, 25.0], [37.0, 43.0]]
"""

from __future__ import annotations

import functools
from types import SimpleNamespace
from typing import Any, Callable, Optional, Sequence, Tuple

import numpy as np

import convlab
from convlab import algorithms
from convlab.backend import Backend, Pair
from convlab.errors import ConvlabTypeError
from convlab.geometry import ConvGeometry, PoolGeometry
from convlab.ops import conv2d, pool2d

__all__ = ["JaxBackend", "JaxConv2D", "JaxPool2D"]

#: dimension numbers (input, kernel, output) of each data format
_CHANNELS_FIRST = ("NCHW", "OIHW", "NCHW")
_CHANNELS_LAST = ("NHWC", "HWIO", "NHWC")
_DTYPES = {"float32": np.dtype("float32"), "float64": np.dtype("float64")}
_DTYPE_NAMES = {dtype: name for name, dtype in _DTYPES.items()}


class JaxBackend(Backend):
    """convlab on JAX: ``jax.Array`` inputs (and tracers inside jit, vmap and grad) run here.

    Example:
        >>> import jax
        >>> import jax.numpy as jnp
        >>> import convlab as cl
        >>> X = jnp.ones((1, 1, 6, 8))
        >>> jax.jit(lambda X: cl.conv2d(X, jnp.ones((2, 1, 3, 3)), padding="same", stride=2))(X).shape
        (1, 2, 3, 4)
    """

    name = "jax"
    framework_modules = ("jax", "jaxlib")  # arrays are jaxlib ArrayImpl, tracers live in jax
    package = "convlab-jax"
    #: "auto" rules, from benchmarks/algorithms.py (benchmarks/ALGORITHMS.md): XLA's CPU convolution is slow for
    #: few channels (one 2048^2 channel, 3x3: 364 ms) where the fused shift-and-accumulate takes 9.6 ms;
    #: at C16->16 and for the multi-channel case the native op wins.
    conv_rules = (("at most 24 channel pairs", lambda s: s.channel_pairs <= 24, "shift"),)
    #: pooling (one thread, 3x3 windows): XLA's reduce_window is 2-5x slower than the fused maximum / sum of
    #: shifted views at every measured size (32^2 to 2048^2, C4 128^2, N=8 C64 56^2); larger windows unmeasured
    pool_rules = (("windows of at most 9 pixels", lambda s: s.window[0] * s.window[1] <= 9, "shift"),)

    def __init__(self) -> None:
        import jax  # here, not at module import: registering the backend must not load JAX

        self._jax = jax
        self._ops = _jitted_ops(self)
        # why: eagerly, the generic formulation is some twenty dispatches; jitted whole, XLA fuses it into one loop
        self._shift = jax.jit(functools.partial(algorithms.conv2d_shift, self), static_argnums=(3,))
        self._pool_shift = _pool_shift(self, self._ops.pool2d)
        if jax.default_backend() != "cpu":  # the rules were measured on the CPU; on GPU and TPU "auto" stays native
            self.conv_rules = self.pool_rules = ()
        _register_pytrees()

    # -- tensors ------------------------------------------------------------------------------
    def version(self) -> str:
        return self._jax.__version__

    def is_tensor(self, x: Any) -> bool:
        return isinstance(x, self._jax.Array)  # also true for tracers

    def check_float64(self) -> None:
        if not self._jax.config.jax_enable_x64:
            raise ConvlabTypeError(
                "float64 on the jax backend needs 64-bit mode, which is off: enable jax_enable_x64 (set "
                "JAX_ENABLE_X64=1, or call jax.config.update('jax_enable_x64', True) at start-up), or pass float32 "
                "inputs; convlab does not silently downcast float64 to float32"
            )

    def dtype_name(self, x: Any) -> str:
        return _DTYPE_NAMES.get(x.dtype) or np.dtype(x.dtype).name  # a dict hit instead of numpy's name property

    def asarray(self, x: Any, dtype: str) -> Any:
        if dtype == "float64":
            self.check_float64()  # without x64, JAX would hand back float32
        if isinstance(x, self._jax.Array):
            return x if x.dtype == _DTYPES.get(dtype, dtype) else self._ops.astype(x, dtype)
        # NumPy converts first: jnp.asarray(x, dtype=...) costs twice as much, and jax.device_put would alias
        # x's memory on CPU (a later write to x would show through).
        return self._jax.numpy.asarray(np.asarray(x, dtype=dtype))

    def place_like(self, x: Any, like: Any) -> Any:
        # Uncommitted arrays follow committed ones into a computation, but a result computed from NumPy data
        # alone (conv2d_vjp's dX from dY and K) would stay on the default device: commit x next to like.
        if isinstance(like, self._jax.core.Tracer) or not like.committed:
            return x
        return self._jax.device_put(x, like.sharding)

    def to_numpy(self, x: Any) -> np.ndarray:
        return np.asarray(x)

    def equivalence_settings(self) -> dict:
        # Nothing to switch: every conv and matmul already asks for HIGHEST precision (no TF32 or bfloat16 passes).
        return {
            "precision": "HIGHEST",
            "jax_enable_x64": bool(self._jax.config.jax_enable_x64),
            "platform": self._jax.default_backend(),
        }

    # -- array plumbing -------------------------------------------------------------------------
    def reshape(self, x: Any, shape: Sequence[int]) -> Any:
        return self._ops.reshape(x, tuple(shape))

    def transpose(self, x: Any, axes: Sequence[int]) -> Any:
        return self._ops.transpose(x, tuple(axes))

    def flip(self, x: Any, axes: Sequence[int]) -> Any:
        return self._ops.flip(x, tuple(axes))

    def pad(self, x: Any, pads: Sequence[Pair], value: float = 0.0) -> Any:
        if not any(before or after for before, after in pads):
            return x
        return self._ops.pad(x, tuple((int(before), int(after)) for before, after in pads), float(value))

    def sum(self, x: Any, axes: Sequence[int]) -> Any:
        return self._ops.sum(x, tuple(axes))

    def matmul(self, a: Any, b: Any) -> Any:
        return self._ops.matmul(a, b)

    # -- compute primitives: the geometry is the jitted kernels' static argument ---------------------
    def conv2d(self, x: Any, k: Any, bias: Any, geometry: ConvGeometry) -> Any:
        return self._ops.conv2d(x, k, bias, geometry)  # one call, the bias add fused

    def conv2d_bound(self, geometry: ConvGeometry) -> Callable[[Any, Any, Any], Any]:
        run = self._ops.conv2d  # the jitted op, called positionally (JAX's C++ fast path), no method in between
        return lambda x, k, bias: run(x, k, bias, geometry)

    def conv2d_shift(self, x: Any, k: Any, bias: Any, geometry: ConvGeometry) -> Any:
        return self._shift(x, k, bias, geometry)

    def pool2d(self, x: Any, geometry: PoolGeometry) -> Any:
        return self._ops.pool2d(x, geometry)

    def pool2d_bound(self, geometry: PoolGeometry) -> Callable[[Any], Any]:
        run = self._ops.pool2d
        return lambda x: run(x, geometry)

    def pool2d_shift(self, x: Any, geometry: PoolGeometry) -> Any:
        return self._pool_shift(x, geometry)

    # -- training and layers ----------------------------------------------------------------------
    def value_and_grad(self, fn: Callable[[list], Any]) -> Callable[[list], Tuple[Any, list]]:
        return self._jax.jit(self._jax.value_and_grad(fn))  # jitted: the training step compiles once

    def conv2d_layer(self, config: dict, weight: np.ndarray, bias: Optional[np.ndarray]) -> JaxConv2D:
        to_device = self._jax.numpy.asarray  # float32 NumPy stays float32, also with jax_enable_x64
        return JaxConv2D(self, config, to_device(weight), None if bias is None else to_device(bias))

    def pool2d_layer(self, config: dict) -> JaxPool2D:
        return JaxPool2D(self, config)


def _jitted_ops(backend: JaxBackend) -> SimpleNamespace:
    """The backend's kernels, each jitted with its configuration static, built once per backend instance.

    Why jit even one-op kernels: an eager JAX op costs ~25 us of Python dispatch, a jitted call
    with static arguments ~8 us; under a user's jit, vmap or grad the inner jit simply inlines.
    """
    import jax
    import jax.numpy as jnp
    from jax import lax

    # Why HIGHEST: GPUs and TPUs multiply in reduced precision by default, outside convlab's error bound.
    highest = lax.Precision.HIGHEST

    def conv2d(x, k, bias, geometry: ConvGeometry):
        g = geometry
        dimension_numbers = _CHANNELS_LAST if g.channels_last else _CHANNELS_FIRST
        y = lax.conv_general_dilated(
            x, k, g.stride, g.pads, rhs_dilation=g.dilation, dimension_numbers=dimension_numbers, precision=highest
        )
        return algorithms.add_bias(backend, y, bias, g.channels_last)

    def raw_max_pool(x, g: PoolGeometry):
        window4, stride4, pads4 = ((1, *g.window, 1), (1, *g.stride, 1), ((0, 0), *g.pads, (0, 0)))
        if not g.channels_last:
            window4, stride4, pads4 = ((1, 1, *g.window), (1, 1, *g.stride), ((0, 0), (0, 0), *g.pads))
        return lax.reduce_window(x, g.fill, lax.max, window4, stride4, pads4)

    def max_pool_value(x, g: PoolGeometry):
        if all(s >= w for s, w in zip(g.stride, g.window)):
            # why: XLA rewrites a reduce_window of windows that do not overlap into a reduce, whose vectorised max
            # drops NaN (JAX 0.10.2 on the CPU, from about 4096 elements; jnp.max too): shifted views' maximum instead
            return algorithms.pool2d_shift(backend, x, g)
        return raw_max_pool(x, g)

    @functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
    def max_pool(x, geometry: PoolGeometry):
        return max_pool_value(x, geometry)

    @max_pool.defjvp
    def max_pool_jvp(geometry, primals, tangents):
        # why: XLA's derivative of a window holding NaN takes a pixel after its last NaN, and one of -inf only may
        # take the padding; convlab's takes the first NaN, or the first real pixel (convlab.algorithms)
        (x,), (t,) = primals, tangents
        y, t_x = max_pool_value(x, geometry), jax.jvp(lambda v: raw_max_pool(v, geometry), (x,), (t,))[1]

        def repaired():
            code = algorithms.nonfinite_code(jnp, x).astype(x.dtype)
            classes, t_code = jax.jvp(lambda v: raw_max_pool(v, geometry), (code,), (t,))
            return jnp.where(classes == algorithms.CODE_NUMBER, t_x, t_code)

        return y, lax.cond(algorithms.free_of_nan_and_negative_inf(jnp.sum(x)), lambda: t_x, repaired)

    def pool2d(x, geometry: PoolGeometry):
        g = geometry

        def lift(pair, fill):  # an (h, w) pair to the four axes of x
            return (fill, *pair, fill) if g.channels_last else (fill, fill, *pair)

        window4, stride4, pads4 = lift(g.window, 1), lift(g.stride, 1), lift(g.pads, (0, 0))
        if g.mode == "max":  # reduce_window pads with its initial value, -inf (geometry.fill)
            return max_pool(x, g)
        total = lax.reduce_window(x, g.fill, lax.add, window4, stride4, pads4)
        # The divisor is a NumPy constant of the geometry (the real pixels under each window): XLA folds it in.
        return algorithms.divide(backend, total, g)

    def pad(x, pads, value):
        return lax.pad(x, jnp.asarray(value, x.dtype), [(before, after, 0) for before, after in pads])

    def static(function, *static_argnums):
        return jax.jit(function, static_argnums=static_argnums)

    return SimpleNamespace(
        conv2d=static(conv2d, 3),
        pool2d=static(pool2d, 1),
        astype=static(lax.convert_element_type, 1),
        reshape=static(lambda x, shape: jnp.reshape(x, shape), 1),
        transpose=static(lambda x, axes: jnp.transpose(x, axes), 1),
        flip=static(lambda x, axes: lax.rev(x, axes), 1),
        pad=static(pad, 1, 2),
        sum=static(lambda x, axes: jnp.sum(x, axis=axes), 1),
        matmul=jax.jit(lambda a, b: jnp.matmul(a, b, precision=highest)),
    )


def _pool_shift(backend: JaxBackend, native: Callable[[Any, PoolGeometry], Any]) -> Callable[..., Any]:
    """The generic shift pooling, jitted whole, with the derivative of the native pooling.

    Why a custom derivative: the maximum of shifted views splits the derivative of tied maxima between them,
    where max pooling gives it to one pixel; with this rule every algorithm differentiates like the native op.
    """
    import jax

    @functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
    def pool_shift(x, geometry):
        return algorithms.pool2d_shift(backend, x, geometry)

    @pool_shift.defjvp
    def pool_shift_jvp(geometry, primals, tangents):
        _, tangent = jax.jvp(lambda x: native(x, geometry), primals, tangents)
        return pool_shift(primals[0], geometry), tangent

    return jax.jit(pool_shift, static_argnums=(1,))


@functools.cache
def _register_pytrees() -> None:
    from jax import tree_util

    tree_util.register_pytree_node_class(JaxConv2D)
    tree_util.register_pytree_node_class(JaxPool2D)


class JaxConv2D:
    """Conv2D (or ConvTranspose2D) on JAX: a pytree whose leaves are ``weight`` and ``bias``; the configuration
    and the operation are static.

    Train it functionally: ``jax.grad`` of a loss with respect to the layer returns a ``JaxConv2D``
    of gradients, and ``jax.tree_util.tree_map`` applies the update.

    Example:
        >>> import jax
        >>> import jax.numpy as jnp
        >>> import convlab as cl
        >>> layer = cl.Conv2D((1, 2), seed=0, backend="jax")
        >>> X = jnp.ones((6, 8))
        >>> grads = jax.jit(jax.grad(lambda layer: (layer(X) ** 2).sum()))(layer)
        >>> layer = jax.tree_util.tree_map(lambda p, g: p - 0.01 * g, layer, grads)
        >>> layer(X).shape
        (6, 7)
    """

    def __init__(self, backend: JaxBackend, config: dict, weight: Any, bias: Any) -> None:
        self.backend = backend
        self.config = dict(config)
        self.operation = self.config.pop("operation", "conv2d")  # or "conv_transpose2d" (cl.ConvTranspose2D)
        self.weight = weight
        self.bias = bias

    def __call__(self, X: Any) -> Any:
        forward = conv2d if self.operation == "conv2d" else convlab.conv_transpose2d
        return forward(X, self.weight, self.bias, backend=self.backend, **self.config)

    def parameters(self) -> list:
        return [self.weight] if self.bias is None else [self.weight, self.bias]

    def tree_flatten(self) -> Tuple[tuple, tuple]:
        return (self.weight, self.bias), (self.backend, tuple(self.config.items()), self.operation)

    @classmethod
    def tree_unflatten(cls, aux: tuple, children: tuple) -> JaxConv2D:
        backend, config, operation = aux
        return cls(backend, dict(config, operation=operation), *children)

    def __repr__(self) -> str:
        shape = getattr(self.weight, "shape", None)
        operation = "" if self.operation == "conv2d" else f", operation={self.operation!r}"
        return f"JaxConv2D(weight shape {shape}, bias={self.bias is not None}, {self.config}{operation})"


class JaxPool2D:
    """MaxPool2D / AvgPool2D on JAX: a pytree with no leaves (the configuration is static).

    Example:
        >>> import jax
        >>> import jax.numpy as jnp
        >>> import convlab as cl
        >>> jax.jit(cl.MaxPool2D(2, backend="jax"))(jnp.arange(16.0).reshape(4, 4)).tolist()
        [[5.0, 7.0], [13.0, 15.0]]
    """

    def __init__(self, backend: JaxBackend, config: dict) -> None:
        self.backend = backend
        self.config = dict(config)

    def __call__(self, X: Any) -> Any:
        return pool2d(X, backend=self.backend, **self.config)

    def tree_flatten(self) -> Tuple[tuple, tuple]:
        return (), (self.backend, tuple(self.config.items()))

    @classmethod
    def tree_unflatten(cls, aux: tuple, children: tuple) -> JaxPool2D:
        backend, config = aux
        return cls(backend, dict(config))

    def __repr__(self) -> str:
        return f"JaxPool2D({self.config})"
