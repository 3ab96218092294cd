"""The canonical case list: every case is data (an op name, input specifications, keyword arguments, a dtype).

Inputs are made from the specification alone (:func:`make_inputs`, seeded by the case id), so every machine
and every environment builds the same arrays; :func:`fingerprint` hashes the list, and bundles made from
another list are refused.
"""

from __future__ import annotations

import hashlib
import json
import zlib
from dataclasses import dataclass, replace
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np

import convlab as cl

#: bump when a case changes meaning; part of the fingerprint
CASES_VERSION = 2  # 2: masks of NaN and signed infinities compared first


@dataclass(frozen=True)
class Case:
    """One equivalence case: an op, its input specifications and keyword arguments."""

    id: str
    group: str
    op: str
    inputs: Tuple[Tuple[str, Tuple[int, ...], str, float], ...]  # (name, shape, kind, scale)
    kwargs: Tuple[Tuple[str, Any], ...] = ()
    dtype: str = "float32"

    def spec(self) -> dict:
        return {
            "id": self.id,
            "group": self.group,
            "op": self.op,
            "inputs": self.inputs,
            "kwargs": self.kwargs,
            "dtype": self.dtype,
        }


def _case(id, group, op, inputs, dtype="float32", **kwargs) -> Case:
    return Case(
        id,
        group,
        op,
        tuple((n, tuple(s), k, float(sc)) for n, s, k, sc in inputs),
        tuple(sorted(kwargs.items())),
        dtype,
    )


def _conv_inputs(x_shape, k_shape, kind="int", scale=1.0, bias=False, k_kind=None):
    inputs = [("X", x_shape, kind, scale), ("K", k_shape, k_kind or kind, 1.0)]
    if bias:
        inputs.append(("bias", (k_shape[0],), kind, 1.0))
    return inputs


