"""convlab.testing: the section 4 rule catches wrong results, bundles round-trip and refuse bad files."""

from __future__ import annotations

import dataclasses
import pickle
import subprocess
import sys
import zipfile

import numpy as np
import pytest

import convlab as cl
from convlab import testing
from convlab.numpy_backend import NumpyBackend


def test_backend_passes_every_case(backend, supports_float64):
    results = testing.run_cases(backend.name)
    report = testing.compare([results])
    assert report["problems"] == []
    applicable = set(testing.CASES_BY_ID) - set(results.not_applicable)
    assert applicable == set(results.outputs)
    if backend.has_autodiff:  # frameworks run every case, autodiff included; float64 only where enabled
        skipped = {case_id for case_id in results.not_applicable if not supports_float64 and "float64" in case_id}
        assert set(results.not_applicable) == skipped, results.not_applicable


class OffByOnePad(NumpyBackend):
    """A broken backend: pads one extra row at the top whenever it pads at all."""

    name = "broken-pad"

    def conv2d(self, x, k, bias, geometry):
        (top, bottom), cols = geometry.pads
        if bottom:  # the same total, one row moved to the top: the output keeps its shape
            geometry = dataclasses.replace(geometry, pads=((top + 1, bottom - 1), cols))
        return super().conv2d(x, k, bias, geometry)


class FlippedKernel(NumpyBackend):
    """A broken backend: true convolution (flipped kernel) instead of cross-correlation."""

    name = "broken-flip"

    def conv2d(self, x, k, bias, geometry):
        axes = (0, 1) if geometry.channels_last else (2, 3)
        return super().conv2d(x, np.flip(k, axes), bias, geometry)


class SloppyAverage(NumpyBackend):
    """A broken backend: average pooling that ignores count_include_pad."""

    name = "broken-avg"

    def pool2d(self, x, geometry):
        return super().pool2d(x, dataclasses.replace(geometry, count_include_pad=True, counts=None))


@pytest.mark.parametrize("broken", [OffByOnePad, FlippedKernel, SloppyAverage])
def test_deliberately_wrong_backends_are_caught(broken):
    cl.register_backend(broken.name, broken)
    report = testing.compare([testing.run_cases("numpy"), testing.run_cases(broken.name)])
    assert any(problem.startswith(broken.name) for problem in report["problems"])
    assert any(problem.startswith(f"numpy vs {broken.name}") for problem in report["problems"])
    assert "VIOLATION" in {cell for row in report["table"].values() for cell in row.values()}


def test_off_by_one_ulp_in_the_exact_tier_is_caught():
    case = testing.CASES_BY_ID["chapter/corr2d"]
    reference, bounds = testing.reference_case(case)
    outputs = [np.nextafter(reference[0].astype(np.float32), np.float32(np.inf))]
    assert testing.judge(case, outputs, reference, bounds).status == "violation"


def test_bound_tier_allows_rounding_but_not_more():
    case = testing.CASES_BY_ID["random/float32/1"]
    reference, bounds = testing.reference_case(case)
    rounded = [reference[0].astype(np.float32)]
    assert testing.judge(case, rounded, reference, bounds).status in ("exact", "bound")
    wrong = [rounded[0] + np.float32(1e-3) * np.abs(rounded[0]).max()]
    assert testing.judge(case, wrong, reference, bounds).status == "violation"


def test_assert_close_to_reference_and_backends_agree(backend):
    rng = np.random.default_rng(0)
    X, K = rng.normal(size=(2, 3, 9, 9)).astype(np.float32), rng.normal(size=(4, 3, 3, 3)).astype(np.float32)
    y = cl.conv2d(backend.asarray(X, "float32"), backend.asarray(K, "float32"), stride=2, padding="same")
    assert testing.assert_close_to_reference(y, X, K, stride=2, padding="same") <= 1
    flipped = cl.conv2d(
        backend.asarray(X, "float32"), backend.asarray(K[:, :, ::-1, ::-1].copy(), "float32"), stride=2, padding="same"
    )
    with pytest.raises(AssertionError, match="times the bound"):
        testing.assert_close_to_reference(flipped, X, K, stride=2, padding="same")
    ints = np.arange(9.0).reshape(3, 3)
    assert (
        testing.assert_close_to_reference(
            cl.corr2d(backend.asarray(ints, "float32"), backend.asarray(np.ones((2, 2)), "float32")),
            ints,
            np.ones((2, 2)),
        )
        == 0.0
    )

    def edges_then_pool(image):
        return cl.pool2d(cl.corr2d(image, cl.kernels.edge()), 2, "avg")

    assert testing.assert_backends_agree(edges_then_pool, cl.images.stripes(), backends=["numpy", backend.name]) == {
        "numpy": "ok",
        backend.name: "ok",
    }
    with pytest.raises(AssertionError, match="differs from the float64 NumPy reference"):
        testing.assert_backends_agree(
            lambda image: cl.corr2d(image, np.ones((2, 2), np.float32)) + _nudge(image),
            cl.images.stripes(),
            backends=[backend.name],
        )


