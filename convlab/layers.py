"""Layers native to each backend: ``Conv2D``, ``MaxPool2D``, ``AvgPool2D``.

The core validates the configuration and draws the initial weights from
``numpy.random.default_rng(seed)``, so a seed gives the same weights on every
backend; the backend wraps them in its own layer type (a ``torch.nn.Module``,
a Keras ``Layer``, a Gluon ``HybridBlock``, a JAX pytree, or the plain classes
of :mod:`convlab.numpy_backend` on NumPy), whose forward pass calls :func:`convlab.conv2d` /
:func:`convlab.pool2d`.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Dict, Optional, Tuple

import numpy as np

from convlab.arguments import IntOrPair, Padding, check_data_format, freeze, to_pair
from convlab.backend import Backend
from convlab.dispatch import BackendArg
from convlab.errors import ConvlabTypeError, ConvlabValueError
from convlab.geometry import conv_geometry, pool_geometry
from convlab.registry import default_backend_name, get_backend


def initial_weights(
    kernel_size: Tuple[int, int], in_channels: int, out_channels: int, bias: bool, seed: Optional[int]
) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    """Weight (Co, C, kh, kw) and bias (Co,) in float32, uniform in +-1/sqrt(fan_in) (torch's default rule)."""
    rng = np.random.default_rng(seed)
    fan_in = in_channels * kernel_size[0] * kernel_size[1]
    bound = 1.0 / np.sqrt(fan_in)
    weight = rng.uniform(-bound, bound, (out_channels, in_channels) + tuple(kernel_size)).astype(np.float32)
    bias_values = rng.uniform(-bound, bound, (out_channels,)).astype(np.float32) if bias else None
    return weight, bias_values


def _check_channels(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ConvlabTypeError(f"{name} must be a positive int, got {value!r}")
    if value < 1:
        raise ConvlabValueError(f"{name} must be >= 1, got {value!r}")
    return int(value)


def Conv2D(
    kernel_size: IntOrPair,
    in_channels: int = 1,
    out_channels: int = 1,
    *,
    stride: IntOrPair = 1,
    padding: Padding = 0,
    dilation: IntOrPair = 1,
    bias: bool = True,
    seed: Optional[int] = None,
    data_format: str = "channels_first",
    backend: BackendArg = None,
) -> Any:
    """A trainable 2-D convolution layer native to the backend.

    The weight has shape (out_channels, in_channels, kh, kw) (kh, kw, C, Co with
    ``data_format="channels_last"``), the bias (out_channels,). Inputs may be 2-D, 3-D or 4-D
    as for :func:`convlab.conv2d`.

    Example:
        >>> import convlab as cl
        >>> layer = cl.Conv2D((1, 2), seed=0, bias=False)
        >>> layer(np.ones((6, 8))).shape
        (6, 7)
    """
    kernel = to_pair("kernel_size", kernel_size)
    in_channels = _check_channels("in_channels", in_channels)
    out_channels = _check_channels("out_channels", out_channels)
    if not isinstance(bias, (bool, np.bool_)):
        raise ConvlabTypeError(f"bias must be True or False, got {bias!r}")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer))):
        raise ConvlabTypeError(f"seed must be an int or None, got {seed!r}")
    channels_last = check_data_format(data_format)
    config = dict(stride=freeze(stride), padding=freeze(padding), dilation=freeze(dilation), data_format=data_format)
    # Validate the configuration now against the smallest input it accepts, not at the first call.
    to_pair("stride", config["stride"])
    dilation_pair = to_pair("dilation", config["dilation"])
    smallest = tuple((k - 1) * d + 1 for k, d in zip(kernel, dilation_pair))
    x_shape = (1,) + smallest + (in_channels,) if channels_last else (1, in_channels) + smallest
    weight, bias_values = initial_weights(kernel, in_channels, out_channels, bool(bias), seed)
    if channels_last:
        weight = np.ascontiguousarray(weight.transpose(2, 3, 1, 0))
    conv_geometry(x_shape, weight.shape, **config)
    return _backend(backend).conv2d_layer(config, weight, bias_values)


def _backend(backend: BackendArg) -> Backend:
    if isinstance(backend, Backend):
        return backend
    return get_backend(backend or default_backend_name())


def _pool_layer(mode: str, pool_size, stride, padding, count_include_pad, data_format, backend) -> Any:
    window = to_pair("pool_size", freeze(pool_size))
    stride = window if stride is None else freeze(stride)
    if not isinstance(count_include_pad, (bool, np.bool_)):
        raise ConvlabTypeError(f"count_include_pad must be True or False, got {count_include_pad!r}")
    channels_last = check_data_format(data_format)
    stride_pair = to_pair("stride", stride)
    # A padded window must still see one real pixel; check with the smallest input that fits.
    smallest = (1, 1) + window if not channels_last else (1,) + window + (1,)
    pool_geometry(smallest, window, mode, stride=stride_pair, padding=freeze(padding), data_format=data_format)
    config = dict(
        pool_size=window,
        mode=mode,
        stride=stride_pair,
        padding=freeze(padding),
        count_include_pad=bool(count_include_pad),
        data_format=data_format,
    )
    return _backend(backend).pool2d_layer(config)


def MaxPool2D(
    pool_size: IntOrPair = 2,
    stride: Optional[IntOrPair] = None,
    padding: Padding = 0,
    *,
    data_format: str = "channels_first",
    backend: BackendArg = None,
) -> Any:
    """Max pooling layer native to the backend; the stride defaults to the window, as in the frameworks.

    Example:
        >>> import convlab as cl
        >>> cl.MaxPool2D(2)(np.arange(16.0).reshape(4, 4)).tolist()
        [[5.0, 7.0], [13.0, 15.0]]
    """
    return _pool_layer("max", pool_size, stride, padding, True, data_format, backend)


def AvgPool2D(
    pool_size: IntOrPair = 2,
    stride: Optional[IntOrPair] = None,
    padding: Padding = 0,
    count_include_pad: bool = True,
    *,
    data_format: str = "channels_first",
    backend: BackendArg = None,
) -> Any:
    """Average pooling layer native to the backend; the stride defaults to the window.

    Example:
        >>> import convlab as cl
        >>> cl.AvgPool2D(2)(np.arange(16.0).reshape(4, 4)).tolist()
        [[2.5, 4.5], [10.5, 12.5]]
    """
    return _pool_layer("avg", pool_size, stride, padding, count_include_pad, data_format, backend)


def lazy_classes(module: str, build: Callable[[], Dict[str, type]]) -> Tuple[Callable[[], Dict[str, type]], Any]:
    """``(classes, __getattr__)`` for an adapter's layer classes, built (and the framework imported) on first use.

    ``build()`` returns the classes by name; ``classes()`` builds them once; the module ``__getattr__`` hands them
    out as ``<module>.<name>``, where pickle and Keras' registry find them.

    Example:
        >>> classes, __getattr__ = lazy_classes(__name__, lambda: {"Plain": type("Plain", (), {})})
        >>> __getattr__("Plain").__qualname__
        'Plain'
    """

    @functools.cache
    def classes() -> Dict[str, type]:
        built = build()
        for name, cls in built.items():
            cls.__qualname__ = cls.__name__ = name  # why: found as <module>.<name> through __getattr__
            cls.__module__ = module
        return built

    def __getattr__(name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(f"module {module!r} has no attribute {name!r}")
        try:
            return classes()[name]
        except KeyError:
            raise AttributeError(f"module {module!r} has no attribute {name!r}") from None

    return classes, __getattr__
