"""convlab's TensorFlow backend: each primitive is one or two TensorFlow ops, computed in NHWC.

TensorFlow's own CPU kernels are NHWC, so ``data_format="channels_last"`` runs with no layout change. A
channels-first float32 convolution or average pooling runs oneDNN's NCHW kernels on the input as it is (they
differentiate NCHW too, but only with VALID padding, so pads come first as an op); other channels-first inputs
(float64, max pooling, a TensorFlow without oneDNN) move their axes with a free reshape when the moving axes
have size 1, a transpose otherwise. TensorFlow is imported when the backend is first used, never when this
module is imported.

The other TensorFlow quirks handled here, each commented where it happens: CPU gradient kernels refuse
dilations > 1 (dilated kernels are spelled out), XLA refuses explicit pooling padding and AvgPool has none
(TF's SAME or tf.pad), grappler rewrites x / constant as x times a reciprocal it folds inexactly (NumPy data
met while tf.function traces is captured, not made a constant of the graph), model.fit traces with an unknown
batch size (the Keras layers handle it), and AutoGraph would rewrite convlab's Python and rename its errors
(convlab is registered as AutoGraph leaves numpy and keras).

Example:
    >>> import tensorflow as tf
    >>> import convlab as cl
    >>> cl.corr2d(tf.constant([[0.0, 1, 2], [3, 4, 5], [6, 7, 8]]), tf.constant([[0.0, 1], [2, 3]])).numpy().tolist()
    [[19.0, 25.0], [37.0, 43.0]]
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import numpy as np

from convlab import algorithms
from convlab.backend import Backend, Pads, Pair
from convlab.conv_transpose import TransposeGeometry, conv_transpose_geometry
from convlab.dispatch import prepare
from convlab.errors import ConvlabError
from convlab.geometry import ConvGeometry, PoolGeometry, conv_geometry, pool_geometry, resolve_pads
from convlab.layers import lazy_classes

#: below this many elements an eager input's sum is NumPy's (see TensorflowBackend._if_sum)
SMALL_SUM = 1 << 16
NCHW_TO_NHWC = (0, 2, 3, 1)
NHWC_TO_NCHW = (0, 3, 1, 2)
OIHW_TO_HWIO = (2, 3, 1, 0)


class TensorflowBackend(Backend):
    """convlab on TensorFlow: takes ``tf.Tensor``, ``tf.Variable`` and Keras 3 variables, returns ``tf.Tensor``.

    Works eagerly, inside ``tf.function`` (also with ``jit_compile=True``) and under ``tf.GradientTape``;
    ``cl.Conv2D(..., backend="tensorflow")`` is a Keras 3 layer.

    Example:
        >>> import tensorflow as tf
        >>> import convlab as cl
        >>> X = tf.Variable(tf.ones((1, 6, 8, 1)))
        >>> cl.conv2d(X, tf.ones((1, 2, 1, 1)), data_format="channels_last").shape
        TensorShape([1, 6, 7, 1])
    """

    name = "tensorflow"
    framework_modules = ("tensorflow", "keras")
    package = "convlab-tensorflow"
    # "auto" rule tables (benchmarks/algorithms.py, results/algorithms-tensorflow*.json): empty, the native op
    # wins every measured shape: eager TensorFlow pays tens of us per op, so the generic shift is 6x slower than
    # tf.nn.conv2d on one 2048^2 channel and gemm 2.5x slower on N=8 C64->64 56^2 (oneDNN, already fast)
    conv_rules = ()
    pool_rules = ()

    def __init__(self) -> None:
        import tensorflow as tf

        self.tf = tf
        # tf.raw_ops: the same kernels as tf.nn, without tf.nn's per-call argument parsing (µs that count at 8x8)
        self.ops = tf.raw_ops
        # tf.Tensor (eager and symbolic), tf.Variable and Keras 3 variables all derive from this type.
        self._tensor_types = tf.__internal__.types.Tensor
        self._dtypes = {"float32": tf.float32, "float64": tf.float64}
        self._nchw: Optional[bool] = None  # whether Conv2D runs NCHW on this build: see _has_nchw_kernels
        _register_with_autograph("convlab", __name__)

    # -- tensors ------------------------------------------------------------------------------------
    def version(self) -> str:
        return self.tf.__version__

    def equivalence_settings(self) -> dict:
        experimental = self.tf.config.experimental
        experimental.enable_tensor_float_32_execution(False)  # why: TF32 rounds GPU matmul inputs to 10 bits
        experimental.enable_op_determinism()
        return {"tensor_float_32": experimental.tensor_float_32_execution_enabled(), "op_determinism": True}

    def is_tensor(self, x: Any) -> bool:
        return isinstance(x, self._tensor_types)

    def dtype_name(self, x: Any) -> str:
        dtype = x.dtype
        return dtype if isinstance(dtype, str) else dtype.name  # Keras 3 variables name their dtype with a str

    def asarray(self, x: Any, dtype: str) -> Any:
        tf = self.tf
        target = self._dtypes[dtype]
        if isinstance(x, np.ndarray):
            if tf.executing_eagerly() or not tf.inside_function():
                return tf.constant(x, dtype=target)
            # While tf.function traces, NumPy data becomes an eager tensor the function captures, as it captures
            # the caller's tensors, not a constant of the graph. Why: grappler rewrites a division by a constant
            # (an average's divisor) as a product with its reciprocal, which it folds inexactly (x / 2 can come out
            # 1 ULP low), and a tensor of a plan made while tracing would belong to that one trace's graph.
            with tf.init_scope():
                return tf.constant(x, dtype=target)
        if not isinstance(x, tf.Tensor):  # a tf.Variable or Keras variable: read its current value once
            x = tf.convert_to_tensor(x)
        return x if x.dtype == target else tf.cast(x, target)

    def constant(self, values: Sequence[float], like: Any, shape: Sequence[int]) -> Any:
        """An average's counts as an eager constant made once per values, dtype and shape (also while tracing:
        captured, as asarray does for NumPy data, so that grappler does not fold the division by it)."""
        if self.tf.executing_eagerly() or self.tf.inside_function():
            return _constant(tuple(values), self.dtype_name(like), tuple(shape))
        return super().constant(values, like, shape)

    def to_numpy(self, x: Any) -> np.ndarray:
        return self.tf.convert_to_tensor(x).numpy()

    def is_concrete(self, x: Any) -> bool:
        return self.tf.executing_eagerly()  # while tf.function traces, even a variable is read symbolically

    # -- array plumbing -----------------------------------------------------------------------------
    def reshape(self, x: Any, shape: Sequence[int]) -> Any:
        return self.ops.Reshape(tensor=x, shape=self._integers(shape))

    def transpose(self, x: Any, axes: Sequence[int]) -> Any:
        return self.ops.Transpose(x=x, perm=self._integers(axes))

    def _integers(self, values: Sequence[Any]) -> Any:
        """A shape, permutation or paddings argument, as an eager int32 constant made once when running eagerly.

        Why: a Python list argument sends an eager op down TensorFlow's slow fallback path, which converts it on
        every call (about 50 µs more than the op itself). Traced code keeps the list: a constant in the graph.
        """
        return _int32_constant(tuple(values)) if self.tf.executing_eagerly() else values

    def flip(self, x: Any, axes: Sequence[int]) -> Any:
        return self.tf.reverse(x, axes)

    def pad(self, x: Any, pads: Sequence[Pair], value: float = 0.0) -> Any:
        if not any(any(p) for p in pads):
            return x
        return self.tf.pad(x, self._integers(pads), constant_values=value)

    def maximum(self, a: Any, b: Any) -> Any:
        return self.tf.maximum(a, b)

    def sum(self, x: Any, axes: Sequence[int]) -> Any:
        return self.tf.reduce_sum(x, axis=axes)

    def matmul(self, a: Any, b: Any) -> Any:
        return self.tf.linalg.matmul(a, b)

    # -- compute primitives -------------------------------------------------------------------------
    def conv2d(self, x: Any, k: Any, bias: Any, geometry: ConvGeometry) -> Any:
        if geometry.dilation == (1, 1):
            return self._conv2d(x, k, bias, geometry)
        # why: the dilated kernel spelled out (_dilate) multiplies the pixels it skips by 0, which is NaN for NaN and
        # inf pixels: inputs holding them take tf.nn.convolution's dilation, whose products are the correlation's own
        return self._if_sum(
            x,
            algorithms.free_of_nan_and_inf,
            lambda: self._conv2d(x, k, bias, geometry),
            lambda: self._conv2d_dilated(x, k, bias, geometry),
        )

    def _conv2d_dilated(self, x: Any, k: Any, bias: Any, geometry: ConvGeometry) -> Any:
        """A dilated correlation with exactly its own products: tf.nn.convolution's dilation (space to batch, which
        CPU gradient kernels differentiate) on the padded NHWC input at stride 1, then every stride-th output."""
        g = geometry
        if not g.channels_last:
            x, k = self._move_axes(x, g.x4, NCHW_TO_NHWC), self._move_axes(k, g.k4, OIHW_TO_HWIO)
        x = self.pad(x, ((0, 0),) + g.pads + ((0, 0),))
        y = self.tf.nn.convolution(x, k, padding="VALID", dilations=g.dilation)
        if g.stride != (1, 1):
            y = y[:, :: g.stride[0], :: g.stride[1], :]
        if bias is not None:
            y = self.ops.BiasAdd(value=y, bias=bias)
        return y if g.channels_last else self._move_axes(y, _nhwc(g.out4), NHWC_TO_NCHW)

    def _if_sum(self, x: Any, test: Callable[[Any], Any], then: Callable[[], Any], otherwise: Callable[[], Any]) -> Any:
        """``then()`` where ``test(the sum of x's elements)`` holds, else ``otherwise()``: a Python branch on the sum
        read eagerly, ``tf.cond`` when traced. Why NumPy's sum of a small x: an eager Sum op costs about 100 µs
        (NumPy 20 µs at 8x8); from 64K elements TF's own is faster (1.6M: 0.33 ms vs 1.06 ms with the copy)."""
        if not self.tf.executing_eagerly():
            return self.tf.cond(test(self.ops.Sum(input=x, axis=[0, 1, 2, 3])), then, otherwise)
        if x.shape.num_elements() < SMALL_SUM:
            total = np.sum(x.numpy())
        else:
            total = self.ops.Sum(input=x, axis=self._integers((0, 1, 2, 3))).numpy()
        return then() if test(total) else otherwise()

    def _conv2d(self, x: Any, k: Any, bias: Any, geometry: ConvGeometry) -> Any:
        g = geometry
        if not g.channels_last and self._has_nchw_kernels(x.dtype):
            return self._conv2d_nchw(x, k, bias, g)
        if not g.channels_last:
            x, k = self._move_axes(x, g.x4, NCHW_TO_NHWC), self._move_axes(k, g.k4, OIHW_TO_HWIO)
        if g.dilation != (1, 1):
            k = self._dilate(k, g)
        strides, padding, explicit = _nhwc_attributes(g.stride, g.pads)
        y = self.ops.Conv2D(input=x, filter=k, strides=strides, padding=padding, explicit_paddings=explicit)
        if bias is not None:  # BiasAdd: one op and no reshape, in NHWC; graphs fuse it into the convolution
            y = self.ops.BiasAdd(value=y, bias=bias)
        return y if g.channels_last else self._move_axes(y, _nhwc(g.out4), NHWC_TO_NCHW)

    def _conv2d_nchw(self, x: Any, k: Any, bias: Any, geometry: ConvGeometry) -> Any:
        """Conv2D on the NCHW input as it is: no layout change of the input or the output, only of the kernel."""
        g = geometry
        k = self._move_axes(k, g.k4, OIHW_TO_HWIO)  # the filter is HWIO in every data format
        if g.dilation != (1, 1):
            k = self._dilate(k, g)
        # why: oneDNN's NCHW gradient kernels refuse explicit padding ("only supports NHWC"); padding first is VALID
        x = self.pad(x, ((0, 0), (0, 0)) + g.pads)
        strides = [1, 1, g.stride[0], g.stride[1]]
        y = self.ops.Conv2D(input=x, filter=k, strides=strides, padding="VALID", data_format="NCHW")
        return y if bias is None else self.ops.BiasAdd(value=y, bias=bias, data_format="NCHW")

    def _conv_transpose2d(self, x: Any, k: Any, bias: Any, geometry: TransposeGeometry) -> Any:
        """``convlab.conv_transpose2d`` of 4-D tensors with TensorFlow's own op, for a batch size not known yet.

        The Keras layers' path when model.fit traces (the core's formulation reshapes with the batch size).
        Conv2DBackpropInput is the gradient of the correlation ``geometry.forward``, from this op's output to
        its input. It runs VALID, giving the full result, which the pads then crop; rows that output_padding
        adds past the full result are zeros.
        """
        g, channels_last = geometry.forward, geometry.forward.channels_last
        x_hw = geometry.x4[1:3] if channels_last else geometry.x4[2:]
        if not channels_last:  # K (C, Co, kh, kw) is the forward correlation's OIHW kernel
            x, k = self._move_axes(x, geometry.x4, NCHW_TO_NHWC), self._move_axes(k, g.k4, OIHW_TO_HWIO)
        if g.dilation != (1, 1):
            k = self._dilate(k, g)
        full = [(n - 1) * s + (w - 1) * d + 1 for n, s, w, d in zip(x_hw, g.stride, g.window, g.dilation)]
        sizes = self.tf.stack([self.tf.shape(x)[0], *full, g.in_channels])
        strides = [1, g.stride[0], g.stride[1], 1]
        y = self.ops.Conv2DBackpropInput(input_sizes=sizes, filter=k, out_backprop=x, strides=strides, padding="VALID")
        ((top, _), (left, _)), (height, width) = g.pads, g.in_hw
        if (top, left) != (0, 0) or height < full[0] or width < full[1]:
            y = y[:, top : top + height, left : left + width, :]
        beyond = ((0, 0), (0, max(top + height - full[0], 0)), (0, max(left + width - full[1], 0)), (0, 0))
        y = self.pad(y, beyond)
        if bias is not None:
            y = self.ops.BiasAdd(value=y, bias=bias)
        return y if channels_last else self._move_axes(y, _nhwc(g.x4), NHWC_TO_NCHW)

    def _has_nchw_kernels(self, dtype: Any) -> bool:
        """Whether Conv2D, AvgPool and their gradients run NCHW here: oneDNN's float32 kernels do, TF's own do not.

        Asked once per process with a tiny convolution, since TensorFlow says which kernels it has only by failing.
        """
        if dtype != self.tf.float32:
            return False
        if self._nchw is None:
            tf = self.tf
            with tf.init_scope():  # an eager probe, also when first asked while tf.function traces
                x, k, bias = tf.zeros((1, 1, 2, 2)), tf.zeros((1, 1, 1, 1)), tf.zeros((1,))
                try:
                    with tf.GradientTape() as tape:
                        tape.watch([x, k, bias])
                        ones, nchw = [1, 1, 1, 1], "NCHW"
                        y = self.ops.Conv2D(input=x, filter=k, strides=ones, padding="VALID", data_format=nchw)
                        y = self.ops.BiasAdd(value=y, bias=bias, data_format=nchw)
                        y = self.ops.AvgPool(value=y, ksize=ones, strides=ones, padding="VALID", data_format=nchw)
                    tape.gradient(y, [x, k, bias])
                    self._nchw = True
                except tf.errors.OpError:
                    self._nchw = False
        return self._nchw

    def _dilate(self, k: Any, geometry: ConvGeometry) -> Any:
        """The HWIO kernel of ``geometry`` with zeros between its taps: the dilated kernel spelled out.

        TensorFlow's CPU kernels run dilated convolutions forward but refuse their gradients
        ("Current CPU implementations do not yet support dilation rates larger than 1"); a spelled-out
        kernel is an ordinary convolution, with stride and explicit pads, that every device can differentiate.
        """
        (kernel_h, kernel_w), (dh, dw) = geometry.window, geometry.dilation
        in_channels, out_channels = geometry.in_channels, geometry.out_channels
        spread = self.pad(
            self.reshape(k, (kernel_h, 1, kernel_w, 1, in_channels, out_channels)),
            ((0, 0), (0, dh - 1), (0, 0), (0, dw - 1), (0, 0), (0, 0)),
        )
        spread = self.reshape(spread, (kernel_h * dh, kernel_w * dw, in_channels, out_channels))
        return spread[: (kernel_h - 1) * dh + 1, : (kernel_w - 1) * dw + 1]

    def pool2d(self, x: Any, geometry: PoolGeometry) -> Any:
        g = geometry
        if g.channels_last:
            return self._pool2d_in("NHWC", x, g)
        if g.mode == "avg" and self._has_nchw_kernels(x.dtype):  # oneDNN's AvgPool and its gradient take NCHW
            return self._pool2d_in("NCHW", x, g)
        # why: MaxPool runs NCHW forward on oneDNN, but its CPU gradient is NHWC only
        y = self._pool2d_in("NHWC", self._move_axes(x, g.x4, NCHW_TO_NHWC), g)
        return self._move_axes(y, _nhwc(g.out4), NHWC_TO_NCHW)

    def _pool2d_in(self, data_format: str, x: Any, geometry: PoolGeometry, repair: bool = True) -> Any:
        """``geometry``'s pooling of ``x``, which is in ``data_format`` (the geometry's layout or the other one)."""
        g, nchw = geometry, data_format == "NCHW"
        if g.mode == "max" and repair:  # why: TF's MaxPool skips NaN and starts from the lowest finite number
            return self._max_pool(lambda z: self._pool2d_in(data_format, z, g, repair=False), x)

        def spatial(pair: Any, other: Any) -> tuple:
            """A value for the H and W axes spelled for the four axes of data_format."""
            return (other, other) + tuple(pair) if nchw else (other,) + tuple(pair) + (other,)

        ksize, strides = spatial(g.window, 1), list(spatial(g.stride, 1))
        if not g.padded:
            return self._pool(g.mode, x, ksize, strides, "VALID", data_format)
        if (g.mode == "max" or not g.count_include_pad) and g.pads == _same_pads(g.in_hw, g.window, g.stride):
            # TF's SAME pooling skips the padding: the -inf of max pooling, the real-pixel average
            return self._pool(g.mode, x, ksize, strides, "SAME", data_format)
        # Pad by hand: AvgPool has no explicit padding, and XLA refuses MaxPool's.
        fill = g.fill if x.dtype.is_floating else 0  # a max pool's uint8 code (_repaired_max_pool) pads with 0
        y = self._pool(g.mode, self.pad(x, spatial(g.pads, (0, 0)), fill), ksize, strides, "VALID", data_format)
        if g.mode == "max" or g.uniform_divisor:
            return y
        # AvgPool divided the window sums by the window's area, padded zeros counted: undo that, then divide
        # by the real pixels under each window
        sums = y * float(g.window[0] * g.window[1])
        return algorithms.divide(self, sums, g, channels_last=not nchw)

    def _max_pool(self, raw: Callable[[Any], Any], x: Any) -> Any:
        """``raw(x)`` (TensorFlow's max pooling) under convlab's non-finite rule (see :mod:`convlab.algorithms`):
        NaN propagates, a window of -inf only is -inf, the gradient goes where np.argmax points. Inputs free of NaN
        and -inf (one sum tells) run ``raw`` alone; traced, ``tf.cond`` picks."""
        test = algorithms.free_of_nan_and_negative_inf
        return self._if_sum(x, test, lambda: raw(x), lambda: _repaired_max_pool(self.tf, raw, x))

    def pool2d_shift(self, x: Any, geometry: PoolGeometry) -> Any:
        if geometry.mode == "avg":
            return super().pool2d_shift(x, geometry)
        # why: tf.maximum's gradient sends a window holding NaN to a later pixel, and one of -inf only to the padding;
        # the shifted views compute the forward pass, the native max pool's (repaired) gradient the backward pass
        tf = self.tf

        @tf.custom_gradient
        def shift(v: Any) -> Any:
            native = functools.partial(self.pool2d, geometry=geometry)
            return algorithms.pool2d_shift(self, v, geometry), lambda dy: _vjp(tf, native, v, dy)

        return shift(x)

    def _pool(self, mode: str, x: Any, ksize: tuple, strides: list, padding: str, data_format: str) -> Any:
        if mode == "max":
            return self.ops.MaxPool(input=x, ksize=ksize, strides=strides, padding=padding, data_format=data_format)
        return self.ops.AvgPool(value=x, ksize=ksize, strides=strides, padding=padding, data_format=data_format)

    def _move_axes(self, x: Any, shape: Tuple[int, ...], axes: Tuple[int, ...]) -> Any:
        """``tf.transpose(x, axes)`` of ``x`` (of 4-D ``shape``), a free reshape when only size-1 axes change place.

        Axis 0 is left to TensorFlow (-1): a Keras layer's geometry says 1 for a batch size it does not know.
        """
        moving = [axis for axis in axes if shape[axis] != 1]
        if moving == sorted(moving):
            return self.reshape(x, tuple(-1 if axis == 0 else shape[axis] for axis in axes))
        return self.transpose(x, axes)

    # -- training and layers ------------------------------------------------------------------------
    def value_and_grad(self, fn: Callable[[list], Any]) -> Callable[[list], Tuple[Any, list]]:
        tf = self.tf

        def step(params: list) -> Tuple[Any, list]:
            with tf.GradientTape() as tape:
                tape.watch(params)
                loss = fn(params)
            return loss, tape.gradient(loss, params)

        return step

    def conv2d_layer(self, config: dict, weight: np.ndarray, bias: Optional[np.ndarray]) -> Any:
        return _layer_classes()["ConvlabConv2D"](config, weight, bias)

    def pool2d_layer(self, config: dict) -> Any:
        return _layer_classes()["ConvlabPool2D"](config)


def _register_with_autograph(*packages: str) -> None:
    """Have tf.function run convlab's Python as written, as it does numpy's and keras's, and keep its errors.

    AutoGraph would otherwise rewrite the core's shape logic at every trace, and it re-raises an error from
    traced code with its own type only for types it knows take one message (else as a StagingError).
    TensorFlow has no public switch for either, so this extends its two private lists.
    """
    try:
        from tensorflow.python.autograph.core import config
        from tensorflow.python.autograph.pyct import error_utils
    except ImportError:  # a TensorFlow without these lists: convlab still works, traced slower
        return
    known = {str(rule) for rule in config.CONVERSION_RULES}
    rules = tuple(config.DoNotConvert(package) for package in packages)
    config.CONVERSION_RULES = tuple(rule for rule in rules if str(rule) not in known) + config.CONVERSION_RULES
    errors, pending = [], [ConvlabError]
    while pending:
        error = pending.pop()
        errors.append(error)
        pending.extend(error.__subclasses__())
    message_only = error_utils.KNOWN_STRING_CONSTRUCTOR_ERRORS
    error_utils.KNOWN_STRING_CONSTRUCTOR_ERRORS = message_only + tuple(e for e in errors if e not in message_only)


@functools.lru_cache(maxsize=1024)
def _nhwc_attributes(stride: Pair, pads: Pads) -> Tuple[list, str, list]:
    """The strides, padding and explicit_paddings attributes of TF's NHWC Conv2D op."""
    (top, bottom), (left, right) = pads
    strides = [1, stride[0], stride[1], 1]
    if top == bottom == left == right == 0:
        return strides, "VALID", []
    return strides, "EXPLICIT", [0, 0, top, bottom, left, right, 0, 0]


@functools.lru_cache(maxsize=1024)
def _int32_constant(values: Tuple[Any, ...]) -> Any:
    import tensorflow as tf

    with tf.device("CPU:0"):  # shapes and paddings are host-memory arguments on every device
        return tf.constant(values, tf.int32)


@functools.lru_cache(maxsize=1024)
def _constant(values: Tuple[float, ...], dtype: str, shape: Tuple[int, ...]) -> Any:
    import tensorflow as tf

    with tf.init_scope():  # eager, also when first asked while tf.function traces
        return tf.constant(np.reshape(values, shape), dtype)


class _NumpyLike:
    """The ``xp`` of convlab.algorithms' non-finite helpers in TensorFlow: tf.where takes no Python number, so a
    number takes the other branch's dtype, and uint8 when both are numbers (the code: pooled 4x faster)."""

    def __init__(self, tf: Any) -> None:
        self._tf, self.isnan = tf, tf.math.is_nan

    def where(self, condition: Any, a: Any, b: Any) -> Any:
        numbers = isinstance(a, (int, float)), isinstance(b, (int, float))
        dtype = self._tf.uint8 if all(numbers) else (b.dtype if numbers[0] else a.dtype)
        a, b = (self._tf.constant(v, dtype) if number else v for v, number in zip((a, b), numbers))
        return self._tf.where(condition, a, b)


def _repaired_max_pool(tf: Any, raw: Callable[[Any], Any], x: Any) -> Any:
    """``raw`` (TensorFlow's max pooling) repaired: the forward pass by the pooling of the input's code, the gradient
    as TensorFlow's own of the input and of the code, each given its windows' share (convlab.algorithms)."""
    xp = _NumpyLike(tf)

    @tf.custom_gradient
    def repaired(v: Any) -> Any:
        code = algorithms.nonfinite_code(xp, v)  # uint8
        y, classes = raw(v), raw(code)

        def gradient(dy: Any) -> Any:
            to_x, to_code = algorithms.split_max_pool_cotangent(xp, classes, dy)
            return _vjp(tf, raw, v, to_x) + _vjp(tf, raw, tf.cast(code, v.dtype), to_code)

        return algorithms.repair_max_pool(xp, y, classes), gradient

    return repaired(x)


def _vjp(tf: Any, fn: Callable[[Any], Any], value: Any, cotangent: Any) -> Any:
    """The gradient of ``fn`` at ``value`` applied to ``cotangent`` (fn run again under a tape)."""
    with tf.GradientTape() as tape:
        tape.watch(value)
        out = fn(value)
    return tape.gradient(out, value, output_gradients=cotangent)


@functools.lru_cache(maxsize=1024)
def _same_pads(size: Pair, window: Pair, stride: Pair) -> Pads:
    """The pads TensorFlow's "SAME" adds, which are convlab's "same" pads (the odd pixel at the bottom/right)."""
    return resolve_pads("same", size, window, stride)


def _nhwc(shape: Tuple[int, ...]) -> Tuple[int, ...]:
    """An NCHW shape in NHWC order."""
    return tuple(shape[axis] for axis in NCHW_TO_NHWC)


def _batchless(shape: Tuple[Any, ...]) -> Tuple[Any, ...]:
    """A 4-D shape with 1 for its unknown batch size: what the geometry is computed for."""
    return (1,) + tuple(shape[1:])


def _build_keras_layers() -> Dict[str, type]:
    """The Keras 3 layer classes, made on first use so that importing this module does not import Keras."""
    import keras

    import convlab

    class ConvlabConv2D(keras.layers.Layer):
        """``convlab.conv2d`` as a trainable Keras 3 layer; ``weight`` and ``bias`` are Keras variables.

        Made by ``cl.Conv2D(..., backend="tensorflow")``; trains in a ``tf.GradientTape`` loop and with
        ``model.fit`` (Keras models use ``data_format="channels_last"``), and saves with ``model.save``.
        ``cl.ConvTranspose2D(..., backend="tensorflow")`` makes one too, whose forward pass is
        ``convlab.conv_transpose2d`` (weight (C, Co, kh, kw), or (kh, kw, Co, C) channels-last).

        Example:
            >>> import numpy as np, keras, convlab as cl
            >>> layer = cl.Conv2D(3, 1, 4, padding="same", data_format="channels_last", backend="tensorflow")
            >>> model = keras.Sequential([keras.Input((8, 8, 1)), layer])
            >>> model(np.ones((2, 8, 8, 1), np.float32)).shape
            TensorShape([2, 8, 8, 4])
        """

        def __init__(self, config: dict, weight: np.ndarray, bias: Optional[np.ndarray] = None, **kwargs: Any):
            # autocast off: dtypes follow convlab's rules (float32/float64, promotion), not a Keras float16 policy
            kwargs.setdefault("autocast", False)
            super().__init__(**kwargs)
            self.convlab_backend = convlab.get_backend("tensorflow")
            self.convlab_config = _tuples(config)
            self.convlab_operation = self.convlab_config.pop("operation", "conv2d")  # or "conv_transpose2d"
            self.weight = self.add_weight(shape=weight.shape, initializer=_initial(weight), name="weight")
            self.bias = None
            if bias is not None:
                self.bias = self.add_weight(shape=bias.shape, initializer=_initial(bias), name="bias")
            self.built = True

        def call(self, inputs: Any) -> Any:
            if len(inputs.shape) == 4 and inputs.shape[0] is None:  # model.fit traces with an unknown batch size
                return self._call_unknown_batch(inputs)
            forward = convlab.conv2d if self.convlab_operation == "conv2d" else convlab.conv_transpose2d
            return forward(inputs, self.weight, self.bias, backend=self.convlab_backend, **self.convlab_config)

        def _call_unknown_batch(self, inputs: Any) -> Any:
            # The core checks static shapes: the geometry is computed for batch 1, the primitive takes any batch.
            backend = self.convlab_backend
            (x, k, bias), _ = prepare(backend, allow_unknown_batch=True, X=inputs, K=self.weight, bias=self.bias)
            geometry = self._geometry(_batchless(inputs.shape), None if self.bias is None else tuple(self.bias.shape))
            if self.convlab_operation == "conv2d":
                return backend.conv2d(x, k, bias, geometry)
            return backend._conv_transpose2d(x, k, bias, geometry)

        def _geometry(self, x_shape: Tuple[int, ...], bias_shape: Optional[Tuple[int, ...]] = None) -> Any:
            make = conv_geometry if self.convlab_operation == "conv2d" else conv_transpose_geometry
            return make(x_shape, tuple(self.weight.shape), bias_shape, **self.convlab_config)

        def compute_output_shape(self, input_shape: Tuple[Optional[int], ...]) -> Tuple[Optional[int], ...]:
            shape = tuple(input_shape)
            unknown_batch = len(shape) == 4 and shape[0] is None
            out = self._geometry(_batchless(shape) if unknown_batch else shape).out
            return (None,) + out[1:] if unknown_batch else out

        def get_config(self) -> dict:
            options = self.convlab_config
            if self.convlab_operation != "conv2d":
                options = dict(options, operation=self.convlab_operation)
            extra = dict(config=options, weight_shape=list(self.weight.shape), use_bias=self.bias is not None)
            return {**super().get_config(), **extra}

        @classmethod
        def from_config(cls, config: dict) -> Any:
            config = dict(config)
            shape, use_bias = tuple(config.pop("weight_shape")), config.pop("use_bias")
            options = _tuples(config.pop("config"))
            last = options["data_format"] == "channels_last"
            if options.get("operation", "conv2d") == "conv2d":  # weight (Co, C, kh, kw) or (kh, kw, C, Co)
                out_channels = shape[3] if last else shape[0]
            else:  # weight (C, Co, kh, kw) or (kh, kw, Co, C)
                out_channels = shape[2] if last else shape[1]
            weight = np.zeros(shape, np.float32)  # Keras loads the saved values over these
            return cls(options, weight, np.zeros(out_channels, np.float32) if use_bias else None, **config)

    class ConvlabPool2D(keras.layers.Layer):
        """``convlab.pool2d`` as a Keras 3 layer (made by ``cl.MaxPool2D`` / ``cl.AvgPool2D``).

        Example:
            >>> import tensorflow as tf, convlab as cl
            >>> cl.MaxPool2D(2, backend="tensorflow")(tf.reshape(tf.range(16.0), (4, 4))).numpy().tolist()
            [[5.0, 7.0], [13.0, 15.0]]
        """

        def __init__(self, config: dict, **kwargs: Any):
            kwargs.setdefault("autocast", False)
            super().__init__(**kwargs)
            self.convlab_backend = convlab.get_backend("tensorflow")
            self.convlab_config = _tuples(config)
            self.built = True

        def _geometry(self, shape: Tuple[int, ...]) -> PoolGeometry:
            config = dict(self.convlab_config)
            return pool_geometry(shape, config.pop("pool_size"), config.pop("mode"), **config)

        def call(self, inputs: Any) -> Any:
            backend = self.convlab_backend
            if len(inputs.shape) == 4 and inputs.shape[0] is None:  # model.fit traces with an unknown batch size
                (x,), _ = prepare(backend, allow_unknown_batch=True, X=inputs)
                return backend.pool2d(x, self._geometry(_batchless(inputs.shape)))
            return convlab.pool2d(inputs, backend=backend, **self.convlab_config)

        def compute_output_shape(self, input_shape: Tuple[Optional[int], ...]) -> Tuple[Optional[int], ...]:
            shape = tuple(input_shape)
            if len(shape) == 4 and shape[0] is None:
                return (None,) + self._geometry(_batchless(shape)).out[1:]
            return self._geometry(shape).out

        def get_config(self) -> dict:
            return {**super().get_config(), "config": self.convlab_config}

    built = {"ConvlabConv2D": ConvlabConv2D, "ConvlabPool2D": ConvlabPool2D}
    for name, cls in built.items():  # registered as convlab>ConvlabConv2D..., the names lazy_classes gives them
        keras.saving.register_keras_serializable(package="convlab", name=name)(cls)
    return built


#: ``convlab_tensorflow.ConvlabConv2D`` / ``ConvlabPool2D``, built (and Keras imported) on first access
_layer_classes, __getattr__ = lazy_classes(__name__, _build_keras_layers)


def _initial(values: np.ndarray) -> Callable[..., np.ndarray]:
    """A Keras initializer that returns the weights convlab drew (same seed, same weights on every backend)."""

    def initializer(shape: Any, dtype: Any = None) -> np.ndarray:
        return values.astype(dtype or values.dtype)

    return initializer


def _tuples(value: Any) -> Any:
    """Lists back to tuples, as convlab's configuration has them (a saved Keras config holds JSON lists)."""
    if isinstance(value, dict):
        return {key: _tuples(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return tuple(_tuples(item) for item in value)
    return value
