"""JAX-specific behaviour of the jax backend: jit, vmap, grad, pytree layers, float64 and x64 mode.

What every backend does the same way (lazy import, registration, eager primitives against NumPy and the oracle,
conv2d_vjp against autodiff, train_kernel, inputs never modified, bad input) is in tests/test_backend_contract.py;
here: tracers selecting the backend, every op under ``jax.jit`` equal to eager and to NumPy, ``jax.vmap`` over
kernels and images, ``jax.grad`` through pooling and the chapter functions (against convlab's closed-form
gradients and the float64 reference), float64 with x64 on and a clear error with it off, JAX's integer arrays,
Conv2D / pooling layers as pytrees trained with jitted SGD steps, no device-to-host copies, and bad input under
jit (including traced configuration) raising convlab errors rather than JAX errors.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import traceback

import numpy as np
import pytest
import reference
from adapter_cases import BAD_INPUT, CONV_CASES, CONV_IDS, POOL_CASES, POOL_IDS
from conftest import require_adapter

import convlab as cl
from convlab import testing

jax = pytest.importorskip("jax")
require_adapter("jax")
jnp = jax.numpy
BACKEND = cl.get_backend("jax")

RNG = np.random.default_rng(2025)


def integers(shape, low=-3, high=4, dtype=np.float32):
    """Integer-valued floats: every backend must agree on them bit for bit."""
    return RNG.integers(low, high, size=shape).astype(dtype)


def ones(shape, dtype=jnp.float32):
    """Explicitly float32: with jax_enable_x64 on, JAX's default float is float64."""
    return jnp.ones(shape, dtype)


def normal(shape, dtype=np.float32):
    return RNG.normal(size=shape).astype(dtype)


def to_channels_last(X, K):
    return np.ascontiguousarray(X.transpose(0, 2, 3, 1)), np.ascontiguousarray(K.transpose(2, 3, 1, 0))


def assert_same(actual, expected):
    """Bit-identical values and the same dtype; ``actual`` must be a JAX array."""
    assert isinstance(actual, jax.Array), type(actual)
    expected = np.asarray(expected)
    assert actual.dtype == expected.dtype, (actual.dtype, expected.dtype)
    np.testing.assert_array_equal(np.asarray(actual), expected)


def jitted(fn, **options):
    """``fn`` with its configuration bound as static Python values, under jax.jit."""
    return jax.jit(functools.partial(fn, **options))


DATA_FORMATS = ["channels_first", "channels_last"]


# -- the package ------------------------------------------------------------------------------------


def test_tracers_select_the_jax_backend():
    X = jnp.arange(9.0, dtype=jnp.float32).reshape(3, 3)
    seen = []

    def traced(X):
        seen.append(BACKEND.is_tensor(X) and cl.registry.backend_of(X) is BACKEND)
        return cl.corr2d(X, [[0, 1], [2, 3]])

    jax.jit(traced)(X)
    jax.vmap(traced)(jnp.stack([X, X]))
    jax.grad(lambda X: traced(X).sum())(X)
    assert seen == [True, True, True]
    assert not BACKEND.is_tensor(np.ones(3))


# -- primitives under jit: against NumPy and against eager ------------------------------------------


@pytest.mark.parametrize("x_shape, k_shape, stride, padding, dilation", CONV_CASES, ids=CONV_IDS)
@pytest.mark.parametrize("data_format", DATA_FORMATS)
def test_conv2d_under_jit_bit_identical_to_numpy(x_shape, k_shape, stride, padding, dilation, data_format):
    X, K, bias = integers(x_shape), integers(k_shape), integers(k_shape[:1])
    if data_format == "channels_last":
        X, K = to_channels_last(X, K)
    options = dict(stride=stride, padding=padding, dilation=dilation, data_format=data_format)
    expected = cl.conv2d(X, K, bias, backend="numpy", **options)
    assert_same(jitted(cl.conv2d, **options)(jnp.asarray(X), jnp.asarray(K), jnp.asarray(bias)), expected)


