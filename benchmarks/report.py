"""Combine benchmarks/results/<backend>.json into one Markdown report and a log-log plot.

    python benchmarks/report.py [--results DIR]

Writes DIR/README.md (tables: targets with PASS/FAIL, convlab/native ratios for every backend,
GFLOP/s, per-call overhead, the book's loop, memory, first call, the machine) and DIR/time_vs_size.png.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402
from harness import fmt_time  # noqa: E402

ORDER = ("numpy", "torch", "tensorflow", "jax", "mxnet")
OP_NAMES = {"conv2d": "conv2d", "max": "pool2d max", "avg": "pool2d avg"}


def _order(results):
    return sorted(results, key=lambda r: ORDER.index(r["backend"]) if r["backend"] in ORDER else len(ORDER))


def _rows(result, kind):
    return [row for row in result["rows"] if row["kind"] == kind]


def _table(header, rows) -> list:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return lines + [""]


def _column(result, row) -> str:
    """One column of the combined table: a backend, and a variant where a backend has several."""
    name = result["backend"]
    variant = row.get("variant", "")
    if name == "numpy":  # two references for conv2d, one otherwise: two columns, footnoted under the table
        return "numpy vs ndimage.correlate ²" if row["reference"] == "scipy.ndimage.correlate" else "numpy vs ref ¹"
    return f"{name} {variant}".strip()


def _cell(row) -> str:
    text = f"{row['ratio']:.2f}"
    return f"{text} {row['status']}" if row.get("status") else text


def combined_ratios(results) -> list:
    """convlab/native per case (rows) and backend (columns): the one table the README quotes."""
    columns, cells, cases, targeted = [], {}, [], {}
    for result in results:
        for row in _rows(result, "single") + _rows(result, "multi"):
            column = _column(result, row)
            case = (row["kind"], OP_NAMES[row["op"]], row["window"], row["size"])
            if column not in columns:
                columns.append(column)
            if case not in cases:
                cases.append(case)
            cells[case, column] = _cell(row)
            if row.get("status"):
                targeted.setdefault(column, []).append(row["ratio"])
    body = []
    for case in sorted(
        cases, key=lambda c: (c[0] == "multi", list(OP_NAMES.values()).index(c[1]), c[2] != "3x3", str(c[3]).zfill(6))
    ):
        kind, op, window, size = case
        label = f"{size}²" if kind == "single" else f"{size}"
        body.append([op, window, label] + [cells.get((case, column), "") for column in columns])
    medians = [f"**{statistics.median(targeted[c]):.2f}**" if c in targeted else "" for c in columns]
    body.append(["**median**", "", f"**{harness.RATIO_FROM_SIZE}² up**", *medians])
    notes = []
    if any(column.startswith("numpy") for column in columns):
        notes = [
            "¹ conv2d: `scipy.signal.correlate2d`; pooling: `scipy.ndimage.maximum_filter` / `uniform_filter`; "
            "multi-channel conv2d: NumPy `sliding_window_view` + `tensordot`. "
            "² `scipy.ndimage.correlate` (a 'same'-size output).",
            "",
        ]
    return _table(["op", "window", "image", *columns], body) + notes


def noise_floor() -> list:
    """How far apart one program measures against itself: "auto" and the algorithm it picks run the same code.

    Read from the files of ``benchmarks/algorithms.py`` (``results/algorithms-*-1t-cpu.json``).
    """
    ratios = []
    for path in sorted((Path(__file__).resolve().parent / "results").glob("algorithms-*-1t-cpu.json")):
        for row in json.loads(path.read_text())["rows"]:
            seconds, chosen = row["seconds"], row["auto_chooses"]
            if chosen in seconds:
                ratios.append(seconds["auto"] / seconds[chosen])
    if not ratios:
        return []
    low, high = min(ratios), max(ratios)
    return [
        f'Noise floor: `benchmarks/algorithms.py` times "auto" and the algorithm it picks, the very same code, '
        f"side by side; over its {len(ratios)} cases their ratio spans {low:.2f} to {high:.2f}: read single ratios "
        "within that band of 1 as measurement noise on this shared machine, not as a cost of convlab.",
        "",
    ]


def targets(results) -> list:
    """Every target with its measured value and PASS/FAIL (never an assertion: the run never fails)."""
    body = []

    def targeted(rows, target, measured):
        """A line per row that has a status: the target and the measured value, as texts of the row."""
        body.extend([name, target(row), measured(row), row["status"]] for row in rows if row.get("status"))

    for result in results:
        name = result["backend"]
        ratio_rows = [r for r in _rows(result, "single") + _rows(result, "multi") if r.get("status")]
        if ratio_rows:
            failed = [r for r in ratio_rows if r["status"] == "FAIL"]
            worst = max(ratio_rows, key=lambda r: r["ratio"])
            where = f"{OP_NAMES[worst['op']]} {worst['window']} {worst['size']} {worst.get('variant', '')}".strip()
            detail = f"worst {worst['ratio']:.2f} ({where})"
            body.append(
                [
                    name,
                    f"convlab/native <= {harness.RATIO_TARGET} from {harness.RATIO_FROM_SIZE}² up",
                    f"{len(ratio_rows) - len(failed)}/{len(ratio_rows)} cases; {detail}",
                    "FAIL" if failed else "PASS",
                ]
            )
        targeted(
            _rows(result, "overhead"),
            lambda row: f"added per call at 8x8{' (' + row['variant'] + ')' if row['variant'] else ''} {row['target']}",
            lambda row: f"{row['added_us']:+.1f} µs ({fmt_time(row['convlab_s'])} vs {fmt_time(row['reference_s'])})",
        )
        targeted(
            _rows(result, "book"),
            lambda row: f"conv2d vs the book's loop, 64x64 3x3, {row['target']}",
            lambda row: f"{row['speedup']:.0f}x",
        )
        if name == "numpy":
            for row in _rows(result, "multi"):
                if row["op"] == "conv2d":
                    ok = row["convlab_gflops"] >= harness.NUMPY_GFLOPS_TARGET
                    body.append(
                        [
                            name,
                            f"multi-channel conv2d >= {harness.NUMPY_GFLOPS_TARGET:g} GFLOP/s",
                            f"{row['convlab_gflops']:.1f} GFLOP/s",
                            harness.status(ok),
                        ]
                    )
        targeted(
            _rows(result, "memory"),
            lambda row: f"peak memory of one conv2d {row['size']}², {row['target']}",
            lambda row: f"{row['peak_over_output']:.2f}x ({row['tracemalloc_bytes'] / 2**20:.1f} MiB traced)",
        )
    return _table(["backend", "target", "measured", "status"], body)


def peak_gflops(results):
    """The best float32 matrix-product rate any backend reached (best repeat: load only ever lowers it)."""
    rows = [(row["best_gflops"], result["backend"], row) for result in results for row in _rows(result, "peak")]
    return max(rows, key=lambda r: r[0]) if rows else None


def multi_table(results) -> list:
    peak = peak_gflops(results)
    body = []
    for result in results:
        for row in _rows(result, "multi"):
            if row["op"] != "conv2d":
                continue
            share = f"{row['convlab_gflops'] / peak[0]:.0%}" if peak else "-"
            share += f" / {row['convlab_gflops'] / harness.NOMINAL_PEAK_GFLOPS:.0%}"
            body.append(
                [
                    result["backend"],
                    row.get("variant", ""),
                    f"{row['convlab_gflops']:.1f}",
                    row["reference"],
                    f"{row['reference_gflops']:.1f}",
                    f"{row['ratio']:.2f}",
                    share,
                ]
            )
    return _table(
        [
            "backend",
            "variant",
            "convlab GFLOP/s",
            "native op",
            "native GFLOP/s",
            "time ratio",
            f"convlab / peak: measured / nominal {harness.NOMINAL_PEAK_GFLOPS:.0f}",
        ],
        body,
    )


def overhead_table(results) -> list:
    body = []
    for result in results:
        for row in _rows(result, "overhead"):
            body.append(
                [
                    result["backend"],
                    row.get("variant", ""),
                    fmt_time(row["convlab_s"]),
                    row["reference"],
                    fmt_time(row["reference_s"]),
                    f"{row['added_us']:+.1f}",
                    row.get("target", ""),
                    row.get("status", ""),
                ]
            )
    return _table(["backend", "variant", "convlab", "native op", "native", "added µs/call", "target", "status"], body)


def book_table(results) -> list:
    body = []
    for result in results:
        for row in _rows(result, "book"):
            others = ", ".join(f"{key} {fmt_time(t)}" for key, t in row.get("others_s", {}).items())
            body.append(
                [
                    result["backend"],
                    f"{row['size']}²",
                    fmt_time(row["book_s"]),
                    fmt_time(row["convlab_s"]),
                    f"{row['speedup']:.0f}x",
                    others,
                    row.get("target", ""),
                    row.get("status", ""),
                ]
            )
    return _table(
        ["backend", "image", "book loop", "convlab corr2d", "speedup", "references", "target", "status"], body
    )


def _mib(row, key) -> str:
    return f"{row[key] / 2**20:.1f}" if key in row else "-"


def memory_table(results) -> list:
    header = ["backend", "conv2d", "function", "RSS peak MiB", "tracemalloc MiB", "framework counter MiB"]
    body = []
    for result in results:
        for row in _rows(result, "memory"):
            size = f"{row['size']}²" if row["size"] != "multi" else "multi-channel"
            cells = [_mib(row, key) for key in ("rss_bytes", "tracemalloc_bytes", "framework_bytes", "output_bytes")]
            tail = [f"{row['peak_over_output']:.2f}", row.get("status", "")]
            body.append([result["backend"], size, row["key"], *cells, *tail])
    return _table(header + ["output MiB", "peak/output", "status"], body)


def first_call_table(results) -> list:
    body = []
    for result in results:
        for row in _rows(result, "first_call"):
            a, b = row["convlab"], row["native"]
            body.append(
                [
                    result["backend"],
                    fmt_time(a["import_s"]),
                    fmt_time(a["first_op_s"]),
                    fmt_time(a["total_s"]),
                    row["reference"],
                    fmt_time(b["import_s"]),
                    fmt_time(b["first_op_s"]),
                    fmt_time(b["total_s"]),
                    f"{row['added_ms']:+.0f} ms",
                ]
            )
    return _table(
        ["backend", "convlab import", "first op", "total", "native op", "import", "first op", "total", "convlab adds"],
        body,
    )


def detail_table(result) -> list:
    body = []
    for row in _rows(result, "single") + _rows(result, "multi"):
        size = f"{row['size']}²" if row["kind"] == "single" else row["size"]
        t = row["convlab_timing"]
        body.append(
            [
                OP_NAMES[row["op"]],
                row["window"],
                size,
                row.get("variant", ""),
                fmt_time(row["convlab_s"]),
                row["reference"],
                fmt_time(row["reference_s"]),
                f"{row['ratio']:.3f}",
                f"{t['repeats']}x{t['number']}",
                row.get("status", ""),
            ]
        )
    return _table(
        ["op", "window", "image", "variant", "convlab", "native op", "native", "ratio", "repeats x calls", "status"],
        body,
    )


def machine_section(results) -> list:
    first = results[0]["machine"]
    lines = [
        f"- CPU: {first['cpu']}, {first['cores']} cores ({', '.join(first.get('cpu_flags', []))})",
        f"- Python {first['python']} on {first['platform']}; convlab commit {first.get('git_commit', '?')}",
    ]
    peak = peak_gflops(results)
    if peak:
        lines.append(
            f"- measured float32 peak: {peak[0]:.0f} GFLOP/s (best repeat; median {peak[2]['gflops']:.0f}), "
            f"a {peak[2]['size']}x{peak[2]['size']} float32 matrix product on {peak[1]}"
        )
    lines.append("")
    body = []
    for result in results:
        m = result["machine"]
        versions = ", ".join(f"{k} {v}" for k, v in m["versions"].items())
        env = ", ".join(f"{k}={v}" for k, v in m.get("env", {}).items()) or "-"
        load = f"{m['loadavg_start'][0]:.1f} -> {m.get('loadavg_end', ['?'])[0]:.1f}" if m.get("loadavg_end") else "-"
        mode = "quick" if result.get("quick") else "full"
        errors = "; ".join(e["section"] + ": " + e["error"][:80] for e in result.get("errors", [])) or "-"
        body.append(
            [result["backend"], versions, mode, m["date"], f"{result.get('seconds', 0):.0f} s", load, env, errors]
        )
    return lines + _table(["backend", "versions", "run", "date", "duration", "load avg", "env", "errors"], body)


def _native_label(name: str, reference: str) -> str:
    if name == "numpy":  # scipy.signal.correlate2d, scipy.ndimage.correlate / maximum_filter / uniform_filter
        return "numpy: " + ".".join(reference.split(".")[:2])
    return f"{name}: native op"


def plot(results, path: Path) -> None:
    """Log-log time against pixels, one panel per op (3x3), convlab solid and native dashed per backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(17, 5.8), sharey=True)
    colors = dict(zip(ORDER, ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple")))
    legend = {}
    for ax, op in zip(axes, ("conv2d", "max", "avg")):
        for result in results:
            name, series = result["backend"], {}
            for row in _rows(result, "single"):
                if row["op"] == op and row["window"] == "3x3":
                    ours = f"{name}: convlab {row.get('variant', '')}".strip()
                    series.setdefault(ours, {})[row["size"]] = row["convlab_s"]
                    series.setdefault(_native_label(name, row["reference"]), {})[row["size"]] = row["reference_s"]
            styles = {"convlab": iter(("-", "-.")), "native": iter(("--", ":"))}
            for label, points in series.items():
                side = "convlab" if "convlab" in label else "native"
                sizes = sorted(points)
                (line,) = ax.loglog(
                    [s * s for s in sizes],
                    [points[s] for s in sizes],
                    next(styles[side], "-"),
                    marker="o" if side == "convlab" else "x",
                    color=colors.get(name),
                    alpha=0.85,
                )
                legend.setdefault(label, line)
        ax.set_title(f"{OP_NAMES[op]}, 3x3, single channel")
        ax.set_xlabel("pixels (H x W)")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("median seconds per call")
    fig.legend(list(legend.values()), list(legend), loc="lower center", ncol=5, fontsize=8, frameon=False)
    fig.suptitle("convlab (solid, o) against each framework's own op (dashed, x); log-log")
    fig.tight_layout(rect=(0, 0.14, 1, 0.95))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--results", "--out", type=Path, default=harness.RESULTS)
    # nox -s bench passes its arguments (--quick, --threads, ...) to every step: run.py's are ignored here
    args, _ = parser.parse_known_args(argv)
    results = _order(harness.read_results(args.results))
    if not results:
        print(f"no results in {args.results}; run benchmarks/run.py --backend NAME first", file=sys.stderr)
        return 1
    png = args.results / "time_vs_size.png"
    plot(results, png)
    quick = [r["backend"] for r in results if r.get("quick")]
    lines = [
        "# convlab benchmark results",
        "",
        "Generated by `benchmarks/report.py` from the JSON files beside this page (`nox -s bench`). "
        "Times are medians over repeats; a ratio is convlab's median time over the native op's on identical inputs "
        "(below 1: convlab is faster). See `benchmarks/README.md` for what is measured and how.",
        "",
    ]
    if quick:
        lines += [f"**Quick run** (`--quick`) for {', '.join(quick)}: few repeats and sizes; indicative only.", ""]
    configs = sorted({(r.get("clock", "wall"), str(r.get("threads", "default"))) for r in results})
    lines += [
        "Clock and threads: "
        + "; ".join(f"{clock} time, threads: {threads}" for clock, threads in configs)
        + " (`run.py --clock cpu --threads 1` times this process's CPU time on one thread: immune to other "
        "processes' load, see `benchmarks/README.md`).",
        "",
    ]
    lines += ["## Targets", ""] + targets(results)
    lines += ["## convlab / native time, per call", ""]
    lines += [
        "Single channel: N=C=1, stride 1, no padding; multi-channel: N=8, C 64->64, 56x56, conv2d with "
        f"padding 1. PASS/FAIL against <= {harness.RATIO_TARGET} where the target applies "
        f"(from {harness.RATIO_FROM_SIZE}² up, and the multi-channel case). NumPy has no native op: it is "
        "compared with scipy and plain NumPy (footnotes). TensorFlow's native ops run on NHWC tensors; its "
        "channels_first column times convlab on NCHW copies of the same values.",
        "",
    ]
    lines += combined_ratios(results) + noise_floor()
    lines += [f"![time against image size]({png.name})", ""]
    lines += ["## Multi-channel conv2d throughput", ""] + multi_table(results)
    lines += ["## Per-call overhead at 8x8 (conv2d 3x3)", ""] + overhead_table(results)
    lines += ["## The book's Python-loop corr2d (3x3 kernel)", ""] + book_table(results)
    lines += ["## Peak memory of one conv2d call", ""]
    lines += [
        "RSS peak: growth of the resident set's high-water mark during one call after warm-up, in a fresh "
        "process (glibc mmap threshold fixed, MXNet's memory pool off). tracemalloc: NumPy's own allocations. "
        "Framework counter: TensorFlow's `get_memory_info('CPU:0')` peak; JAX's compiled `memory_analysis()` "
        "(temporaries plus output). peak/output uses tracemalloc, else the framework counter, else RSS.",
        "",
    ] + memory_table(results)
    lines += ["## First call (fresh interpreter: imports plus the first conv2d on 32x32)", ""] + first_call_table(
        results
    )
    lines += ["## Machine", ""] + machine_section(results)
    for result in results:
        lines += [f"<details><summary>{result['backend']}: every timing</summary>", ""] + detail_table(result)
        lines += ["</details>", ""]
    out = args.results / "README.md"
    out.write_text("\n".join(lines))
    print(f"wrote {out} and {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