def _build_cases() -> List[Case]:
    stride: Any
    dilation: Any
    padding: Any
    window: Any
    cases: List[Case] = []
    add = cases.append
    chapter = "chapter examples"
    add(_case("chapter/corr2d", chapter, "corr2d", [("X", (3, 3), "ramp", 1), ("K", (2, 2), "ramp", 1)]))
    add(_case("chapter/edges", chapter, "corr2d", [("X", (6, 8), "stripes", 1), ("K", (1, 2), "edge", 1)]))
    add(_case("chapter/edges-transposed", chapter, "corr2d", [("X", (8, 6), "stripes-t", 1), ("K", (1, 2), "edge", 1)]))
    add(
        _case(
            "chapter/multi-in", chapter, "corr2d_multi_in", [("X", (2, 3, 3), "ramp", 1), ("K", (2, 2, 2), "ramp", 1)]
        )
    )
    add(
        _case(
            "chapter/multi-in-out",
            chapter,
            "corr2d_multi_in_out",
            [("X", (2, 3, 3), "ramp", 1), ("K", (3, 2, 2, 2), "ramp", 1)],
        )
    )
    add(
        _case(
            "chapter/1x1",
            chapter,
            "corr2d_multi_in_out_1x1",
            [("X", (3, 3, 3), "normal", 1), ("K", (2, 3, 1, 1), "normal", 1)],
        )
    )
    add(_case("chapter/matmul", chapter, "corr2d_matmul", [("X", (3, 3), "ramp", 1), ("K", (2, 2), "ramp", 1)]))
    add(_case("chapter/max-pool", chapter, "pool2d", [("X", (3, 3), "ramp", 1)], pool_size=(2, 2), mode="max"))
    add(_case("chapter/avg-pool", chapter, "pool2d", [("X", (3, 3), "ramp", 1)], pool_size=(2, 2), mode="avg"))
    add(
        _case(
            "chapter/max-pool-pad-stride",
            chapter,
            "pool2d",
            [("X", (1, 2, 4, 4), "ramp", 1)],
            pool_size=(3, 3),
            mode="max",
            padding=1,
            stride=2,
        )
    )
    for padding in (0, 1, (2, 1), ((0, 2), (1, 0)), "valid", "same"):
        add(
            _case(
                f"padding/{padding}",
                "padding forms",
                "conv2d",
                _conv_inputs((2, 3, 7, 8), (4, 3, 3, 2), bias=True),
                padding=padding,
            )
        )
    for kernel in ((3, 3), (2, 2), (4, 3), (1, 4)):
        for stride in (1, 2, 3):
            add(
                _case(
                    f"same/{kernel}/stride{stride}",
                    "'same' padding, odd and even kernels, strided",
                    "conv2d",
                    _conv_inputs((1, 2, 7, 8), (2, 2) + kernel),
                    padding="same",
                    stride=stride,
                )
            )
    for stride, dilation in (((2, 2), (1, 1)), ((1, 3), (1, 1)), ((1, 1), (2, 2)), ((2, 1), (2, 3)), ((3, 2), (2, 2))):
        add(
            _case(
                f"stride-dilation/{stride}/{dilation}",
                "stride and dilation",
                "conv2d",
                _conv_inputs((2, 2, 11, 10), (3, 2, 3, 3)),
                stride=stride,
                dilation=dilation,
                padding=1,
            )
        )
    for stride in (1, 2):
        add(
            _case(
                f"channels-last/stride{stride}",
                "channels_last",
                "conv2d",
                [("X", (2, 7, 8, 3), "int", 1), ("K", (3, 3, 3, 4), "int", 1), ("bias", (4,), "int", 1)],
                padding="same",
                stride=stride,
                data_format="channels_last",
            )
        )
    add(
        _case(
            "channels-last/pool",
            "channels_last",
            "pool2d",
            [("X", (2, 7, 8, 3), "normal", 1)],
            pool_size=3,
            mode="max",
            stride=2,
            padding=1,
            data_format="channels_last",
        )
    )
    for dtype in ("float32", "float64"):
        for scale in (1e-4, 1.0, 1e4):
            add(
                _case(
                    f"random/{dtype}/{scale:g}",
                    f"random {dtype} (scales 1e-4, 1, 1e4)",
                    "conv2d",
                    _conv_inputs((2, 4, 12, 12), (5, 4, 3, 3), "normal", scale, bias=True),
                    dtype=dtype,
                    padding="same",
                    stride=(1, 2),
                    dilation=(2, 1),
                )
            )
        add(
            _case(
                f"random/{dtype}/many-channels",
                f"random {dtype} (scales 1e-4, 1, 1e4)",
                "conv2d",
                _conv_inputs((1, 64, 9, 9), (8, 64, 3, 3), "normal"),
                dtype=dtype,
                padding=1,
            )
        )
    add(
        _case(
            "cancellation/conv",
            "cancellation",
            "conv2d",
            _conv_inputs((1, 8, 10, 10), (2, 8, 3, 3), "normal", 1e3, k_kind="cancel"),
        )
    )
    for mode, group in (("max", "max pooling"), ("avg", "average pooling")):
        for window, stride, padding in (
            ((2, 2), 2, 0),
            ((3, 3), 2, 1),
            ((2, 4), (1, 3), ((1, 0), (2, 1))),
            ((3, 2), (2, 1), "same"),
        ):
            for count in (True, False) if mode == "avg" else (True,):
                for kind in ("int", "normal"):
                    label = f"pool/{mode}/{window}/{stride}/{padding}/{'with' if count else 'without'}-pads/{kind}"
                    add(
                        _case(
                            label,
                            group if count or mode == "max" else "average pooling, padded zeros not counted",
                            "pool2d",
                            [("X", (2, 3, 7, 8), kind, 1)],
                            pool_size=window,
                            mode=mode,
                            stride=stride,
                            padding=padding,
                            count_include_pad=count,
                        )
                    )
    for x_shape, k_shape, stride, padding, dilation in (
        ((2, 3, 7, 7), (4, 3, 3, 3), 2, 1, 1),
        ((1, 2, 8, 9), (3, 2, 2, 3), (2, 3), ((0, 2), (1, 0)), (2, 1)),
        ((1, 2, 6, 6), (2, 2, 4, 4), 2, "same", 1),
    ):
        out = cl.output_shape(x_shape, k_shape, stride=stride, padding=padding, dilation=dilation)
        for kind in ("int", "normal"):
            name = f"{x_shape}/{k_shape}/{stride}/{padding}/{dilation}/{kind}"
            inputs = [("X", x_shape, kind, 1), ("K", k_shape, kind, 1), ("dY", out, kind, 1)]
            add(
                _case(
                    f"vjp/{name}",
                    "conv gradients, closed form (conv2d_vjp)",
                    "conv2d_vjp",
                    inputs,
                    stride=stride,
                    padding=padding,
                    dilation=dilation,
                )
            )
            add(
                _case(
                    f"autodiff/{name}",
                    "conv gradients, autodiff (X, K, bias)",
                    "conv2d_autodiff",
                    inputs + [("bias", (k_shape[0],), kind, 1)],
                    stride=stride,
                    padding=padding,
                    dilation=dilation,
                )
            )
    for mode in ("max", "avg"):
        for window, stride, padding in (((2, 2), 2, 0), ((3, 3), 2, 1)):
            out = cl.output_shape((2, 2, 7, 8), (1, 2) + window, stride=stride, padding=padding)
            add(
                _case(
                    f"pool-autodiff/{mode}/{window}",
                    "pooling gradients, autodiff",
                    "pool2d_autodiff",
                    [("X", (2, 2, 7, 8), "normal", 1), ("dY", out, "int", 1)],
                    pool_size=window,
                    mode=mode,
                    stride=stride,
                    padding=padding,
                )
            )
    cases.extend(_transpose_cases())
    for seed in (0, 1, 2, 3):
        add(
            _case(
                f"train/seed{seed}",
                "train_kernel losses (seeds 0-3)",
                "train_kernel",
                [("X", (6, 8), "stripes", 1), ("Y", (6, 7), "stripe-edges", 1)],
                seed=seed,
                bias=seed % 2 == 1,
                epochs=10,
                lr=3e-2,
            )
        )
    cases.extend(_nonfinite_cases())
    return cases + _with_each_algorithm(cases)


