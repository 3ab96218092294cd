"""TensorFlow-specific behaviour of the tensorflow backend: graphs, XLA, GradientTape, Keras 3 layers.

The cross-backend semantics are tested in tests/; here: every op inside ``tf.function`` (graph mode and
``jit_compile=True``) equal to eager, tf.Variable and Keras variable inputs, float64, layouts (channels_last
runs no transpose, one channel is a reshape), devices, gradients through every op and ``conv2d_vjp``
against GradientTape, train_kernel, the book's Variable.assign exercise, Keras layers trained in a tape
loop and with ``model.fit``, and bad input raising convlab errors with no TensorFlow frame in sight.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import reference
from adapter_cases import CONV_CASES, CONV_IDS, pool_ids

import convlab as cl
from convlab import testing
from convlab.layers import initial_weights

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")
try:
    BACKEND = cl.get_backend("tensorflow")
except cl.BackendNotAvailableError as error:  # TensorFlow installed but not the adapter
    pytest.skip(f"convlab-tensorflow not installed: {error}", allow_module_level=True)

TF_DIR = os.path.dirname(tf.__file__)
RNG = np.random.default_rng(2024)


def integers(shape, low=-3, high=4, dtype=None):
    """Integer-valued float tensors: every backend, graph and compiler must agree on them bit for bit."""
    return tf.constant(RNG.integers(low, high, size=shape), dtype or tf.float32)


def normal(shape, dtype=None):
    return tf.constant(RNG.normal(size=shape), dtype or tf.float64)


def numpy_result(fn, *tensors, **kwargs):
    """The NumPy reference backend on the same values."""
    return np.asarray(fn(*(None if t is None else t.numpy() for t in tensors), backend="numpy", **kwargs))


def channels_last(X, K):
    return tf.transpose(X, (0, 2, 3, 1)), tf.transpose(K, (2, 3, 1, 0))


def run_subprocess(code, **env):
    """Run Python code in a fresh interpreter (for what must happen before TensorFlow starts)."""
    environment = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", **env)
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], env=environment, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


# (window, stride, padding, mode, count_include_pad): every branch of TensorflowBackend._pool2d
POOL_CASES = [
    ((2, 2), 2, 0, "max", True),  # VALID
    ((3, 3), 2, 1, "max", True),  # explicit padding, symmetric
    ((3, 2), 1, ((0, 1), (1, 0)), "max", True),  # explicit padding, asymmetric
    ((2, 2), 2, 0, "avg", True),  # VALID
    ((2, 2), 1, ((1, 0), (0, 1)), "avg", True),  # tf.pad with zeros, then VALID
    ((3, 3), 2, "same", "avg", False),  # TF's own SAME: real pixels only
    ((3, 3), 1, 1, "avg", False),  # symmetric pads equal to SAME at stride 1
    ((2, 4), (1, 2), ((1, 0), (0, 2)), "avg", False),  # window sums over the real pixels' share
    ((3, 3), 2, 1, "avg", True),  # a divisor of 9
]
POOL_IDS = pool_ids(POOL_CASES)


# -- the package -------------------------------------------------------------------------------------


def test_importing_the_adapter_does_not_import_tensorflow():
    code = "import sys, convlab, convlab_tensorflow; assert not {'tensorflow', 'keras'} & set(sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_registered_through_the_entry_point():
    from importlib import metadata

    (entry,) = [e for e in metadata.entry_points(group="convlab.backends") if e.name == "tensorflow"]
    assert entry.value == "convlab_tensorflow:TensorflowBackend"
    assert cl.backends()["tensorflow"] == tf.__version__
    assert BACKEND.framework_modules == ("tensorflow", "keras") and BACKEND.package == "convlab-tensorflow"


def test_tensors_variables_and_keras_variables_select_tensorflow_and_stay_tensors():
    X = np.arange(9.0).reshape(3, 3)
    for wrap in (tf.constant, tf.Variable, keras.Variable):
        y = cl.corr2d(wrap(X.astype(np.float32)), [[0, 1], [2, 3]])
        assert isinstance(y, tf.Tensor) and y.dtype == tf.float32
        assert y.numpy().tolist() == [[19.0, 25.0], [37.0, 43.0]]
    assert isinstance(cl.pool2d(np.ones((4, 4)), 2, backend="tensorflow"), tf.Tensor)


# -- primitives --------------------------------------------------------------------------------------


@pytest.mark.parametrize("x_shape, k_shape, stride, padding, dilation", CONV_CASES, ids=CONV_IDS)
@pytest.mark.parametrize("data_format", ["channels_first", "channels_last"])
def test_conv2d_bit_identical_to_numpy_on_integers(x_shape, k_shape, stride, padding, dilation, data_format):
    X, K, bias = integers(x_shape), integers(k_shape), integers(k_shape[:1])
    if data_format == "channels_last":
        X, K = channels_last(X, K)
    options = dict(stride=stride, padding=padding, dilation=dilation, data_format=data_format)
    y = cl.conv2d(X, K, bias, **options)
    assert isinstance(y, tf.Tensor) and y.dtype == tf.float32
    np.testing.assert_array_equal(y.numpy(), numpy_result(cl.conv2d, X, K, bias, **options))


@pytest.mark.parametrize("x_shape, k_shape, stride, padding, dilation", CONV_CASES, ids=CONV_IDS)
def test_conv2d_float64_within_the_bound_of_the_oracle(x_shape, k_shape, stride, padding, dilation):
    X, K = normal(x_shape), normal(k_shape)
    y = cl.conv2d(X, K, stride=stride, padding=padding, dilation=dilation)
    assert y.dtype == tf.float64
    testing.assert_close_to_reference(y, X.numpy(), K.numpy(), stride=stride, padding=padding, dilation=dilation)
    y32 = cl.conv2d(tf.cast(X, tf.float32), tf.cast(K, tf.float32), stride=stride, padding=padding, dilation=dilation)
    x32, k32 = (tf.cast(t, tf.float32).numpy() for t in (X, K))
    testing.assert_close_to_reference(y32, x32, k32, stride=stride, padding=padding, dilation=dilation)


@pytest.mark.parametrize("window, stride, padding, mode, count_include_pad", POOL_CASES, ids=POOL_IDS)
@pytest.mark.parametrize("data_format", ["channels_first", "channels_last"])
def test_pool2d_matches_numpy_on_integers(window, stride, padding, mode, count_include_pad, data_format):
    X = integers((2, 3, 7, 8), -9, 10)
    if data_format == "channels_last":
        X = tf.transpose(X, (0, 2, 3, 1))
    options = dict(stride=stride, padding=padding, count_include_pad=count_include_pad, data_format=data_format)
    y = cl.pool2d(X, window, mode, **options)
    expected = numpy_result(cl.pool2d, X, pool_size=window, mode=mode, **options)
    if mode == "max" or (count_include_pad and window[0] * window[1] in (1, 2, 4, 8, 16)):
        np.testing.assert_array_equal(y.numpy(), expected)  # DESIGN.md section 4: the bit-identical tier
    else:  # a divisor that is not a power of two: sum and division round once each, within a few ULP
        np.testing.assert_allclose(y.numpy(), expected, rtol=4 * 2.0**-24 * window[0] * window[1], atol=0)


def _explicit(value):
    """An int, a pair or explicit pairs as ((top, bottom), (left, right))."""
    if isinstance(value, int):
        return ((value, value), (value, value))
    return tuple(v if isinstance(v, tuple) else (v, v) for v in value)


@pytest.mark.parametrize("window, stride, padding, mode, count_include_pad", POOL_CASES, ids=POOL_IDS)
def test_pool2d_matches_the_oracle_in_float64(window, stride, padding, mode, count_include_pad):
    X = normal((1, 2, 7, 8))
    y = cl.pool2d(X, window, mode, stride, padding, count_include_pad)
    assert y.dtype == tf.float64
    strides = tuple(stride) if isinstance(stride, tuple) else (stride, stride)
    if padding == "same":
        pads = tuple(reference.same_pads(size, w, s, 1) for size, w, s in zip((7, 8), window, strides))
    else:
        pads = _explicit(padding)
    expected = reference.pool2d(X.numpy(), window, strides, pads, mode, count_include_pad)
    np.testing.assert_allclose(y.numpy(), expected, rtol=4 * 2.0**-53 * window[0] * window[1], atol=0)


def test_max_pooling_pads_with_minus_infinity():
    X = -tf.ones((1, 1, 3, 3))
    for padding in (1, ((0, 2), (1, 0))):
        assert np.all(cl.pool2d(X, 3, "max", padding=padding).numpy() == -1)


def test_float32_and_float64_mix_promotes_to_float64():
    X, K = integers((1, 2, 5, 5)), integers((3, 2, 3, 3), dtype=tf.float64)
    assert cl.conv2d(X, K).dtype == tf.float64
    assert cl.conv2d(X, K.numpy()).dtype == tf.float64  # a float64 NumPy kernel counts too
    assert cl.conv2d(X, tf.cast(K, tf.float32)).dtype == tf.float32


def test_integer_and_bool_tensors_compute_in_float32():
    X = tf.reshape(tf.range(16), (4, 4))
    assert cl.corr2d(X, tf.ones((2, 2), tf.bool)).dtype == tf.float32
    assert cl.pool2d(X, 2).dtype == tf.float32
    assert cl.pool2d(tf.cast(X, tf.int64), 2, "avg").numpy().tolist() == [
        [2.5, 3.5, 4.5],
        [6.5, 7.5, 8.5],
        [10.5, 11.5, 12.5],
    ]


def test_variables_are_read_not_modified():
    X, K = tf.Variable(normal((1, 2, 6, 6))), keras.Variable(normal((2, 2, 3, 3)).numpy())
    saved = X.numpy().copy(), K.numpy().copy()
    y = cl.conv2d(X, K, padding=((0, 1), (2, 0)))
    assert isinstance(y, tf.Tensor) and not isinstance(y, tf.Variable)
    testing.assert_close_to_reference(y, saved[0], saved[1], padding=((0, 1), (2, 0)))
    cl.pool2d(X, 3, "avg", padding=((0, 1), (2, 0)), count_include_pad=False)
    cl.conv2d_vjp(X, K, tf.ones((1, 2, 5, 6), tf.float64), padding=((0, 1), (2, 0)))
    np.testing.assert_array_equal(X.numpy(), saved[0])
    np.testing.assert_array_equal(K.numpy(), saved[1])


def test_hot_path_returns_inputs_untouched():
    X = tf.ones((1, 1, 4, 4))
    assert BACKEND.asarray(X, "float32") is X
    assert BACKEND.pad(X, ((0, 0),) * 4) is X
    assert BACKEND.asarray(X, "float64").dtype == tf.float64
    variable = tf.Variable(X)
    read = BACKEND.asarray(variable, "float32")
    assert isinstance(read, tf.Tensor) and not isinstance(read, tf.Variable)


def test_tensor_types_and_dtype_names():
    keras_variable = keras.Variable(np.ones(2, np.float32))
    for tensor in (tf.ones(2), tf.Variable(tf.ones(2)), keras_variable):
        assert BACKEND.is_tensor(tensor)
    for other in (np.ones(2), [1.0], tf.ragged.constant([[1.0], [2.0, 3.0]]), tf.TensorSpec((2,))):
        assert not BACKEND.is_tensor(other)
    assert BACKEND.dtype_name(keras_variable) == "float32"
    assert BACKEND.dtype_name(tf.ones(1, tf.bfloat16)) == "bfloat16"
    assert BACKEND.dtype_name(tf.ones(1, tf.bool)) == "bool"


def test_plumbing_primitives_follow_numpy_conventions():
    X = integers((2, 3, 4))
    pads = ((1, 0), (0, 2), (3, 1))
    np.testing.assert_array_equal(BACKEND.pad(X, pads, 5.0).numpy(), np.pad(X.numpy(), pads, constant_values=5.0))
    np.testing.assert_array_equal(BACKEND.sum(X, (0, 2)).numpy(), X.numpy().sum(axis=(0, 2)))
    np.testing.assert_array_equal(BACKEND.flip(X, (1, 2)).numpy(), np.flip(X.numpy(), (1, 2)))
    np.testing.assert_array_equal(BACKEND.transpose(X, (2, 0, 1)).numpy(), X.numpy().transpose(2, 0, 1))
    np.testing.assert_array_equal(BACKEND.reshape(X, (6, -1)).numpy(), X.numpy().reshape(6, -1))


# -- layouts: what the graph runs --------------------------------------------------------------------


def _op_types(fn, *args):
    """The op types of the graph tf.function builds for fn(*args)."""
    return {op.type for op in tf.function(fn).get_concrete_function(*args).graph.get_operations()}


def test_channels_last_runs_without_any_transpose():
    X, K, bias = integers((2, 7, 7, 3)), integers((3, 3, 3, 4)), integers((4,))
    ops = _op_types(lambda X, K: cl.conv2d(X, K, bias, stride=2, padding=1, data_format="channels_last"), X, K)
    assert {"Conv2D", "BiasAdd"} <= ops and not ops & {"Transpose", "Reshape", "Pad"}
    ops = _op_types(lambda X: cl.pool2d(X, 3, "max", 2, 1, data_format="channels_last"), X)
    assert "MaxPool" in ops and not ops & {"Transpose", "Reshape", "Pad"}


def test_one_channel_is_reshaped_not_transposed():
    X, K = integers((2, 1, 7, 7)), integers((1, 1, 3, 3))
    for fn in (
        lambda X, K: cl.conv2d(X, K, padding=((1, 0), (0, 2))),
        lambda X, K: cl.corr2d(X[0, 0], K[0, 0]),
        lambda X, K: cl.pool2d(X, 2, "max", 1, ((1, 0), (0, 1))),
        lambda X, K: cl.pool2d(tf.cast(X, tf.float64), 2, "avg", 1, ((1, 0), (0, 1))),
    ):
        ops = _op_types(fn, X, K)
        assert "Reshape" in ops and "Transpose" not in ops


def test_channels_first_float32_average_pooling_runs_nchw_without_moving_anything():
    if not BACKEND._has_nchw_kernels(tf.float32):
        pytest.skip("this TensorFlow build has no NCHW AvgPool kernels (oneDNN off): channels-first transposes")
    X = integers((2, 3, 7, 7))
    for count_include_pad in (True, False):
        pool = functools.partial(cl.pool2d, pool_size=3, mode="avg", stride=2, padding=((1, 0), (0, 2)))
        pool = functools.partial(pool, count_include_pad=count_include_pad)
        ops = _op_types(pool, X)
        assert "AvgPool" in ops and not ops & {"Transpose", "Reshape"}
        with tf.GradientTape() as tape:  # AvgPool's NCHW gradient kernel exists too (MaxPool's does not)
            tape.watch(X)
            loss = tf.reduce_sum(pool(X) ** 2)
        X_last = tf.transpose(X, (0, 2, 3, 1))
        with tf.GradientTape() as tape_last:
            tape_last.watch(X_last)
            y_last = cl.pool2d(
                X_last, 3, "avg", 2, ((1, 0), (0, 2)), count_include_pad=count_include_pad, data_format="channels_last"
            )
            loss_last = tf.reduce_sum(y_last**2)
        np.testing.assert_allclose(loss.numpy(), loss_last.numpy(), rtol=1e-6)
        dX, dX_last = tape.gradient(loss, X), tape_last.gradient(loss_last, X_last)
        np.testing.assert_allclose(dX.numpy(), tf.transpose(dX_last, (0, 3, 1, 2)).numpy(), rtol=1e-6)


def _graph(fn, *args):
    return tf.function(fn).get_concrete_function(*args).graph


def test_several_channels_first_float64_are_transposed():
    X, K = tf.cast(integers((2, 3, 7, 7)), tf.float64), tf.cast(integers((4, 3, 3, 3)), tf.float64)
    assert "Transpose" in _op_types(lambda X, K: cl.conv2d(X, K), X, K)


def test_channels_first_float32_convolution_runs_nchw_without_moving_the_input():
    """oneDNN's NCHW kernels take the input as it is: only the (small) kernel is transposed, to HWIO."""
    if not BACKEND._has_nchw_kernels(tf.float32):
        pytest.skip("this TensorFlow build has no NCHW Conv2D kernels (oneDNN off): channels-first transposes")
    X, K, bias = integers((2, 3, 7, 7)), integers((4, 3, 3, 3)), integers((4,))
    graph = _graph(lambda X, K: cl.conv2d(X, K, bias, stride=2, padding=((1, 0), (0, 2)), dilation=(1, 2)), X, K)
    (conv,) = [op for op in graph.get_operations() if op.type == "Conv2D"]
    assert conv.get_attr("data_format") == b"NCHW"
    moved = [op.inputs[0].shape.as_list() for op in graph.get_operations() if op.type == "Transpose"]
    assert moved == [[4, 3, 3, 3]]
    with tf.GradientTape() as tape:  # the gradients run NCHW too (VALID padding: the pads are an op before)
        tape.watch([X, K])
        y = cl.conv2d(X, K, bias, stride=2, padding=((1, 0), (0, 2)), dilation=(1, 2))
        loss = tf.reduce_sum(y * y)
    dX, dK = tape.gradient(loss, [X, K])
    dX_last, dK_last = cl.conv2d_vjp(X, K, 2 * y, stride=2, padding=((1, 0), (0, 2)), dilation=(1, 2))[:2]
    np.testing.assert_allclose(dX.numpy(), dX_last.numpy(), rtol=1e-6)
    np.testing.assert_allclose(dK.numpy(), dK_last.numpy(), rtol=1e-6)


