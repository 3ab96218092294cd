"""Transposed convolution (d2l section 14.10): the adjoint of :func:`convlab.conv2d`, in one core file.

``conv_transpose2d(B, W)`` is defined by ``sum(conv2d(A, W) * B) == sum(A * conv_transpose2d(B, W))`` for
the same stride, padding and dilation: it spreads each input pixel over a kernel-sized window of the
output. It is computed with the seam's own correlation (:func:`convlab.gradients.conv_transpose`: the
input spread by the stride, padded fully, correlated with the flipped kernel), so every backend runs it
with no adapter code; a backend may bind its framework's transposed op (``Backend.conv_transpose2d``).

Kernels: channels-first K is (C, Co, kh, kw) as in torch's ``conv_transpose2d``; channels-last K is
(kh, kw, Co, C) as in TensorFlow's ``conv2d_transpose``. Either way K is the kernel of the forward
convolution that maps the output (Co channels) back to the input (C channels).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Callable, Optional, Tuple

import numpy as np

from convlab import gradients
from convlab.algorithms import add_bias
from convlab.arguments import IntOrPair, Padding, Pair, check_data_format, freeze, to_pair
from convlab.dispatch import BackendArg, Call, Operation, dispatch
from convlab.errors import ConvlabTypeError, ConvlabValueError
from convlab.geometry import ConvGeometry, _lift, _shape, conv_geometry

_TO_NCHW, _TO_NHWC = (0, 3, 1, 2), (0, 2, 3, 1)


@dataclass(frozen=True)
class TransposeGeometry:
    """A transposed convolution: its 4-D shapes, and ``forward``, the conv2d geometry it is the adjoint of."""

    x4: Tuple[int, int, int, int]  # the input lifted to 4-D, in the call's layout
    out: Tuple[int, ...]  # the output shape handed back (X's rank)
    output_padding: Pair
    forward: ConvGeometry  # conv2d from this op's output (its x4) to this op's input (its out4)

    @property
    def out4(self) -> Tuple[int, int, int, int]:
        return self.forward.x4


def conv_transpose_geometry(
    x_shape: Any,
    k_shape: Any,
    bias_shape: Optional[Any] = None,
    *,
    stride: IntOrPair = 1,
    padding: Padding = 0,
    output_padding: IntOrPair = 0,
    dilation: IntOrPair = 1,
    data_format: str = "channels_first",
) -> TransposeGeometry:
    """Validate a transposed convolution and compute its geometry.

    Output size: ``(in - 1) * stride - pad_before - pad_after + dilation * (k - 1) + output_padding + 1``.

    Example:
        >>> conv_transpose_geometry((2, 2), (2, 2), stride=2).out
        (4, 4)
    """
    try:
        return _transpose_geometry(
            _shape("X", x_shape), _shape("K", k_shape), None if bias_shape is None else _shape("bias", bias_shape),
            freeze(stride), freeze(padding), freeze(output_padding), freeze(dilation), data_format,
        )  # fmt: skip
    except TypeError as error:
        if isinstance(error, ConvlabTypeError):
            raise
        raise ConvlabTypeError(
            f"stride, padding, output_padding, dilation and data_format must be ints, tuples or strings: {error}"
        ) from None


@functools.lru_cache(maxsize=1024)
def _transpose_geometry(x_shape, k_shape, bias_shape, stride, padding, output_padding, dilation, data_format):
    channels_last = check_data_format(data_format)
    kernel_layout = "(kh, kw, Co, C)" if channels_last else "(C, Co, kh, kw)"
    x4 = _lift(x_shape, channels_last, "")
    if len(k_shape) == 2 and len(x_shape) == 2:
        k4 = (k_shape[0], k_shape[1], 1, 1) if channels_last else (1, 1) + k_shape
    elif len(k_shape) == 4:
        k4 = k_shape
    else:
        raise ConvlabValueError(
            f"K must be 4-D {kernel_layout} (or 2-D with a 2-D X); got X of shape {x_shape}, K of shape {k_shape}"
        )
    in_channels, out_channels = (k4[3], k4[2]) if channels_last else (k4[0], k4[1])
    window = (k4[0], k4[1]) if channels_last else (k4[2], k4[3])
    x_channels = x4[3] if channels_last else x4[1]
    if x_channels != in_channels:
        raise ConvlabValueError(
            f"X has {x_channels} channels but K expects {in_channels}: X of shape {x_shape} ({data_format}), "
            f"K of shape {k_shape} {kernel_layout}"
        )
    if min(x4) < 1 or min(k4) < 1:
        raise ConvlabValueError(f"X and K must not be empty; got X of shape {x_shape}, K of shape {k_shape}")
    if bias_shape is not None and bias_shape != (out_channels,):
        raise ConvlabValueError(
            f"bias must have shape ({out_channels},), one value per output channel; got bias of shape {bias_shape} "
            f"with K of shape {k_shape} {kernel_layout}"
        )
    stride_pair, dilation_pair = to_pair("stride", stride), to_pair("dilation", dilation)
    extra = to_pair("output_padding", output_padding, minimum=0)
    if isinstance(padding, str):
        if padding.lower() != "valid":
            raise ConvlabValueError(f"padding of conv_transpose2d must be an int, a pair, explicit pads or 'valid'; "
                                    f"got {padding!r}")  # fmt: skip
        padding = 0
    pads = _explicit_pads(padding)
    for axis, op, s, d in zip(("height", "width"), extra, stride_pair, dilation_pair):
        if op >= max(s, d):
            raise ConvlabValueError(
                f"output_padding must be smaller than the stride or the dilation: got output_padding {extra} with "
                f"stride {stride_pair} and dilation {dilation_pair} ({axis})"
            )
    spatial = (x4[1], x4[2]) if channels_last else (x4[2], x4[3])
    out_hw = tuple(
        (n - 1) * s - p[0] - p[1] + d * (k - 1) + op + 1
        for n, s, p, d, k, op in zip(spatial, stride_pair, pads, dilation_pair, window, extra)
    )
    if min(out_hw) < 1:
        raise ConvlabValueError(
            f"the output would be {out_hw}: padding {pads} removes more than the full result of X of shape "
            f"{x_shape} with K of shape {k_shape} (stride {stride_pair}, dilation {dilation_pair})"
        )
    out4 = (x4[0],) + out_hw + (out_channels,) if channels_last else (x4[0], out_channels) + out_hw
    forward = conv_geometry(out4, k4, stride=stride_pair, padding=pads, dilation=dilation_pair, data_format=data_format)
    rank = len(x_shape)
    out = out4 if rank == 4 else out4[1:] if rank == 3 or out_channels > 1 else out_hw
    return TransposeGeometry(x4, out, extra, forward)


def _explicit_pads(padding: Any) -> Tuple[Pair, Pair]:
    from convlab.arguments import is_int

    if is_int(padding):
        return ((int(padding),) * 2, (int(padding),) * 2)  # type: ignore[return-value]
    if isinstance(padding, tuple) and len(padding) == 2 and all(is_int(p) for p in padding):
        return ((int(padding[0]),) * 2, (int(padding[1]),) * 2)  # type: ignore[return-value]
    if (
        isinstance(padding, tuple)
        and len(padding) == 2
        and all(isinstance(p, tuple) and len(p) == 2 and all(is_int(v) for v in p) for p in padding)
    ):
        pads = tuple((int(p[0]), int(p[1])) for p in padding)
        if min(min(p) for p in pads) < 0:
            raise ConvlabValueError(f"padding must not be negative, got {padding!r}")
        return pads  # type: ignore[return-value]
    raise ConvlabTypeError(
        f"padding must be an int, a pair (ph, pw), explicit ((top, bottom), (left, right)) or 'valid', got {padding!r}"
    )


def transpose_primitive(be: Any, x: Any, k: Any, bias: Any, geometry: TransposeGeometry) -> Any:
    """The transposed convolution of 4-D tensors in the geometry's layout, with the seam's correlation."""
    g = geometry.forward
    if g.channels_last:
        x, k = be.transpose(x, _TO_NCHW), be.transpose(k, (3, 2, 0, 1))
    y = gradients.conv_transpose(be, x, k, g.in_hw, g.window, g.stride, g.pads, g.dilation)
    if g.channels_last:
        y = be.transpose(y, _TO_NHWC)
    return add_bias(be, y, bias, g.channels_last)


@functools.lru_cache(maxsize=1024)
def stride_one_correlation(geometry: TransposeGeometry) -> Optional[ConvGeometry]:
    """At stride 1 the transposed convolution is one correlation in the call's own layout: of X, padded by
    ``dilation * (k - 1) - pad`` before and that plus output_padding after, with the flipped kernel read with
    its channel axes swapped (:func:`correlation_kernel`). That correlation's geometry, or None where it does
    not apply (a stride above 1, or a pad larger than ``dilation * (k - 1)``, which would crop)."""
    g = geometry.forward
    if g.stride != (1, 1):
        return None
    pads = tuple(
        (d * (w - 1) - before, d * (w - 1) - after + extra)
        for d, w, (before, after), extra in zip(g.dilation, g.window, g.pads, geometry.output_padding)
    )
    if min(min(p) for p in pads) < 0:
        return None
    k4 = (g.k4[0], g.k4[1], g.k4[3], g.k4[2]) if g.channels_last else (g.k4[1], g.k4[0], g.k4[2], g.k4[3])
    data_format = "channels_last" if g.channels_last else "channels_first"
    return conv_geometry(geometry.x4, k4, padding=pads, dilation=g.dilation, data_format=data_format)


def correlation_kernel(be: Any, k: Any, geometry: TransposeGeometry) -> Any:
    """The kernel of :func:`stride_one_correlation`: K flipped, its channel axes swapped, in the call's layout."""
    if geometry.forward.channels_last:  # (kh, kw, Co, C) -> HWIO (kh, kw, C, Co)
        return be.flip(be.transpose(k, (0, 1, 3, 2)), (0, 1))
    return be.flip(be.transpose(k, (1, 0, 2, 3)), (2, 3))  # (C, Co, kh, kw) -> OIHW (Co, C, kh, kw)


