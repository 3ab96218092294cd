"""Checking that backends agree: the rule of DESIGN.md section 4 as helpers, and the canonical case list.

Two tiers:

* exact: integer-valued inputs whose partial sums stay below 2**24, max pooling, and average pooling
  with a power-of-two divisor must give bit-identical results on every backend;
* bounded: every other output element y must satisfy
  ``|y - y_ref| <= c * n * u * (|X| (*) |K|)`` with y_ref the float64 NumPy reference, ``(|X| (*) |K|)``
  the same operation on absolute values, n the number of products summed per element, u the unit
  roundoff of the dtype (2**-24 float32, 2**-53 float64) and c = 2.

Two backends agree on a bounded case when they differ by at most the sum of their two bounds.

Example:
    >>> import numpy as np, convlab as cl
    >>> from convlab import testing
    >>> X, K = np.random.default_rng(0).normal(size=(2, 3, 8, 8)), np.ones((4, 3, 3, 3))
    >>> y = cl.conv2d(X.astype(np.float32), K.astype(np.float32), padding="same")
    >>> testing.assert_close_to_reference(y, X, K, padding="same")
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import platform
import zipfile
import zlib
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple, cast

import numpy as np

import convlab as cl
from convlab.errors import ConvlabValueError
from convlab.geometry import pool_geometry
from convlab.registry import backend_of, get_backend

#: bump when a case changes meaning; part of the fingerprint
CASES_VERSION = 2  # 2: masks of NaN and signed infinities compared first
C = 2.0
UNIT_ROUNDOFF = {"float32": 2.0**-24, "float64": 2.0**-53}
EXACT_LIMIT = 2.0**24


# -- the rule, as helpers ---------------------------------------------------------------------------


def _numpy(value: Any) -> np.ndarray:
    """Any backend's tensor (or a list/array) as a NumPy array: test code only."""
    if isinstance(value, np.ndarray):
        return value
    owner = backend_of(value)
    return owner.to_numpy(value) if owner is not None else np.asarray(value)


def _f64(value: Any) -> np.ndarray:
    return np.asarray(_numpy(value), dtype=np.float64)


def _products_per_element(K: np.ndarray, data_format: str = "channels_first") -> int:
    if K.ndim == 4:
        return int(np.prod(K.shape[:3]) if data_format == "channels_last" else np.prod(K.shape[1:]))
    return int(np.prod(K.shape))


def conv2d_bound(X: Any, K: Any, bias: Any = None, *, dtype: str = "float32", c: float = C, **conv_kwargs: Any):
    """The per-element bound ``c * n * u * (|X| (*) |K| + |bias|)`` for :func:`convlab.conv2d` (float64 NumPy)."""
    X, K = _f64(X), _f64(K)
    n = _products_per_element(K, conv_kwargs.get("data_format", "channels_first")) + (bias is not None)
    magnitude = cl.conv2d(
        np.abs(X), np.abs(K), None if bias is None else np.abs(_f64(bias)), backend="numpy", **conv_kwargs
    )
    return c * n * UNIT_ROUNDOFF[dtype] * magnitude


def assert_close_to_reference(
    y: Any, X: Any, K: Any, bias: Any = None, *, c: float = C, exact: Optional[bool] = None, **conv_kwargs: Any
) -> float:
    """Assert ``y`` (any backend's :func:`convlab.conv2d` output) is within the section 4 bound of the reference.

    The reference is convlab's NumPy backend in float64 on the same inputs. With ``exact=None`` the
    exact tier applies when X, K (and bias) are integer-valued with partial sums below 2**24.
    Returns the worst error as a fraction of the bound (0.0 when bit-identical).

    Example:
        >>> import convlab as cl
        >>> y = cl.conv2d([[0, 1, 2], [3, 4, 5], [6, 7, 8]], [[0, 1], [2, 3]])
        >>> assert_close_to_reference(y, [[0, 1, 2], [3, 4, 5], [6, 7, 8]], [[0, 1], [2, 3]])
        0.0
    """
    actual = _numpy(y)
    dtype = "float64" if actual.dtype == np.float64 else "float32"
    X64, K64 = _f64(X), _f64(K)
    b64 = None if bias is None else _f64(bias)
    reference = cl.conv2d(X64, K64, b64, backend="numpy", **conv_kwargs)
    if exact is None:
        exact = _integer_valued(X64, K64, b64) and _max_partial_sum(X64, K64, b64, conv_kwargs) < EXACT_LIMIT
    if exact:
        return _check_exact(actual, reference, "conv2d")
    return _check_bound(actual, reference, conv2d_bound(X64, K64, b64, dtype=dtype, c=c, **conv_kwargs), "conv2d")