@pytest.mark.parametrize("x_shape, k_shape, stride, padding, dilation", CONV_CASES, ids=CONV_IDS)
def test_conv2d_on_general_floats_within_the_design_bound(x_shape, k_shape, stride, padding, dilation):
    X, K = normal(x_shape), normal(k_shape)
    options = dict(stride=stride, padding=padding, dilation=dilation)
    y = jitted(cl.conv2d, **options)(jnp.asarray(X), jnp.asarray(K))
    assert testing.assert_close_to_reference(y, X, K, exact=False, **options) <= 1.0


@pytest.mark.parametrize("window, stride, padding, mode, count_include_pad", POOL_CASES, ids=POOL_IDS)
@pytest.mark.parametrize("data_format", DATA_FORMATS)
def test_pool2d_under_jit_equals_eager(window, stride, padding, mode, count_include_pad, data_format):
    X = integers((2, 3, 7, 8), -9, 10)
    if data_format == "channels_last":
        X = np.ascontiguousarray(X.transpose(0, 2, 3, 1))
    options = dict(stride=stride, padding=padding, count_include_pad=count_include_pad, data_format=data_format)
    eager = cl.pool2d(jnp.asarray(X), window, mode, **options)  # against NumPy: tests/test_backend_contract.py
    assert_same(jitted(cl.pool2d, pool_size=window, mode=mode, **options)(jnp.asarray(X)), np.asarray(eager))


CHAPTER_CALLS = {
    "corr2d": (cl.corr2d, [(5, 6), (2, 3)], {}),
    "corr2d_multi_in": (cl.corr2d_multi_in, [(2, 5, 6), (2, 2, 2)], {}),
    "corr2d_multi_in_out": (cl.corr2d_multi_in_out, [(2, 5, 6), (3, 2, 2, 2)], {}),
    "corr2d_multi_in_out_1x1": (cl.corr2d_multi_in_out_1x1, [(3, 4, 5), (2, 3, 1, 1)], {}),
    "corr2d_matmul": (cl.corr2d_matmul, [(5, 6), (2, 3)], dict(stride=2, padding=1, dilation=(1, 2))),
    "conv_matrix": (cl.conv_matrix, [(3, 2)], dict(input_shape=(4, 5), padding="same")),
    "conv2d_vjp": (cl.conv2d_vjp, [(2, 2, 6, 7), (3, 2, 3, 2), (2, 3, 3, 5)], dict(stride=2, padding=((1, 0), (2, 1)))),
    "conv2d_bias": (cl.conv2d, [(2, 3, 5, 5), (4, 3, 2, 2), (4,)], dict(padding="same")),
    "pool2d_max": (cl.pool2d, [(2, 3, 5, 7)], dict(pool_size=(2, 3), padding=1)),
    "pool2d_avg": (cl.pool2d, [(3, 5, 7)], dict(pool_size=2, mode="avg", padding=1, count_include_pad=False)),
}


@pytest.mark.parametrize("name", sorted(CHAPTER_CALLS))
def test_every_public_op_under_jit_equals_eager_equals_numpy(name):
    fn, shapes, options = CHAPTER_CALLS[name]
    arrays = [integers(shape) for shape in shapes]
    expected = fn(*arrays, backend="numpy", **options)
    eager = fn(*map(jnp.asarray, arrays), **options)
    compiled = jitted(fn, **options)(*map(jnp.asarray, arrays))
    for want, got, via_jit in zip(*(x if isinstance(x, tuple) else (x,) for x in (expected, eager, compiled))):
        assert_same(got, want)
        assert_same(via_jit, want)


# -- vmap -----------------------------------------------------------------------------------------


def test_vmap_over_a_batch_of_kernels():
    X, kernels = jnp.asarray(integers((6, 7))), jnp.asarray(integers((5, 2, 3)))
    batched = jax.vmap(lambda K: cl.corr2d(X, K))(kernels)
    assert batched.shape == (5, 5, 5)
    for index in range(5):
        assert_same(batched[index], cl.corr2d(np.asarray(X), np.asarray(kernels[index]), backend="numpy"))
    # 4-D kernels with stride, padding and dilation, under jit too: the core sees one kernel's shape
    X4, kernels4 = jnp.asarray(integers((2, 3, 8, 8))), jnp.asarray(integers((4, 2, 3, 3, 3)))
    options = dict(stride=2, padding="same", dilation=(1, 2))
    batched = jax.jit(jax.vmap(lambda K: cl.conv2d(X4, K, **options)))(kernels4)
    for index in range(4):
        expected = cl.conv2d(np.asarray(X4), np.asarray(kernels4[index]), backend="numpy", **options)
        assert_same(batched[index], expected)


