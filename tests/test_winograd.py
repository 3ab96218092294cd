"""convlab.winograd: F(2x2, 3x3) and F(4x4, 3x3) on every backend and in every spelling.

What is asserted, and why (numbers in benchmarks/WINOGRAD.md):

* every output is within ``winograd.error_bound`` of the float64 reference: the section 4 rule of
  DESIGN.md with the magnitudes Winograd sums, a bound it satisfies on every input;
* the section 4 rule itself holds on typical inputs with enough channels, and fails on constructed ones
  (large pixels next to an output whose own products are small): both are pinned here;
* F(2x2, 3x3) is bit-identical on integer inputs (its transforms hold only 0, +-1 and 1/2), F(4x4, 3x3) is not;
* gradients through each framework's autodiff are within the same kind of bound of the float64 closed
  form, and of the native op's gradients; F(2x2) gradients of integer inputs are exact.
"""

from __future__ import annotations

import numpy as np
import pytest
import reference

import convlab as cl
import convlab.testing  # noqa: F401  (cl.testing)
from convlab import winograd
from convlab.geometry import conv_geometry

U = {"float32": 2.0**-24, "float64": 2.0**-53}

GEOMETRIES = [
    # (X shape NCHW, Co, padding)
    ((2, 3, 9, 11), 4, 1),
    ((1, 2, 5, 5), 3, 0),
    ((2, 3, 8, 6), 5, "same"),
    ((1, 1, 6, 11), 2, ((2, 0), (1, 3))),
    ((3, 4, 3, 3), 2, 0),  # one output pixel: a single, mostly cropped tile
    ((1, 16, 10, 7), 6, ((0, 3), (2, 1))),
]


def _spellings(backend):
    """name -> run(x, k, bias, geometry, tile) for this backend: the seam formulation and its own spelling."""
    out = {"seam": lambda x, k, b, g, t: winograd.conv2d_winograd(backend, x, k, b, g, t)}
    if backend.name == "numpy":
        out["numpy_winograd"] = winograd.numpy_winograd
    elif backend.name == "torch":
        out["torch_winograd"] = winograd.torch_winograd
    elif backend.name == "jax":
        out["jax_winograd"] = lambda x, k, b, g, t: winograd.jax_winograd(g, t)(x, k, b)
    elif backend.name == "tensorflow":
        out["tensorflow_winograd"] = lambda x, k, b, g, t: winograd.tensorflow_winograd(g, t)(x, k, b)
    elif backend.name == "mxnet":
        out["mxnet_winograd"] = winograd.mxnet_winograd
    return out


def _layout(x, k, channels_last):
    return (x.transpose(0, 2, 3, 1), k.transpose(2, 3, 1, 0)) if channels_last else (x, k)


def _run(backend, run, X, K, b, padding, channels_last, tile, dtype="float32"):
    """Run one spelling on NCHW/OIHW NumPy inputs in either layout; the result as NCHW float64 NumPy."""
    x, k = _layout(X, K, channels_last)
    fmt = "channels_last" if channels_last else "channels_first"
    g = conv_geometry(x.shape, k.shape, None if b is None else b.shape, padding=padding, data_format=fmt)
    tensors = [None if a is None else backend.asarray(a, dtype) for a in (x, k, b)]
    y = np.asarray(backend.to_numpy(run(*tensors, g, tile)), dtype=np.float64)
    assert backend.dtype_name(run(*tensors, g, tile)) == dtype
    return y.transpose(0, 3, 1, 2) if channels_last else y


def _bias_rounding(expected, b, dtype):
    """The bias add is one more rounding of the result."""
    return 0.0 if b is None else 2 * U[dtype] * (np.abs(expected) + np.abs(b).reshape(1, -1, 1, 1))


# -- transforms and errors --------------------------------------------------------------------------------


@pytest.mark.parametrize("tile, points", [(2, None), (4, None), (6, None), (2, (0, 1, -1)), (4, (0, 1, -1, 2, -2)),
                                          (4, (0, 1, -1, 0.5, -0.5))])  # fmt: skip
def test_transforms_are_a_correlation(tile, points):
    at, g, bt = winograd.transforms(tile, points)
    assert at.shape == (tile, tile + 2) and g.shape == (tile + 2, 3) and bt.shape == (tile + 2, tile + 2)
    for d, k in zip(np.eye(tile + 2), np.random.default_rng(0).normal(size=(tile + 2, 3))):
        y = at @ ((g @ k) * (bt @ d))  # the response to each unit input: the kernel, reversed and shifted
        np.testing.assert_allclose(y, [d[i : i + 3] @ k for i in range(tile)], atol=1e-14)
    assert np.all(bt * 4 == np.round(bt * 4)), "B^T holds only integers and halves"


