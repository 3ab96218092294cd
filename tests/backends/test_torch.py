"""PyTorch-specific behaviour of the torch backend: autograd, devices, torch.compile, nn.Module layers.

The cross-backend semantics are tested in tests/; here: gradients flowing through every op, the
``meta`` device (nothing reaches the host), compile, float64, memory formats, torch.optim training,
and bad input raising convlab errors before any torch code runs.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys

import numpy as np
import pytest
import reference
from adapter_cases import CONV_CASES, CONV_IDS, pool_ids

import convlab as cl

torch = pytest.importorskip("torch")
try:
    cl.get_backend("torch")
except cl.BackendNotAvailableError as error:  # torch installed but not the adapter
    pytest.skip(f"convlab-torch not installed: {error}", allow_module_level=True)

TORCH_DIR = os.path.dirname(torch.__file__)
RNG = np.random.default_rng(2024)


def integers(shape, low=-3, high=4, dtype=torch.float32):
    """Integer-valued float tensors: every backend must agree on them bit for bit."""
    return torch.from_numpy(RNG.integers(low, high, size=shape)).to(dtype)


def normal(shape, dtype=torch.float64, requires_grad=False):
    return torch.from_numpy(RNG.normal(size=shape)).to(dtype).requires_grad_(requires_grad)


def numpy_result(fn, *tensors, **kwargs):
    """The NumPy reference backend on the same values."""
    return np.asarray(fn(*(t.detach().numpy() for t in tensors), backend="numpy", **kwargs))


# (window, stride, padding, mode, count_include_pad): every branch of TorchBackend.pool2d
POOL_CASES = [
    ((2, 2), 2, 0, "max", True),  # native, no padding
    ((3, 3), 2, 1, "max", True),  # native symmetric padding
    ((3, 2), 1, ((0, 1), (1, 0)), "max", True),  # asymmetric: F.pad with -inf
    ((3, 3), 1, 2, "max", True),  # symmetric but more than half the window: F.pad with -inf
    ((3, 3), 2, 1, "avg", True),  # native, counting padded zeros
    ((3, 3), 2, 1, "avg", False),  # native, real pixels only
    ((2, 3), (1, 2), ((1, 0), (0, 2)), "avg", True),  # asymmetric, F.pad with zeros
    ((2, 3), (1, 2), ((1, 0), (0, 2)), "avg", False),  # asymmetric, window sums / real-pixel counts
    ((3, 3), 1, 2, "avg", False),  # symmetric, more than half the window
]
POOL_IDS = pool_ids(POOL_CASES)


# -- the package -------------------------------------------------------------------------------------


def test_importing_the_adapter_does_not_import_torch():
    code = "import sys, convlab, convlab_torch; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_registered_through_the_entry_point():
    from importlib import metadata

    (entry,) = [e for e in metadata.entry_points(group="convlab.backends") if e.name == "torch"]
    assert entry.value == "convlab_torch:TorchBackend"
    assert cl.backends()["torch"] == str(torch.__version__)


def test_torch_tensors_select_the_torch_backend_and_stay_torch():
    y = cl.corr2d(torch.arange(9.0).reshape(3, 3), [[0, 1], [2, 3]])
    assert isinstance(y, torch.Tensor)
    assert y.tolist() == [[19.0, 25.0], [37.0, 43.0]]
    assert isinstance(cl.pool2d(np.ones((4, 4)), 2, backend="torch"), torch.Tensor)


# -- primitives --------------------------------------------------------------------------------------


@pytest.mark.parametrize("x_shape, k_shape, stride, padding, dilation", CONV_CASES, ids=CONV_IDS)
@pytest.mark.parametrize("data_format", ["channels_first", "channels_last"])
def test_conv2d_bit_identical_to_numpy_on_integers(x_shape, k_shape, stride, padding, dilation, data_format):
    X, K, bias = integers(x_shape), integers(k_shape), integers(k_shape[:1])
    if data_format == "channels_last":
        X, K = X.permute(0, 2, 3, 1).contiguous(), K.permute(2, 3, 1, 0).contiguous()
    options = dict(stride=stride, padding=padding, dilation=dilation, data_format=data_format)
    y = cl.conv2d(X, K, bias, **options)
    assert y.dtype == torch.float32
    np.testing.assert_array_equal(y.numpy(), numpy_result(cl.conv2d, X, K, bias, **options))


@pytest.mark.parametrize("window, stride, padding, mode, count_include_pad", POOL_CASES, ids=POOL_IDS)
@pytest.mark.parametrize("data_format", ["channels_first", "channels_last"])
def test_pool2d_bit_identical_to_numpy_on_integers(window, stride, padding, mode, count_include_pad, data_format):
    X = integers((2, 3, 7, 8), -9, 10)
    if data_format == "channels_last":
        X = X.permute(0, 2, 3, 1).contiguous()
    options = dict(stride=stride, padding=padding, count_include_pad=count_include_pad, data_format=data_format)
    y = cl.pool2d(X, window, mode, **options)
    np.testing.assert_array_equal(y.numpy(), numpy_result(cl.pool2d, X, pool_size=window, mode=mode, **options))


def _explicit(value):
    """An int, a pair or explicit pairs as ((top, bottom), (left, right)) / (sh, sw)."""
    if isinstance(value, int):
        return ((value, value), (value, value))
    return tuple(v if isinstance(v, tuple) else (v, v) for v in value)


@pytest.mark.parametrize("window, stride, padding, mode, count_include_pad", POOL_CASES, ids=POOL_IDS)
def test_pool2d_matches_the_oracle_in_float64(window, stride, padding, mode, count_include_pad):
    X = normal((1, 2, 7, 8))
    y = cl.pool2d(X, window, mode, stride, padding, count_include_pad)
    assert y.dtype == torch.float64
    strides = tuple(stride) if isinstance(stride, tuple) else (stride, stride)
    expected = reference.pool2d(X.numpy(), window, strides, _explicit(padding), mode, count_include_pad)
    np.testing.assert_allclose(y.numpy(), expected, rtol=4 * 2.0**-53 * window[0] * window[1], atol=0)


def test_max_pooling_pads_with_minus_infinity():
    X = -torch.ones(1, 1, 3, 3)
    for padding in (1, ((0, 2), (1, 0))):
        assert torch.all(cl.pool2d(X, 3, "max", padding=padding) == -1)


def test_float32_and_float64_mix_promotes_to_float64():
    X, K = integers((1, 2, 5, 5)), integers((3, 2, 3, 3), dtype=torch.float64)
    assert cl.conv2d(X, K).dtype == torch.float64
    assert cl.conv2d(X, K.numpy()).dtype == torch.float64  # a float64 NumPy kernel counts too
    assert cl.conv2d(X, K.float()).dtype == torch.float32


def test_integer_and_bool_tensors_compute_in_float32():
    X = torch.arange(16).reshape(4, 4)
    assert cl.corr2d(X, torch.ones(2, 2, dtype=torch.bool)).dtype == torch.float32
    assert cl.pool2d(X, 2).dtype == torch.float32


def test_numpy_inputs_mixed_with_tensors_are_converted():
    X = integers((1, 2, 6, 6))
    flipped = np.flip(integers((3, 2, 3, 3)).numpy(), axis=3)  # negative strides torch cannot wrap
    read_only = integers((3,)).numpy()
    read_only.setflags(write=False)
    y = cl.conv2d(X, flipped, read_only, padding=1)
    np.testing.assert_array_equal(y.numpy(), cl.conv2d(X.numpy(), flipped, read_only, padding=1, backend="numpy"))
    assert isinstance(y, torch.Tensor)


def test_inputs_are_never_modified():
    X, K = normal((1, 2, 6, 6)), normal((2, 2, 3, 3))
    saved = X.clone(), K.clone()
    cl.conv2d(X, K, padding=((0, 1), (2, 0)))
    cl.pool2d(X, 3, "avg", padding=((0, 1), (2, 0)), count_include_pad=False)
    cl.conv2d_vjp(X, K, torch.ones(1, 2, 4, 4))
    assert torch.equal(X, saved[0]) and torch.equal(K, saved[1])


def test_hot_path_returns_inputs_untouched():
    backend = cl.get_backend("torch")
    X = torch.ones(1, 1, 4, 4)
    assert backend.asarray(X, "float32") is X
    assert backend.pad(X, ((0, 0),) * 4) is X
    assert backend.asarray(X, "float64").dtype == torch.float64


def test_plumbing_primitives_follow_numpy_conventions():
    backend = cl.get_backend("torch")
    X = integers((2, 3, 4))
    pads = ((1, 0), (0, 2), (3, 1))
    np.testing.assert_array_equal(backend.pad(X, pads, 5.0).numpy(), np.pad(X.numpy(), pads, constant_values=5.0))
    assert backend.sum(X, ()) is X  # torch would reduce everything; NumPy reduces nothing
    np.testing.assert_array_equal(backend.sum(X, (0, 2)).numpy(), X.numpy().sum(axis=(0, 2)))
    np.testing.assert_array_equal(backend.flip(X, (1, 2)).numpy(), np.flip(X.numpy(), (1, 2)))
    np.testing.assert_array_equal(backend.transpose(X, (2, 0, 1)).numpy(), X.numpy().transpose(2, 0, 1))
    assert backend.dtype_name(torch.ones(1, dtype=torch.bfloat16)) == "bfloat16"


# -- autograd ----------------------------------------------------------------------------------------


def _every_op():
    """(name, function of (X, K), X shape, K shape) for every public op that computes."""
    return [
        ("conv2d", lambda X, K: cl.conv2d(X, K, stride=2, padding="same", dilation=1), (1, 2, 7, 6), (3, 2, 2, 3)),
        (
            "conv2d dilated",
            lambda X, K: cl.conv2d(X, K, padding=((0, 2), (1, 0)), dilation=2),
            (1, 2, 6, 6),
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
        ("max pool", lambda X, K: cl.pool2d(X * K.sum(), 3, "max", 2, ((0, 1), (1, 0))), (2, 6, 7), (1,)),
        ("avg pool", lambda X, K: cl.pool2d(X * K.sum(), 3, "avg", 1, 2, False), (2, 5, 5), (1,)),
        (
            "avg pool asymmetric",
            lambda X, K: cl.pool2d(X * K.sum(), 2, "avg", 1, ((1, 0), (0, 1)), False),
            (5, 5),
            (1,),
        ),
    ]


@pytest.mark.parametrize("name, op, x_shape, k_shape", _every_op(), ids=[op[0] for op in _every_op()])
def test_gradients_flow_to_input_and_kernel(name, op, x_shape, k_shape):
    X, K = normal(x_shape, requires_grad=True), normal(k_shape, requires_grad=True)
    assert torch.autograd.gradcheck(op, (X, K))
    X.grad = K.grad = None
    op(X, K).square().sum().backward()
    assert X.grad is not None and K.grad is not None and X.grad.abs().sum() > 0


def test_gradients_flow_to_the_bias():
    X, K, bias = (normal(shape, requires_grad=True) for shape in ((1, 2, 5, 5), (3, 2, 3, 3), (3,)))
    assert torch.autograd.gradcheck(lambda X, K, b: cl.conv2d(X, K, b, padding=((1, 0), (0, 1))), (X, K, bias))


def _vjp_bounds(X, K, dY, options):
    """DESIGN.md section 4 for float32 gradients: 2 * n * u * (|.| (*) |.|), from the float64 reference on |inputs|.

    The gradients are bilinear with non-negative coefficients, so the reference vjp of the absolute values is
    exactly the magnitude term; n is the longest sum: N*Ho*Wo products per dK element, Co*kh*kw per dX element.
    """
    magnitudes = cl.conv2d_vjp(np.abs(X), np.abs(K), np.abs(dY), backend="numpy", **options)
    channels_last = options["data_format"] == "channels_last"
    out_channels, in_channels = (K.shape[3], K.shape[2]) if channels_last else K.shape[:2]
    n = max(dY.size // out_channels, K.size // in_channels)
    return [2 * n * 2.0**-24 * np.asarray(m) for m in magnitudes]


@pytest.mark.parametrize("x_shape, k_shape, stride, padding, dilation", CONV_CASES, ids=CONV_IDS)
@pytest.mark.parametrize("data_format", ["channels_first", "channels_last"])
def test_conv2d_vjp_agrees_with_autograd(x_shape, k_shape, stride, padding, dilation, data_format):
    X, K = normal(x_shape, torch.float32, True), normal(k_shape, torch.float32, True)
    if data_format == "channels_last":
        X = X.detach().permute(0, 2, 3, 1).contiguous().requires_grad_(True)
        K = K.detach().permute(2, 3, 1, 0).contiguous().requires_grad_(True)
    bias = normal(k_shape[:1], torch.float32, True)
    options = dict(stride=stride, padding=padding, dilation=dilation, data_format=data_format)
    Y = cl.conv2d(X, K, bias, **options)
    dY = normal(tuple(Y.shape), torch.float32)
    autograd = torch.autograd.grad((Y * dY).sum(), (X, K, bias))
    analytic = cl.conv2d_vjp(X, K, dY, **options)
    arrays = [t.detach().numpy().astype(np.float64) for t in (X, K, dY)]
    expected = cl.conv2d_vjp(*arrays, backend="numpy", **options)
    bounds = _vjp_bounds(*arrays, options)
    for name, mine, theirs, reference_value, bound in zip(("dX", "dK", "dbias"), analytic, autograd, expected, bounds):
        assert mine.shape == theirs.shape and mine.dtype == torch.float32, name
        reference.assert_within_bound(mine.detach().numpy(), reference_value, bound, f"conv2d_vjp {name}")
        reference.assert_within_bound(theirs.numpy(), reference_value, bound, f"autograd {name}")


@pytest.mark.parametrize("x_shape, k_shape, stride, padding, dilation", CONV_CASES, ids=CONV_IDS)
def test_conv2d_vjp_equals_autograd_exactly_on_integers(x_shape, k_shape, stride, padding, dilation):
    X, K = integers(x_shape).requires_grad_(True), integers(k_shape).requires_grad_(True)
    options = dict(stride=stride, padding=padding, dilation=dilation)
    Y = cl.conv2d(X, K, **options)
    dY = integers(tuple(Y.shape))
    dX, dK = torch.autograd.grad(Y, (X, K), dY)
    analytic = cl.conv2d_vjp(X, K, dY, **options)
    assert torch.equal(analytic[0], dX) and torch.equal(analytic[1], dK)
    assert torch.equal(analytic[2], dY.sum(dim=(0, 2, 3)))


def test_value_and_grad_returns_the_loss_and_autograd_gradients():
    backend = cl.get_backend("torch")
    params = [torch.tensor([1.0, 2.0]), torch.tensor(3.0)]
    step = backend.value_and_grad(lambda p: (p[0] * p[0]).sum() * p[1])
    loss, grads = step(params)
    assert loss.item() == 15.0 and not loss.requires_grad
    assert grads[0].tolist() == [6.0, 12.0] and grads[1].item() == 5.0
    assert not params[0].requires_grad  # the caller's tensors are untouched


# -- training ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("bias", [False, True])
def test_train_kernel_autodiff_and_analytic_agree_and_match_numpy(bias):
    X = cl.images.stripes()
    Y = cl.corr2d(X, cl.kernels.edge(), backend="numpy")
    numpy_run = cl.train_kernel(X, Y, epochs=10, seed=0, bias=bias, backend="numpy")
    runs = [
        cl.train_kernel(torch.from_numpy(X), torch.from_numpy(Y), epochs=10, seed=0, bias=bias, gradient=gradient)
        for gradient in ("autodiff", "analytic")
    ]
    tolerance = 8 * 2.0**-24 * np.arange(1, 11) * np.abs(numpy_run.losses) + 1e-6  # a few ULP per epoch
    for run in runs:
        assert isinstance(run.kernel, torch.Tensor) and run.kernel.dtype == torch.float32
        assert np.all(np.abs(np.subtract(run.losses, numpy_run.losses)) <= tolerance), (run.losses, numpy_run.losses)
    assert [run.gradient for run in runs] == ["autodiff", "analytic"]
    np.testing.assert_allclose(runs[0].kernel.numpy(), runs[1].kernel.numpy(), rtol=1e-5, atol=1e-6)


def test_train_kernel_in_float64():
    X = torch.from_numpy(cl.images.stripes().astype(np.float64))
    Y = cl.corr2d(X, cl.kernels.edge())
    result = cl.train_kernel(X, Y, epochs=30, lr=3e-2)
    assert result.kernel.dtype == torch.float64
    assert result.losses[-1] < 1e-2 * result.losses[0]


def _small_model(seed=0):
    return torch.nn.Sequential(
        cl.Conv2D(3, 1, 4, padding=1, seed=seed, backend="torch"),
        torch.nn.ReLU(),
        cl.MaxPool2D(2, backend="torch"),
        cl.AvgPool2D(2, padding=((0, 1), (1, 0)), count_include_pad=False, backend="torch"),
        torch.nn.Flatten(),
        torch.nn.Linear(4 * 2 * 2, 2),
    )


def test_small_model_trains_with_torch_optim_sgd():
    torch.manual_seed(0)
    model = _small_model()
    X = normal((8, 1, 6, 8), torch.float32)
    target = torch.tensor([0, 1] * 4)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    losses = []
    for _ in range(8):
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(X), target)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0], losses
    conv = model[0]
    assert isinstance(conv.weight, torch.nn.Parameter) and conv.weight.grad is not None and conv.bias.grad is not None


def test_conv2d_layer_is_a_module_with_parameters():
    layer = cl.Conv2D((3, 2), 2, 4, seed=1, backend="torch")
    assert isinstance(layer, torch.nn.Module)
    assert [name for name, _ in layer.named_parameters()] == ["weight", "bias"]
    assert tuple(layer.weight.shape) == (4, 2, 3, 2) and tuple(layer.bias.shape) == (4,)
    no_bias = cl.Conv2D(3, 2, 4, bias=False, data_format="channels_last", backend="torch")
    assert [name for name, _ in no_bias.named_parameters()] == ["weight"]
    assert tuple(no_bias.weight.shape) == (3, 3, 2, 4)
    assert "weight=(4, 2, 3, 2)" in repr(layer)
    assert isinstance(cl.AvgPool2D(2, backend="torch"), torch.nn.Module)


def test_state_dict_round_trip_and_pickling():
    model, other = _small_model(seed=0), _small_model(seed=1)
    X = normal((2, 1, 6, 8), torch.float32)
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    other.load_state_dict(torch.load(buffer))
    assert torch.equal(model(X), other(X))
    buffer = io.BytesIO()
    torch.save(model, buffer)  # the whole module: the layer classes pickle by name
    buffer.seek(0)
    assert torch.equal(torch.load(buffer, weights_only=False)(X), model(X))


def test_layers_in_float64_and_channels_last():
    layer = cl.Conv2D(3, 2, 3, padding="same", seed=0, backend="torch").double()
    X = normal((1, 2, 6, 6))
    y = layer(X)
    assert y.dtype == torch.float64
    torch.testing.assert_close(layer(X.to(memory_format=torch.channels_last)), y, rtol=1e-14, atol=1e-14)
    pooled = cl.MaxPool2D(2, backend="torch")(X.to(memory_format=torch.channels_last))
    assert torch.equal(pooled, cl.pool2d(X, 2, stride=2))


# -- memory formats and float64 -----------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_channels_last_memory_format_gives_the_same_results(dtype):
    X, K = normal((2, 3, 9, 8), dtype), normal((4, 3, 3, 3), dtype)
    X_cl = X.to(memory_format=torch.channels_last)
    for padding in (1, ((0, 1), (2, 0))):
        y = cl.conv2d(X_cl, K, padding=padding, stride=2)
        assert y.dtype == dtype
        torch.testing.assert_close(y, cl.conv2d(X, K, padding=padding, stride=2), rtol=0, atol=1e-5)
        for mode in ("max", "avg"):
            y = cl.pool2d(X_cl, 3, mode, 2, padding, False)
            torch.testing.assert_close(y, cl.pool2d(X, 3, mode, 2, padding, False), rtol=0, atol=0)


def test_channels_last_data_format_output_is_contiguous_nhwc():
    """NHWC goes through torch as an NCHW view in channels_last memory: no transposing copies on the way out."""
    X, K = normal((2, 7, 7, 3), torch.float32), normal((3, 3, 3, 4), torch.float32)
    assert cl.conv2d(X, K, padding=1, data_format="channels_last").is_contiguous()
    assert cl.pool2d(X, 2, "avg", data_format="channels_last").is_contiguous()


def test_float64_conv2d_within_the_design_bound():
    X, K = normal((2, 3, 9, 9)), normal((2, 3, 3, 3))
    y = cl.conv2d(X, K, stride=2, padding="same", dilation=1)
    assert y.dtype == torch.float64
    pads = ((1, 1), (1, 1))
    expected = reference.conv2d(X.numpy(), K.numpy(), None, (2, 2), pads)
    bound = reference.conv2d_bound(X.numpy(), K.numpy(), (2, 2), pads, dtype="float64")
    reference.assert_within_bound(y.numpy(), expected, bound, "float64 conv2d")


# -- the meta device: shapes only, so any host copy on the op path would raise ------------------------


def _meta(*shape):
    return torch.empty(shape, device="meta")


META_OPS = [
    ("conv2d", lambda: cl.conv2d(_meta(2, 3, 9, 8), _meta(4, 3, 3, 3), _meta(4), padding="same", stride=2)),
    ("conv2d asymmetric", lambda: cl.conv2d(_meta(1, 2, 6, 6), _meta(2, 2, 2, 2), padding=((0, 1), (1, 0)))),
    ("conv2d channels_last", lambda: cl.conv2d(_meta(1, 6, 6, 2), _meta(3, 3, 2, 4), data_format="channels_last")),
    ("corr2d", lambda: cl.corr2d(_meta(6, 8), _meta(1, 2))),
    ("corr2d_multi_in", lambda: cl.corr2d_multi_in(_meta(2, 5, 5), _meta(2, 2, 2))),
    ("corr2d_multi_in_out", lambda: cl.corr2d_multi_in_out(_meta(2, 5, 5), _meta(3, 2, 2, 2))),
    ("corr2d_multi_in_out_1x1", lambda: cl.corr2d_multi_in_out_1x1(_meta(2, 5, 5), _meta(3, 2, 1, 1))),
    ("corr2d_matmul", lambda: cl.corr2d_matmul(_meta(5, 6), _meta(2, 2), padding=1)),
    ("conv_matrix", lambda: cl.conv_matrix(_meta(2, 2), (5, 6))),
    ("max pool", lambda: cl.pool2d(_meta(1, 2, 7, 8), 3, "max", 2, 1)),
    ("max pool asymmetric", lambda: cl.pool2d(_meta(1, 2, 7, 8), 3, "max", 1, ((0, 1), (1, 2)))),
    ("avg pool", lambda: cl.pool2d(_meta(1, 2, 7, 8), 3, "avg", 2, 1, False)),
    ("avg pool asymmetric", lambda: cl.pool2d(_meta(1, 2, 7, 8), 3, "avg", 1, ((0, 1), (1, 2)), False)),
    ("pool channels_last", lambda: cl.pool2d(_meta(1, 7, 8, 2), 2, "avg", data_format="channels_last")),
    (
        "conv2d_vjp",
        lambda: cl.conv2d_vjp(_meta(1, 2, 7, 6), _meta(3, 2, 3, 2), _meta(1, 3, 3, 2), stride=3, padding="same"),
    ),
    ("Conv2D layer", lambda: cl.Conv2D(3, 2, 4, padding=1, backend="torch").to("meta")(_meta(1, 2, 5, 5))),
    ("pool layer", lambda: cl.MaxPool2D(2, backend="torch")(_meta(1, 2, 5, 5))),
]


@pytest.mark.parametrize("name, op", META_OPS, ids=[name for name, _ in META_OPS])
def test_every_op_runs_on_the_meta_device(name, op):
    outputs = op()
    for output in outputs if isinstance(outputs, tuple) else (outputs,):
        assert output.device.type == "meta", name


def test_meta_results_have_the_cpu_shapes():
    X, K = integers((1, 2, 7, 6)), integers((3, 2, 3, 2))
    options = dict(stride=(2, 1), padding="same", dilation=(1, 2))
    assert cl.conv2d(X.to("meta"), K.to("meta"), **options).shape == cl.conv2d(X, K, **options).shape
    vjp_meta = cl.conv2d_vjp(X.to("meta"), K.to("meta"), _meta(1, 3, 4, 6), **options)
    assert [t.shape for t in vjp_meta] == [X.shape, K.shape, (3,)]


# -- torch.compile (slow on small machines: few, small cases) -------------------------------------------


def _conv_then_pools(X, K, backend="torch"):
    y = cl.conv2d(X, K, stride=2, padding="same", backend=backend)
    average = cl.pool2d(y, 2, "avg", padding=((0, 1), (1, 0)), count_include_pad=False, backend=backend)
    return average, cl.pool2d(y, 3, "max", 1, 1, backend=backend)


def test_compiled_conv2d_and_pool2d_equal_eager():
    X, K = integers((1, 2, 7, 7)), integers((3, 2, 2, 2))
    eager = _conv_then_pools(X, K)  # the first call fills convlab's caches outside the trace (see README)
    compiled = torch.compile(_conv_then_pools, fullgraph=True)(X, K)
    for mine, theirs in zip(compiled, eager):
        assert torch.equal(mine, theirs)


def test_compiled_conv2d_without_backend_argument():
    X, K = integers((1, 2, 7, 7)), integers((3, 2, 2, 2))
    eager = _conv_then_pools(X, K, backend=None)
    compiled = torch.compile(_conv_then_pools, fullgraph=True)(X, K, None)
    assert all(torch.equal(mine, theirs) for mine, theirs in zip(compiled, eager))


COMPILED_MODEL = """
import torch, convlab as cl
model = torch.nn.Sequential(
    cl.Conv2D(3, 1, 4, padding=((0, 1), (1, 0)), seed=0, backend="torch"),
    cl.MaxPool2D(2, backend="torch"),
    cl.AvgPool2D(2, padding=1, count_include_pad=False, backend="torch"),
)
X = torch.randn(2, 1, 6, 8)
compiled = torch.compile(model, fullgraph=True)
y = compiled(X)  # the first convlab call of this process happens inside the trace
torch.testing.assert_close(y, model(X), rtol=1e-6, atol=1e-6)
compiled(X).sum().backward()
assert model[0].weight.grad is not None and model[0].bias.grad is not None
print("ok")
"""


def test_compiled_model_in_a_fresh_process_equals_eager_and_trains():
    """convlab's layers compile with fullgraph=True even when nothing ran eagerly before."""
    done = subprocess.run([sys.executable, "-c", COMPILED_MODEL], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-3000:]


