"""PyTorch-specific behaviour of the torch backend: autograd, devices, torch.compile, nn.Module layers.

What every backend does the same way (lazy import, registration, the primitives against NumPy and the oracle,
conv2d_vjp against autodiff, train_kernel, inputs never modified, bad input) is in tests/test_backend_contract.py;
here: torch's integer, bool and bfloat16 tensors, averages bit-identical to NumPy's, gradcheck through every op,
the ``meta`` device (nothing reaches the host), compile, memory formats, torch.optim training, and bad input only
torch can give (its dtypes, two devices) raising convlab errors before any torch code runs.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys

import numpy as np
import pytest
from adapter_cases import EVERY_OP, EVERY_OP_IDS, POOL_CASES, pool_ids
from conftest import require_adapter

import convlab as cl

torch = pytest.importorskip("torch")
require_adapter("torch")

TORCH_DIR = os.path.dirname(torch.__file__)
RNG = np.random.default_rng(2024)


def integers(shape, low=-3, high=4, dtype=torch.float32):
    """Integer-valued float tensors: every backend must agree on them bit for bit."""
    return torch.from_numpy(RNG.integers(low, high, size=shape)).to(dtype)


def normal(shape, dtype=torch.float64, requires_grad=False):
    return torch.from_numpy(RNG.normal(size=shape)).to(dtype).requires_grad_(requires_grad)


# -- primitives --------------------------------------------------------------------------------------

AVERAGE_CASES = [case for case in POOL_CASES if case[3] == "avg"]


@pytest.mark.parametrize("window, stride, padding, mode, count_include_pad", AVERAGE_CASES, ids=pool_ids(AVERAGE_CASES))
@pytest.mark.parametrize("data_format", ["channels_first", "channels_last"])
def test_average_pooling_is_bit_identical_to_numpy(window, stride, padding, mode, count_include_pad, data_format):
    """Beyond DESIGN.md's exact tier (which the shared test holds every backend to): torch divides each window sum
    by its count as NumPy does, so every average on integers is NumPy's to the bit, whatever the divisor."""
    X = integers((2, 3, 7, 8), -9, 10)
    if data_format == "channels_last":
        X = X.permute(0, 2, 3, 1).contiguous()
    options = dict(stride=stride, padding=padding, count_include_pad=count_include_pad, data_format=data_format)
    y = cl.pool2d(X, window, mode, **options)
    np.testing.assert_array_equal(y.numpy(), cl.pool2d(X.numpy(), window, mode, backend="numpy", **options))


def test_integer_and_bool_tensors_compute_in_float32():
    X = torch.arange(16).reshape(4, 4)
    assert cl.corr2d(X, torch.ones(2, 2, dtype=torch.bool)).dtype == torch.float32
    assert cl.pool2d(X, 2).dtype == torch.float32


def test_dtype_names_of_torch_only_dtypes():
    backend = cl.get_backend("torch")
    assert backend.dtype_name(torch.ones(1, dtype=torch.bfloat16)) == "bfloat16"


# -- autograd ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name, op, x_shape, k_shape", EVERY_OP, ids=EVERY_OP_IDS)
def test_gradients_flow_to_input_and_kernel(name, op, x_shape, k_shape):
    X, K = normal(x_shape, requires_grad=True), normal(k_shape, requires_grad=True)
    assert torch.autograd.gradcheck(op, (X, K))
    X.grad = K.grad = None
    outputs = op(X, K)
    sum(y.square().sum() for y in (outputs if isinstance(outputs, tuple) else (outputs,))).backward()
    assert X.grad is not None and K.grad is not None and X.grad.abs().sum() > 0


def test_gradients_flow_to_the_bias():
    X, K, bias = (normal(shape, requires_grad=True) for shape in ((1, 2, 5, 5), (3, 2, 3, 3), (3,)))
    assert torch.autograd.gradcheck(lambda X, K, b: cl.conv2d(X, K, b, padding=((1, 0), (0, 1))), (X, K, bias))


def test_value_and_grad_leaves_the_callers_tensors_out_of_autograd():
    params = [torch.tensor([1.0, 2.0]), torch.tensor(3.0)]
    loss, _ = cl.get_backend("torch").value_and_grad(lambda p: (p[0] * p[0]).sum() * p[1])(params)
    assert not loss.requires_grad and not any(p.requires_grad or p.grad is not None for p in params)


# -- training ----------------------------------------------------------------------------------------


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


# what only torch tensors can be (the shared cases are in tests/test_backend_contract.py)
BAD = [
    ("bfloat16", lambda: cl.pool2d(torch.ones(4, 4, dtype=torch.bfloat16), 2), TypeError, "dtype bfloat16"),
    ("complex", lambda: cl.corr2d(torch.ones(4, 4, dtype=torch.complex64), torch.ones(2, 2)), TypeError, "complex64"),
    ("two devices", lambda: cl.conv2d(torch.ones(1, 1, 5, 5), _meta(1, 1, 3, 3)), ValueError, "different devices"),
    ("bias device", lambda: cl.conv2d(_meta(1, 1, 5, 5), _meta(1, 1, 3, 3), torch.ones(1)), ValueError, "devices"),
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
