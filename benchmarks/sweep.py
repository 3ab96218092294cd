"""The sweep behind the generated rule tables: ``python benchmarks/algorithms.py --backend B --sweep``.

A seeded random sample of convolution and pooling configurations (the same sample on every backend:
it depends on the seed only), each timed with every formulation on one thread's CPU time:

- convolution: kernels 1..11 per side (square half the time), strides 1..3 (square 80% of the time),
  dilation 1 or 2, channels 1..64 in and out and batch 1..8 (log-uniform), images 8..2048 per side
  (log-uniform, square 70% of the time), "same" or "valid" padding, both layouts, float32 and float64;
- pooling: windows 1..11, strides 1..3, channels 1..64, batch 1..8, the same images, max and average
  (count_include_pad False for a quarter of the padded average poolings), both layouts and dtypes;
- a few fixed anchor shapes (the cases of the earlier hand-made tables: one 2048^2 channel, 3x3, ...).

A sampled configuration is kept only if a pessimistic estimate of its slowest formulation on the slowest
backend stays under ``BUDGET_SECONDS`` (:func:`estimate`: the native op as if padded to 16-channel blocks at
40 G multiply-adds/s, an eager shift at 0.25 G/s plus 30 us per shifted view, data under 48 MB), so that
one call takes at most about half a second; a formulation whose call still takes longer than ``CAP_SECONDS``
is timed once instead of in repeats (``"single"`` in the row).

Timing: the first call of each formulation (a new geometry: under JAX it includes compiling what the
formulation runs), a second call to calibrate, then ``ROUNDS`` interleaved rounds
(order alternating) of ``number`` calls lasting about ``TARGET_SECONDS``; the figure is the median time per
call. ``native`` is timed twice (``native`` and ``native_again``): their ratio is the noise floor of a ratio.
With ``--time-auto`` "auto" is timed as well (the held-out check of generated rules).
"""

from __future__ import annotations

import gc
import json
import math
import os
import platform
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

BUDGET_SECONDS = 0.5
CAP_SECONDS = 0.5
TARGET_SECONDS = 0.01
ROUNDS = 7
MAX_BYTES = 48 * 2**20
LAYOUTS = ("channels_first", "channels_last")
DTYPES = ("float32", "float64")


# -- the sample -----------------------------------------------------------------------------------


def _log_int(rng: random.Random, low: int, high: int) -> int:
    return max(low, min(high, int(round(2 ** rng.uniform(math.log2(low), math.log2(high))))))


def _out(size: int, pads: int, extent: int, stride: int) -> int:
    return (size + pads - extent) // stride + 1


