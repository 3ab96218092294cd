"""Layers native to each backend: ``Conv2D``, ``MaxPool2D``, ``AvgPool2D``.

The core validates the configuration and draws the initial weights from
``numpy.random.default_rng(seed)``, so a seed gives the same weights on every
backend; the backend wraps them in its own layer type (a ``torch.nn.Module``,
a Keras ``Layer``, a Gluon ``HybridBlock``, a JAX pytree, or the plain classes
below on NumPy), whose forward pass calls :func:`convlab.conv2d` /
:func:`convlab.pool2d`.
"""

from __future__ import annotations

from typing import Any, Optional, Tuple

import numpy as np

from convlab.arguments import IntOrPair, Padding, check_data_format, to_pair
from convlab.backend import Backend
from convlab.errors import ConvlabTypeError, ConvlabValueError
from convlab.ops import BackendArg, _freeze, _geometry, _pool_geometry, conv2d, conv2d_vjp, pool2d
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
    config = dict(stride=_freeze(stride), padding=_freeze(padding), dilation=_freeze(dilation), data_format=data_format)
    # Validate the configuration now against the smallest input it accepts, not at the first call.
    to_pair("stride", config["stride"])
    dilation_pair = to_pair("dilation", config["dilation"])
    smallest = tuple((k - 1) * d + 1 for k, d in zip(kernel, dilation_pair))
    x_shape = (1,) + smallest + (in_channels,) if channels_last else (1, in_channels) + smallest
    weight, bias_values = initial_weights(kernel, in_channels, out_channels, bool(bias), seed)
    if channels_last:
        weight = np.ascontiguousarray(weight.transpose(2, 3, 1, 0))
    _geometry(x_shape, weight.shape, None, config["stride"], config["padding"], config["dilation"], data_format)
    return _backend(backend).conv2d_layer(config, weight, bias_values)


def _backend(backend: BackendArg) -> Backend:
    if isinstance(backend, Backend):
        return backend
    return get_backend(backend or default_backend_name())


def _pool_layer(mode: str, pool_size, stride, padding, count_include_pad, data_format, backend) -> Any:
    window = to_pair("pool_size", _freeze(pool_size))
    stride = window if stride is None else _freeze(stride)
    if not isinstance(count_include_pad, (bool, np.bool_)):
        raise ConvlabTypeError(f"count_include_pad must be True or False, got {count_include_pad!r}")
    channels_last = check_data_format(data_format)
    stride_pair = to_pair("stride", stride)
    # A padded window must still see one real pixel; check with the smallest input that fits.
    smallest = (1, 1) + window if not channels_last else (1,) + window + (1,)
    _pool_geometry(smallest, window, mode, stride_pair, _freeze(padding), data_format)
    config = dict(
        pool_size=window,
        mode=mode,
        stride=stride_pair,
        padding=_freeze(padding),
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


class NumpyConv2D:
    """Conv2D on the NumPy backend: ``weight`` and ``bias`` are plain arrays you may update in place.

    ``backward(X, dY)`` returns the gradients ``(dX, dweight, dbias)`` from :func:`convlab.conv2d_vjp`.
    """

    def __init__(self, config: dict, weight: np.ndarray, bias: Optional[np.ndarray]):
        self.config = dict(config)
        self.weight = weight
        self.bias = bias

    def __call__(self, X: Any) -> np.ndarray:
        return conv2d(X, self.weight, self.bias, backend="numpy", **self.config)

    def backward(self, X: Any, dY: Any) -> Tuple[np.ndarray, np.ndarray, Optional[np.ndarray]]:
        dX, dweight, dbias = conv2d_vjp(X, self.weight, dY, backend="numpy", **self.config)
        return dX, dweight, (dbias if self.bias is not None else None)

    def parameters(self) -> list:
        return [self.weight] if self.bias is None else [self.weight, self.bias]

    def __repr__(self) -> str:
        return f"NumpyConv2D(weight shape {self.weight.shape}, bias={self.bias is not None}, {self.config})"


class NumpyPool2D:
    """MaxPool2D / AvgPool2D on the NumPy backend."""

    def __init__(self, config: dict):
        self.config = dict(config)

    def __call__(self, X: Any) -> np.ndarray:
        return pool2d(X, backend="numpy", **self.config)

    def __repr__(self) -> str:
        return f"NumpyPool2D({self.config})"
