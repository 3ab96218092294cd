"""Winograd F(2x2, 3x3) / F(4x4, 3x3) against each framework's own convolution, one process per backend.

    python benchmarks/winograd.py --backend torch [--threads 1] [--quick] [--out DIR]
    python benchmarks/winograd.py --report [--out DIR]      # the Markdown tables of DIR's results

The multi-channel case of DESIGN.md section 6: N=8, C 64->64, 56x56, 3x3, padding 1, float32, channels-first
(TensorFlow, whose CPU kernels are channels-last, on NHWC data). Every spelling of convlab.winograd that
the backend can run is timed with the framework's op, interleaved round by round (the order alternating,
see harness.measure), median of the repeats. ``--threads 1`` limits every framework to one thread
(OMP/MKL/OpenBLAS, torch.set_num_threads, TF intra/inter-op, XLA's Eigen pool) and times with the process's
CPU clock (``--clock cpu``, the default with one thread: other agents' load on this shared 2-core machine
cannot inflate it as much as it does wall time); without it, default threads and the wall clock.

Writes ``DIR/winograd-<backend>[-1t].json``; ``benchmarks/WINOGRAD.md`` quotes them.
"""

from __future__ import annotations

import functools
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import harness  # noqa: E402

SHAPE_X, SHAPE_K, PADDING = (8, 64, 56, 56), (64, 64, 3, 3), 1
FLOPS = 2 * 8 * 64 * 64 * 9 * 56 * 56  # of the direct correlation: what GFLOP/s figures refer to
TARGETS = {"jax": 2.5, "torch": 1.3, "numpy": 2.0}  # native / winograd, from the issue


