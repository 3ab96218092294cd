"""MXNet-specific behaviour of the convlab-mxnet adapter: mxnet.np arrays, Gluon layers, autograd, lazy errors.

What every backend does the same way (lazy import, registration, the primitives against NumPy and the oracle,
conv2d_vjp against autodiff, train_kernel, inputs never modified, bad input) is in tests/test_backend_contract.py;
here: MXNet's numpy mode, legacy NDArrays, integer and bool arrays, hybridized Gluon layers trained with
gluon.Trainer, and MXNet's lazy errors. Runs only where MXNet and convlab-mxnet are installed (the tests-mxnet
nox session, numpy<1.24).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from adapter_cases import BAD_INPUT

import convlab as cl
from convlab.layers import initial_weights

mx = pytest.importorskip("mxnet")
pytest.importorskip("convlab_mxnet")
from mxnet import autograd, gluon, npx  # noqa: E402
from mxnet import np as mnp  # noqa: E402
from mxnet.util import is_np_array, is_np_shape, use_np  # noqa: E402

U32 = 2.0**-24


@pytest.fixture(scope="module")
def mxb():
    return cl.get_backend("mxnet")


def integer_array(shape, low=-4, high=5, seed=0, dtype=np.float32):
    return np.random.default_rng(seed).integers(low, high, size=shape).astype(dtype)


def as_mx(array, dtype=None):
    return mnp.array(array, dtype=dtype or array.dtype)


def reference(fn, *args, **kwargs):
    """The same call on the NumPy backend."""
    return fn(*args, backend="numpy", **kwargs)


# -- numpy mode ---------------------------------------------------------------------------------------


def test_global_numpy_mode_is_left_alone(mxb):
    """convlab never calls npx.set_np(): the user's (legacy) mode is the same after every kind of call."""
    before = (is_np_array(), is_np_shape())
    X = mnp.array(integer_array((1, 2, 6, 6)))
    layer = cl.Conv2D(3, 2, 2, padding="same", stride=2, seed=0, backend="mxnet")
    layer(X)
    layer.hybridize()
    layer(X)
    cl.pool2d(X, 2, "avg", padding=((1, 0), (0, 1)), count_include_pad=False)
    cl.train_kernel(integer_array((6, 8), 0, 2), integer_array((6, 7)), epochs=2, backend="mxnet")
    assert (is_np_array(), is_np_shape()) == before


# -- tensors in, tensors out --------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ["shift", "gemm"])
@pytest.mark.parametrize("data_format", ["channels_first", "channels_last"])
def test_formulations_run_right_after_native_on_the_same_kernel(mxb, algorithm, data_format):
    # MXNet's inference-mode convolution reorders its weight in place, asynchronously; slicing that weight before
    # the reorder ran killed the process (SIGFPE), as "auto" and autotune do when they try several formulations
    first = data_format == "channels_first"
    X, K = integer_array((2, 8, 12, 12) if first else (2, 12, 12, 8)), integer_array((8, 8, 3, 3), seed=1)
    x, k = as_mx(X), as_mx(K if first else K.transpose(2, 3, 1, 0))
    for _ in range(3):
        native = cl.conv2d(x, k, padding=1, data_format=data_format, algorithm="native")
        other = cl.conv2d(x, k, padding=1, data_format=data_format, algorithm=algorithm)
        np.testing.assert_array_equal(other.asnumpy(), native.asnumpy())


def test_legacy_ndarray_is_taken_without_a_copy(mxb):
    legacy = mx.nd.array(integer_array((1, 1, 4, 4)))
    converted = mxb.asarray(legacy, "float32")
    assert type(converted) is mnp.ndarray
    legacy[:] = 7.0  # the converted handle sees the write: same memory
    assert converted.asnumpy().tolist() == np.full((1, 1, 4, 4), 7.0).tolist()
    K = integer_array((1, 1, 2, 2))
    y = cl.conv2d(legacy, mx.nd.array(K))
    assert type(y) is mnp.ndarray
    np.testing.assert_array_equal(y.asnumpy(), reference(cl.conv2d, np.full((1, 1, 4, 4), 7.0, np.float32), K))