def test_lavin_matrices():
    at, g, bt = winograd.transforms(2)
    assert at.tolist() == [[1, 1, 1, 0], [0, 1, -1, -1]]
    assert g.tolist() == [[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]]
    at, g, bt = winograd.transforms(4)
    assert bt[0].tolist() == [4, 0, -5, 0, 1, 0] and at[3].tolist() == [0, 1, -1, 8, -8, 1]


@pytest.mark.parametrize(
    "k_shape, stride, dilation, supported",
    [((4, 3, 3, 3), 1, 1, True), ((4, 3, 5, 5), 1, 1, False), ((4, 3, 3, 2), 1, 1, False),
     ((4, 3, 3, 3), 2, 1, False), ((4, 3, 3, 3), (1, 2), 1, False), ((4, 3, 3, 3), 1, 2, False)],
)  # fmt: skip
def test_unsupported_geometry_is_a_clear_error(k_shape, stride, dilation, supported):
    g = conv_geometry((1, 3, 12, 12), k_shape, stride=stride, dilation=dilation, padding=1)
    assert winograd.supports_winograd(g) is supported
    be = cl.get_backend("numpy")
    x, k = np.zeros(g.x4, np.float32), np.zeros(g.k4, np.float32)
    if supported:
        assert winograd.conv2d_winograd(be, x, k, None, g).shape == g.out4
        return
    for call in (
        lambda: winograd.check_winograd(g),
        lambda: winograd.conv2d_winograd(be, x, k, None, g),
        lambda: winograd.numpy_winograd(x, k, None, g),
        lambda: winograd.winograd_kernel(be, k, g),
    ):
        with pytest.raises(
            cl.ConvlabValueError, match=r'algorithm="winograd" computes 3x3 kernels.*K of shape'
        ) as info:
            call()
        assert (
            str(g.stride) in str(info.value)
            and str(g.dilation) in str(info.value)
            and "(1, 3, 12, 12)" in str(info.value)
        )


@pytest.mark.parametrize("tile", [6, 3, 0, True, "4"])
def test_tiles_not_offered_are_errors(tile):
    g = conv_geometry((1, 1, 8, 8), (1, 1, 3, 3))
    with pytest.raises(cl.ConvlabValueError, match="tile must be one of"):
        winograd.check_winograd(g, tile)


def test_choose_tile():
    assert winograd.choose_tile(conv_geometry((1, 3, 8, 8), (4, 3, 3, 3))) == 2
    assert winograd.choose_tile(conv_geometry((1, 64, 8, 8), (4, 64, 3, 3))) == 4
    assert winograd.check_winograd(conv_geometry((1, 8, 8, 8), (3, 3, 8, 8), data_format="channels_last")) == 2


def test_the_kernel_transform_can_be_reused():
    be, rng = cl.get_backend("numpy"), np.random.default_rng(1)
    X, K = rng.normal(size=(2, 5, 9, 9)).astype(np.float32), rng.normal(size=(3, 5, 3, 3)).astype(np.float32)
    g = conv_geometry(X.shape, K.shape, padding=1)
    u = winograd.winograd_kernel(be, K, g, 4)
    assert u.shape == (36, 5, 3)
    np.testing.assert_array_equal(
        winograd.conv2d_winograd_transformed(be, X, u, None, g, 4), winograd.conv2d_winograd(be, X, K, None, g, 4)
    )


# -- forward: every backend, every spelling ---------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("tile", [2, 4])  # tile=None (choose_tile): test_section4_bound_on_typical_inputs
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("x_shape, out_channels, padding", GEOMETRIES)
def test_within_the_winograd_bound(backend, supports_float64, x_shape, out_channels, padding, channels_last, tile,
                                   dtype):  # fmt: skip
    if dtype == "float64" and not supports_float64:
        pytest.skip("float64 not enabled on this backend")
    rng = np.random.default_rng(2)
    X, K = rng.normal(size=x_shape), rng.normal(size=(out_channels, x_shape[1], 3, 3))
    b = rng.normal(size=out_channels) if x_shape[0] != 1 else None
    X, K, b = (None if a is None else a.astype(dtype) for a in (X, K, b))
    g = conv_geometry(X.shape, K.shape, padding=padding)
    expected = reference.conv2d(X, K, b, (1, 1), g.pads)
    bound = winograd.error_bound(X, K, g, tile, dtype=dtype) + _bias_rounding(expected, b, dtype)
    for name, run in _spellings(backend).items():
        y = _run(backend, run, X, K, b, padding, channels_last, tile, dtype)
        reference.assert_within_bound(y, expected, bound, f"{backend.name} {name} F({tile}) {dtype}")