def test_ops_run_on_the_device_tensorflow_places_them_on():
    """Like tf.nn ops: under ``tf.device`` every op, the core's reshapes and bias included, runs there."""
    out = run_subprocess(
        """
        import tensorflow as tf, convlab as cl
        (cpu,) = tf.config.list_physical_devices("CPU")
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        X, K, bias = tf.ones((1, 2, 6, 6)), tf.ones((3, 2, 3, 3)), tf.ones(3)
        with tf.device("/CPU:1"):
            results = [
                cl.conv2d(X, K, bias, padding=((1, 0), (0, 2)), dilation=2),
                cl.pool2d(X, 2, "avg", padding=((1, 0), (0, 1)), count_include_pad=False),
                cl.corr2d(X[0, 0], K[0, 0]),
                *cl.conv2d_vjp(X, K, tf.ones((1, 3, 4, 4))),
            ]
        assert all(y.device.endswith("CPU:1") for y in results), [y.device for y in results]
        print(cl.conv2d(X, K).device)
        """
    )
    assert out.strip().endswith("CPU:0")


# -- graphs and XLA ----------------------------------------------------------------------------------


def _every_op():
    """(name, function of (X, K), X shape, K shape) for every public op that computes."""
    return [
        ("conv2d", lambda X, K: cl.conv2d(X, K, stride=2, padding="same"), (1, 2, 7, 6), (3, 2, 2, 3)),
        (
            "conv2d dilated strided",
            lambda X, K: cl.conv2d(X, K, stride=(2, 1), padding=((0, 2), (1, 0)), dilation=2),
            (1, 2, 7, 6),
            (2, 2, 2, 2),
        ),
        (
            "conv2d channels_last",
            lambda X, K: cl.conv2d(X, K, stride=(1, 2), padding=1, data_format="channels_last"),
            (2, 5, 6, 2),
            (3, 3, 2, 3),
        ),
        ("corr2d", cl.corr2d, (5, 6), (2, 3)),
        ("corr2d_multi_in", cl.corr2d_multi_in, (2, 5, 5), (2, 2, 2)),
        ("corr2d_multi_in_out", cl.corr2d_multi_in_out, (2, 5, 5), (3, 2, 2, 2)),
        ("corr2d_multi_in_out_1x1", cl.corr2d_multi_in_out_1x1, (2, 4, 5), (3, 2, 1, 1)),
        ("corr2d_matmul", lambda X, K: cl.corr2d_matmul(X, K, stride=2, padding=1), (5, 6), (2, 2)),
        ("conv_matrix", lambda X, K: cl.conv_matrix(K, (4, 5), padding=1) * X[0, 0], (5, 6), (2, 2)),
        ("max pool", lambda X, K: cl.pool2d(X * K[0], 3, "max", 2, ((0, 1), (1, 0))), (2, 6, 7), (1,)),
        # a power-of-two window: XLA's SAME average rounds 1 / count first, which is exact only for those
        ("avg pool same", lambda X, K: cl.pool2d(X * K[0], 2, "avg", 2, "same", False), (2, 5, 5), (1,)),
        (
            "avg pool asymmetric",
            lambda X, K: cl.pool2d(X * K[0], 2, "avg", 1, ((1, 0), (0, 1)), False),
            (5, 5),
            (1,),
        ),
        ("avg pool padded zeros", lambda X, K: cl.pool2d(X * K[0], 2, "avg", 2, 1), (1, 2, 5, 5), (1,)),
        (
            "conv2d_vjp",
            lambda X, K: cl.conv2d_vjp(X, K, tf.ones((1, 3, 2, 2)), stride=2, padding=((0, 1), (1, 0)), dilation=2),
            (1, 2, 5, 5),
            (3, 2, 2, 2),
        ),
    ]