# -- bad input: convlab errors, raised before any torch op ------------------------------------------------


CONVLAB_DIR = os.path.dirname(cl.__file__)


def _raised_in_torch(excinfo) -> bool:
    """True if torch code ran between entering convlab and the raise (nn.Module.__call__ before it is fine)."""
    paths = [str(entry.path) for entry in excinfo.traceback]
    first = next(i for i, path in enumerate(paths) if path.startswith(CONVLAB_DIR))
    return any(path.startswith(TORCH_DIR) for path in paths[first:])


BAD = [
    ("rank-5 X", lambda: cl.conv2d(torch.ones(1, 1, 1, 5, 5), torch.ones(1, 1, 3, 3)), ValueError, "X must be 2-D"),
    ("rank-3 K", lambda: cl.conv2d(torch.ones(1, 2, 5, 5), torch.ones(2, 3, 3)), ValueError, "K must be 4-D"),
    ("channels", lambda: cl.conv2d(torch.ones(1, 2, 5, 5), torch.ones(1, 3, 3, 3)), ValueError, "input channels"),
    ("pool rank", lambda: cl.pool2d(torch.ones(5), 2), ValueError, "X must be 2-D"),
    ("corr2d rank", lambda: cl.corr2d(torch.ones(1, 5, 5), torch.ones(2, 2)), ValueError, "needs a 2-D X"),
    ("bfloat16", lambda: cl.pool2d(torch.ones(4, 4, dtype=torch.bfloat16), 2), TypeError, "dtype bfloat16"),
    ("complex", lambda: cl.corr2d(torch.ones(4, 4, dtype=torch.complex64), torch.ones(2, 2)), TypeError, "complex64"),
    ("two devices", lambda: cl.conv2d(torch.ones(1, 1, 5, 5), _meta(1, 1, 3, 3)), ValueError, "different devices"),
    ("bias device", lambda: cl.conv2d(_meta(1, 1, 5, 5), _meta(1, 1, 3, 3), torch.ones(1)), ValueError, "devices"),
    ("vjp dY", lambda: cl.conv2d_vjp(torch.ones(5, 5), torch.ones(2, 2), torch.ones(3, 3)), ValueError, "dY must"),
    (
        "wrong backend",
        lambda: cl.corr2d(torch.ones(3, 3), torch.ones(2, 2), backend="numpy"),
        TypeError,
        "torch tensor",
    ),
    ("layer input", lambda: cl.Conv2D(3, 2, backend="torch")(torch.ones(1, 3, 5, 5)), ValueError, "input channels"),
]