@pytest.mark.parametrize("block_bytes", [3000, 40_000, 10**9])
def test_blocked_spellings_any_block_size(backend, monkeypatch, block_bytes):
    """numpy_winograd / torch_winograd split the work into blocks of tile rows or images, the last one short."""
    name = {"numpy": "numpy_winograd", "torch": "torch_winograd"}.get(backend.name)
    if name is None:
        pytest.skip("no blocked spelling on this backend")
    monkeypatch.setattr(winograd, "BLOCK_BYTES", block_bytes)
    rng = np.random.default_rng(9)
    X, K, b = rng.normal(size=(3, 5, 23, 13)), rng.normal(size=(4, 5, 3, 3)), rng.normal(size=4)
    X, K, b = (a.astype(np.float32) for a in (X, K, b))
    g = conv_geometry(X.shape, K.shape, padding=((2, 1), (0, 1)))
    expected = reference.conv2d(X, K, b, (1, 1), g.pads)
    for tile in winograd.TILES:
        for channels_last in (False, True):
            y = _run(backend, _spellings(backend)[name], X, K, b, g.pads, channels_last, tile)
            bound = winograd.error_bound(X, K, g, tile) + _bias_rounding(expected, b, "float32")
            reference.assert_within_bound(y, expected, bound, f"{name} F({tile}) blocks of {block_bytes} bytes")


def test_error_bound_is_at_least_the_section4_magnitude():
    rng = np.random.default_rng(3)
    X, K = rng.normal(size=(1, 3, 8, 8)), rng.normal(size=(2, 3, 3, 3))
    g = conv_geometry(X.shape, K.shape, padding=1)
    section4 = reference.conv2d_bound(X, K, pads=g.pads)
    for tile in winograd.TILES:
        assert np.all(winograd.error_bound(X, K, g, tile) >= section4)


@pytest.mark.parametrize(
    "tile, channels, scale", [(2, 4, 1.0), (2, 16, 1e-4), (2, 64, 1e4), (4, 64, 1.0), (4, 64, 1e4), (None, 64, 1.0)]
)
def test_section4_bound_on_typical_inputs(backend, tile, channels, scale):
    """Random inputs with enough channels stay within DESIGN.md's own rule (winograd_accuracy.py: F(2x2) from
    C = 2, F(4x4) from C = 8 on non-constructed inputs, except high-dynamic-range images)."""
    rng = np.random.default_rng(4)
    X = (rng.normal(size=(2, channels, 12, 10)) * scale).astype(np.float32)
    K = rng.normal(size=(5, channels, 3, 3)).astype(np.float32)
    g = conv_geometry(X.shape, K.shape, padding="same")
    for run in _spellings(backend).values():
        tensors = [backend.asarray(a, "float32") for a in (X, K)]
        y = backend.to_numpy(run(*tensors, None, g, tile))
        cl.testing.assert_close_to_reference(y, X, K, padding="same")


def test_section4_bound_fails_on_constructed_inputs():
    """A dark image with bright pixels under a kernel's zero taps: the section 4 bound of an output is tiny
    (its own products are), the tile's transforms carry the bright pixels' rounding error into it. Within
    error_bound, far outside the section 4 rule: why algorithm="winograd" cannot promise it."""
    rng = np.random.default_rng(5)
    X = rng.normal(size=(1, 4, 12, 12)).astype(np.float32) * 1e-3
    X[:, :, ::3, ::3] = 1e3
    K = np.zeros((2, 4, 3, 3), np.float32)
    K[:, :, 1, 1] = rng.normal(size=(2, 4))
    g = conv_geometry(X.shape, K.shape, padding=1)
    expected = reference.conv2d(X, K, None, (1, 1), g.pads)
    for tile in winograd.TILES:
        y = winograd.numpy_winograd(X, K, None, g, tile)
        reference.assert_within_bound(y, expected, winograd.error_bound(X, K, g, tile))
        with pytest.raises(AssertionError, match="times the bound"):
            cl.testing.assert_close_to_reference(y, X, K, padding=1)


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("x_shape, out_channels, padding", GEOMETRIES)
def test_tile2_exact_on_integer_inputs(backend, x_shape, out_channels, padding, channels_last):
    """F(2x2, 3x3)'s transforms hold only 0, +-1 and 1/2: on integer inputs with small partial sums every
    intermediate is a multiple of 1/4 below 2**22, so the result is bit-identical to the reference. F(4x4)'s
    G holds 1/6 and 1/24, which float32 rounds: not exact (winograd_accuracy.py counts the differences)."""
    rng = np.random.default_rng(6)
    X = rng.integers(-4, 5, size=x_shape).astype(np.float32)
    K = rng.integers(-3, 4, size=(out_channels, x_shape[1], 3, 3)).astype(np.float32)
    b = rng.integers(-5, 6, size=out_channels).astype(np.float32)
    g = conv_geometry(X.shape, K.shape, padding=padding)
    expected = reference.conv2d(X, K, b, (1, 1), g.pads)
    for name, run in _spellings(backend).items():
        y = _run(backend, run, X, K, b, padding, channels_last, 2)
        np.testing.assert_array_equal(y, expected, err_msg=f"{backend.name} {name}")


