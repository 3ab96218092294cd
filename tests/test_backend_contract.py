"""What every backend does the same way, checked once per backend through the ``backend`` fixture.

Each adapter's own file (tests/backends/test_<name>.py) used to repeat these with its framework's tensors;
here they run on every selected backend: the package (importing convlab or an adapter imports no framework,
registration through the entry point, a backend's tensors select it and come back), the primitives against
the NumPy backend and the float64 oracle, dtype promotion, inputs never modified, the plumbing the core uses,
conv2d_vjp against the framework's own autodiff (``Backend.value_and_grad``), ``train_kernel``, and bad input
raising convlab errors before any framework code runs.

Tensors come from ``backend.asarray`` only, in float32 or float64 (what the core asks of an adapter). The
adapters' files keep framework behaviour: native training loops, jit / compile / tf.function / hybridize,
devices, and the framework's own dtypes and tensor kinds (integer, bfloat16, variables, tracers).
"""

from __future__ import annotations

import os
import subprocess
import sys
import traceback
import warnings

import numpy as np
import pytest
import reference
from adapter_cases import BAD_INPUT, CONV_CASES, CONV_IDS, POOL_CASES, POOL_IDS

import convlab as cl
from convlab import testing

DATA_FORMATS = ["channels_first", "channels_last"]
CONVLAB_DIR = os.path.dirname(cl.__file__)


def integers(shape, low=-3, high=4, seed=0):
    """Integer-valued float32: every backend must agree on them bit for bit."""
    return np.random.default_rng(seed).integers(low, high, size=shape).astype(np.float32)