def _same_total(size: int, extent: int, stride: int) -> int:
    return max((-(-size // stride) - 1) * stride + extent - size, 0)


def describe(config: dict) -> dict:
    """Output size, multiply-adds and bytes of a configuration (padding resolved as convlab does)."""
    x = config["x_shape"]
    channels_last = config["data_format"] == "channels_last"
    n, c, h, w = (x[0], x[3], x[1], x[2]) if channels_last else x
    window = config["window"]
    stride, dilation = config["stride"], config.get("dilation", [1, 1])
    extent = [(k - 1) * d + 1 for k, d in zip(window, dilation)]
    if config["padding"] == "same":
        pads = [_same_total(s, e, st) for s, e, st in zip((h, w), extent, stride)]
    else:
        pads = [0, 0]
    out = [_out(s, p, e, st) for s, p, e, st in zip((h, w), pads, extent, stride)]
    itemsize = 4 if config["dtype"] == "float32" else 8
    taps = window[0] * window[1]
    if config["op"] == "conv":
        co = config["out_channels"]
        macs = n * out[0] * out[1] * c * co * taps
        data = (n * c * (h + pads[0]) * (w + pads[1]) * 2 + n * co * out[0] * out[1] * 2) * itemsize
        return {
            "out_hw": out,
            "macs": macs,
            "bytes": data,
            "unrolled": taps * c * co,
            "views": taps * c,
            "valid": min(out) >= 1,
        }
    elements = n * c * out[0] * out[1]
    data = (n * c * (h + pads[0]) * (w + pads[1]) * 2 + elements * 2) * itemsize
    return {"out_hw": out, "work": elements * taps, "bytes": data, "unrolled": taps, "valid": min(out) >= 1}


def estimate(config: dict) -> float:
    """Pessimistic seconds of the slowest formulation of ``config`` on the slowest backend (see the docstring)."""
    facts = describe(config)
    if config["op"] == "conv":
        x = config["x_shape"]
        c = x[3] if config["data_format"] == "channels_last" else x[1]
        co = config["out_channels"]
        padded = facts["macs"] / (c * co) * (-(-c // 16) * 16) * (-(-co // 16) * 16)
        native = padded / 40e9
        shift = facts["macs"] / 0.25e9 + facts["unrolled"] * 30e-6
        return max(native, shift)
    return facts["work"] / 0.25e9 + facts["unrolled"] * 30e-6


def _window(rng: random.Random) -> Tuple[list, list]:
    """A window of 1 to 11 a side (square half the time) and its stride, 1 to 3 (square 80% of the time)."""
    kh = rng.randint(1, 11)
    kw = kh if rng.random() < 0.5 else rng.randint(1, 11)
    s = rng.randint(1, 3)
    return [kh, kw], [s, s] if rng.random() < 0.8 else [s, rng.randint(1, 3)]


def _input(rng: random.Random, channels: int, batch: int) -> Tuple[list, str, str]:
    """An input of 8 to 2048 a side (square 70% of the time): its shape in a random layout, the layout, a dtype."""
    h = _log_int(rng, 8, 2048)
    w = h if rng.random() < 0.7 else _log_int(rng, 8, 2048)
    layout, dtype = rng.choice(LAYOUTS), rng.choice(DTYPES)
    return [batch, h, w, channels] if layout == "channels_last" else [batch, channels, h, w], layout, dtype


def _conv_config(rng: random.Random) -> dict:
    window, stride = _window(rng)
    d = 1 if rng.random() < 0.7 else 2
    dilation = [d, d] if rng.random() < 0.9 else [d, 3 - d]
    cin, cout, batch = _log_int(rng, 1, 64), _log_int(rng, 1, 64), _log_int(rng, 1, 8)
    x_shape, layout, dtype = _input(rng, cin, batch)
    padding = rng.choice(("same", "valid"))
    return {
        "op": "conv",
        "x_shape": x_shape,
        "out_channels": cout,
        "window": window,
        "stride": stride,
        "dilation": dilation,
        "padding": padding,
        "data_format": layout,
        "dtype": dtype,
    }


def _pool_config(rng: random.Random) -> dict:
    window, stride = _window(rng)
    c, batch = _log_int(rng, 1, 64), _log_int(rng, 1, 8)
    x_shape, layout, dtype = _input(rng, c, batch)
    mode = rng.choice(("max", "avg"))
    padding = rng.choice(("same", "valid"))
    include = not (mode == "avg" and padding == "same" and rng.random() < 0.25)
    return {
        "op": "pool",
        "mode": mode,
        "x_shape": x_shape,
        "window": window,
        "stride": stride,
        "padding": padding,
        "count_include_pad": include,
        "data_format": layout,
        "dtype": dtype,
    }


def anchors() -> List[dict]:
    """The shapes of the earlier hand-made tables (benchmarks/ALGORITHMS.md), float32, NCHW, stride 1."""
    out = []

    def conv(x, co, window, padding="valid"):
        out.append(
            {
                "op": "conv",
                "x_shape": list(x),
                "out_channels": co,
                "window": list(window),
                "stride": [1, 1],
                "dilation": [1, 1],
                "padding": padding,
                "data_format": "channels_first",
                "dtype": "float32",
                "anchor": True,
            }
        )

    def pool(mode, x, window):
        out.append(
            {
                "op": "pool",
                "mode": mode,
                "x_shape": list(x),
                "window": list(window),
                "stride": [1, 1],
                "padding": "valid",
                "count_include_pad": True,
                "data_format": "channels_first",
                "dtype": "float32",
                "anchor": True,
            }
        )

    for size in (128, 512, 2048):
        conv((1, 1, size, size), 1, (3, 3))
    conv((1, 1, 2048, 2048), 1, (1, 2))
    conv((1, 3, 224, 224), 8, (3, 3), "same")
    conv((8, 16, 56, 56), 16, (3, 3), "same")
    conv((8, 64, 56, 56), 64, (3, 3), "same")
    for mode in ("max", "avg"):
        pool(mode, (1, 1, 2048, 2048), (3, 3))
        pool(mode, (1, 4, 128, 128), (3, 3))
        pool(mode, (8, 64, 56, 56), (3, 3))
    return out


def _within(config: dict) -> bool:
    facts = describe(config)
    return facts["valid"] and facts["bytes"] <= MAX_BYTES and estimate(config) <= BUDGET_SECONDS


def _fit_budget(config: dict, rng: random.Random) -> Optional[dict]:
    """``config`` shrunk until within the budget: a coin decides between halving the image sides and halving
    the largest of batch and channels, so that large images stay as likely as small ones (with fewer
    channels) and so do many channels (on smaller images). None if it cannot fit (kernel larger than image)."""
    channels_last = config["data_format"] == "channels_last"
    axes = {"batch": 0, "channels": 3 if channels_last else 1}
    spatial = (1, 2) if channels_last else (2, 3)
    for _ in range(64):
        if _within(config):
            return config
        if not describe(config)["valid"]:
            return None
        x = config["x_shape"]
        sizes = {"batch": x[axes["batch"]], "channels": x[axes["channels"]]}
        if config["op"] == "conv":
            sizes["out_channels"] = config["out_channels"]
        name = max(sizes, key=sizes.__getitem__)
        if rng.random() < 0.5 and min(x[i] for i in spatial) >= 16 or sizes[name] == 1:
            for i in spatial:
                x[i] = max(8, x[i] // 2)
        elif name == "out_channels":
            config["out_channels"] = max(1, config["out_channels"] // 2)
        else:
            x[axes[name]] = max(1, x[axes[name]] // 2)
    return None


def sample(seed: int, conv_count: int, pool_count: int, with_anchors: bool = True) -> List[dict]:
    """The seeded sample: ``conv_count`` + ``pool_count`` configurations within the budget, then the anchors."""
    rng = random.Random(seed)
    out: List[dict] = []
    for count, make in ((conv_count, _conv_config), (pool_count, _pool_config)):
        kept = 0
        while kept < count:
            config = _fit_budget(make(rng), rng)
            if config is not None:
                out.append(config)
                kept += 1
    if with_anchors:
        out.extend(anchors())
    for index, config in enumerate(out):
        config["id"] = index
    return out


# -- timing ---------------------------------------------------------------------------------------


def interleaved(
    functions: Dict[str, Callable[[], Any]],
    numbers: Dict[str, int],
    sync: Callable[[list], Any],
    clock: Callable[[], float],
    rounds: int,
) -> Dict[str, List[float]]:
    """Seconds per call of each function, one sample per round: ``numbers[name]`` calls a round, the functions
    interleaved and their order alternating, so that a change of the machine's speed lands on all of them."""
    samples: Dict[str, List[float]] = {name: [] for name in functions}
    order = list(functions)
    for round_ in range(rounds):
        for name in order if round_ % 2 == 0 else order[::-1]:
            fn, number = functions[name], numbers[name]
            gc.disable()
            start = clock()
            outs = [fn() for _ in range(number)]
            sync(outs)
            elapsed = clock() - start
            gc.enable()
            del outs
            samples[name].append(elapsed / number)
    return samples


def time_functions(
    functions: Dict[str, Callable[[], Any]],
    sync: Callable[[list], Any],
    clock: Callable[[], float],
    reverse: bool,
    floors: Optional[Dict[str, Tuple[float, float]]] = None,
    compiles: bool = False,
) -> dict:
    """First call, then the median of interleaved rounds, of each function (see the module docstring).

    ``floors``: lower bounds of a formulation's seconds per call and of its first call (its op count times the
    measured cost of one op, and of compiling one under JAX). A formulation that cannot win is not run
    (``"skipped"`` in the result, with its floors): a call floor above 3x native's first call and 50 ms, or
    a first-call floor above 3x native's and 0.5 s (the rules never take a first call beyond 1.6x native's).
    """
    order = list(functions)[::-1] if reverse else list(functions)
    first, first_wall, once, errors, skipped = {}, {}, {}, {}, {}
    # native's first call comes first ("auto"'s before it, when timed: the cold case), native_again's last
    # (it reuses what native's first call set up)
    lead = [n for n in ("auto", "native") if n in functions]
    for name in (
        lead + [n for n in order if n not in lead and n != "native_again"] + [n for n in order if n == "native_again"]
    ):
        floor, first_floor = (floors or {}).get(name, (0.0, 0.0))
        if "native" in first and (
            floor > max(3 * first["native"], 0.05) or first_floor > max(3 * first["native"], 0.5)
        ):
            skipped[name] = [floor, first_floor if math.isfinite(first_floor) else "not timed"]
            continue
        gc.collect()
        start, wall = clock(), time.perf_counter()
        try:
            sync([functions[name]()])
        except Exception as error:  # a formulation that cannot run this configuration
            errors[name] = f"{type(error).__name__}: {error}"[:300]
            continue
        first[name], first_wall[name] = clock() - start, time.perf_counter() - wall
    order = [name for name in order if name not in errors and name not in skipped]
    for name in order:
        if first[name] > 2 * CAP_SECONDS and not compiles:
            once[name] = first[name]  # nothing compiles here: a second slow call would tell nothing new
            continue
        start = clock()
        sync([functions[name]()])
        once[name] = max(clock() - start, 1e-7)
    single = [name for name in order if once[name] > CAP_SECONDS]
    numbers = {name: max(1, min(2000, int(TARGET_SECONDS / once[name]))) for name in order}
    repeated = [name for name in order if name not in single]
    samples = interleaved({name: functions[name] for name in repeated}, numbers, sync, clock, ROUNDS)
    samples.update({name: [] for name in single})
    seconds = {name: (statistics.median(samples[name]) if name in repeated else once[name]) for name in order}
    spread = {}
    for name in repeated:
        values = sorted(samples[name])
        spread[name] = (values[-2] - values[1]) / seconds[name] if len(values) >= 4 else 0.0
    rounded = {name: [float(f"{v:.4g}") for v in values] for name, values in samples.items() if values}
    return {
        "seconds": seconds,
        "spread": spread,
        "first_call": first,
        "first_call_wall": first_wall,
        "number": numbers,
        "single": single,
        "errors": errors,
        "skipped": skipped,
        "samples": rounded,
    }


# -- one backend ----------------------------------------------------------------------------------


class Runner:
    """A backend's tensors, sync and formulations for the sweep (one process per backend)."""

    def __init__(self, name: str) -> None:
        import numpy as np

        import convlab as cl
        from convlab import algorithms, dispatch

        self.np, self.cl, self.algorithms, self.dispatch = np, cl, algorithms, dispatch
        self.name = name
        self.backend = cl.get_backend(name)
        if name == "torch":
            import torch

            self.tensor = lambda a: torch.from_numpy(a)
            self.sync = lambda outs: None
        elif name == "tensorflow":
            import tensorflow as tf

            self.tensor = lambda a: tf.constant(a)
            self.sync = lambda outs: outs[-1].numpy()
        elif name == "jax":
            import jax

            self.tensor = lambda a: jax.device_put(a)
            self.sync = lambda outs: jax.block_until_ready(outs)
        elif name == "mxnet":
            import mxnet

            self.tensor = lambda a: mxnet.np.array(a, dtype=a.dtype)
            self.sync = lambda outs: mxnet.npx.waitall()
        else:
            self.tensor = lambda a: a
            self.sync = lambda outs: None

    def functions(self, config: dict, names: List[str], rng: Any) -> Dict[str, Callable[[], Any]]:
        cl, np, name = self.cl, self.np, self.name
        dtype = config["dtype"]
        x = self.tensor(rng.standard_normal(config["x_shape"]).astype(dtype))
        out: Dict[str, Callable[[], Any]] = {}
        if config["op"] == "conv":
            channels_last = config["data_format"] == "channels_last"
            cin = config["x_shape"][3 if channels_last else 1]
            kh, kw = config["window"]
            co = config["out_channels"]
            k_shape = [kh, kw, cin, co] if channels_last else [co, cin, kh, kw]
            k = self.tensor(rng.standard_normal(k_shape).astype(dtype))
            options = dict(
                stride=tuple(config["stride"]),
                padding=config["padding"],
                dilation=tuple(config["dilation"]),
                data_format=config["data_format"],
                backend=name,
            )
            for label in names:
                algorithm = "native" if label == "native_again" else label
                out[label] = _bind(cl.conv2d, (x, k), dict(options, algorithm=algorithm))
        else:
            options = dict(
                stride=tuple(config["stride"]),
                padding=config["padding"],
                count_include_pad=config["count_include_pad"],
                data_format=config["data_format"],
                backend=name,
            )
            for label in names:
                algorithm = "native" if label == "native_again" else label
                out[label] = _bind(
                    cl.pool2d, (x, tuple(config["window"]), config["mode"]), dict(options, algorithm=algorithm)
                )
        del np
        return out

    def calibrate(self) -> Dict[str, float]:
        """Seconds per op of the unrolled formulations, per call and in the first call (which compiles under
        JAX): an 11x11 kernel on one 8x8 channel, 121 ops, halved for the first call's floor."""
        np, cl, name = self.np, self.cl, self.name
        x = self.tensor(np.ones((1, 1, 8, 8), np.float32))
        k = self.tensor(np.ones((1, 1, 11, 11), np.float32))
        out = {}
        for label, fn in (
            ("conv shift", lambda: cl.conv2d(x, k, padding="same", algorithm="shift", backend=name)),
            ("conv gemm", lambda: cl.conv2d(x, k, padding="same", algorithm="gemm", backend=name)),
            ("pool shift", lambda: cl.pool2d(x, 11, "max", 1, "same", algorithm="shift", backend=name)),
        ):
            start = time.process_time()
            self.sync([fn()])
            out[label + " first"] = 0.5 * (time.process_time() - start) / 121
            times = []
            for _ in range(5):
                start = time.process_time()
                self.sync([fn()])
                times.append(time.process_time() - start)
            out[label] = 0.8 * statistics.median(times) / 121  # 0.8: a floor, not an estimate
        return out

    def floors(self, config: dict, per_op: Dict[str, float]) -> Dict[str, Tuple[float, float]]:
        facts = describe(config)
        taps = config["window"][0] * config["window"][1]
        if config["op"] == "conv":  # the generic shift takes one view per input channel and tap
            views = facts["views"]
            gemm_first = taps * per_op["conv gemm first"]
            if self.name == "jax" and taps > 9:
                # eager, the generic gemm compiles a slice, product and sum per tap: in the first rows of
                # sweep-jax.json (0-9, timed before this) its first call took 2.7x to 247x native's, never the
                # 1.6x a rule may take; beyond 9 taps it is not timed (the rules cannot choose it there)
                gemm_first = math.inf
            return {
                "shift": (views * per_op["conv shift"], views * per_op["conv shift first"]),
                "gemm": (taps * per_op["conv gemm"], gemm_first),
            }
        return {"shift": (taps * per_op["pool shift"], taps * per_op["pool shift first"])}

    def shape(self, config: dict) -> Any:
        """The ConvShape / PoolShape "auto" sees for this configuration."""
        from convlab.geometry import conv_geometry, pool_geometry

        algorithms = self.algorithms
        x = tuple(config["x_shape"])
        channels_last = config["data_format"] == "channels_last"
        if config["op"] == "conv":
            cin = x[3 if channels_last else 1]
            kh, kw = config["window"]
            co = config["out_channels"]
            k = (kh, kw, cin, co) if channels_last else (co, cin, kh, kw)
            g = conv_geometry(
                x,
                k,
                stride=tuple(config["stride"]),
                padding=config["padding"],
                dilation=tuple(config["dilation"]),
                data_format=config["data_format"],
            )
            return algorithms.conv_shape(g, config["dtype"]), g
        g = pool_geometry(
            x,
            tuple(config["window"]),
            config["mode"],
            stride=tuple(config["stride"]),
            padding=config["padding"],
            count_include_pad=config["count_include_pad"],
            data_format=config["data_format"],
        )
        return algorithms.pool_shape(g, config["dtype"]), g

    def choice(self, config: dict) -> str:
        shape, _ = self.shape(config)
        rules = self.backend.conv_rules if config["op"] == "conv" else self.backend.pool_rules
        return self.algorithms.choose(self.backend, rules, shape, None)


def _bind(fn: Callable[..., Any], args: tuple, kwargs: dict) -> Callable[[], Any]:
    return lambda: fn(*args, **kwargs)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def run(args: Any) -> None:
    """``--sweep``: time the sample on ``args.backend``, write ``results/sweep-<backend>[-<tag>].json``."""
    if args.watchdog:
        watch(args)
        return
    import numpy as np

    runner = Runner(args.backend)
    if args.rules_file:  # the held-out check of generated rules before an adapter loads them itself
        from convlab import rules

        cls = type(runner.backend)
        cls.conv_rules = rules.load(args.backend, "conv", args.rules_file, strict=True)
        cls.pool_rules = rules.load(args.backend, "pool", args.rules_file, strict=True)
    configs = sample(args.seed, args.conv_count, args.pool_count, with_anchors=not args.no_anchors)
    if args.limit:
        configs = configs[: args.limit]
    if args.only_op:
        configs = [c for c in configs if c["op"] == args.only_op]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tag = f"-{args.tag}" if args.tag else ""
    path = out / f"sweep-{args.backend}{tag}.json"
    rows: List[dict] = []
    if args.resume and path.exists():
        rows = json.loads(path.read_text())["rows"]
    done = {row["id"] for row in rows}
    clock = time.process_time
    meta = {
        "backend": args.backend,
        "version": runner.backend.version(),
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "threads": 1,
        "clock": "process_time (CPU time of every thread of the process)",
        "seed": args.seed,
        "conv_count": args.conv_count,
        "pool_count": args.pool_count,
        "budget_seconds": BUDGET_SECONDS,
        "cap_seconds": CAP_SECONDS,
        "rounds": ROUNDS,
        "target_seconds": TARGET_SECONDS,
        "time_auto": bool(args.time_auto or args.only_auto),
        "only_auto": bool(args.only_auto),
        "rules_file": args.rules_file or None,
        "git_commit": _git_commit(),
        "uncommitted": _uncommitted(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    # one small call of every formulation first: process-wide first-use costs land nowhere in the sweep
    warm = [dict(c) for c in anchors()[:1]] + [dict(c) for c in anchors() if c["op"] == "pool"][:1]
    for config in warm:
        config["x_shape"] = [1, 2, 16, 16]
        names = _names(config["op"], args.time_auto)
        functions = runner.functions(config, names, np.random.default_rng(0))
        for fn in functions.values():
            runner.sync([fn()])
    per_op = runner.calibrate()
    meta["seconds_per_unrolled_op"] = per_op
    print(f"seconds per unrolled op: {per_op}", flush=True)
    started = time.perf_counter()
    hung = _hung(path)
    for index, config in enumerate(configs):
        if config["id"] in done:
            continue
        if config["id"] in hung:  # the watchdog killed the process measuring it: recorded, not timed again
            rows.append(dict(config, seconds={}, errors={"all": hung[config["id"]]}, first_call={}))
            continue
        path.with_suffix(".current").write_text(str(config["id"]))
        names = _names(config["op"], args.time_auto, args.only_auto)
        rng = np.random.default_rng(1000 + config["id"])
        shape, geometry = runner.shape(config)
        load_before = os.getloadavg()[0]
        functions = runner.functions(config, names, rng)
        timing = time_functions(
            functions,
            runner.sync,
            clock,
            reverse=bool(config["id"] % 2),
            compiles=args.backend == "jax",
            floors=runner.floors(config, per_op),
        )
        del functions
        row = dict(config)
        row.update(timing)
        row["shape"] = list(shape)
        row["out_hw"] = list(geometry.out_hw)
        row["chosen"] = runner.choice(config)
        row["loadavg"] = [load_before, os.getloadavg()[0]]
        rows.append(row)
        native = timing["seconds"].get("native")
        cells = " ".join(f"{a}={t * 1e3:.3g}" for a, t in timing["seconds"].items())
        print(
            f"[{index + 1}/{len(configs)} {time.perf_counter() - started:6.0f}s] {_label(config)}: {cells} ms"
            f" auto->{row['chosen']} native={native and native * 1e3:.3g}",
            flush=True,
        )
        if len(rows) % 10 == 0:
            _write(path, meta, rows)
    meta["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    _write(path, meta, rows)
    path.with_suffix(".current").unlink(missing_ok=True)
    print(f"wrote {path}")


def _hung(path: Path) -> Dict[int, str]:
    marker = path.with_suffix(".hung")
    return {int(k): v for k, v in json.loads(marker.read_text()).items()} if marker.exists() else {}


def watch(args: Any) -> None:
    """``--watchdog SECONDS``: run the sweep in a child process and restart it (``--resume``) past any
    configuration that makes no progress for SECONDS (an XLA compilation that does not finish): that
    configuration is recorded with the reason instead of timings."""
    tag = f"-{args.tag}" if args.tag else ""
    path = Path(args.out) / f"sweep-{args.backend}{tag}.json"
    current, marker = path.with_suffix(".current"), path.with_suffix(".hung")
    argv = list(sys.argv)
    i = argv.index("--watchdog")
    argv = argv[:i] + argv[i + 2 :]
    resume = argv + ([] if "--resume" in argv else ["--resume"])
    first = True
    while True:
        child = subprocess.Popen([sys.executable] + (argv if first and not args.resume else resume))
        first = False
        last, seen = time.monotonic(), None
        while child.poll() is None:
            time.sleep(5)
            state = (current.read_text() if current.exists() else None, path.stat().st_mtime if path.exists() else 0)
            if state != seen:
                seen, last = state, time.monotonic()
            elif time.monotonic() - last > args.watchdog:
                child.kill()
                child.wait()
                hung = _hung(path)
                stuck = int(current.read_text())
                hung[stuck] = f"no progress in {args.watchdog:.0f} s (killed by the watchdog; an XLA compilation?)"
                marker.write_text(json.dumps(hung))
                print(f"watchdog: configuration #{stuck} made no progress in {args.watchdog} s", flush=True)
                break
        if child.returncode == 0:
            return


def _names(op: str, time_auto: bool, only_auto: bool = False) -> List[str]:
    from convlab import dispatch

    if only_auto:
        return ["native", "auto", "native_again"]
    methods = dispatch.CONV_METHODS if op == "conv" else dispatch.POOL_METHODS
    names = list(methods) + ["native_again"]
    return names + ["auto"] if time_auto else names


def _label(config: dict) -> str:
    x = "x".join(map(str, config["x_shape"]))
    window = "x".join(map(str, config["window"]))
    layout = "NHWC" if config["data_format"] == "channels_last" else "NCHW"
    what = f"conv ->{config['out_channels']}" if config["op"] == "conv" else config["mode"]
    extra = f" d{config['dilation'][0]}" if config["op"] == "conv" else ""
    return (
        f"#{config['id']} {what} {x} {layout} k{window} s{config['stride'][0]}{extra} {config['padding']} "
        f"{config['dtype'][-2:]}"
    )


def _write(path: Path, meta: dict, rows: List[dict]) -> None:
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps({"meta": meta, "rows": rows}, indent=0) + "\n")
    os.replace(temporary, path)


def _uncommitted() -> List[str]:
    """Files of the core and the adapters that differ from the commit (the sweep times the working tree)."""
    try:
        root = Path(__file__).resolve().parent.parent
        out = subprocess.run(
            ["git", "-C", str(root), "status", "--short", "--", "convlab", "backends"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout
        return [line[3:] for line in out.splitlines() if line[:2].strip() == "M"]
    except (OSError, subprocess.SubprocessError):
        return []


def _git_commit() -> str:
    try:
        root = Path(__file__).resolve().parent.parent
        return subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""