def test_canonical_integer_cases_exact_with_tile2():
    for case in cl.testing.CASES:
        kwargs = dict(case.kwargs)
        if case.id not in ("same/(3, 3)/stride1", "channels-last/stride1"):
            continue
        arrays = cl.testing.make_inputs(case)
        fmt = kwargs.get("data_format", "channels_first")
        bias = arrays.get("bias")
        g = conv_geometry(arrays["X"].shape, arrays["K"].shape, None if bias is None else bias.shape,
                          padding=kwargs["padding"], data_format=fmt)  # fmt: skip
        (expected,), (bound,) = cl.testing.reference_case(case)
        assert bound is None  # the exact tier
        for run in (winograd.numpy_winograd, lambda *a: winograd.conv2d_winograd(cl.get_backend("numpy"), *a)):
            np.testing.assert_array_equal(run(arrays["X"], arrays["K"], bias, g, 2), expected.astype(np.float32))


# -- gradients --------------------------------------------------------------------------------------------


def _abs_vjp(X, K, dY, g, tile):
    """(|dX|, |dK|) magnitudes of Winograd's backward pass: the VJP of the same pipeline run with the absolute
    values of its transforms on |X|, |K|, |dY| (bilinear, so one batched forward pass per argument)."""
    be = cl.get_backend("numpy")
    mats = tuple(np.abs(m) for m in winograd.transforms(tile))
    n, c, h, w = X.shape
    co = K.shape[0]

    def forward(x, k):
        gg = conv_geometry(x.shape, k.shape, padding=g.pads)
        return winograd._winograd(be, x, winograd._kernel_transform(be, k, gg, mats[1]), None, gg, tile, mats)

    onehot_x = np.eye(c * h * w).reshape(c * h * w, c, h, w)
    per_x = forward(onehot_x, np.abs(K))  # (C*H*W, Co, Ho, Wo)
    dx = np.einsum("pohw,nohw->np", per_x, np.abs(dY)).reshape(X.shape)
    onehot_k = np.eye(c * 9).reshape(c * 9, c, 3, 3)
    per_k = forward(np.abs(X), onehot_k)  # (N, C*9, Ho, Wo)
    dk = np.einsum("nqhw,nohw->oq", per_k, np.abs(dY)).reshape(co, c, 3, 3)
    return dx, dk


def _backward_roundings(tile):
    """Roundings along one path of the backward pass (transposed transforms, plus the halo's overlap-adds)."""
    at, gm, bt = winograd.transforms(tile)
    rows = winograd._row_roundings
    g_rounded = 1
    separable = 2 * (rows(at.T) + max(rows(gm), rows(gm.T)) + g_rounded + max(rows(bt), rows(bt.T))) + 1
    kronecker = (
        rows(np.kron(at, at).T)
        + 2 * (max(rows(gm), rows(gm.T)) + g_rounded)
        + max(rows(np.kron(bt, bt)), rows(np.kron(bt, bt).T))
        + 1
    )
    return max(separable, kronecker) + 3


