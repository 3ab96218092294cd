"""Benchmark convlab on one backend against that framework's own ops; write results/<backend>.json.

    python benchmarks/run.py --backend torch [--quick] [--out DIR]

One backend per process (each framework lives in its own virtualenv; ``nox -s bench`` runs them all
and then ``report.py``). What is measured, in this order:

1. single channel: conv2d, max and avg pool2d, windows 3x3 and the book's 1x2, images 8^2..2048^2;
2. multi channel: N=8, C 64->64, 56x56, 3x3 (conv2d with padding 1, also in GFLOP/s; pooling);
3. per-call overhead: conv2d 3x3 on 8x8, microseconds added per call (JAX: jitted and eager);
4. the book's Python-loop corr2d at 32^2 and 64^2 against convlab's corr2d (and scipy on NumPy);
5. a float32 matrix product, for this machine's peak GFLOP/s;
6. in fresh subprocesses: the first-call cost (import plus first op, each side in its own interpreter)
   and the peak memory of one call (RSS high-water mark; also tracemalloc on NumPy).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.append(str(Path(__file__).resolve().parent.parent))  # a source checkout, when convlab is not installed

import harness  # noqa: E402
from frameworks import FRAMEWORKS  # noqa: E402
from harness import fmt_time, progress, status  # noqa: E402

SIZES = (8, 32, 128, 512, 2048)
QUICK_SIZES = (8, 128, 512)
WINDOWS = ((3, 3), (1, 2))  # a 3x3 kernel and the book's 1x2 edge detector [[1, -1]]
POOL_OPS = ("max", "avg")
MULTI = dict(batch=8, channels=64, out_channels=64, size=56, window=(3, 3), pad=1)
BOOK_SIZES = (32, 64)
FIRST_CALL_SIZE = 32
MEMORY_SIZE = 2048
QUICK_MEMORY_SIZE = 512


def _data(shape, seed):
    import numpy as np

    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _inputs(op, batch, channels, out_channels, size, window):
    x = _data((batch, channels, size, size), 1)
    k = _data((out_channels, channels) + tuple(window), 2) if op == "conv2d" else None
    return x, k


def _wxh(window) -> str:
    return f"{window[0]}x{window[1]}"


def compare(fw, settings, kind, op, x, k, window, pad, repeats=None, eager=False, **extra) -> list:
    """Time convlab and the references on one case; one row per (variant, convlab, reference) pair."""
    fns, pairs = fw.ops(op, x, k, window, pad, eager=eager)
    timings = harness.measure(fns, settings, repeats)
    rows = []
    for variant, ours, ref in pairs:
        a, b = timings[ours]["median_s"], timings[ref]["median_s"]
        row = dict(kind=kind, op=op, window=_wxh(window), variant=variant, reference=ref, **extra)
        row.update(convlab_s=a, reference_s=b, ratio=a / b, added_us=(a - b) * 1e6)
        row.update(convlab_timing=timings[ours], reference_timing=timings[ref])
        rows.append(row)
        progress(
            f"{fw.name:10s} {kind:8s} {op:6s} {_wxh(window)} {extra.get('size', '')!s:>5} {variant:14s} "
            f"convlab {fmt_time(a):>9s}  {ref} {fmt_time(b):>9s}  ratio {a / b:.3f}"
        )
    return rows


def single_channel(fw, settings) -> list:
    rows = []
    for op in ("conv2d",) + POOL_OPS:
        for window in WINDOWS[:1] if settings.quick and op != "conv2d" else WINDOWS:  # --quick: pools 3x3 only
            for size in QUICK_SIZES if settings.quick else SIZES:
                x, k = _inputs(op, 1, 1, 1, size, window)
                for row in compare(fw, settings, "single", op, x, k, window, 0, size=size):
                    if size >= harness.RATIO_FROM_SIZE:
                        row.update(
                            target=f"<= {harness.RATIO_TARGET}", status=status(row["ratio"] <= harness.RATIO_TARGET)
                        )
                    rows.append(row)
    return rows


def multi_channel(fw, settings) -> list:
    m = MULTI
    label = f"{m['batch']}x{m['channels']}->{m['out_channels']}x{m['size']}x{m['size']}"
    flops = 2 * m["batch"] * m["out_channels"] * m["channels"] * m["window"][0] * m["window"][1] * m["size"] ** 2
    rows = []
    for op in ("conv2d",) + POOL_OPS:
        x, k = _inputs(op, m["batch"], m["channels"], m["out_channels"], m["size"], m["window"])
        pad = m["pad"] if op == "conv2d" else 0
        for row in compare(fw, settings, "multi", op, x, k, m["window"], pad, size=label, padding=pad):
            row.update(target=f"<= {harness.RATIO_TARGET}", status=status(row["ratio"] <= harness.RATIO_TARGET))
            if op == "conv2d":
                row.update(flops=flops, convlab_gflops=flops / row["convlab_s"] / 1e9)
                row["reference_gflops"] = flops / row["reference_s"] / 1e9
                progress(f"{fw.name:10s} multi    conv2d GFLOP/s convlab {row['convlab_gflops']:.1f}")
            rows.append(row)
    return rows


def overhead(fw, settings) -> list:
    """conv2d 3x3 on 8x8: time added per call, with more repeats (each call is microseconds)."""
    x, k = _inputs("conv2d", 1, 1, 1, 8, (3, 3))
    rows = compare(
        fw, settings, "overhead", "conv2d", x, k, (3, 3), 0, repeats=3 * settings.repeats, eager=True, size=8
    )
    limit = harness.OVERHEAD_TARGET_US.get(fw.name)
    for row in rows:
        if limit is not None:
            row.update(target=f"<= {limit:g} µs", status=status(row["added_us"] <= limit))
    return rows


def book(fw, settings) -> list:
    """The book's Python-loop corr2d against convlab's corr2d on the same 2-D tensors (3x3 kernel)."""
    return [_book_case(fw, settings, size) for size in (BOOK_SIZES[:1] if settings.quick else BOOK_SIZES)]


def _book_case(fw, settings, size) -> dict:
    X, K = fw.tensor(_data((size, size), 1)), fw.tensor(_data((3, 3), 2))
    # The loop takes seconds: one call in --quick, else one warm-up call and the median of three.
    loop = [harness.time_once(lambda: fw.sync([fw.book_corr2d(X, K)])) for _ in range(1 if settings.quick else 4)]
    loop = loop[-3:]
    loop = dict(median_s=statistics.median(loop), min_s=min(loop), max_s=max(loop), repeats=len(loop), number=1)
    ours = {"convlab corr2d": fw.timed(lambda: fw.cl.corr2d(X, K, backend=fw.name))}
    if fw.name == "numpy":
        import scipy.ndimage
        import scipy.signal

        ours["scipy.signal.correlate2d"] = fw.timed(lambda: scipy.signal.correlate2d(X, K, mode="valid"))
        ours["scipy.ndimage.correlate"] = fw.timed(lambda: scipy.ndimage.correlate(X, K))
    timings = harness.measure(ours, settings)
    row = dict(kind="book", op="corr2d", window="3x3", size=size, book_s=loop["median_s"], book_timing=loop)
    row["convlab_s"] = timings["convlab corr2d"]["median_s"]
    row["speedup"] = row["book_s"] / row["convlab_s"]
    row["others_s"] = {key: t["median_s"] for key, t in timings.items() if key != "convlab corr2d"}
    if fw.name == "numpy" and size == 64:
        target = harness.NUMPY_BOOK_SPEEDUP_TARGET
        row.update(target=f">= {target:g}x", status=status(row["speedup"] >= target))
    progress(
        f"{fw.name:10s} book     corr2d {size:>4}  book loop {fmt_time(row['book_s'])}  "
        f"convlab {fmt_time(row['convlab_s'])}  speedup {row['speedup']:.0f}x"
    )
    return row


def peak(fw, settings) -> list:
    n = 1024 if settings.quick else 4096
    timing = harness.measure({"matmul": fw.matmul_gflops(n)}, settings, repeats=3 if settings.quick else 7)["matmul"]
    gflops = 2 * n**3 / timing["median_s"] / 1e9
    best = 2 * n**3 / timing["min_s"] / 1e9
    progress(f"{fw.name:10s} peak     float32 matmul {n}: {gflops:.0f} GFLOP/s (best repeat {best:.0f})")
    return [dict(kind="peak", op="matmul", size=n, median_s=timing["median_s"], gflops=gflops, best_gflops=best)]


# -- fresh-subprocess probes ----------------------------------------------------------------------


def _subprocess(backend: str, *args: str, env=None) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--backend", backend, *args]
    out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=600)
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    if out.returncode != 0 or not lines:
        raise RuntimeError(f"{' '.join(cmd[1:])} failed ({out.returncode}): {out.stderr[-2000:]}")
    return json.loads(lines[-1])


#: the environment of the fresh subprocesses (first call and memory)
PROBE_ENV = {
    # why: glibc's dynamic mmap threshold would keep freed buffers resident and hide the next call's peak
    "MALLOC_MMAP_THRESHOLD_": "131072",
    # why: MXNet's pooled CPU storage would hand the warm-up call's memory to the measured one
    "MXNET_CPU_MEM_POOL_TYPE": "Unpooled",
}


def fresh(fw, settings) -> list:
    """First-call cost (import plus first op, each side in a fresh interpreter) and peak memory per call.

    The memory probe runs in the first convlab interpreter, after its first call was timed.
    """
    size = QUICK_MEMORY_SIZE if settings.quick else MEMORY_SIZE
    starts = {"convlab": [], "native": []}
    memory_rows = []
    for attempt in range(1 if settings.quick else 3):
        for side in starts:
            extra = ("--size", str(size)) if side == "convlab" and attempt == 0 else ()
            result = _subprocess(fw.name, "--probe", "first-call", "--side", side, *extra, env=PROBE_ENV)
            memory_rows.extend(result.pop("memory", []))
            starts[side].append(result)
    a, b = (min(starts[side], key=lambda t: t["total_s"]) for side in starts)  # the least disturbed start
    progress(
        f"{fw.name:10s} first call: convlab {fmt_time(a['total_s'])} (import {fmt_time(a['import_s'])}), "
        f"native {fmt_time(b['total_s'])} (import {fmt_time(b['import_s'])})"
    )
    rows = [
        dict(
            kind="first_call",
            op="conv2d",
            window="3x3",
            size=FIRST_CALL_SIZE,
            reference=b["reference"],
            convlab=a,
            native=b,
            convlab_s=a["total_s"],
            reference_s=b["total_s"],
            ratio=a["total_s"] / b["total_s"],
            added_ms=(a["total_s"] - b["total_s"]) * 1e3,
        )
    ]
    for row in memory_rows:
        measured = row.get("tracemalloc_bytes", row.get("framework_bytes", row["rss_bytes"]))
        multiple = measured / row["output_bytes"]
        row["peak_over_output"] = multiple
        if fw.name == "numpy" and row["side"] == "convlab" and row["size"] != "multi":
            target = harness.NUMPY_MEMORY_TARGET
            row.update(target=f"<= {target:g}x output", status=status(multiple <= target))
        progress(
            f"{fw.name:10s} memory   conv2d {row['size']!s:>5} {row['key']:28s} "
            f"RSS peak {row['rss_bytes'] / 2**20:7.1f} MiB"
            + (f"  tracemalloc {row['tracemalloc_bytes'] / 2**20:7.1f} MiB" if "tracemalloc_bytes" in row else "")
            + (f"  {fw.name}'s counter {row['framework_bytes'] / 2**20:7.1f} MiB" if "framework_bytes" in row else "")
            + f"  (output {row['output_bytes'] / 2**20:.1f} MiB)"
        )
    return rows + memory_rows


def probe_first_call(name: str, side: str, memory_size) -> dict:
    start = time.perf_counter()
    import numpy  # noqa: F401  (both sides need it; counted in the import)

    fw = FRAMEWORKS[name]()
    fw.load(with_convlab=side == "convlab", native=side == "native")
    imported = time.perf_counter()
    x, k = _inputs("conv2d", 1, 1, 1, FIRST_CALL_SIZE, (3, 3))
    if side == "convlab":
        fn, label = fw.convlab("conv2d", fw.tensor(x), fw.tensor(k), (3, 3), 0), "convlab"
    else:
        fns, pairs = fw.ops("conv2d", x, k, (3, 3), 0)
        label = pairs[0][2]
        fn = fns[label].fn
    fw.sync([fn()])
    done = time.perf_counter()
    result = dict(reference=label, import_s=imported - start, first_op_s=done - imported, total_s=done - start)
    if memory_size:
        fw.load()
        result["memory"] = probe_memory(fw, memory_size)
    return result


def _rss_kib():
    status_text = Path("/proc/self/status").read_text()
    fields = dict(line.split(":", 1) for line in status_text.splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0])


def probe_memory(fw, size: int) -> list:
    """Peak resident memory added by one call (after warm-up), for convlab and the reference."""
    import tracemalloc

    import numpy as np

    name = fw.name
    m = MULTI
    cases = [(size, _inputs("conv2d", 1, 1, 1, size, (3, 3)), 0)]
    if size == MEMORY_SIZE:  # the full run; --quick measures one small single-channel case
        multi = _inputs("conv2d", m["batch"], m["channels"], m["out_channels"], m["size"], m["window"])
        cases.append(("multi", multi, m["pad"]))
    rows = []
    for size, (x, k), pad in cases:
        fns, pairs = fw.ops("conv2d", x, k, (3, 3), pad)
        for key, timed in fns.items():
            if name == "numpy" and "ndimage" in key:
                continue  # a "same"-size output: not the same work
            out = [timed.fn() for _ in range(2)]
            timed.sync(out)
            output_bytes = int(np.prod(out[0].shape)) * 4
            del out
            gc.collect()
            time.sleep(harness.PAUSE)
            before, _ = _rss_kib()
            Path("/proc/self/clear_refs").write_text("5")  # reset the high-water mark VmHWM to the current RSS
            out = [timed.fn()]
            timed.sync(out)
            _, high = _rss_kib()
            row = dict(
                kind="memory",
                op="conv2d",
                size=size,
                key=key,
                side="convlab" if key.startswith("convlab") else "reference",
            )
            row.update(rss_bytes=(high - before) * 1024, output_bytes=output_bytes)
            del out
            counted = fw.peak_bytes(timed)
            if counted is not None:
                row.update(framework_bytes=counted, framework_counter=fw.memory_counter)
            if name == "numpy":
                gc.collect()
                tracemalloc.start()
                base = tracemalloc.get_traced_memory()[0]
                result = timed.fn()
                row["tracemalloc_bytes"] = tracemalloc.get_traced_memory()[1] - base
                tracemalloc.stop()
                del result
            rows.append(row)
    return rows


# -- main -----------------------------------------------------------------------------------------


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backend", required=True, choices=sorted(FRAMEWORKS))
    parser.add_argument("--quick", action="store_true", help="fewer sizes and repeats: seconds, not minutes")
    parser.add_argument("--out", type=Path, default=harness.RESULTS, help="directory for <backend>.json")
    parser.add_argument(
        "--only",
        nargs="*",
        choices=("single", "multi", "overhead", "book", "peak", "fresh"),
        help="run only these sections, keeping the other sections' rows of an existing <backend>.json",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="limit every framework (and BLAS) to this many threads; default: each framework's own default",
    )
    parser.add_argument(
        "--clock",
        choices=sorted(harness.CLOCKS),
        default="wall",
        help="wall time (default), or this process's CPU time: immune to other processes' load; use with --threads 1",
    )
    parser.add_argument("--probe", choices=("first-call",), help=argparse.SUPPRESS)
    parser.add_argument("--side", choices=("convlab", "native"), help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.probe == "first-call":
        print(json.dumps(probe_first_call(args.backend, args.side, args.size)))
        return 0

    if args.threads:  # before any framework is imported; the probes' subprocesses inherit it
        os.environ.update(harness.thread_env(args.threads))
    harness.clock = harness.CLOCKS[args.clock]
    settings = harness.Settings(args.quick)
    fw = FRAMEWORKS[args.backend]()
    progress(f"{args.backend}: loading")
    fw.load()
    versions = fw.versions()
    progress(f"{args.backend}: " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    sections = {
        "single": single_channel,
        "multi": multi_channel,
        "overhead": overhead,
        "book": book,
        "peak": peak,
        "fresh": fresh,
    }
    data = dict(backend=args.backend, quick=args.quick, machine=harness.machine(versions), rows=[], errors=[])
    data.update(clock=args.clock, threads=args.threads or "default")
    path = args.out / f"{args.backend}.json"
    kinds = {
        "single": ["single"],
        "multi": ["multi"],
        "overhead": ["overhead"],
        "book": ["book"],
        "peak": ["peak"],
        "fresh": ["first_call", "memory"],
    }
    if args.only and path.exists():  # re-run some sections: keep the other sections' rows
        replaced = {kind for section in args.only for kind in kinds[section]}
        data["rows"] = [row for row in json.loads(path.read_text())["rows"] if row["kind"] not in replaced]
    started = time.perf_counter()
    for section, fn in sections.items():
        if args.only and section not in args.only:
            continue
        progress(f"{args.backend}: {section}")
        try:
            data["rows"].extend(fn(fw, settings))
        except Exception as error:  # a broken adapter must not lose the other sections' numbers
            progress(f"{args.backend}: {section} failed: {error!r}")
            data["errors"].append(dict(section=section, error=repr(error), traceback=traceback.format_exc()))
    data["seconds"] = time.perf_counter() - started
    data["machine"]["loadavg_end"] = list(os.getloadavg())
    harness.write_json(path, data)
    progress(f"{args.backend}: wrote {path} ({data['seconds']:.0f} s, {len(data['errors'])} errors)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
