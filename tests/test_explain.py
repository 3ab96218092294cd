"""``convlab explain``: pads, output shape and each framework's native arguments for a configuration.

The explanation is pure Python (these tests need no framework); where a framework is selected
(``--backend torch`` etc.), the calls the explanation prints for it are run and must compute the
configuration, as convlab's NumPy backend does.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import selected_backends

import convlab as cl
from convlab.explain import explain_conv, explain_pool, parse_padding, parse_pair

FRAMEWORKS = ("torch", "tensorflow", "jax", "mxnet")


def run(*args):
    return subprocess.run(
        [sys.executable, "-m", "convlab", "explain", *args], capture_output=True, text=True, timeout=120
    )


def verdicts(explanation):
    return {f.framework: f.native for f in explanation.frameworks}


def by_name(explanation, name):
    return next(f for f in explanation.frameworks if f.framework == name)


# -- the explanation -----------------------------------------------------------------------------


def test_strided_same_conv_is_asymmetric():
    e = explain_conv((8, 8), 3, stride=2, padding="same")
    assert e.pads == ((0, 1), (0, 1)) and e.output == (4, 4) and not e.symmetric
    assert verdicts(e) == {"torch": False, "tensorflow": True, "jax": True, "mxnet": False}
    torch = by_name(e, "torch")
    assert torch.calls == ("F.conv2d(F.pad(x, (0, 1, 0, 1)), w, b, stride=2)",)
    assert any('refuses padding="same" with a stride > 1' in n for n in torch.notes)
    assert any("padding=1 alone" in n and "shifted 1 row up and 1 column left" in n for n in torch.notes)
    assert 'padding="SAME"' in by_name(e, "tensorflow").calls[0]
    assert 'padding="same"' in by_name(e, "tensorflow").layer
    assert "mx.nd.pad" in by_name(e, "mxnet").calls[0]
    assert e.convlab == "cl.conv2d(X, K, stride=2, padding='same')"


def test_symmetric_conv_is_native_everywhere():
    e = explain_conv((5, 5), 3, padding=1)
    assert e.pads == ((1, 1), (1, 1)) and e.output == (5, 5)
    assert all(verdicts(e).values())
    assert by_name(e, "torch").calls == ("F.conv2d(x, w, b, padding=1)",)
    assert by_name(e, "mxnet").layer == "gluon.nn.Conv2D(Co, 3, padding=1)"


def test_torch_same_with_stride_one_puts_the_extra_bottom_right():
    e = explain_conv((9, 7), (4, 3), padding="same", dilation=(1, 2))
    assert e.pads == ((1, 2), (2, 2)) and e.output == (9, 7)
    assert by_name(e, "torch").native and 'padding="same"' in by_name(e, "torch").calls[0]
    assert not by_name(e, "mxnet").native


def test_jax_same_lower_and_explicit():
    assert 'padding="SAME_LOWER"' in by_name(explain_conv((8, 8), 2, padding=((1, 0), (1, 0))), "jax").calls[0]
    odd = explain_conv((7, 7), 3, stride=2, padding=((0, 1), (2, 0)))
    assert "padding=((0, 1), (2, 0))" in by_name(odd, "jax").calls[0]
    assert "[[0, 0], [0, 1], [2, 0], [0, 0]]" in by_name(odd, "tensorflow").calls[0]
    assert by_name(odd, "tensorflow").layer.startswith("keras.layers.ZeroPadding2D(((0, 1), (2, 0))) then")


def test_average_pooling_and_who_counts_the_padding():
    e = explain_pool((7, 7), 3, stride=2, padding="same", mode="avg")
    assert e.pads == ((1, 1), (1, 1)) and e.output == (4, 4) and e.count_include_pad is True
    # TensorFlow's "SAME" averages real pixels only: counting the padded zeros needs tf.pad first
    assert verdicts(e) == {"torch": True, "tensorflow": False, "jax": True, "mxnet": True}
    assert by_name(e, "torch").calls == ("F.avg_pool2d(x, 3, stride=2, padding=1)",)
    real = explain_pool((8, 8), 3, stride=2, padding="same", mode="avg", count_include_pad=False)
    assert real.pads == ((0, 1), (0, 1))
    assert verdicts(real) == {"torch": False, "tensorflow": True, "jax": True, "mxnet": False}
    assert by_name(real, "tensorflow").layer == 'keras.layers.AveragePooling2D(3, strides=2, padding="same")'
    assert " / " in by_name(real, "torch").calls[0]  # divided by the pooled mask of real pixels


def test_max_pooling_pads_with_minus_infinity():
    e = explain_pool((8, 8), 2, padding=((0, 1), (0, 1)))
    assert e.stride == (2, 2)  # the window, as in the frameworks' layers
    assert 'value=float("-inf")' in by_name(e, "torch").calls[0]
    assert 'constant_value=float("-inf")' in by_name(e, "mxnet").calls[0]
    big = explain_pool((5, 5), 3, padding=2)  # symmetric but more than half the window: torch refuses
    assert verdicts(big)["torch"] is False and verdicts(big)["mxnet"] is True


def test_parsing():
    assert parse_pair("input", "8") == (8, 8) and parse_pair("input", "8x6") == (8, 6)
    assert parse_padding("SAME") == "same" and parse_padding("1") == 1 and parse_padding("1x2") == (1, 2)
    assert parse_padding("0,1,2,3") == ((0, 1), (2, 3))
    with pytest.raises(cl.ConvlabValueError, match="--padding"):
        parse_padding("lots")
    with pytest.raises(cl.ConvlabValueError, match="--kernel"):
        parse_pair("kernel", "3x")


def test_command_prints_pads_output_and_frameworks():
    result = run("conv", "--input", "8x8", "--kernel", "3", "--stride", "2", "--padding", "same")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for expected in [
        "conv2d: input 8x8, kernel 3x3, stride 2x2, dilation 1x1, padding 'same'",
        "pads:    top 0, bottom 1, left 0, right 1 (asymmetric): ((0, 1), (0, 1))",
        "output:  4x4",
        "torch: no single native call",
        "F.conv2d(F.pad(x, (0, 1, 0, 1)), w, b, stride=2)",
        "TensorFlow / Keras: native",
        'tf.nn.conv2d(x, w, strides=2, padding="SAME")',
        "JAX (lax): native",
        "MXNet: no single native call",
    ]:
        assert expected in out, f"missing {expected!r} in:\n{out}"
    pool = run("pool", "--input", "7x7", "--window", "3", "--stride", "2", "--padding", "same", "--mode", "avg")
    assert pool.returncode == 0 and "avg pool2d: input 7x7" in pool.stdout and "output:  4x4" in pool.stdout
    data = json.loads(
        run(
            "pool",
            "--input",
            "8",
            "--window",
            "3",
            "--stride",
            "2",
            "--padding",
            "same",
            "--mode",
            "avg",
            "--no-count-include-pad",
            "--json",
        ).stdout
    )
    assert data["pads"] == [[0, 1], [0, 1]] and data["count_include_pad"] is False
    assert {f["framework"]: f["native"] for f in data["frameworks"]}["tensorflow"] is True


@pytest.mark.parametrize(
    "args, message",
    [
        (["conv", "--input", "2x2", "--kernel", "3"], "larger than the padded input"),
        (["conv", "--input", "8", "--kernel", "3", "--padding", "-1"], "negative"),
        (["pool", "--input", "8", "--window", "2", "--padding", "2"], "smaller than pool_size"),
        (["conv", "--input", "8", "--kernel", "3", "--stride", "0"], "stride"),
        (["conv", "--input", "eight", "--kernel", "3"], "--input"),
    ],
)
def test_bad_configuration_is_a_clear_error(args, message):
    result = run(*args)
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr, result.stderr


def test_explain_imports_no_framework():
    code = (
        "import contextlib, io, sys\nfrom convlab.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    main(['explain', 'conv', '--input', '8', '--kernel', '3', '--stride', '2', '--padding', 'same'])\n"
        "print(sorted(m for m in ('torch', 'tensorflow', 'keras', 'jax', 'mxnet') if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "[]", result.stdout + result.stderr


# -- the printed calls, run in each selected framework --------------------------------------------

CONV_CONFIGS = [
    ((8, 8), 3, 2, "same", 1),
    ((9, 7), (4, 3), 1, "same", (1, 2)),
    ((5, 5), 3, 1, 1, 1),
    ((7, 7), 3, 2, ((0, 1), (2, 0)), 1),
    ((6, 6), 2, 1, "valid", 1),
    ((8, 8), 3, (2, 1), (1, 0), 1),
    ((8, 8), 2, 1, ((1, 0), (1, 0)), 1),
]
POOL_CONFIGS = [
    ((7, 7), 3, 2, "same", "avg", True),
    ((8, 8), 3, 2, "same", "avg", False),
    ((8, 8), 3, 2, "same", "max", True),
    ((8, 8), 2, None, ((0, 1), (0, 1)), "max", True),
    ((5, 5), 3, None, 2, "max", True),
    ((6, 7), (3, 2), (1, 2), ((1, 0), (0, 1)), "avg", True),
    ((6, 7), (3, 2), (1, 2), ((1, 0), (0, 1)), "avg", False),
    ((7, 7), 3, 2, 1, "avg", False),
    ((5, 5), 3, 1, 2, "avg", True),
]


def pytest_generate_tests(metafunc):
    if "framework" in metafunc.fixturenames:
        selected = [name for name in FRAMEWORKS if name in selected_backends(metafunc.config)]
        metafunc.parametrize("framework", selected or [None], ids=selected or ["none-selected"], indirect=True)


@pytest.fixture
def framework(request):
    if request.param is None:
        pytest.skip("no framework (torch, tensorflow, jax, mxnet) is selected")
    if request.param == "tensorflow" and _has("torch"):
        import torch  # noqa: F401  (why: in a process that loads both, torch must come first)
    pytest.importorskip(request.param)
    return request.param


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def _namespace(framework: str, x: np.ndarray, w: np.ndarray):
    """The names the printed calls use: x (NCHW; TensorFlow NHWC), w (OIHW; TensorFlow HWIO), zero bias b."""
    co = w.shape[0]
    if framework == "torch":
        import torch
        import torch.nn.functional as F

        return {"torch": torch, "F": F, "x": torch.from_numpy(x), "w": torch.from_numpy(w), "b": torch.zeros(co)}
    if framework == "tensorflow":
        import tensorflow as tf

        return {"tf": tf, "x": tf.constant(x.transpose(0, 2, 3, 1)), "w": tf.constant(w.transpose(2, 3, 1, 0))}
    if framework == "jax":
        import jax.numpy as jnp
        from jax import lax

        return {"lax": lax, "jnp": jnp, "x": jnp.asarray(x), "w": jnp.asarray(w)}
    import mxnet as mx

    return {"mx": mx, "x": mx.nd.array(x), "w": mx.nd.array(w), "b": mx.nd.zeros(co), "Co": co}


def _evaluate(framework: str, call: str, namespace) -> np.ndarray:
    y = eval(call, namespace)  # our own printed call, on our own arrays
    if framework == "torch":
        return y.numpy()
    if framework == "tensorflow":
        return np.asarray(y).transpose(0, 3, 1, 2)
    if framework == "mxnet":
        return y.asnumpy()
    return np.asarray(y)


def test_printed_calls_compute_the_configuration(framework):
    """Every call explain prints for this framework gives convlab's result (integer data: exact sums)."""
    rng = np.random.default_rng(0)
    for spatial, kernel, stride, padding, dilation in CONV_CONFIGS:
        e = explain_conv(spatial, kernel, stride=stride, padding=padding, dilation=dilation)
        x = rng.integers(-3, 4, size=(1, 2) + spatial).astype(np.float32)
        w = rng.integers(-3, 4, size=(3, 2) + e.window).astype(np.float32)
        expected = cl.conv2d(x, w, stride=stride, padding=padding, dilation=dilation, backend="numpy")
        for call in by_name(e, framework).calls:
            y = _evaluate(framework, call, _namespace(framework, x, w))
            np.testing.assert_array_equal(y, expected, err_msg=f"{framework}: {call}")
    for spatial, window, stride, padding, mode, count in POOL_CONFIGS:
        e = explain_pool(spatial, window, stride=stride, padding=padding, mode=mode, count_include_pad=count)
        x = rng.integers(-3, 4, size=(1, 2) + spatial).astype(np.float32) - 10  # negative: -inf padding matters
        expected = cl.pool2d(
            x, window, mode, stride=e.stride, padding=padding, count_include_pad=count, backend="numpy"
        )
        for call in by_name(e, framework).calls:
            y = _evaluate(framework, call, _namespace(framework, x, np.zeros((1, 2, 1, 1), np.float32)))
            np.testing.assert_allclose(y, expected, rtol=1e-6, atol=0, err_msg=f"{framework}: {call}")