def test_integer_and_bool_arrays_are_promoted(mxb):
    X, K = integer_array((1, 1, 5, 5)), integer_array((1, 1, 2, 2))
    expected = reference(cl.conv2d, X, K)
    # why: npx.convolution rejects integer arrays and mixed dtypes; the core promotes before any MXNet op
    # (float32 with float64: tests/test_backend_contract.py)
    for x, k, dtype in [
        (as_mx(X, "int32"), as_mx(K, "int32"), np.float32),
        (as_mx(X, "int8"), as_mx(K, "int64"), np.float32),
    ]:
        y = cl.conv2d(x, k)
        assert y.dtype == dtype
        np.testing.assert_array_equal(y.asnumpy(), expected.astype(dtype))
    on = cl.conv2d(as_mx(X > 0, "bool"), as_mx(K))
    assert on.dtype == np.float32
    np.testing.assert_array_equal(on.asnumpy(), reference(cl.conv2d, (X > 0).astype(np.float32), K))
    pooled = cl.pool2d(as_mx(X, "int32"), 2)
    assert pooled.dtype == np.float32
    np.testing.assert_array_equal(pooled.asnumpy(), reference(cl.pool2d, X, 2))


# -- autograd -----------------------------------------------------------------------------------------


def test_value_and_grad_leaves_the_callers_arrays_without_gradient_buffers(mxb):
    params = [mnp.array([[1.0, 2.0]])]
    _, grads = mxb.value_and_grad(lambda p: (p[0] * p[0]).sum())(params)
    assert grads[0].tolist() == [[2.0, 4.0]] and params[0].grad is None


# -- Gluon layers -------------------------------------------------------------------------------------

LAYER_CASES = [
    dict(kernel_size=3, in_channels=2, out_channels=4, padding=1),
    dict(kernel_size=(2, 3), in_channels=2, out_channels=3, stride=2, padding="same"),
    dict(kernel_size=3, in_channels=2, out_channels=2, padding=((0, 2), (1, 0)), dilation=(2, 1), bias=False),
    dict(kernel_size=3, in_channels=2, out_channels=4, stride=(1, 2), padding=1, data_format="channels_last"),
]


@pytest.mark.parametrize("config", LAYER_CASES, ids=str)
def test_hybridized_conv2d_equals_imperative(mxb, config):
    layer = cl.Conv2D(**config, seed=4, backend="mxnet")
    assert isinstance(layer, gluon.HybridBlock)
    shape = (3, 9, 10, 2) if config.get("data_format") == "channels_last" else (3, 2, 9, 10)
    X = as_mx(np.random.default_rng(0).standard_normal(shape).astype(np.float32))
    imperative = layer(X).asnumpy()
    layer.hybridize()
    hybrid = layer(X)
    assert type(hybrid) is mnp.ndarray
    np.testing.assert_array_equal(hybrid.asnumpy(), imperative)
    for other in (X[:1, :, :7], X.astype("float64")):  # new shape, new dtype: traced again, still right
        weight = layer.weight.data().as_np_ndarray()
        bias = None if layer.bias is None else layer.bias.data().as_np_ndarray()
        expected = cl.conv2d(other, weight, bias, **_conv_kwargs(config))
        np.testing.assert_array_equal(layer(other).asnumpy(), expected.asnumpy())
    assert layer(X.astype("float64")).dtype == np.float64


def _conv_kwargs(config):
    keys = ("stride", "padding", "dilation", "data_format")
    return {key: config[key] for key in keys if key in config}