def test_vmap_over_images_and_over_both():
    images, kernels = jnp.asarray(integers((4, 2, 6, 6))), jnp.asarray(integers((4, 3, 2, 2, 2)))
    per_image = jax.vmap(lambda X: cl.conv2d(X, kernels[0], padding=1))(images)  # X is (C, H, W) per example
    assert_same(per_image, cl.conv2d(np.asarray(images), np.asarray(kernels[0]), padding=1, backend="numpy"))
    pooled = jax.vmap(lambda X: cl.pool2d(X, 2, "avg", stride=2, padding=1, count_include_pad=False))(images)
    expected = cl.pool2d(np.asarray(images), 2, "avg", 2, 1, False, backend="numpy")
    assert_same(pooled, expected)
    pairs = jax.vmap(cl.corr2d_multi_in_out)(images, kernels)
    for index in range(4):
        want = cl.corr2d_multi_in_out(np.asarray(images[index]), np.asarray(kernels[index]), backend="numpy")
        assert_same(pairs[index], want)


# -- grad -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("window, stride, padding, mode, count_include_pad", POOL_CASES, ids=POOL_IDS)
def test_grad_through_pooling_matches_the_float64_reference(window, stride, padding, mode, count_include_pad):
    X = RNG.permutation(2 * 7 * 8).reshape(1, 2, 7, 8).astype(np.float32)  # distinct values: one maximum
    options = dict(pool_size=window, mode=mode, stride=stride, padding=padding, count_include_pad=count_include_pad)
    dY = integers(cl.pool2d(X, backend="numpy", **options).shape)
    grad = jax.jit(jax.grad(lambda X: jnp.sum(cl.pool2d(X, **options) * dY)))(jnp.asarray(X))
    expected, _, _ = testing._pool2d_vjp_reference(X.astype(np.float64), dY.astype(np.float64), **options)
    np.testing.assert_allclose(np.asarray(grad), expected, rtol=4 * 2.0**-24 * window[0] * window[1], atol=1e-6)


@pytest.mark.parametrize("name", sorted(set(CHAPTER_CALLS) - {"conv2d_vjp", "conv_matrix", "pool2d_max", "pool2d_avg"}))
def test_grad_through_the_chapter_functions_equals_the_closed_form(name):
    fn, shapes, options = CHAPTER_CALLS[name]
    arrays = [jnp.asarray(integers(shape)) for shape in shapes]
    dY = jnp.asarray(integers(np.shape(fn(*arrays, **options))))
    grads = jax.grad(lambda *a: jnp.sum(fn(*a, **options) * dY), argnums=tuple(range(len(arrays))))(*arrays)
    # Each chapter function is a conv2d of (views of) its inputs, so conv2d_vjp gives the gradients.
    X, K, dY = (np.asarray(a) for a in (arrays[0], arrays[1], dY))
    if name == "corr2d_multi_in":  # (C, H, W) * (C, kh, kw) is conv2d with one output channel
        K, dY = K[None], dY[None]
    dX, dK, dbias = cl.conv2d_vjp(X, K, dY, backend="numpy", **options)
    assert_same(grads[0], dX)
    assert_same(grads[1], dK.reshape(shapes[1]))
    if len(arrays) == 3:
        assert_same(grads[2], dbias)


def test_grad_through_conv_matrix_equals_the_closed_form():
    X, K, dY = (jnp.asarray(integers(shape)) for shape in ((4, 5), (3, 2), (4, 5)))

    def loss(X, K):  # conv_matrix(K) @ X.ravel() is corr2d(X, K) with the same padding
        return jnp.sum((cl.conv_matrix(K, X.shape, padding="same") @ X.ravel()).reshape(dY.shape) * dY)

    dX, dK = jax.jit(jax.grad(loss, argnums=(0, 1)))(X, K)
    expected = cl.conv2d_vjp(np.asarray(X), np.asarray(K), np.asarray(dY), padding="same", backend="numpy")
    assert_same(dX, expected[0])
    assert_same(dK, expected[1])