def conv_transpose2d(
    X: Any,
    K: Any,
    bias: Any = None,
    *,
    stride: IntOrPair = 1,
    padding: Padding = 0,
    output_padding: IntOrPair = 0,
    dilation: IntOrPair = 1,
    data_format: str = "channels_first",
    algorithm: str = "auto",
    backend: BackendArg = None,
) -> Any:
    """Transposed convolution (section 14.10), the adjoint of :func:`conv2d` with the same geometry.

    X is (N, C, H, W), (C, H, W) or, with a 2-D kernel, (H, W); K is (C, Co, kh, kw) (channels-last: X
    (N, H, W, C), K (kh, kw, Co, C)). ``padding`` (int, pair or explicit pads) removes rows and columns from
    the full result; ``output_padding`` (smaller than the stride or the dilation) adds them at the bottom
    and right. ``algorithm`` is ``"auto"`` (the backend's transposed op where it binds one) or ``"native"``
    (the same), or ``"correlation"`` (the core's formulation with the backend's correlation).

    Example:
        >>> import convlab as cl
        >>> cl.conv_transpose2d([[0, 1], [2, 3]], [[0, 1], [2, 3]]).tolist()
        [[0.0, 0.0, 1.0], [0.0, 4.0, 6.0], [4.0, 12.0, 9.0]]
        >>> cl.conv_transpose2d([[0, 1], [2, 3]], [[0, 1], [2, 3]], padding=1).tolist()
        [[4.0]]
    """
    options = (stride, padding, output_padding, dilation, data_format, algorithm)
    return dispatch(_CONV_TRANSPOSE2D, backend, (X, K, bias), options)


