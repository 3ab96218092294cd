"""How far Winograd F(m x m, 3 x 3) strays from the float64 reference, as a fraction of DESIGN.md's bound.

    python benchmarks/winograd_accuracy.py [--backend numpy] [--seeds 3] [--quick] [--out DIR]

For each tile size (2 and 4, which convlab.winograd offers, and 6, to show why it does not), each spelling
the backend runs (the seam formulation ``conv2d_winograd``; on NumPy also ``numpy_winograd``, on JAX
``jax_winograd``, on torch ``torch_winograd``), float32 and float64, and each input class below, the
worst error over every output element, input channel count C in 1..64 and seed:

* ``sec4``: ``|y - y_ref| / (2 n u (|X| (*) |K|))``, n = 9 C: the section 4 rule (c = 2). At most 1 passes.
* ``wino``: ``|y - y_ref| / winograd.error_bound(...)``: the same rule with the magnitudes Winograd sums.

y_ref is a direct correlation in float64 (float32 inputs) or long double (float64 inputs, 64-bit mantissa
on x86), computed here with NumPy and sharing no code with convlab. Then the exact tier: integer inputs
whose partial sums stay below 2**24, which DESIGN.md requires bit-identical in float32.

Writes ``DIR/winograd-accuracy[-<backend>].json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import zlib
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
UNIT = {"float32": 2.0**-24, "float64": 2.0**-53}
CHANNELS = (1, 2, 4, 8, 16, 32, 64)
SHAPE = (2, 22, 22)  # N, H, W: 22 = 5 * 4 + 2, so F(4x4) has a cropped last tile row and column
OUT_CHANNELS = 4
LAPLACIAN = np.array([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])


def _spiky(rng, shape):
    """A dark image (values ~1e-3) with 5% bright pixels (1e3): stars, specular highlights."""
    x = rng.normal(size=shape) * 1e-3
    x[rng.random(shape) < 0.05] = 1e3
    return x


def _zero_sum(rng, shape):
    k = rng.normal(size=shape)
    return k - k.mean(axis=(2, 3), keepdims=True)


def _cancel(rng, shape):
    """convlab.testing's "cancel" kernel: output channel 1 nearly cancels channel 0."""
    k = rng.normal(size=shape)
    k[1] = -k[0] * (1 + 1e-3)
    return k


#: input classes: name -> (X generator, K generator, constructed?) on (N, C, H, W) / (Co, C, 3, 3) shapes
CLASSES = {
    "normal": (lambda r, s: r.normal(size=s), lambda r, s: r.normal(size=s), False),
    "uniform >= 0 (X and K)": (lambda r, s: r.random(s), lambda r, s: r.random(s), False),
    "X + 1000 (offset)": (lambda r, s: 1000 + r.normal(size=s), lambda r, s: r.normal(size=s), False),
    "X + 1000, zero-sum K (cancellation)": (lambda r, s: 1000 + r.normal(size=s), _zero_sum, False),
    "X * 1e3, cancelling K (testing 'cancel')": (lambda r, s: 1e3 * r.normal(size=s), _cancel, False),
    "scale 1e-4 (X and K)": (lambda r, s: 1e-4 * r.normal(size=s), lambda r, s: 1e-4 * r.normal(size=s), False),
    "scale 1e4 (X and K)": (lambda r, s: 1e4 * r.normal(size=s), lambda r, s: 1e4 * r.normal(size=s), False),
    "lognormal X (sigma 2, high dynamic range)": (
        lambda r, s: r.lognormal(0.0, 2.0, s),
        lambda r, s: r.normal(size=s),
        False,
    ),  # noqa: E501
    "spiky X, delta K (constructed)": (
        _spiky,
        lambda r, s: np.pad(r.normal(size=s[:2] + (1, 1)), ((0, 0), (0, 0), (1, 1), (1, 1))),
        True,
    ),  # noqa: E501
    "spiky X, Laplacian K (constructed)": (_spiky, lambda r, s: LAPLACIAN * r.normal(size=s[:2] + (1, 1)), True),
}


def direct(x: np.ndarray, k: np.ndarray, pads, dtype) -> np.ndarray:
    """Direct 3x3 correlation, NCHW/OIHW, accumulated in ``dtype`` (float64 or long double)."""
    x, k = x.astype(dtype), k.astype(dtype)
    (top, bottom), (left, right) = pads
    xp = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))
    out_h, out_w = xp.shape[2] - 2, xp.shape[3] - 2
    y = np.zeros((x.shape[0], k.shape[0], out_h, out_w), dtype)
    for i in range(3):
        for j in range(3):
            y += np.einsum("nchw,oc->nohw", xp[:, :, i : i + out_h, j : j + out_w], k[:, :, i, j])
    return y