def _nudge(image):
    """Zero on the NumPy reference run (float64), one on any float32 run: a wrong answer on purpose."""
    return 0.0 if cl.get_backend("numpy").is_tensor(image) and image.dtype == np.float64 else 1.0


def test_bundle_round_trip(tmp_path):
    results = testing.run_cases("numpy")
    path = tmp_path / "numpy.npz"
    testing.save_bundle(str(path), [results])
    (loaded,) = testing.load_bundle(str(path))
    assert loaded.backend == "numpy" and loaded.meta["fingerprint"] == testing.fingerprint()
    assert loaded.meta["framework_version"] == np.__version__ and "precision_settings" in loaded.meta
    for case_id, outputs in results.outputs.items():
        for saved, original in zip(loaded.outputs[case_id], outputs):
            np.testing.assert_array_equal(saved, original)
    assert testing.compare([loaded])["problems"] == []


def test_bad_bundles_are_refused_clearly(tmp_path):
    good = tmp_path / "good.npz"
    testing.save_bundle(str(good), [testing.run_cases("numpy")])
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(good.read_bytes()[:500])
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not a zip file at all")
    pickled = tmp_path / "pickled.npz"
    np.savez(pickled, __meta__=np.asarray(["x"], dtype=object), payload=np.asarray([object()], dtype=object))
    raw_pickle = tmp_path / "raw.npz"
    raw_pickle.write_bytes(pickle.dumps({"evil": "os.system"}))
    stale = tmp_path / "stale.npz"
    np.savez(stale, __meta__=np.asarray('{"fingerprint": "0000", "backends": {}}'))
    foreign = tmp_path / "foreign.npz"
    np.savez(foreign, something=np.zeros(3))
    with zipfile.ZipFile(tmp_path / "empty.npz", "w"):
        pass
    expectations = {
        truncated: "corrupt or truncated",
        garbage: "not an .npz bundle",
        pickled: "pickled",
        raw_pickle: "not an .npz bundle",
        stale: "different case list",
        foreign: "not a convlab bundle",
        tmp_path / "empty.npz": "not a convlab bundle",
        tmp_path / "absent.npz": "no such file",
    }
    for path, message in expectations.items():
        with pytest.raises(cl.ConvlabValueError, match=message):
            testing.load_bundle(str(path))


def test_compare_command(tmp_path, capsys):
    path = tmp_path / "numpy.npz"
    assert testing.compare_command(["numpy"], str(path), [], [], False) == 0
    assert "chapter examples" in capsys.readouterr().out
    assert testing.compare_command(None, None, [str(path)], ["numpy"], False) == 0
    assert testing.compare_command(None, None, [str(path)], ["numpy", "mxnet"], False) == 1
    assert "mxnet: no results" in capsys.readouterr().out


def test_case_list_covers_the_issue():
    groups = {case.group for case in testing.CASES}
    ops = {case.op for case in testing.CASES}
    assert {
        "corr2d",
        "corr2d_multi_in",
        "corr2d_multi_in_out",
        "corr2d_multi_in_out_1x1",
        "pool2d",
        "conv2d",
        "conv2d_vjp",
        "conv2d_autodiff",
        "pool2d_autodiff",
        "train_kernel",
    } <= ops
    assert any("float64" in group for group in groups) and "cancellation" in groups
    paddings = {dict(case.kwargs).get("padding") for case in testing.CASES}
    assert {0, 1, (2, 1), ((0, 2), (1, 0)), "valid", "same"} <= paddings
    assert {dict(case.kwargs).get("seed") for case in testing.CASES if case.op == "train_kernel"} == {0, 1, 2, 3}
    assert len(testing.fingerprint()) == 16


def test_bundles_from_two_environments_load_together(tmp_path):
    """The README's MXNet workflow: each environment saves a bundle holding NumPy; the two load together and the
    same-named backends are told apart by environment and compared with each other too."""
    run = lambda *args: subprocess.run(  # noqa: E731
        [sys.executable, "-m", "convlab", "compare", *args], capture_output=True, text=True, check=False
    )
    first, second = str(tmp_path / "a.npz"), str(tmp_path / "b.npz")
    for path in (first, second):  # two processes, as two environments would be
        assert run("--backends", "numpy", "--save", path).returncode == 0
    result = run("--load", first, second, "--require", "numpy")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"numpy {np.__version__} [a.npz]" in result.stdout and f"numpy {np.__version__} [b.npz]" in result.stdout
    assert f"numpy {np.__version__} [a.npz] vs numpy {np.__version__} [b.npz]: exact" in result.stdout
    twice = run("--load", first, first)
    assert twice.returncode != 0 and "the same results given twice" in twice.stderr + twice.stdout