def _nonfinite_cases() -> List[Case]:
    """The "non-finite values" group (DESIGN.md section 3): NaN, +inf and -inf in X, for convolution (kernels
    with positive, negative and zero taps), max and average pooling (padded or not, padded zeros counted or
    not), float32 and float64, and their gradients; each forward case also runs with every algorithm. Integer
    inputs (the exact tier) and normal ones (the bound) alternate, so that each geometry meets both kinds."""
    group = "non-finite values"
    cases: List[Case] = []
    add = cases.append
    convs = ((1, 1, 1), ("same", 2, 1), (0, (1, 2), 1), (2, 1, 2), (1, 2, (2, 1)))
    pools = (((2, 2), 2, 0), ((3, 3), 2, 1), ((3, 3), 1, "same"), ((2, 3), (1, 2), ((1, 0), (2, 1))))
    for d, dtype in enumerate(("float32", "float64")):
        for i, (padding, stride, dilation) in enumerate(convs):
            kind = ("int", "normal")[(i + d) % 2]
            add(
                _case(
                    f"nonfinite/conv/{dtype}/{kind}/{padding}/{stride}/{dilation}",
                    group,
                    "conv2d",
                    [("X", (2, 3, 9, 10), f"{kind}-sparse-nonfinite", 1), ("K", (4, 3, 3, 3), "taps", 1)]
                    + [("bias", (4,), "int", 1)],
                    dtype=dtype,
                    padding=padding,
                    stride=stride,
                    dilation=dilation,
                )
            )
        for mode in ("max", "avg"):
            for i, (window, stride, padding) in enumerate(pools):
                for count in (True, False) if mode == "avg" else (True,):
                    kind = ("int", "normal")[(i + d + count) % 2]
                    add(
                        _case(
                            f"nonfinite/pool/{dtype}/{mode}/{window}/{stride}/{padding}/"
                            f"{'with' if count else 'without'}-pads/{kind}",
                            group,
                            "pool2d",
                            [("X", (2, 3, 9, 10), f"{kind}-nonfinite", 1)],
                            dtype=dtype,
                            pool_size=window,
                            mode=mode,
                            stride=stride,
                            padding=padding,
                            count_include_pad=count,
                        )
                    )
        add(
            _case(
                f"nonfinite/conv/{dtype}/channels-last",
                group,
                "conv2d",
                [("X", (2, 9, 10, 3), "int-sparse-nonfinite", 1), ("K", (3, 3, 3, 4), "int", 1)],
                dtype=dtype,
                padding="same",
                data_format="channels_last",
            )
        )
        add(
            _case(
                f"nonfinite/pool/{dtype}/channels-last",
                group,
                "pool2d",
                [("X", (2, 9, 10, 3), "normal-nonfinite", 1)],
                dtype=dtype,
                pool_size=3,
                mode="max",
                stride=2,
                padding=1,
                data_format="channels_last",
            )
        )
        # windows that do not overlap, on inputs large enough for XLA to turn them into a vectorised reduce
        for window, padding in (((2, 2), 0), ((3, 3), 1)):
            add(
                _case(
                    f"nonfinite/pool/{dtype}/large/{window}/{padding}",
                    group,
                    "pool2d",
                    [("X", (2, 4, 32, 32), "normal-nonfinite", 1)],
                    dtype=dtype,
                    pool_size=window,
                    mode="max",
                    stride=window,
                    padding=padding,
                )
            )
        add(
            _case(
                f"nonfinite/pool-autodiff/{dtype}/max/large",
                group,
                "pool2d_autodiff",
                [("X", (2, 4, 32, 32), "int-nonfinite", 1), ("dY", (2, 4, 16, 16), "int", 1)],
                dtype=dtype,
                pool_size=(2, 2),
                mode="max",
                stride=2,
                padding=0,
                algorithm="native",
            )
        )
        # gradients: max pooling's goes where np.argmax points (first NaN, first maximum, never padding)
        for window, stride, padding in (((2, 2), 2, 0), ((3, 3), 2, 1), ((3, 3), 1, ((1, 0), (1, 0)))):
            out = cl.output_shape((2, 3, 9, 10), (3, 3) + window, stride=stride, padding=padding)
            for mode, kind, choices in (("max", "int", ("native", "shift", "layout")), ("avg", "normal", ("native",))):
                for algorithm in choices:
                    add(
                        _case(
                            f"nonfinite/pool-autodiff/{dtype}/{mode}/{window}/{padding}/{algorithm}",
                            group,
                            "pool2d_autodiff",
                            [("X", (2, 3, 9, 10), f"{kind}-nonfinite", 1), ("dY", out, "int", 1)],
                            dtype=dtype,
                            pool_size=window,
                            mode=mode,
                            stride=stride,
                            padding=padding,
                            algorithm=algorithm,
                        )
                    )
        for stride, padding in ((1, 1), (2, "same")):
            out = cl.output_shape((1, 3, 7, 7), (4, 3, 3, 3), stride=stride, padding=padding)
            inputs: List[Tuple[str, Tuple[int, ...], str, int]] = [
                ("X", (1, 3, 7, 7), "int-sparse-nonfinite", 1),
                ("K", (4, 3, 3, 3), "taps", 1),
                ("dY", out, "int", 1),
            ]
            name = f"{dtype}/{stride}/{padding}"
            add(
                _case(f"nonfinite/vjp/{name}", group, "conv2d_vjp", inputs, dtype=dtype, stride=stride, padding=padding)
            )
            for algorithm in ("native", "shift", "gemm") if dtype == "float32" else ("native",):
                add(
                    _case(
                        f"nonfinite/autodiff/{name}/{algorithm}",
                        group,
                        "conv2d_autodiff",
                        inputs + [("bias", (4,), "int", 1)],
                        dtype=dtype,
                        stride=stride,
                        padding=padding,
                        algorithm=algorithm,
                    )
                )
    return cases


