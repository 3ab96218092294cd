"""Non-finite values (DESIGN.md section 3) on every backend and every algorithm, forward and gradients.

Max pooling propagates NaN like ``np.max`` and gives -inf for a window of -inf only; infinities follow IEEE
arithmetic (``inf - inf`` and ``0 * inf`` are NaN); an average over a window holding NaN is NaN. The gradient
of max pooling goes where ``np.argmax`` points among the window's real pixels: its first NaN, else its first
maximum, never the padding. The canonical cases of the "non-finite values" group run here too (and in
``convlab compare``).
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

import convlab as cl
from convlab import algorithms, autotune, testing

NAN, INF = np.nan, np.inf
CONV_ALGORITHMS = [a for a in algorithms.CONV_ALGORITHMS if a != "auto"] + ["auto"]
POOL_ALGORITHMS = [a for a in algorithms.POOL_ALGORITHMS if a != "auto"] + ["auto"]
DTYPES = ["float32", "float64"]

#: 2x2 windows (stride 2) side by side in one row of a (1, 1, 2, 16) input, and what each must give
WINDOWS = {
    "nan first": ([[NAN, 1], [2, 3]], NAN, NAN, 0),
    "nan last": ([[1, 2], [3, NAN]], NAN, NAN, 3),
    "two nan": ([[1, NAN], [NAN, 2]], NAN, NAN, 1),
    "inf then nan": ([[INF, NAN], [1, 2]], NAN, NAN, 1),
    "only -inf": ([[-INF, -INF], [-INF, -INF]], -INF, -INF, 0),
    "inf and -inf": ([[INF, -INF], [1, 2]], INF, NAN, 0),
    "-inf and a number": ([[-INF, -INF], [-INF, -3]], -3.0, -INF, 3),
    "tie": ([[3, 1], [3, 2]], 3.0, 2.25, 0),
}


def _run(backend, dtype):
    if dtype == "float64":
        try:
            backend.check_float64()
        except cl.ConvlabError as error:
            pytest.skip(str(error))


def _windows_input():
    X = np.zeros((1, 1, 2, 2 * len(WINDOWS)))
    for w, (values, *_rest) in enumerate(WINDOWS.values()):
        X[0, 0, :, 2 * w : 2 * w + 2] = values
    return X


def _same(actual, expected):
    """Equal, NaN where NaN is expected, each infinity with its sign."""
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    return actual.shape == expected.shape and bool(np.array_equal(actual, expected, equal_nan=True))


# -- forward ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("algorithm", POOL_ALGORITHMS)
@pytest.mark.parametrize("mode", ["max", "avg"])
def test_pooling_windows(backend, algorithm, mode, dtype):
    _run(backend, dtype)
    y = cl.pool2d(backend.asarray(_windows_input(), dtype), 2, mode, stride=2, algorithm=algorithm, backend=backend)
    got = dict(zip(WINDOWS, backend.to_numpy(y)[0, 0, 0].tolist()))
    expected = {name: (case[1] if mode == "max" else case[2]) for name, case in WINDOWS.items()}
    assert all(_same(got[name], expected[name]) for name in WINDOWS), (got, expected)


@pytest.mark.parametrize("algorithm", POOL_ALGORITHMS)
@pytest.mark.parametrize("data_format", ["channels_first", "channels_last"])
@pytest.mark.parametrize("window, padding", [(2, 0), ((2, 3), 1)])
def test_max_pool_of_windows_that_do_not_overlap_on_a_large_input(backend, algorithm, data_format, window, padding):
    """Windows as large as the stride, NaN every 37 pixels: XLA turns such a reduce_window into a vectorised reduce
    that drops NaN from about 4096 elements (JAX 0.10.2 on the CPU); convlab's answer stays np.max's."""
    X = np.random.default_rng(0).normal(size=(2, 4, 32, 48))
    X.reshape(-1)[::37] = NAN
    x = X if data_format == "channels_first" else X.transpose(0, 2, 3, 1)
    options = dict(stride=window, padding=padding, data_format=data_format)
    y = cl.pool2d(backend.asarray(x, "float32"), window, "max", algorithm=algorithm, backend=backend, **options)
    assert _same(backend.to_numpy(y), cl.pool2d(x.astype(np.float32), window, "max", backend="numpy", **options))


@pytest.mark.parametrize("algorithm", POOL_ALGORITHMS)
@pytest.mark.parametrize("data_format", ["channels_first", "channels_last"])
@pytest.mark.parametrize("padding", [1, "same", ((1, 0), (2, 1))])
def test_max_pool_of_only_minus_infinity_is_minus_infinity(backend, algorithm, data_format, padding):
    """Padded windows whose real pixels are all -inf: -inf, not the lowest finite number (TF's, MXNet's floor)."""
    X = np.full((1, 2, 3, 3), -INF)
    X[0, 1, 2, 2] = 5.0
    x = X if data_format == "channels_first" else X.transpose(0, 2, 3, 1)
    options = dict(stride=1, padding=padding, data_format=data_format, algorithm=algorithm, backend=backend)
    y = backend.to_numpy(cl.pool2d(backend.asarray(x, "float32"), 3, "max", **options))
    expected = cl.pool2d(x, 3, "max", stride=1, padding=padding, data_format=data_format, backend="numpy")
    assert _same(y, expected) and np.isneginf(y).any()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("algorithm", CONV_ALGORITHMS)
def test_conv_follows_ieee_arithmetic(backend, algorithm, dtype):
    """One +inf pixel times positive, negative and zero taps gives +inf, -inf, NaN; +inf and -inf meet as NaN;
    a NaN the dilated kernel skips leaves the output finite."""
    _run(backend, dtype)
    X = np.zeros((1, 1, 5, 5))
    X[0, 0, 2, 2] = INF
    K = np.zeros((4, 1, 3, 3))
    K[0, 0, 1, 1], K[1, 0, 1, 1], K[2, 0, 1, 1], K[3, 0] = 2.0, -2.0, 0.0, 1.0
    y = backend.to_numpy(cl.conv2d(backend.asarray(X, dtype), backend.asarray(K, dtype), algorithm=algorithm))
    assert _same(y[0, :, 1, 1], [INF, -INF, NAN, INF])
    X[0, 0, 2, 3] = -INF  # +inf and -inf in the windows of output columns 1 and 2
    y = backend.to_numpy(cl.conv2d(backend.asarray(X, dtype), backend.asarray(K[3:], dtype), algorithm=algorithm))
    assert _same(y[0, 0], [[INF, NAN, NAN]] * 3)
    X = np.ones((1, 1, 5, 5))
    X[0, 0, 1, 1] = NAN  # read by output (1, 1) only; the others' dilated windows step over it
    y = cl.conv2d(
        backend.asarray(X, dtype), backend.asarray(np.ones((1, 1, 2, 2)), dtype), dilation=2, algorithm=algorithm
    )
    assert _same(backend.to_numpy(y)[0, 0], [[4, 4, 4], [4, NAN, 4], [4, 4, 4]])


@pytest.mark.parametrize("mode", ["max", "avg"])
def test_layers(backend, mode):
    layer = (cl.MaxPool2D if mode == "max" else cl.AvgPool2D)(2, backend=backend.name)
    y = backend.to_numpy(layer(backend.asarray(_windows_input(), "float32")))
    expected = [case[1] if mode == "max" else case[2] for case in WINDOWS.values()]
    assert _same(y[0, 0, 0], expected)


def test_traced(backend):
    """Under tf.function (tf.cond picks the repair) and jax.jit (the derivative's lax.cond) the rule holds too;
    a hybridized Gluon layer repairs its forward pass (its gradient skips the repaired windows: see README)."""
    X = _windows_input()
    expected = [case[1] for case in WINDOWS.values()]
    if backend.name == "tensorflow":
        import tensorflow as tf

        @tf.function
        def pool_and_grad(x):
            with tf.GradientTape() as tape:
                tape.watch(x)
                y = cl.pool2d(x, 2, stride=2)
            return y, tape.gradient(y, x)

        y, grad = (t.numpy() for t in pool_and_grad(tf.constant(X, tf.float32)))
    elif backend.name == "jax":
        import jax

        y = jax.jit(lambda x: cl.pool2d(x, 2, stride=2))(backend.asarray(X, "float32"))
        grad = jax.jit(jax.grad(lambda x: cl.pool2d(x, 2, stride=2).sum()))(backend.asarray(X, "float32"))
        y, grad = np.asarray(y), np.asarray(grad)
    elif backend.name == "mxnet":
        import mxnet as mx

        layer = cl.MaxPool2D(2, backend="mxnet")
        layer.hybridize()
        x = mx.np.array(X, dtype="float32")
        x.attach_grad()
        with mx.autograd.record():
            y = layer(x)
        y.backward()
        y, grad = y.asnumpy(), x.grad.asnumpy()
    else:
        pytest.skip(f"{backend.name}: nothing traced")
    assert _same(y[0, 0, 0], expected)
    for w, case in enumerate(WINDOWS.values()):
        if backend.name == "mxnet" and (np.isnan(case[1]) or case[1] == -INF):
            continue  # the hybridized graph's gradient skips the windows it repaired
        assert grad[0, 0, :, 2 * w : 2 * w + 2].ravel()[case[3]] == 1.0, case


def test_autotuned_choice_follows_the_rule(backend, tmp_path, monkeypatch):
    monkeypatch.setenv("CONVLAB_AUTOTUNE_CACHE", str(tmp_path / "autotune.json"))
    autotune.clear_autotune()
    cl.set_autotune(True)
    try:
        X = np.tile(_windows_input(), (2, 3, 20, 4))
        y = cl.pool2d(backend.asarray(X, "float32"), 2, "max", stride=2, backend=backend)
        assert _same(backend.to_numpy(y), cl.pool2d(X, 2, "max", stride=2, backend="numpy"))
        K = np.ones((2, 3, 3, 3))
        y = cl.conv2d(backend.asarray(X, "float32"), backend.asarray(K, "float32"), padding=1, backend=backend)
        reference = cl.conv2d(X, K, padding=1, backend="numpy")
        assert testing._check_nonfinite(backend.to_numpy(y), reference, "conv2d").any()
        assert json.loads((tmp_path / "autotune.json").read_text())["winners"]
    finally:
        cl.set_autotune(None)
        autotune.clear_autotune()


# -- gradients -------------------------------------------------------------------------------------


def _grad(backend, fn, *arrays, dtype="float32"):
    if not backend.has_autodiff:
        pytest.skip(f"{backend.name} has no automatic differentiation")
    _, grads = backend.value_and_grad(lambda p: backend.sum(fn(*p), (0, 1, 2, 3)))(
        [backend.asarray(a, dtype) for a in arrays]
    )
    return [backend.to_numpy(g) for g in grads]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("algorithm", POOL_ALGORITHMS)
def test_max_pool_gradient_goes_where_argmax_points(backend, algorithm, dtype):
    _run(backend, dtype)
    (grad,) = _grad(backend, lambda x: cl.pool2d(x, 2, stride=2, algorithm=algorithm), _windows_input(), dtype=dtype)
    for w, (name, case) in enumerate(WINDOWS.items()):
        expected = np.zeros(4)
        expected[case[3]] = 1.0
        assert _same(grad[0, 0, :, 2 * w : 2 * w + 2].ravel(), expected), name


@pytest.mark.parametrize("algorithm", POOL_ALGORITHMS)
@pytest.mark.parametrize("padding", [1, ((1, 0), (1, 0)), ((2, 1), (0, 2))])
def test_max_pool_gradient_of_padded_windows_reaches_a_real_pixel(backend, algorithm, padding):
    """Windows of -inf only next to the padding (torch's native padding, or padding by hand): their gradient goes
    to their first real pixel, so every window's gradient lands on the input."""
    X = np.full((1, 1, 3, 4), -INF)
    X[0, 0, 2, 3] = NAN
    X[0, 0, 0, 3] = 1.0
    options = dict(stride=1, padding=padding, algorithm=algorithm)
    (grad,) = _grad(backend, lambda x: cl.pool2d(x, 3, **options), X)
    expected, _, _ = testing._pool2d_vjp_reference(X, np.ones(cl.pool2d(X, 3, **options).shape), 3, "max", 1, padding)
    assert _same(grad, expected)
    assert grad.sum() == cl.pool2d(X, 3, **options).size


@pytest.mark.parametrize("algorithm", POOL_ALGORITHMS)
def test_avg_pool_gradient_is_the_share_whatever_the_values(backend, algorithm):
    (grad,) = _grad(backend, lambda x: cl.pool2d(x, 2, "avg", stride=2, algorithm=algorithm), _windows_input())
    assert _same(grad, np.full(grad.shape, 0.25))


@pytest.mark.parametrize("algorithm", CONV_ALGORITHMS)
def test_conv_gradient(backend, algorithm):
    """dX does not depend on X; dK is NaN exactly for the taps whose pixels include the NaN."""
    X = np.ones((1, 1, 4, 4))
    X[0, 0, 0, 0] = NAN
    K, dY = np.ones((1, 1, 2, 2)), np.ones((1, 1, 3, 3))
    dX, dK = _grad(backend, lambda x, k: cl.conv2d(x, k, algorithm=algorithm), X, K)
    expected = cl.conv2d_vjp(X, K, dY, backend="numpy")
    assert _same(dX, expected[0]) and np.isfinite(dX).all()
    assert _same(dK, expected[1]) and _same(dK[0, 0], [[NAN, 9], [9, 9]])


# -- the canonical cases ----------------------------------------------------------------------------

GROUP = [case for case in testing.CASES if case.group == "non-finite values"]


def test_the_group_covers_the_rule():
    ops = {case.op for case in GROUP}
    assert ops == {"conv2d", "pool2d", "pool2d_autodiff", "conv2d_vjp", "conv2d_autodiff"} | {
        "conv_transpose2d",
        "conv_transpose2d_vjp",
    }
    kwargs = [dict(case.kwargs) for case in GROUP if case.op == "pool2d"]
    assert {k["mode"] for k in kwargs} == {"max", "avg"} and {k.get("count_include_pad") for k in kwargs} >= {False}
    assert {case.dtype for case in GROUP} == {"float32", "float64"}
    assert {k.get("algorithm", "native") for k in kwargs} == {"native", "shift", "layout"}
    for case in GROUP:
        X = testing.make_inputs(case)["X"]
        assert np.isnan(X).any() and np.isposinf(X).any() and np.isneginf(X).any(), case.id


def test_nonfinite_cases(backend):
    results = testing.run_cases(backend.name, GROUP)
    assert results.errors == {}
    report = testing.compare([results], GROUP)
    assert report["problems"] == []
    assert report["table"]["non-finite values"][backend.name] not in ("n/a", "MISSING", "VIOLATION")


# -- the rule's helpers and the comparison (NumPy only) ---------------------------------------------


def test_judge_compares_masks_first_then_the_bound():
    case = next(c for c in GROUP if c.op == "pool2d" and dict(c.kwargs)["mode"] == "avg" and "normal" in c.id)
    reference, bounds = testing.reference_case(case)
    assert bounds[0] is not None and np.isnan(reference[0]).any() and np.isinf(reference[0]).any()
    assert testing.judge(case, [reference[0].astype(case.dtype)], reference, bounds).status in ("exact", "bound")
    for position, value in ((np.isnan, 0.0), (np.isposinf, -INF), (np.isneginf, INF), (np.isfinite, NAN)):
        broken = reference[0].copy()
        broken[tuple(np.argwhere(position(broken))[0])] = value
        assert testing.judge(case, [broken], reference, bounds).status == "violation"
        assert testing.judge_pair(case, [broken], [reference[0]], bounds).status == "violation"
    nudged = reference[0].copy()
    finite = np.isfinite(nudged)
    nudged[finite] += 1e3 * np.where(bounds[0][finite] > 0, bounds[0][finite], 1.0)
    assert testing.judge(case, [nudged], reference, bounds).status == "violation"


def test_helpers_on_numpy():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for values, clean, finite in (
            ([1.0, 2.0], True, True),
            ([1.0, INF], True, False),
            ([1.0, NAN], False, False),
            ([-INF, 2.0], False, False),
            ([INF, -INF], False, False),
            ([3e38, 3e38], True, False),  # float32 overflow: +inf, still free of NaN and -inf
        ):
            total = np.sum(np.asarray(values, np.float32))
            assert bool(algorithms.free_of_nan_and_negative_inf(total)) is clean, values
            assert bool(algorithms.free_of_nan_and_inf(total)) is finite, values
    code = algorithms.nonfinite_code(np, np.array([NAN, -INF, 0.0, INF]))
    assert code.tolist() == [3.0, 1.0, 2.0, 2.0]
    classes = np.array([3.0, 1.0, 2.0])
    assert _same(algorithms.repair_max_pool(np, np.array([5.0, -3e38, 7.0]), classes), [NAN, -INF, 7.0])
    to_x, to_code = algorithms.split_max_pool_cotangent(np, classes, np.array([1.0, 2.0, 3.0]))
    assert to_x.tolist() == [0.0, 0.0, 3.0] and to_code.tolist() == [1.0, 2.0, 0.0]


def test_bundles_from_before_the_group_are_stale(tmp_path):
    old = [case for case in testing.CASES if case.group != "non-finite values"]
    assert testing.fingerprint(old) != testing.fingerprint()
    assert testing.CASES_VERSION >= 2
