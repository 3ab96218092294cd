"""Gigapixel benchmark: an image larger than the workers' memory, correlated, max-pooled and reduced on dask.

One run, on a ``distributed.LocalCluster`` of ``--workers`` processes (one thread each) limited to
``--memory-limit`` each:

1. ``generate``: the lazily generated float32 image (integer values 0-15, from dask's random generator,
   ``--size`` squared in ``--chunk`` squared blocks), summed: the cost of making the data, which every
   pipeline below pays too;
2. ``convlab``: ``cl.conv2d(image, K3x3, padding="same")`` -> ``cl.pool2d(2, stride=2)`` (max) -> ``sum``;
3. ``dask-image``: the anchor, ``dask_image.ndfilters.correlate(image, K3x3, mode="constant")`` (zero
   padding, the same correlation) -> the same max pooling with ``dask.array.coarsen`` -> ``sum``;
4. both correlations alone (-> ``sum``), the like-for-like ratio of the two correlations.

Each pipeline runs on a new cluster, so the peak resident memory each worker reports (``getrusage``)
is that pipeline's; the scheduler's per-worker memory metric is sampled too. Besides wall-clock time,
each worker's CPU time (user + system) is read before and after: pixels per CPU-second is what a core
delivered whatever else ran on this shared machine, and the per-core target is judged on it. The
results must agree: the image is integer-valued, so both correlations are exact and the float64 sums
are equal to the last bit, and sample windows of both correlations (corners and chunk boundaries) are
compared bit for bit. The NumPy backend's throughput on an in-memory image (``--numpy-size``) of the
same pipeline, on one core, is the per-core target (at least half of it per core on the cluster).

Results go to ``benchmarks/results/gigapixel.json`` and ``gigapixel.md``.

    python benchmarks/gigapixel.py                        # 65536^2 (16 GiB), 2 workers x 4 GiB
    python benchmarks/gigapixel.py --size 16384 --memory-limit 0.75GiB --skip-correlation-only   # 1 GiB, ~2 min
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
KERNEL = np.array([[1.0, 2.0, 1.0], [0.0, 3.0, -1.0], [-2.0, 1.0, 2.0]], dtype=np.float32)
SEED = 16


def _cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return platform.processor() or "unknown"
    facts = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
    return f"{facts.get('Model name', '?').strip()}, {facts.get('CPU(s)', '?').strip()} CPUs"


def _image(size: int, chunk: int):
    import dask.array as da

    # uniform integers 0-15: full-range random bytes masked to their low 4 bits (no rejection sampling, which
    # integers(0, 16) does per byte: generating took half the CPU of the correlation), one fused task per block
    rng = da.random.default_rng(SEED)
    return (rng.integers(0, 256, size=(size, size), chunks=chunk, dtype=np.uint8) & 15).astype(np.float32)


def _numpy_image(size: int) -> np.ndarray:
    """An in-memory image made as each block of ``_image`` is (other values: another seed per block)."""
    return (np.random.default_rng(SEED).integers(0, 256, size=(size, size), dtype=np.uint8) & 15).astype(np.float32)


def _convlab_pipeline(image, pool: bool):
    import convlab as cl

    y = cl.conv2d(image, KERNEL, padding="same")
    return (cl.pool2d(y, 2, stride=2) if pool else y), y


def _dask_image_pipeline(image, pool: bool):
    import dask.array as da
    from dask_image import ndfilters

    y = ndfilters.correlate(image, KERNEL, mode="constant", cval=0.0)
    return (da.coarsen(np.max, y, {0: 2, 1: 2}, trim_excess=True) if pool else y), y


def _numpy_baseline(size: int, repeats: int) -> dict:
    """The same pipeline on the NumPy backend, one core, an in-memory image: seconds and pixels per second."""
    import convlab as cl

    image = _numpy_image(size)

    def conv_pool_sum():
        y = cl.conv2d(image, KERNEL, padding="same", backend="numpy")
        return cl.pool2d(y, 2, stride=2, backend="numpy").sum(dtype=np.float64)

    def conv_sum():
        return cl.conv2d(image, KERNEL, padding="same", backend="numpy").sum(dtype=np.float64)

    def generate():
        return _numpy_image(size).sum(dtype=np.float64)

    functions = {"conv_pool_sum": conv_pool_sum, "conv_sum": conv_sum, "generate_sum": generate}
    for function in functions.values():  # warm-up: plans, first-touch of the allocator
        function()
    out = {"size": size, "pixels": size * size, "repeats": repeats}
    for name, function in functions.items():
        wall, cpu = [], []
        for _ in range(repeats):
            start, cpu_start = time.perf_counter(), time.process_time()
            function()
            wall.append(time.perf_counter() - start)
            cpu.append(time.process_time() - cpu_start)
        out[name] = {
            "seconds": statistics.median(wall),
            "pixels_per_second": size * size / statistics.median(wall),
            "cpu_seconds": statistics.median(cpu),
            "pixels_per_cpu_second": size * size / statistics.median(cpu),
        }
    return out


class _MemorySampler:
    """The scheduler's memory metric of every worker, sampled while a pipeline runs; the maximum per worker."""

    def __init__(self, client, interval: float = 0.25) -> None:
        self.client, self.interval, self.peaks = client, interval, {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                workers = self.client.scheduler_info(n_workers=-1)["workers"]
            except Exception:  # noqa: BLE001 - a restart or shutdown in progress: sample again
                workers = {}
            for address, info in workers.items():
                memory = info.get("metrics", {}).get("memory", 0)
                self.peaks[address] = max(self.peaks.get(address, 0), memory)
            self._stop.wait(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def _peak_rss() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def _cpu_seconds() -> dict:
    """User + system CPU time of this process (a worker's, when run with ``client.run``): all of it, and that of
    the threads that run tasks (distributed's executor threads; the rest is the worker's event loop: transfers,
    spilling, heartbeats, monitors)."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    tasks = 0.0
    ticks = os.sysconf("SC_CLK_TCK")
    for thread in threading.enumerate():
        if "Dask-Default-Threads" not in thread.name or thread.native_id is None:
            continue
        try:
            with open(f"/proc/self/task/{thread.native_id}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:  # not Linux, or the thread just ended
            return {"all": usage.ru_utime + usage.ru_stime, "tasks": None}
        tasks += (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
    return {"all": usage.ru_utime + usage.ru_stime, "tasks": tasks}


def _warm_up() -> None:
    """Import what the tasks need and run each library once, in a worker, before anything is timed."""
    import dask.array as da
    from dask_image import ndfilters

    import convlab as cl

    image = da.ones((16, 16), chunks=8, dtype=np.float32)
    cl.pool2d(cl.conv2d(image, KERNEL, padding="same"), 2, stride=2).sum().compute(scheduler="sync")
    ndfilters.correlate(image, KERNEL, mode="constant").sum().compute(scheduler="sync")
    _image(16, 8).sum().compute(scheduler="sync")


@contextlib.contextmanager
def _cluster(args):
    import dask
    import distributed

    # the workers' statistical profiler samples the task thread every 10 ms: off, for every library alike (in the
    # configuration, which the nanny hands to its worker: an environment variable set after dask was imported is
    # not read, and the earlier runs had the profiler on)
    with dask.config.set({"distributed.worker.profile.enabled": False}), distributed.LocalCluster(
        n_workers=args.workers, threads_per_worker=1, processes=True, memory_limit=args.memory_limit,
        dashboard_address=None,
    ) as cluster, distributed.Client(cluster) as client:  # fmt: skip
        client.run(_warm_up)
        yield client


def _run_pipeline(args, name: str, result, pixels: int) -> dict:
    """``result`` computed on a new cluster (fresh worker processes: their peak RSS is this pipeline's)."""
    from distributed import progress

    workers = args.workers
    with _cluster(args) as client:
        print(f"\n== {name}", flush=True)
        cpu_before = client.run(_cpu_seconds)
        with _MemorySampler(client) as sampler:
            start, main_cpu = time.perf_counter(), time.process_time()
            future = client.compute(result)
            progress(future)
            value = future.result()
            seconds, main_cpu = time.perf_counter() - start, time.process_time() - main_cpu
        cpu_after = client.run(_cpu_seconds)
        peaks = client.run(_peak_rss)
    worker_cpu = sum(cpu_after[w]["all"] - cpu_before[w]["all"] for w in cpu_after)
    known = all(cpu["tasks"] is not None for cpu in [*cpu_before.values(), *cpu_after.values()])
    task_cpu = sum(cpu_after[w]["tasks"] - cpu_before[w]["tasks"] for w in cpu_after) if known else None
    print(f"\n   {seconds:.1f} s, {pixels / seconds / 1e6:.1f} Mpx/s; workers' CPU {worker_cpu:.1f} s = "
          f"{pixels / worker_cpu / 1e6:.1f} Mpx per CPU-second (in task threads {task_cpu} s); value {value!r}",
          flush=True)  # fmt: skip
    return {
        "seconds": seconds,
        "pixels_per_second": pixels / seconds,
        "pixels_per_second_per_core": pixels / seconds / workers,
        "worker_cpu_seconds": worker_cpu,
        "pixels_per_worker_cpu_second": pixels / worker_cpu,
        "worker_task_thread_cpu_seconds": task_cpu,
        "client_and_scheduler_cpu_seconds": main_cpu,
        "value": float(value),
        "peak_rss_bytes_per_worker": sorted(peaks.values()),
        "peak_sampled_memory_bytes_per_worker": sorted(sampler.peaks.values()),
        "tasks": len(result.__dask_graph__()),
    }


def _samples(client, size: int, chunk: int, ours, theirs) -> dict:
    """Windows of both correlations around the corners and chunk boundaries, compared bit for bit."""
    edge = min(chunk, size) - 3
    starts = sorted({0, edge, size // 2 - 3, size - 6})
    windows = [(r, c) for r in starts for c in starts]
    pairs = [(ours[r : r + 6, c : c + 6], theirs[r : r + 6, c : c + 6]) for r, c in windows]
    computed = client.gather(client.compute([a for pair in pairs for a in pair]))
    equal = all(np.array_equal(computed[2 * i], computed[2 * i + 1]) for i in range(len(pairs)))
    return {"windows": [list(w) for w in windows], "window_shape": [6, 6], "bit_identical": bool(equal)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=65536, help="image side in pixels (default 65536: 16 GiB)")
    parser.add_argument("--chunk", type=int, default=4096, help="block side in pixels (default 4096)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--memory-limit", default="4GiB", help="per worker (default 4GiB)")
    parser.add_argument("--numpy-size", type=int, default=8192, help="in-memory image side for the NumPy target")
    parser.add_argument("--numpy-repeats", type=int, default=3)
    parser.add_argument("--skip-correlation-only", action="store_true", help="skip the correlation-only runs")
    parser.add_argument("--out", default=str(RESULTS / "gigapixel"), help="output path without extension")
    args = parser.parse_args(argv)

    from importlib import metadata

    import dask
    import distributed

    import convlab as cl

    image_bytes = args.size * args.size * 4
    load_start = os.getloadavg()[0]
    print(f"NumPy backend, one core, {args.numpy_size}^2 in memory ...", flush=True)
    numpy_result = _numpy_baseline(args.numpy_size, args.numpy_repeats)
    print(json.dumps(numpy_result, indent=1), flush=True)

    with _cluster(args) as client:
        limit = next(iter(client.scheduler_info()["workers"].values()))["memory_limit"]
    facts = f"image {args.size}^2 float32 = {image_bytes / 2**30:.2f} GiB in {args.chunk}^2 blocks"
    print(f"cluster: {args.workers} workers x 1 thread, memory limit {limit / 2**30:.2f} GiB each; {facts}", flush=True)
    if image_bytes <= limit:
        print("WARNING: the image fits in one worker's memory limit: a smoke run, not the benchmark", flush=True)
    pixels = args.size * args.size
    runs = {}
    image = _image(args.size, args.chunk)
    runs["generate"] = _run_pipeline(args, "generate + sum", image.sum(dtype="float64"), pixels)
    ours_pooled, ours = _convlab_pipeline(image, pool=True)
    theirs_pooled, theirs = _dask_image_pipeline(image, pool=True)
    assert ours_pooled.shape == theirs_pooled.shape, (ours_pooled.shape, theirs_pooled.shape)
    pipelines = [
        ("convlab", "convlab: conv2d -> pool2d -> sum", ours_pooled),
        ("dask_image", "dask-image: correlate -> coarsen max -> sum", theirs_pooled),
    ]
    if not args.skip_correlation_only:
        pipelines += [
            ("convlab_correlation", "convlab: conv2d -> sum", ours),
            ("dask_image_correlation", "dask-image: correlate -> sum", theirs),
        ]
    for key, label, result in pipelines:
        runs[key] = _run_pipeline(args, label, result.sum(dtype="float64"), pixels)
    with _cluster(args) as client:
        samples = _samples(client, args.size, args.chunk, ours, theirs)

    numpy_run = numpy_result["conv_pool_sum"]
    ours, theirs_run, generate = runs["convlab"], runs["dask_image"], runs["generate"]
    # per core: the cluster's pixels per second per worker (wall clock), and pixels per CPU-second of the workers
    # (what each core delivered whatever else ran on the machine), each against the NumPy backend on one core
    net_cpu = ours["worker_cpu_seconds"] - generate["worker_cpu_seconds"]
    summary = {
        "equal_reductions": ours["value"] == theirs_run["value"],
        "equal_correlation_sums": (
            None
            if args.skip_correlation_only
            else runs["convlab_correlation"]["value"] == runs["dask_image_correlation"]["value"]
        ),  # fmt: skip
        "samples_bit_identical": samples["bit_identical"],
        "speedup_vs_dask_image_pipeline": theirs_run["seconds"] / ours["seconds"],
        "cpu_ratio_dask_image_to_convlab_pipeline": theirs_run["worker_cpu_seconds"] / ours["worker_cpu_seconds"],
        "speedup_vs_dask_image_correlation": (
            None
            if args.skip_correlation_only
            else runs["dask_image_correlation"]["seconds"] / runs["convlab_correlation"]["seconds"]
        ),  # fmt: skip
        "cpu_ratio_dask_image_to_convlab_correlation": (
            None
            if args.skip_correlation_only
            else runs["dask_image_correlation"]["worker_cpu_seconds"]
            / runs["convlab_correlation"]["worker_cpu_seconds"]
        ),  # fmt: skip
        "per_core_vs_numpy_wall": ours["pixels_per_second_per_core"] / numpy_run["pixels_per_second"],
        "per_cpu_second_vs_numpy": ours["pixels_per_worker_cpu_second"] / numpy_run["pixels_per_cpu_second"],
        "per_cpu_second_vs_numpy_net_of_generation": (pixels / net_cpu) / numpy_run["pixels_per_cpu_second"],
    }
    summary["target_per_core_at_least_half_numpy"] = summary["per_cpu_second_vs_numpy"] >= 0.5
    summary["target_faster_than_dask_image"] = ours["seconds"] < theirs_run["seconds"]
    record = {
        "what": "gigapixel: lazily generated float32 image -> 3x3 correlation (same) -> 2x2 max pool -> sum",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "cpu": _cpu_model(),
        "python": platform.python_version(),
        "versions": {
            "dask": dask.__version__,
            "distributed": distributed.__version__,
            "dask_image": metadata.version("dask-image"),
            "numpy": np.__version__,
            "convlab": cl.__version__,
        },  # fmt: skip
        "image": {"size": args.size, "chunk": args.chunk, "bytes": image_bytes, "dtype": "float32"},
        "cluster": {
            "workers": args.workers,
            "threads_per_worker": 1,
            "memory_limit_bytes": limit,
            "image_larger_than_worker_memory_limit": image_bytes > limit,
            "image_larger_than_all_workers_memory": image_bytes > limit * args.workers,
        },  # fmt: skip
        "numpy_backend_in_memory_one_core": numpy_result,
        "load_average": [round(load_start, 1), round(os.getloadavg()[0], 1)],
        "runs": runs,
        "samples": samples,
        "summary": summary,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
    out.with_suffix(".md").write_text(_markdown(record))
    print(json.dumps(summary, indent=1))
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.md')}")
    return 0


def _markdown(r: dict) -> str:
    gib = 2**30
    image, cluster, runs, s = r["image"], r["cluster"], r["runs"], r["summary"]
    numpy = r["numpy_backend_in_memory_one_core"]
    lines = [
        "## Gigapixel benchmark (dask backend)",
        "",
        f"Machine: {r['cpu']}; Python {r['python']}; " + ", ".join(f"{k} {v}" for k, v in r["versions"].items()) + ".",
        "",
        f"Run: `{r['command']}`: a lazily generated {image['size']}x{image['size']} float32 image "
        f"({image['bytes'] / gib:.1f} GiB, integer values 0-15, {image['chunk']}^2 blocks) on a LocalCluster of "
        f"{cluster['workers']} worker processes x 1 thread, each limited to "
        f"{cluster['memory_limit_bytes'] / gib:.1f} GiB; "
        '3x3 correlation with zero padding ("same"), 2x2 max pooling with stride 2, sum in float64. '
        "Each pipeline runs on a new cluster (fresh workers: the peak RSS is that pipeline's). "
        f"Load average of the machine (shared with other jobs) at start / end: {r['load_average']}.",
        "",
        "| pipeline | seconds | Mpx/s | Mpx/s per core | peak RSS per worker (GiB) | tasks |",
        "|---|---:|---:|---:|---|---:|",
    ]
    labels = {
        "generate": "generate + sum (data cost)",
        "convlab": "convlab conv2d -> pool2d -> sum",
        "dask_image": "dask-image correlate -> coarsen max -> sum",
        "convlab_correlation": "convlab conv2d -> sum",
        "dask_image_correlation": "dask-image correlate -> sum",
    }
    for key, label in labels.items():
        if key not in runs:
            continue
        run = runs[key]
        peaks = ", ".join(f"{p / gib:.2f}" for p in run["peak_rss_bytes_per_worker"])
        lines.append(
            f"| {label} | {run['seconds']:.1f} | {run['pixels_per_second'] / 1e6:.0f} | "
            f"{run['pixels_per_second_per_core'] / 1e6:.0f} | {peaks} | {run['tasks']} |"
        )
    lines += [
        "",
        f"NumPy backend, one core, {numpy['size']}^2 in memory: conv2d -> pool2d -> sum "
        f"{numpy['conv_pool_sum']['seconds']:.2f} s wall, {numpy['conv_pool_sum']['cpu_seconds']:.2f} CPU-s = "
        f"{numpy['conv_pool_sum']['pixels_per_cpu_second'] / 1e6:.0f} Mpx per CPU-second; conv2d -> sum "
        f"{numpy['conv_sum']['pixels_per_cpu_second'] / 1e6:.0f}; generating the image "
        f"{numpy['generate_sum']['pixels_per_cpu_second'] / 1e6:.0f}.",
        "",
        "Workers' CPU-seconds per pipeline (user + system, from getrusage in each worker; the rest of a worker's "
        "CPU beside its task thread is its event loop: transfers, spilling, heartbeats): "
        + "; ".join(
            f"{labels[k]} {runs[k]['worker_cpu_seconds']:.1f} s "
            f"({runs[k]['pixels_per_worker_cpu_second'] / 1e6:.0f} Mpx per CPU-s"
            + (
                ""
                if runs[k].get("worker_task_thread_cpu_seconds") is None
                else f"; {runs[k]['worker_task_thread_cpu_seconds']:.1f} s of it in the threads running tasks"
            )
            + ")"
            for k in labels
            if k in runs
        )
        + ".",  # fmt: skip
        "",
        f"- per core vs the NumPy backend in memory: {s['per_cpu_second_vs_numpy']:.2f} per CPU-second "
        f"({s['per_cpu_second_vs_numpy_net_of_generation']:.2f} net of generating the image; wall clock per worker "
        f"{s['per_core_vs_numpy_wall']:.2f}); target >= 0.5: "
        f"{'met' if s['target_per_core_at_least_half_numpy'] else 'NOT met'}",
        f"- faster than dask-image, whole pipeline: {s['speedup_vs_dask_image_pipeline']:.2f}x wall clock, "
        f"{s['cpu_ratio_dask_image_to_convlab_pipeline']:.2f}x less CPU; target > 1: "
        f"{'met' if s['target_faster_than_dask_image'] else 'NOT met'}",
    ]
    if s["speedup_vs_dask_image_correlation"] is not None:
        lines.append(
            f"- faster than dask-image, correlation alone: {s['speedup_vs_dask_image_correlation']:.2f}x wall clock, "
            f"{s['cpu_ratio_dask_image_to_convlab_correlation']:.2f}x less CPU"
        )
    lines += [
        f"- equal results: pooled sums equal {s['equal_reductions']}, correlation sums equal "
        f"{s['equal_correlation_sums']}, {len(r['samples']['windows'])} sample windows (corners, chunk boundaries) "
        f"bit-identical {s['samples_bit_identical']}",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":  # LocalCluster's worker processes import the main module: run only here
    sys.exit(main())
