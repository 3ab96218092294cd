"""The dask backend: blockwise conv2d / pool2d / conv2d_vjp on real schedulers, against the NumPy backend.

Every case runs on the threaded scheduler and on a ``distributed.LocalCluster`` of two worker processes
(one thread each); the lazy results of a whole grid are computed in one call per scheduler, so the cluster
costs one start-up and one round of tasks. Integer-valued inputs (the exact tier) must be bit-identical
to the NumPy backend on the same NumPy arrays; normal floats within the DESIGN.md section 4 bound. The grid
covers chunks of 1, 2, 3, 5 and the whole axis, strides 1-3, dilations 1-2, every padding form, both
layouts, chunked channels and chunked kernels; hypothesis adds random chunkings. Also: laziness (inputs
whose blocks raise when computed), output chunks and dtypes, the book's functions, layers, training with
the analytic gradient, and bad input.
"""

from __future__ import annotations

import itertools
import subprocess
import sys

import numpy as np
import pytest
from conftest import require_adapter

import convlab as cl
from convlab import testing

dask = pytest.importorskip("dask")
require_adapter("dask")
da = pytest.importorskip("dask.array")
pytestmark = pytest.mark.only_backend("dask")  # run only in the dask session (before the cluster starts)

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

RNG = np.random.default_rng(1616)
PADDINGS = [0, 2, (1, 2), ((0, 2), (3, 1)), "valid", "same", 4]  # 4: wider than the 3x2 kernel's halo
CHUNKS = [1, 2, 3, 5, "full"]


@pytest.fixture(scope="module")
def cluster():
    """Two worker processes with one thread each: tasks are pickled, shipped and run in other interpreters."""
    distributed = pytest.importorskip("distributed")
    with (
        distributed.LocalCluster(
            n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None, memory_limit="1GiB"
        ) as local,
        distributed.Client(local, set_as_default=False) as client,
    ):
        yield client


class Scheduler:
    """``scheduler(list of dask arrays) -> list of NumPy arrays``; ``pick(cases)``: the cases it runs.

    The threaded scheduler runs every case of a grid. The cluster runs every ``every``-th one (each grid cycles
    its options so that such a subset still holds every chunk size, stride, padding form, dilation, layout and
    both tiers): on this shared two-core machine a task costs the cluster several milliseconds.
    """

    def __init__(self, name, run, every):
        self.name, self.run, self.every = name, run, every

    def __call__(self, arrays):
        return self.run(list(arrays))

    def pick(self, cases):
        return cases[:: self.every]


@pytest.fixture(params=["threads", "distributed"])
def compute(request):
    if request.param == "threads":
        return Scheduler("threads", lambda arrays: list(dask.compute(*arrays, scheduler="threads")), 1)
    client = request.getfixturevalue("cluster")
    return Scheduler("distributed", lambda arrays: client.gather(client.compute(arrays)), 3)


def integers(shape, low=-3, high=4):
    return RNG.integers(low, high, size=shape).astype(np.float32)


def normal(shape, dtype=np.float32):
    return RNG.normal(size=shape).astype(dtype)


def chunked(x, size, axes=(1, 2, 3)):
    """``x`` as a dask array with chunks of ``size`` ("full": one chunk) along ``axes``, 1 along the batch."""
    chunks = [1] + [x.shape[a] if size == "full" or a not in axes else size for a in (1, 2, 3)]
    return da.from_array(x, chunks=tuple(chunks))


def assert_all(failures):
    assert not failures, f"{len(failures)} cases differ:\n" + "\n".join(failures[:20])


# -- the package ----------------------------------------------------------------------------------


def test_importing_the_adapter_does_not_import_dask():
    code = "import sys, convlab, convlab_dask; assert 'dask' not in sys.modules, 'dask imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_registered_through_the_entry_point():
    from importlib import metadata

    (entry,) = [e for e in metadata.entry_points(group="convlab.backends") if e.name == "dask"]
    assert entry.value == "convlab_dask:DaskBackend"
    assert cl.backends()["dask"] == dask.__version__
    backend = cl.get_backend("dask")
    assert backend.framework_modules == ("dask",) and not backend.has_autodiff


