"""The dispatcher: one plan per call signature (and device), the registry under entry-point backports."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import convlab as cl
from convlab import dispatch, registry
from convlab.numpy_backend import NumpyBackend


class OnDevice:
    """A tensor of a framework with devices: a NumPy array and the name of where it lives."""

    def __init__(self, array, device):
        self.array, self.device = np.asarray(array), device

    shape = property(lambda self: self.array.shape)
    dtype = property(lambda self: self.array.dtype)

    def reshape(self, shape):
        return OnDevice(self.array.reshape(shape), self.device)


class TwoDevices(NumpyBackend):
    """A backend with a "cpu" and an accelerator "gpu"; it records which formulation ran."""

    name = "two-devices"
    framework_modules = (__name__,)
    conv_rules = (("one channel pair", lambda s: s.channel_pairs == 1, "shift"),)
    ran: list = []

    def is_tensor(self, x):
        return isinstance(x, OnDevice)

    def device_of(self, x):
        return x.device

    def is_accelerator(self, device):
        return device == "gpu"

    def asarray(self, x, dtype):
        if isinstance(x, OnDevice):
            return x if x.array.dtype == dtype else OnDevice(x.array.astype(dtype), x.device)
        return OnDevice(np.asarray(x, dtype), "cpu")

    def to_numpy(self, x):
        return x.array

    def conv2d(self, x, k, bias, geometry):
        self.ran.append(("native", x.device))
        return OnDevice(super().conv2d(x.array, k.array, None, geometry), x.device)

    def conv2d_shift(self, x, k, bias, geometry):
        self.ran.append(("shift", x.device))
        return OnDevice(super().conv2d_shift(x.array, k.array, None, geometry), x.device)


@pytest.fixture
def two_devices():
    cl.register_backend(TwoDevices.name, TwoDevices)
    TwoDevices.ran = []
    yield cl.get_backend(TwoDevices.name)
    registry._factories.pop(TwoDevices.name, None)
    registry._instances.pop(TwoDevices.name, None)
    registry._by_type.clear()


def test_auto_chooses_again_on_another_device(two_devices):
    """A plan made on an accelerator (native op) is not reused on the CPU, where the rule picks shift."""
    X, K = np.arange(64.0).reshape(1, 1, 8, 8), np.ones((1, 1, 3, 3))
    for device in ("gpu", "cpu", "gpu", "cpu"):
        y = cl.conv2d(OnDevice(X, device), OnDevice(K, device))
        np.testing.assert_array_equal(y.array, cl.conv2d(X, K, backend="numpy"))
    assert TwoDevices.ran == [("native", "gpu"), ("shift", "cpu"), ("native", "gpu"), ("shift", "cpu")]


def test_mixed_devices_are_refused_on_every_call(two_devices):
    X, K = np.ones((1, 1, 4, 4)), np.ones((1, 1, 3, 3))
    cl.conv2d(OnDevice(X, "cpu"), OnDevice(K, "cpu"))
    with pytest.raises(cl.ConvlabValueError, match="different devices"):
        cl.conv2d(OnDevice(X, "cpu"), OnDevice(K, "gpu"))


def test_identical_calls_share_one_plan(two_devices):
    """The first call with a new tensor type is keyed as later calls are: three calls, one plan."""
    dispatch._PLANS.clear()
    registry._by_type.clear()
    X, K = OnDevice(np.ones((5, 5)), "cpu"), OnDevice(np.ones((2, 2)), "cpu")
    for _ in range(3):
        cl.corr2d(X, K)
    assert len(dispatch._PLANS) == 1


@pytest.mark.parametrize("op", ["conv2d", "corr2d", "corr2d_multi_in_out", "pool2d", "conv2d_vjp"])
def test_every_operation_keeps_a_plan(op):
    """Each public operation is dispatched through the plan cache, not an uncached path."""
    X3, K4 = np.ones((2, 5, 5)), np.ones((3, 2, 2, 2))
    calls = {
        "conv2d": lambda: cl.conv2d(X3, K4),
        "corr2d": lambda: cl.corr2d(X3[0], K4[0, 0]),
        "corr2d_multi_in_out": lambda: cl.corr2d_multi_in_out(X3, K4),
        "pool2d": lambda: cl.pool2d(X3, 2),
        "conv2d_vjp": lambda: cl.conv2d_vjp(X3, K4, np.ones((3, 4, 4))),
    }
    dispatch._PLANS.clear()
    calls[op]()
    assert len(dispatch._PLANS) == 1
    (plan,) = dispatch._PLANS.values()
    calls[op]()
    assert list(dispatch._PLANS.values()) == [plan]


def test_options_are_type_exact_keys():
    """stride=True must not reuse the plan of stride=1; count_include_pad=1 not that of True."""
    X = np.ones((1, 1, 4, 4))
    cl.conv2d(X, np.ones((1, 1, 2, 2)), stride=1)
    with pytest.raises(cl.ConvlabTypeError, match="stride"):
        cl.conv2d(X, np.ones((1, 1, 2, 2)), stride=True)
    cl.pool2d(X, 2, "avg", count_include_pad=True)
    with pytest.raises(cl.ConvlabTypeError, match="count_include_pad"):
        cl.pool2d(X, 2, "avg", count_include_pad=1)


class _BackportEntryPoint:
    """What the importlib_metadata backport hands out: an entry point of another class than the stdlib's."""

    def __init__(self, name, value):
        self.name, self.value, self.group = name, value, registry.ENTRY_POINT_GROUP

    def load(self):
        module, _, attribute = self.value.partition(":")
        return getattr(__import__(module, fromlist=[attribute]), attribute)


def test_entry_points_of_another_class_load(monkeypatch):
    """Defect (c): entry points are told from factories by where they are kept, not by their class."""
    found = [_BackportEntryPoint("backport-numpy", "convlab.numpy_backend:NumpyBackend")]
    monkeypatch.setattr(registry.metadata, "entry_points", lambda group: found)
    monkeypatch.setattr(registry, "_entry_points_loaded", False)
    monkeypatch.setattr(registry, "_entry_points", {})
    try:
        assert "backport-numpy" in cl.backends()
        assert cl.corr2d([[1, 2], [3, 4]], [[1]], backend="backport-numpy").tolist() == [[1, 2], [3, 4]]
    finally:
        registry._factories.pop("backport-numpy", None)
        registry._instances.pop("backport-numpy", None)


def test_with_the_importlib_metadata_backport_imported_first():
    """The same, end to end: a process that imports the backport before convlab still runs every call."""
    code = (
        "import importlib.util, sys\n"
        "if importlib.util.find_spec('importlib_metadata') is None: sys.exit(3)\n"
        "import importlib_metadata, numpy as np, convlab as cl\n"
        "print(sorted(cl.backends()))\n"
        "print(cl.corr2d(np.ones((3, 3)), np.ones((2, 2))).tolist())\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    if result.returncode == 3:
        pytest.skip("the importlib_metadata backport is not installed in this environment")
    assert result.returncode == 0, result.stderr
    assert "[[4.0, 4.0], [4.0, 4.0]]" in result.stdout
