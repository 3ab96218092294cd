"""convlab's JAX ops and Conv2D pytree under jax.jit on inputs sharded over 2 host CPU devices.

Usage: python jax_sharding.py INPUTS.npz OUTPUT.npz

INPUTS.npz holds X (N, C, H, W), T (targets), K, b (float32). For each of two shardings of X and T over a
one-axis mesh of the 2 devices (over the batch axis and over the height axis) this computes, jitted:
cl.conv2d, cl.pool2d (max and avg), the Conv2D layer's output and jax.grad of a mean squared error
through the layer (a pytree of gradients), and writes them, with how each output is sharded, to
OUTPUT.npz as "<sharding>/<name>" entries. The test compares them with unsharded runs.
"""

from __future__ import annotations

import os
import sys

# before JAX is imported: two host devices from one CPU
os.environ["XLA_FLAGS"] = " ".join([os.environ.get("XLA_FLAGS", ""), "--xla_force_host_platform_device_count=2"])
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

import convlab as cl  # noqa: E402

SHARDINGS = {"batch": P("devices", None, None, None), "height": P(None, None, "devices", None)}


def conv(X, K, b):
    return cl.conv2d(X, K, b, padding=1)


def max_pool(X):
    return cl.pool2d(X, (3, 3), "max", stride=1, padding=1)


def avg_pool(X):
    return cl.pool2d(X, (3, 3), "avg", stride=1, padding=1)


def layer_output(layer, X):
    return layer(X)


def loss(layer, X, T):
    return ((layer(X) - T) ** 2).mean()


def main(inputs: str, output: str) -> None:
    assert len(jax.devices()) == 2, jax.devices()
    data = np.load(inputs)
    X, T, K, b = data["X"], data["T"], data["K"], data["b"]
    mesh = jax.sharding.Mesh(np.array(jax.devices()), ("devices",))
    layer = cl.Conv2D(3, X.shape[1], K.shape[0], padding=1, seed=0, backend="jax")
    layer = jax.tree_util.tree_map(jax.numpy.asarray, layer)  # leaves as committed arrays, replicated below
    layer = jax.device_put(layer, NamedSharding(mesh, P()))
    results = {}
    for name, spec in SHARDINGS.items():
        sharding = NamedSharding(mesh, spec)
        Xs, Ts = jax.device_put(X, sharding), jax.device_put(T, sharding)
        assert len({shard.device for shard in Xs.addressable_shards}) == 2
        outputs = {
            "conv2d": jax.jit(conv)(Xs, K, b),
            "pool2d_max": jax.jit(max_pool)(Xs),
            "pool2d_avg": jax.jit(avg_pool)(Xs),
            "layer": jax.jit(layer_output)(layer, Xs),
        }
        grads = jax.jit(jax.grad(loss))(layer, Xs, Ts)
        assert type(grads) is type(layer), type(grads)  # a Conv2D pytree of gradients
        outputs["grad_weight"], outputs["grad_bias"] = grads.weight, grads.bias
        for key, value in outputs.items():
            results[f"{name}/{key}"] = np.asarray(value)
            # how XLA laid out the result: the shape of one device's piece
            results[f"{name}/{key}/shard_shape"] = np.array(value.addressable_shards[0].data.shape)
            results[f"{name}/{key}/dtype"] = np.array(str(value.dtype))
    np.savez(output, **results)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