def test_dask_arrays_select_the_backend_and_stay_lazy_dask_arrays():
    X, K = da.from_array(np.arange(36.0).reshape(6, 6), chunks=2), np.array([[0.0, 1.0], [2.0, 3.0]])
    y = cl.corr2d(X, K)
    assert isinstance(y, da.Array) and y.shape == (5, 5) and y.dtype == np.float64
    np.testing.assert_array_equal(y.compute(), cl.corr2d(X.compute(), K))


def test_numpy_inputs_under_the_dask_backend_become_dask_arrays():
    x, k = integers((1, 2, 9, 9)), integers((3, 2, 3, 3))
    with cl.use_backend("dask"):
        y = cl.conv2d(x, k, padding=1)
    assert isinstance(y, da.Array)
    # the blocks run on the NumPy backend by name: a default backend of "dask" must not recurse
    cl.set_backend("dask")
    try:
        got = y.compute(scheduler="sync")
    finally:
        cl.set_backend(None)
    np.testing.assert_array_equal(got, cl.conv2d(x, k, padding=1, backend="numpy"))


# -- the grids, on both schedulers ----------------------------------------------------------------


def conv_grid():
    """(id, X, K, bias, kwargs, exact): every chunk size x stride x padding; dilation and layout cycle."""
    cases = []
    for index, (size, stride, padding) in enumerate(itertools.product(CHUNKS, (1, 2, 3), PADDINGS)):
        dilation = 1 + index % 2
        channels_last = (index // 2) % 2 == 1
        exact = (index // 3) % 3 != 2
        make = integers if exact else normal
        spatial = (6, 5) if size == 1 else (9, 8)  # chunks of 1: one task per output pixel, keep it small
        x, k, bias = make((1 + index % 2, 3) + spatial), make((4, 3, 3, 2)), make((4,))
        if channels_last:
            x, k = np.ascontiguousarray(x.transpose(0, 2, 3, 1)), np.ascontiguousarray(k.transpose(2, 3, 1, 0))
        kwargs = dict(stride=stride, padding=padding, dilation=dilation,
                      data_format="channels_last" if channels_last else "channels_first")  # fmt: skip
        axes = (1, 2) if channels_last else (2, 3)  # spatial chunks; channels chunked in their own cases
        case_id = f"chunks={size} stride={stride} padding={padding} dilation={dilation} {kwargs['data_format']}"
        cases.append((case_id, x, k, bias if index % 4 else None, kwargs, exact, axes, size))
    return cases


def check_conv(case_id, got, x, k, bias, kwargs, exact, failures):
    reference = cl.conv2d(x, k, bias, backend="numpy", **kwargs)
    if got.shape != reference.shape or got.dtype != reference.dtype:
        failures.append(f"{case_id}: shape/dtype {got.shape} {got.dtype} vs {reference.shape} {reference.dtype}")
    elif exact and not np.array_equal(got, reference):
        failures.append(f"{case_id}: not bit-identical (max diff {np.abs(got - reference).max()})")
    elif not exact:
        try:
            testing.assert_close_to_reference(got, x, k, bias, exact=False, **kwargs)
        except AssertionError as error:
            failures.append(f"{case_id}: {error}")


def test_conv2d_grid(compute):
    cases = compute.pick(conv_grid())
    lazy = [cl.conv2d(chunked(x, size, axes), k, bias, **kwargs) for _, x, k, bias, kwargs, _, axes, size in cases]
    assert all(isinstance(y, da.Array) for y in lazy)
    failures = []
    for (case_id, x, k, bias, kwargs, exact, _, _), got in zip(cases, compute(lazy)):
        check_conv(case_id, got, x, k, bias, kwargs, exact, failures)
    assert_all(failures)


def pool_grid():
    cases = []
    windows = [((2, 2), 0), ((3, 3), 1), ((3, 2), ((0, 1), (1, 0))), ((3, 3), "same"), ((2, 3), "valid")]
    for index, (size, stride, (window, padding)) in enumerate(itertools.product(CHUNKS, (1, 2, 3), windows)):
        mode = ("max", "avg")[index % 2]
        channels_last = (index // 2) % 2 == 1
        count_include_pad = (index // 4) % 2 == 0
        shape = (1 + index % 3 // 2, 2) + ((6, 5) if size == 1 else (8, 7))
        x = normal(shape) if (index // 3) % 3 else integers(shape)
        if channels_last:
            x = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
        kwargs = dict(stride=stride, padding=padding, count_include_pad=count_include_pad,
                      data_format="channels_last" if channels_last else "channels_first")  # fmt: skip
        case_id = f"chunks={size} {mode} {window} stride={stride} padding={padding} {kwargs}"
        cases.append((case_id, x, window, mode, kwargs, size))
    return cases


def test_pool2d_grid(compute):
    """Pooling is bit-identical to the NumPy backend for any floats: each block runs the same per-pixel code."""
    cases = compute.pick(pool_grid())
    lazy = [cl.pool2d(chunked(x, size), window, mode, **kwargs) for _, x, window, mode, kwargs, size in cases]
    failures = []
    for (case_id, x, window, mode, kwargs, _), got in zip(cases, compute(lazy)):
        reference = cl.pool2d(x, window, mode, backend="numpy", **kwargs)
        if got.shape != reference.shape or not np.array_equal(got, reference):
            failures.append(case_id)
    assert_all(failures)


def test_conv2d_vjp_grid(compute):
    """The analytic gradients run blockwise too: dK is an image-sized kernel (dY), summed over its tiles
    (dY in chunks of 4: one partial correlation per chunk of dY)."""
    cases, lazy = [], []
    grid = list(itertools.product((1, 3, "full"), (1, 2, 3), (0, "same", ((0, 2), (3, 1)))))
    for index, (size, stride, padding) in enumerate(grid):
        if compute.every > 1 and (index % 2 or size == 1):  # the cluster: chunks of 1 are a task per pixel
            continue
        x, k = integers((1 + (index // 2) % 2, 2, 7, 8)), integers((2, 2, 3, 2))
        kwargs = dict(stride=stride, padding=padding, dilation=1 + (index // 3) % 2)
        dy = integers(cl.output_shape(x, k, **kwargs))
        cases.append((f"chunks={size} {kwargs}", x, k, dy, kwargs))
        lazy.extend(cl.conv2d_vjp(chunked(x, size), k, chunked(dy, 4 if size == 1 else size), **kwargs))
    got = compute(lazy)
    failures = []
    for index, (case_id, x, k, dy, kwargs) in enumerate(cases):
        for name, value, reference in zip(("dX", "dK", "dbias"), got[3 * index : 3 * index + 3],
                                          cl.conv2d_vjp(x, k, dy, backend="numpy", **kwargs)):  # fmt: skip
            if value.shape != reference.shape or not np.array_equal(value, reference):
                failures.append(f"{case_id} {name}")
    assert_all(failures)


def test_channel_chunks_and_chunked_kernels(compute):
    """Input channels in several chunks are gathered per block; a kernel chunked along every axis (25 tiles of a
    5x5 kernel: a two-level sum tree) and a chunked bias give the same bits in the exact tier."""
    x, k, bias = integers((2, 5, 12, 10)), integers((3, 5, 5, 5)), integers((3,))
    xl, kl = np.ascontiguousarray(x.transpose(0, 2, 3, 1)), np.ascontiguousarray(k.transpose(2, 3, 1, 0))
    runs = [
        (x, k, dict(padding=2), (1, 2, 4, 3), (1, 2, 5, 5), "channels_first"),
        (x, k, dict(stride=2, padding="same", dilation=2), (2, 3, 5, 5), (2, 2, 1, 1), "channels_first"),
        (xl, kl, dict(stride=3, padding=((1, 0), (4, 2))), (1, 4, 3, 2), (1, 2, 3, 1), "channels_last"),
        (xl, kl, dict(padding="valid", dilation=(2, 1)), (2, 12, 10, 1), (5, 5, 1, 3), "channels_last"),
    ]
    lazy = []
    for xv, kv, kwargs, x_chunks, k_chunks, data_format in runs:
        lazy.append(cl.conv2d(da.from_array(xv, chunks=x_chunks), da.from_array(kv, chunks=k_chunks),
                              da.from_array(bias, chunks=2), data_format=data_format, **kwargs))  # fmt: skip
        assert lazy[-1].chunks[3 if data_format == "channels_last" else 1] == (3,)
    failures = []
    for (xv, kv, kwargs, x_chunks, k_chunks, data_format), got in zip(runs, compute(lazy)):
        check_conv(f"{x_chunks} {k_chunks} {kwargs}", got, xv, kv, bias, dict(kwargs, data_format=data_format),
                   True, failures)  # fmt: skip
    assert_all(failures)


def test_book_functions(compute):
    X2, K2 = integers((9, 11)), integers((2, 3))
    X3, K3, K4, K1 = integers((3, 8, 7)), integers((3, 2, 2)), integers((4, 3, 3, 2)), integers((2, 3, 1, 1))
    runs = [
        (cl.corr2d, (X2, K2), (3, 4)),
        (cl.corr2d_multi_in, (X3, K3), (2, 3, 2)),
        (cl.corr2d_multi_in_out, (X3, K4), (1, 5, 3)),
        (cl.corr2d_multi_in_out_1x1, (X3, K1), (2, 4, 7)),
        (cl.corr2d_matmul, (X2, K2), (4, 5)),
        (lambda X, K: cl.pool2d(X, (2, 3), "avg", stride=2, padding=1), (X3,), (1, 3, 2)),
        (lambda X, K: cl.conv_transpose2d(X, K, stride=2, padding=1), (X3, integers((3, 2, 3, 3))), (3, 4, 4)),
    ]
    lazy = [fn(da.from_array(args[0], chunks=chunks), *args[1:]) if len(args) > 1
            else fn(da.from_array(args[0], chunks=chunks), None) for fn, args, chunks in runs]  # fmt: skip
    assert all(isinstance(y, da.Array) for y in lazy)
    for (fn, args, _), got in zip(runs, compute(lazy)):
        expected = fn(*args) if len(args) > 1 else fn(args[0], None)
        np.testing.assert_array_equal(got, expected)


def test_a_larger_image_on_the_cluster(cluster):
    """A 500x600 two-image batch in 128-pixel chunks, generated lazily, correlated, pooled and reduced there."""
    x = da.random.default_rng(7).integers(0, 16, size=(2, 1, 500, 600), chunks=(1, 1, 128, 128)).astype("float32")
    k = integers((2, 1, 3, 3))
    y = cl.pool2d(cl.conv2d(x, k, padding="same", stride=(1, 2)), 3, stride=2, padding=1)
    total, sample = cluster.gather(cluster.compute([y.sum(dtype="float64"), y[:, :, 100:160, 50:140]]))
    whole = x.compute()
    reference = cl.pool2d(cl.conv2d(whole, k, padding="same", stride=(1, 2), backend="numpy"), 3, stride=2, padding=1)
    np.testing.assert_array_equal(sample, reference[:, :, 100:160, 50:140])
    assert total == reference.sum(dtype="float64")


# -- random chunkings (threaded scheduler) -------------------------------------------------------------


def _partition(draw, size):
    cuts = draw(st.lists(st.integers(1, size - 1), max_size=4, unique=True)) if size > 1 else []
    edges = [0, *sorted(cuts), size]
    return tuple(b - a for a, b in zip(edges[:-1], edges[1:]))


@st.composite
def conv_problems(draw):
    height, width = draw(st.integers(1, 12)), draw(st.integers(1, 12))
    kernel_h, kernel_w = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    pads = tuple((draw(st.integers(0, 4)), draw(st.integers(0, 4))) for _ in range(2))
    padding = draw(st.sampled_from([pads, "same", "valid", pads[0][0]]))
    try:
        cl.output_shape((height, width), (kernel_h, kernel_w), stride=stride, padding=padding, dilation=dilation)
    except cl.ConvlabValueError:
        padding = "same"  # the window does not fit this input: "same" always fits
    channels, out_channels = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    x, k = integers((2, channels, height, width)), integers((out_channels, channels, kernel_h, kernel_w))
    chunks = ((1, 1), _partition(draw, channels), _partition(draw, height), _partition(draw, width))
    return x, k, dict(stride=stride, padding=padding, dilation=dilation), chunks


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(conv_problems())
def test_random_chunkings_are_bit_identical(problem):
    x, k, kwargs, chunks = problem
    y = cl.conv2d(da.from_array(x, chunks=chunks), k, **kwargs)
    reference = cl.conv2d(x, k, backend="numpy", **kwargs)
    assert y.shape == reference.shape and y.dtype == reference.dtype
    assert sum(y.chunks[2]) == reference.shape[2] and min(y.chunks[2]) >= 1
    np.testing.assert_array_equal(y.compute(scheduler="threads"), reference)
    if min(x.shape[2:]) >= 2:
        pooled = cl.pool2d(da.from_array(x, chunks=chunks), 2, "avg", stride=kwargs["stride"], padding=1,
                           count_include_pad=False)  # fmt: skip
        np.testing.assert_array_equal(
            pooled.compute(scheduler="threads"),
            cl.pool2d(x, 2, "avg", stride=kwargs["stride"], padding=1, count_include_pad=False, backend="numpy"),
        )


# -- laziness, chunks and dtypes -------------------------------------------------------------------


def _explode(block):
    raise RuntimeError("a block was computed while the graph was being built")


def test_building_computes_nothing():
    X = da.ones((2, 3, 64, 64), chunks=(1, 3, 16, 16)).map_blocks(_explode, dtype=np.float32)
    K = da.ones((4, 3, 3, 3), chunks=2).map_blocks(_explode, dtype=np.float32)
    y = cl.conv2d(X, K, np.ones(4), stride=2, padding="same")
    pooled = cl.pool2d(y, 2, stride=2)
    dX, dK, dbias = cl.conv2d_vjp(X, K, da.ones(y.shape, chunks=8), stride=2, padding="same")
    lazy = [y, pooled, dX, dK, dbias, cl.corr2d(X[0, 0], np.ones((2, 2))), cl.Conv2D(3, 3, 2, backend="dask")(X)]
    assert all(isinstance(a, da.Array) for a in lazy)
    with pytest.raises(RuntimeError, match="was computed"):  # the graph does lead back to the exploding blocks
        pooled.compute(scheduler="sync")


def test_autotuning_times_the_blocks_never_the_graph(tmp_path, monkeypatch):
    """With autotuning on, building a dask result still computes nothing; each block's NumPy call is tuned."""
    import json

    from convlab import autotune

    monkeypatch.setenv("CONVLAB_AUTOTUNE_CACHE", str(tmp_path / "autotune.json"))
    autotune.clear_autotune()
    cl.set_autotune(True)
    try:
        X = da.ones((1, 2, 32, 32), chunks=(1, 2, 16, 16)).map_blocks(_explode, dtype=np.float32)
        cl.pool2d(cl.conv2d(X, np.ones((3, 2, 3, 3), np.float32), padding=1), 2, stride=2)  # no RuntimeError
        x = integers((1, 2, 32, 32))
        y = cl.conv2d(da.from_array(x, chunks=(1, 2, 16, 16)), integers((3, 2, 3, 3)), padding=1)
        y.compute(scheduler="sync")
        winners = json.loads((tmp_path / "autotune.json").read_text())["winners"]
        assert winners and all("|numpy|" in key for key in winners)
    finally:
        cl.set_autotune(None)
        autotune.clear_autotune()


@pytest.mark.parametrize(
    "in_chunks, kwargs, out_chunks",
    [
        ((4, 4, 4), dict(padding="same"), (4, 4, 4)),  # stride 1 "same": the input's chunks
        ((4, 4, 4), dict(padding="valid"), (3, 4, 3)),  # each edge chunk loses a row
        ((4, 4, 4), dict(padding="same", stride=2), (2, 2, 2)),  # stride 2: half of each chunk
        ((1,) * 12, dict(padding="valid", stride=3), (1, 1, 1, 1)),  # chunks of 1: no empty output chunks
        ((5, 7), dict(padding=1, stride=3), (2, 2)),  # a stride that divides no chunk
    ],
)
def test_output_chunks_follow_the_input(in_chunks, kwargs, out_chunks):
    x = da.zeros((1, 2, sum(in_chunks), 6), chunks=((1,), (1, 1), in_chunks, (6,)), dtype=np.float32)
    y = cl.conv2d(x, np.ones((5, 2, 3, 3), np.float32), **kwargs)
    assert y.chunks == ((1,), (5,), out_chunks, y.chunks[3]) and y.dtype == np.float32


def test_pooling_keeps_batch_and_channel_chunks():
    x = da.zeros((3, 4, 12, 12), chunks=(2, (1, 3), (4, 4, 4), (5, 7)), dtype=np.float64)
    y = cl.pool2d(x, 2, "avg", stride=2)
    # output row p is the block of the input chunk holding row 2p: 5 + 7 gives rows 0-2 and 3-5
    assert y.chunks == ((2, 1), (1, 3), (2, 2, 2), (3, 3)) and y.dtype == np.float64
    x1 = da.zeros((1, 1, 12, 12), chunks=1, dtype=np.float32)  # chunks of 1: no empty output chunks
    assert cl.pool2d(x1, 2, stride=2).chunks[2:] == ((1,) * 6, (1,) * 6)


@pytest.mark.parametrize(
    "x_dtype, k_dtype, out_dtype",
    [
        ("float32", "float32", "float32"),
        ("float64", "float32", "float64"),
        ("float32", "float64", "float64"),
        ("int64", "float32", "float32"),
        ("bool", "int32", "float32"),
    ],  # fmt: skip
)
def test_dtypes_follow_the_core_rules(x_dtype, k_dtype, out_dtype):
    x = da.ones((1, 1, 6, 6), chunks=3, dtype=x_dtype)
    y = cl.conv2d(x, np.ones((1, 1, 2, 2), dtype=k_dtype))
    assert y.dtype == out_dtype and y.compute().dtype == out_dtype
    assert y._meta.dtype == out_dtype and cl.pool2d(x, 2).dtype == ("float64" if x_dtype == "float64" else "float32")


def test_reshapes_dask_refuses_rechunk_first():
    """dask reshapes only along chunk-aligned dimensions; the core's generic formulations need any reshape."""
    values = np.arange(24.0).reshape(1, 4, 6)
    x = da.from_array(values, chunks=(1, 3, 4))
    with pytest.raises(NotImplementedError):
        x.reshape((1, 3, 8))
    y = cl.get_backend("dask").reshape(x, (1, 3, 8))
    assert y.chunks == ((1,), (3,), (8,))  # the leading axis that stays keeps its chunks
    np.testing.assert_array_equal(y.compute(), values.reshape(1, 3, 8))


# -- training, layers ---------------------------------------------------------------------------------


def test_no_autodiff_points_to_the_analytic_gradient():
    with pytest.raises(cl.ConvlabValueError, match="gradient='analytic'"):
        cl.get_backend("dask").value_and_grad(lambda params: params[0])


def test_train_kernel_runs_the_analytic_gradient_on_dask_arrays():
    X = cl.images.stripes()
    Y = cl.corr2d(X, cl.kernels.edge())
    expected = cl.train_kernel(X, Y, epochs=6, backend="numpy")
    result = cl.train_kernel(da.from_array(X, chunks=3), da.from_array(Y, chunks=4), epochs=6)
    assert result.backend == "dask" and result.gradient == "analytic"
    np.testing.assert_allclose(result.losses, expected.losses, rtol=1e-5)


def test_layers_are_plain_classes_returning_lazy_arrays():
    layer = cl.Conv2D(3, 2, 4, padding=1, seed=0, backend="dask")
    twin = cl.Conv2D(3, 2, 4, padding=1, seed=0, backend="numpy")
    assert type(layer).__name__ == "DaskConv2D" and isinstance(layer.weight, np.ndarray)
    x = integers((2, 2, 9, 9))
    y = layer(da.from_array(x, chunks=(1, 1, 4, 4)))
    assert isinstance(y, da.Array)
    np.testing.assert_array_equal(y.compute(), twin(x))
    dy = integers(y.shape)
    for got, expected in zip(layer.backward(da.from_array(x, chunks=4), dy), twin.backward(x, dy)):
        np.testing.assert_array_equal(got.compute(), expected)
    pool = cl.MaxPool2D(2, backend="dask")
    np.testing.assert_array_equal(pool(da.from_array(x, chunks=3)).compute(), cl.MaxPool2D(2)(x))


# -- bad input ------------------------------------------------------------------------------------------


def _unknown_chunks(shape):
    """A dask array whose first dimension is unknown (nan) until computed: rows picked by a lazy mask."""
    return da.ones(shape, chunks=2)[da.ones(shape[0], chunks=2) > 0]


@pytest.mark.parametrize("argument", ["X", "K", "dY"])
def test_unknown_chunk_sizes_name_the_argument(argument):
    x, k = np.ones((4, 4)), np.ones((2, 2))
    unknown = _unknown_chunks((4, 4) if argument != "K" else (2, 2))
    assert np.isnan(unknown.shape[0])
    with pytest.raises(cl.ConvlabValueError, match=rf"{argument} has unknown dimensions .*compute_chunk_sizes"):
        if argument == "dY":
            cl.conv2d_vjp(x, k, _unknown_chunks((3, 3)))
        else:
            cl.corr2d(unknown if argument == "X" else da.from_array(x), unknown if argument == "K" else k)
    with pytest.raises(cl.ConvlabValueError, match="X has unknown dimensions"):
        cl.pool2d(_unknown_chunks((4, 4)), 2)


def test_a_dask_kernel_is_fine_and_a_numpy_backend_refuses_dask_arrays():
    x = integers((1, 1, 7, 7))
    y = cl.conv2d(x, da.from_array(integers((1, 1, 3, 3)), chunks=2))  # NumPy X, dask K: dask runs it
    assert isinstance(y, da.Array)
    with pytest.raises(cl.ConvlabTypeError, match="never converts a framework tensor silently"):
        cl.conv2d(da.from_array(x), np.ones((1, 1, 3, 3)), backend="numpy")


def test_a_dask_array_with_another_frameworks_tensor_is_a_type_error():
    torch = pytest.importorskip("torch")
    try:
        cl.get_backend("torch")
    except cl.BackendNotAvailableError:
        pytest.skip("convlab-torch not installed")
    with pytest.raises(cl.ConvlabTypeError, match="X is a dask tensor but K is a torch tensor"):
        cl.corr2d(da.ones((4, 4), chunks=2), torch.ones(2, 2))


class Boxed:
    """A stand-in for another framework's tensor type, for sessions without torch."""

    def __init__(self, array):
        self.array, self.shape, self.dtype = np.asarray(array), np.shape(array), np.asarray(array).dtype


def test_a_dask_array_with_a_registered_frameworks_tensor_is_a_type_error():
    from convlab import registry
    from convlab.numpy_backend import NumpyBackend

    class BoxedBackend(NumpyBackend):
        name, framework_modules = "boxed-for-dask", (__name__,)

        def is_tensor(self, x):
            return isinstance(x, Boxed)

    cl.register_backend(BoxedBackend.name, BoxedBackend)
    try:
        with pytest.raises(cl.ConvlabTypeError, match="X is a dask tensor but K is a boxed-for-dask tensor"):
            cl.corr2d(da.ones((4, 4), chunks=2), Boxed(np.ones((2, 2))))
    finally:
        registry._factories.pop(BoxedBackend.name, None)
        registry._instances.pop(BoxedBackend.name, None)
        registry._by_type.clear()
