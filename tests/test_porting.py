"""Porting layers: ``cl.from_native`` reads torch, Keras and Gluon layers; ``LayerSpec`` builds and moves them.

- per framework (when it is selected, as torch/tensorflow/mxnet in ``--backend``): every case of
  tests/porting_cases.py ported and built on NumPy and on that framework gives the framework's own layer
  output, both within DESIGN section 4's bound of the float64 reference (max pooling exactly); what convlab
  cannot express and layers without weights are clear errors;
- across environments: another framework's environment (``.nox/tests-NAME`` or ``$CONVLAB_PYTHON_NAME``)
  ports its layers in a subprocess and saves spec, input and its own output; the spec built on the
  backend under test gives that output (skipped, with the reason, where the environment does not exist);
- LayerSpec itself: normalisation, validation, the file format and every way a file can be bad.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import selected_backends
from porting_cases import CASES, FRAMEWORKS, RUN

import convlab as cl

ROOT = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
C = 2  # DESIGN section 4's constant
UNIT = {"float32": 2.0**-24, "float64": 2.0**-53}


# -- the bound -----------------------------------------------------------------------------------


def _float64(spec: cl.LayerSpec, absolute: bool = False) -> cl.LayerSpec:
    def f64(a):
        return None if a is None else (np.abs(a) if absolute else a).astype(np.float64)

    return cl.LayerSpec(spec.kind, dict(spec.config), f64(spec.weight), f64(spec.bias))


def assert_within_bound(y, spec: cl.LayerSpec, x: np.ndarray, what: str) -> None:
    """|y - y_ref| <= c * n * u * (|X| (*) |K|) elementwise; max pooling must be exact."""
    y = np.asarray(y)
    reference = np.asarray(_float64(spec).build("numpy")(x.astype(np.float64)))
    assert y.shape == reference.shape, f"{what}: shape {y.shape}, expected {reference.shape}"
    assert y.dtype == x.dtype, f"{what}: dtype {y.dtype}, expected {x.dtype}"
    if spec.kind == "pool2d" and spec.config["mode"] == "max":
        np.testing.assert_array_equal(y, reference.astype(x.dtype), err_msg=what)
        return
    magnitude = np.asarray(_float64(spec, absolute=True).build("numpy")(np.abs(x).astype(np.float64)))
    kh, kw = spec.kernel_size
    if spec.kind == "conv2d":
        n = spec.in_channels * kh * kw + (spec.bias is not None)
    else:
        n = kh * kw + 1  # the sum and the division
    bound = C * n * UNIT[x.dtype.name] * magnitude
    error = np.abs(y.astype(np.float64) - reference)
    worst = float(np.max(error / np.maximum(bound, np.finfo(np.float64).tiny)))
    assert np.all(error <= bound), f"{what}: error {error.max():.3g} is {worst:.3g} times the bound"


# -- which frameworks run here -------------------------------------------------------------------


def pytest_generate_tests(metafunc):
    if "native_case" in metafunc.fixturenames:
        selected = [name for name in FRAMEWORKS if name in selected_backends(metafunc.config)]
        params = []
        for framework in selected:
            if _importable(framework):
                params += [
                    pytest.param((framework, case), id=f"{framework}-{case.name}") for case in CASES[framework]()
                ]
            else:
                params.append(pytest.param(None, id=framework, marks=pytest.mark.skip(f"{framework} not installed")))
        metafunc.parametrize("native_case", params)
    if "native" in metafunc.fixturenames:
        selected = [name for name in FRAMEWORKS if name in selected_backends(metafunc.config)]
        metafunc.parametrize("native", selected or [None], ids=selected or ["none-selected"], indirect=True)


def _importable(framework: str) -> bool:
    module = "keras" if framework == "tensorflow" else framework
    if framework == "tensorflow":
        import importlib.util

        if importlib.util.find_spec("torch") is not None:
            __import__("torch")  # why: in a process that loads both, torch must come first
    try:
        __import__(module)
    except ImportError:
        return False
    return True


@pytest.fixture
def native(request):
    """A selected framework whose own layers the test ports (torch, tensorflow or mxnet)."""
    if request.param is None:
        pytest.skip("no framework with native layers (torch, tensorflow, mxnet) is selected")
    if not _importable(request.param):
        pytest.skip(f"{request.param} not installed")
    return request.param


def _framework_backend(framework: str) -> cl.Backend:
    try:
        return cl.get_backend(framework)
    except cl.BackendNotAvailableError as error:
        pytest.skip(f"convlab-{framework} not installed: {error}")


# -- (a) each framework's layers, in its own environment ----------------------------------------


def test_ported_layer_gives_the_frameworks_output(native_case):
    """from_native, built on NumPy and on the same framework, reproduces the framework's own layer."""
    framework, case = native_case
    spec = cl.from_native(case.layer)
    native_y = RUN[framework](case.layer, case.x)
    assert_within_bound(native_y, spec, case.x, f"{framework}'s own {case.name} against the spec's reference")
    assert_within_bound(spec.build("numpy")(case.x), spec, case.x, f"{case.name} built on numpy")
    backend = _framework_backend(framework)
    y = backend.to_numpy(spec.build(framework)(backend.asarray(case.x, case.x.dtype.name)))
    assert_within_bound(y, spec, case.x, f"{case.name} built on {framework}")


