"""conv_transpose2d on MXNet: against npx.deconvolution (MXNet's Deconvolution), autograd against the closed-form
VJP, the binding's autograd rule, and ConvTranspose2D as a Gluon block trained one step with gluon.Trainer."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
import reference
import transpose_cases as tc

import convlab as cl

mx = pytest.importorskip("mxnet")
pytest.importorskip("convlab_mxnet")
from mxnet import autograd, gluon, npx  # noqa: E402
from mxnet import np as mnp  # noqa: E402


def expressible(stride, pads, dilation, output_padding) -> bool:
    """MXNet's Deconvolution pads symmetrically and needs adj (output_padding) smaller than the stride."""
    return all(e < s for e, s in zip(output_padding, stride))


def mxnet_transpose(X, K, bias, stride, pads, dilation, output_padding):
    """MXNet's own Deconvolution; asymmetric pads crop its full result."""
    options = dict(kernel=K.shape[2:], stride=stride, dilate=dilation, num_filter=K.shape[1])
    b = None if bias is None else mnp.array(bias)
    if tc.symmetric(pads):
        pad = tuple(p for p, _ in pads)
        y = npx.deconvolution(mnp.array(X), mnp.array(K), b, pad=pad, adj=output_padding, no_bias=b is None, **options)
        return y.asnumpy()
    full = npx.deconvolution(mnp.array(X), mnp.array(K), no_bias=True, **options).asnumpy()
    return tc.crop_full(full, X, K, bias, stride, pads, dilation, output_padding)


@tc.each_case_layout_and_algorithm
def test_equals_mxnets_deconvolution_on_integers(case, data_format, algorithm):
    # adj >= stride: MXNet has no such deconvolution; the oracle (and convlab's fallback) still do
    y = tc.check_equals_on_integers(
        case, data_format, algorithm, mxnet_transpose, mnp.array, mnp.ndarray.asnumpy, expressible
    )
    assert isinstance(y, mnp.ndarray) and y.dtype == np.float32


def test_deconvolution_runs_except_for_computed_weights_under_autograd(monkeypatch):
    """npx.deconvolution runs the call; while autograd records, only for a leaf weight (see the binding)."""
    calls = []
    real = npx.deconvolution
    monkeypatch.setattr(npx, "deconvolution", lambda *a, **k: calls.append(k) or real(*a, **k))
    X, K = mnp.ones((1, 2, 4, 4)), mnp.array(np.arange(54, dtype=np.float32).reshape(2, 3, 3, 3))
    options = dict(stride=2, padding=1, output_padding=1)
    eager = cl.conv_transpose2d(X, K, **options)
    assert len(calls) == 1
    K.attach_grad()
    with autograd.record():
        leaf = cl.conv_transpose2d(X, K, **options)
    assert len(calls) == 2
    with autograd.record():
        computed = cl.conv_transpose2d(X, K * 1.0, **options)
        last = cl.conv_transpose2d(
            X.transpose((0, 2, 3, 1)), K.transpose((2, 3, 1, 0)), data_format="channels_last", **options
        )
    assert len(calls) == 2
    for y in (leaf, computed, last.transpose((0, 3, 1, 2))):
        np.testing.assert_array_equal(y.asnumpy(), eager.asnumpy())
    cl.conv_transpose2d(X, K, dilation=2, output_padding=1)  # adj >= stride: MXNet cannot, the core's formulation
    cl.conv_transpose2d(mnp.ones((1, 1, 512, 512)), mnp.ones((1, 1, 3, 3)), padding=1)  # one channel, stride 1, large
    assert len(calls) == 2


def test_why_no_deconvolution_under_autograd():
    """The MXNet 1.9.1 bug the binding avoids: float32 Deconvolution's backward fails for a computed weight.

    In a child process: it corrupts the heap. When this starts passing, the autograd rule can go.
    """
    code = textwrap.dedent(
        """
        from mxnet import np, npx, autograd
        x, w = np.ones((1, 2, 5, 5)), np.ones((3, 3, 3, 2))
        w.attach_grad()
        with autograd.record():
            k = w.transpose((3, 2, 0, 1))
            y = npx.deconvolution(x, k, kernel=(3, 3), stride=(2, 2), num_filter=3, no_bias=True)
        y.backward()
        npx.waitall()
        print("backward ok")
        """
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "backward ok" not in run.stdout, "MXNet's Deconvolution backward works now: the autograd rule can go"


@pytest.mark.parametrize("hybridize", [False, True])
def test_layer_is_a_gluon_block_and_trains_one_step(hybridize):
    layer, X, target = tc.training_problem("mxnet")
    assert isinstance(layer, gluon.HybridBlock) and "conv_transpose2d" in repr(layer)
    if hybridize:
        layer.hybridize()  # the layer itself still runs imperatively (cl.conv_transpose2d)
    weight, bias = layer.weight.data().asnumpy().copy(), layer.bias.data().asnumpy().copy()
    trainer = gluon.Trainer(layer.collect_params(), "sgd", {"learning_rate": 1e-3})
    with autograd.record():
        y = layer(mnp.array(X))
        loss = ((y - mnp.array(target)) ** 2).sum()
    loss.backward()
    grads = layer.weight.grad().asnumpy().copy(), layer.bias.grad().asnumpy().copy()
    trainer.step(1)
    assert float(((layer(mnp.array(X)) - mnp.array(target)) ** 2).sum()) < float(loss)
    dY = 2 * (y.asnumpy() - target)
    tc.check_sgd_step(X, dY, (weight, bias), grads, (layer.weight.data().asnumpy(), layer.bias.data().asnumpy()))


def test_layer_channels_last_equals_channels_first():
    first = cl.ConvTranspose2D(2, 2, 3, stride=2, seed=1, backend="mxnet")
    last = cl.ConvTranspose2D(2, 2, 3, stride=2, seed=1, data_format="channels_last", backend="mxnet")
    assert last.weight.shape == (2, 2, 3, 2)
    X = np.random.default_rng(2).standard_normal((1, 2, 3, 4)).astype(np.float32)
    y_first, y_last = first(mnp.array(X)).asnumpy(), last(mnp.array(tc.to_last(X))).asnumpy()
    np.testing.assert_allclose(y_last, tc.to_last(y_first), rtol=1e-6, atol=1e-6)


def test_why_no_float64_deconvolution_strided_and_dilated():
    """MXNet's own float64 Deconvolution (oneDNN runs float32) is wrong with stride and dilation on one axis."""
    rng = np.random.default_rng(0)
    X, K = rng.standard_normal((1, 1, 4, 4)), rng.standard_normal((1, 1, 3, 3))
    exact = reference.conv_transpose2d(X, K, None, (2, 2), ((0, 0), (0, 0)), (2, 2), (0, 0))
    options = dict(kernel=(3, 3), stride=(2, 2), dilate=(2, 2), num_filter=1, no_bias=True)
    theirs = npx.deconvolution(mnp.array(X, dtype="float64"), mnp.array(K, dtype="float64"), **options).asnumpy()
    assert not np.allclose(theirs, exact), "MXNet's float64 Deconvolution is right now: the dtype rule can go"
    ours = cl.conv_transpose2d(mnp.array(X, dtype="float64"), mnp.array(K, dtype="float64"), stride=2, dilation=2)
    np.testing.assert_allclose(ours.asnumpy(), exact, rtol=1e-12, atol=1e-12)
