"""The public operations, each a short wrapper: its tensor inputs, its geometry, its plan.

Every function hands its inputs to :func:`convlab.dispatch.dispatch`, which validates a call once per
signature and caches a ready-to-run closure (see :mod:`convlab.dispatch`). A ``_plan_*`` function says,
for one call, what to check and what to run, in terms of :mod:`convlab.geometry` and the backend's
primitives; it runs once per signature, never per call.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Sequence, Tuple

import numpy as np

from convlab import algorithms
from convlab.arguments import IntOrPair, Padding
from convlab.dispatch import BackendArg, Call, Operation, dispatch
from convlab.errors import ConvlabTypeError, ConvlabValueError
from convlab.geometry import conv_geometry, output_hw, pool_geometry


def _require_rank(function: str, call: Call, **ranks: int) -> None:
    for name, rank in ranks.items():
        if len(call.shape(name)) != rank:
            shapes = ", ".join(f"{n} of shape {call.shape(n)}" for n in ranks)
            raise ConvlabValueError(f"{function} needs a {rank}-D {name}; got {shapes}")


# -- the general operations -----------------------------------------------------------------------


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
    return dispatch(_CONV2D, backend, (X, K, bias), (stride, padding, dilation, data_format, algorithm))


def _plan_conv2d(call: Call) -> Callable[..., Any]:
    stride, padding, dilation, data_format, algorithm = call.options
    algorithms.check_algorithm(algorithm, algorithms.CONV_ALGORITHMS)
    geometry = conv_geometry(
        call.shape("X"), call.shape("K"), call.shape("bias"),
        stride=stride, padding=padding, dilation=dilation, data_format=data_format,
    )  # fmt: skip
    return call.conv(geometry, algorithm)


_CONV2D = Operation("conv2d", ("X", "K", "bias"), _plan_conv2d)


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
    return conv_geometry(X, K, stride=stride, padding=padding, dilation=dilation, data_format=data_format).out


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
    options = (pool_size, mode, stride, padding, count_include_pad, data_format, algorithm)
    return dispatch(_POOL2D, backend, (X,), options)


def _plan_pool2d(call: Call) -> Callable[..., Any]:
    pool_size, mode, stride, padding, count_include_pad, data_format, algorithm = call.options
    algorithms.check_algorithm(algorithm, algorithms.POOL_ALGORITHMS)
    geometry = pool_geometry(
        call.shape("X"), pool_size, mode,
        stride=stride, padding=padding, count_include_pad=count_include_pad, data_format=data_format,
    )  # fmt: skip
    return call.pool(geometry, algorithm)


_POOL2D = Operation("pool2d", ("X",), _plan_pool2d)


# -- the book's functions -------------------------------------------------------------------------


def corr2d(X: Any, K: Any, *, backend: BackendArg = None) -> Any:
    """The book's 2-D cross-correlation (section 6.2.1): (H, W) * (kh, kw) -> (H - kh + 1, W - kw + 1).

    Example:
        >>> import convlab as cl
        >>> cl.corr2d([[0, 1, 2], [3, 4, 5], [6, 7, 8]], [[0, 1], [2, 3]]).tolist()
        [[19.0, 25.0], [37.0, 43.0]]
    """
    return dispatch(_CORR2D, backend, (X, K), ())


def _plan_corr2d(call: Call) -> Callable[..., Any]:
    _require_rank("corr2d", call, X=2, K=2)
    return call.conv(conv_geometry(call.shape("X"), call.shape("K")))


def corr2d_multi_in(X: Any, K: Any, *, backend: BackendArg = None) -> Any:
    """Cross-correlation summed over input channels (section 6.4.1): (C, H, W) * (C, kh, kw) -> (Ho, Wo).

    Example:
        >>> import convlab as cl
        >>> X = [[[0, 1, 2], [3, 4, 5], [6, 7, 8]], [[1, 2, 3], [4, 5, 6], [7, 8, 9]]]
        >>> K = [[[0, 1], [2, 3]], [[1, 2], [3, 4]]]
        >>> cl.corr2d_multi_in(X, K).tolist()
        [[56.0, 72.0], [104.0, 120.0]]
    """
    return dispatch(_CORR2D_MULTI_IN, backend, (X, K), ())


def _plan_corr2d_multi_in(call: Call) -> Callable[..., Any]:
    _require_rank("corr2d_multi_in", call, X=3, K=3)
    # K (C, kh, kw) is one output channel of a 4-D kernel
    geometry = conv_geometry(call.shape("X"), (1,) + call.shape("K"))
    geometry = dataclasses.replace(geometry, k_lifted=True)
    return call.conv(geometry, out=geometry.out4[2:])


def corr2d_multi_in_out(X: Any, K: Any, *, backend: BackendArg = None) -> Any:
    """Multiple input and output channels (section 6.4.2): (C, H, W) * (Co, C, kh, kw) -> (Co, Ho, Wo).

    Example:
        >>> import convlab as cl
        >>> X = np.arange(18.0).reshape(2, 3, 3)
        >>> cl.corr2d_multi_in_out(X, np.ones((3, 2, 2, 2))).shape
        (3, 2, 2)
    """
    return dispatch(_CORR2D_MULTI_IN_OUT, backend, (X, K), ())


def _plan_corr2d_multi_in_out(call: Call) -> Callable[..., Any]:
    _require_rank("corr2d_multi_in_out", call, X=3, K=4)
    return call.conv(conv_geometry(call.shape("X"), call.shape("K")))


def corr2d_multi_in_out_1x1(X: Any, K: Any, *, backend: BackendArg = None) -> Any:
    """A 1x1 convolution as one matrix product (section 6.4.3): (C, H, W) * (Co, C, 1, 1) -> (Co, H, W).

    Example:
        >>> import convlab as cl
        >>> cl.corr2d_multi_in_out_1x1(np.ones((3, 2, 2)), np.ones((2, 3, 1, 1))).tolist()
        [[[3.0, 3.0], [3.0, 3.0]], [[3.0, 3.0], [3.0, 3.0]]]
    """
    return dispatch(_CORR2D_1X1, backend, (X, K), ())


def _plan_corr2d_1x1(call: Call) -> Callable[..., Any]:
    _require_rank("corr2d_multi_in_out_1x1", call, X=3, K=4)
    x_shape, k_shape = call.shape("X"), call.shape("K")
    channels, height, width = x_shape
    if k_shape[1:] != (channels, 1, 1):
        raise ConvlabValueError(
            f"K must have shape (Co, {channels}, 1, 1) for X of shape {x_shape}; got K of shape {k_shape}"
        )
    if min(x_shape) < 1 or k_shape[0] < 1:
        raise ConvlabValueError(f"X and K must not be empty; got X of shape {x_shape}, K of shape {k_shape}")
    be, out_channels = call.backend, k_shape[0]

    def product(x: Any, k: Any) -> Any:
        y = be.matmul(be.reshape(k, (out_channels, channels)), be.reshape(x, (channels, height * width)))
        return be.reshape(y, (out_channels, height, width))

    if call.as_given:
        return be.fuse(product)
    convert = call.converter()
    return lambda X, K: product(*convert((X, K)))


_CORR2D = Operation("corr2d", ("X", "K"), _plan_corr2d)
_CORR2D_MULTI_IN = Operation("corr2d_multi_in", ("X", "K"), _plan_corr2d_multi_in)
_CORR2D_MULTI_IN_OUT = Operation("corr2d_multi_in_out", ("X", "K"), _plan_corr2d_multi_in_out)
_CORR2D_1X1 = Operation("corr2d_multi_in_out_1x1", ("X", "K"), _plan_corr2d_1x1)


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
    dK correlates the padded input with dY (stride and dilation swap roles); dX is the transposed
    convolution of dY (dY spread out by the stride, padded, correlated with the flipped kernel).

    Example:
        >>> import convlab as cl
        >>> dX, dK, dbias = cl.conv2d_vjp(np.ones((3, 3)), np.ones((2, 2)), np.ones((2, 2)))
        >>> dX.tolist(), dK.tolist(), dbias.tolist()
        ([[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]], [[4.0, 4.0], [4.0, 4.0]], [4.0])
    """
    return dispatch(_CONV2D_VJP, backend, (X, K, dY), (stride, padding, dilation, data_format))