def test_hybridized_conv2d_low_rank_and_integer_inputs(mxb):
    layer = cl.Conv2D((1, 2), bias=False, seed=0, backend="mxnet")
    X = cl.images.stripes()
    eager = layer(as_mx(X))
    layer.hybridize()
    for x in (as_mx(X), as_mx(X, "int32"), as_mx(X[None], "float32")):
        y = layer(x)
        assert y.dtype == np.float32
        np.testing.assert_array_equal(y.asnumpy().reshape(eager.shape), eager.asnumpy())
    assert layer(as_mx(X)).shape == (6, 7) and layer(as_mx(X[None])).shape == (1, 6, 7)


def test_hybridized_graph_is_traced_again_only_when_the_padding_or_rank_changes(mxb):
    """A 4-D input's graph depends on its shape only through the pads: new batch or image sizes reuse it."""
    X = np.random.default_rng(1).standard_normal((2, 2, 9, 10)).astype(np.float32)
    fixed = cl.Conv2D(3, 2, 3, padding=1, seed=0, backend="mxnet")
    fixed.hybridize()
    fixed(as_mx(X))
    graph = fixed._cached_op
    for shape in [(5, 2, 9, 10), (1, 2, 6, 13)]:
        x = as_mx(np.ones(shape, np.float32))
        expected = cl.conv2d(x, fixed.weight.data().as_np_ndarray(), fixed.bias.data().as_np_ndarray(), padding=1)
        np.testing.assert_array_equal(fixed(x).asnumpy(), expected.asnumpy())
    assert fixed._cached_op is graph
    same = cl.Conv2D(3, 2, 3, stride=2, padding="same", seed=0, backend="mxnet")
    same.hybridize()
    same(as_mx(X))
    graph = same._cached_op
    odd = as_mx(X[:, :, :, :9])  # width 9 instead of 10: "same" pads (1, 1) instead of (0, 1)
    expected = cl.conv2d(
        odd, same.weight.data().as_np_ndarray(), same.bias.data().as_np_ndarray(), stride=2, padding="same"
    )
    np.testing.assert_array_equal(same(odd).asnumpy(), expected.asnumpy())
    assert same._cached_op is not graph