# -- dtypes and x64 -------------------------------------------------------------------------------


def test_float64_with_x64_on():
    X, K = normal((2, 3, 6, 6), np.float64), normal((2, 3, 3, 3), np.float64)
    with jax.enable_x64(True):
        BACKEND.check_float64()
        y = cl.conv2d(jnp.asarray(X), jnp.asarray(K), padding=1, stride=2)
        assert y.dtype == jnp.float64
        testing.assert_close_to_reference(y, X, K, padding=1, stride=2, exact=False)
        mixed = cl.conv2d(jnp.asarray(X, jnp.float32), K)  # float32 X with a float64 K is promoted
        assert mixed.dtype == jnp.float64
        pooled = jax.jit(lambda X: cl.pool2d(X, 3, "avg", padding=1, count_include_pad=False))(jnp.asarray(X))
        assert pooled.dtype == jnp.float64
        expected = reference.pool2d(X, (3, 3), (1, 1), ((1, 1), (1, 1)), "avg", False)
        np.testing.assert_allclose(np.asarray(pooled), expected, rtol=1e-15)
        # With x64 on, NumPy and Python data still get the dtype the core asks for.
        assert BACKEND.asarray(X, "float32").dtype == jnp.float32
        assert cl.corr2d([[1, 2], [3, 4]], [[1]], backend="jax").dtype == jnp.float32
        assert cl.conv2d(X.astype(np.float32), K.astype(np.float32), backend="jax").dtype == jnp.float32
        result = cl.train_kernel(
            jnp.asarray(cl.images.stripes(), jnp.float64), cl.corr2d(cl.images.stripes(), [[1, -1]])
        )
        assert result.kernel.dtype == jnp.float64


def test_float64_without_x64_is_a_clear_error():
    code = """if True:
        import jax, jax.numpy as jnp, numpy as np, convlab as cl
        assert not jax.config.jax_enable_x64
        calls = {
            "numpy float64": lambda: cl.conv2d(np.ones((3, 3)), np.ones((2, 2)), backend="jax"),
            "jax float32 with numpy float64": lambda: cl.corr2d(jnp.ones((3, 3)), np.ones((2, 2))),
            "pool2d": lambda: cl.pool2d(np.ones((4, 4)), 2, backend="jax"),
            "train_kernel": lambda: cl.train_kernel(np.ones((4, 4)), np.ones((4, 3)), backend="jax"),
            "under jit": lambda: jax.jit(lambda X: cl.corr2d(X, np.ones((2, 2))))(jnp.ones((3, 3))),
        }
        for name, call in calls.items():
            try:
                call()
            except cl.ConvlabTypeError as error:
                assert "jax_enable_x64" in str(error), (name, str(error))
            else:
                raise SystemExit(f"{name}: no error, float64 was silently downcast")
        y = cl.corr2d(jnp.ones((3, 3)), np.ones((2, 2), np.float32))
        assert y.dtype == jnp.float32 and y.tolist() == [[4.0, 4.0], [4.0, 4.0]]
        assert cl.corr2d([[1, 2], [3, 4]], [[1]], backend="jax").dtype == jnp.float32
        with jax.enable_x64(True):
            assert cl.conv2d(np.ones((3, 3)), np.ones((2, 2)), backend="jax").dtype == jnp.float64
        print("ok")
    """
    env = {**os.environ, "JAX_ENABLE_X64": "0"}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr


def test_integer_and_bool_arrays_compute_in_float32():
    X = jnp.asarray(integers((4, 4)).astype(np.int32))
    y = cl.corr2d(X, ones((2, 2), jnp.int32))
    assert y.dtype == jnp.float32
    assert_same(y, cl.corr2d(np.asarray(X), np.ones((2, 2), np.int32), backend="numpy"))
    assert cl.pool2d(ones((4, 4), bool), 2).dtype == jnp.float32
    assert BACKEND.asarray(ones(3, jnp.int32), "float32").dtype == jnp.float32


# -- training -------------------------------------------------------------------------------------


