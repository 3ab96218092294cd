"""The public asserts: one output against the float64 reference, and one function across every backend."""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np

import convlab as cl
from convlab.registry import get_backend
from convlab.testing.bounds import (
    EXACT_LIMIT,
    UNIT_ROUNDOFF,
    C,
    _as_tuple,
    _check_bound,
    _check_exact,
    _f64,
    _integer_valued,
    _max_partial_sum,
    _numpy,
    conv2d_bound,
)


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


def _installed() -> List[str]:
    return [name for name, version in cl.backends().items() if not version.startswith("unavailable")]