def spellings(backend_name: str):
    """name -> run(x_numpy, k_numpy, bias_numpy, geometry, tile, dtype) -> numpy result, for this backend."""
    import convlab as cl
    from convlab import winograd

    be = cl.get_backend(backend_name)

    def on_backend(fn):
        def run(x, k, bias, g, tile, dtype):
            args = [be.asarray(a, dtype) if a is not None else None for a in (x, k, bias)]
            return np.asarray(be.to_numpy(fn(*args, g, tile)), dtype=np.float64)

        return run

    def seam(x, k, bias, g, tile):
        if tile in winograd.TILES:
            return winograd.conv2d_winograd(be, x, k, bias, g, tile)
        matrices = winograd.transforms(tile)
        u = winograd._kernel_transform(be, k, g, matrices[1])
        return winograd._winograd(be, x, u, bias, g, tile, matrices)

    out = {"seam": on_backend(seam)}
    if backend_name == "numpy":
        out["numpy_winograd"] = on_backend(winograd.numpy_winograd)
    elif backend_name == "torch":
        out["torch_winograd"] = on_backend(winograd.torch_winograd)
    elif backend_name == "jax":
        out["jax_winograd"] = on_backend(lambda x, k, b, g, t: winograd.jax_winograd(g, t)(x, k, b))
    elif backend_name == "tensorflow":
        out["tensorflow_winograd"] = on_backend(lambda x, k, b, g, t: winograd.tensorflow_winograd(g, t)(x, k, b))
    elif backend_name == "mxnet":
        out["mxnet_winograd"] = on_backend(winograd.mxnet_winograd)
    return out, be


def float_study(backend_name: str, seeds: int, channels, tiles) -> list:
    from convlab import winograd
    from convlab.geometry import conv_geometry

    runs, be = spellings(backend_name)
    dtypes = ["float32", "float64"]
    try:
        be.check_float64()
    except Exception:  # JAX without x64: float32 only
        dtypes = ["float32"]
    rows = []
    for class_name, (make_x, make_k, constructed) in CLASSES.items():
        for c in channels:
            x_shape, k_shape = (SHAPE[0], c) + SHAPE[1:], (OUT_CHANNELS, c, 3, 3)
            g = conv_geometry(x_shape, k_shape, padding=1)
            for seed in range(seeds):
                rng = np.random.default_rng(zlib.crc32(f"{class_name}/{c}/{seed}".encode()))
                x64, k64 = make_x(rng, x_shape), make_k(rng, k_shape)
                for dtype in dtypes:
                    x, k = x64.astype(dtype), k64.astype(dtype)
                    exact = direct(x, k, g.pads, np.float64 if dtype == "float32" else np.longdouble)
                    sec4 = 2 * 9 * c * UNIT[dtype] * direct(np.abs(x), np.abs(k), g.pads, np.float64)
                    for tile in tiles:
                        wino = winograd._error_bound(x, k, g, tile, dtype, 2.0)
                        for spelling, run in runs.items():
                            if tile not in winograd.TILES and spelling != "seam":
                                continue
                            y = run(x, k, None, g, tile, dtype)
                            error = np.abs(y.astype(exact.dtype) - exact).astype(np.float64)
                            rows.append(
                                {
                                    "class": class_name,
                                    "constructed": constructed,
                                    "C": c,
                                    "seed": seed,
                                    "dtype": dtype,
                                    "tile": tile,
                                    "spelling": spelling,
                                    "sec4": _fraction(error, sec4),
                                    "wino": _fraction(error, wino),
                                    "bound_ratio": float(np.max(winograd.error_bound(x, k, g, 2, dtype=dtype) / sec4))
                                    if tile == 2 and spelling == "seam"
                                    else None,
                                }
                            )
        print(f"  {class_name}: done", file=sys.stderr, flush=True)
    return rows


def _fraction(error: np.ndarray, bound: np.ndarray) -> float:
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(error == 0, 0.0, error / bound)
    return float(np.max(ratio))