EVERY_OP_IDS = [op[0] for op in _every_op()]


@pytest.mark.parametrize("jit_compile", [False, True], ids=["graph", "xla"])
@pytest.mark.parametrize("name, op, x_shape, k_shape", _every_op(), ids=EVERY_OP_IDS)
def test_every_op_inside_tf_function_equals_eager(name, op, x_shape, k_shape, jit_compile):
    X, K = integers(x_shape), integers(k_shape)
    eager = tf.nest.flatten(op(X, K))
    traced = tf.function(op, jit_compile=jit_compile)
    compiled = tf.nest.flatten(traced(X, K))
    assert len(compiled) == len(eager)
    for mine, expected in zip(compiled, eager):
        assert mine.dtype == expected.dtype and mine.shape == expected.shape
        np.testing.assert_array_equal(mine.numpy(), expected.numpy())
    assert traced.experimental_get_tracing_count() == 1
    traced(integers(x_shape), integers(k_shape))  # new values, same shapes: no retrace
    assert traced.experimental_get_tracing_count() == 1


def test_tf_function_float64_and_variables():
    X, K = tf.Variable(normal((2, 3, 6, 6))), tf.Variable(normal((4, 3, 3, 3)))
    traced = tf.function(lambda: cl.conv2d(X, K, stride=2, padding="same"), jit_compile=True)
    first = traced()
    assert first.dtype == tf.float64
    testing.assert_close_to_reference(first, X.numpy(), K.numpy(), stride=2, padding="same")
    K.assign(K * 2)  # the graph reads the variable, it did not capture its value
    np.testing.assert_allclose(traced().numpy(), 2 * first.numpy(), rtol=1e-14)