def test_value_and_grad_compiles_the_step_once():
    traces = []

    def loss(params):
        traces.append(1)
        return jnp.sum(cl.conv2d(ones((1, 1, 4, 4)), params[0], params[1]) ** 2)

    step = BACKEND.value_and_grad(loss)
    params = [ones((2, 1, 2, 2)), ones(2) * 0]
    for _ in range(3):
        value, grads = step(params)
        params = [p - 0.01 * g for p, g in zip(params, grads)]
    assert len(traces) == 1
    expected_value, expected_grads = jax.jit(jax.value_and_grad(loss))(params)
    value, grads = step(params)
    assert float(value) == float(expected_value)
    for got, want in zip(grads, expected_grads):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


# -- layers as pytrees ----------------------------------------------------------------------------


def test_conv2d_layer_is_a_pytree_with_the_numpy_initial_weights():
    layer = cl.Conv2D((2, 3), 3, 4, stride=2, padding="same", seed=5, backend="jax")
    twin = cl.Conv2D((2, 3), 3, 4, stride=2, padding="same", seed=5, backend="numpy")
    leaves, treedef = jax.tree_util.tree_flatten(layer)
    assert len(leaves) == 2 and all(isinstance(leaf, jax.Array) for leaf in leaves)
    assert_same(layer.weight, twin.weight)
    assert_same(layer.bias, twin.bias)
    rebuilt = jax.tree_util.tree_unflatten(treedef, leaves)
    assert type(rebuilt) is type(layer) and rebuilt.config == layer.config
    assert len(jax.tree_util.tree_leaves(cl.Conv2D(3, bias=False, backend="jax"))) == 1
    X = normal((2, 3, 7, 9))
    y = layer(jnp.asarray(X))
    testing.assert_close_to_reference(y, X, twin.weight, twin.bias, stride=2, padding="same", exact=False)
    assert_same(jax.jit(lambda layer, X: layer(X))(layer, jnp.asarray(X)), np.asarray(y))
    channels_last = cl.Conv2D(3, 2, 5, data_format="channels_last", seed=1, backend="jax")
    assert channels_last.weight.shape == (3, 3, 2, 5)
    assert channels_last(ones((1, 6, 6, 2))).shape == (1, 4, 4, 5)


def test_conv2d_layer_grad_and_functional_sgd_update():
    layer = cl.Conv2D(3, 2, 3, padding=1, seed=0, backend="jax")
    X, dY = jnp.asarray(integers((2, 2, 5, 5))), jnp.asarray(integers((2, 3, 5, 5)))
    grads = jax.jit(jax.grad(lambda layer: jnp.sum(layer(X) * dY)))(layer)
    assert type(grads) is type(layer) and grads.config == layer.config
    _, dK, dbias = cl.conv2d_vjp(X, layer.weight, dY, padding=1)
    assert_same(grads.weight, np.asarray(dK))
    assert_same(grads.bias, np.asarray(dbias))
    updated = jax.tree_util.tree_map(lambda p, g: p - 0.1 * g, layer, grads)
    assert type(updated) is type(layer) and updated.config == layer.config
    np.testing.assert_array_equal(np.asarray(updated.weight), np.asarray(layer.weight - 0.1 * grads.weight))
    np.testing.assert_array_equal(np.asarray(updated.bias), np.asarray(layer.bias - 0.1 * grads.bias))


def test_pooling_layers_are_pytrees_without_leaves():
    X = jnp.asarray(integers((1, 2, 6, 6)))
    for layer, twin in (
        (cl.MaxPool2D(2, backend="jax"), cl.MaxPool2D(2, backend="numpy")),
        (cl.AvgPool2D(3, 2, 1, False, backend="jax"), cl.AvgPool2D(3, 2, 1, False, backend="numpy")),
    ):
        assert jax.tree_util.tree_leaves(layer) == []
        expected = np.asarray(layer(X))
        np.testing.assert_allclose(expected, twin(np.asarray(X)), rtol=2.0**-23)
        assert_same(jax.jit(layer)(X), expected)
        assert_same(jax.jit(lambda layer, X: layer(X))(layer, X), expected)
    assert cl.MaxPool2D(2, backend="jax")(X).shape == (1, 2, 3, 3)  # the stride defaults to the window