def exact_study(backend_name: str) -> list:
    """Integer inputs with partial sums below 2**24: bit-identical to the reference in float32, or not."""
    import convlab as cl
    from convlab import testing, winograd
    from convlab.geometry import conv_geometry

    runs, _ = spellings(backend_name)
    cases = []
    for case in testing.CASES:  # the canonical cases winograd can compute
        kwargs = dict(case.kwargs)
        if case.op != "conv2d" or kwargs.get("algorithm") not in (None,) or case.dtype != "float32":
            continue
        inputs = testing.make_inputs(case)
        k_shape = inputs["K"].shape
        channels_last = kwargs.get("data_format") == "channels_last"
        window = k_shape[:2] if channels_last else k_shape[2:]
        if (
            window != (3, 3)
            or kwargs.get("stride", 1) not in (1, (1, 1))
            or kwargs.get("dilation", 1) not in (1, (1, 1))
        ):  # noqa: E501
            continue
        integer = all(kind == "int" for _, _, kind, _ in case.inputs)
        if integer:
            cases.append((f"canonical {case.id}", inputs["X"], inputs["K"], inputs.get("bias"), kwargs, integer))
    rng = np.random.default_rng(18)
    for c in (1, 3, 8, 64):
        for channels_last in (False, True):
            x = rng.integers(-4, 5, size=(2, c, 13, 11)).astype(np.float32)
            k = rng.integers(-3, 4, size=(5, c, 3, 3)).astype(np.float32)
            b = rng.integers(-5, 6, size=(5,)).astype(np.float32)
            kwargs = {"padding": 1}
            if channels_last:
                x, k, kwargs = (
                    x.transpose(0, 2, 3, 1).copy(),
                    k.transpose(2, 3, 1, 0).copy(),
                    dict(kwargs, data_format="channels_last"),
                )  # noqa: E501
            cases.append(
                (f"integers -4..4, K -3..3, C={c}, bias, {'NHWC' if channels_last else 'NCHW'}", x, k, b, kwargs, True)
            )  # noqa: E501
    stripes = cl.images.stripes().astype(np.float32)[None, None]
    for name, kernel in (("laplacian", cl.kernels.laplacian()), ("sobel", cl.kernels.sobel())):
        kernel = np.asarray(kernel, np.float32)
        if kernel.shape == (3, 3):
            cases.append((f"book stripes, {name} 3x3", stripes, kernel[None, None], None, {"padding": 1}, True))
    rows = []
    for name, x, k, b, kwargs, integer in cases:
        fmt = kwargs.get("data_format", "channels_first")
        g = conv_geometry(
            x.shape, k.shape, None if b is None else b.shape, padding=kwargs.get("padding", 0), data_format=fmt
        )  # noqa: E501
        reference = cl.conv2d(
            x.astype(np.float64),
            k.astype(np.float64),
            None if b is None else b.astype(np.float64),
            backend="numpy",
            padding=kwargs.get("padding", 0),
            data_format=fmt,
        )  # noqa: E501
        magnitude = cl.conv2d(
            np.abs(x.astype(np.float64)),
            np.abs(k.astype(np.float64)),
            backend="numpy",
            padding=kwargs.get("padding", 0),
            data_format=fmt,
        )  # noqa: E501
        exact_tier = integer and float(np.max(magnitude)) < 2**24
        expected = reference.astype(np.float32)
        for tile in winograd.TILES:
            for spelling, run in runs.items():
                y = run(x, k, b, g, tile, "float32").astype(np.float32)
                differ = int(np.sum(y != expected))
                rows.append(
                    {
                        "case": name,
                        "exact_tier": exact_tier,
                        "tile": tile,
                        "spelling": spelling,
                        "elements": int(y.size),
                        "differ": differ,
                        "max_abs_diff": float(np.max(np.abs(y.astype(np.float64) - reference))),
                        "max_partial_sum": float(np.max(magnitude)),
                    }
                )
    return rows


def summarise(rows: list) -> dict:
    """worst[spelling][tile][dtype][class] = {"sec4": {C: worst}, "wino": worst over C}."""
    out: dict = {}
    for r in rows:
        cell = out.setdefault(r["spelling"], {}).setdefault(str(r["tile"]), {}).setdefault(r["dtype"], {})
        entry = cell.setdefault(r["class"], {"sec4": {}, "wino": 0.0, "constructed": r["constructed"]})
        entry["sec4"][str(r["C"])] = max(entry["sec4"].get(str(r["C"]), 0.0), r["sec4"])
        if r["wino"] is not None:
            entry["wino"] = max(entry["wino"], r["wino"])
        else:
            entry["wino"] = None
    return out