def _plan_conv2d_vjp(call: Call) -> Callable[..., Any]:
    from convlab import gradients

    stride, padding, dilation, data_format = call.options
    x_shape, k_shape, dy_shape = call.shape("X"), call.shape("K"), call.shape("dY")
    geometry = conv_geometry(
        x_shape, k_shape, stride=stride, padding=padding, dilation=dilation, data_format=data_format
    )
    if dy_shape != geometry.out:
        raise ConvlabValueError(
            f"dY must have the shape of conv2d's output {geometry.out}; got dY of shape {dy_shape} "
            f"for X of shape {x_shape} and K of shape {k_shape}"
        )
    be, convert = call.backend, call.converter()

    def run(X: Any, K: Any, dY: Any) -> Tuple[Any, Any, Any]:
        x, k, dy = convert((X, K, dY))
        dx, dk, dbias = gradients.conv2d_vjp(be, x, k, dy, geometry)
        return be.reshape(dx, x_shape), be.reshape(dk, k_shape), dbias

    return run


_CONV2D_VJP = Operation("conv2d_vjp", ("X", "K", "dY"), _plan_conv2d_vjp)


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
    return dispatch(_CONV_MATRIX, backend, (K,), (input_shape, stride, padding, dilation))


def _input_shape(value: Any) -> Tuple[int, ...]:
    shape = getattr(value, "shape", value)
    try:
        return tuple(int(n) for n in shape)
    except (TypeError, ValueError):
        raise ConvlabTypeError(f"input_shape must be a shape (tuple of ints) or an array, got {value!r}") from None


