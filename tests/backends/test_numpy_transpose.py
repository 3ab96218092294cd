"""conv_transpose2d on NumPy: the closed-form VJP (NumPy has no autodiff) against finite differences, over the
shared geometries (output_padding at least the stride included), and ConvTranspose2D as the NumPy class
trained one step with its ``backward``; the canonical equivalence list holds the operation."""

from __future__ import annotations

import numpy as np
import pytest
import reference
import transpose_cases as tc

import convlab as cl
from convlab import testing


@pytest.mark.parametrize("case", tc.GEOMETRIES, ids=tc.IDS)
@pytest.mark.parametrize("data_format", ["channels_first", "channels_last"])
def test_closed_form_vjp_equals_finite_differences(case, data_format):
    _, x_shape, k_shape, stride, pads, dilation, extra = case
    rng = np.random.default_rng(5)
    X, K = rng.standard_normal(x_shape), rng.standard_normal(k_shape)
    if data_format == "channels_last":
        X, K = tc.to_last(X), tc.to_last(K, kernel=True)
    geometry = tc.options(stride, pads, dilation, extra, data_format)
    dY = rng.standard_normal(cl.conv_transpose2d(X, K, **geometry).shape)
    dX, dK, db = cl.conv_transpose2d_vjp(X, K, dY, **geometry)
    assert dX.shape == X.shape and dK.shape == K.shape
    f_x = lambda x: float((cl.conv_transpose2d(x, K, **geometry) * dY).sum())  # noqa: E731
    f_k = lambda k: float((cl.conv_transpose2d(X, k, **geometry) * dY).sum())  # noqa: E731
    np.testing.assert_allclose(dX, reference.numeric_gradient(f_x, X), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(dK, reference.numeric_gradient(f_k, K), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(db, dY.sum(axis=(0, 1, 2) if data_format == "channels_last" else (0, 2, 3)))


@pytest.mark.parametrize("case", tc.GEOMETRIES, ids=tc.IDS)
def test_float32_vjp_within_the_bound(case):
    _, x_shape, k_shape, stride, pads, dilation, extra = case
    rng = np.random.default_rng(6)
    X, K = rng.standard_normal(x_shape).astype(np.float32), rng.standard_normal(k_shape).astype(np.float32)
    geometry = tc.options(stride, pads, dilation, extra)
    dY = rng.standard_normal(cl.conv_transpose2d(X, K, **geometry).shape).astype(np.float32)
    grads = cl.conv_transpose2d_vjp(X, K, dY, **geometry)
    assert all(g.dtype == np.float32 for g in grads)
    tc.check_gradients(grads, X, K, dY, geometry, "conv_transpose2d_vjp")


def test_layer_is_the_numpy_class_and_trains_one_step():
    layer, X, target = tc.training_problem("numpy")
    assert type(layer).__name__ == "NumpyConv2D" and layer.weight.shape == (2, 3, 3, 3)
    weight, bias = layer.weight.copy(), layer.bias.copy()
    y = layer(X)
    loss = float(((y - target) ** 2).sum())
    dY = 2 * (y - target)
    dX, dweight, dbias = layer.backward(X, dY)
    assert dX.shape == X.shape and dweight.shape == weight.shape and dbias.shape == bias.shape
    for parameter, gradient in zip(layer.parameters(), (dweight, dbias)):
        parameter -= 1e-3 * gradient  # plain arrays, updated in place
    assert float(((layer(X) - target) ** 2).sum()) < loss
    geometry = tc.options((2, 2), ((1, 1), (1, 1)), (1, 1), (1, 1))
    tc.check_gradients((dX, dweight, dbias), X, weight, dY, geometry, "layer.backward")
    np.testing.assert_array_equal(layer.weight, weight - np.float32(1e-3) * dweight)


def test_the_equivalence_list_holds_the_operation():
    ops = {case.op for case in testing.CASES}
    assert {"conv_transpose2d", "conv_transpose2d_vjp", "conv_transpose2d_autodiff"} <= ops
    ids = set(testing.CASES_BY_ID)
    assert {"transpose/book", "transpose/book-stride2", "transpose/book-pad1"} <= ids
    book = testing.CASES_BY_ID["transpose/book-stride2"]
    (reference_output,), (bound,) = testing.reference_case(book)
    assert bound is None and reference_output.tolist() == [[0, 0, 0, 1], [0, 0, 2, 3], [0, 2, 0, 3], [4, 6, 6, 9]]
    transposed = [case for case in testing.CASES if case.op.startswith("conv_transpose2d")]
    tiers = {testing.reference_case(case)[1][0] is None for case in transposed}
    assert tiers == {True, False}  # both the exact tier and the bound
    assert {dict(case.kwargs).get("algorithm") for case in transposed} >= {"auto", "correlation"}


def test_demo_shows_the_section_14_10_examples(capsys):
    from convlab import demo

    demo.run("numpy")
    out = capsys.readouterr().out
    section = out[out.index("== 14.10 Transposed convolution") : out.index("== Exercises")]
    assert "[[ 0.  0.  1.]\n [ 0.  4.  6.]\n [ 4. 12.  9.]]" in section
    assert "[[0. 0. 0. 1.]\n [0. 0. 2. 3.]\n [0. 2. 0. 3.]\n [4. 6. 6. 9.]]" in section and "[[4.]]" in section
    assert "conv_transpose2d of that, same kernel: (1, 10, 16, 16)" in section
    assert "reshape(3, 3): True" in section
