"""The shared benchmark harness: timing, pauses, progress, targets, machine facts and JSON.

Only the standard library is imported at module level, so that ``run.py --probe first-call`` can
time the imports of NumPy, convlab and a framework from a clean start.

Timing rules (DESIGN.md section 6, and the issue that asked for these numbers):

* every callable is called (and synchronised) a few times before any timing: warm-up calls, JIT
  compilation and lazy initialisation never land in a measurement;
* one *repeat* calls a function ``number`` times back to back and synchronises once at the end
  (``number`` is calibrated so that a repeat lasts ``min_time``); the figure is the median over
  repeats of the time per call;
* the functions being compared run interleaved (repeat 1 of each, then repeat 2 of each in reverse
  order, ...), so background load on this shared two-core machine hits all of them alike and none
  always runs first;
* after anything that ran NumPy's multi-threaded BLAS the harness sleeps ``PAUSE`` seconds before
  timing something else: OpenBLAS threads keep spinning on a core for about 0.1 s after a call and
  would slow down the next measurement;
* the garbage collector is off inside a repeat (as in ``timeit``).
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results"

#: seconds to sleep after NumPy's BLAS ran (its worker threads spin for about 0.1 s after a call)
PAUSE = 0.15

#: targets: convlab/native time ratio from this image side up, and microseconds added per call at 8x8
RATIO_TARGET = 1.05
RATIO_FROM_SIZE = 128
OVERHEAD_TARGET_US = {"torch": 3.0, "jax": 5.0, "tensorflow": 10.0, "mxnet": 10.0}
NUMPY_BOOK_SPEEDUP_TARGET = 1000.0  # convlab conv2d vs the book's loop, 64x64, 3x3
NUMPY_GFLOPS_TARGET = 100.0  # the multi-channel case on NumPy
NUMPY_MEMORY_TARGET = 3.0  # peak of one 2048x2048 conv2d, as a multiple of the output's size
#: this machine's nominal float32 peak: 2 cores x 2 AVX-512 FMA units x 16 lanes x 2 flops x ~3.7 GHz
NOMINAL_PEAK_GFLOPS = 470.0


class Settings:
    """How hard to measure: ``--quick`` trades precision for a run of a few seconds per backend."""

    def __init__(self, quick: bool) -> None:
        self.quick = quick
        self.repeats = 5 if quick else 11  # repeats per measurement (fewer when one call is slow)
        self.min_time = 0.004 if quick else 0.025  # seconds one repeat should last
        self.budget = 0.25 if quick else 3.0  # seconds one function may take over all its repeats
        self.warmup = 2


def thread_env(threads: int) -> Dict[str, str]:
    """Environment variables that limit NumPy's BLAS, torch, MXNet, TensorFlow and XLA to ``threads``."""
    n = str(threads)
    env = {key: n for key in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
    env.update(TF_NUM_INTRAOP_THREADS=n, TF_NUM_INTEROP_THREADS=n)
    if threads == 1:
        env["XLA_FLAGS"] = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
    return env


# -- progress -------------------------------------------------------------------------------------

_START = time.perf_counter()


def progress(message: str) -> None:
    """One line on stderr with the time since the run started (long runs show what they are doing)."""
    print(f"[{time.perf_counter() - _START:7.1f}s] {message}", file=sys.stderr, flush=True)


def fmt_time(seconds: Optional[float]) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "-"
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)):
        if seconds >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds * 1e9:.3g} ns"


# -- timing ---------------------------------------------------------------------------------------


class Timed:
    """A callable to time: ``fn()`` returns outputs that ``sync(list_of_outputs)`` waits for."""

    def __init__(self, fn: Callable[[], Any], sync: Callable[[list], Any], blas: bool = False) -> None:
        self.fn, self.sync, self.blas = fn, sync, blas


_last_ran_blas = False


def _settle(timed: Timed) -> None:
    global _last_ran_blas
    if _last_ran_blas:
        time.sleep(PAUSE)
    _last_ran_blas = timed.blas


#: the clock: wall time (``perf_counter``), or with ``--clock cpu`` the CPU time of every thread of this
#: process (``process_time``), which other processes' load cannot inflate; meaningful with ``--threads 1``
#: only (idle threads spinning in a thread pool would count as work)
CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
clock = CLOCKS["wall"]