ALGORITHMS = ("auto", "native", "correlation")


def _plan(call: Call) -> Callable[..., Any]:
    stride, padding, output_padding, dilation, data_format, algorithm = call.options
    if not isinstance(algorithm, str) or algorithm not in ALGORITHMS:
        raise ConvlabValueError(f"algorithm must be one of {ALGORITHMS}, got {algorithm!r}")
    geometry = conv_transpose_geometry(
        call.shape("X"), call.shape("K"), call.shape("bias"), stride=stride, padding=padding,
        output_padding=output_padding, dilation=dilation, data_format=data_format,
    )  # fmt: skip
    be, convert, g = call.backend, call.converter(), geometry
    native = getattr(be, "conv_transpose2d", None)
    primitive = (
        native if native is not None and algorithm != "correlation" else functools.partial(transpose_primitive, be)
    )
    x_lifted, k_lifted = g.x4 != call.shape("X"), g.forward.k4 != call.shape("K")

    def run(X: Any, K: Any, bias: Any = None) -> Any:
        x, k, b = convert((X, K, bias))
        y = primitive(be.reshape(x, g.x4) if x_lifted else x, be.reshape(k, g.forward.k4) if k_lifted else k, b, g)
        return y if g.out == g.out4 else be.reshape(y, g.out)

    return run


_CONV_TRANSPOSE2D = Operation("conv_transpose2d", ("X", "K", "bias"), _plan)


def conv_transpose2d_vjp(
    X: Any,
    K: Any,
    dY: Any,
    *,
    stride: IntOrPair = 1,
    padding: Padding = 0,
    output_padding: IntOrPair = 0,
    dilation: IntOrPair = 1,
    data_format: str = "channels_first",
    backend: BackendArg = None,
) -> Tuple[Any, Any, Any]:
    """Gradients ``(dX, dK, dbias)`` of ``sum(conv_transpose2d(X, K, bias) * dY)``, in closed form.

    Adjointness gives them: dX is ``conv2d(dY, K)`` and dK is the kernel gradient of ``conv2d(dY, K)``
    against X, both with the same geometry.

    Example:
        >>> import convlab as cl
        >>> dX, dK, db = cl.conv_transpose2d_vjp(np.ones((2, 2)), np.ones((2, 2)), np.ones((3, 3)))
        >>> dX.tolist(), dK.tolist(), db.tolist()
        ([[4.0, 4.0], [4.0, 4.0]], [[4.0, 4.0], [4.0, 4.0]], [9.0])
    """
    options = (stride, padding, output_padding, dilation, data_format)
    return dispatch(_CONV_TRANSPOSE2D_VJP, backend, (X, K, dY), options)