def test_small_model_trains_with_jitted_sgd_steps():
    model = {
        "conv1": cl.Conv2D(3, 1, 4, padding="same", seed=0, backend="jax"),
        "pool": cl.MaxPool2D(2, backend="jax"),
        "conv2": cl.Conv2D(1, 4, 1, seed=1, backend="jax"),
    }
    X = jnp.asarray(normal((4, 1, 8, 8)))
    target = cl.pool2d(cl.conv2d(X, cl.kernels.laplacian()[None, None], padding=1), 2, stride=2)
    traces = []

    def loss(model, X):
        traces.append(1)
        hidden = jax.nn.relu(model["conv1"](X))
        return jnp.mean((model["conv2"](model["pool"](hidden)) - target) ** 2)

    @jax.jit
    def step(model, X):
        value, grads = jax.value_and_grad(loss)(model, X)
        return jax.tree_util.tree_map(lambda p, g: p - 0.05 * g, model, grads), value

    losses = []
    for _ in range(8):
        model, value = step(model, X)
        losses.append(float(value))
    assert len(traces) == 1
    assert losses[-1] < 0.8 * losses[0] and all(np.isfinite(losses)), losses
    assert type(model["conv1"]).__name__ == "JaxConv2D"


# -- the adapter's contract -----------------------------------------------------------------------


def test_no_device_to_host_copy_on_the_op_path():
    X, K, dY = (
        jnp.asarray(integers((1, 2, 6, 6))),
        jnp.asarray(integers((3, 2, 3, 3))),
        jnp.asarray(integers((1, 3, 4, 4))),
    )
    layer = cl.Conv2D(3, 2, 3, backend="jax")
    calls = [
        lambda: cl.conv2d(X, K, K[:, 0, 0, 0], stride=2, padding=((0, 1), (1, 0)), dilation=(1, 2)),
        lambda: cl.conv2d(X.transpose(0, 2, 3, 1), K.transpose(2, 3, 1, 0), padding=1, data_format="channels_last"),
        lambda: cl.corr2d(X[0, 0], K[0, 0]),
        lambda: cl.pool2d(X, 3, "avg", padding=1, count_include_pad=False),
        lambda: cl.pool2d(X, (2, 3), "max", padding=((1, 0), (0, 2))),
        lambda: cl.conv2d_vjp(X, K, dY),
        lambda: cl.corr2d_multi_in_out_1x1(X[0], K[:, :, :1, :1]),
        lambda: cl.corr2d_matmul(X[0, 0], K[0, 0], stride=2),
        lambda: layer(X),
    ]
    for call in calls:
        jax.block_until_ready(call())  # compile outside the guard
    with jax.transfer_guard_device_to_host("disallow"):
        for call in calls:
            jax.block_until_ready(call())


def test_results_stay_on_the_device_of_the_input():
    code = """if True:
        import jax, numpy as np, convlab as cl
        second = jax.devices()[1]
        X = jax.device_put(np.ones((1, 2, 6, 6), np.float32), second)
        K, dY = np.ones((3, 2, 3, 3), np.float32), np.ones((1, 3, 4, 4), np.float32)
        results = [
            cl.conv2d(X, K, np.ones(3, np.float32)),
            cl.pool2d(X, 2, "avg"),
            *cl.conv2d_vjp(X, K, dY),  # dX and dbias come from the NumPy data alone
            cl.Conv2D(3, 2, 3, backend="jax")(X),
            cl.corr2d_matmul(X[0, 0], K[0, 0]),
        ]
        assert all(y.devices() == {second} for y in results), [y.devices() for y in results]
        print("ok")
    """
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2", "JAX_PLATFORMS": "cpu"}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr


def test_numpy_inputs_are_copied_to_the_device_not_aliased():
    X = integers((4, 4))
    converted, result = BACKEND.asarray(X, "float32"), cl.pool2d(X, 1, backend="jax")
    X[0, 0] = 100.0  # on CPU, jax.device_put would share X's memory and show this write
    assert float(converted[0, 0]) != 100.0 and float(result[0, 0]) != 100.0
    assert BACKEND.dtype_name(converted) == "float32" and BACKEND.dtype_name(ones(2, jnp.int32)) == "int32"


# -- bad input: convlab errors, raised before any JAX code ----------------------------------------