def test_ported_spec_survives_a_file(native_case, tmp_path):
    framework, case = native_case
    spec = cl.from_native(case.layer)
    spec.save(tmp_path / "layer.spec")
    loaded = cl.LayerSpec.load(tmp_path / "layer.spec")
    assert loaded == spec and loaded.source["framework"] == ("keras" if framework == "tensorflow" else framework)
    np.testing.assert_array_equal(loaded.build("numpy")(case.x), spec.build("numpy")(case.x))


def test_framework_rules_in_convlab_terms(native):
    """The padding rule, count_include_pad and layout each framework's layer means, as config."""
    if native == "torch":
        from torch import nn

        assert cl.from_native(nn.Conv2d(3, 8, 3, stride=2, padding=1)).config["padding"] == ((1, 1), (1, 1))
        same = cl.from_native(nn.Conv2d(1, 1, 4, padding="same")).config  # torch: the odd extra right/bottom
        assert same["padding"] == ((1, 2), (1, 2)) and same["data_format"] == "channels_first"
        assert cl.from_native(nn.AvgPool2d(3, padding=1)).config["count_include_pad"] is True
        assert cl.from_native(nn.MaxPool2d(3)).config["stride"] == (3, 3)
    elif native == "tensorflow":
        from keras import layers

        conv = layers.Conv2D(8, 3, strides=2, padding="same")
        conv.build((None, 8, 8, 3))
        spec = cl.from_native(conv)
        assert spec.config["padding"] == "same" and spec.config["data_format"] == "channels_last"
        assert spec.weight.shape == (3, 3, 3, 8)  # HWIO
        assert spec.geometry((1, 8, 8, 3)).pads == ((0, 1), (0, 1))
        first = layers.Conv2D(8, 3, data_format="channels_first", padding="same")
        first.build((None, 3, 8, 8))
        spec = cl.from_native(first)
        assert spec.weight.shape == (8, 3, 3, 3) and spec.config["padding"] == ((1, 1), (1, 1))  # OIHW, explicit
        # Keras's channels_first kernel is HWIO too; TensorFlow's CPU conv runs NHWC only, so compare with the
        # channels_last layer holding the same weights on transposed data.
        last = layers.Conv2D(5, 3, strides=(1, 2), padding="same")
        last.build((None, 7, 9, 2))
        first = layers.Conv2D(5, 3, strides=(1, 2), padding="same", data_format="channels_first")
        first.build((None, 2, 7, 9))
        first.set_weights(last.get_weights())
        x = np.random.default_rng(5).normal(size=(1, 7, 9, 2)).astype(np.float32)
        spec = cl.from_native(first)
        y = np.asarray(spec.build("numpy")(x.transpose(0, 3, 1, 2))).transpose(0, 2, 3, 1)
        assert_within_bound(y, cl.from_native(last), x, "Keras channels_first conv against channels_last")
        average = cl.from_native(layers.AveragePooling2D(3, strides=2, padding="same")).config
        assert average["count_include_pad"] is False and average["padding"] == "same"
    else:
        from mxnet.gluon import nn

        assert cl.from_native(nn.AvgPool2D(3, 2, 1)).config["count_include_pad"] is True
        assert cl.from_native(nn.MaxPool2D()).config["stride"] == (2, 2)