def _plan_vjp(call: Call) -> Callable[..., Any]:
    stride, padding, output_padding, dilation, data_format = call.options
    geometry = conv_transpose_geometry(
        call.shape("X"), call.shape("K"), stride=stride, padding=padding,
        output_padding=output_padding, dilation=dilation, data_format=data_format,
    )  # fmt: skip
    if call.shape("dY") != geometry.out:
        raise ConvlabValueError(
            f"dY must have the shape of conv_transpose2d's output {geometry.out}; got dY of shape {call.shape('dY')} "
            f"for X of shape {call.shape('X')} and K of shape {call.shape('K')}"
        )
    be, convert, g = call.backend, call.converter(), geometry.forward
    x_shape, k_shape = call.shape("X"), call.shape("K")
    # output_padding of at least the stride (a larger dilation allows it) adds output rows no input pixel reaches:
    # the forward correlation then has more outputs than X has pixels, X reads as zeros there and dX drops them
    zeros = tuple((0, grown - given) for grown, given in zip(g.out4, geometry.x4))
    crop = tuple(slice(n) for n in geometry.x4)

    def run(X: Any, K: Any, dY: Any) -> Tuple[Any, Any, Any]:
        x, k, dy = convert((X, K, dY))
        dy, k, x = be.reshape(dy, g.x4), be.reshape(k, g.k4), be.reshape(x, geometry.x4)
        dx = be.conv2d(dy, k, None, g)
        if g.out4 != geometry.x4:
            dx, x = dx[crop], be.pad(x, zeros)
        _, dk, _ = gradients.conv2d_vjp(be, dy, k, x, g)
        dbias = be.sum(dy, (0, 1, 2) if g.channels_last else (0, 2, 3))
        return be.reshape(dx, x_shape), be.reshape(dk, k_shape), dbias

    return run


_CONV_TRANSPOSE2D_VJP = Operation("conv_transpose2d_vjp", ("X", "K", "dY"), _plan_vjp)


def ConvTranspose2D(
    kernel_size: IntOrPair,
    in_channels: int = 1,
    out_channels: int = 1,
    *,
    stride: IntOrPair = 1,
    padding: Padding = 0,
    output_padding: IntOrPair = 0,
    dilation: IntOrPair = 1,
    bias: bool = True,
    seed: Optional[int] = None,
    data_format: str = "channels_first",
    backend: BackendArg = None,
) -> Any:
    """A trainable transposed convolution layer native to the backend (weights seeded as :func:`Conv2D`'s).

    The weight is (in_channels, out_channels, kh, kw) ((kh, kw, out_channels, in_channels) channels-last).

    Example:
        >>> import convlab as cl
        >>> cl.ConvTranspose2D(2, stride=2, seed=0)(np.ones((1, 1, 3, 3))).shape
        (1, 1, 6, 6)
    """
    from convlab.layers import _backend, _check_channels

    kernel = to_pair("kernel_size", kernel_size)
    in_channels = _check_channels("in_channels", in_channels)
    out_channels = _check_channels("out_channels", out_channels)
    if not isinstance(bias, (bool, np.bool_)):
        raise ConvlabTypeError(f"bias must be True or False, got {bias!r}")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer))):
        raise ConvlabTypeError(f"seed must be an int or None, got {seed!r}")
    config = dict(stride=freeze(stride), padding=freeze(padding), output_padding=freeze(output_padding),
                  dilation=freeze(dilation), data_format=data_format)  # fmt: skip
    channels_last = check_data_format(data_format)
    # torch's rule: uniform in +-1/sqrt(fan_in), the fan-in of a transposed weight being out_channels * kh * kw
    rng = np.random.default_rng(seed)
    bound = 1.0 / np.sqrt(out_channels * kernel[0] * kernel[1])
    weight = rng.uniform(-bound, bound, (in_channels, out_channels) + kernel).astype(np.float32)
    bias_values = rng.uniform(-bound, bound, (out_channels,)).astype(np.float32) if bias else None
    if channels_last:
        weight = np.ascontiguousarray(weight.transpose(2, 3, 1, 0))
    # validate now, on an input large enough for any padding
    size = 1 + (sum(map(sum, _explicit_pads(config["padding"]))) if not isinstance(padding, str) else 0)
    probe = (1, size, size, in_channels) if channels_last else (1, in_channels, size, size)
    conv_transpose_geometry(probe, weight.shape, **config)
    return _backend(backend).conv2d_layer(dict(config, operation="conv_transpose2d"), weight, bias_values)
