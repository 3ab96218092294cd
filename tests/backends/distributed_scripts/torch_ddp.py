"""Train convlab's torch Conv2D with DistributedDataParallel: 2 processes, gloo, loopback, CPU.

Usage: python torch_ddp.py INPUTS.npz OUTPUT_PREFIX PORT

INPUTS.npz holds X (N, C, H, W), T (targets), weight, bias (float64), lr, steps and padding. Each rank
trains on its contiguous half of the batch; DDP averages the gradients, so every rank should end with
the weights of one process trained on the whole batch. Each rank writes OUTPUT_PREFIX<rank>.npz with its
final weight and bias and the weight after every step.
"""

from __future__ import annotations

import sys

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel

import convlab as cl

WORLD_SIZE = 2


def worker(rank: int, inputs: str, prefix: str, port: int) -> None:
    torch.set_num_threads(1)  # two processes share the machine's cores
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD_SIZE)
    try:
        data = np.load(inputs)
        X, T = torch.from_numpy(data["X"]), torch.from_numpy(data["T"])
        kernel = data["weight"].shape[2:]
        layer = cl.Conv2D(
            tuple(kernel), X.shape[1], T.shape[1], padding=int(data["padding"]), seed=0, backend="torch"
        ).double()
        with torch.no_grad():  # the test's initial weights (DDP would broadcast rank 0's anyway)
            layer.weight.copy_(torch.from_numpy(data["weight"]))
            layer.bias.copy_(torch.from_numpy(data["bias"]))
        model = DistributedDataParallel(layer)
        optimizer = torch.optim.SGD(model.parameters(), lr=float(data["lr"]))
        share = X.shape[0] // WORLD_SIZE
        mine = slice(rank * share, (rank + 1) * share)
        trajectory = []
        for _ in range(int(data["steps"])):
            optimizer.zero_grad()
            loss = torch.nn.functional.mse_loss(model(X[mine]), T[mine])
            loss.backward()  # DDP all-reduces (averages) the gradients here
            optimizer.step()
            trajectory.append(layer.weight.detach().numpy().copy())
        np.savez(
            f"{prefix}{rank}.npz",
            weight=layer.weight.detach().numpy(),
            bias=layer.bias.detach().numpy(),
            trajectory=np.stack(trajectory),
            world_size=dist.get_world_size(),
            backend=dist.get_backend(),
        )
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":  # mp.spawn re-imports this module in each child
    inputs, prefix, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    mp.spawn(worker, args=(inputs, prefix, port), nprocs=WORLD_SIZE, join=True)