def _raised_in_convlab(error_info):
    """The innermost frame of the traceback is convlab's own code, not JAX's."""
    innermost = traceback.extract_tb(error_info.tb)[-1].filename
    return os.sep + "convlab" + os.sep in innermost


X4, K4 = ones((1, 2, 6, 6)), ones((3, 2, 3, 3))

# (what, call, its array arguments, error class, a fragment of the message): what only JAX arrays can be; with
# the shared cases (tests/adapter_cases.py, run eagerly on every backend) again under jit, the arrays tracers
JAX_BAD_INPUT = [
    ("bfloat16", cl.conv2d, (X4.astype(jnp.bfloat16), K4), cl.ConvlabTypeError, "bfloat16"),
    ("float16 kernel", cl.conv2d, (X4, K4.astype(jnp.float16)), cl.ConvlabTypeError, "float16"),
    ("complex", lambda X: cl.pool2d(X, 2), (ones((4, 4), jnp.complex64),), cl.ConvlabTypeError, "complex64"),
]
UNDER_JIT = [
    (
        "numpy backend for jax arrays",
        lambda X, K: cl.conv2d(X, K, backend="numpy"),
        (X4, K4),
        cl.ConvlabTypeError,
        "jax",
    )
] + [
    (what, call, tuple(ones(shape) for shape in shapes), kind, fragment)
    for what, call, shapes, kind, fragment in BAD_INPUT
]


@pytest.mark.parametrize("what, call, arrays, kind, fragment", JAX_BAD_INPUT, ids=[b[0] for b in JAX_BAD_INPUT])
def test_jax_dtypes_are_refused_with_convlab_errors(what, call, arrays, kind, fragment):
    with pytest.raises(kind, match=fragment) as error_info:
        call(*arrays)
    assert _raised_in_convlab(error_info)


@pytest.mark.parametrize(
    "what, call, arrays, kind, fragment", JAX_BAD_INPUT + UNDER_JIT, ids=[b[0] for b in JAX_BAD_INPUT + UNDER_JIT]
)
def test_bad_input_under_jit_raises_convlab_errors_not_jax_errors(what, call, arrays, kind, fragment):
    with pytest.raises(kind, match=fragment) as error_info:  # under jit the arrays are tracers
        jax.jit(call)(*arrays)
    assert _raised_in_convlab(error_info)


TRACED_CONFIGURATION = [
    ("stride", lambda X, s: cl.conv2d(X, K4, stride=s)),
    ("stride", lambda X, s: cl.conv2d(X, K4, stride=(s, 1))),
    ("padding", lambda X, s: cl.conv2d(X, K4, padding=s)),
    ("padding", lambda X, s: cl.conv2d(X, K4, padding=((s, 0), (0, 0)))),
    ("dilation", lambda X, s: cl.conv2d(X, K4, dilation=s)),
    ("pool_size", lambda X, s: cl.pool2d(X, s)),
    ("stride", lambda X, s: cl.pool2d(X, 2, stride=s)),
    ("padding", lambda X, s: cl.pool2d(X, 3, padding=s)),
    ("count_include_pad", lambda X, s: cl.pool2d(X, 3, "avg", padding=1, count_include_pad=s > 0)),
    ("stride", lambda X, s: cl.conv2d_vjp(X, K4, ones((1, 3, 4, 4)), stride=s)),
    ("stride", lambda X, s: cl.Conv2D(3, 2, 3, stride=s, backend="jax")(X)),
    ("pool_size", lambda X, s: cl.AvgPool2D(s, backend="jax")(X)),
    ("stride", lambda X, s: cl.corr2d_matmul(X[0, 0], K4[0, 0], stride=s)),
]


@pytest.mark.parametrize(
    "argument, call", TRACED_CONFIGURATION, ids=[f"{i}-{c[0]}" for i, c in enumerate(TRACED_CONFIGURATION)]
)
def test_traced_configuration_is_a_convlab_error(argument, call):
    assert call(X4, 1) is not None  # fine with a static value
    with pytest.raises(cl.ConvlabTypeError, match=argument) as error_info:
        jax.jit(call)(X4, 1)
    assert _raised_in_convlab(error_info)
    assert error_info.value.__context__ is None or error_info.value.__suppress_context__  # no chained JAX error