def test_two_devices_are_refused_after_a_same_device_call_of_the_same_shapes():
    X, K = torch.ones(1, 1, 5, 5), torch.ones(1, 1, 3, 3)
    cl.conv2d(X, K)  # convlab now remembers how to run this signature
    with pytest.raises(cl.ConvlabValueError, match="different devices"):
        cl.conv2d(X, K.to("meta"))


@pytest.mark.parametrize("what, call, kind, fragment", BAD, ids=[case[0] for case in BAD])
def test_bad_input_raises_convlab_errors_not_torch_errors(what, call, kind, fragment):
    with pytest.raises(kind, match=fragment) as raised:
        call()
    assert isinstance(raised.value, cl.ConvlabError), what
    assert not _raised_in_torch(raised), f"{what}: raised from inside torch"


def test_numpy_inputs_follow_the_tensors_device():
    """NumPy data given with meta tensors lands on meta too: no host round trip, no torch device error."""
    X = torch.empty(1, 2, 6, 6, device="meta")
    K = torch.empty(3, 2, 3, 3, device="meta")
    assert cl.conv2d(X, K, np.ones(3, np.float32)).device.type == "meta"
    assert cl.conv2d(X, np.ones((3, 2, 3, 3), np.float32)).device.type == "meta"
    dX, dK, dbias = cl.conv2d_vjp(X, K, np.ones((1, 3, 4, 4), np.float32))
    assert {dX.device.type, dK.device.type, dbias.device.type} == {"meta"}
    assert cl.conv_matrix(torch.empty(2, 2, device="meta"), (3, 3)).device.type == "meta"
