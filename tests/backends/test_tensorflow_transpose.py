"""conv_transpose2d on TensorFlow: against tf.nn.conv2d_transpose, GradientTape against the closed-form VJP,
tf.function (also jit_compile) equal to eager, and ConvTranspose2D as a Keras layer trained one step (tape loop)
and in model.fit."""

from __future__ import annotations

import numpy as np
import pytest
import transpose_cases as tc
from conftest import require_adapter

import convlab as cl

tf = pytest.importorskip("tensorflow")
require_adapter("tensorflow")
keras = pytest.importorskip("keras")


def expressible(stride, pads, dilation, output_padding) -> bool:
    """tf.nn.conv2d_transpose on the CPU: no dilation ("Current CPU implementations do not yet support dilation
    rates larger than 1", with any stride), and output_padding smaller than the stride (the output's correlation
    must give the input's shape back)."""
    return dilation == (1, 1) and all(e < s for e, s in zip(output_padding, stride))


def tf_transpose(X, K, bias, stride, pads, dilation, output_padding):
    """TensorFlow's own transposed convolution, NHWC with explicit padding and the output shape given."""
    out = cl.conv_transpose2d(X, K, stride=stride, padding=pads, dilation=dilation, output_padding=output_padding)
    padding = [[0, 0], list(pads[0]), list(pads[1]), [0, 0]]
    shape = (X.shape[0],) + out.shape[2:] + (K.shape[1],)
    y = tf.nn.conv2d_transpose(tc.to_last(X), tc.to_last(K, kernel=True), shape, stride, padding, dilations=dilation)
    y = y.numpy().transpose(0, 3, 1, 2)
    return y if bias is None else y + bias.reshape(1, -1, 1, 1)


@tc.each_case_layout_and_algorithm
def test_equals_tf_nn_conv2d_transpose_on_integers(case, data_format, algorithm):
    # where TensorFlow has no such transposed convolution on the CPU: the oracle (convlab has one)
    y = tc.check_equals_on_integers(case, data_format, algorithm, tf_transpose, tf.constant, np.asarray, expressible)
    assert isinstance(y, tf.Tensor) and y.dtype == tf.float32


@pytest.mark.parametrize("jit_compile", [False, True])
@pytest.mark.parametrize("case", tc.GEOMETRIES[:4] + tc.GEOMETRIES[9:10], ids=tc.IDS[:4] + tc.IDS[9:10])
def test_tf_function_equals_eager(case, jit_compile):
    _, x_shape, k_shape, stride, pads, dilation, extra = case
    rng = np.random.default_rng(2)
    X, K = tf.constant(tc.integers(rng, x_shape)), tf.constant(tc.integers(rng, k_shape))
    geometry = tc.options(stride, pads, dilation, extra)
    eager = cl.conv_transpose2d(X, K, **geometry)
    traced = tf.function(lambda x, k: cl.conv_transpose2d(x, k, **geometry), jit_compile=jit_compile)(X, K)
    np.testing.assert_array_equal(traced.numpy(), eager.numpy())


def test_layer_is_a_keras_layer_and_trains_one_step():
    layer, X, target = tc.training_problem("tensorflow")
    assert isinstance(layer, keras.layers.Layer) and [v.name for v in layer.trainable_variables] == ["weight", "bias"]
    assert tuple(layer.weight.shape) == (2, 3, 3, 3)
    weight, bias = layer.weight.numpy().copy(), layer.bias.numpy().copy()
    optimizer = keras.optimizers.SGD(learning_rate=1e-3)
    with tf.GradientTape() as tape:
        y = layer(tf.constant(X))
        loss = tf.reduce_sum(tf.square(y - target))
    grads = tape.gradient(loss, layer.trainable_variables)
    optimizer.apply_gradients(zip(grads, layer.trainable_variables))
    assert float(tf.reduce_sum(tf.square(layer(tf.constant(X)) - target))) < float(loss)
    dY = 2 * (y.numpy() - target)
    grads = [g.numpy() for g in grads]
    tc.check_sgd_step(X, dY, (weight, bias), grads, (layer.weight.numpy(), layer.bias.numpy()))


def test_layer_in_a_keras_model_trains_with_fit():
    """model.fit traces with an unknown batch size; the channels-last layer upsamples 4x5 to 8x10."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((4, 5, 2)),
            cl.ConvTranspose2D(
                3,
                2,
                3,
                stride=2,
                padding=1,
                output_padding=1,
                seed=1,
                data_format="channels_last",
                backend="tensorflow",
            ),
        ]
    )
    assert model.output_shape == (None, 8, 10, 3)
    rng = np.random.default_rng(3)
    X = rng.standard_normal((20, 4, 5, 2)).astype(np.float32)
    teacher = cl.ConvTranspose2D(
        3, 2, 3, stride=2, padding=1, output_padding=1, seed=2, data_format="channels_last", backend="numpy"
    )
    target = teacher(X).astype(np.float32)
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
    losses = model.fit(X, target, batch_size=8, epochs=4, verbose=0).history["loss"]  # 20 = 8 + 8 + 4
    assert losses[-1] < losses[0], losses
    np.testing.assert_allclose(model.predict(X[:3], verbose=0), model(X[:3]).numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "x_shape, k_shape, stride, output_padding, dilation, core",
    [
        ((1, 6, 6, 16), (3, 3, 16, 16), 1, 0, 1, False),  # Conv2DBackpropInput, the kernel of tf.nn.conv2d_transpose
        ((1, 6, 6, 1), (3, 3, 1, 1), 2, 1, 1, False),
        ((1, 6, 6, 1), (3, 3, 1, 1), 2, 0, 2, True),  # dilated: no TF CPU kernel; a spelled-out one makes 0 * inf NaN
        ((1, 6, 6, 1), (3, 3, 1, 1), 1, 1, 2, True),  # output_padding >= stride: TF has no such op
        ((1, 256, 256, 16), (3, 3, 16, 16), 1, 0, 1, True),  # stride 1, many channels: one Conv2D is faster
        ((1, 128, 128, 8), (3, 3, 8, 8), 1, 0, 1, True),
        ((1, 512, 512, 4), (3, 3, 4, 4), 1, 0, 1, True),
        ((1, 256, 256, 4), (3, 3, 4, 4), 1, 0, 1, False),
    ],
)
def test_binding_keeps_the_core_formulation_where_needed(
    monkeypatch, x_shape, k_shape, stride, output_padding, dilation, core
):
    import convlab_tensorflow

    calls = []
    for name in ("transpose_primitive", "correlation_kernel"):  # the core's formulation, or its stride-1 correlation
        real = getattr(convlab_tensorflow, name)
        monkeypatch.setattr(convlab_tensorflow, name, lambda *a, real=real: calls.append(a) or real(*a))
    options = dict(stride=stride, padding=1, output_padding=output_padding, dilation=dilation)
    X, K = tf.ones(x_shape), tf.ones(k_shape)
    y = cl.conv_transpose2d(X, K, data_format="channels_last", **options)
    assert bool(calls) is core
    expected = cl.conv_transpose2d(X, K, data_format="channels_last", algorithm="correlation", **options)
    np.testing.assert_array_equal(y.numpy(), expected.numpy())