def script_parser(doc: str, report_help: str, threads: int = 0) -> argparse.ArgumentParser:
    """The command line of a script timing one backend per process: ``--backend``, ``--report``, ``--threads N``
    (0: each framework's default), ``--clock`` (see ``limit_threads``) and ``--quick``."""
    parser = argparse.ArgumentParser(description=doc.split("\n")[0])
    parser.add_argument("--backend")
    parser.add_argument("--report", action="store_true", help=report_help)
    parser.add_argument("--threads", type=int, default=threads, help="limit every framework to N threads (0: default)")
    parser.add_argument("--clock", choices=sorted(CLOCKS), default=None, help="default: cpu with --threads 1")
    parser.add_argument("--quick", action="store_true")
    return parser


def limit_threads(backend: str, threads: int, clock_name: Optional[str] = None) -> str:
    """Before the framework is imported: limit it and BLAS to ``threads`` (0: no limit; torch's own setting too),
    and time with ``clock_name`` (default: the CPU clock with one thread, else wall). Returns the clock's name."""
    global clock
    if threads:
        os.environ.update(thread_env(threads))
        if backend == "torch":
            import torch

            torch.set_num_threads(threads)
    clock_name = clock_name or ("cpu" if threads == 1 else "wall")
    clock = CLOCKS[clock_name]
    return clock_name


def _run(timed: Timed, number: int) -> float:
    _settle(timed)
    fn, outs, now = timed.fn, [], clock
    append = outs.append
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        start = now()
        for _ in range(number):
            append(fn())
        timed.sync(outs)
        elapsed = now() - start
    finally:
        if gc_was_enabled:
            gc.enable()
    return elapsed / number


def measure(
    functions: Dict[str, Timed], settings: Settings, repeats: Optional[int] = None, samples: bool = False
) -> Dict[str, dict]:
    """Median seconds per call of each function, measured interleaved; also the spread and counts, and with
    ``samples`` each repeat's seconds per call in order (repeat i of every function ran in the same round)."""
    numbers, counts = {}, {}
    wanted = repeats or settings.repeats
    for key, timed in functions.items():
        once = [_run(timed, 1) for _ in range(settings.warmup)][-1]  # the first may compile: not timed
        numbers[key] = max(1, min(100_000, math.ceil(settings.min_time / max(once, 1e-9))))
        affordable = int(settings.budget / max(once * numbers[key], 1e-9))
        counts[key] = max(min(3, wanted), min(wanted, affordable))
    rounds: Dict[str, List[float]] = {key: [] for key in functions}
    keys = list(functions)
    for index in range(max(counts.values())):
        # Every other round in reverse order: whichever function runs first in a round would
        # otherwise always meet the same cache and clock state (a steady few percent on identical code).
        for key in keys if index % 2 == 0 else keys[::-1]:
            if index < counts[key]:
                rounds[key].append(_run(functions[key], numbers[key]))
    return {
        key: {
            "median_s": statistics.median(values),
            "min_s": min(values),
            "max_s": max(values),
            "repeats": len(values),
            "number": numbers[key],
            **({"samples_s": values} if samples else {}),
        }
        for key, values in rounds.items()
    }


def time_once(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


# -- targets --------------------------------------------------------------------------------------


def status(ok: Optional[bool]) -> str:
    return "" if ok is None else ("PASS" if ok else "FAIL")


# -- machine facts --------------------------------------------------------------------------------


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _cpu_flags() -> List[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = line.split(":", 1)[1].split()
                return sorted(f for f in flags if f in ("avx", "avx2", "fma", "avx512f", "avx512_bf16", "amx_tile"))
    except OSError:
        pass
    return []


def _git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10
        )
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def machine(versions: Dict[str, str]) -> dict:
    env_keys = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", *thread_env(1), "JAX_ENABLE_X64")
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "cpu_flags": _cpu_flags(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": versions,
        "env": {key: os.environ[key] for key in env_keys if key in os.environ},
        "loadavg_start": list(os.getloadavg()),
        "git_commit": _git_commit(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }


# -- JSON -----------------------------------------------------------------------------------------


def write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=False) + "\n")
    tmp.replace(path)


def read_results(directory: Path = RESULTS) -> List[dict]:
    """The ``<backend>.json`` files run.py wrote (other JSON files beside them are skipped)."""
    found = (json.loads(path.read_text()) for path in sorted(directory.glob("*.json")))
    return [data for data in found if isinstance(data, dict) and "backend" in data and "rows" in data]