def test_unknown_dimensions_in_tf_function_are_a_convlab_error():
    conv = tf.function(lambda X: cl.conv2d(X, tf.ones((1, 1, 3, 3))), input_signature=[tf.TensorSpec((None, 1, 8, 8))])
    with pytest.raises(cl.ConvlabError):
        conv(tf.ones((2, 1, 8, 8)))
    pool = tf.function(lambda X: cl.pool2d(X, 2), input_signature=[tf.TensorSpec((None, None))])
    with pytest.raises(cl.ConvlabError):
        pool(tf.ones((8, 8)))


def test_errors_inside_tf_function_keep_their_convlab_type():
    """AutoGraph re-raises errors from traced code; convlab's must come out as themselves."""
    with pytest.raises(cl.ConvlabValueError, match="input channels"):
        tf.function(lambda X, K: cl.conv2d(X, K))(tf.ones((1, 2, 5, 5)), tf.ones((1, 3, 2, 2)))
    from tensorflow.python.autograph.impl import conversion  # private: AutoGraph's own "leave it alone" test

    assert conversion.is_allowlisted(cl.conv2d) and conversion.is_allowlisted(type(BACKEND))


def test_first_call_of_a_fresh_process_inside_tf_function():
    """The backend is created during the first trace: that trace works and keeps convlab's error types."""
    out = run_subprocess(
        """
        import tensorflow as tf, convlab as cl
        conv = tf.function(lambda X, K: cl.conv2d(X, K))
        try:
            conv(tf.ones((1, 2, 5, 5)), tf.ones((1, 3, 2, 2)))
        except Exception as error:
            print(type(error).__name__, "input channels" in str(error))
        print(conv(tf.ones((1, 3, 5, 5)), tf.ones((1, 3, 2, 2))).shape)
        """
    )
    assert out.split() == ["ConvlabValueError", "True", "(1,", "1,", "4,", "4)"]


