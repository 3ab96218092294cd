"""Bad input: every argument of every public function fails with a ConvlabError naming it, before any compute."""

from __future__ import annotations

import numpy as np
import pytest

import convlab as cl

X4 = np.ones((1, 2, 5, 5), np.float32)
K4 = np.ones((3, 2, 3, 3), np.float32)


def t(backend, array):
    return backend.asarray(np.asarray(array, dtype=np.float32), "float32")


BAD_CONV = [
    # (description, kwargs override, exception type, message fragment)
    ("rank-5 X", dict(X=np.ones((1, 1, 2, 5, 5))), ValueError, "X must be 2-D"),
    ("rank-1 X", dict(X=np.ones(5)), ValueError, "X must be 2-D"),
    ("rank-3 K", dict(K=np.ones((2, 3, 3))), ValueError, "K must be 4-D"),
    ("2-D K with 4-D X", dict(K=np.ones((3, 3))), ValueError, "2-D kernel K needs a 2-D X"),
    ("channel mismatch", dict(K=np.ones((3, 4, 3, 3))), ValueError, "X has 2 input channels but K expects 4"),
    ("kernel larger than input", dict(K=np.ones((3, 2, 6, 3))), ValueError, "larger than the padded input"),
    ("bias shape", dict(bias=np.ones(2)), ValueError, "bias must have shape (3,)"),
    ("bias rank", dict(bias=np.ones((3, 1))), ValueError, "bias must have shape (3,)"),
    ("negative padding", dict(padding=-1), ValueError, "padding must not be negative"),
    ("negative explicit pad", dict(padding=((0, -1), (0, 0))), ValueError, "padding must not be negative"),
    ("unknown padding mode", dict(padding="full"), ValueError, "padding must be"),
    ("padding of three", dict(padding=(1, 2, 3)), TypeError, "padding must be"),
    ("float padding", dict(padding=1.5), TypeError, "padding must be"),
    ("zero stride", dict(stride=0), ValueError, "stride must be >= 1"),
    ("negative stride", dict(stride=(1, -2)), ValueError, "stride must be >= 1"),
    ("float stride", dict(stride=1.0), TypeError, "stride must be an int"),
    ("bool stride", dict(stride=True), TypeError, "stride must be an int"),
    ("zero dilation", dict(dilation=0), ValueError, "dilation must be >= 1"),
    ("dilation of three", dict(dilation=(1, 1, 1)), TypeError, "dilation must be an int"),
    ("data_format", dict(data_format="NCHW"), ValueError, "data_format must be one of"),
    ("string X", dict(X="image"), TypeError, "X has dtype"),
    ("complex K", dict(K=np.ones((3, 2, 3, 3), np.complex64)), TypeError, "K has dtype complex64"),
    ("float16 X", dict(X=np.ones((1, 2, 5, 5), np.float16)), TypeError, "X has dtype float16"),
    ("ragged X", dict(X=[[1, 2], [3]]), ValueError, "X is not a rectangular array"),
    ("empty X", dict(X=np.ones((0, 2, 5, 5))), ValueError, "must not be empty"),
    ("unknown backend", dict(backend="theano"), ValueError, "unknown backend 'theano'"),
]


@pytest.mark.parametrize("what, override, kind, fragment", BAD_CONV, ids=[case[0] for case in BAD_CONV])
def test_conv2d_bad_arguments(backend, what, override, kind, fragment):
    arguments = dict(X=t(backend, X4), K=t(backend, K4), bias=None, backend=None)
    for name, value in override.items():
        arguments[name] = value
    X, K, bias = arguments.pop("X"), arguments.pop("K"), arguments.pop("bias")
    with pytest.raises(kind, match=_escape(fragment)) as raised:
        cl.conv2d(X, K, bias, **arguments)
    assert isinstance(raised.value, cl.ConvlabError)


def _escape(fragment):
    import re

    return re.escape(fragment)


def test_messages_name_the_shapes(backend):
    with pytest.raises(cl.ConvlabValueError) as raised:
        cl.conv2d(t(backend, X4), t(backend, np.ones((3, 4, 3, 3))))
    assert "(1, 2, 5, 5)" in str(raised.value) and "(3, 4, 3, 3)" in str(raised.value)


