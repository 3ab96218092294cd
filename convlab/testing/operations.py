"""The operations the case list runs: one table from an op name to how a backend runs it and to its reference.

Adding an operation to the equivalence suite is one :class:`Operation` in :data:`OPERATIONS` (and its cases in
:mod:`convlab.testing.cases`): ``run(backend, tensors, kwargs)`` computes it on a backend, ``reference(arrays,
absolute, kwargs, dtype, integer)`` gives the float64 NumPy outputs and each output's bound (None: the exact
tier), using the bound functions of :mod:`convlab.testing.bounds`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

import convlab as cl
from convlab.geometry import pool_geometry
from convlab.testing.bounds import (
    EXACT_LIMIT,
    UNIT_ROUNDOFF,
    _as_tuple,
    _finite_max,
    _power_of_two,
    _products_per_element,
    conv_bound,
    conv_vjp_bounds,
    pool_bound,
)
from convlab.testing.cases import Case, make_inputs

Outputs = Tuple[List[np.ndarray], List[Optional[np.ndarray]]]
#: input kinds whose values are integers (the exact tier applies when partial sums stay below 2**24)
INTEGER_KINDS = ("int", "ramp", "stripes", "stripes-t", "stripe-edges", "edge", "taps")


class NotApplicable(Exception):
    """The backend cannot run this case at all (NumPy has no autodiff; JAX float64 without x64)."""


@dataclass(frozen=True)
class Operation:
    """How the suite runs one op on a backend, and its float64 reference with bounds."""

    run: Callable[[cl.Backend, Dict[str, Any], dict], Any]
    reference: Callable[[Dict[str, np.ndarray], Dict[str, np.ndarray], dict, str, bool], Outputs]
    autodiff: bool = False  # needs the backend's automatic differentiation


def _loss_gradient(backend: cl.Backend, forward: Callable[[list], Any], params: list, dY: Any) -> Any:
    """The gradients of ``sum(forward(params) * dY)`` by the backend's autodiff."""
    axes = tuple(range(len(backend.to_numpy(dY).shape)))
    _, gradients = backend.value_and_grad(lambda p: backend.sum(forward(p) * dY, axes))(params)
    return gradients


# -- the runs ---------------------------------------------------------------------------------------


def _run_named(op: str) -> Callable[[cl.Backend, Dict[str, Any], dict], Any]:
    def run(backend: cl.Backend, tensors: Dict[str, Any], kwargs: dict) -> Any:
        return getattr(cl, op)(*tensors.values(), backend=backend, **kwargs)

    return run


def _run_pool(backend: cl.Backend, tensors: Dict[str, Any], kwargs: dict) -> Any:
    return cl.pool2d(tensors["X"], backend=backend, **kwargs)


def _run_conv_vjp(backend: cl.Backend, tensors: Dict[str, Any], kwargs: dict) -> Any:
    return cl.conv2d_vjp(tensors["X"], tensors["K"], tensors["dY"], backend=backend, **kwargs)


def _run_conv_autodiff(backend: cl.Backend, tensors: Dict[str, Any], kwargs: dict) -> Any:
    forward = lambda p: cl.conv2d(p[0], p[1], p[2], backend=backend, **kwargs)  # noqa: E731
    return _loss_gradient(backend, forward, [tensors["X"], tensors["K"], tensors["bias"]], tensors["dY"])


def _run_pool_autodiff(backend: cl.Backend, tensors: Dict[str, Any], kwargs: dict) -> Any:
    forward = lambda p: cl.pool2d(p[0], backend=backend, **kwargs)  # noqa: E731
    return _loss_gradient(backend, forward, [tensors["X"]], tensors["dY"])


def _run_train(backend: cl.Backend, tensors: Dict[str, Any], kwargs: dict) -> Any:
    result = cl.train_kernel(tensors["X"], tensors["Y"], (1, 2), backend=backend, gradient="autodiff", **kwargs)
    return [np.asarray(result.losses, dtype=np.float64), result.kernel]


# -- the references -----------------------------------------------------------------------------------


def _run_transpose(backend: cl.Backend, tensors: Dict[str, Any], kwargs: dict) -> Any:
    return cl.conv_transpose2d(*tensors.values(), backend=backend, **kwargs)


def _run_transpose_vjp(backend: cl.Backend, tensors: Dict[str, Any], kwargs: dict) -> Any:
    return cl.conv_transpose2d_vjp(tensors["X"], tensors["K"], tensors["dY"], backend=backend, **kwargs)