# -- gradients ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name, op, x_shape, k_shape", _every_op(), ids=EVERY_OP_IDS)
def test_gradients_match_finite_differences(name, op, x_shape, k_shape):
    X, K = normal(x_shape), normal(k_shape)

    def loss(X, K):
        return tf.add_n([tf.reduce_sum(tf.square(y)) for y in tf.nest.flatten(op(X, K))])

    theoretical, numerical = tf.test.compute_gradient(loss, [X, K], delta=1e-6)
    for mine, finite in zip(theoretical, numerical):
        np.testing.assert_allclose(mine, finite, rtol=1e-5, atol=1e-5)
    with tf.GradientTape() as tape:
        tape.watch([X, K])
        value = loss(X, K)
    dX, dK = tape.gradient(value, [X, K])
    assert dX is not None and dK is not None and float(tf.reduce_sum(tf.abs(dX))) > 0


def _vjp_bounds(X, K, dY, options):
    """DESIGN.md section 4 for float32 gradients: 2 * n * u * (|.| (*) |.|), from the float64 reference on |inputs|.

    The gradients are bilinear with non-negative coefficients, so the reference vjp of the absolute values is
    exactly the magnitude term; n is the longest sum: N*Ho*Wo products per dK element, Co*kh*kw per dX element.
    """
    magnitudes = cl.conv2d_vjp(np.abs(X), np.abs(K), np.abs(dY), backend="numpy", **options)
    last = options["data_format"] == "channels_last"
    out_channels, in_channels = (K.shape[3], K.shape[2]) if last else K.shape[:2]
    n = max(dY.size // out_channels, K.size // in_channels)
    return [2 * n * 2.0**-24 * np.asarray(m) for m in magnitudes]


@pytest.mark.parametrize("x_shape, k_shape, stride, padding, dilation", CONV_CASES, ids=CONV_IDS)
@pytest.mark.parametrize("data_format", ["channels_first", "channels_last"])
def test_conv2d_vjp_agrees_with_gradient_tape(x_shape, k_shape, stride, padding, dilation, data_format):
    X, K, bias = normal(x_shape, tf.float32), normal(k_shape, tf.float32), normal(k_shape[:1], tf.float32)
    if data_format == "channels_last":
        X, K = channels_last(X, K)
    options = dict(stride=stride, padding=padding, dilation=dilation, data_format=data_format)
    with tf.GradientTape() as tape:
        tape.watch([X, K, bias])
        Y = cl.conv2d(X, K, bias, **options)
        dY = normal(tuple(Y.shape), tf.float32)
        product = tf.reduce_sum(Y * dY)
    taped = tape.gradient(product, [X, K, bias])
    analytic = cl.conv2d_vjp(X, K, dY, **options)
    arrays = [t.numpy().astype(np.float64) for t in (X, K, dY)]
    expected = cl.conv2d_vjp(*arrays, backend="numpy", **options)
    bounds = _vjp_bounds(*arrays, options)
    for name, mine, theirs, reference_value, bound in zip(("dX", "dK", "dbias"), analytic, taped, expected, bounds):
        assert isinstance(mine, tf.Tensor) and mine.shape == theirs.shape and mine.dtype == tf.float32, name
        reference.assert_within_bound(mine.numpy(), reference_value, bound, f"conv2d_vjp {name}")
        reference.assert_within_bound(theirs.numpy(), reference_value, bound, f"GradientTape {name}")


@pytest.mark.parametrize("x_shape, k_shape, stride, padding, dilation", CONV_CASES, ids=CONV_IDS)
def test_conv2d_vjp_equals_gradient_tape_exactly_on_integers(x_shape, k_shape, stride, padding, dilation):
    X, K = integers(x_shape), integers(k_shape)
    options = dict(stride=stride, padding=padding, dilation=dilation)
    with tf.GradientTape() as tape:
        tape.watch([X, K])
        Y = cl.conv2d(X, K, **options)
    dY = integers(tuple(Y.shape))
    dX, dK = tape.gradient(Y, [X, K], output_gradients=dY)
    analytic = cl.conv2d_vjp(X, K, dY, **options)
    np.testing.assert_array_equal(analytic[0].numpy(), dX.numpy())
    np.testing.assert_array_equal(analytic[1].numpy(), dK.numpy())
    np.testing.assert_array_equal(analytic[2].numpy(), tf.reduce_sum(dY, (0, 2, 3)).numpy())


def test_dilation_with_stride_without_onednn():
    """TensorFlow's own (Eigen) CPU kernels, as on machines without oneDNN: forward and gradients."""
    out = run_subprocess(
        """
        import numpy as np, tensorflow as tf, convlab as cl
        rng = np.random.default_rng(0)
        X = tf.constant(rng.integers(-3, 4, (2, 3, 11, 10)), tf.float32)
        K = tf.constant(rng.integers(-3, 4, (4, 3, 3, 2)), tf.float32)
        options = dict(stride=(2, 3), padding=((1, 2), (0, 1)), dilation=(3, 2))
        with tf.GradientTape() as tape:
            tape.watch([X, K])
            Y = cl.conv2d(X, K, **options)
        dY = tf.constant(rng.integers(-3, 4, Y.shape), tf.float32)
        dX, dK = tape.gradient(Y, [X, K], output_gradients=dY)
        expected = cl.conv2d_vjp(X.numpy(), K.numpy(), dY.numpy(), backend="numpy", **options)
        assert np.array_equal(Y.numpy(), cl.conv2d(X.numpy(), K.numpy(), backend="numpy", **options))
        assert np.array_equal(dX.numpy(), expected[0]) and np.array_equal(dK.numpy(), expected[1])
        print("ok")
        """,
        TF_ENABLE_ONEDNN_OPTS="0",
    )
    assert out.strip() == "ok"


def test_value_and_grad_returns_the_loss_and_tape_gradients():
    params = [tf.constant([1.0, 2.0]), tf.constant(3.0)]
    loss, grads = BACKEND.value_and_grad(lambda p: tf.reduce_sum(p[0] * p[0]) * p[1])(params)
    assert float(loss) == 15.0
    assert grads[0].numpy().tolist() == [6.0, 12.0] and float(grads[1]) == 5.0


# -- training ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("bias", [False, True])
def test_train_kernel_autodiff_and_analytic_agree_and_match_numpy(bias):
    X = cl.images.stripes()
    Y = cl.corr2d(X, cl.kernels.edge(), backend="numpy")
    numpy_run = cl.train_kernel(X, Y, epochs=10, seed=0, bias=bias, backend="numpy")
    runs = [
        cl.train_kernel(tf.constant(X), tf.constant(Y), epochs=10, seed=0, bias=bias, gradient=gradient)
        for gradient in ("autodiff", "analytic")
    ]
    tolerance = 8 * 2.0**-24 * np.arange(1, 11) * np.abs(numpy_run.losses) + 1e-6  # a few ULP per epoch
    for run in runs:
        assert isinstance(run.kernel, tf.Tensor) and run.kernel.dtype == tf.float32 and run.backend == "tensorflow"
        assert np.all(np.abs(np.subtract(run.losses, numpy_run.losses)) <= tolerance), (run.losses, numpy_run.losses)
    assert [run.gradient for run in runs] == ["autodiff", "analytic"]
    np.testing.assert_allclose(runs[0].kernel.numpy(), runs[1].kernel.numpy(), rtol=1e-5, atol=1e-6)


def test_train_kernel_in_float64():
    X = tf.constant(cl.images.stripes().astype(np.float64))
    Y = cl.corr2d(X, cl.kernels.edge())
    result = cl.train_kernel(X, Y, epochs=30, lr=3e-2)
    assert result.kernel.dtype == tf.float64
    assert result.losses[-1] < 1e-2 * result.losses[0]


def book_corr2d(X, K):
    """The notebook's corr2d (seeds/000): writes each output pixel into a tf.Variable with assign."""
    h, w = K.shape
    Y = tf.Variable(tf.zeros((X.shape[0] - h + 1, X.shape[1] - w + 1)))
    for i in range(Y.shape[0]):
        for j in range(Y.shape[1]):
            Y[i, j].assign(tf.reduce_sum(X[i : i + h, j : j + w] * K))
    return Y


def test_book_variable_assign_corr2d_gives_no_kernel_gradient_but_convlab_does():
    X = tf.Variable(tf.ones((6, 8)))
    X[:, 2:6].assign(tf.zeros((6, 4)))  # the book's stripes
    Y = cl.corr2d(X, [[1.0, -1.0]])
    layer = cl.Conv2D((1, 2), bias=False, seed=0, backend="tensorflow")  # weight (1, 1, 1, 2): OIHW
    with tf.GradientTape(persistent=True) as tape:
        book_residual = book_corr2d(X, tf.reshape(layer.weight, (1, 2))) - Y
        book_loss = tf.reduce_sum(book_residual * book_residual)
        residual = layer(X) - Y
        loss = tf.reduce_sum(residual * residual)
    np.testing.assert_array_equal(book_residual.numpy(), residual.numpy())  # same forward values...
    assert tape.gradient(book_loss, layer.weight) is None  # ...but assign cut the graph: no gradient
    gradient = tape.gradient(loss, layer.weight)
    _, expected, _ = cl.conv2d_vjp(X, layer.weight, 2 * residual)
    assert gradient.shape == (1, 1, 1, 2) and float(tf.reduce_sum(tf.abs(gradient))) > 0
    np.testing.assert_array_equal(gradient.numpy(), expected.numpy())


# -- Keras layers ------------------------------------------------------------------------------------


def test_conv2d_layer_is_a_keras_layer_with_the_seeded_weights():
    layer = cl.Conv2D((3, 2), 2, 4, seed=1, backend="tensorflow")
    assert isinstance(layer, keras.layers.Layer)
    assert [v.name for v in layer.trainable_variables] == ["weight", "bias"]
    weight, bias = initial_weights((3, 2), 2, 4, True, 1)
    np.testing.assert_array_equal(layer.weight.numpy(), weight)
    np.testing.assert_array_equal(layer.bias.numpy(), bias)
    last = cl.Conv2D(3, 2, 4, bias=False, data_format="channels_last", seed=1, backend="tensorflow")
    assert tuple(last.weight.shape) == (3, 3, 2, 4) and last.bias is None and len(last.trainable_variables) == 1
    assert isinstance(cl.MaxPool2D(2, backend="tensorflow"), keras.layers.Layer)


def test_conv2d_layer_trains_in_a_gradient_tape_loop():
    X = tf.constant(cl.images.stripes())
    Y = cl.corr2d(X, cl.kernels.edge())
    layer = cl.Conv2D((1, 2), bias=False, seed=0, backend="tensorflow")  # the book's loop: no bias, lr 3e-2
    optimizer = keras.optimizers.SGD(learning_rate=3e-2)
    losses = []
    for _ in range(20):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(tf.square(layer(X) - Y))
        grads = tape.gradient(loss, layer.trainable_variables)
        assert all(g is not None for g in grads)
        optimizer.apply_gradients(zip(grads, layer.trainable_variables))
        losses.append(float(loss))
    assert losses[-1] < 0.05 * losses[0], losses
    np.testing.assert_allclose(layer.weight.numpy().reshape(2), [1.0, -1.0], atol=0.1)


def _small_model(seed=0):
    return keras.Sequential(
        [
            keras.Input((6, 8, 1)),
            cl.Conv2D(3, 1, 4, padding=1, seed=seed, data_format="channels_last", backend="tensorflow"),
            keras.layers.ReLU(),
            cl.MaxPool2D(2, data_format="channels_last", backend="tensorflow"),
            cl.AvgPool2D(
                2, padding=((0, 1), (1, 0)), count_include_pad=False, data_format="channels_last", backend="tensorflow"
            ),
            keras.layers.Flatten(),
            keras.layers.Dense(2),
        ]
    )


def test_keras_model_with_convlab_layers_trains_with_fit():
    keras.utils.set_random_seed(0)
    model = _small_model()
    assert model.output_shape == (None, 2)
    assert model.layers[0].output.shape == (None, 6, 8, 4)
    X = RNG.normal(size=(36, 6, 8, 1)).astype(np.float32)
    target = (X.mean(axis=(1, 2, 3)) > 0).astype(np.int64)
    model.compile(optimizer=keras.optimizers.Adam(0.02), loss=keras.losses.SparseCategoricalCrossentropy(True))
    history = model.fit(X, target, batch_size=16, epochs=6, verbose=0)  # 36 = 16 + 16 + 4: a partial batch too
    losses = history.history["loss"]
    assert losses[-1] < losses[0], losses
    assert model.predict(X[:5], verbose=0).shape == (5, 2)


def test_layers_with_an_unknown_batch_size_match_eager():
    model = _small_model(seed=3)
    X = tf.constant(RNG.normal(size=(5, 6, 8, 1)), tf.float32)
    traced = tf.function(model, input_signature=[tf.TensorSpec((None, 6, 8, 1))])
    np.testing.assert_allclose(traced(X).numpy(), model(X).numpy(), rtol=1e-6, atol=1e-6)
    first = cl.Conv2D(3, 2, 3, stride=2, padding=((1, 0), (0, 2)), dilation=(1, 2), seed=2, backend="tensorflow")
    pool = cl.AvgPool2D(3, 2, padding=1, count_include_pad=False, backend="tensorflow")
    X = integers((3, 2, 7, 9))
    traced = tf.function(lambda X: pool(first(X)), input_signature=[tf.TensorSpec((None, 2, 7, 9))])
    np.testing.assert_allclose(traced(X).numpy(), pool(first(X)).numpy(), rtol=1e-6, atol=1e-6)
    assert first.compute_output_shape((None, 2, 7, 9)) == (None, 3, 3, 4)
    assert pool.compute_output_shape((None, 2, 7, 9)) == (None, 2, 4, 5)
    with pytest.raises(cl.ConvlabError, match="unknown dimensions"):
        tf.function(first, input_signature=[tf.TensorSpec((None, 2, None, 9))]).get_concrete_function()


@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # Keras's saving code, not ours
def test_keras_model_saves_and_loads_with_convlab_layers(tmp_path):
    model = _small_model(seed=5)
    X = RNG.normal(size=(3, 6, 8, 1)).astype(np.float32)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert [type(layer).__name__ for layer in loaded.layers[:4:3]] == ["ConvlabConv2D", "ConvlabPool2D"]
    assert loaded.layers[0].convlab_config == model.layers[0].convlab_config
    np.testing.assert_array_equal(loaded.predict(X, verbose=0), model.predict(X, verbose=0))


def test_layer_classes_are_reachable_from_the_module():
    import convlab_tensorflow

    assert isinstance(cl.Conv2D(2, backend="tensorflow"), convlab_tensorflow.ConvlabConv2D)
    assert isinstance(cl.AvgPool2D(2, backend="tensorflow"), convlab_tensorflow.ConvlabPool2D)
    assert convlab_tensorflow.ConvlabConv2D.__qualname__ == "ConvlabConv2D"


def test_layers_keep_float64():
    layer = cl.Conv2D(3, 2, 3, padding="same", seed=0, backend="tensorflow")
    X = normal((1, 2, 6, 6))
    y = layer(X)
    assert y.dtype == tf.float64  # convlab's promotion rule, not a Keras float32 autocast
    expected = cl.conv2d(X.numpy(), layer.weight.numpy(), layer.bias.numpy(), padding="same")
    np.testing.assert_allclose(y.numpy(), expected, rtol=1e-12, atol=1e-12)
    pooled = cl.MaxPool2D(2, backend="tensorflow")(X)
    np.testing.assert_array_equal(pooled.numpy(), cl.pool2d(X, 2, stride=2).numpy())


# -- bad input ---------------------------------------------------------------------------------------


def _no_tensorflow_frames(excinfo):
    frames = [str(entry.path) for entry in excinfo.traceback]
    assert not [path for path in frames if path.startswith(TF_DIR)], frames
    assert not isinstance(excinfo.value.__context__, tf.errors.OpError)


def test_mixed_frameworks_are_a_convlab_error():
    with pytest.raises(cl.ConvlabTypeError, match="tensorflow") as excinfo:
        cl.conv2d(tf.ones((4, 4)), np.ones((2, 2)), backend="numpy")
    _no_tensorflow_frames(excinfo)


@pytest.mark.parametrize("other", ["torch", "jax"])
def test_tensors_of_two_frameworks_are_a_convlab_error(other):
    if other == "torch":
        torch = pytest.importorskip("torch")
        foreign = torch.ones(2, 2)
    else:
        jnp = pytest.importorskip("jax.numpy")
        foreign = jnp.ones((2, 2))
    try:
        cl.get_backend(other)
    except cl.BackendNotAvailableError:
        pytest.skip(f"convlab-{other} not installed")
    with pytest.raises(cl.ConvlabTypeError, match=f"tensorflow.*{other}|{other}.*tensorflow") as excinfo:
        cl.conv2d(tf.ones((4, 4)), foreign)
    _no_tensorflow_frames(excinfo)


@pytest.mark.parametrize(
    "call, error, message",
    [
        (lambda: cl.conv2d(tf.ones((1, 1, 1, 4, 4)), tf.ones((1, 1, 2, 2))), cl.ConvlabValueError, "X must be"),
        (lambda: cl.conv2d(tf.ones((1, 1, 4, 4)), tf.ones((2, 2, 2))), cl.ConvlabValueError, "K must be"),
        (lambda: cl.corr2d(tf.ones((3, 4, 4)), tf.ones((2, 2))), cl.ConvlabValueError, "2-D X"),
        (lambda: cl.pool2d(tf.ones((4,)), 2), cl.ConvlabValueError, "X must be"),
        (lambda: cl.conv2d(tf.ones((1, 2, 4, 4)), tf.ones((1, 3, 2, 2))), cl.ConvlabValueError, "input channels"),
        (lambda: cl.conv2d(tf.ones((3, 3)), tf.ones((4, 4))), cl.ConvlabValueError, "larger|window|kernel"),
        (lambda: cl.conv2d(tf.ones((4, 4)), tf.ones((2, 2), tf.float16)), cl.ConvlabTypeError, "K has dtype float16"),
        (lambda: cl.conv2d(tf.ones((4, 4), tf.bfloat16), tf.ones((2, 2))), cl.ConvlabTypeError, "bfloat16"),
        (lambda: cl.pool2d(tf.ones((4, 4), tf.complex64), 2), cl.ConvlabTypeError, "complex64"),
        (lambda: cl.conv2d(tf.ones((4, 4)), tf.ones((2, 2)), stride=0), cl.ConvlabValueError, "stride"),
        (lambda: cl.conv2d_vjp(tf.ones((4, 4)), tf.ones((2, 2)), tf.ones((2, 2))), cl.ConvlabValueError, "dY"),
    ],
    ids=[
        "5-D X",
        "3-D K",
        "corr2d rank",
        "1-D pool",
        "channels",
        "kernel too large",
        "float16 K",
        "bfloat16 X",
        "complex X",
        "stride 0",
        "dY shape",
    ],
)
def test_bad_input_is_a_convlab_error_not_a_tensorflow_trace(call, error, message):
    with pytest.raises(error, match=message) as excinfo:
        call()
    _no_tensorflow_frames(excinfo)