def _unsupported_layers(native):
    """(layer, attribute named in the error, its value as the message shows it)."""
    if native == "torch":
        import torch
        from torch import nn

        return [
            (nn.Conv2d(4, 4, 3, groups=2), "groups", "2"),
            (nn.Conv2d(1, 1, 3, padding=1, padding_mode="reflect"), "padding_mode", "'reflect'"),
            (nn.MaxPool2d(3, ceil_mode=True), "ceil_mode", "True"),
            (nn.AvgPool2d(3, ceil_mode=True), "ceil_mode", "True"),
            (nn.MaxPool2d(3, dilation=2), "dilation", "2"),
            (nn.MaxPool2d(3, return_indices=True), "return_indices", "True"),
            (nn.AvgPool2d(3, divisor_override=4), "divisor_override", "4"),
            (nn.Conv2d(1, 1, 3).to(torch.float16), "dtype", "torch.float16"),
        ]
    if native == "tensorflow":
        from keras import layers

        def built(layer, shape):
            layer.build(shape)
            return layer

        return [
            (built(layers.Conv2D(4, 3, activation="relu"), (None, 5, 5, 2)), "activation", "'relu'"),
            (built(layers.Conv2D(4, 3, groups=2), (None, 5, 5, 2)), "groups", "2"),
            (built(layers.Conv2D(4, 3, dtype="float16"), (None, 5, 5, 2)), "dtype_policy", "float16"),
        ]
    from mxnet.gluon import nn

    return [
        (nn.Conv2D(4, 3, groups=2, in_channels=4), "groups", "2"),
        (nn.Conv2D(4, 3, activation="relu", in_channels=2), "activation", "'relu'"),
        (nn.MaxPool2D(3, ceil_mode=True), "ceil_mode", "True"),
        (nn.AvgPool2D(3, ceil_mode=True), "ceil_mode", "True"),
    ]


def test_what_convlab_cannot_express_names_the_attribute(native):
    for layer, attribute, value in _unsupported_layers(native):
        if native == "mxnet" and hasattr(layer, "weight"):
            layer.initialize()
        with pytest.raises(cl.ConvlabValueError) as error:
            cl.from_native(layer)
        message = str(error.value)
        assert f"{attribute}={value}" in message or f"{attribute}={value!r}" in message, message


def test_layers_without_weights_and_other_objects_are_clear_errors(native):
    if native == "torch":
        from torch import nn

        unbuilt = nn.LazyConv2d(4, 3)
        others = [nn.Linear(3, 4), nn.Conv1d(1, 1, 3), nn.ConvTranspose2d(1, 1, 3)]

        class Scaled(nn.Conv2d):
            def forward(self, x):
                return 2 * super().forward(x)

        overriding = Scaled(1, 1, 3)
    elif native == "tensorflow":
        from keras import layers

        unbuilt = layers.Conv2D(4, 3)
        others = [layers.Dense(3), layers.Conv1D(1, 3), layers.Conv2DTranspose(1, 3)]

        class Scaled(layers.Conv2D):
            def call(self, x):
                return 2 * super().call(x)

        overriding = Scaled(1, 3)
        overriding.build((None, 5, 5, 1))
    else:
        from mxnet.gluon import nn

        unbuilt = nn.Conv2D(4, 3)  # in_channels unknown: deferred initialization
        unbuilt.initialize()
        others = [nn.Dense(3), nn.Conv1D(1, 3), nn.GlobalMaxPool2D()]

        class Scaled(nn.Conv2D):
            def hybrid_forward(self, F, x, weight, bias=None):
                return 2 * super().hybrid_forward(F, x, weight, bias)

        overriding = Scaled(1, 3, in_channels=1)
        overriding.initialize()
    with pytest.raises(cl.ConvlabValueError, match="no weights yet|not built|deferred"):
        cl.from_native(unbuilt)
    for layer in others + [object(), np.ones(3)]:
        with pytest.raises(cl.ConvlabTypeError, match="from_native expects"):
            cl.from_native(layer)
    with pytest.raises(cl.ConvlabValueError, match="overrides"):
        cl.from_native(overriding)


# -- (b) across environments, through saved specs -------------------------------------------------


