"""conv_transpose2d on torch: against torch.nn.functional.conv_transpose2d, autograd against the closed-form VJP,
and ConvTranspose2D as an nn.Module trained one step with torch.optim."""

from __future__ import annotations

import numpy as np
import pytest
import reference
import transpose_cases as tc
from conftest import require_adapter

import convlab as cl

torch = pytest.importorskip("torch")
require_adapter("torch")

F = torch.nn.functional


def torch_transpose(X, K, bias, stride, pads, dilation, output_padding):
    """torch's own transposed convolution; asymmetric pads crop its full result (torch pads symmetrically)."""
    x, k = torch.from_numpy(X), torch.from_numpy(K)
    b = None if bias is None else torch.from_numpy(bias)
    if tc.symmetric(pads):
        padding = tuple(p for p, _ in pads)
        return F.conv_transpose2d(x, k, b, stride, padding, output_padding, 1, dilation).numpy()
    full = F.conv_transpose2d(x, k, None, stride, 0, 0, 1, dilation).numpy()
    return tc.crop_full(full, X, K, bias, stride, pads, dilation, output_padding)


@tc.each_case_layout_and_algorithm
def test_equals_torchs_conv_transpose2d_on_integers(case, data_format, algorithm):
    y = tc.check_equals_on_integers(case, data_format, algorithm, torch_transpose, torch.from_numpy, torch.Tensor.numpy)
    assert isinstance(y, torch.Tensor) and y.dtype == torch.float32


@pytest.mark.parametrize("case", tc.GEOMETRIES, ids=tc.IDS)
def test_float64_random_within_the_bound_of_torchs_op(case):
    _, x_shape, k_shape, stride, pads, dilation, extra = case
    rng = np.random.default_rng(7)
    X, K = rng.standard_normal(x_shape), rng.standard_normal(k_shape)
    geometry = tc.options(stride, pads, dilation, extra)
    y = cl.conv_transpose2d(torch.from_numpy(X), torch.from_numpy(K), **geometry)
    assert y.dtype == torch.float64
    exact = reference.conv_transpose2d(X, K, None, stride, pads, dilation, extra)
    bound = tc.forward_bound(X, K, None, geometry, "float64")
    reference.assert_within_bound(y.numpy(), exact, bound, "convlab")
    reference.assert_within_bound(torch_transpose(X, K, None, stride, pads, dilation, extra), exact, bound, "torch")


def test_autograd_equals_the_closed_form_exactly_on_integers():
    rng = np.random.default_rng(3)
    X, K = tc.integers(rng, (2, 3, 5, 4)), tc.integers(rng, (3, 2, 3, 3))
    geometry = tc.options((2, 2), ((1, 1), (1, 1)), (1, 1), (1, 1))
    x, k = torch.from_numpy(X).requires_grad_(True), torch.from_numpy(K).requires_grad_(True)
    y = cl.conv_transpose2d(x, k, **geometry)
    dY = torch.from_numpy(tc.integers(rng, tuple(y.shape)))
    dX, dK = torch.autograd.grad(y, (x, k), dY)
    closed = cl.conv_transpose2d_vjp(torch.from_numpy(X), torch.from_numpy(K), dY, **geometry)
    assert torch.equal(closed[0], dX) and torch.equal(closed[1], dK)
    assert torch.equal(closed[2], dY.sum(dim=(0, 2, 3)))


@pytest.mark.parametrize(
    "x_shape, k_shape, stride, core",
    [
        ((1, 1, 6, 6), (1, 1, 3, 3), 1, True),  # few channel pairs at stride 1: the core's correlation is faster
        ((1, 2, 6, 6), (2, 2, 3, 3), 1, True),
        ((1, 4, 6, 6), (4, 4, 3, 3), 1, False),
        ((1, 1, 6, 6), (1, 1, 3, 3), 2, False),  # strided: torch's own
    ],
)
def test_binding_keeps_the_core_formulation_where_it_is_faster(monkeypatch, x_shape, k_shape, stride, core):
    """benchmarks/conv_transpose.py's verdicts, as the binding applies them (algorithm "native" = "auto")."""
    import convlab_torch

    calls = []
    real = convlab_torch.transpose_primitive
    monkeypatch.setattr(convlab_torch, "transpose_primitive", lambda *a: calls.append(a) or real(*a))
    X, K = torch.ones(x_shape), torch.ones(k_shape)
    y = cl.conv_transpose2d(X, K, stride=stride, padding=1, algorithm="native")
    assert bool(calls) is core
    torch.testing.assert_close(y, cl.conv_transpose2d(X, K, stride=stride, padding=1, algorithm="correlation"))


def test_layer_is_a_module_and_trains_one_step_with_torch_optim():
    layer, X, target = tc.training_problem("torch")
    assert isinstance(layer, torch.nn.Module)
    assert [name for name, _ in layer.named_parameters()] == ["weight", "bias"]
    assert tuple(layer.weight.shape) == (2, 3, 3, 3) and "conv_transpose2d" in repr(layer)
    weight, bias = layer.weight.detach().numpy().copy(), layer.bias.detach().numpy().copy()
    optimizer = torch.optim.SGD(layer.parameters(), lr=1e-3)
    y = layer(torch.from_numpy(X))
    loss = ((y - torch.from_numpy(target)) ** 2).sum()
    loss.backward()
    grads = (layer.weight.grad.numpy().copy(), layer.bias.grad.numpy().copy())
    dY = 2 * (y.detach().numpy() - target)
    optimizer.step()
    with torch.no_grad():
        assert ((layer(torch.from_numpy(X)) - torch.from_numpy(target)) ** 2).sum().item() < loss.item()
    tc.check_sgd_step(X, dY, (weight, bias), grads, (layer.weight.detach().numpy(), layer.bias.detach().numpy()))


def test_layer_channels_last_and_state_dict():
    first = cl.ConvTranspose2D(2, 2, 3, stride=2, seed=1, backend="torch")
    last = cl.ConvTranspose2D(2, 2, 3, stride=2, seed=1, data_format="channels_last", backend="torch")
    assert tuple(last.weight.shape) == (2, 2, 3, 2)
    X = torch.from_numpy(np.random.default_rng(2).standard_normal((1, 2, 3, 4)).astype(np.float32))
    y_first, y_last = first(X), last(X.permute(0, 2, 3, 1))
    torch.testing.assert_close(y_last, y_first.permute(0, 2, 3, 1), rtol=1e-6, atol=1e-6)
    twin = cl.ConvTranspose2D(2, 2, 3, stride=2, seed=9, backend="torch")
    twin.load_state_dict(first.state_dict())
    assert torch.equal(twin(X), y_first)