def _integer_valued(*arrays: Optional[np.ndarray]) -> bool:
    return all(a is None or bool(np.all(np.round(a) == a)) for a in arrays)


def _max_partial_sum(X: np.ndarray, K: np.ndarray, bias: Optional[np.ndarray], conv_kwargs: dict) -> float:
    magnitude = cl.conv2d(np.abs(X), np.abs(K), None if bias is None else np.abs(bias), backend="numpy", **conv_kwargs)
    return _finite_max(magnitude)


def _finite_max(magnitude: np.ndarray) -> float:
    """The largest finite element (0.0 when none): what decides the exact tier where some outputs are NaN or inf."""
    finite = np.asarray(magnitude)[np.isfinite(magnitude)]
    return float(np.max(finite)) if finite.size else 0.0


def _check_nonfinite(actual: np.ndarray, expected: np.ndarray, what: str) -> np.ndarray:
    """NaN, +inf and -inf must sit exactly where the reference has them; returns the mask of the other positions.

    (DESIGN.md section 3: max pooling propagates NaN like np.max, infinities follow IEEE arithmetic.)
    """
    for label, test in (("NaN", np.isnan), ("+inf", np.isposinf), ("-inf", np.isneginf)):
        wrong = test(actual) != test(expected)
        if np.any(wrong):
            index = tuple(int(i) for i in np.argwhere(wrong)[0])
            raise AssertionError(
                f"{what}: {label} where the reference has none, or the other way round: {int(wrong.sum())} of "
                f"{wrong.size} elements, first at {index}: {actual[index]!r} vs reference {expected[index]!r}"
            )
    return np.isfinite(expected)


def _check_exact(actual: np.ndarray, reference: np.ndarray, what: str) -> float:
    expected = np.asarray(reference).astype(actual.dtype)
    if actual.shape != expected.shape:
        raise AssertionError(f"{what}: shape {actual.shape} differs from the reference's {expected.shape}")
    same = (actual == expected) | (np.isnan(actual) & np.isnan(expected))
    if not np.all(same):
        index = tuple(int(i) for i in np.argwhere(~same)[0])
        raise AssertionError(
            f"{what}: not bit-identical (exact tier): {int((~same).sum())} of {same.size} elements differ, "
            f"first at {index}: {actual[index]!r} vs reference {expected[index]!r}"
        )
    return 0.0


def _check_bound(actual: np.ndarray, reference: np.ndarray, bound: np.ndarray, what: str) -> float:
    if actual.shape != reference.shape:
        raise AssertionError(f"{what}: shape {actual.shape} differs from the reference's {reference.shape}")
    finite = _check_nonfinite(actual, reference, what)  # then the bound, on the finite positions only
    with np.errstate(invalid="ignore"):
        error = np.where(finite, np.abs(actual.astype(np.float64) - reference), 0.0)
    ratio = _ratio(error, np.where(finite, bound, 1.0))
    worst = float(ratio.max()) if ratio.size else 0.0
    if not worst <= 1.0:
        index = tuple(
            int(i) for i in np.unravel_index(int(np.nanargmax(np.where(np.isnan(ratio), np.inf, ratio))), ratio.shape)
        )
        raise AssertionError(
            f"{what}: error {abs(float(actual[index]) - float(reference[index])):.3g} at {index} is {worst:.3g} "
            f"times the bound {float(bound[index]):.3g} "
            f"(value {float(actual[index])!r}, reference {float(reference[index])!r})"
        )
    return worst