def _plan_conv_matrix(call: Call) -> Callable[..., Any]:
    input_shape, stride, padding, dilation = call.options
    input_shape, k_shape = _input_shape(input_shape), call.shape("K")
    if len(input_shape) != 2 or len(k_shape) != 2:
        raise ConvlabValueError(
            f"conv_matrix needs a 2-D K and a 2-D input_shape; got K of shape {k_shape}, input_shape {input_shape}"
        )
    geometry = conv_geometry(input_shape, k_shape, stride=stride, padding=padding, dilation=dilation)
    selector = _selection_tensor(input_shape, k_shape, geometry.stride, geometry.pads, geometry.dilation)
    taps = k_shape[0] * k_shape[1]
    be, convert, dtype = call.backend, call.converter(), call.dtype
    on_device, flat = call.tensors != (), selector.reshape(taps, -1)
    shape = (geometry.out[0] * geometry.out[1], input_shape[0] * input_shape[1])

    def run(K: Any) -> Any:
        (k,) = convert((K,))
        # converted per call: a plan outlives a trace (tf.function), so it holds no backend tensor
        chosen = be.asarray(flat, dtype)
        return be.reshape(be.matmul(be.reshape(k, (1, taps)), be.place_like(chosen, k) if on_device else chosen), shape)

    return run


_CONV_MATRIX = Operation("conv_matrix", ("K",), _plan_conv_matrix)


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
    return dispatch(_CORR2D_MATMUL, backend, (X, K), (stride, padding, dilation))


def _plan_corr2d_matmul(call: Call) -> Callable[..., Any]:
    _require_rank("corr2d_matmul", call, X=2, K=2)
    stride, padding, dilation = call.options
    x_shape = call.shape("X")
    geometry = conv_geometry(x_shape, call.shape("K"), stride=stride, padding=padding, dilation=dilation)
    be, convert = call.backend, call.converter()
    options = dict(stride=stride, padding=padding, dilation=dilation, backend=be)

    def run(X: Any, K: Any) -> Any:
        x, k = convert((X, K))
        matrix = conv_matrix(k, x_shape, **options)
        return be.reshape(be.matmul(matrix, be.reshape(x, (x_shape[0] * x_shape[1], 1))), geometry.out)

    return run


_CORR2D_MATMUL = Operation("corr2d_matmul", ("X", "K"), _plan_corr2d_matmul)