@pytest.mark.parametrize("tile", [2, 4])
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
def test_gradients_through_autodiff(backend, tile, channels_last):
    if not backend.has_autodiff:
        pytest.skip("no automatic differentiation on this backend")
    rng = np.random.default_rng(7)
    X, K, b = rng.normal(size=(2, 3, 6, 7)), rng.normal(size=(4, 3, 3, 3)), rng.normal(size=4)
    padding = ((1, 0), (2, 1))
    g = conv_geometry(X.shape, K.shape, padding=padding)
    dY = rng.normal(size=g.out4)
    X, K, b, dY = (a.astype(np.float32) for a in (X, K, b, dY))
    dX64, dK64, db64 = cl.conv2d_vjp(*(a.astype(np.float64) for a in (X, K, dY)), padding=padding, backend="numpy")
    mag_x, mag_k = _abs_vjp(X, K, dY, g, tile)
    kappa, u = _backward_roundings(tile), U["float32"]
    tiles = g.batch * np.prod([-(-o // tile) for o in g.out_hw])
    bounds = (2 * (g.out_channels + kappa) * u * mag_x, 2 * (tiles + kappa) * u * mag_k)
    out_cl = (0, 2, 3, 1) if channels_last else (0, 1, 2, 3)
    fmt = "channels_last" if channels_last else "channels_first"
    x, k = _layout(X, K, channels_last)
    gl = conv_geometry(x.shape, k.shape, b.shape, padding=padding, data_format=fmt)
    dy = backend.asarray(dY.transpose(out_cl), "float32")
    natives = backend.value_and_grad(
        lambda p: backend.sum(
            cl.conv2d(p[0], p[1], p[2], padding=padding, data_format=fmt, algorithm="native") * dy, (0, 1, 2, 3)
        )  # fmt: skip
    )([backend.asarray(a, "float32") for a in (x, k, b)])[1]
    native = [backend.to_numpy(v) for v in natives]
    for name, run in _spellings(backend).items():
        loss = lambda p, run=run: backend.sum(run(p[0], p[1], p[2], gl, tile) * dy, (0, 1, 2, 3))  # noqa: E731
        _, grads = backend.value_and_grad(loss)([backend.asarray(a, "float32") for a in (x, k, b)])
        dx, dk, db = (np.asarray(backend.to_numpy(v), dtype=np.float64) for v in grads)
        if channels_last:
            dx, dk = dx.transpose(0, 3, 1, 2), dk.transpose(3, 2, 0, 1)
            nat_x, nat_k = native[0].transpose(0, 3, 1, 2), native[1].transpose(3, 2, 0, 1)
        else:
            nat_x, nat_k = native[0], native[1]
        what = f"{backend.name} {name} F({tile})"
        reference.assert_within_bound(dx, dX64, bounds[0], what + " dX")
        reference.assert_within_bound(dk, dK64, bounds[1], what + " dK")
        n_bias = g.batch * g.out_hw[0] * g.out_hw[1]
        reference.assert_within_bound(db, db64, 2 * n_bias * u * np.abs(dY).sum(axis=(0, 2, 3)), what + " dbias")
        # and against the framework's own gradients: both within their bounds of the truth
        native_x = 2 * 9 * g.out_channels * u * cl.conv2d_vjp(np.abs(X), np.abs(K), np.abs(dY), padding=padding,
                                                               backend="numpy")[0]  # fmt: skip
        reference.assert_within_bound(dx, nat_x.astype(np.float64), bounds[0] + native_x, what + " dX vs native")
        native_k = 2 * n_bias * u * cl.conv2d_vjp(np.abs(X), np.abs(K), np.abs(dY), padding=padding, backend="numpy")[1]
        reference.assert_within_bound(dk, nat_k.astype(np.float64), bounds[1] + native_k, what + " dK vs native")


def test_tile2_gradients_exact_on_integer_inputs(backend):
    if not backend.has_autodiff:
        pytest.skip("no automatic differentiation on this backend")
    rng = np.random.default_rng(8)
    X = rng.integers(-4, 5, size=(2, 3, 7, 6)).astype(np.float32)
    K = rng.integers(-3, 4, size=(4, 3, 3, 3)).astype(np.float32)
    b = rng.integers(-5, 6, size=4).astype(np.float32)
    padding = ((1, 1), (0, 2))
    g = conv_geometry(X.shape, K.shape, b.shape, padding=padding)
    dY = rng.integers(-2, 3, size=g.out4).astype(np.float32)
    dy = backend.asarray(dY, "float32")
    expected = cl.conv2d_vjp(X, K, dY, padding=padding, backend="numpy")
    for name, run in _spellings(backend).items():
        loss = lambda p, run=run: backend.sum(run(p[0], p[1], p[2], g, 2) * dy, (0, 1, 2, 3))  # noqa: E731
        _, grads = backend.value_and_grad(loss)([backend.asarray(a, "float32") for a in (X, K, b)])
        for got, want, what in zip(grads, expected, ("dX", "dK", "dbias")):
            np.testing.assert_array_equal(backend.to_numpy(got), want, err_msg=f"{backend.name} {name} {what}")