def _python_of(framework: str):
    configured = os.environ.get(f"CONVLAB_PYTHON_{framework.upper()}")
    if configured:
        return configured
    candidate = ROOT / ".nox" / f"tests-{framework}" / "bin" / "python"
    return str(candidate) if candidate.exists() else None


@pytest.fixture(scope="session")
def produced(tmp_path_factory):
    """Run each other environment's producer once per test session: framework -> (directory, manifest)."""
    results = {}

    def get(framework):
        if framework not in results:
            python = _python_of(framework)
            if python is None:
                results[framework] = (
                    f"no {framework} environment (.nox/tests-{framework} or $CONVLAB_PYTHON_"
                    f"{framework.upper()}): run `nox -s tests-{framework}` first"
                )
                return results[framework]
            outdir = tmp_path_factory.mktemp(f"specs-{framework}")
            env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
            env.update(PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="2")  # the core from this tree; no adapter needed
            command = [python, str(TESTS / "porting_cases.py"), framework, str(outdir)]
            run = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
            if run.returncode != 0:
                results[framework] = RuntimeError(f"{' '.join(command)} failed:\n{run.stdout}\n{run.stderr}")
            else:
                results[framework] = (outdir, json.loads((outdir / "manifest.json").read_text()))
        return results[framework]

    return get


@pytest.mark.parametrize("producer", FRAMEWORKS)
def test_spec_from_another_environment_gives_its_output(backend, producer, produced):
    """A spec saved by another framework's environment, built here, gives that framework's numbers.

    E.g. Keras ``Conv2D(8, 3, strides=2, padding="same")`` built on torch, torch ``nn.Conv2d(3, 8, 3, stride=2,
    padding=1)`` built on TensorFlow, Keras average pooling "same" keeping Keras's count.
    """
    if producer == backend.name:
        pytest.skip(f"{producer} layers on {producer}: test_ported_layer_gives_the_frameworks_output")
    result = produced(producer)
    if isinstance(result, str):
        pytest.skip(result)
    if isinstance(result, Exception):
        raise result
    outdir, manifest = result
    assert manifest["cases"], manifest
    checked = 0
    for name in manifest["cases"]:
        spec = cl.LayerSpec.load(outdir / f"{name}.spec.npz")
        with np.load(outdir / f"{name}.data.npz", allow_pickle=False) as data:
            x, native_y = data["x"], data["y"]
        if x.dtype == np.float64 and not _has_float64(backend):
            continue  # e.g. JAX without jax_enable_x64: the float64 case is checked on the other backends
        checked += 1
        what = f"{producer} {manifest['version']} {name} built on {backend.name}"
        assert_within_bound(native_y, spec, x, f"{producer}'s own output for {name}")
        y = backend.to_numpy(spec.build(backend)(backend.asarray(x, x.dtype.name)))
        assert_within_bound(y, spec, x, what)
    assert checked, f"no case of {producer} ran on {backend.name}"


def _has_float64(backend: cl.Backend) -> bool:
    try:
        backend.check_float64()
    except cl.ConvlabError:
        return False
    return True


# -- (c) LayerSpec itself ------------------------------------------------------------------------


def conv_spec(**config):
    rng = np.random.default_rng(0)
    weight = rng.normal(size=(4, 3, 3, 3)).astype(np.float32)
    bias = rng.normal(size=4).astype(np.float32)
    return cl.LayerSpec("conv2d", config, weight, bias, {"framework": "test", "layer": "made by hand"})


def test_spec_normalises_its_configuration():
    spec = conv_spec(stride=2, padding=1)
    assert spec.config == {
        "stride": (2, 2),
        "padding": ((1, 1), (1, 1)),
        "dilation": (1, 1),
        "data_format": "channels_first",
    }
    assert conv_spec(padding="SAME").config["padding"] == "same"
    assert conv_spec(padding="valid").config["padding"] == ((0, 0), (0, 0))
    assert (spec.in_channels, spec.out_channels, spec.kernel_size) == (3, 4, (3, 3))
    pool = cl.LayerSpec("pool2d", {"pool_size": (2, 3), "mode": "avg"})
    assert pool.config["stride"] == (2, 3) and pool.config["count_include_pad"] is True
    assert pool.output_shape((1, 1, 6, 6)) == (1, 1, 3, 2)
    assert spec.output_shape((1, 3, 8, 8)) == (1, 4, 4, 4)
    assert "conv2d" in repr(spec) and "made by hand" in repr(spec)
    assert pickle.loads(pickle.dumps(spec)) == spec
    with pytest.raises(AttributeError):
        spec.kind = "pool2d"
    assert not spec.weight.flags.writeable


