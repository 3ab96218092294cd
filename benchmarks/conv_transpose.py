"""conv_transpose2d (issue 14): convlab against each framework's own transposed convolution.

    python benchmarks/conv_transpose.py --backend torch [--quick] [--only TEXT]   # one backend, this interpreter
    python benchmarks/conv_transpose.py --all [--quick]     # every backend, each in its .nox/tests-<name> venv
    python benchmarks/conv_transpose.py --report            # rebuild results/conv_transpose.md from the JSON

One process per backend, one thread, CPU time of the process (``time.process_time``: other processes' load on
this shared machine inflates it less than wall time), medians of interleaved repeats (benchmarks/harness.py's
interleaving: each round runs every function once; a ratio is the median over rounds of the two functions' times
in the same round). Cases: images 128² to 1024², channels 1->1 and 16->16 (batch 1), stride 1 and 2, 3x3 kernels
(padding 1, output_padding stride - 1: the output is stride times the input) and 4x4 kernels (padding 1: stride
2 doubles the input).

Per case it times, on the very same tensors:

* ``framework``: the framework's own transposed op called directly (torch ``F.conv_transpose2d``, TensorFlow
  ``tf.nn.conv2d_transpose`` on NHWC, JAX ``lax.conv_transpose`` under ``jax.jit``, MXNet
  ``npx.deconvolution``; NumPy has none);
* ``auto``: ``cl.conv_transpose2d`` as a user calls it (the adapter's binding where it has one);
* ``correlation``: ``cl.conv_transpose2d(..., algorithm="correlation")``, the core's formulation.

JAX's convlab calls run under ``jax.jit`` too, as in benchmarks/run.py. TensorFlow runs channels-last (its CPU
kernels take NHWC only), the others channels-first. The target (issue 14): ``auto / framework <= 1.10`` from
128² up. Results: ``results/conv_transpose.json`` (every backend's rows) and ``results/conv_transpose.md``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.append(str(Path(__file__).resolve().parent.parent))

import harness  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
JSON = harness.RESULTS / "conv_transpose.json"
MARKDOWN = harness.RESULTS / "conv_transpose.md"
BACKENDS = ("numpy", "torch", "tensorflow", "jax", "mxnet")
SIZES, QUICK_SIZES = (128, 256, 512, 1024), (128, 512)
TARGET = 1.10


def cases(quick: bool) -> list:
    """(name, size, channels, stride, kernel, padding, output_padding)."""
    out = []
    for channels in (1, 16):
        for stride in (1, 2):
            for kernel in (3, 4):
                for size in QUICK_SIZES if quick else SIZES:
                    extra = stride - 1 if kernel == 3 else 0
                    name = f"C{channels}->{channels} s{stride} {kernel}x{kernel} {size}^2"
                    out.append((name, size, channels, stride, kernel, 1, extra))
    return out


class Side:
    """One backend: tensors, the sync, the framework's own transposed op, and convlab's calls."""

    def __init__(self, name: str) -> None:
        import convlab as cl

        self.name, self.cl = name, cl
        self.channels_last = name == "tensorflow"
        self.wrap = lambda f: f
        self.sync = lambda outs: None
        if name == "torch":
            import torch

            self.tensor = torch.from_numpy
        elif name == "tensorflow":
            import tensorflow as tf

            self.tf, self.tensor = tf, tf.constant
            self.sync = lambda outs: outs[-1].numpy()
        elif name == "jax":
            import jax

            self.jax, self.tensor, self.wrap = jax, jax.numpy.asarray, jax.jit
            self.sync = jax.block_until_ready
        elif name == "mxnet":
            import mxnet

            self.mx, self.tensor = mxnet, mxnet.np.array
            self.sync = lambda outs: mxnet.npx.waitall()
        else:
            self.tensor = lambda a: a

    def native(self, x, k, stride: int, padding: int, extra: int, out_hw):
        """The framework's own transposed convolution on the same tensors (None on NumPy)."""
        window = tuple(k.shape[:2] if self.channels_last else k.shape[2:])
        if self.name == "torch":
            import torch.nn.functional as F

            return lambda: F.conv_transpose2d(x, k, None, stride, padding, extra)
        if self.name == "tensorflow":
            tf = self.tf
            shape = (x.shape[0],) + tuple(out_hw) + (k.shape[2],)
            pads = [[0, 0], [padding, padding], [padding, padding], [0, 0]]  # output_padding: in the shape
            return lambda: tf.nn.conv2d_transpose(x, k, shape, stride, pads)
        if self.name == "jax":
            from jax import lax

            pads = [(d - padding, d - padding + extra) for d in (window[0] - 1, window[1] - 1)]
            f = self.jax.jit(
                lambda a, b: lax.conv_transpose(
                    a, b, (stride, stride), pads, dimension_numbers=("NCHW", "OIHW", "NCHW"),
                    transpose_kernel=True, precision=lax.Precision.HIGHEST,
                )
            )  # fmt: skip
            return lambda: f(x, k)
        if self.name == "mxnet":
            npx = self.mx.npx
            options = dict(kernel=window, stride=(stride, stride), pad=(padding, padding), adj=(extra, extra))
            return lambda: npx.deconvolution(x, k, num_filter=k.shape[1], no_bias=True, **options)
        return None

    def ours(self, x, k, stride: int, padding: int, extra: int, algorithm: str):
        cl, name = self.cl, self.name
        data_format = "channels_last" if self.channels_last else "channels_first"
        options = dict(stride=stride, padding=padding, output_padding=extra, data_format=data_format)
        f = self.wrap(lambda a, b: cl.conv_transpose2d(a, b, algorithm=algorithm, backend=name, **options))
        return lambda: f(x, k)