def build(name: str, tiles) -> tuple:
    """(functions, reference name, sync, versions): every callable returns the (N, Co, H, W)-ordered result."""
    import numpy as np

    import convlab as cl
    from convlab import winograd
    from convlab.geometry import conv_geometry

    be = cl.get_backend(name)
    rng = np.random.default_rng(0)
    X = rng.normal(size=SHAPE_X).astype(np.float32)
    K = rng.normal(size=SHAPE_K).astype(np.float32)
    nchw = conv_geometry(SHAPE_X, SHAPE_K, padding=PADDING)
    x_cl, k_cl = X.transpose(0, 2, 3, 1).copy(), K.transpose(2, 3, 1, 0).copy()
    nhwc = conv_geometry(x_cl.shape, k_cl.shape, padding=PADDING, data_format="channels_last")
    fns, sync, layouts = {}, (lambda outs: None), {}
    if name == "numpy":
        fns["numpy gemm (native)"] = lambda: be.conv2d_gemm(X, K, None, nchw)
        fns["algorithms.conv2d_gemm"] = lambda: cl.algorithms.conv2d_gemm(be, X, K, None, nchw)
        for m in tiles:
            fns[f"winograd{m} seam"] = functools.partial(winograd.conv2d_winograd, be, X, K, None, nchw, m)
            fns[f"winograd{m} numpy_winograd"] = functools.partial(winograd.numpy_winograd, X, K, None, nchw, m)
        fns["winograd4 numpy_winograd kronecker"] = functools.partial(
            winograd.numpy_winograd, X, K, None, nchw, 4, separable=False
        )
        g_matrix = winograd.transforms(4)[1]
        fns["kernel transform alone (tile 4)"] = functools.partial(
            winograd._kernel_transform_numpy, K, nchw, g_matrix, np.float32
        )
        native = "numpy gemm (native)"
    elif name == "torch":
        import torch
        import torch.nn.functional as F

        x, k = torch.from_numpy(X), torch.from_numpy(K)
        fns["F.conv2d"] = lambda: F.conv2d(x, k, padding=PADDING)
        for m in tiles:
            fns[f"winograd{m} seam"] = functools.partial(winograd.conv2d_winograd, be, x, k, None, nchw, m)
            fns[f"winograd{m} torch_winograd"] = functools.partial(winograd.torch_winograd, x, k, None, nchw, m)
        fns["winograd4 torch_winograd kronecker"] = functools.partial(
            winograd.torch_winograd, x, k, None, nchw, 4, separable=False
        )
        fns["kernel transform alone (tile 4)"] = functools.partial(winograd.torch_kernel_transform, k, nchw, 4)
        native = "F.conv2d"
        torch.set_grad_enabled(False)
    elif name == "jax":
        import jax
        from jax import lax

        x, k = jax.numpy.asarray(X), jax.numpy.asarray(K)
        conv = jax.jit(lambda a, b: lax.conv_general_dilated(a, b, (1, 1), [(PADDING, PADDING)] * 2))
        fns["lax.conv (jit)"] = lambda: conv(x, k)
        for m in tiles:
            seam = jax.jit(functools.partial(winograd.conv2d_winograd, be, bias=None, geometry=nchw, tile=m))
            fns[f"winograd{m} seam (jit)"] = functools.partial(seam, x, k)
            fns[f"winograd{m} jax_winograd"] = functools.partial(winograd.jax_winograd(nchw, m), x, k, None)
        x_nhwc, k_hwio = jax.numpy.asarray(x_cl), jax.numpy.asarray(k_cl)
        conv_nhwc = jax.jit(
            lambda a, b: lax.conv_general_dilated(
                a, b, (1, 1), [(PADDING, PADDING)] * 2, dimension_numbers=("NHWC", "HWIO", "NHWC")
            )
        )
        fns["lax.conv (jit) NHWC"] = lambda: conv_nhwc(x_nhwc, k_hwio)
        fns["winograd4 jax_winograd NHWC"] = functools.partial(winograd.jax_winograd(nhwc, 4), x_nhwc, k_hwio, None)
        layouts = {"lax.conv (jit) NHWC": "nhwc", "winograd4 jax_winograd NHWC": "nhwc"}
        native = "lax.conv (jit)"
        sync = jax.block_until_ready
    elif name == "tensorflow":
        import tensorflow as tf

        x, k = tf.constant(x_cl), tf.constant(k_cl)
        pads = [[0, 0], [PADDING, PADDING], [PADDING, PADDING], [0, 0]]
        fns["tf.nn.conv2d (NHWC)"] = lambda: tf.nn.conv2d(x, k, 1, pads)
        for m in tiles:
            fns[f"winograd{m} seam"] = functools.partial(winograd.conv2d_winograd, be, x, k, None, nhwc, m)
            run = winograd.tensorflow_winograd(nhwc, m)
            fns[f"winograd{m} tensorflow_winograd (XLA)"] = functools.partial(run, x, k, None)
        native = "tf.nn.conv2d (NHWC)"
        sync = lambda outs: outs[-1].numpy()  # noqa: E731
        layouts = {key: "nhwc" for key in fns}
    elif name == "mxnet":
        import mxnet as mx

        x, k = mx.np.array(X), mx.np.array(K)
        npx = mx.npx
        fns["npx.convolution"] = lambda: npx.convolution(
            x, k, kernel=(3, 3), pad=(PADDING, PADDING), num_filter=SHAPE_K[0], no_bias=True
        )
        for m in tiles:  # (fused_winograd needs 6-D slicing, which MXNet's slice operator refuses)
            fns[f"winograd{m} seam"] = functools.partial(winograd.conv2d_winograd, be, x, k, None, nchw, m)
            fns[f"winograd{m} mxnet_winograd"] = functools.partial(winograd.mxnet_winograd, x, k, None, nchw, m)
        native = "npx.convolution"
        sync = lambda outs: mx.npx.waitall()  # noqa: E731
    else:
        raise SystemExit(f"unknown backend {name!r}")
    reference = X.astype(np.float64)
    expected = cl.conv2d(reference, K.astype(np.float64), padding=PADDING, backend="numpy")

    def check(key, fn):
        if key.startswith("kernel transform"):
            return 0.0
        y = np.asarray(be.to_numpy(fn()), dtype=np.float64)
        if layouts.get(key) == "nhwc":
            y = y.transpose(0, 3, 1, 2)
        return float(np.max(np.abs(y - expected)) / np.max(np.abs(expected)))

    errors = {key: check(key, fn) for key, fn in fns.items()}
    return fns, native, sync, errors, {name: be.version(), "numpy": np.__version__}


