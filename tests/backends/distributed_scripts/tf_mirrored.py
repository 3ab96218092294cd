"""Train convlab's Keras Conv2D with model.fit under tf.distribute.MirroredStrategy on 2 logical CPUs.

Usage: python tf_mirrored.py INPUTS.npz OUTPUT.npz

INPUTS.npz holds X (N, H, W, C), T (targets), weight (kh, kw, C, Co), bias (float64), lr and steps. The
model (keras.Input, then cl.Conv2D(..., data_format="channels_last", backend="tensorflow")) is built in
the strategy's scope and trained with one ``model.fit`` epoch of ``steps`` global batches, each the whole
data set (X repeated ``steps`` times, not shuffled), so each replica computes the gradient on half of it.
OUTPUT.npz gets the final weight and bias, their dtype and the number of replicas.
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

# before TensorFlow initialises its devices: split the one CPU into two logical devices
(CPU,) = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(CPU, [tf.config.LogicalDeviceConfiguration()] * 2)

import keras  # noqa: E402

import convlab as cl  # noqa: E402


def main(inputs: str, output: str) -> None:
    data = np.load(inputs)
    X, T, weight, bias = data["X"], data["T"], data["weight"], data["bias"]
    keras.config.set_floatx("float64")
    keras.config.set_dtype_policy("float64")  # the layer's variables in float64, like the data
    devices = [device.name for device in tf.config.list_logical_devices("CPU")]
    assert len(devices) == 2, devices
    strategy = tf.distribute.MirroredStrategy(devices)
    assert strategy.num_replicas_in_sync == 2
    with strategy.scope():
        layer = cl.Conv2D(
            weight.shape[:2], X.shape[3], T.shape[3], padding=1, data_format="channels_last", backend="tensorflow"
        )
        model = keras.Sequential([keras.Input(X.shape[1:]), layer])
        assert isinstance(layer.weight.value, tf.distribute.DistributedValues)  # one copy per replica
        layer.weight.assign(weight)
        layer.bias.assign(bias)
        model.compile(optimizer=keras.optimizers.SGD(learning_rate=float(data["lr"])), loss="mse")
    steps = int(data["steps"])  # one epoch of ``steps`` batches, each the whole data set (an epoch costs seconds)
    model.fit(np.concatenate([X] * steps), np.concatenate([T] * steps), batch_size=len(X), shuffle=False, verbose=0)
    np.savez(
        output,
        weight=layer.weight.numpy(),
        bias=layer.bias.numpy(),
        replicas=strategy.num_replicas_in_sync,
        dtype=str(layer.weight.dtype),
    )


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