def _transpose_cases() -> List[Case]:
    """conv_transpose2d (issue 14): the book's section 14.10 examples, strided, padded (explicit asymmetric pads
    too), output-padded, dilated, channels-last; integer inputs (exact tier) and random floats (the bound), each
    also with ``algorithm="correlation"`` (the core's formulation where a backend binds its own op); gradients
    in closed form (conv_transpose2d_vjp, every backend) and by autodiff (frameworks)."""
    from convlab.conv_transpose import conv_transpose_geometry

    group = "transposed convolution (conv_transpose2d)"
    cases: List[Case] = []
    add = cases.append
    book = [("X", (2, 2), "ramp", 1), ("K", (2, 2), "ramp", 1)]
    for label, book_options in (("", {}), ("-stride2", {"stride": 2}), ("-pad1", {"padding": 1})):
        add(_case(f"transpose/book{label}", group, "conv_transpose2d", book, **book_options))
    geometries = (  # X (N, C, H, W), K (C, Co, kh, kw), stride, padding, output_padding, dilation
        ((2, 3, 5, 4), (3, 2, 3, 3), 2, 1, 1, 1),
        ((1, 2, 4, 4), (2, 3, 4, 4), 2, 1, 0, 1),
        ((1, 2, 5, 6), (2, 3, 3, 2), (2, 3), ((0, 2), (1, 0)), (1, 2), (1, 2)),
        ((1, 2, 5, 5), (2, 2, 3, 3), 1, (1, 0), 1, 2),  # output_padding >= stride (the dilation allows it)
    )
    for x_shape, k_shape, stride, padding, extra, dilation in geometries:
        options: Dict[str, Any] = dict(stride=stride, padding=padding, output_padding=extra, dilation=dilation)
        name = f"{x_shape}/{k_shape}/{stride}/{padding}/{extra}/{dilation}"
        dY = conv_transpose_geometry(x_shape, k_shape, **options).out
        for kind, dtype in (("int", "float32"), ("normal", "float32"), ("normal", "float64")):
            inputs = [("X", x_shape, kind, 1), ("K", k_shape, kind, 1), ("bias", k_shape[1:2], kind, 1)]
            for algorithm in ("auto", "correlation"):
                label = f"transpose/{name}/{kind}/{dtype}" + ("" if algorithm == "auto" else f"/{algorithm}")
                add(_case(label, group, "conv_transpose2d", inputs, dtype, algorithm=algorithm, **options))
            if dtype == "float64":
                continue
            gradient_inputs = inputs[:2] + [("dY", dY, kind, 1)]
            add(
                _case(
                    f"transpose-vjp/{name}/{kind}",
                    "transposed convolution gradients, closed form (conv_transpose2d_vjp)",
                    "conv_transpose2d_vjp",
                    gradient_inputs,
                    **options,
                )
            )
            for algorithm in ("auto", "correlation"):
                add(
                    _case(
                        f"transpose-autodiff/{name}/{kind}" + ("" if algorithm == "auto" else f"/{algorithm}"),
                        "transposed convolution gradients, autodiff (X, K, bias)",
                        "conv_transpose2d_autodiff",
                        gradient_inputs + inputs[2:],
                        algorithm=algorithm,
                        **options,
                    )
                )
    for x_shape, k_shape, stride, padding, extra, dilation in geometries[::2]:  # strided; dilated, explicit pads
        # NaN, +inf and -inf in X (the "non-finite values" rule: IEEE arithmetic, as for conv2d)
        options = dict(stride=stride, padding=padding, output_padding=extra, dilation=dilation)
        name = f"{x_shape}/{k_shape}/{stride}/{padding}/{extra}/{dilation}"
        dY = conv_transpose_geometry(x_shape, k_shape, **options).out
        for kind, dtype in (("int-sparse-nonfinite", "float32"), ("normal-sparse-nonfinite", "float64")):
            inputs = [("X", x_shape, kind, 1), ("K", k_shape, "taps", 1), ("bias", k_shape[1:2], "int", 1)]
            for algorithm in ("auto", "correlation"):
                label = f"nonfinite/transpose/{name}/{kind}/{dtype}" + ("" if algorithm == "auto" else f"/{algorithm}")
                add(
                    _case(label, "non-finite values", "conv_transpose2d", inputs, dtype, algorithm=algorithm, **options)
                )
        inputs = [("X", x_shape, "int-sparse-nonfinite", 1), ("K", k_shape, "taps", 1), ("dY", dY, "int", 1)]
        add(_case(f"nonfinite/transpose-vjp/{name}", "non-finite values", "conv_transpose2d_vjp", inputs, **options))
        # no autodiff case: where padding crops the full result, dK of an infinite pixel is inf in torch's and
        # JAX's own transposed ops (a sum over the kept outputs) but NaN in TF's, MXNet's and through the core's
        # crop (0 * inf with the cropped outputs' zero gradient); README, "NaN and infinities"
    last = [("X", (2, 5, 4, 3), "int", 1), ("K", (3, 3, 2, 3), "int", 1), ("bias", (2,), "int", 1)]
    for algorithm in ("auto", "correlation"):
        add(
            _case(
                f"transpose/channels-last/{algorithm}",
                group,
                "conv_transpose2d",
                last,
                stride=2,
                padding=1,
                output_padding=1,
                data_format="channels_last",
                algorithm=algorithm,
            )
        )
    return cases


