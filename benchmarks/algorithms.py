"""Measure every ``algorithm=`` of conv2d and pool2d per backend and shape: the data behind the rule tables.

    python benchmarks/algorithms.py --backend torch [--threads 1 --clock cpu] [--quick] [--out DIR]
    python benchmarks/algorithms.py --backend torch --sweep [--seed 0 --conv-count 160 --pool-count 96]

``--sweep`` times a seeded random sample of configurations instead (benchmarks/sweep.py: kernels 1..11,
strides 1..3, dilation 1..2, channels 1..64, batch 1..8, images 8^2..2048^2, both layouts and dtypes),
always on one thread's CPU time, into ``DIR/sweep-<backend>[-<tag>].json``; ``benchmarks/fit_rules.py``
turns it into ``convlab/rules/<backend>.json``.

For each benchmark shape (the single-channel sizes 8^2..2048^2 with a 3x3 and the book's 1x2 kernel, a
few-channel case, and the multi-channel case N=8, C 64->64, 56x56, 3x3, padding 1; pooling 3x3 max and
avg, stride 1, single and multi channel) it times ``cl.conv2d(..., algorithm=a)`` for every algorithm,
"auto" included, and the framework's own op called directly, on the same tensors, interleaved round by
round (the order alternates), and reports the median time per call and each algorithm's ratio to the
fastest. JAX is timed under ``jax.jit`` as in benchmarks/run.py. Writes
``DIR/algorithms-<backend>[-<threads>t-<clock>].json``.

On a shared 2-core machine, wall-clock medians of multi-threaded ops move by 2x between runs;
``--threads 1 --clock cpu`` (CPU time of one thread) is the load-robust measure of what a call costs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.append(str(Path(__file__).resolve().parent.parent))

SINGLE_SIZES = (8, 32, 128, 256, 512, 2048)
QUICK_SIZES = (8, 128, 2048)


def cases(quick: bool) -> list:
    """(name, op, X shape NCHW, K shape OIHW or pool window, padding)."""
    out = []
    for size in QUICK_SIZES if quick else SINGLE_SIZES:
        out.append((f"conv 3x3 {size}^2", "conv", (1, 1, size, size), (1, 1, 3, 3), 0))
        out.append((f"conv 1x2 {size}^2", "conv", (1, 1, size, size), (1, 1, 1, 2), 0))
    out.append(("conv 3x3 C3->8 224^2", "conv", (1, 3, 224, 224), (8, 3, 3, 3), 1))
    out.append(("conv 3x3 C16->16 56^2", "conv", (8, 16, 56, 56), (16, 16, 3, 3), 1))
    out.append(("conv multi C64->64 N8 56^2", "conv", (8, 64, 56, 56), (64, 64, 3, 3), 1))
    out.append(("conv 3x3 C1->2 512^2", "conv", (1, 1, 512, 512), (2, 1, 3, 3), 1))
    out.append(("conv 3x3 C2->2 512^2", "conv", (1, 2, 512, 512), (2, 2, 3, 3), 1))
    for mode in ("max", "avg"):
        for size in (128, 2048) if quick else (32, 512, 2048):
            out.append((f"pool {mode} 3x3 {size}^2", mode, (1, 1, size, size), (3, 3), 0))
        out.append((f"pool {mode} 3x3 C4 128^2", mode, (1, 4, 128, 128), (3, 3), 0))
        out.append((f"pool {mode} 3x3 multi", mode, (8, 64, 56, 56), (3, 3), 0))
    return out


class Side:
    """One framework: tensors, a sync, the native op, and how convlab calls are wrapped (jit on JAX)."""

    def __init__(self, name: str) -> None:
        self.name = name
        import convlab as cl

        self.cl = cl
        self.wrap = lambda f: f
        if name == "torch":
            import torch

            self.tensor = lambda a: torch.from_numpy(a)
            self.sync = lambda outs: None
        elif name == "tensorflow":
            import tensorflow as tf

            self.tf = tf
            self.tensor = lambda a: tf.constant(a)
            self.sync = lambda outs: outs[-1].numpy()
        elif name == "jax":
            import jax

            self.jax = jax
            self.tensor = lambda a: jax.numpy.asarray(a)
            self.sync = lambda outs: jax.block_until_ready(outs)
            self.wrap = jax.jit
        elif name == "mxnet":
            import mxnet

            self.mx = mxnet
            self.tensor = lambda a: mxnet.np.array(a)
            self.sync = lambda outs: mxnet.npx.waitall()
        else:
            self.tensor = lambda a: a
            self.sync = lambda outs: None

    def native(self, op: str, x, k, padding: int):
        """The framework's own op on the same (NCHW) tensors; None on NumPy (no native op)."""
        if self.name == "torch":
            import torch.nn.functional as F

            if op == "conv":
                return lambda: F.conv2d(x, k, padding=padding)
            pool = F.max_pool2d if op == "max" else F.avg_pool2d
            return lambda: pool(x, tuple(k), 1)
        if self.name == "tensorflow":
            tf = self.tf
            x_cl = tf.transpose(x, (0, 2, 3, 1))  # TensorFlow's CPU kernels take NHWC only
            if op == "conv":
                k_cl = tf.transpose(k, (2, 3, 1, 0))
                pads = [[0, 0], [padding, padding], [padding, padding], [0, 0]]
                return lambda: tf.nn.conv2d(x_cl, k_cl, 1, pads)
            pool = tf.nn.max_pool2d if op == "max" else tf.nn.avg_pool2d
            return lambda: pool(x_cl, tuple(k), 1, "VALID")
        if self.name == "jax":
            from jax import lax

            if op == "conv":
                f = self.jax.jit(
                    lambda a, b: lax.conv_general_dilated(a, b, (1, 1), [(padding, padding)] * 2, precision="highest")
                )
                return lambda: f(x, k)
            return None
        if self.name == "mxnet":
            npx = self.mx.npx
            if op == "conv":
                window, out_channels = k.shape[2:], k.shape[0]
                return lambda: npx.convolution(
                    x, k, kernel=window, pad=(padding, padding), num_filter=out_channels, no_bias=True
                )
            return lambda: npx.pooling(x, kernel=tuple(k), stride=(1, 1), pool_type=op)
        return None

    def ours(self, op: str, x, k, padding: int, algorithm: str):
        cl, name = self.cl, self.name
        if op == "conv":
            f = self.wrap(lambda a, b: cl.conv2d(a, b, padding=padding, algorithm=algorithm, backend=name))
            return lambda: f(x, k)
        f = self.wrap(lambda a: cl.pool2d(a, k, op, 1, algorithm=algorithm, backend=name))
        return lambda: f(x)