def test_cast_layer_computes_in_float64(mxb):
    """Gluon's block.cast("float64") gives float64 parameters; a float32 input then computes in float64."""
    layer = cl.Conv2D(3, 1, 2, padding=1, seed=0, backend="mxnet")
    X = np.random.default_rng(0).standard_normal((1, 1, 5, 5)).astype(np.float32)
    before = layer(as_mx(X)).asnumpy()
    layer.cast("float64")
    for hybridize in (False, True):
        if hybridize:
            layer.hybridize()
        y = layer(as_mx(X))
        assert y.dtype == np.float64
        weight, bias = initial_weights((3, 3), 1, 2, True, 0)
        expected = cl.conv2d(X.astype(np.float64), weight.astype(np.float64), bias.astype(np.float64), padding=1)
        np.testing.assert_allclose(y.asnumpy(), expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(before, expected, rtol=1e-5, atol=1e-6)


def test_layers_take_legacy_ndarrays(mxb):
    layer = cl.Conv2D(2, 1, 2, seed=0, backend="mxnet")
    pool = cl.AvgPool2D(2, backend="mxnet")
    X = integer_array((1, 1, 4, 6))
    expected = layer(as_mx(X))
    for hybridize in (False, True):
        if hybridize:
            layer.hybridize()
            pool.hybridize()
        y = layer(mx.nd.array(X))
        assert type(y) is mnp.ndarray
        np.testing.assert_array_equal(y.asnumpy(), expected.asnumpy())
        np.testing.assert_array_equal(pool(mx.nd.array(X)).asnumpy(), reference(cl.pool2d, X, 2, "avg", 2))


def test_conv2d_layer_has_the_seeded_weights_and_can_be_reinitialized(mxb):
    layer = cl.Conv2D((3, 2), 2, 4, seed=7, backend="mxnet")
    weight, bias = initial_weights((3, 2), 2, 4, True, 7)
    np.testing.assert_array_equal(layer.weight.data().asnumpy(), weight)
    layer.weight.set_data(layer.weight.data() * 0)
    layer.initialize(force_reinit=True)  # the parameters' own initializer: convlab's seeded weights again
    np.testing.assert_array_equal(layer.weight.data().asnumpy(), weight)
    np.testing.assert_array_equal(layer.bias.data().asnumpy(), bias)


def gluon_losses(block, optimizer: str, learning_rate: float, steps: int, loss) -> list:
    """``steps`` steps of gluon.Trainer over ``block``'s parameters on ``loss()``, recorded by autograd: the losses."""
    trainer = gluon.Trainer(block.collect_params(), optimizer, {"learning_rate": learning_rate})
    losses = []
    for _ in range(steps):
        with autograd.record():
            value = loss()
        value.backward()
        trainer.step(1)
        losses.append(float(value))
    return losses


@pytest.mark.parametrize("hybridize", [False, True])
def test_conv2d_layer_trains_with_gluon_trainer(mxb, hybridize):
    """The book's edge-detector, learned with autograd.record and gluon.Trainer, as a user of Gluon would."""
    layer = cl.Conv2D((1, 2), bias=False, seed=0, backend="mxnet")
    if hybridize:
        layer.hybridize()
    X = as_mx(cl.images.stripes().reshape(1, 1, 6, 8))
    Y = cl.conv2d(X, mnp.array([[[[1.0, -1.0]]]]))
    losses = gluon_losses(layer, "sgd", 3e-2, 10, lambda: ((layer(X) - Y) ** 2).sum())
    expected = cl.train_kernel(cl.images.stripes(), Y.asnumpy()[0, 0], epochs=10, seed=0, backend="numpy").losses
    np.testing.assert_allclose(losses, expected, rtol=64 * U32 * 10)


@use_np
def test_small_gluon_model_trains_hybridized(mxb):
    """convlab layers inside a hybridized HybridSequential with Gluon's Dense, in numpy mode: loss decreases."""
    net = gluon.nn.HybridSequential()
    net.add(
        cl.Conv2D(3, 1, 4, padding=1, seed=0, backend="mxnet"),
        cl.MaxPool2D(2, backend="mxnet"),
        cl.Conv2D(3, 4, 4, padding=((1, 0), (0, 1)), seed=1, backend="mxnet"),
        cl.AvgPool2D(2, padding=1, count_include_pad=False, backend="mxnet"),
        gluon.nn.Dense(2),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "already initialized": convlab layers come with their seeded weights
        net.initialize(mx.init.Xavier())
    rng = np.random.default_rng(0)
    X = as_mx(rng.standard_normal((16, 1, 8, 8)).astype(np.float32))
    labels = (X.asnumpy()[:, 0, :, :4].sum(axis=(1, 2)) > X.asnumpy()[:, 0, :, 4:].sum(axis=(1, 2))).astype(np.float32)
    target = as_mx(np.stack([labels, 1 - labels], axis=1))
    eager = net(X).asnumpy()
    net.hybridize()
    np.testing.assert_allclose(net(X).asnumpy(), eager, rtol=1e-5, atol=1e-6)
    losses = gluon_losses(net, "adam", 1e-2, 8, lambda: ((net(X) - target) ** 2).mean())
    assert losses[-1] < losses[0] * 0.8


@pytest.mark.parametrize("mode", ["max", "avg"])
@pytest.mark.parametrize("padding", [0, 1, ((1, 0), (0, 2)), "same"])
def test_hybridized_pool_layers_equal_imperative(mxb, mode, padding):
    make = cl.MaxPool2D if mode == "max" else cl.AvgPool2D
    extra = {} if mode == "max" else {"count_include_pad": False}
    layer = make(3, stride=2, padding=padding, backend="mxnet", **extra)
    X = as_mx(integer_array((2, 3, 9, 8)) - 10)
    imperative = layer(X).asnumpy()
    np.testing.assert_array_equal(imperative, cl.pool2d(X.asnumpy(), 3, mode, 2, padding, **extra, backend="numpy"))
    layer.hybridize()
    np.testing.assert_array_equal(layer(X).asnumpy(), imperative)
    np.testing.assert_array_equal(layer(X[0]).asnumpy(), imperative[0])  # 3-D input: traced again


def test_nested_layer_needs_shape_free_padding(mxb):
    net = gluon.nn.HybridSequential()
    net.add(cl.Conv2D(3, 1, 1, stride=2, padding="same", seed=0, backend="mxnet"))
    net.hybridize()
    with pytest.raises(cl.ConvlabValueError, match="padding='same' with stride"):
        net(mnp.ones((1, 1, 6, 6)))


def test_layers_take_numpy_arrays_and_refuse_bad_input(mxb):
    layer = cl.Conv2D(2, 1, 1, seed=0, backend="mxnet")
    y = layer(np.ones((4, 4), dtype=np.float32))
    assert type(y) is mnp.ndarray and y.shape == (3, 3)
    layer.hybridize()
    with pytest.raises(cl.ConvlabValueError, match="input channels"):
        layer(mnp.ones((1, 2, 4, 4)))
    with pytest.raises(cl.ConvlabValueError, match="larger than the padded input"):
        layer(mnp.ones((1, 1, 1, 4)))
    with pytest.raises(cl.ConvlabTypeError, match="float16"):
        layer(mnp.ones((1, 1, 4, 4), dtype="float16"))
    npx.waitall()  # nothing reached MXNet's queue to fail later


# -- bad input: convlab errors at the call, never an MXNet error at the next read ------------------------


def test_mxnet_raises_lazily_but_convlab_raises_at_the_call(mxb):
    """An out-of-range gather fails only at the next read in MXNet; convlab's errors arrive at the call."""
    table = mnp.ones((2, 2))
    broken = mnp.take(table, mnp.array([5], dtype="int32"), axis=0, mode="raise")  # returns: no error yet
    with pytest.raises(mx.base.MXNetError):
        broken.asnumpy()
    x = mnp.ones((1, 2, 5, 5))
    k = mnp.ones((3, 1, 2, 2))
    with pytest.raises(cl.ConvlabValueError, match=r"2 input channels but K expects 1"):
        cl.conv2d(x, k)
    npx.waitall()  # and nothing failed later


# what only MXNet arrays can be (the shared cases are in tests/test_backend_contract.py)
BAD_CALLS = [
    ("float16", lambda: cl.conv2d(mnp.ones((4, 4), dtype="float16"), mnp.ones((2, 2))), cl.ConvlabTypeError, "float16"),
    ("symbol", lambda: cl.conv2d(mx.sym.var("x").as_np_ndarray(), mnp.ones((2, 2))), cl.ConvlabTypeError, "Symbol"),
]


@pytest.mark.parametrize("what, call, error, match", BAD_CALLS, ids=[case[0] for case in BAD_CALLS])
def test_bad_input_gives_a_convlab_error(mxb, what, call, error, match):
    with pytest.raises(error, match=match) as raised:
        call()
    assert isinstance(raised.value, cl.ConvlabError)
    assert not isinstance(raised.value, mx.base.MXNetError)
    npx.waitall()


@pytest.mark.parametrize("what, call, shapes, error, match", BAD_INPUT, ids=[case[0] for case in BAD_INPUT])
def test_bad_input_leaves_nothing_in_mxnets_queue(mxb, what, call, shapes, error, match):
    """The shared bad input on mxnet.np arrays: convlab's error at the call, and no MXNet op queued to fail later."""
    with pytest.raises(error, match=match):
        call(*(mnp.ones(shape) for shape in shapes))
    npx.waitall()