@pytest.mark.parametrize(
    "kind, config, weight, bias, match",
    [
        ("dense", {}, None, None, "kind"),
        ("conv2d", {"strides": 2}, np.ones((1, 1, 3, 3), np.float32), None, "unknown keys"),
        ("conv2d", {}, None, None, "needs a weight"),
        ("conv2d", {}, np.ones((3, 3), np.float32), None, "4-D"),
        ("conv2d", {}, np.ones((1, 1, 3, 3), np.int64), None, "float32 or float64"),
        ("conv2d", {}, np.ones((2, 1, 3, 3), np.float32), np.ones(3, np.float32), "bias must have shape"),
        ("conv2d", {}, np.ones((2, 1, 3, 3), np.float32), np.ones(2, np.float64), "bias dtype"),
        ("conv2d", {"padding": -1}, np.ones((1, 1, 3, 3), np.float32), None, "negative"),
        ("conv2d", {"stride": 0}, np.ones((1, 1, 3, 3), np.float32), None, "stride"),
        ("conv2d", {"data_format": "NCHW"}, np.ones((1, 1, 3, 3), np.float32), None, "data_format"),
        ("pool2d", {}, None, None, "pool_size"),
        ("pool2d", {"pool_size": 2, "mode": "sum"}, None, None, "mode"),
        ("pool2d", {"pool_size": 2, "padding": 2}, None, None, "smaller than pool_size"),
        ("pool2d", {"pool_size": 2}, np.ones((1, 1, 2, 2), np.float32), None, "no weights"),
    ],
)
def test_spec_rejects_what_does_not_fit(kind, config, weight, bias, match):
    with pytest.raises(cl.ConvlabError, match=match):
        cl.LayerSpec(kind, config, weight, bias)


def test_spec_file_round_trip(tmp_path):
    spec = conv_spec(stride=2, padding="same", data_format="channels_first")
    spec.save(tmp_path / "conv")  # written at exactly this path, no ".npz" appended
    assert (tmp_path / "conv").exists() and not (tmp_path / "conv.npz").exists()
    loaded = cl.LayerSpec.load(tmp_path / "conv")
    assert loaded == spec and loaded.weight.dtype == np.float32
    pool = cl.LayerSpec(
        "pool2d", {"pool_size": 3, "mode": "avg", "stride": 2, "padding": "same", "count_include_pad": False}
    )
    pool.save(str(tmp_path / "pool.npz"))
    assert cl.LayerSpec.load(str(tmp_path / "pool.npz")) == pool
    with zipfile.ZipFile(tmp_path / "conv") as archive:
        assert sorted(archive.namelist()) == ["bias.npy", "format.npy", "spec.npy", "version.npy", "weight.npy"]


def _rewrite(path, **changes):
    """The file at ``path`` with some entries replaced (None: removed)."""
    with np.load(path, allow_pickle=False) as contents:
        arrays = {name: contents[name] for name in contents.files}
    for name, value in changes.items():
        if value is None:
            arrays.pop(name, None)
        else:
            arrays[name] = value
    with open(path, "wb") as handle:
        np.savez(handle, **arrays)


def _spec_json(path):
    with np.load(path, allow_pickle=False) as contents:
        return json.loads(str(contents["spec"][()]))


