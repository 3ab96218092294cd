"""What convlab's non-finite rule costs (DESIGN.md section 3): its max pooling against each framework's own op.

    python benchmarks/nonfinite.py --backend tensorflow [--threads 1] [--quick]   # one process per backend
    python benchmarks/nonfinite.py --report                                       # results/nonfinite.md

Max pooling, 3x3 windows, stride 2, padding 1, float32, on two shapes: N=8 C=64 56x56 and one 2048x2048
channel. For each backend, interleaved (harness.measure), median of the repeats:

* ``raw``: the framework's own max-pool op on the same data layout (TensorFlow: NHWC, its CPU kernels' layout;
  the others NCHW), which skips NaN on TensorFlow and MXNet;
* ``convlab``: ``cl.pool2d(..., algorithm="native")`` on finite data, where the repair is skipped after one
  sum over the input (TensorFlow, MXNet; torch and JAX have nothing to repair forward);
* ``convlab, NaN input``: the same call on data holding NaN and a block of -inf, where TensorFlow and MXNet
  pool the input's code too (convlab.algorithms.nonfinite_code) and repair the result;
* with ``grad``: the same three as forward and backward passes (the framework's autodiff, cotangent dY).

``--threads 1`` limits every framework to one thread and times the process's CPU clock (the default then).
Writes ``results/nonfinite.json`` (one entry per backend, merged) and, with ``--report``, ``results/nonfinite.md``.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import harness  # noqa: E402

SHAPES = {"N=8 C=64 56x56": (8, 64, 56, 56), "one 2048x2048 channel": (1, 1, 2048, 2048)}
WINDOW, STRIDE, PADDING = 3, 2, 1
RESULTS = HERE / "results" / "nonfinite.json"
REPORT = HERE / "results" / "nonfinite.md"


def inputs(shape):
    """Finite float32 data, and the same with NaN every 997 pixels and a 4x4 block of -inf."""
    import numpy as np

    clean = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    dirty = clean.copy()
    dirty.reshape(-1)[::997] = np.nan
    dirty[..., 8:12, 8:12] = -np.inf
    return clean, dirty


def build(name: str, shape) -> tuple:
    """(functions, sync, check): each function returns a result the sync waits for."""
    import numpy as np

    import convlab as cl
    from convlab.geometry import conv_geometry, pool_geometry

    be = cl.get_backend(name)
    clean, dirty = inputs(shape)
    out = cl.output_shape(shape, (shape[1], shape[1], WINDOW, WINDOW), stride=STRIDE, padding=PADDING)
    dY = np.random.default_rng(1).normal(size=out).astype(np.float32)
    channels_last = name == "tensorflow"
    if channels_last:
        clean, dirty, dY = (a.transpose(0, 2, 3, 1).copy() for a in (clean, dirty, dY))
    options = dict(stride=STRIDE, padding=PADDING, algorithm="native", backend=name)
    if channels_last:
        options["data_format"] = "channels_last"
    fns, sync, before = {}, (lambda outs: None), None
    x, x_nan, dy = (be.asarray(a, "float32") for a in (clean, dirty, dY))

    def ours(v):
        return cl.pool2d(v, WINDOW, "max", **options)

    if name == "numpy":
        raw = ours  # NumPy has no pooling of its own: convlab's is the reference, nothing to repair
    elif name == "torch":
        import torch

        torch.set_grad_enabled(True)

        def raw(v):
            return torch.max_pool2d(v, WINDOW, STRIDE, PADDING)

    elif name == "jax":
        import jax
        from jax import lax

        pads = ((0, 0), (0, 0), (PADDING, PADDING), (PADDING, PADDING))
        raw = jax.jit(lambda v: lax.reduce_window(v, -np.inf, lax.max, (1, 1, 3, 3), (1, 1, 2, 2), pads))
        sync = jax.block_until_ready
    elif name == "tensorflow":
        import tensorflow as tf

        pads = [[0, 0], [PADDING, PADDING], [PADDING, PADDING], [0, 0]]

        def raw(v):
            return tf.nn.max_pool2d(v, WINDOW, STRIDE, pads)

        geometry = pool_geometry(
            clean.shape, WINDOW, "max", stride=STRIDE, padding=PADDING, data_format="channels_last"
        )
        before = functools.partial(be._pool2d_in, "NHWC", geometry=geometry, repair=False)
        sync = lambda outs: outs[-1].numpy()  # noqa: E731
        # the dilated convolution's guard (TensorflowBackend.conv2d): a sum, then the spelled-out kernel, or
        # tf.nn.convolution's dilation for inputs holding NaN or inf
        k = be.asarray(np.random.default_rng(2).normal(size=(3, 3, shape[1], shape[1])).astype(np.float32), "float32")
        conv = conv_geometry(clean.shape, k.shape, padding=2, dilation=2, data_format="channels_last")
        fns["conv2d dilation 2 before the guard"] = lambda: be._conv2d(x, k, None, conv)
        fns["conv2d dilation 2"] = lambda: be.conv2d(x, k, None, conv)
        fns["conv2d dilation 2, NaN input"] = lambda: be.conv2d(x_nan, k, None, conv)
    elif name == "mxnet":
        import convlab_mxnet
        import mxnet as mx

        def raw(v):
            return mx.npx.pooling(v, kernel=(3, 3), stride=(2, 2), pad=(1, 1), pool_type="max")

        geometry = pool_geometry(clean.shape, WINDOW, "max", stride=STRIDE, padding=PADDING)
        before = functools.partial(convlab_mxnet._raw_max_pool, be._ops, geometry=geometry, pads=geometry.pads)

        sync = lambda outs: mx.npx.waitall()  # noqa: E731
    else:
        raise SystemExit(f"unknown backend {name!r}")
    fns["raw"] = lambda: raw(x)
    if before is not None:  # the adapter's pooling without the repair: what convlab ran before
        fns["convlab before the repair"] = lambda: before(x)
    fns["convlab"] = lambda: ours(x)
    fns["convlab, NaN input"] = lambda: ours(x_nan)
    if be.has_autodiff:
        grad = gradient(name, be, dy)
        fns["raw grad"] = lambda: grad(raw, x)
        if before is not None:
            fns["convlab before the repair grad"] = lambda: grad(before, x)
        fns["convlab grad"] = lambda: grad(ours, x)
        fns["convlab grad, NaN input"] = lambda: grad(ours, x_nan)
    expected = cl.pool2d(dirty.astype(np.float64), WINDOW, "max", **{**options, "backend": "numpy"})

    def check() -> dict:
        got = np.asarray(be.to_numpy(ours(x_nan)), np.float64)
        raw_got = np.asarray(be.to_numpy(raw(x_nan)), np.float64)
        same = bool(np.array_equal(got, expected, equal_nan=True))
        return {
            "convlab follows the rule": same,
            "raw op follows the rule": bool(np.array_equal(raw_got, expected, equal_nan=True)),
        }

    return fns, sync, check


def gradient(name, be, dy):
    """``grad(fn, x)``: the gradient of sum(fn(x) * dy) with the framework's autodiff."""
    if name == "torch":
        import torch

        def grad(fn, x):
            leaf = x.detach().requires_grad_(True)
            return torch.autograd.grad(fn(leaf), leaf, dy)[0]

        return grad
    if name == "jax":
        import jax

        cache = {}

        def grad(fn, x):
            if fn not in cache:
                cache[fn] = jax.jit(lambda v: jax.vjp(fn, v)[1](dy)[0])
            return cache[fn](x)

        return grad
    if name == "tensorflow":
        import tensorflow as tf

        def grad(fn, x):
            with tf.GradientTape() as tape:
                tape.watch(x)
                y = fn(x)
            return tape.gradient(y, x, output_gradients=dy)

        return grad
    import mxnet as mx

    def grad(fn, x):
        leaf = x.detach()
        leaf.attach_grad()
        with mx.autograd.record():
            y = fn(leaf)
        y.backward(dy)
        return leaf.grad

    return grad