def _ratio(error: np.ndarray, bound: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(error == 0, 0.0, error / bound)
    return np.where(np.isnan(error), np.inf, ratio)


def assert_backends_agree(
    fn: Callable[..., Any],
    *inputs: Any,
    backends: Optional[Sequence[str]] = None,
    rtol: Optional[float] = None,
    atol: Optional[float] = None,
) -> Dict[str, str]:
    """Run ``fn(*inputs)`` on every backend and assert all results agree with the float64 NumPy run.

    ``inputs`` are NumPy arrays (converted to each backend's tensors, keeping their dtype); ``fn``
    returns a tensor or a tuple of tensors. A user's function has no known error bound, so agreement
    means ``|y - y_ref| <= atol + rtol * |y_ref|`` with defaults ``rtol = 2**10 * u`` and
    ``atol = rtol * max|y_ref|`` (u of the inputs' dtype). Returns ``{backend: "ok" | "skipped: why"}``;
    skipped backends are reported, never counted as passing.

    Example:
        >>> import numpy as np, convlab as cl
        >>> from convlab.testing import assert_backends_agree
        >>> edges = lambda X: cl.pool2d(cl.corr2d(X, cl.kernels.edge()), 2, "avg")
        >>> assert_backends_agree(edges, cl.images.stripes(), backends=["numpy"])
        {'numpy': 'ok'}
    """
    names = list(backends) if backends is not None else _installed()
    arrays = [np.asarray(x) for x in inputs]
    dtype = "float64" if any(a.dtype == np.float64 for a in arrays) else "float32"
    u = UNIT_ROUNDOFF[dtype]
    with cl.use_backend("numpy"):
        reference = [_f64(y) for y in _as_tuple(fn(*[a.astype(np.float64) for a in arrays]))]
    outcome: Dict[str, str] = {}
    failures = []
    for name in names:
        try:
            backend = get_backend(name)
            if dtype == "float64":
                backend.check_float64()
        except cl.ConvlabError as error:
            outcome[name] = f"skipped: {error}"
            continue
        tensors = [backend.asarray(a, a.dtype.name if a.dtype.kind == "f" else "float32") for a in arrays]
        with cl.use_backend(name):
            results = _as_tuple(fn(*tensors))
        for index, (result, expected) in enumerate(zip(results, reference)):
            relative = rtol if rtol is not None else 2.0**10 * u
            absolute = atol if atol is not None else relative * float(np.max(np.abs(expected), initial=0.0))
            actual = _f64(result)
            if actual.shape != expected.shape or not np.all(
                np.abs(actual - expected) <= absolute + relative * np.abs(expected)
            ):
                failures.append(
                    f"{name} output {index}: differs from the float64 NumPy reference beyond "
                    f"atol={absolute:.3g}, rtol={relative:.3g} (shape {actual.shape} vs {expected.shape})"
                )
        outcome[name] = "ok"
    if failures:
        raise AssertionError("; ".join(failures))
    return outcome


def _as_tuple(value: Any) -> tuple:
    return tuple(value) if isinstance(value, (tuple, list)) else (value,)


def _installed() -> List[str]:
    return [name for name, version in cl.backends().items() if not version.startswith("unavailable")]


# -- the canonical case list ------------------------------------------------------------------------


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


# -- running a case ---------------------------------------------------------------------------------

_CONV_OPS = ("conv2d", "corr2d", "corr2d_multi_in", "corr2d_multi_in_out", "corr2d_multi_in_out_1x1", "corr2d_matmul")


class NotApplicable(Exception):
    """The backend cannot run this case at all (NumPy has no autodiff; JAX float64 without x64)."""


def run_case(case: Case, backend: cl.Backend) -> List[np.ndarray]:
    """Run one case on ``backend``; the outputs as NumPy arrays."""
    arrays = make_inputs(case)
    kwargs = dict(case.kwargs)
    if case.dtype == "float64":
        try:
            backend.check_float64()
        except cl.ConvlabError as error:
            raise NotApplicable(str(error)) from None
    tensors = {name: backend.asarray(value, case.dtype) for name, value in arrays.items()}
    if case.op in _CONV_OPS:
        fn = getattr(cl, case.op)
        outputs = fn(*tensors.values(), backend=backend, **kwargs)
    elif case.op == "pool2d":
        outputs = cl.pool2d(tensors["X"], backend=backend, **kwargs)
    elif case.op == "conv2d_vjp":
        outputs = cl.conv2d_vjp(tensors["X"], tensors["K"], tensors["dY"], backend=backend, **kwargs)
    elif case.op in ("conv2d_autodiff", "pool2d_autodiff"):
        if not backend.has_autodiff:
            raise NotApplicable(f"{backend.name} has no automatic differentiation")
        dY = tensors["dY"]
        everything = tuple(range(len(arrays["dY"].shape)))
        if case.op == "conv2d_autodiff":
            params = [tensors["X"], tensors["K"], tensors["bias"]]
            loss = lambda p: backend.sum(cl.conv2d(p[0], p[1], p[2], backend=backend, **kwargs) * dY, everything)  # noqa: E731
        else:
            params = [tensors["X"]]
            loss = lambda p: backend.sum(cl.pool2d(p[0], backend=backend, **kwargs) * dY, everything)  # noqa: E731
        _, outputs = backend.value_and_grad(loss)(params)
    elif case.op == "train_kernel":
        result = cl.train_kernel(tensors["X"], tensors["Y"], (1, 2), backend=backend, gradient="autodiff", **kwargs)
        outputs = [np.asarray(result.losses, dtype=np.float64), result.kernel]
    else:
        raise ValueError(f"unknown op {case.op!r}")
    return [np.asarray(backend.to_numpy(y)) if not isinstance(y, np.ndarray) else y for y in _as_tuple(outputs)]


def reference_case(case: Case) -> Tuple[List[np.ndarray], List[Optional[np.ndarray]]]:
    """The float64 NumPy reference outputs of a case, and each output's bound (None: the exact tier)."""
    arrays = {name: value.astype(np.float64) for name, value in make_inputs(case).items()}
    kwargs = dict(case.kwargs)
    u = UNIT_ROUNDOFF[case.dtype]
    integer = all(
        kind in ("int", "ramp", "stripes", "stripes-t", "stripe-edges", "edge", "taps") or kind.startswith("int-")
        for _, _, kind, _ in case.inputs
    )
    absolute = {name: np.abs(value) for name, value in arrays.items()}
    if case.op in _CONV_OPS:
        fn = getattr(cl, case.op)
        reference = fn(*arrays.values(), backend="numpy", **kwargs)
        magnitude = fn(*absolute.values(), backend="numpy", **kwargs)
        n = _products_per_element(arrays["K"], kwargs.get("data_format", "channels_first")) + ("bias" in arrays)
        exact = integer and _finite_max(magnitude) < EXACT_LIMIT
        return [reference], [None if exact else C * n * u * magnitude]
    if case.op == "pool2d":
        reference = cl.pool2d(arrays["X"], backend="numpy", **kwargs)
        window = cl.arguments.to_pair("pool_size", kwargs["pool_size"])
        if kwargs.get("mode", "max") == "max":
            return [reference], [None]
        divisor_power_of_two = _power_of_two(window[0] * window[1])
        padded = kwargs.get("padding", 0) not in (0, "valid", ((0, 0), (0, 0)))
        if integer and divisor_power_of_two and (kwargs.get("count_include_pad", True) or not padded):
            return [reference], [None]
        magnitude = cl.pool2d(absolute["X"], backend="numpy", **kwargs)
        return [reference], [C * (window[0] * window[1] + 1) * u * magnitude]
    if case.op in ("conv2d_vjp", "conv2d_autodiff"):
        geometry = {key: value for key, value in kwargs.items() if key != "algorithm"}
        reference = cl.conv2d_vjp(arrays["X"], arrays["K"], arrays["dY"], backend="numpy", **geometry)
        magnitude = cl.conv2d_vjp(absolute["X"], absolute["K"], absolute["dY"], backend="numpy", **geometry)
        out_channels, _, kernel_h, kernel_w = arrays["K"].shape
        per_kernel = int(np.prod(arrays["dY"].shape)) // out_channels
        counts = (out_channels * kernel_h * kernel_w, per_kernel, per_kernel)
        exact = integer and max(_finite_max(m) for m in magnitude) < EXACT_LIMIT
        bounds = [None if exact else C * n * u * m for n, m in zip(counts, magnitude)]
        return list(reference), bounds
    if case.op == "pool2d_autodiff":
        kwargs.pop("algorithm", None)
        reference, magnitude, count = _pool2d_vjp_reference(arrays["X"], arrays["dY"], **kwargs)
        exact = kwargs["mode"] == "max" or _power_of_two(count)
        return [reference], [None if exact else C * (count + 1) * u * magnitude]
    if case.op == "train_kernel":
        result = cl.train_kernel(arrays["X"], arrays["Y"], (1, 2), backend="numpy", **kwargs)
        losses, kernel = np.asarray(result.losses), result.kernel
        terms = arrays["Y"].size + 2
        epochs = np.arange(1, len(losses) + 1)
        # a few ULP per epoch: each epoch adds at most one more loss evaluation's worth of rounding
        return [losses, kernel], [
            C * terms * u * epochs * np.abs(losses),
            C * terms * u * len(losses) * np.abs(kernel) + u,
        ]
    raise ValueError(f"unknown op {case.op!r}")


def _power_of_two(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


def _pool2d_vjp_reference(X, dY, pool_size, mode="max", stride=1, padding=0, count_include_pad=True):
    """Gradient of sum(pool2d(X) * dY) w.r.t. X in float64: dY routed to the pixel np.argmax picks among each
    window's real pixels (its first NaN, else its first maximum; never padding), or spread evenly over the
    window for average pooling."""
    geometry = pool_geometry(X.shape, pool_size, mode, stride=stride, padding=padding)
    (top, bottom), (left, right) = geometry.pads
    (kh, kw), (sh, sw) = geometry.window, geometry.stride
    out_h, out_w = dY.shape[2:]
    fill = -np.inf if mode == "max" else 0.0
    padded = np.pad(X, ((0, 0), (0, 0), (top, bottom), (left, right)), constant_values=fill)
    real = np.pad(np.ones(X.shape[2:]), ((top, bottom), (left, right)))
    windows = lambda a, i, j: a[..., i : i + (out_h - 1) * sh + 1 : sh, j : j + (out_w - 1) * sw + 1 : sw]  # noqa: E731
    grad = np.zeros_like(padded)
    magnitude = np.zeros_like(padded)
    if mode == "max":
        best = np.full(dY.shape, np.nan)
        choice = np.full(dY.shape, -1)
        for offset in range(kh * kw):
            candidate, is_real = windows(padded, offset // kw, offset % kw), windows(real, offset // kw, offset % kw)
            later = (choice >= 0) & ~np.isnan(best) & (np.isnan(candidate) | (candidate > best))
            better = (is_real > 0) & ((choice < 0) | later)
            best, choice = np.where(better, candidate, best), np.where(better, offset, choice)
        for offset in range(kh * kw):
            windows(grad, offset // kw, offset % kw)[...] += np.where(choice == offset, dY, 0.0)
        count = 1
    else:
        if count_include_pad or (top, bottom, left, right) == (0, 0, 0, 0):
            divisor = np.full((out_h, out_w), float(kh * kw))
        else:
            divisor = sum(windows(real, i, j) for i in range(kh) for j in range(kw))
        share = dY / divisor
        for i in range(kh):
            for j in range(kw):
                windows(grad, i, j)[...] += share
                windows(magnitude, i, j)[...] += np.abs(share)
        # the divisor is one power of two everywhere only when it is the full window
        full_window = count_include_pad or (top, bottom, left, right) == (0, 0, 0, 0)
        count = kh * kw if full_window else 0
    crop = (slice(None), slice(None), slice(top, top + X.shape[2]), slice(left, left + X.shape[3]))
    return grad[crop], np.abs(grad[crop]) if mode == "max" else magnitude[crop], count


# -- results, bundles and the comparison ------------------------------------------------------------


@dataclass
class Results:
    """One backend's outputs for the case list, and where they came from."""

    backend: str
    meta: dict
    outputs: Dict[str, List[np.ndarray]] = field(default_factory=dict)
    not_applicable: Dict[str, str] = field(default_factory=dict)
    errors: Dict[str, str] = field(default_factory=dict)
    label: str = ""  # how tables name these results: the backend, or backend, version and bundle when that repeats

    @property
    def name(self) -> str:
        return self.label or self.backend


def run_cases(
    backend_name: str, cases: Sequence[Case] = CASES, progress: Optional[Callable[[str], None]] = None
) -> Results:
    """Run every case on one backend (with TF32 off and deterministic algorithms on)."""
    backend = get_backend(backend_name)
    settings = backend.equivalence_settings()
    meta = {
        "fingerprint": fingerprint(cases),
        "cases_version": CASES_VERSION,
        "backend": backend.name,
        "framework_version": backend.version(),
        "convlab_version": cl.__version__,
        "numpy_version": np.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "precision_settings": settings,
    }
    results = Results(backend.name, meta)
    for case in cases:
        try:
            results.outputs[case.id] = run_case(case, backend)
        except NotApplicable as reason:
            results.not_applicable[case.id] = str(reason)
        except Exception as error:  # a backend that raises on a valid case fails that case, visibly
            results.errors[case.id] = f"{type(error).__name__}: {error}"
        if progress:
            progress(case.id)
    return results


def save_bundle(path: str, results: Iterable[Results]) -> None:
    """Write results to an ``.npz`` bundle: numeric arrays plus one JSON string of metadata (no pickles)."""
    arrays: Dict[str, np.ndarray] = {}
    meta = {}
    for result in results:
        meta[result.backend] = {**result.meta, "not_applicable": result.not_applicable, "errors": result.errors}
        for case_id, outputs in result.outputs.items():
            for index, output in enumerate(outputs):
                arrays[f"{result.backend}|{case_id}|{index}"] = np.asarray(output)
    arrays["__meta__"] = np.asarray(json.dumps({"fingerprint": fingerprint(), "backends": meta}))
    with open(path, "wb") as handle:
        np.savez_compressed(handle, **cast(Dict[str, Any], arrays))


def load_bundle(path: str) -> List[Results]:
    """Read a bundle written by :func:`save_bundle`, refusing corrupt, pickled or stale files clearly."""
    try:
        with open(path, "rb") as handle:
            data = handle.read()
        if not data.startswith(b"PK"):  # an .npz is a zip archive; anything else (a raw pickle, say) is refused unread
            raise ConvlabValueError(f"bundle {path}: not an .npz bundle (corrupt, truncated, or another format)")
        archive = np.load(io.BytesIO(data), allow_pickle=False)
        names = list(archive.files)
        if "__meta__" not in names:
            raise ConvlabValueError(f"bundle {path}: not a convlab bundle (no __meta__ entry)")
        meta = json.loads(str(archive["__meta__"][()]))
        arrays = {name: archive[name] for name in names if name != "__meta__"}
    except ConvlabValueError:
        raise
    except FileNotFoundError:
        raise ConvlabValueError(f"bundle {path}: no such file (did its tests-<backend> session run?)") from None
    except ValueError as error:
        if "allow_pickle" in str(error) or "pickled" in str(error).lower():
            raise ConvlabValueError(f"bundle {path}: holds pickled objects, which convlab never loads") from None
        raise ConvlabValueError(f"bundle {path}: unreadable ({error})") from None
    except (OSError, zipfile.BadZipFile, EOFError, KeyError, json.JSONDecodeError, TypeError) as error:
        raise ConvlabValueError(f"bundle {path}: corrupt or truncated ({type(error).__name__}: {error})") from None
    if not isinstance(meta, dict) or meta.get("fingerprint") != fingerprint():
        found = meta.get("fingerprint") if isinstance(meta, dict) else None
        raise ConvlabValueError(
            f"bundle {path}: made from a different case list (fingerprint {found}, this convlab has "
            f"{fingerprint()}); re-run its tests-<backend> session"
        )
    loaded = []
    for backend, backend_meta in meta.get("backends", {}).items():
        result = Results(
            backend,
            backend_meta,
            not_applicable=dict(backend_meta.get("not_applicable", {})),
            errors=dict(backend_meta.get("errors", {})),
        )
        result.meta["bundle"] = os.path.basename(path)
        loaded.append(result)
    by_name = {result.backend: result for result in loaded}
    for key, array in arrays.items():
        backend, _, rest = key.partition("|")
        case_id, _, index = rest.rpartition("|")
        if backend not in by_name or not index.isdigit() or array.dtype.kind not in "fiu":
            raise ConvlabValueError(f"bundle {path}: unexpected entry {key!r} ({array.dtype})")
        outputs: List[Any] = by_name[backend].outputs.setdefault(case_id, [])
        outputs.extend([None] * (int(index) + 1 - len(outputs)))
        outputs[int(index)] = array
    return loaded


@dataclass
class Verdict:
    """The outcome of one case on one backend (or one pair of backends)."""

    status: str  # "exact", "bound", "violation", "missing", "n/a"
    ratio: float = 0.0
    message: str = ""


def judge(
    case: Case, outputs: Optional[List[np.ndarray]], reference: List[np.ndarray], bounds: List[Optional[np.ndarray]]
) -> Verdict:
    """Compare one backend's outputs for a case against the reference and its bounds."""
    if outputs is None or len(outputs) != len(reference) or any(o is None for o in outputs):
        return Verdict("missing", math.inf, f"{case.id}: no result")
    worst, exact = 0.0, True
    for index, (actual, expected, bound) in enumerate(zip(outputs, reference, bounds)):
        what = f"{case.id} output {index}"
        try:
            if bound is None:
                _check_exact(np.asarray(actual), expected, what)
            else:
                actual64 = np.asarray(actual, dtype=np.float64)
                worst = max(worst, _check_bound(actual64, expected, bound, what))
                exact = exact and bool(
                    np.array_equal(np.asarray(actual).astype(case.dtype), expected.astype(case.dtype), equal_nan=True)
                )
        except AssertionError as error:
            return Verdict("violation", math.inf, str(error))
    return Verdict("exact" if exact else "bound", worst)


def judge_pair(case: Case, first: Optional[List[np.ndarray]], second: Optional[List[np.ndarray]], bounds) -> Verdict:
    """Two backends agree when bit-identical (exact tier) or within the sum of their bounds."""
    if first is None or second is None:
        return Verdict("missing", math.inf)
    worst, exact = 0.0, True
    for index, (a, b, bound) in enumerate(zip(first, second, bounds)):
        a64, b64 = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
        if a64.shape != b64.shape:
            return Verdict("violation", math.inf, f"{case.id} output {index}: shapes {a64.shape} and {b64.shape}")
        same = np.array_equal(a64, b64, equal_nan=True)
        exact = exact and same
        if bound is None and not same:
            return Verdict("violation", math.inf, f"{case.id} output {index}: not bit-identical (exact tier)")
        if bound is not None:
            try:  # NaN and each signed infinity at the same positions first, then the bound elsewhere
                finite = _check_nonfinite(a64, b64, f"{case.id} output {index}")
            except AssertionError as error:
                return Verdict("violation", math.inf, str(error))
            with np.errstate(invalid="ignore"):
                ratio = _ratio(np.where(finite, np.abs(a64 - b64), 0.0), np.where(finite, 2 * bound, 1.0))
            worst = max(worst, float(ratio.max()) if ratio.size else 0.0)
    if worst > 1.0:
        return Verdict("violation", worst, f"{case.id}: differ by {worst:.3g} times the sum of their bounds")
    return Verdict("exact" if exact else "bound", worst)


def _summarise(verdicts: List[Verdict]) -> str:
    applicable = [v for v in verdicts if v.status != "n/a"]
    if not applicable:
        return "n/a"
    if any(v.status == "missing" for v in applicable):
        return "MISSING"
    if any(v.status == "violation" for v in applicable):
        return "VIOLATION"
    if all(v.status == "exact" for v in applicable):
        return "exact"
    return f"{max(v.ratio for v in applicable):.2g}"


def compare(results: List[Results], cases: Sequence[Case] = CASES) -> dict:
    """Judge every backend against the reference and every pair against each other.

    Returns ``{"table": {group: {backend: cell}}, "pairs": {"a vs b": cell}, "problems": [...]}``.
    """
    references = {case.id: reference_case(case) for case in cases}
    table: Dict[str, Dict[str, str]] = {}
    problems: List[str] = []
    per_backend: Dict[str, Dict[str, Verdict]] = {}
    for result in results:
        verdicts = {}
        for case in cases:
            if case.id in result.not_applicable:
                verdicts[case.id] = Verdict("n/a", 0.0, result.not_applicable[case.id])
                continue
            reference, bounds = references[case.id]
            if case.id in result.errors:
                verdicts[case.id] = Verdict("violation", math.inf, f"{case.id}: raised {result.errors[case.id]}")
            else:
                verdicts[case.id] = judge(case, result.outputs.get(case.id), reference, bounds)
            if verdicts[case.id].status in ("violation", "missing"):
                problems.append(f"{result.name}: {verdicts[case.id].message}")
        per_backend[result.name] = verdicts
    cells: Dict[str, Dict[str, List[Verdict]]] = {}
    for case in cases:
        row = cells.setdefault(case.group, {})
        for name, verdicts in per_backend.items():
            row.setdefault(name, []).append(verdicts[case.id])
    table = {group: {name: _summarise(column) for name, column in row.items()} for group, row in cells.items()}
    pairs: Dict[str, str] = {}
    names = [result.name for result in results]
    by_name = {result.name: result for result in results}
    for i, first in enumerate(names):
        for second in names[i + 1 :]:
            pair_verdicts = []
            for case in cases:
                if case.id in by_name[first].not_applicable or case.id in by_name[second].not_applicable:
                    continue
                verdict = judge_pair(
                    case,
                    by_name[first].outputs.get(case.id),
                    by_name[second].outputs.get(case.id),
                    references[case.id][1],
                )
                pair_verdicts.append(verdict)
                if verdict.status in ("violation",):
                    problems.append(f"{first} vs {second}: {verdict.message}")
            pairs[f"{first} vs {second}"] = _summarise(pair_verdicts)
    return {"table": table, "pairs": pairs, "problems": problems}


def format_table(report: dict, results: List[Results]) -> str:
    """The report as a Markdown table: rows are case groups, columns backends (worst error / bound)."""
    names = [result.name for result in results]
    width = max(len(group) for group in report["table"]) if report["table"] else 10
    lines = ["| " + "case group".ljust(width) + " | " + " | ".join(name.center(10) for name in names) + " |"]
    lines.append("|" + "-" * (width + 2) + "|" + "|".join("-" * 12 for _ in names) + "|")
    for group, row in report["table"].items():
        lines.append(
            "| " + group.ljust(width) + " | " + " | ".join(row.get(name, "-").center(10) for name in names) + " |"
        )
    versions = ", ".join(f"{r.name}: {r.meta.get('framework_version', '?')}" for r in results)
    lines.append("")
    lines.append(
        f"cells: worst error as a fraction of the DESIGN.md section 4 bound; 'exact' = bit-identical to the "
        f"float64 reference rounded to the case's dtype. Versions: {versions}."
    )
    if report["pairs"]:
        lines.append("")
        lines.append(
            "pairs (worst difference / sum of both bounds): "
            + ", ".join(f"{k}: {v}" for k, v in report["pairs"].items())
        )
    return "\n".join(lines)


def _label_environments(results: List[Results]) -> None:
    """Tell apart results of one backend from several environments (each bundle holds NumPy, say): their
    labels add the framework version and the bundle, and they are compared with each other like any pair."""
    counts: Dict[str, int] = {}
    for result in results:
        counts[result.backend] = counts.get(result.backend, 0) + 1
    for result in results:
        if counts[result.backend] > 1:
            where = result.meta.get("bundle", "this run")
            result.label = f"{result.backend} {result.meta.get('framework_version', '?')} [{where}]"
    labels = [result.name for result in results]
    if len(set(labels)) != len(labels):
        raise ConvlabValueError(f"the same results given twice (the same bundle loaded twice?): {labels}")


def compare_command(
    backends: Optional[List[str]], save: Optional[str], load: List[str], require: List[str], as_json: bool
) -> int:
    """``convlab compare``: run and/or load results, print the table, exit 1 on any violation or missing case."""
    results: List[Results] = []
    for path in load:
        results.extend(load_bundle(path))
    to_run = backends if backends is not None else ([] if load else _installed())
    for name in to_run:
        results.append(run_cases(name))
    if save:
        save_bundle(save, [r for r in results if r.backend in to_run])
    _label_environments(results)
    names = [r.backend for r in results]
    report = compare(results)
    absent = [name for name in require if name not in names]
    report["problems"] += [f"{name}: no results (bundle missing)" for name in absent]
    if as_json:
        print(
            json.dumps(
                {
                    "table": report["table"],
                    "pairs": report["pairs"],
                    "problems": report["problems"],
                    "versions": {r.name: r.meta for r in results},
                },
                indent=2,
                default=str,
            )
        )
    else:
        print(format_table(report, results))
        if save:
            print(f"\nsaved {save}")
        for problem in report["problems"]:
            print(f"PROBLEM {problem}")
        print(f"\n{len(CASES)} cases x {len(results)} backends, {len(report['problems'])} problems")
    return 1 if report["problems"] else 0