def markdown(summary: dict, exact: list, meta: dict) -> str:
    lines = [
        "# Winograd accuracy: worst error as a fraction of the bound",
        "",
        f"`python benchmarks/winograd_accuracy.py --backend {meta['backend']}` ({meta['when']}, "
        f"{meta['versions']}); {meta['seeds']} seeds per cell, X of shape (2, C, 22, 22), K (4, C, 3, 3), "
        "padding 1. Each cell: the worst over every output element and seed of |y - y_ref| divided by the "
        "section 4 bound 2·n·u·(|X|⊛|K|), n = 9C (at most 1 passes). Last column: the worst over all C of the "
        "error divided by `winograd.error_bound` (2·(C + κ)·u·W, W the magnitudes Winograd sums).",
        "",
    ]
    chans = [str(c) for c in meta["channels"]]
    lines += [
        "## Summary: the fewest input channels from which the section 4 rule held (every larger C too)",
        "",
        "ordinary: every non-constructed class but the lognormal one; worst: the largest fraction of the section 4 "
        "bound at C = 1 and C = 64 over all classes; error_bound: the largest fraction of `winograd.error_bound` "
        "anywhere (constructed classes included).",
        "",
        "| tile | spelling | dtype | ordinary | lognormal (HDR) | constructed | worst at C=1 | worst at C=64 "
        "| error_bound |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for spelling, by_tile in summary.items():
        for tile, by_dtype in by_tile.items():
            for dtype, by_class in by_dtype.items():

                def from_c(names, by_class=by_class):
                    worst = [max(by_class[n]["sec4"][c] for n in names) for c in chans]
                    ok = [w <= 1 for w in worst]
                    first = next((i for i in range(len(chans)) if all(ok[i:])), None)
                    return "never" if first is None else f"C >= {chans[first]}"

                ordinary = [n for n, e in by_class.items() if not e["constructed"] and "lognormal" not in n]
                hdr = [n for n in by_class if "lognormal" in n]
                constructed = [n for n, e in by_class.items() if e["constructed"]]
                at1 = max(e["sec4"][chans[0]] for e in by_class.values())
                at64 = max(e["sec4"][chans[-1]] for e in by_class.values())
                wino = max(e["wino"] for e in by_class.values())
                lines.append(
                    f"| F({tile}x{tile}) | {spelling} | {dtype} | {from_c(ordinary)} | {from_c(hdr)} | "
                    f"{from_c(constructed)} | {at1:.3g} | {at64:.3g} | {wino:.3g} |"
                )
    lines.append("")
    for spelling, by_tile in summary.items():
        for tile, by_dtype in by_tile.items():
            for dtype, by_class in by_dtype.items():
                lines.append(f"## F({tile}x{tile}, 3x3), {spelling}, {dtype}")
                lines.append("")
                lines.append("| input class | " + " | ".join(f"C={c}" for c in chans) + " | vs error_bound |")
                lines.append("|---|" + "---|" * (len(chans) + 1))
                for name, entry in by_class.items():
                    cells = []
                    for c in chans:
                        v = entry["sec4"].get(c)
                        cells.append("" if v is None else (f"**{v:.3g}**" if v > 1 else f"{v:.3g}"))
                    wino = "n/a" if entry["wino"] is None else f"{entry['wino']:.3g}"
                    lines.append(f"| {name} | " + " | ".join(cells) + f" | {wino} |")
                lines.append("")
    lines += [
        "## Exact tier (integer inputs, float32)",
        "",
        "| case | tile | spelling | exact tier? | elements differing from the reference | max abs diff |",
        "|---|---|---|---|---|---|",
    ]
    for r in exact:
        lines.append(
            f"| {r['case']} | {r['tile']} | {r['spelling']} | {'yes' if r['exact_tier'] else 'no'} "
            f"(max partial sum {r['max_partial_sum']:.0f}) | {r['differ']} of {r['elements']} "
            f"| {r['max_abs_diff']:.3g} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backend", default="numpy")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="1 seed, C in 1, 4, 64")
    parser.add_argument("--out", default=str(HERE / "results"))
    args = parser.parse_args()
    if args.backend == "jax":
        import jax

        jax.config.update("jax_enable_x64", True)
    import convlab as cl

    seeds, channels = (1, (1, 4, 64)) if args.quick else (args.seeds, CHANNELS)
    start = time.time()
    rows = float_study(args.backend, seeds, channels, (2, 4, 6))
    exact = exact_study(args.backend)
    be = cl.get_backend(args.backend)
    meta = {
        "backend": args.backend,
        "versions": f"{args.backend} {be.version()}, numpy {np.__version__}",
        "seeds": seeds,
        "channels": list(channels),
        "shape": {"N": SHAPE[0], "H": SHAPE[1], "W": SHAPE[2], "Co": OUT_CHANNELS},
        "when": time.strftime("%Y-%m-%d %H:%M"),
        "seconds": round(time.time() - start, 1),
    }
    summary = summarise(rows)
    suffix = "" if args.backend == "numpy" else f"-{args.backend}"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"winograd-accuracy{suffix}.json").write_text(
        json.dumps({"meta": meta, "summary": summary, "exact": exact, "rows": rows}, indent=1) + "\n"
    )
    (out / f"winograd-accuracy{suffix}.md").write_text(markdown(summary, exact, meta))
    print(markdown(summary, exact, meta))
    print(f"{time.time() - start:.0f} s, load {os.getloadavg()}", file=sys.stderr)


if __name__ == "__main__":
    main()