def normal(shape, dtype="float32", seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype(dtype)


def tensor(backend, array, dtype="float32"):
    """NumPy data as one of the backend's tensors (the only way this file makes a tensor)."""
    return backend.asarray(np.asarray(array, dtype=dtype), dtype)


def to_channels_last(X, K):
    return np.ascontiguousarray(X.transpose(0, 2, 3, 1)), np.ascontiguousarray(K.transpose(2, 3, 1, 0))


def skip_float64_unless(supported, backend, dtype):
    if dtype == "float64" and not supported:
        pytest.skip(f"{backend.name} has float64 turned off")


def explicit_pads(padding, size=None, window=None, stride=None):
    """An int, a pair, explicit pairs or "same" as ((top, bottom), (left, right)), for the oracle."""
    if padding == "same":
        return tuple(reference.same_pads(n, w, s, 1) for n, w, s in zip(size, window, stride))
    if isinstance(padding, int):
        return ((padding, padding), (padding, padding))
    return tuple(p if isinstance(p, tuple) else (p, p) for p in padding)


def pairs(value):
    return tuple(value) if isinstance(value, tuple) else (value, value)


# -- the package: lazy imports, registration, tensors in and out -------------------------------------

LAZY_IMPORT = """
import sys
from importlib import metadata

import numpy as np

import convlab
import {module}

convlab.corr2d(np.ones((3, 3)), np.ones((2, 2)))
classes = [entry.load() for entry in metadata.entry_points(group="convlab.backends")]  # what inference loads
classes.append({module}.{cls})
frameworks = {{m for c in classes for m in c.framework_modules if m != "numpy"}}
loaded = sorted(frameworks & set(sys.modules))
assert not loaded, f"imported {{loaded}}"
convlab.get_backend({name!r}).version()
assert {first!r} in sys.modules, "the framework is imported once the backend is used"
print("ok")
"""


def test_importing_convlab_and_the_adapters_imports_no_framework(backend):
    """``import convlab``, a NumPy call and loading every adapter's class import none of the frameworks named by
    the adapters' ``framework_modules``; the backend's own framework arrives with ``get_backend``."""
    module, cls = type(backend).__module__, type(backend).__qualname__
    code = LAZY_IMPORT.format(module=module, cls=cls, name=backend.name, first=backend.framework_modules[0])
    env = {k: v for k, v in os.environ.items() if k != "CONVLAB_BACKEND"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stdout + done.stderr[-3000:]


def test_registered_through_the_entry_point(backend):
    from importlib import metadata

    cls = type(backend)
    if backend.name == "numpy":
        assert cl.backends()["numpy"] == np.__version__ and backend.package == "convlab"
        return
    (entry,) = [e for e in metadata.entry_points(group="convlab.backends") if e.name == backend.name]
    assert entry.value == f"{cls.__module__}:{cls.__qualname__}" and entry.load() is cls
    framework = sys.modules[backend.framework_modules[0]]
    assert cl.backends()[backend.name] == backend.version() == str(framework.__version__)
    assert backend.package == f"convlab-{backend.name}"
    # framework_modules name where the backend's tensors come from: concrete ones here, traced ones below
    x = tensor(backend, [1.0, 2.0])
    assert type(x).__module__.split(".")[0] in backend.framework_modules
    assert cl.registry.backend_of(x) is backend
    if backend.has_autodiff:
        seen = []

        def loss(params):
            seen.append((type(params[0]).__module__.split(".")[0], backend.is_tensor(params[0])))
            return backend.sum(params[0] * params[0], (0,))

        backend.value_and_grad(loss)([x])
        assert seen and all(root in backend.framework_modules and owned for root, owned in seen), seen


def test_backend_tensors_select_the_backend_and_come_back(backend):
    X = tensor(backend, np.arange(9.0).reshape(3, 3))
    y = cl.corr2d(X, [[0, 1], [2, 3]])
    assert type(y) is type(X) and backend.dtype_name(y) == "float32"
    assert backend.to_numpy(y).tolist() == [[19.0, 25.0], [37.0, 43.0]]
    pooled = cl.pool2d(np.ones((4, 4), np.float32), 2, backend=backend.name)  # NumPy data, an explicit backend
    assert type(pooled) is type(X) and backend.to_numpy(pooled).tolist() == [[1.0] * 3] * 3


# -- conv2d: bit-identical on integers, within the bound on general floats -----------------------------

#: more stride / padding / dilation mixes on one shape (from the MXNet adapter's tests)
MORE_OPTIONS = [
    (1, 0, 1),
    (2, 1, 1),
    ((1, 3), (2, 1), (2, 1)),
    (2, "same", 1),
    (3, "same", 2),
    (1, ((0, 2), (3, 1)), 1),
    ((2, 1), ((1, 0), (0, 1)), (1, 2)),
    (1, "valid", 3),
]
INTEGER_CONV_CASES = CONV_CASES + [((2, 3, 9, 8), (4, 3, 3, 2), s, p, d) for s, p, d in MORE_OPTIONS]
#: sixteen channels and inputs of magnitude 1e3: longer sums, larger errors, the same bound
FLOAT_CONV_CASES = CONV_CASES + [((2, 16, 12, 11), (8, 16, 3, 3), s, p, d) for s, p, d in MORE_OPTIONS]


def conv_ids(cases):
    return [f"x{c[0]}-k{c[1]}-s{c[2]}-p{c[3]}-d{c[4]}" for c in cases]


INTEGER_CONV_IDS, FLOAT_CONV_IDS = conv_ids(INTEGER_CONV_CASES), conv_ids(FLOAT_CONV_CASES)


@pytest.mark.parametrize("x_shape, k_shape, stride, padding, dilation", INTEGER_CONV_CASES, ids=INTEGER_CONV_IDS)
@pytest.mark.parametrize("data_format", DATA_FORMATS)
def test_conv2d_bit_identical_to_numpy_on_integers(backend, x_shape, k_shape, stride, padding, dilation, data_format):
    X, K, bias = integers(x_shape, seed=1), integers(k_shape, seed=2), integers(k_shape[:1], seed=3)
    if data_format == "channels_last":
        X, K = to_channels_last(X, K)
    options = dict(stride=stride, padding=padding, dilation=dilation, data_format=data_format)
    x = tensor(backend, X)
    y = cl.conv2d(x, tensor(backend, K), tensor(backend, bias), **options)
    assert type(y) is type(x) and backend.dtype_name(y) == "float32"
    np.testing.assert_array_equal(backend.to_numpy(y), cl.conv2d(X, K, bias, backend="numpy", **options))


@pytest.mark.parametrize("x_shape, k_shape, stride, padding, dilation", FLOAT_CONV_CASES, ids=FLOAT_CONV_IDS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_conv2d_on_general_floats_within_the_bound(
    backend, supports_float64, x_shape, k_shape, stride, padding, dilation, dtype
):
    skip_float64_unless(supports_float64, backend, dtype)
    scale = 1e3 if x_shape[1] == 16 else 1.0
    X, K = normal(x_shape, dtype, seed=5) * np.asarray(scale, dtype), normal(k_shape, dtype, seed=6)
    options = dict(stride=stride, padding=padding, dilation=dilation)
    y = cl.conv2d(tensor(backend, X, dtype), tensor(backend, K, dtype), **options)
    assert backend.dtype_name(y) == dtype
    assert testing.assert_close_to_reference(y, X, K, exact=False, **options) <= 1.0


# -- pool2d: against NumPy on integers, against the oracle on general floats ---------------------------


def _pool_geometry(X, window, stride, padding, mode, count_include_pad, data_format="channels_first"):
    return cl.geometry.pool_geometry(
        X.shape, window, mode, stride=stride, padding=padding, count_include_pad=count_include_pad,
        data_format=data_format,
    )  # fmt: skip


@pytest.mark.parametrize("window, stride, padding, mode, count_include_pad", POOL_CASES, ids=POOL_IDS)
@pytest.mark.parametrize("data_format", DATA_FORMATS)
def test_pool2d_matches_numpy_on_integers(backend, window, stride, padding, mode, count_include_pad, data_format):
    X = integers((2, 3, 7, 8), -9, 10, seed=4) - 20  # all negative: padding with anything but -inf shows
    if data_format == "channels_last":
        X = np.ascontiguousarray(X.transpose(0, 2, 3, 1))
    options = dict(stride=stride, padding=padding, count_include_pad=count_include_pad, data_format=data_format)
    x = tensor(backend, X)
    y = cl.pool2d(x, window, mode, **options)
    assert type(y) is type(x) and backend.dtype_name(y) == "float32"
    expected = cl.pool2d(X, window, mode, backend="numpy", **options)
    geometry = _pool_geometry(X, window, stride, padding, mode, count_include_pad, data_format)
    area = window[0] * window[1]
    if mode == "max" or (geometry.uniform_divisor and area & (area - 1) == 0):
        np.testing.assert_array_equal(backend.to_numpy(y), expected)  # DESIGN.md section 4: the exact tier
    else:  # integer sums are exact; a division by a count that is not a power of two: within one ULP
        np.testing.assert_allclose(backend.to_numpy(y), expected, rtol=2.0**-23, atol=0)


@pytest.mark.parametrize("window, stride, padding, mode, count_include_pad", POOL_CASES, ids=POOL_IDS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_pool2d_matches_the_oracle(backend, supports_float64, window, stride, padding, mode, count_include_pad, dtype):
    skip_float64_unless(supports_float64, backend, dtype)
    X = normal((1, 2, 7, 8), dtype, seed=7)
    y = cl.pool2d(tensor(backend, X, dtype), window, mode, stride, padding, count_include_pad)
    assert backend.dtype_name(y) == dtype
    strides = pairs(stride)
    pads = explicit_pads(padding, X.shape[2:], window, strides)
    expected = reference.pool2d(X, window, strides, pads, mode, count_include_pad)
    actual = backend.to_numpy(y)
    if mode == "max":
        np.testing.assert_array_equal(actual, expected.astype(dtype))  # a maximum is exact
        return
    # DESIGN.md section 4 (convlab.testing's pooling bound): the window's pixels summed, then one division
    magnitude = reference.pool2d(np.abs(X), window, strides, pads, mode, count_include_pad)
    assert np.all(np.abs(actual - expected) <= testing.pool_bound(magnitude, window[0] * window[1], dtype))


def test_max_pooling_pads_with_minus_infinity_and_average_counts_real_pixels(backend):
    X = tensor(backend, -np.ones((1, 1, 3, 3)))
    for padding in (1, ((0, 2), (1, 0))):
        assert np.all(backend.to_numpy(cl.pool2d(X, 3, "max", padding=padding)) == -1.0)
    flat = tensor(backend, np.ones((4, 4)))
    real = backend.to_numpy(cl.pool2d(flat, 3, "avg", padding=1, count_include_pad=False))
    assert real.tolist() == [[1.0] * 4] * 4
    counted = backend.to_numpy(cl.pool2d(flat, 3, "avg", padding=1, count_include_pad=True))
    assert counted.dtype == np.float32 and counted[1, 1] == 1.0
    np.testing.assert_allclose(counted[[0, 0, 1], [0, 1, 0]], [4 / 9, 6 / 9, 6 / 9], rtol=2.0**-23)


# -- dtypes and conversions ----------------------------------------------------------------------------


def test_float32_and_float64_mix_promotes_to_float64(backend, supports_float64):
    if not supports_float64:
        pytest.skip(f"{backend.name} has float64 turned off")
    X, K = integers((1, 2, 5, 5)), integers((3, 2, 3, 3))
    expected = cl.conv2d(X, K, backend="numpy")
    x32, k64 = tensor(backend, X), tensor(backend, K, "float64")
    for x, k, dtype in [
        (x32, k64, "float64"),
        (x32, K.astype(np.float64), "float64"),  # a float64 NumPy kernel counts too
        (x32, tensor(backend, K), "float32"),
        (tensor(backend, X, "float64"), K.astype(int).tolist(), "float64"),  # Python ints follow the tensor
    ]:
        y = cl.conv2d(x, k)
        assert backend.dtype_name(y) == dtype
        np.testing.assert_array_equal(backend.to_numpy(y), expected.astype(dtype))


def test_numpy_inputs_mixed_with_tensors_are_converted(backend):
    X = tensor(backend, integers((1, 2, 6, 6)))
    flipped = np.flip(integers((3, 2, 3, 3), seed=1), axis=3)  # negative strides, which some frameworks cannot wrap
    read_only = integers((3,), seed=2)
    read_only.setflags(write=False)
    y = cl.conv2d(X, flipped, read_only, padding=1)
    assert type(y) is type(X)
    expected = cl.conv2d(backend.to_numpy(X), flipped, read_only, padding=1, backend="numpy")
    np.testing.assert_array_equal(backend.to_numpy(y), expected)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_inputs_are_never_modified(backend, supports_float64, dtype):
    skip_float64_unless(supports_float64, backend, dtype)
    X, K = integers((1, 2, 6, 6)), integers((2, 2, 3, 3), seed=1)
    bias = np.ones(2, dtype=np.float32)
    tensors = [tensor(backend, a, dtype) for a in (X, K, bias)]
    copies = [backend.to_numpy(t).copy() for t in tensors]
    asymmetric = ((0, 1), (2, 0))
    cl.conv2d(*tensors, padding="same", stride=2)
    cl.conv2d(tensors[0], tensors[1], padding=asymmetric)
    cl.conv2d_vjp(tensors[0], tensors[1], tensor(backend, np.ones((1, 2, 3, 3)), dtype), padding="same", stride=2)
    cl.conv2d_vjp(tensors[0], tensors[1], tensor(backend, np.ones((1, 2, 4, 4)), dtype))
    cl.pool2d(tensors[0], 3, padding=1)
    cl.pool2d(tensors[0], 3, "avg", padding=1)
    cl.pool2d(tensors[0], 3, "avg", padding=asymmetric, count_include_pad=False)
    for t, copy in zip(tensors, copies):
        np.testing.assert_array_equal(backend.to_numpy(t), copy)
    # and plain NumPy inputs to any backend
    originals = (X.copy(), K.copy())
    cl.conv2d(X, K, backend=backend.name, padding=1)
    np.testing.assert_array_equal(X, originals[0])
    np.testing.assert_array_equal(K, originals[1])


def test_hot_path_returns_inputs_untouched(backend, supports_float64):
    """asarray and pad hand back the tensor itself when there is nothing to do: the per-call cost."""
    X = tensor(backend, np.ones((1, 1, 4, 4)))
    assert backend.asarray(X, "float32") is X
    assert backend.pad(X, ((0, 0),) * 4) is X
    padded = backend.pad(X, ((0, 0), (0, 0), (1, 0), (0, 2)), -np.inf)
    assert tuple(padded.shape) == (1, 1, 5, 6) and backend.to_numpy(padded)[0, 0, 0, 0] == -np.inf
    if supports_float64:
        X64 = backend.asarray(X, "float64")
        assert backend.dtype_name(X64) == "float64" and backend.asarray(X64, "float64") is X64
        assert backend.dtype_name(backend.asarray(X64, "float32")) == "float32"


def test_plumbing_primitives_follow_numpy_conventions(backend):
    A = integers((2, 3, 4))
    X = tensor(backend, A)
    pads = ((1, 0), (0, 2), (3, 1))
    np.testing.assert_array_equal(backend.to_numpy(backend.pad(X, pads, 5.0)), np.pad(A, pads, constant_values=5.0))
    nothing = backend.to_numpy(backend.sum(X, ()))  # some frameworks reduce everything over no axes; NumPy nothing
    assert nothing.shape == A.shape and np.array_equal(nothing, A)
    np.testing.assert_array_equal(backend.to_numpy(backend.sum(X, (0, 2))), A.sum(axis=(0, 2)))
    np.testing.assert_array_equal(backend.to_numpy(backend.flip(X, (1, 2))), np.flip(A, (1, 2)))
    np.testing.assert_array_equal(backend.to_numpy(backend.transpose(X, (2, 0, 1))), A.transpose(2, 0, 1))
    np.testing.assert_array_equal(backend.to_numpy(backend.reshape(X, (6, -1))), A.reshape(6, -1))
    assert backend.dtype_name(X) == "float32"


# -- autodiff: Backend.value_and_grad, and conv2d_vjp against it ---------------------------------------


def needs_autodiff(backend):
    if not backend.has_autodiff:
        pytest.skip(f"{backend.name} has no automatic differentiation")


def test_value_and_grad_returns_the_loss_and_the_gradients(backend):
    needs_autodiff(backend)
    params = [tensor(backend, [1.0, 2.0]), tensor(backend, [3.0])]  # (MXNet 1.9 cannot take gradients of 0-d arrays)
    loss, grads = backend.value_and_grad(lambda p: backend.sum(p[0] * p[0] * p[1], (0,)))(params)
    assert float(backend.to_numpy(loss)) == 15.0
    assert backend.to_numpy(grads[0]).tolist() == [6.0, 12.0] and backend.to_numpy(grads[1]).tolist() == [5.0]
    assert backend.to_numpy(params[0]).tolist() == [1.0, 2.0] and backend.to_numpy(params[1]).tolist() == [3.0]


def autodiff_vjp(backend, X, K, bias, dY, options):
    """Gradients of sum(conv2d(X, K, bias) * dY) from the framework's own autodiff."""
    dY = backend.asarray(dY, backend.dtype_name(X))
    axes = tuple(range(len(dY.shape)))
    step = backend.value_and_grad(lambda p: backend.sum(cl.conv2d(p[0], p[1], p[2], **options) * dY, axes))
    return step([X, K, bias])[1]


def vjp_bounds(X, K, dY, options, dtype):
    """DESIGN.md section 4 for the gradients: 2 * n * u * (|.| (*) |.|), from the float64 reference on |inputs|.

    The gradients are bilinear with non-negative coefficients, so the reference vjp of the absolute values is
    exactly the magnitude term; n is each gradient's longest sum: Co*kh*kw products per dX element, N*Ho*Wo
    per dK and dbias element.
    """
    magnitudes = cl.conv2d_vjp(np.abs(X), np.abs(K), np.abs(dY), backend="numpy", **options)
    last = options.get("data_format") == "channels_last"
    out_channels = K.shape[3] if last else K.shape[0]
    per_dX, per_dK = K.size // (K.shape[2] if last else K.shape[1]), dY.size // out_channels
    return list(testing.conv_vjp_bounds([np.asarray(m) for m in magnitudes], (per_dX, per_dK, per_dK), dtype))


#: more strides, paddings and dilations, channels first (from the MXNet adapter's tests)
MORE_VJP_CASES = [
    ((2, 3, 10, 9), (4, 3, 2, 3), s, p, d)
    for s in (1, 2, (3, 1))
    for p in (0, 1, "same", ((0, 2), (1, 0)))
    for d in (1, 2, (1, 3))
]
VJP_CASES = [(*case, f) for case in CONV_CASES for f in DATA_FORMATS] + [
    (*case, "channels_first") for case in MORE_VJP_CASES
]


@pytest.mark.parametrize(
    "x_shape, k_shape, stride, padding, dilation, data_format",
    VJP_CASES,
    ids=[f"{i}-{c[5]}" for i, c in zip(conv_ids(VJP_CASES), VJP_CASES)],
)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_conv2d_vjp_and_autodiff_within_the_bound(
    backend, supports_float64, x_shape, k_shape, stride, padding, dilation, data_format, dtype
):
    needs_autodiff(backend)
    skip_float64_unless(supports_float64, backend, dtype)
    X, K, bias = normal(x_shape, dtype, seed=11), normal(k_shape, dtype, seed=12), normal(k_shape[:1], dtype, seed=13)
    if data_format == "channels_last":
        X, K = to_channels_last(X, K)
    options = dict(stride=stride, padding=padding, dilation=dilation, data_format=data_format)
    dY = normal(cl.output_shape(X, K, **options), dtype, seed=14)
    x, k, b = (tensor(backend, a, dtype) for a in (X, K, bias))
    analytic = cl.conv2d_vjp(x, k, tensor(backend, dY, dtype), **options)
    autodiff = autodiff_vjp(backend, x, k, b, dY, options)
    arrays = [a.astype(np.float64) for a in (X, K, dY)]
    expected = cl.conv2d_vjp(*arrays, backend="numpy", **options)
    bounds = vjp_bounds(*arrays, options, dtype)
    for name, mine, theirs, want, bound in zip(("dX", "dK", "dbias"), analytic, autodiff, expected, bounds):
        assert backend.dtype_name(mine) == backend.dtype_name(theirs) == dtype, name
        assert tuple(mine.shape) == tuple(theirs.shape) == want.shape, name
        reference.assert_within_bound(backend.to_numpy(mine), want, bound, f"conv2d_vjp {name}")
        reference.assert_within_bound(backend.to_numpy(theirs), want, bound, f"{backend.name} autodiff {name}")


@pytest.mark.parametrize("x_shape, k_shape, stride, padding, dilation", CONV_CASES, ids=CONV_IDS)
@pytest.mark.parametrize("data_format", DATA_FORMATS)
def test_conv2d_vjp_equals_autodiff_exactly_on_integers(
    backend, x_shape, k_shape, stride, padding, dilation, data_format
):
    needs_autodiff(backend)
    X, K, bias = integers(x_shape, seed=1), integers(k_shape, seed=2), integers(k_shape[:1], seed=3)
    if data_format == "channels_last":
        X, K = to_channels_last(X, K)
    options = dict(stride=stride, padding=padding, dilation=dilation, data_format=data_format)
    dY = integers(cl.output_shape(X, K, **options), seed=4)
    x, k, b = (tensor(backend, a) for a in (X, K, bias))
    analytic = cl.conv2d_vjp(x, k, tensor(backend, dY), **options)
    autodiff = autodiff_vjp(backend, x, k, b, dY, options)
    channels = (0, 1, 2) if data_format == "channels_last" else (0, 2, 3)
    for name, mine, theirs in zip(("dX", "dK", "dbias"), analytic, autodiff):
        np.testing.assert_array_equal(backend.to_numpy(mine), backend.to_numpy(theirs), err_msg=name)
    np.testing.assert_array_equal(backend.to_numpy(analytic[2]), dY.sum(axis=channels))


# -- train_kernel ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("bias", [False, True])
def test_train_kernel_autodiff_and_analytic_agree_and_match_numpy(backend, bias):
    X = cl.images.stripes()
    Y = cl.corr2d(X, cl.kernels.edge(), backend="numpy")
    numpy_run = cl.train_kernel(X, Y, epochs=10, seed=0, bias=bias, backend="numpy")
    x = tensor(backend, X)
    runs = {
        gradient: cl.train_kernel(x, tensor(backend, Y), epochs=10, seed=0, bias=bias, gradient=gradient)
        for gradient in ("autodiff", "analytic")
    }
    tolerance = 8 * 2.0**-24 * np.arange(1, 11) * np.abs(numpy_run.losses) + 1e-6  # a few ULP per epoch
    for gradient, run in runs.items():
        assert run.backend == backend.name
        assert run.gradient == (gradient if backend.has_autodiff else "analytic")
        assert type(run.kernel) is type(x) and backend.dtype_name(run.kernel) == "float32"
        losses = np.asarray(run.losses)
        assert np.all(np.abs(losses - numpy_run.losses) <= tolerance), (gradient, run.losses, numpy_run.losses)
        np.testing.assert_allclose(backend.to_numpy(run.kernel), numpy_run.kernel, rtol=1e-5, atol=1e-6)
        if not bias:  # (lr 3e-2 is too large for the bias: that run diverges, on NumPy as everywhere)
            assert losses[-1] < losses[0]
            assert abs(losses[-1] - 12.08) > 1.0  # the notebook's loop stepped once outside its loop
    kernels = [backend.to_numpy(run.kernel) for run in runs.values()]
    np.testing.assert_allclose(kernels[0], kernels[1], rtol=1e-5, atol=1e-6)


def test_train_kernel_in_float64(backend, supports_float64):
    if not supports_float64:
        pytest.skip(f"{backend.name} has float64 turned off")
    X = tensor(backend, cl.images.stripes(), "float64")
    Y = cl.corr2d(X, cl.kernels.edge())
    result = cl.train_kernel(X, Y, epochs=30, lr=3e-2)
    assert backend.dtype_name(result.kernel) == "float64"
    assert result.losses[-1] < 1e-2 * result.losses[0]


@pytest.mark.parametrize("gradient", ["autodiff", "analytic"])
def test_train_kernel_with_bias_in_float64_on_a_batch_matches_numpy(backend, supports_float64, gradient):
    if not supports_float64:
        pytest.skip(f"{backend.name} has float64 turned off")
    X = normal((2, 1, 6, 8), "float64", seed=3)
    Y = cl.conv2d(X, np.array([[[[1.0, -1.0]]]]), np.array([0.5]), backend="numpy")
    run = cl.train_kernel(tensor(backend, X, "float64"), tensor(backend, Y, "float64"), epochs=6, bias=True, seed=1,
                          gradient=gradient)  # fmt: skip
    numpy_run = cl.train_kernel(X, Y, epochs=6, bias=True, seed=1, backend="numpy")
    assert backend.dtype_name(run.kernel) == backend.dtype_name(run.bias) == "float64"
    np.testing.assert_allclose(run.losses, numpy_run.losses, rtol=1e-12)


# -- bad input: convlab errors, raised before any framework code ---------------------------------------


def _framework_dirs(backend):
    if backend.name == "numpy":
        return ()  # convlab's own dependency: its frames may sit below any call
    modules = [sys.modules.get(name) for name in backend.framework_modules]
    return tuple(os.path.dirname(m.__file__) + os.sep for m in modules if getattr(m, "__file__", None))


def assert_raised_by_convlab(backend, raised):
    """Only convlab raised: its own code is the innermost frame, no framework frame ran after convlab was
    entered, and no framework error is chained behind it."""
    assert isinstance(raised.value, cl.ConvlabError)
    paths = [frame.filename for frame in traceback.extract_tb(raised.tb)]
    assert paths[-1].startswith(CONVLAB_DIR + os.sep), paths[-1]
    first = next(i for i, path in enumerate(paths) if path.startswith(CONVLAB_DIR + os.sep))
    dirs = _framework_dirs(backend)
    inside = [path for path in paths[first:] if dirs and path.startswith(dirs)]
    assert not inside, f"framework frames after convlab was entered: {inside}"
    context = raised.value.__context__
    while context is not None:
        assert type(context).__module__.split(".")[0] not in backend.framework_modules or backend.name == "numpy"
        context = context.__context__


@pytest.mark.parametrize("what, call, shapes, kind, fragment", BAD_INPUT, ids=[case[0] for case in BAD_INPUT])
def test_bad_input_raises_a_convlab_error_before_any_framework_code(backend, what, call, shapes, kind, fragment):
    with pytest.raises(kind, match=fragment) as raised:
        call(*(tensor(backend, np.ones(shape)) for shape in shapes))
    assert_raised_by_convlab(backend, raised)


def test_tensors_given_to_another_backend_are_a_convlab_error(backend):
    if backend.name == "numpy":
        pytest.skip("NumPy arrays are backend-neutral: any backend takes them")
    with pytest.raises(cl.ConvlabTypeError, match=f"X is a {backend.name} tensor") as raised:
        cl.corr2d(tensor(backend, np.ones((3, 3))), tensor(backend, np.ones((2, 2))), backend="numpy")
    assert_raised_by_convlab(backend, raised)


def test_conv2d_layer_refuses_bad_input_with_a_convlab_error(backend):
    layer = cl.Conv2D(3, 2, backend=backend.name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a framework's warnings about its layer, not convlab's error
        with pytest.raises(cl.ConvlabValueError, match="input channels") as raised:
            layer(tensor(backend, np.ones((1, 3, 5, 5))))
    assert_raised_by_convlab(backend, raised)
