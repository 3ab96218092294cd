"""TensorFlow-specific behaviour of the tensorflow backend: graphs, XLA, GradientTape, Keras 3 layers.

What every backend does the same way (lazy import, registration, the primitives against NumPy and the oracle,
conv2d_vjp against autodiff, train_kernel, inputs never modified, bad input) is in tests/test_backend_contract.py;
here: every op inside ``tf.function`` (graph mode and ``jit_compile=True``) equal to eager, tf.Variable and Keras
variable inputs, TensorFlow's integer and bool tensors, layouts (channels_last runs no transpose, one channel is
a reshape), devices, gradients through every op against finite differences, the book's Variable.assign exercise,
Keras layers trained in a tape loop and with ``model.fit``, and bad input only TensorFlow can give (its dtypes,
two frameworks' tensors) raising convlab errors with no TensorFlow frame in sight.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from adapter_cases import EVERY_OP, EVERY_OP_IDS
from conftest import require_adapter

import convlab as cl
from convlab import testing
from convlab.layers import initial_weights

tf = pytest.importorskip("tensorflow")
require_adapter("tensorflow")
keras = pytest.importorskip("keras")
BACKEND = cl.get_backend("tensorflow")

TF_DIR = os.path.dirname(tf.__file__)
RNG = np.random.default_rng(2024)


def integers(shape, low=-3, high=4, dtype=None):
    """Integer-valued float tensors: every backend, graph and compiler must agree on them bit for bit."""
    return tf.constant(RNG.integers(low, high, size=shape), dtype or tf.float32)


def normal(shape, dtype=None):
    return tf.constant(RNG.normal(size=shape), dtype or tf.float64)


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


# -- the package -------------------------------------------------------------------------------------


def test_variables_and_keras_variables_select_tensorflow_and_give_tensors():
    X = np.arange(9.0).reshape(3, 3)
    for wrap in (tf.Variable, keras.Variable):
        variable = wrap(X.astype(np.float32))
        assert type(variable).__module__.split(".")[0] in BACKEND.framework_modules  # keras's own, for Keras's
        y = cl.corr2d(variable, [[0, 1], [2, 3]])
        assert isinstance(y, tf.Tensor) and not isinstance(y, tf.Variable) and y.dtype == tf.float32
        assert y.numpy().tolist() == [[19.0, 25.0], [37.0, 43.0]]
    read = BACKEND.asarray(tf.Variable(tf.ones((1, 1, 4, 4))), "float32")
    assert isinstance(read, tf.Tensor) and not isinstance(read, tf.Variable)


# -- primitives --------------------------------------------------------------------------------------


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


def test_tensor_types_and_dtype_names():
    keras_variable = keras.Variable(np.ones(2, np.float32))
    for tensor in (tf.ones(2), tf.Variable(tf.ones(2)), keras_variable):
        assert BACKEND.is_tensor(tensor)
    for other in (np.ones(2), [1.0], tf.ragged.constant([[1.0], [2.0, 3.0]]), tf.TensorSpec((2,))):
        assert not BACKEND.is_tensor(other)
    assert BACKEND.dtype_name(keras_variable) == "float32"
    assert BACKEND.dtype_name(tf.ones(1, tf.bfloat16)) == "bfloat16"
    assert BACKEND.dtype_name(tf.ones(1, tf.bool)) == "bool"


# -- layouts: what the graph runs --------------------------------------------------------------------


def _op_types(fn, *args):
    """The op types of the graph tf.function builds for fn(*args), those of its functions (the branches of the
    tf.cond that skips convlab's non-finite repair of max pooling) included."""
    definition = tf.function(fn).get_concrete_function(*args).graph.as_graph_def()
    types = {node.op for node in definition.node}
    for function in definition.library.function:
        types |= {node.op for node in function.node_def}
    return types


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


@pytest.mark.parametrize("jit_compile", [False, True], ids=["graph", "xla"])
@pytest.mark.parametrize("name, op, x_shape, k_shape", EVERY_OP, ids=EVERY_OP_IDS)
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


@pytest.mark.parametrize("name, op, x_shape, k_shape", EVERY_OP, ids=EVERY_OP_IDS)
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


# -- training ----------------------------------------------------------------------------------------


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
    [  # what only TensorFlow tensors can be (the shared cases are in tests/test_backend_contract.py)
        (lambda: cl.conv2d(tf.ones((4, 4)), tf.ones((2, 2), tf.float16)), cl.ConvlabTypeError, "K has dtype float16"),
        (lambda: cl.conv2d(tf.ones((4, 4), tf.bfloat16), tf.ones((2, 2))), cl.ConvlabTypeError, "bfloat16"),
        (lambda: cl.pool2d(tf.ones((4, 4), tf.complex64), 2), cl.ConvlabTypeError, "complex64"),
    ],
    ids=["float16 K", "bfloat16 X", "complex X"],
)
def test_bad_input_is_a_convlab_error_not_a_tensorflow_trace(call, error, message):
    with pytest.raises(error, match=message) as excinfo:
        call()
    _no_tensorflow_frames(excinfo)
