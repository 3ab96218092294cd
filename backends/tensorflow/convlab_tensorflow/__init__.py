"""convlab's TensorFlow backend: each primitive is one or two TensorFlow ops, computed in NHWC.

TensorFlow's own CPU kernels are NHWC, so ``data_format="channels_last"`` runs with no layout change. A
channels-first float32 convolution or average pooling runs oneDNN's NCHW kernels on the input as it is (they
differentiate NCHW too, but only with VALID padding, so pads come first as an op); other channels-first inputs
(float64, max pooling, a TensorFlow without oneDNN) move their axes with a free reshape when the moving axes
have size 1, a transpose otherwise. TensorFlow is imported when the backend is first used, never when this
module is imported.

The other TensorFlow quirks handled here, each commented where it happens: CPU gradient kernels refuse
dilations > 1 (dilated kernels are spelled out), XLA refuses explicit pooling padding and AvgPool has none
(TF's SAME or tf.pad), grappler rewrites x / constant as x * (1 / constant) (divide_no_nan keeps one
rounding), model.fit traces with an unknown batch size (the Keras layers handle it), and AutoGraph would
rewrite convlab's Python and rename its errors (convlab is registered as AutoGraph leaves numpy and keras).

Example:
    >>> import tensorflow as tf
    >>> import convlab as cl
    >>> cl.corr2d(tf.constant([[0.0, 1, 2], [3, 4, 5], [6, 7, 8]]), tf.constant([[0.0, 1], [2, 3]])).numpy().tolist()
    [[19.0, 25.0], [37.0, 43.0]]
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Optional, Sequence, Tuple

import numpy as np

from convlab.backend import Backend, Pads, Pair
from convlab.errors import ConvlabError, ConvlabValueError

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
            return tf.constant(x, dtype=target)
        if not isinstance(x, tf.Tensor):  # a tf.Variable or Keras variable: read its current value once
            x = tf.convert_to_tensor(x)
        return x if x.dtype == target else tf.cast(x, target)

    def to_numpy(self, x: Any) -> np.ndarray:
        return self.tf.convert_to_tensor(x).numpy()

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
    def conv2d(self, x: Any, k: Any, stride: Pair, pads: Pads, dilation: Pair, channels_last: bool) -> Any:
        return self.conv2d_bias(x, k, None, stride, pads, dilation, channels_last)

    def conv2d_bias(
        self, x: Any, k: Any, bias: Any, stride: Pair, pads: Pads, dilation: Pair, channels_last: bool
    ) -> Any:
        if not channels_last and self._has_nchw_kernels(x.dtype):
            return self._conv2d_nchw(x, k, bias, stride, pads, dilation)
        if not channels_last:
            x, k = self._move_axes(x, NCHW_TO_NHWC), self._move_axes(k, OIHW_TO_HWIO)
        if dilation != (1, 1):
            k = self._dilate(k, dilation)
        strides, padding, explicit = _nhwc_attributes(stride, pads)
        y = self.ops.Conv2D(input=x, filter=k, strides=strides, padding=padding, explicit_paddings=explicit)
        if bias is not None:  # BiasAdd: one op and no reshape, in NHWC; graphs fuse it into the convolution
            y = self.ops.BiasAdd(value=y, bias=bias)
        return y if channels_last else self._move_axes(y, NHWC_TO_NCHW)

    def _conv2d_nchw(self, x: Any, k: Any, bias: Any, stride: Pair, pads: Pads, dilation: Pair) -> Any:
        """Conv2D on the NCHW input as it is: no layout change of the input or the output, only of the kernel."""
        k = self._move_axes(k, OIHW_TO_HWIO)  # the filter is HWIO in every data format
        if dilation != (1, 1):
            k = self._dilate(k, dilation)
        # why: oneDNN's NCHW gradient kernels refuse explicit padding ("only supports NHWC"); padding first is VALID
        x = self.pad(x, ((0, 0), (0, 0)) + pads)
        strides = [1, 1, stride[0], stride[1]]
        y = self.ops.Conv2D(input=x, filter=k, strides=strides, padding="VALID", data_format="NCHW")
        return y if bias is None else self.ops.BiasAdd(value=y, bias=bias, data_format="NCHW")

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

    def _dilate(self, k: Any, dilation: Pair) -> Any:
        """An HWIO kernel with zeros between its taps: the dilated kernel spelled out.

        TensorFlow's CPU kernels run dilated convolutions forward but refuse their gradients
        ("Current CPU implementations do not yet support dilation rates larger than 1"); a spelled-out
        kernel is an ordinary convolution, with stride and explicit pads, that every device can differentiate.
        """
        tf = self.tf
        (kernel_h, kernel_w, in_channels, out_channels), (dh, dw) = k.shape.as_list(), dilation
        spread = tf.pad(
            tf.reshape(k, (kernel_h, 1, kernel_w, 1, in_channels, out_channels)),
            ((0, 0), (0, dh - 1), (0, 0), (0, dw - 1), (0, 0), (0, 0)),
        )
        spread = tf.reshape(spread, (kernel_h * dh, kernel_w * dw, in_channels, out_channels))
        return spread[: (kernel_h - 1) * dh + 1, : (kernel_w - 1) * dw + 1]

    def pool2d(
        self, x: Any, window: Pair, stride: Pair, pads: Pads, mode: str, count_include_pad: bool, channels_last: bool
    ) -> Any:
        if channels_last:
            return self._pool2d_in("NHWC", x, window, stride, pads, mode, count_include_pad)
        if mode == "avg" and self._has_nchw_kernels(x.dtype):  # oneDNN's AvgPool and its gradient take NCHW
            return self._pool2d_in("NCHW", x, window, stride, pads, mode, count_include_pad)
        # why: MaxPool runs NCHW forward on oneDNN, but its CPU gradient is NHWC only
        y = self._pool2d_in("NHWC", self._move_axes(x, NCHW_TO_NHWC), window, stride, pads, mode, count_include_pad)
        return self._move_axes(y, NHWC_TO_NCHW)

    def _pool2d_in(
        self, data_format: str, x: Any, window: Pair, stride: Pair, pads: Pads, mode: str, count_include_pad: bool
    ) -> Any:
        tf, nchw = self.tf, data_format == "NCHW"

        def spatial(pair: Any, other: Any) -> tuple:
            """A value for the H and W axes spelled for the four axes of data_format."""
            return (other, other) + tuple(pair) if nchw else (other,) + tuple(pair) + (other,)

        ksize, strides = spatial(window, 1), list(spatial(stride, 1))
        if not any(any(pair) for pair in pads):
            return self._pool(mode, x, ksize, strides, "VALID", data_format)
        height, width = x.shape.as_list()[2:] if nchw else x.shape.as_list()[1:3]
        if (mode == "max" or not count_include_pad) and pads == _same_pads((height, width), window, stride):
            # TF's SAME pooling skips the padding: the -inf of max pooling, the real-pixel average
            return self._pool(mode, x, ksize, strides, "SAME", data_format)
        # Pad by hand: AvgPool has no explicit padding, and XLA refuses MaxPool's.
        all_pads = spatial(pads, (0, 0))
        fill = -np.inf if mode == "max" else 0.0
        y = self._pool(mode, self.pad(x, all_pads, fill), ksize, strides, "VALID", data_format)
        if mode == "max" or count_include_pad:
            return y
        ones = self.pad(tf.ones(spatial((height, width), 1), x.dtype), all_pads)
        share = self._pool("avg", ones, ksize, strides, "VALID", data_format)  # the real pixels' share of a window
        # divide_no_nan (share is never 0): grappler rewrites x / constant as x * (1 / constant), rounding twice
        return tf.math.divide_no_nan(y, share)

    def _pool(self, mode: str, x: Any, ksize: tuple, strides: list, padding: str, data_format: str) -> Any:
        if mode == "max":
            return self.ops.MaxPool(input=x, ksize=ksize, strides=strides, padding=padding, data_format=data_format)
        return self.ops.AvgPool(value=x, ksize=ksize, strides=strides, padding=padding, data_format=data_format)

    def _move_axes(self, x: Any, axes: Tuple[int, ...]) -> Any:
        """``tf.transpose(x, axes)``, done as a free reshape when only size-1 axes change place."""
        shape = x.shape.as_list()
        moving = [axis for axis in axes if shape[axis] != 1]
        if moving == sorted(moving):
            return self.reshape(x, [-1 if shape[axis] is None else shape[axis] for axis in axes])
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
        return _keras_layers()[0](config, weight, bias)

    def pool2d_layer(self, config: dict) -> Any:
        return _keras_layers()[1](config)


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
def _same_pads(size: Pair, window: Pair, stride: Pair) -> Pads:
    """The pads TensorFlow's "SAME" adds: ceil(in / stride) outputs, the odd pixel at the bottom/right."""
    pads = []
    for length, span, step in zip(size, window, stride):
        total = max((-(-length // step) - 1) * step + span - length, 0)
        pads.append((total // 2, total - total // 2))
    return tuple(pads)


def _static_batchless(name: str, x: Any) -> Tuple[int, ...]:
    """Shape of a 4-D tensor whose batch size is unknown, with 1 for the batch; a clear error for other unknowns."""
    shape = tuple(x.shape)
    if len(shape) != 4 or None in shape[1:]:
        raise ConvlabValueError(
            f"{name} has shape {shape} with unknown dimensions; convlab needs static shapes (only the batch size "
            f"of a 4-D input may be unknown in a Keras layer): give tf.function an input_signature with full shapes"
        )
    return (1,) + shape[1:]


@functools.cache
def _keras_layers() -> Tuple[type, type]:
    """The Keras 3 layer classes, made on first use so that importing this module does not import Keras."""
    import keras

    import convlab
    from convlab.ops import _describe, _geometry, _pool_geometry, _prepare

    @keras.saving.register_keras_serializable(package="convlab")
    class ConvlabConv2D(keras.layers.Layer):
        """``convlab.conv2d`` as a trainable Keras 3 layer; ``weight`` and ``bias`` are Keras variables.

        Made by ``cl.Conv2D(..., backend="tensorflow")``; trains in a ``tf.GradientTape`` loop and with
        ``model.fit`` (Keras models use ``data_format="channels_last"``), and saves with ``model.save``.

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
            self.weight = self.add_weight(shape=weight.shape, initializer=_initial(weight), name="weight")
            self.bias = None
            if bias is not None:
                self.bias = self.add_weight(shape=bias.shape, initializer=_initial(bias), name="bias")
            self.built = True

        def call(self, inputs: Any) -> Any:
            if len(inputs.shape) == 4 and inputs.shape[0] is None:  # model.fit traces with an unknown batch size
                return self._call_unknown_batch(inputs)
            return convlab.conv2d(inputs, self.weight, self.bias, backend=self.convlab_backend, **self.convlab_config)

        def _call_unknown_batch(self, inputs: Any) -> Any:
            # The core validates static shapes: check with batch 1, then run the primitive, which takes any batch.
            backend, config = self.convlab_backend, self.convlab_config
            names = ("X", "K") if self.bias is None else ("X", "K", "bias")
            items = [_describe(backend, name, value) for name, value in zip(names, (inputs, self.weight, self.bias))]
            geometry = _geometry(
                _static_batchless("X", inputs),
                items[1].shape,
                None if self.bias is None else items[2].shape,
                config["stride"],
                config["padding"],
                config["dilation"],
                config["data_format"],
            )
            tensors, _ = _prepare(backend, items, names)
            bias = tensors[2] if self.bias is not None else None
            g = geometry
            return backend.conv2d_bias(tensors[0], tensors[1], bias, g.stride, g.pads, g.dilation, g.channels_last)

        def compute_output_shape(self, input_shape: Tuple[Optional[int], ...]) -> Tuple[Optional[int], ...]:
            shape = tuple(input_shape)
            unknown_batch = len(shape) == 4 and shape[0] is None
            probe = (1,) + shape[1:] if unknown_batch else shape
            out = convlab.output_shape(probe, tuple(self.weight.shape), **self.convlab_config)
            return (None,) + out[1:] if unknown_batch else out

        def get_config(self) -> dict:
            shape = list(self.weight.shape)
            extra = dict(config=self.convlab_config, weight_shape=shape, use_bias=self.bias is not None)
            return {**super().get_config(), **extra}

        @classmethod
        def from_config(cls, config: dict) -> Any:
            config = dict(config)
            shape, use_bias = tuple(config.pop("weight_shape")), config.pop("use_bias")
            options = _tuples(config.pop("config"))
            out_channels = shape[3] if options["data_format"] == "channels_last" else shape[0]
            weight = np.zeros(shape, np.float32)  # Keras loads the saved values over these
            return cls(options, weight, np.zeros(out_channels, np.float32) if use_bias else None, **config)

    @keras.saving.register_keras_serializable(package="convlab")
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

        def _geometry(self, shape: Tuple[int, ...]) -> Any:
            config = self.convlab_config
            return _pool_geometry(
                shape, config["pool_size"], config["mode"], config["stride"], config["padding"], config["data_format"]
            )

        def call(self, inputs: Any) -> Any:
            backend, config = self.convlab_backend, self.convlab_config
            if len(inputs.shape) == 4 and inputs.shape[0] is None:  # model.fit traces with an unknown batch size
                geometry = self._geometry(_static_batchless("X", inputs))
                (x,), _ = _prepare(backend, (_describe(backend, "X", inputs),), ("X",))
                g = geometry
                return backend.pool2d(
                    x, g.window, g.stride, g.pads, g.mode, config["count_include_pad"], g.channels_last
                )
            return convlab.pool2d(inputs, backend=backend, **config)

        def compute_output_shape(self, input_shape: Tuple[Optional[int], ...]) -> Tuple[Optional[int], ...]:
            shape = tuple(input_shape)
            if len(shape) == 4 and shape[0] is None:
                return (None,) + self._geometry((1,) + shape[1:]).out[1:]
            return self._geometry(shape).out

        def get_config(self) -> dict:
            return {**super().get_config(), "config": self.convlab_config}

    for cls in (ConvlabConv2D, ConvlabPool2D):
        cls.__qualname__ = cls.__name__  # why: the classes are found as convlab_tensorflow.<name> (module __getattr__)
    return ConvlabConv2D, ConvlabPool2D


def __getattr__(name: str) -> Any:
    """``convlab_tensorflow.ConvlabConv2D`` / ``ConvlabPool2D``, built (and Keras imported) on first access."""
    if name in ("ConvlabConv2D", "ConvlabPool2D"):
        return _keras_layers()[name == "ConvlabPool2D"]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