def _run_transpose_autodiff(backend: cl.Backend, tensors: Dict[str, Any], kwargs: dict) -> Any:
    forward = lambda p: cl.conv_transpose2d(p[0], p[1], p[2], backend=backend, **kwargs)  # noqa: E731
    return _loss_gradient(backend, forward, [tensors["X"], tensors["K"], tensors["bias"]], tensors["dY"])


def _reference_named(op: str) -> Callable[..., Outputs]:
    def reference(
        arrays: Dict[str, np.ndarray], absolute: Dict[str, np.ndarray], kwargs: dict, dtype: str, integer: bool
    ):
        fn = getattr(cl, op)
        value = fn(*arrays.values(), backend="numpy", **kwargs)
        magnitude = fn(*absolute.values(), backend="numpy", **kwargs)
        n = _products_per_element(arrays["K"], kwargs.get("data_format", "channels_first")) + ("bias" in arrays)
        exact = integer and _finite_max(magnitude) < EXACT_LIMIT
        return [value], [None if exact else conv_bound(magnitude, n, dtype)]

    return reference


def _reference_pool(arrays, absolute, kwargs, dtype, integer) -> Outputs:
    value = cl.pool2d(arrays["X"], backend="numpy", **kwargs)
    window = cl.arguments.to_pair("pool_size", kwargs["pool_size"])
    if kwargs.get("mode", "max") == "max":
        return [value], [None]
    padded = kwargs.get("padding", 0) not in (0, "valid", ((0, 0), (0, 0)))
    if integer and _power_of_two(window[0] * window[1]) and (kwargs.get("count_include_pad", True) or not padded):
        return [value], [None]
    magnitude = cl.pool2d(absolute["X"], backend="numpy", **kwargs)
    return [value], [pool_bound(magnitude, window[0] * window[1], dtype)]


def _reference_conv_vjp(arrays, absolute, kwargs, dtype, integer) -> Outputs:
    geometry = {key: value for key, value in kwargs.items() if key != "algorithm"}
    value = cl.conv2d_vjp(arrays["X"], arrays["K"], arrays["dY"], backend="numpy", **geometry)
    magnitude = cl.conv2d_vjp(absolute["X"], absolute["K"], absolute["dY"], backend="numpy", **geometry)
    out_channels, _, kernel_h, kernel_w = arrays["K"].shape
    per_kernel = int(np.prod(arrays["dY"].shape)) // out_channels
    # dX = a correlation of dY with the flipped kernel: Co*kh*kw products; dK and dbias: one per output pixel
    counts = (out_channels * kernel_h * kernel_w, per_kernel, per_kernel)
    exact = integer and max(_finite_max(m) for m in magnitude) < EXACT_LIMIT
    bounds = conv_vjp_bounds(magnitude, counts, dtype)
    return list(value), [None if exact else bound for bound in bounds]


def _reference_pool_autodiff(arrays, absolute, kwargs, dtype, integer) -> Outputs:
    kwargs = {key: value for key, value in kwargs.items() if key != "algorithm"}
    value, magnitude, count = pool2d_vjp(arrays["X"], arrays["dY"], **kwargs)
    exact = kwargs["mode"] == "max" or _power_of_two(count)
    return [value], [None if exact else pool_bound(magnitude, count, dtype)]


def _reference_train(arrays, absolute, kwargs, dtype, integer) -> Outputs:
    result = cl.train_kernel(arrays["X"], arrays["Y"], (1, 2), backend="numpy", **kwargs)
    losses, kernel = np.asarray(result.losses), result.kernel
    terms, u = arrays["Y"].size + 2, UNIT_ROUNDOFF[dtype]
    epochs = np.arange(1, len(losses) + 1)
    # a few ULP per epoch: each epoch adds at most one more loss evaluation's worth of rounding
    return [losses, kernel], [
        conv_bound(np.abs(losses), terms, dtype) * epochs,
        conv_bound(np.abs(kernel), terms * len(losses), dtype) + u,
    ]


def _transpose_counts(K: np.ndarray, data_format: str) -> Tuple[int, int, int]:
    """(C, Co, kh * kw) of a conv_transpose2d kernel: (C, Co, kh, kw), or (kh, kw, Co, C) channels-last."""
    if K.ndim == 2:
        return 1, 1, int(K.size)
    if data_format == "channels_last":
        return int(K.shape[3]), int(K.shape[2]), int(K.shape[0] * K.shape[1])
    return int(K.shape[0]), int(K.shape[1]), int(K.shape[2] * K.shape[3])