def measure_paired(functions: dict, settings: harness.Settings) -> dict:
    """Seconds per call of each function in every round: harness.measure's interleaving (each round runs every
    function once, every other round in reverse order), all samples kept so that rounds can be paired."""
    numbers, rounds = {}, settings.repeats
    for key, timed in functions.items():
        once = [harness._run(timed, 1) for _ in range(settings.warmup)][-1]
        numbers[key] = max(1, min(100_000, math.ceil(settings.min_time / max(once, 1e-9))))
        rounds = min(rounds, max(5, int(settings.budget / max(once * numbers[key], 1e-9))))
    samples: dict = {key: [] for key in functions}
    keys = list(functions)
    for index in range(rounds):
        for key in keys if index % 2 == 0 else keys[::-1]:
            samples[key].append(harness._run(functions[key], numbers[key]))
    return samples


def paired_ratio(mine: list, theirs: list) -> float:
    """The median over rounds of mine / theirs in the same round: load that comes and goes hits both sides of a
    round alike, so this ratio moves less than the ratio of the two medians."""
    return statistics.median(a / b for a, b in zip(mine, theirs))


def run_backend(name: str, quick: bool, only: str) -> dict:
    import numpy as np

    side = Side(name)
    backend = side.cl.get_backend(name)
    settings = harness.Settings(quick)
    settings.repeats, settings.budget = (7, 1.0) if quick else (15, 4.0)
    rng = np.random.default_rng(0)
    rows = []
    for case, size, channels, stride, kernel, padding, extra in cases(quick):
        if only and only not in case:
            continue
        x = rng.normal(size=(1, channels, size, size)).astype(np.float32)
        k = rng.normal(size=(channels, channels, kernel, kernel)).astype(np.float32)
        if side.channels_last:
            x, k = np.ascontiguousarray(x.transpose(0, 2, 3, 1)), np.ascontiguousarray(k.transpose(2, 3, 1, 0))
        x, k = side.tensor(x), side.tensor(k)
        out = (size - 1) * stride - 2 * padding + kernel - 1 + extra + 1
        functions = {
            "auto": side.ours(x, k, stride, padding, extra, "auto"),
            "correlation": side.ours(x, k, stride, padding, extra, "correlation"),
        }
        native = side.native(x, k, stride, padding, extra, (out, out))
        if native is not None:
            functions["framework"] = native
        outputs = {key: np.asarray(backend.to_numpy(fn())) for key, fn in functions.items()}
        for value in outputs.values():  # the same answer, or the timing means nothing
            np.testing.assert_allclose(value, outputs["correlation"], rtol=1e-3, atol=1e-3 * channels * kernel**2)
        samples = measure_paired({key: harness.Timed(fn, side.sync) for key, fn in functions.items()}, settings)
        seconds = {key: statistics.median(values) for key, values in samples.items()}
        row = {
            "case": case,
            "size": size,
            "channels": channels,
            "stride": stride,
            "kernel": kernel,
            "padding": padding,
            "output_padding": extra,
            "output": out,
            "seconds": seconds,
            "spread": {key: [min(values), max(values)] for key, values in samples.items()},
            "repeats": {key: len(values) for key, values in samples.items()},
            "bound": bool(getattr(backend, "conv_transpose2d", None)),
        }
        if "framework" in seconds:
            row["auto_over_framework"] = paired_ratio(samples["auto"], samples["framework"])
            row["correlation_over_framework"] = paired_ratio(samples["correlation"], samples["framework"])
            row["auto_over_framework_of_medians"] = seconds["auto"] / seconds["framework"]
        rows.append(row)
        cells = "  ".join(f"{key} {harness.fmt_time(value):>9s}" for key, value in seconds.items())
        ratio = f"auto/framework {row['auto_over_framework']:.2f}" if "framework" in seconds else ""
        harness.progress(f"{name} {case:26s} {cells}  {ratio}")
    return {
        "backend": name,
        "version": backend.version(),
        "quick": quick,
        "machine": harness.machine(side.cl.backends()),
        "rows": rows,
    }