def baselines(key: str, rows: dict) -> tuple:
    """(the framework's own op, convlab before the repair) a row is compared with: None where there is none."""
    if key.startswith("conv2d"):
        return None, rows.get("conv2d dilation 2 before the guard")
    grad = " grad" if "grad" in key else ""
    return rows.get("raw" + grad), rows.get("convlab before the repair" + grad)


def ratios(key: str, rows: dict) -> tuple:
    r = rows[key]["median_s"]
    return tuple(None if base is None else r / base["median_s"] for base in baselines(key, rows))


def report() -> str:
    data = json.loads(RESULTS.read_text())
    lines = [
        "# What the non-finite rule costs (benchmarks/nonfinite.py)",
        "",
        "Max pooling 3x3, stride 2, padding 1, float32, one thread (CPU clock); median time per call, as a multiple "
        "of the framework's own op (`raw`, which skips NaN on TensorFlow and MXNet) and of convlab's pooling before "
        "the repair (the adapter's own path, TensorFlow and MXNet). `convlab`: `cl.pool2d(..., "
        'algorithm="native")` on finite data, where one sum over the input shows the repair is not needed; `NaN '
        "input`: data holding NaN (one pixel in 997) and a 4x4 block of -inf, where TensorFlow and MXNet pool the "
        "input's code too and repair the result. `grad`: forward and backward passes (the framework's autodiff). "
        "TensorFlow on NHWC data (its kernels' layout), the others NCHW. TensorFlow's dilated conv2d (3x3, "
        "dilation 2, padding 2, C->C) adds a sum before its spelled-out kernel, and runs tf.nn.convolution's "
        "dilation on inputs holding NaN or inf.",
        "",
    ]
    for backend, entry in data.items():
        machine = entry["machine"]
        raw_ok = all(c["raw op follows the rule"] for c in entry["checks"].values())
        ours_ok = all(c["convlab follows the rule"] for c in entry["checks"].values())
        lines += [
            f"## {backend} {machine['versions'].get(backend, '')}",
            "",
            f"{entry['when']}, threads {entry['threads']}, {entry['clock']} clock; load average "
            f"{machine['loadavg_start'][0]:.1f} at the start, {entry['loadavg_end'][0]:.1f} at the end. "
            f"The raw op's forward pass follows the rule: {'yes' if raw_ok else 'no'}; "
            f"convlab's: {'yes' if ours_ok else 'NO'}.",
            "",
            "| shape | function | median ms | x raw | x before the repair |",
            "|---|---|---|---|---|",
        ]
        for shape, rows in entry["results"].items():
            for key, r in rows.items():
                versus_raw, versus_before = (f"{v:.2f}" if v is not None else "-" for v in ratios(key, rows))
                lines.append(f"| {shape} | {key} | {r['median_s'] * 1e3:.3f} | {versus_raw} | {versus_before} |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = harness.script_parser(__doc__, "write results/nonfinite.md from the JSON", threads=1)
    args = parser.parse_args()
    if args.report:
        REPORT.write_text(report() + "\n")
        print(REPORT.read_text())
        return
    if not args.backend:
        parser.error("--backend is required")
    clock = harness.limit_threads(args.backend, args.threads, args.clock)
    settings = harness.Settings(args.quick)
    settings.budget = 10.0
    results, checks = {}, {}
    import convlab as cl

    version = cl.get_backend(args.backend).version()
    machine = harness.machine({args.backend: version})
    for label, shape in SHAPES.items():
        fns, sync, check = build(args.backend, shape)
        checks[label] = check()
        timed = {key: harness.Timed(fn, sync, blas=args.backend == "numpy") for key, fn in fns.items()}
        results[label] = harness.measure(timed, settings, 5 if args.quick else 11)
        for key, r in results[label].items():
            versus_raw, versus_before = (
                f"{v:5.2f}x" if v is not None else "    - " for v in ratios(key, results[label])
            )
            print(
                f"{args.backend:10s} {label:22s} {key:36s} {r['median_s'] * 1e3:9.3f} ms {versus_raw} {versus_before}"
            )
        print(f"{args.backend:10s} {label:22s} {checks[label]}")
    data = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    data[args.backend] = {
        "case": {"window": WINDOW, "stride": STRIDE, "padding": PADDING, "dtype": "float32", "shapes": SHAPES},
        "threads": args.threads or "default",
        "clock": clock,
        "results": results,
        "checks": checks,
        "machine": machine,
        "loadavg_end": list(os.getloadavg()),
        "when": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    harness.write_json(RESULTS, data)


if __name__ == "__main__":
    main()
