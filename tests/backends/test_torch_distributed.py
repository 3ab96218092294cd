"""convlab's torch Conv2D under DistributedDataParallel: 2 CPU processes (gloo, loopback) = 1 process.

The DDP run (tests/backends/distributed_scripts/torch_ddp.py, started in a subprocess that spawns two
ranks) trains on halves of the batch; this test trains the same layer in this process on the whole batch
and checks that the weights agree within the rounding-error bound of rounding_bounds.py (float64; the
all-reduce reorders the gradient sums, so bit equality is not promised). A NumPy float64 trajectory checks
the single-process run itself, so that a fault common to both runs cannot pass.
"""

from __future__ import annotations

import socket

import numpy as np
import pytest
import rounding_bounds
from conftest import require_adapter
from distributed_scripts import run_script

import convlab as cl

torch = pytest.importorskip("torch")
require_adapter("torch")
dist = pytest.importorskip("torch.distributed")
pytestmark = pytest.mark.only_backend("torch")  # run only in the torch session

PADDING = 1
PADS = ((PADDING, PADDING), (PADDING, PADDING))
LR, STEPS = 0.4, 6


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def problem():
    """Inputs, targets from a different kernel, and the layer's seeded initial weights, in float64."""
    rng = np.random.default_rng(16)
    X = rng.normal(size=(8, 2, 7, 6))
    target_kernel = rng.normal(size=(3, 2, 3, 3))
    T = rounding_bounds.conv2d(X, target_kernel, rng.normal(size=3), PADS) + 0.1 * rng.normal(size=(8, 3, 7, 6))
    layer = cl.Conv2D(3, 2, 3, padding=PADDING, seed=0, backend="torch").double()
    return X, T, layer


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="torch built without gloo")
def test_ddp_two_processes_train_like_one_process_on_the_whole_batch(tmp_path):
    X, T, layer = problem()
    weight0, bias0 = layer.weight.detach().numpy().copy(), layer.bias.detach().numpy().copy()
    inputs = tmp_path / "inputs.npz"
    np.savez(inputs, X=X, T=T, weight=weight0, bias=bias0, lr=LR, steps=STEPS, padding=PADDING)

    run_script("torch_ddp.py", inputs, tmp_path / "rank", free_port())
    ranks = [np.load(tmp_path / f"rank{rank}.npz") for rank in range(2)]
    assert [int(r["world_size"]) for r in ranks] == [2, 2] and str(ranks[0]["backend"]) == "gloo"

    # one process, the whole batch, the same loss and optimizer: computed here, independently
    optimizer = torch.optim.SGD(layer.parameters(), lr=LR)
    Xt, Tt = torch.from_numpy(X), torch.from_numpy(T)
    trajectory = []
    for _ in range(STEPS):
        optimizer.zero_grad()
        torch.nn.functional.mse_loss(layer(Xt), Tt).backward()
        optimizer.step()
        trajectory.append(layer.weight.detach().numpy().copy())
    weight, bias = layer.weight.detach().numpy(), layer.bias.detach().numpy()

    w_ref, b_ref, bound = rounding_bounds.sgd(X, T, weight0, bias0, LR, STEPS, PADS, "float64", workers=2)
    # the single-process run is right (a fault shared with the DDP run cannot pass) ...
    assert rounding_bounds.difference(weight, bias, w_ref, b_ref) <= bound
    # ... training moved the weights far beyond the tolerance (the comparison below can fail) ...
    assert rounding_bounds.difference(weight, bias, weight0, bias0) > 1e6 * bound
    for rank in ranks:
        # ... and every rank ends where one process on the whole batch ends, step by step
        error = rounding_bounds.difference(rank["weight"], rank["bias"], weight, bias)
        assert error <= bound, f"DDP weights differ by {error:.3g} (2-norm), bound {bound:.3g}"
        steps_error = np.abs(rank["trajectory"] - np.stack(trajectory)).max()
        assert steps_error <= bound, f"a DDP step differs by {steps_error:.3g}, bound {bound:.3g}"
    np.testing.assert_array_equal(ranks[0]["weight"], ranks[1]["weight"])  # DDP keeps replicas identical