def report(directory: Path) -> str:
    """The Markdown tables of every ``winograd-*.json`` in ``directory`` (what WINOGRAD.md quotes)."""
    import json

    lines = []
    for path in sorted(directory.glob("winograd-*.json")):
        if "accuracy" in path.name:
            continue
        data = json.loads(path.read_text())
        machine = data["machine"]
        lines += [
            f"#### {data['backend']}, threads {data['threads']}, {data['clock']} clock ({path.name})",
            "",
            f"{machine['versions']}; {data['when']}; load average {machine['loadavg_start'][0]:.1f} at the start, "
            f"{data['loadavg_end'][0]:.1f} at the end",
            "",
            "| function | median ms | min ms | max ms | native / this | GFLOP/s (direct-equivalent) |",
            "|---|---|---|---|---|---|",
        ]
        for key, r in data["results"].items():
            lines.append(
                f"| {key} | {r['median_s'] * 1e3:.2f} | {r['min_s'] * 1e3:.2f} | {r['max_s'] * 1e3:.2f} | "
                f"{r['speedup_vs_native']:.2f} | {r['gflops_direct_equivalent']:.0f} |"
            )
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = harness.script_parser(__doc__, "print the Markdown tables of DIR's results")
    parser.add_argument("--tiles", default="2,4")
    parser.add_argument("--repeats", type=int, default=0)
    parser.add_argument("--out", default=str(HERE / "results"))
    args = parser.parse_args()
    if args.report:
        print(report(Path(args.out)))
        return
    if not args.backend:
        parser.error("--backend is required")
    clock = harness.limit_threads(args.backend, args.threads, args.clock)
    tiles = tuple(int(t) for t in args.tiles.split(","))
    fns, native, sync, errors, versions = build(args.backend, tiles)
    settings = harness.Settings(args.quick)
    settings.budget = 20.0  # every function gets all its repeats (each call is tens of milliseconds)
    settings.min_time = 0.05
    timed = {key: harness.Timed(fn, sync, blas=args.backend == "numpy") for key, fn in fns.items()}
    machine = harness.machine(versions)
    results = harness.measure(timed, settings, args.repeats or (5 if args.quick else 15))
    base = results[native]["median_s"]
    rows = {}
    for key, numbers in results.items():
        numbers = dict(numbers)
        numbers["speedup_vs_native"] = base / numbers["median_s"]
        numbers["spread"] = (numbers["max_s"] - numbers["min_s"]) / numbers["median_s"]
        numbers["gflops_direct_equivalent"] = FLOPS / numbers["median_s"] / 1e9
        numbers["max_relative_error"] = errors[key]
        rows[key] = numbers
        print(
            f"{args.backend:10s} {key:40s} {numbers['median_s'] * 1e3:8.2f} ms  (min {numbers['min_s'] * 1e3:7.2f}, "
            f"max {numbers['max_s'] * 1e3:7.2f})  {numbers['speedup_vs_native']:5.2f}x native  "
            f"err {errors[key]:.1e}"
        )
    best = max(
        (r["speedup_vs_native"], key) for key, r in rows.items() if key.startswith("winograd") and "NHWC" not in key
    )
    target = TARGETS.get(args.backend)
    data = {
        "backend": args.backend,
        "case": {"x": SHAPE_X, "k": SHAPE_K, "padding": PADDING, "dtype": "float32"},
        "threads": args.threads or "default",
        "clock": clock,
        "native": native,
        "results": rows,
        "best_winograd": {"name": best[1], "speedup_vs_native": best[0]},
        "target_speedup": target,
        "target_met": None if target is None else best[0] >= target,
        "machine": machine,
        "loadavg_end": list(os.getloadavg()),
        "when": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    suffix = f"-{args.threads}t" if args.threads else ""
    harness.write_json(Path(args.out) / f"winograd-{args.backend}{suffix}.json", data)
    print(f"best: {best[1]} {best[0]:.2f}x native (target {target}); load {os.getloadavg()}")


if __name__ == "__main__":
    main()