@pytest.mark.parametrize(
    "tamper, match",
    [
        (lambda p: _rewrite(p, format=np.array("something.else")), "format marker"),
        (lambda p: _rewrite(p, version=np.array(2)), "version 2 is not supported"),
        (lambda p: _rewrite(p, version=None), "no 'version'"),
        (lambda p: _rewrite(p, spec=np.array("{not json")), "not JSON"),
        (lambda p: _rewrite(p, spec=np.array(json.dumps({**_spec_json(p), "kind": "dense"}))), "kind"),
        (lambda p: _rewrite(p, spec=np.array(json.dumps({**_spec_json(p), "code": "import os"}))), "exactly"),
        (lambda p: _rewrite(p, weight=np.ones((4, 3, 3, 3), np.int32)), "float32 or float64"),
        (lambda p: _rewrite(p, bias=np.ones(5, np.float32)), "bias must have shape"),
        (lambda p: _rewrite(p, bias=None), "bias=absent"),
        (lambda p: _rewrite(p, extra=np.ones(1)), "unexpected entries"),
        (lambda p: _rewrite(p, weight=np.array([None, "x"], dtype=object)), "pickled"),
        (lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]), "not a readable"),
        (lambda p: p.write_bytes(b"just some text"), "not a readable"),
        (lambda p: np.save(open(p, "wb"), np.ones(3)), "holds one array"),
    ],
    ids=[
        "format",
        "version",
        "no-version",
        "json",
        "kind",
        "extra-key",
        "int-weight",
        "bias-shape",
        "no-bias",
        "extra-entry",
        "object-array",
        "truncated",
        "text",
        "npy",
    ],
)
def test_bad_files_are_clear_errors(tmp_path, tamper, match):
    path = tmp_path / "layer.npz"
    conv_spec(padding=1).save(path)
    tamper(path)
    with pytest.raises(cl.ConvlabValueError, match=match):
        cl.LayerSpec.load(path)


class _Marker:
    """Unpickling this would create a file: loading a spec must never do it."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_nothing_in_a_file_is_executed(tmp_path):
    marker = tmp_path / "executed"
    payload = tmp_path / "pickle.npz"
    payload.write_bytes(pickle.dumps(_Marker(str(marker))))
    with pytest.raises(cl.ConvlabValueError, match="pickled"):
        cl.LayerSpec.load(payload)
    inside = tmp_path / "inside.npz"
    conv_spec().save(inside)
    with open(inside, "wb") as handle:  # a pickle where the JSON belongs
        np.savez(
            handle,
            format=np.array("convlab.LayerSpec"),
            version=np.array(1),
            spec=np.array([_Marker(str(marker))], dtype=object),
        )
    with pytest.raises(cl.ConvlabValueError, match="pickled"):
        cl.LayerSpec.load(inside)
    assert not marker.exists()
    with pytest.raises(FileNotFoundError):
        cl.LayerSpec.load(tmp_path / "missing.npz")


def test_built_layer_is_the_spec_on_every_backend(backend):
    """One spec with asymmetric "same" pads (stride 2) built on each backend equals convlab.conv2d on NumPy."""
    spec = conv_spec(stride=2, padding="same")
    x = np.random.default_rng(3).normal(size=(2, 3, 8, 8)).astype(np.float32)
    layer = spec.build(backend.name)
    y = backend.to_numpy(layer(backend.asarray(x, "float32")))
    assert_within_bound(y, spec, x, f"conv spec built on {backend.name}")
    y = backend.to_numpy(spec.build(backend)(backend.asarray(x, "float32")))  # a Backend object works too
    assert_within_bound(y, spec, x, f"conv spec built on the {backend.name} Backend")
    pool = cl.LayerSpec(
        "pool2d",
        {
            "pool_size": 3,
            "mode": "avg",
            "stride": 2,
            "padding": "same",
            "count_include_pad": False,
            "data_format": "channels_last",
        },
    )
    x = np.abs(x.transpose(0, 2, 3, 1))
    y = backend.to_numpy(pool.build(backend.name)(backend.asarray(x, "float32")))
    assert_within_bound(y, pool, x, f"avg pool spec built on {backend.name}")
    # The bottom-right window covers 2x2 real pixels: Keras's count, not the window's area.
    np.testing.assert_allclose(y[:, -1, -1, :], x[:, -2:, -2:, :].mean(axis=(1, 2)), rtol=1e-6)
    assert spec.weight.flags.writeable is False  # building copied the weights


def test_from_native_imports_no_framework():
    code = (
        "import sys, convlab as cl\n"
        "try:\n    cl.from_native(object())\nexcept cl.ConvlabTypeError as e:\n    print('refused', e)\n"
        "print(sorted(m for m in ('torch', 'tensorflow', 'keras', 'jax', 'mxnet', 'flax') if m in sys.modules))\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "refused from_native expects" in run.stdout and run.stdout.strip().endswith("[]"), run.stdout
