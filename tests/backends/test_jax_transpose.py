"""conv_transpose2d on JAX: against jax.lax.conv_transpose, jax.grad against the closed-form VJP, jit and vmap,
and ConvTranspose2D as a pytree trained one step with jax.grad and tree_map."""

from __future__ import annotations

import numpy as np
import pytest
import reference
import transpose_cases as tc
from conftest import require_adapter

import convlab as cl

jax = pytest.importorskip("jax")
require_adapter("jax")
jnp = jax.numpy
lax = jax.lax


def jax_transpose(X, K, stride, pads, dilation, output_padding):
    """lax.conv_transpose (the gradient of lax.conv with its kernel): explicit pads of the lhs-dilated input are
    the full pads less convlab's, plus output_padding at the end."""
    window = K.shape[2:]
    padding = [
        (d * (w - 1) - p[0], d * (w - 1) - p[1] + e) for d, w, p, e in zip(dilation, window, pads, output_padding)
    ]
    return np.asarray(
        lax.conv_transpose(
            jnp.asarray(X), jnp.asarray(K), stride, padding, rhs_dilation=dilation,
            dimension_numbers=("NCHW", "OIHW", "NCHW"), transpose_kernel=True, precision=lax.Precision.HIGHEST,
        )
    )  # fmt: skip


@tc.each_case_layout_and_algorithm
def test_equals_lax_conv_transpose_on_integers(case, data_format, algorithm):
    def lax_and_bias(X, K, bias, *geometry):
        expected = jax_transpose(X, K, *geometry) + bias.reshape(1, -1, 1, 1)
        np.testing.assert_array_equal(expected, reference.conv_transpose2d(X, K, bias, *geometry))
        return expected

    y = tc.check_equals_on_integers(case, data_format, algorithm, lax_and_bias, jnp.asarray, np.asarray)
    assert isinstance(y, jax.Array) and y.dtype == jnp.float32


@pytest.mark.parametrize("case", tc.GEOMETRIES[:6], ids=tc.IDS[:6])
def test_jit_and_vmap_equal_eager(case):
    _, x_shape, k_shape, stride, pads, dilation, extra = case
    rng = np.random.default_rng(1)
    X, K = jnp.asarray(tc.integers(rng, x_shape)), jnp.asarray(tc.integers(rng, k_shape))
    geometry = tc.options(stride, pads, dilation, extra)
    eager = cl.conv_transpose2d(X, K, **geometry)
    jitted = jax.jit(lambda x, k: cl.conv_transpose2d(x, k, **geometry))(X, K)
    np.testing.assert_array_equal(np.asarray(jitted), np.asarray(eager))
    kernels = jnp.stack([K, 2 * K])
    mapped = jax.vmap(lambda k: cl.conv_transpose2d(X, k, **geometry))(kernels)
    np.testing.assert_array_equal(np.asarray(mapped[1]), 2 * np.asarray(eager))


@tc.each_case_layout_and_algorithm
def test_grad_equals_the_closed_form_vjp(case, data_format, algorithm):
    X, K, bias, dY, geometry = tc.gradient_operands(case, data_format)

    def loss(x, k, b):
        return jnp.sum(cl.conv_transpose2d(x, k, b, algorithm=algorithm, **geometry) * dY)

    grads = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(jnp.asarray(X), jnp.asarray(K), jnp.asarray(bias))
    assert all(g.dtype == jnp.float32 for g in grads)
    tc.check_gradients([np.asarray(g) for g in grads], X, K, dY, geometry, f"jax.grad ({algorithm})")
    closed = cl.conv_transpose2d_vjp(jnp.asarray(X), jnp.asarray(K), jnp.asarray(dY), **geometry)
    assert all(isinstance(g, jax.Array) for g in closed)
    tc.check_gradients([np.asarray(g) for g in closed], X, K, dY, geometry, "conv_transpose2d_vjp")


def test_layer_is_a_pytree_and_trains_one_step():
    layer, X, target = tc.training_problem("jax")
    leaves = jax.tree_util.tree_leaves(layer)
    assert len(leaves) == 2 and leaves[0].shape == (2, 3, 3, 3) and "conv_transpose2d" in repr(layer)

    def loss(model):
        return jnp.sum((model(jnp.asarray(X)) - target) ** 2)

    value, grads = jax.jit(jax.value_and_grad(loss))(layer)
    assert type(grads) is type(layer) and grads.weight.dtype == jnp.float32
    updated = jax.tree_util.tree_map(lambda p, g: p - 1e-3 * g, layer, grads)
    assert float(loss(updated)) < float(value)
    dY = 2 * (np.asarray(layer(jnp.asarray(X))) - target)
    tc.check_sgd_step(X, dY, *([np.asarray(m.weight), np.asarray(m.bias)] for m in (layer, grads, updated)))


def test_layer_channels_last_equals_channels_first():
    first = cl.ConvTranspose2D(2, 2, 3, stride=2, seed=1, backend="jax")
    last = cl.ConvTranspose2D(2, 2, 3, stride=2, seed=1, data_format="channels_last", backend="jax")
    assert last.weight.shape == (2, 2, 3, 2)
    X = np.random.default_rng(2).standard_normal((1, 2, 3, 4)).astype(np.float32)
    y_first, y_last = np.asarray(first(jnp.asarray(X))), np.asarray(last(jnp.asarray(tc.to_last(X))))
    np.testing.assert_allclose(y_last, tc.to_last(y_first), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    "x_shape, k_shape, stride, core",
    [
        ((1, 1, 256, 256), (1, 1, 4, 4), 2, False),  # one channel, strided: lhs_dilation, the zeros never stored
        ((1, 16, 64, 64), (16, 16, 3, 3), 1, False),
        ((1, 16, 64, 64), (16, 16, 4, 4), 2, False),
        ((1, 16, 256, 256), (16, 16, 4, 4), 2, True),  # strided, many channels, large: the core's spread input
    ],
)
def test_binding_keeps_the_core_formulation_where_it_is_faster(monkeypatch, x_shape, k_shape, stride, core):
    import convlab_jax

    calls = []
    real = convlab_jax.transpose_primitive
    monkeypatch.setattr(convlab_jax, "transpose_primitive", lambda *a: calls.append(a) or real(*a))
    X, K = jnp.ones(x_shape, jnp.float32), jnp.ones(k_shape, jnp.float32)
    y = cl.conv_transpose2d(X, K, stride=stride, padding=1)
    assert bool(calls) is core
    np.testing.assert_array_equal(
        np.asarray(y), np.asarray(cl.conv_transpose2d(X, K, stride=stride, padding=1, algorithm="correlation"))
    )