@pytest.mark.parametrize(
    "call, fragment",
    [
        (lambda b: cl.corr2d(t(b, np.ones((3, 3, 3))), t(b, np.ones((2, 2)))), "corr2d needs a 2-D X"),
        (lambda b: cl.corr2d(t(b, np.ones((3, 3))), t(b, np.ones((4, 2)))), "larger than the padded input"),
        (lambda b: cl.corr2d_multi_in(t(b, np.ones((2, 3, 3))), t(b, np.ones((3, 2, 2)))), "2 input channels"),
        (lambda b: cl.corr2d_multi_in(t(b, np.ones((3, 3))), t(b, np.ones((3, 2, 2)))), "needs a 3-D X"),
        (lambda b: cl.corr2d_multi_in_out(t(b, np.ones((2, 3, 3))), t(b, np.ones((2, 2, 2)))), "needs a 4-D K"),
        (lambda b: cl.corr2d_multi_in_out_1x1(t(b, np.ones((2, 3, 3))), t(b, np.ones((2, 2, 2, 1)))), "(Co, 2, 1, 1)"),
        (lambda b: cl.corr2d_matmul(t(b, np.ones((3, 3))), t(b, np.ones((1, 2, 2)))), "needs a 2-D K"),
        (lambda b: cl.conv_matrix(t(b, np.ones((2, 2))), (3,)), "2-D input_shape"),
        (lambda b: cl.conv_matrix(t(b, np.ones((2, 2))), "3x3"), "input_shape must be a shape"),
        (lambda b: cl.pool2d(t(b, np.ones((3, 3))), 4), "larger than the padded input"),
        (lambda b: cl.pool2d(t(b, np.ones((3, 3))), 2, "min"), "mode must be one of"),
        (lambda b: cl.pool2d(t(b, np.ones((3, 3))), 0), "pool_size must be >= 1"),
        (lambda b: cl.pool2d(t(b, np.ones((3, 3))), 2, stride=0), "stride must be >= 1"),
        (lambda b: cl.pool2d(t(b, np.ones((3, 3))), 2, padding=-1), "padding must not be negative"),
        (lambda b: cl.pool2d(t(b, np.ones((3, 3))), 2, count_include_pad="yes"), "count_include_pad must be"),
        (lambda b: cl.pool2d(t(b, np.ones((1, 1, 1, 3, 3))), 2), "X must be 2-D"),
        (lambda b: cl.pool2d(t(b, np.ones((3, 3))), 2, data_format="NHWC"), "data_format must be one of"),
        (lambda b: cl.conv2d_vjp(t(b, np.ones((3, 3))), t(b, np.ones((2, 2))), t(b, np.ones((3, 3)))), "dY must have"),
        (lambda b: cl.conv2d_vjp(t(b, np.ones((3, 3))), t(b, np.ones((4, 2))), t(b, np.ones((3, 3)))), "larger than"),
        (lambda b: cl.output_shape((3, 3), (2, 2), padding="full"), "padding must be"),
        (lambda b: cl.output_shape("X", (2, 2)), "X must be a shape"),
        (lambda b: cl.train_kernel(t(b, np.ones((6, 8))), t(b, np.ones((6, 6)))), "Y must have the output shape"),
        (lambda b: cl.train_kernel(t(b, np.ones((6, 8))), t(b, np.ones((6, 7))), epochs=-1), "epochs must be"),
        (lambda b: cl.train_kernel(t(b, np.ones((6, 8))), t(b, np.ones((6, 7))), lr="fast"), "lr must be"),
        (lambda b: cl.train_kernel(t(b, np.ones((6, 8))), t(b, np.ones((6, 7))), gradient="numeric"), "gradient must"),
        (lambda b: cl.train_kernel(t(b, np.ones((6, 8))), t(b, np.ones((6, 7))), callback=3), "callback must be"),
        (lambda b: cl.train_kernel(t(b, np.ones((6, 8))), t(b, np.ones((6, 7))), kernel_size=0), "kernel_size must"),
        (lambda b: cl.train_kernel(t(b, np.ones((2, 6, 8))), t(b, np.ones((2, 6, 7)))), "train_kernel needs X"),
        (lambda b: cl.Conv2D(0, backend=b.name), "kernel_size must be >= 1"),
        (lambda b: cl.Conv2D(3, in_channels=0, backend=b.name), "in_channels must be >= 1"),
        (lambda b: cl.Conv2D(3, out_channels=2.0, backend=b.name), "out_channels must be a positive int"),
        (lambda b: cl.Conv2D(3, stride=0, backend=b.name), "stride must be >= 1"),
        (lambda b: cl.Conv2D(3, padding=-2, backend=b.name), "padding must not be negative"),
        (lambda b: cl.Conv2D(3, dilation=(1, 0), backend=b.name), "dilation must be >= 1"),
        (lambda b: cl.Conv2D(3, bias="no", backend=b.name), "bias must be True or False"),
        (lambda b: cl.Conv2D(3, seed=1.5, backend=b.name), "seed must be an int"),
        (lambda b: cl.Conv2D(3, data_format="NHWC", backend=b.name), "data_format must be one of"),
        (lambda b: cl.MaxPool2D(0, backend=b.name), "pool_size must be >= 1"),
        (lambda b: cl.MaxPool2D(2, stride=-1, backend=b.name), "stride must be >= 1"),
        (lambda b: cl.MaxPool2D(2, padding=2, backend=b.name), "padding must be smaller than pool_size"),
        (lambda b: cl.pool2d(t(b, np.ones((5, 5))), 3, padding=((0, 3), (0, 0))), "padding must be smaller"),
        (lambda b: cl.AvgPool2D(2, count_include_pad=None, backend=b.name), "count_include_pad must be"),
        (lambda b: cl.kernels.derivative(-1), "order must be >= 0"),
        (lambda b: cl.kernels.derivative(1, axis="z"), "axis must be"),
        (lambda b: cl.kernels.box(0), "size must be >= 1"),
        (lambda b: cl.images.checkerboard(4, 0), "square must be >= 1"),
        (lambda b: cl.use_backend("caffe").__enter__(), "unknown backend 'caffe'"),
        (lambda b: cl.set_backend("caffe"), "unknown backend 'caffe'"),
        (lambda b: cl.register_backend("", object), "name must be a non-empty string"),
        (lambda b: cl.register_backend("x", 3), "factory must be callable"),
    ],
)
def test_every_public_function_validates(backend, call, fragment):
    with pytest.raises(cl.ConvlabError, match=_escape(fragment)) as raised:
        call(backend)
    assert isinstance(raised.value, (ValueError, TypeError))


def test_missing_known_backend_names_the_package(monkeypatch):
    from convlab import registry

    monkeypatch.setitem(registry._factories, "mxnet-missing", lambda: (_ for _ in ()).throw(ImportError("no mxnet")))
    with pytest.raises(cl.BackendNotAvailableError, match="cannot import its framework"):
        cl.get_backend("mxnet-missing")
    installed = cl.backends()
    for name in ("torch", "tensorflow", "jax", "mxnet"):
        if name not in installed:
            with pytest.raises(
                cl.BackendNotAvailableError, match=f"backend '{name}' is not installed: install convlab-"
            ):
                cl.get_backend(name)
