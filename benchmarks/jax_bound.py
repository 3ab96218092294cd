"""How much faster than lax.conv can a JAX formulation of the multi-channel case be? (issue 9's 3x target)

Times, jitted, on N=8, C 64->64, 56x56, 3x3, padding 1: lax.conv_general_dilated in NCHW (what convlab's
"native" runs for channels-first data) and NHWC; two formulations written with JAX ops (im2col + one matrix
product, and one matrix product per kernel offset); and the matrix product of im2col alone, on a patch
matrix made beforehand. That last one bounds every GEMM formulation from below: even with free patch
extraction, no GEMM formulation beats lax.conv by more than lax.conv's time over that product's.

    python benchmarks/jax_bound.py            # default threads, wall time, median of 7
"""

from __future__ import annotations

import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

BATCH, CHANNELS, OUT_CHANNELS, SIZE = 8, 64, 64, 56
FLOPS = 2 * BATCH * OUT_CHANNELS * CHANNELS * 9 * SIZE * SIZE


def im2col(x, k):  # NHWC x, HWIO k
    padded = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    patches = jnp.concatenate([padded[:, i : i + SIZE, j : j + SIZE, :] for i in range(3) for j in range(3)], axis=-1)
    rows = patches.reshape(BATCH * SIZE * SIZE, 9 * CHANNELS)
    return (rows @ k.reshape(9 * CHANNELS, OUT_CHANNELS)).reshape(BATCH, SIZE, SIZE, OUT_CHANNELS)


def gemm_per_offset(x, k):
    padded = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    return sum(padded[:, i : i + SIZE, j : j + SIZE, :] @ k[i, j] for i in range(3) for j in range(3))


def main() -> None:
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.random((BATCH, CHANNELS, SIZE, SIZE), np.float32))
    k = jnp.asarray(rng.random((OUT_CHANNELS, CHANNELS, 3, 3), np.float32))
    x_last, k_last = jnp.transpose(x, (0, 2, 3, 1)), jnp.transpose(k, (2, 3, 1, 0))
    patches = jnp.asarray(rng.random((BATCH * SIZE * SIZE, 9 * CHANNELS), np.float32))
    nhwc = ("NHWC", "HWIO", "NHWC")
    cases = {
        "lax.conv NCHW": (lambda x, k: lax.conv_general_dilated(x, k, (1, 1), ((1, 1), (1, 1))), (x, k)),
        "lax.conv NHWC": (
            lambda x, k: lax.conv_general_dilated(x, k, (1, 1), ((1, 1), (1, 1)), dimension_numbers=nhwc),
            (x_last, k_last),
        ),
        "im2col + matmul": (im2col, (x_last, k_last)),
        "matmul per offset": (gemm_per_offset, (x_last, k_last)),
        "the im2col matmul alone": (lambda p, k: p @ k.reshape(9 * CHANNELS, OUT_CHANNELS), (patches, k_last)),
    }
    jitted = {name: (jax.jit(fn), args) for name, (fn, args) in cases.items()}
    for fn, args in jitted.values():
        jax.block_until_ready(fn(*args))
    times = {name: [] for name in jitted}
    for _ in range(7):
        for name, (fn, args) in jitted.items():
            start = time.perf_counter()
            jax.block_until_ready(fn(*args))
            times[name].append(time.perf_counter() - start)
    base = statistics.median(times["lax.conv NCHW"])
    for name, values in times.items():
        t = statistics.median(values)
        print(f"{name:24s} {t * 1e3:7.1f} ms {FLOPS / t / 1e9:6.1f} GFLOP/s  lax.conv NCHW / this: {base / t:4.2f}")


if __name__ == "__main__":
    main()
