"""Backend selection (DESIGN.md section 2) and the registry; lazy framework imports: tests/test_backend_contract.py."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

import convlab as cl
from convlab.numpy_backend import NumpyBackend


class Boxed:
    """A third party's tensor type: an array in a box."""

    def __init__(self, array):
        self.array = np.asarray(array)

    shape = property(lambda self: self.array.shape)
    dtype = property(lambda self: self.array.dtype)

    def __add__(self, other):
        return Boxed(self.array + other.array)

    def __getitem__(self, index):
        return Boxed(self.array[index])

    def reshape(self, shape):
        return Boxed(self.array.reshape(shape))


class BoxedBackend(NumpyBackend):
    """A plugin written the way a third party would: every primitive delegates to NumPy's in a box."""

    name = "boxed"
    framework_modules = (__name__,)
    package = "boxed-convlab"

    def is_tensor(self, x):
        return isinstance(x, Boxed)

    def asarray(self, x, dtype):
        return Boxed(np.asarray(x.array if isinstance(x, Boxed) else x, dtype=dtype))

    def to_numpy(self, x):
        return x.array

    def conv2d(self, x, k, *args):
        return Boxed(super().conv2d(x.array, k.array, *args))

    def pool2d(self, x, *args):
        return Boxed(super().pool2d(x.array, *args))


@pytest.fixture
def boxed():
    cl.register_backend("boxed", BoxedBackend)
    yield cl.get_backend("boxed")


def test_registered_backend_is_inferred_from_its_tensors(boxed):
    y = cl.corr2d(Boxed([[0.0, 1.0, 2.0], [3.0, 4.0, 5.0], [6.0, 7.0, 8.0]]), [[0, 1], [2, 3]])
    assert isinstance(y, Boxed)
    np.testing.assert_array_equal(y.array, [[19, 25], [37, 43]])
    assert "boxed" in cl.backends()


def test_tensors_of_two_backends_are_a_type_error(boxed, backend):
    if backend.name == "numpy":
        pytest.skip("NumPy arrays are backend-neutral: they never conflict")
    X = backend.asarray(np.ones((3, 3), np.float32), "float32")
    with pytest.raises(cl.ConvlabTypeError, match=f"X is a {backend.name} tensor but K is a boxed tensor"):
        cl.corr2d(X, Boxed(np.ones((2, 2))))


def test_explicit_backend_never_converts_a_framework_tensor(boxed, backend):
    with pytest.raises(cl.ConvlabTypeError, match="never converts a framework tensor silently"):
        cl.conv2d(Boxed(np.ones((3, 3))), np.ones((2, 2)), backend=backend.name if backend.name != "boxed" else "numpy")


def test_precedence(boxed, monkeypatch):
    X = np.ones((3, 3))
    monkeypatch.setenv("CONVLAB_BACKEND", "boxed")
    assert isinstance(cl.corr2d(X, [[1]]), Boxed)  # the environment variable
    monkeypatch.delenv("CONVLAB_BACKEND")
    assert isinstance(cl.corr2d(X, [[1]]), np.ndarray)  # the default
    cl.set_backend("boxed")
    try:
        assert isinstance(cl.corr2d(X, [[1]]), Boxed)  # set_backend
        with cl.use_backend("numpy"):
            assert isinstance(cl.corr2d(X, [[1]]), np.ndarray)  # the innermost scope wins
            assert isinstance(cl.corr2d(X, [[1]], backend="boxed"), Boxed)  # the call wins over everything
            assert isinstance(cl.corr2d(Boxed(X), [[1]]), Boxed)  # a tensor wins over scopes
    finally:
        cl.set_backend(None)


def test_use_backend_does_not_leak_across_threads(boxed):
    seen = {}
    inside, release = threading.Event(), threading.Event()

    def scoped():
        with cl.use_backend("boxed"):
            seen["scoped"] = type(cl.corr2d(np.ones((2, 2)), [[1]]))
            inside.set()
            release.wait(5)

    worker = threading.Thread(target=scoped)
    worker.start()
    inside.wait(5)
    seen["other"] = type(cl.corr2d(np.ones((2, 2)), [[1]]))
    release.set()
    worker.join()
    assert seen == {"scoped": Boxed, "other": np.ndarray}


def test_use_backend_does_not_leak_across_asyncio_tasks(boxed):
    async def scoped(name, gate):
        with cl.use_backend(name):
            await gate.wait()
            return type(cl.corr2d(np.ones((2, 2)), [[1]]))

    async def main():
        gate = asyncio.Event()
        tasks = [asyncio.create_task(scoped(n, gate)) for n in ("boxed", "numpy")]
        await asyncio.sleep(0)
        gate.set()
        return await asyncio.gather(*tasks)

    assert asyncio.run(main()) == [Boxed, np.ndarray]


def test_backends_lists_installed_with_versions():
    listed = cl.backends()
    assert listed["numpy"] == np.__version__
    for version in listed.values():
        assert isinstance(version, str) and version
