"""Autotuning "auto" (cl.set_autotune): the winner is timed once per signature, persisted, never changes results."""

from __future__ import annotations

import json

import numpy as np
import pytest

import convlab as cl
from convlab import autotune


@pytest.fixture
def tuning(tmp_path, monkeypatch):
    path = tmp_path / "autotune.json"
    monkeypatch.setenv("CONVLAB_AUTOTUNE_CACHE", str(path))
    autotune.clear_autotune()
    cl.set_autotune(True)
    yield path
    cl.set_autotune(None)
    autotune.clear_autotune()


def _integers(shape, seed):
    return np.random.default_rng(seed).integers(-4, 5, shape).astype(np.float32)


@pytest.mark.parametrize(
    "x_shape, k_shape, options",
    [((1, 2, 40, 40), (3, 2, 5, 5), dict(stride=2, padding="same")), ((2, 8, 12, 12), (8, 8, 3, 3), dict(padding=1))],
)
def test_tuned_conv_equals_native(backend, tuning, x_shape, k_shape, options):
    X, K = _integers(x_shape, 0), _integers(k_shape, 1)
    x, k = backend.asarray(X, "float32"), backend.asarray(K, "float32")
    tuned = backend.to_numpy(cl.conv2d(x, k, **options))
    np.testing.assert_array_equal(tuned, backend.to_numpy(cl.conv2d(x, k, algorithm="native", **options)))
    winners = json.loads(tuning.read_text())["winners"]
    assert winners and set(winners.values()) <= {"native", "shift", "gemm"}
    owners = {backend.name, "numpy"} if backend.name == "dask" else {backend.name}  # dask tunes its NumPy blocks
    assert all(key.split("|")[1] in owners for key in winners)


def test_tuned_pooling_equals_native(backend, tuning):
    x = backend.asarray(_integers((1, 3, 33, 33), 2), "float32")
    for mode in ("max", "avg"):
        tuned = backend.to_numpy(cl.pool2d(x, 3, mode, stride=2, padding=1, count_include_pad=False))
        native = cl.pool2d(x, 3, mode, stride=2, padding=1, count_include_pad=False, algorithm="native")
        np.testing.assert_array_equal(tuned, backend.to_numpy(native))


def test_winners_persist_and_bad_entries_are_ignored(tuning):
    X, K = _integers((1, 1, 30, 30), 3), _integers((1, 1, 3, 3), 4)
    cl.conv2d(X, K)
    stored = json.loads(tuning.read_text())
    (key,) = stored["winners"]
    stored["winners"][key] = "__import__('os').system('false')"  # not an algorithm name: ignored, timed again
    tuning.write_text(json.dumps(stored))
    autotune._memory.clear()
    autotune._loaded_from = None
    cl.dispatch.clear_plans()
    np.testing.assert_array_equal(cl.conv2d(X, K), cl.conv2d(X, K, algorithm="native"))
    assert json.loads(tuning.read_text())["winners"][key] in ("native", "shift", "gemm")
    tuning.write_text("not json")
    autotune._loaded_from = None
    cl.dispatch.clear_plans()
    cl.conv2d(X, K)  # an unreadable file: time again, no error
    assert autotune.clear_autotune() == str(tuning) and not tuning.exists()


def test_environment_switch(monkeypatch):
    cl.set_autotune(None)
    monkeypatch.setenv("CONVLAB_AUTOTUNE", "1")
    assert cl.autotune_enabled()
    monkeypatch.setenv("CONVLAB_AUTOTUNE", "0")
    assert not cl.autotune_enabled()
    with pytest.raises(cl.ConvlabTypeError, match="enabled"):
        cl.set_autotune("yes")