def _reference_transpose(arrays, absolute, kwargs, dtype, integer) -> Outputs:
    value = cl.conv_transpose2d(*arrays.values(), backend="numpy", **kwargs)
    magnitude = cl.conv_transpose2d(*absolute.values(), backend="numpy", **kwargs)
    in_channels, _, taps = _transpose_counts(arrays["K"], kwargs.get("data_format", "channels_first"))
    exact = integer and _finite_max(magnitude) < EXACT_LIMIT
    return [value], [None if exact else conv_bound(magnitude, in_channels * taps + ("bias" in arrays), dtype)]


def _reference_transpose_vjp(arrays, absolute, kwargs, dtype, integer) -> Outputs:
    geometry = {key: value for key, value in kwargs.items() if key != "algorithm"}
    value = cl.conv_transpose2d_vjp(arrays["X"], arrays["K"], arrays["dY"], backend="numpy", **geometry)
    magnitude = cl.conv_transpose2d_vjp(absolute["X"], absolute["K"], absolute["dY"], backend="numpy", **geometry)
    in_channels, out_channels, taps = _transpose_counts(arrays["K"], geometry.get("data_format", "channels_first"))
    # dX = conv2d(dY, K): Co*kh*kw products; dK: one per input pixel; dbias: one per output pixel
    counts = (out_channels * taps, arrays["X"].size // in_channels, arrays["dY"].size // out_channels)
    exact = integer and max(_finite_max(m) for m in magnitude) < EXACT_LIMIT
    return list(value), [None if exact else bound for bound in conv_vjp_bounds(magnitude, counts, dtype)]


_CONV_OPS = ("conv2d", "corr2d", "corr2d_multi_in", "corr2d_multi_in_out", "corr2d_multi_in_out_1x1", "corr2d_matmul")

#: op name -> how to run it and its reference
OPERATIONS: Dict[str, Operation] = {
    **{op: Operation(_run_named(op), _reference_named(op)) for op in _CONV_OPS},
    "pool2d": Operation(_run_pool, _reference_pool),
    "conv2d_vjp": Operation(_run_conv_vjp, _reference_conv_vjp),
    "conv2d_autodiff": Operation(_run_conv_autodiff, _reference_conv_vjp, autodiff=True),
    "pool2d_autodiff": Operation(_run_pool_autodiff, _reference_pool_autodiff, autodiff=True),
    "train_kernel": Operation(_run_train, _reference_train),
    "conv_transpose2d": Operation(_run_transpose, _reference_transpose),
    "conv_transpose2d_vjp": Operation(_run_transpose_vjp, _reference_transpose_vjp),
    "conv_transpose2d_autodiff": Operation(_run_transpose_autodiff, _reference_transpose_vjp, autodiff=True),
}


def _operation(case: Case) -> Operation:
    try:
        return OPERATIONS[case.op]
    except KeyError:
        raise ValueError(f"unknown op {case.op!r}") from None


def run_case(case: Case, backend: cl.Backend) -> List[np.ndarray]:
    """Run one case on ``backend``; the outputs as NumPy arrays."""
    operation, arrays = _operation(case), make_inputs(case)
    if case.dtype == "float64":
        try:
            backend.check_float64()
        except cl.ConvlabError as error:
            raise NotApplicable(str(error)) from None
    if operation.autodiff and not backend.has_autodiff:
        raise NotApplicable(f"{backend.name} has no automatic differentiation")
    tensors = {name: backend.asarray(value, case.dtype) for name, value in arrays.items()}
    with np.errstate(invalid="ignore", over="ignore"):  # NumPy warns where the non-finite cases make NaN on purpose
        outputs = operation.run(backend, tensors, dict(case.kwargs))
    return [np.asarray(backend.to_numpy(y)) if not isinstance(y, np.ndarray) else y for y in _as_tuple(outputs)]


def reference_case(case: Case) -> Outputs:
    """The float64 NumPy reference outputs of a case, and each output's bound (None: the exact tier)."""
    arrays = {name: value.astype(np.float64) for name, value in make_inputs(case).items()}
    integer = all(kind in INTEGER_KINDS or kind.startswith("int-") for _, _, kind, _ in case.inputs)
    absolute = {name: np.abs(value) for name, value in arrays.items()}
    with np.errstate(invalid="ignore", over="ignore"):  # the non-finite cases make NaN on purpose
        return _operation(case).reference(arrays, absolute, dict(case.kwargs), case.dtype, integer)


def pool2d_vjp(X, dY, pool_size, mode="max", stride=1, padding=0, count_include_pad=True):
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