def measure(functions: dict, sync, clock, rounds: int, target: float) -> dict:
    """Median seconds per call of each function, interleaved round by round (the order alternates)."""
    numbers = {}
    for name, fn in functions.items():
        for _ in range(2):
            sync([fn()])  # warm-up (JAX compiles here)
        start = clock()
        sync([fn()])
        once = max(clock() - start, 1e-7)
        numbers[name] = max(1, min(1000, int(target / once)))
    import sweep

    times = sweep.interleaved(functions, numbers, sync, clock, rounds)
    return {name: statistics.median(values) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backend", required=True)
    parser.add_argument("--threads", type=int, default=0, help="limit every framework to N threads (0: default)")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", default="", help="run only cases whose name contains this")
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    sweeping = parser.add_argument_group("sweep (benchmarks/sweep.py)")
    sweeping.add_argument("--sweep", action="store_true", help="time the seeded random sample of configurations")
    sweeping.add_argument("--seed", type=int, default=0)
    sweeping.add_argument("--conv-count", type=int, default=160)
    sweeping.add_argument("--pool-count", type=int, default=96)
    sweeping.add_argument("--no-anchors", action="store_true", help="leave out the fixed anchor shapes")
    sweeping.add_argument("--only-op", choices=("conv", "pool"), default="")
    sweeping.add_argument("--limit", type=int, default=0, help="only the first N configurations")
    sweeping.add_argument("--time-auto", action="store_true", help='time "auto" too (held-out check of the rules)')
    sweeping.add_argument("--only-auto", action="store_true", help='time only native, "auto" and native again')
    sweeping.add_argument("--rules-file", default="", help='run "auto" with this rule file (convlab/rules format)')
    sweeping.add_argument("--tag", default="", help="file name suffix: sweep-<backend>-<tag>.json")
    sweeping.add_argument("--resume", action="store_true", help="keep the rows already in the output file")
    sweeping.add_argument("--watchdog", type=float, default=0, help="restart past a configuration stuck this long")
    args = parser.parse_args()
    if args.sweep:
        args.threads, args.clock = 1, "cpu"
    import harness

    harness.limit_threads(args.backend, args.threads, args.clock)
    if args.sweep:
        if args.backend == "jax":
            os.environ.setdefault("JAX_ENABLE_X64", "1")  # float64 configurations; float32 ones stay float32
        import sweep

        sweep.run(args)
        return
    import numpy as np

    from convlab import algorithms

    side = Side(args.backend)
    backend = side.cl.get_backend(args.backend)
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    rounds, target = (5, 0.01) if args.quick else (9, 0.03)
    rng = np.random.default_rng(0)
    rows = []
    for name, op, x_shape, k_shape, padding in cases(args.quick):
        if args.only and args.only not in name:
            continue
        x = side.tensor(rng.normal(size=x_shape).astype(np.float32))
        k = side.tensor(rng.normal(size=k_shape).astype(np.float32)) if op == "conv" else k_shape
        choices = algorithms.CONV_ALGORITHMS if op == "conv" else algorithms.POOL_ALGORITHMS
        functions = {a: side.ours(op, x, k, padding, a) for a in choices if a != "auto"}
        functions["auto"] = side.ours(op, x, k, padding, "auto")
        native = side.native(op, x, k, padding)
        if native is not None:
            functions["framework"] = native
        times = measure(functions, side.sync, clock, rounds, target)
        best = min(t for a, t in times.items() if a not in ("auto", "framework"))
        fastest = min((t, a) for a, t in times.items() if a not in ("auto", "framework"))[1]
        if op == "conv":
            geometry = side.cl.geometry.conv_geometry(x_shape, k_shape, padding=padding)
            chosen = algorithms.choose(backend, backend.conv_rules, algorithms.conv_shape(geometry, "float32"), None)
        else:
            geometry = side.cl.geometry.pool_geometry(x_shape, k_shape, op)
            chosen = algorithms.choose(backend, backend.pool_rules, algorithms.pool_shape(geometry, "float32"), None)
        row = {
            "case": name,
            "op": op,
            "x_shape": list(x_shape),
            "k_shape": list(k_shape),
            "padding": padding,
            "seconds": times,
            "fastest": fastest,
            "auto_chooses": chosen,
            "auto_over_fastest": times["auto"] / best,
            "framework_over_best": times["framework"] / best if "framework" in times else None,
        }
        if name.startswith("conv multi"):
            flops = 2 * 8 * 64 * 64 * 9 * 56 * 56
            row["gflops"] = {a: flops / t / 1e9 for a, t in times.items()}
        rows.append(row)
        cells = "  ".join(f"{a} {t * 1e3:8.3f}ms" for a, t in times.items())
        print(f"{name:28s} {cells}  fastest {fastest:6s} auto={chosen} auto/fastest {row['auto_over_fastest']:.2f}")
        sys.stdout.flush()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    suffix = f"-{args.threads}t-{args.clock}" if args.threads or args.clock != "wall" else ""
    path = out / f"algorithms-{args.backend}{suffix}.json"
    meta = {
        "backend": args.backend,
        "version": backend.version(),
        "threads": args.threads or "default",
        "clock": args.clock,
        "rounds": rounds,
        "when": time.strftime("%Y-%m-%d %H:%M:%S"),
        "loadavg": os.getloadavg(),
    }
    path.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