def _with_each_algorithm(cases: List[Case]) -> List[Case]:
    """Every conv2d and pool2d case again with each non-native ``algorithm=`` forced (see convlab.algorithms)."""
    from convlab import algorithms

    choices = {"conv2d": algorithms.CONV_ALGORITHMS, "pool2d": algorithms.POOL_ALGORITHMS}
    return [
        replace(case, id=f"{case.id}/{algorithm}", kwargs=tuple(sorted(case.kwargs + (("algorithm", algorithm),))))
        for case in cases
        if case.op in choices
        for algorithm in choices[case.op]
        if algorithm not in ("auto", "native")
    ]


CASES: List[Case] = _build_cases()
CASES_BY_ID: Dict[str, Case] = {case.id: case for case in CASES}


def fingerprint(cases: Sequence[Case] = CASES) -> str:
    """A short hash of the case list and its version: bundles made from other cases are refused."""
    text = json.dumps([CASES_VERSION] + [case.spec() for case in cases], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def make_inputs(case: Case) -> Dict[str, np.ndarray]:
    """The case's inputs as NumPy arrays of its dtype, the same on every machine (seeded by the case id)."""
    rng = np.random.default_rng(zlib.crc32(case.id.encode()))
    arrays: Dict[str, np.ndarray] = {}
    for name, shape, kind, scale in case.inputs:
        if kind == "int":
            values = rng.integers(-4, 5, size=shape).astype(np.float64)
        elif kind == "normal":
            values = rng.normal(size=shape) * scale
        elif kind.endswith("nonfinite"):  # "int-nonfinite", "normal-sparse-nonfinite", ...
            numbers = rng.integers(-4, 5, size=shape) if kind.startswith("int") else rng.normal(size=shape) * scale
            if dict(case.kwargs).get("data_format") == "channels_last":  # the (H, W) planes of NHWC data
                planes = _with_nonfinite(rng, numbers.transpose(0, 3, 1, 2).astype(np.float64), "sparse" in kind)
                values = planes.transpose(0, 2, 3, 1)
            else:
                values = _with_nonfinite(rng, numbers.astype(np.float64), sparse="sparse" in kind)
        elif kind == "taps":  # kernel taps: output channel 0 positive, 1 negative, the others with zero taps
            values = rng.integers(-3, 4, size=shape).astype(np.float64)
            values[0], values[1] = np.abs(values[0]) + 1, -np.abs(values[1]) - 1
            values[2:, ..., shape[-2] // 2, shape[-1] // 2] = 0.0
        elif kind == "cancel":  # output channel 1 nearly cancels channel 0: large terms, small sums
            values = rng.normal(size=shape)
            values[1] = -values[0] * (1 + 1e-3)
        elif kind == "ramp":  # 0, 1, 2, ... row by row, plus the sum of the leading indices: the book's inputs
            plane = np.arange(shape[-2] * shape[-1], dtype=np.float64).reshape(shape[-2:])
            values = plane + sum(np.indices(shape[:-2]), np.zeros(shape[:-2]))[..., None, None]
        elif kind in ("stripes", "stripes-t", "stripe-edges"):
            image = cl.images.stripes().astype(np.float64)
            values = {
                "stripes": image,
                "stripes-t": image.T,
                "stripe-edges": cl.corr2d(image, cl.kernels.edge().astype(np.float64)),
            }[kind]
        elif kind == "edge":
            values = cl.kernels.edge().astype(np.float64)
        else:
            raise ValueError(f"unknown input kind {kind!r}")
        arrays[name] = np.asarray(values, dtype=case.dtype).reshape(shape)
    return arrays


def _with_nonfinite(rng: np.random.Generator, values: np.ndarray, sparse: bool) -> np.ndarray:
    """``values`` with NaN, +inf and -inf placed in every (H, W) plane (seeded: the same on every machine).

    Dense (for pooling): a 4x4 block of -inf (at the top-left corner in every third plane, where padded windows
    hold only -inf, elsewhere in the next), one NaN (two, diagonal neighbours, in every other plane), one +inf,
    one -inf and an adjacent +inf, -inf pair. Sparse (for convolution, whose windows span channels): plane p
    holds one NaN (p % 3 == 0), an adjacent +inf, -inf pair and a lone +inf (p % 3 == 1), or a lone -inf.
    """
    height, width = values.shape[-2:]
    for p, index in enumerate(np.ndindex(*values.shape[:-2])):
        plane = values[index]
        i, j = (int(v) for v in rng.integers(0, (height - 1, width - 1)))
        k, m = (int(v) for v in rng.integers(0, (height, width - 1)))
        if sparse:
            if p % 3 == 0:
                plane[i, j] = np.nan
            elif p % 3 == 1:
                plane[i, j], plane[i, j + 1], plane[k, m] = np.inf, -np.inf, np.inf
            else:
                plane[k, m] = -np.inf
            continue
        if p % 3 < 2:
            top, left = (0, 0) if p % 3 == 0 else (int(v) for v in rng.integers(0, (height - 3, width - 3)))
            plane[top : top + 4, left : left + 4] = -np.inf
        cells = rng.permutation(height * width)[:3]
        for cell, value in zip(cells, (np.nan, np.inf, -np.inf)):
            plane[divmod(int(cell), width)] = value
        plane[i, j] = np.nan
        if p % 2 == 0:
            plane[i + 1, j + 1] = np.nan
        plane[k, m], plane[k, m + 1] = np.inf, -np.inf
    return values