def report(data: dict) -> str:
    """The Markdown table: per backend and case, convlab's auto and correlation over the framework's op."""
    lines = [
        "# conv_transpose2d: convlab vs each framework's own transposed convolution",
        "",
        "Written by `benchmarks/conv_transpose.py` (one process per backend, one thread, CPU time, medians of "
        "interleaved repeats). Cells: milliseconds per call; `auto/fw` is convlab's `conv_transpose2d` as a user "
        "calls it over the framework's own op (target <= 1.10 from 128² up), `corr/fw` the core's formulation "
        '(`algorithm="correlation"`) over the framework\'s op. 3x3: padding 1, output_padding stride - 1; 4x4: '
        "padding 1. TensorFlow channels-last, the others channels-first; JAX under `jax.jit`.",
        "",
    ]
    for name in BACKENDS:
        result = data.get(name)
        if not result:
            continue
        rows = result["rows"]
        has_framework = any("framework" in row["seconds"] for row in rows)
        worst = max((row.get("auto_over_framework", 0.0) for row in rows), default=0.0)
        verdict = (
            f"worst auto/fw {worst:.2f}: {'PASS' if worst <= TARGET else 'FAIL'}" if has_framework else "no native op"
        )
        lines += [f"## {name} {result['version']} ({verdict})", ""]
        if has_framework:
            lines.append("| case | framework ms | auto ms | correlation ms | auto/fw | corr/fw |")
            lines.append("|---|---:|---:|---:|---:|---:|")
        else:
            lines.append("| case | auto ms | correlation ms |")
            lines.append("|---|---:|---:|")
        for row in rows:
            s = {key: value * 1e3 for key, value in row["seconds"].items()}
            if has_framework:
                lines.append(
                    f"| {row['case']} | {s['framework']:.3f} | {s['auto']:.3f} | {s['correlation']:.3f} | "
                    f"{row['auto_over_framework']:.2f} | {row['correlation_over_framework']:.2f} |"
                )
            else:
                lines.append(f"| {row['case']} | {s['auto']:.3f} | {s['correlation']:.3f} |")
        machine = result["machine"]
        lines += ["", f"{machine['cpu']}, load average at start {machine['loadavg_start']}, {machine['date']}.", ""]
    return "\n".join(lines)


def _load() -> dict:
    return json.loads(JSON.read_text()) if JSON.exists() else {}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backend", choices=BACKENDS)
    parser.add_argument("--all", action="store_true", help="every backend, each in its own .nox venv")
    parser.add_argument("--report", action="store_true", help="only rebuild the Markdown from the JSON")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", default="", help="only cases whose name contains this (not saved)")
    args = parser.parse_args()
    if args.report:
        MARKDOWN.write_text(report(_load()) + "\n")
        return
    if args.all:
        for name in BACKENDS:
            python = ROOT / ".nox" / f"tests-{name}" / "bin" / "python"
            env = dict(os.environ, PYTHONPATH=f"{ROOT}:{ROOT / 'backends' / name}")
            command = [str(python), __file__, "--backend", name] + (["--quick"] if args.quick else [])
            subprocess.run(command, env=env, check=True)
        return
    if not args.backend:
        parser.error("--backend, --all or --report")
    harness.limit_threads(args.backend, 1, "cpu")
    result = run_backend(args.backend, args.quick, args.only)
    if args.only:
        return
    data = _load()
    data[args.backend] = result
    harness.write_json(JSON, data)
    MARKDOWN.write_text(report(data) + "\n")
    print(f"wrote {JSON} and {MARKDOWN}")


if __name__ == "__main__":
    main()
