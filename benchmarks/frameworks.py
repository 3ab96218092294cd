"""What convlab is compared with on each backend: the framework's own ops and the book's loop.

One small class per framework; each imports its framework in ``load()`` only. ``ops()`` returns
the callables to time for one case and the (variant, convlab, reference) pairs to report:

* ``op`` is ``"conv2d"``, ``"max"`` or ``"avg"``; ``x`` is a float32 NCHW NumPy array, ``k`` an
  OIHW NumPy array (conv2d only), ``window`` the kernel or pooling window, ``pad`` a symmetric
  zero padding (conv2d only; pooling here never pads), stride 1 everywhere (the book's default).
* Every function in one case gets the same values, converted once, outside the timing.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Tuple

from harness import Timed

Pairs = List[Tuple[str, str, str]]  # (variant, convlab key, reference key)


def _no_sync(outs: list) -> None:
    """Eager CPU ops in NumPy and torch have finished when they return."""


def _unavailable() -> None:
    raise RuntimeError("convlab was not imported in this process")


class Framework:
    name = ""  # convlab's backend name
    modules: Tuple[str, ...] = ()  # distributions whose versions the results record

    def load(self, with_convlab: bool = True, native: bool = True) -> None:
        """Import convlab (unless only the native side is wanted) and the framework."""
        if with_convlab:
            import convlab

            self.cl = convlab

    def versions(self) -> Dict[str, str]:
        from importlib import metadata

        found = {}
        for module in ("convlab", f"convlab-{self.name}", "numpy", "scipy", *self.modules):
            try:
                found[module] = metadata.version(module)
            except metadata.PackageNotFoundError:
                pass
        return found

    def timed(self, fn: Callable[[], Any], blas: bool = False) -> Timed:
        return Timed(fn, self.sync, blas)

    def sync(self, outs: list) -> None:
        _no_sync(outs)

    def convlab(self, op: str, x: Any, k: Any, window, pad: int, **kw: Any) -> Callable[[], Any]:
        cl = getattr(self, "cl", None)
        if cl is None:  # loaded without convlab (the native side of the first-call probe)
            return _unavailable
        if op == "conv2d":
            return lambda: cl.conv2d(x, k, padding=pad, backend=self.name, **kw)
        return lambda: cl.pool2d(x, window, op, backend=self.name, **kw)

    def book_corr2d(self, X, K):
        """The book's corr2d (section 6.2.1) in this framework's ops: ``book_zeros`` and ``book_set``."""
        h, w = K.shape
        Y = self.book_zeros((X.shape[0] - h + 1, X.shape[1] - w + 1))
        for i in range(Y.shape[0]):
            for j in range(Y.shape[1]):
                Y = self.book_set(Y, i, j, X[i : i + h, j : j + w] * K)
        return Y

    def book_zeros(self, shape):
        """The book's output array of zeros."""
        raise NotImplementedError

    def book_set(self, Y, i, j, products):
        """Y with the sum of ``products`` written at (i, j), as the book writes it (here an item assignment)."""
        Y[i, j] = products.sum()
        return Y

    #: the framework's own memory counter, where it has one on CPU (see ``peak_bytes``)
    memory_counter = ""

    def peak_bytes(self, timed: Timed):
        """Bytes the framework's own counter saw allocated at the peak of one call, or None."""
        return None

    def matmul_gflops(self, n: int) -> Callable[[], Any]:
        """A float32 n x n matrix product (``2 n^3`` flops), to estimate the machine's peak."""
        raise NotImplementedError


class Numpy(Framework):
    """convlab's reference backend; scipy is the "native" op a NumPy user would otherwise call."""

    name = "numpy"

    def load(self, with_convlab: bool = True, native: bool = True) -> None:
        super().load(with_convlab)
        import numpy

        self.np = numpy
        if native:  # scipy is the "framework" here: its import is part of the native side's cost
            import scipy.ndimage
            import scipy.signal  # noqa: F401

    def tensor(self, a):
        return a

    def ops(self, op, x, k, window, pad, eager=False) -> Tuple[Dict[str, Timed], Pairs]:
        import scipy.ndimage as ndimage  # here, not in load(): the first-call probe counts scipy's import
        import scipy.signal as signal

        np = self.np
        single = x.shape[:2] == (1, 1)
        if single:  # scipy works on 2-D images; convlab gets the same 2-D arrays (the book's form)
            x = x[0, 0]
            k = None if k is None else k[0, 0]
        multi = op == "conv2d" and not single
        fns = {"convlab": self.timed(self.convlab(op, x, k, window, pad), blas=multi)}
        if op == "conv2d" and single:
            refs = {
                "scipy.signal.correlate2d": lambda: signal.correlate2d(x, k, mode="valid"),
                "scipy.ndimage.correlate": lambda: ndimage.correlate(x, k),  # "same"-size output
            }
        elif op == "conv2d":
            refs = {"numpy sliding_window_view + tensordot": lambda: _im2col_conv(np, x, k, pad)}
        else:  # ndimage filters give a "same"-size output; the window spans H and W only
            size = window if single else (1, 1) + tuple(window)
            name, filt = (
                ("maximum_filter", ndimage.maximum_filter)
                if op == "max"
                else ("uniform_filter", ndimage.uniform_filter)
            )
            refs = {"scipy.ndimage." + name: lambda: filt(x, size=size)}
        fns.update({key: self.timed(fn, blas=multi) for key, fn in refs.items()})
        return fns, [("", "convlab", key) for key in refs]

    def book_zeros(self, shape):
        return self.np.zeros(shape)

    def matmul_gflops(self, n):
        a = self.np.random.default_rng(0).standard_normal((n, n), dtype=self.np.float32)
        return self.timed(lambda: a @ a, blas=True)


def _im2col_conv(np, x, k, pad):
    """What a NumPy user writes for multi-channel convolution: a windowed view and one tensordot."""
    if pad:
        x = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    windows = np.lib.stride_tricks.sliding_window_view(x, k.shape[2:], axis=(2, 3))  # N,C,Ho,Wo,kh,kw
    return np.tensordot(windows, k, axes=((1, 4, 5), (1, 2, 3))).transpose(0, 3, 1, 2)


class Torch(Framework):
    name = "torch"
    modules = ("torch",)

    def load(self, with_convlab: bool = True, native: bool = True) -> None:
        super().load(with_convlab)
        import torch

        self.torch, self.F = torch, torch.nn.functional

    def tensor(self, a):
        return self.torch.from_numpy(a.copy())

    def ops(self, op, x, k, window, pad, eager=False):
        x, k = self.tensor(x), None if k is None else self.tensor(k)
        F = self.F
        refs = {
            "conv2d": ("torch.nn.functional.conv2d", lambda: F.conv2d(x, k, padding=pad)),
            "max": ("torch.nn.functional.max_pool2d", lambda: F.max_pool2d(x, window, stride=1)),
            "avg": ("torch.nn.functional.avg_pool2d", lambda: F.avg_pool2d(x, window, stride=1)),
        }
        label, ref = refs[op]
        return {"convlab": self.timed(self.convlab(op, x, k, window, pad)), label: self.timed(ref)}, [
            ("", "convlab", label)
        ]

    def book_zeros(self, shape):
        return self.torch.zeros(shape)

    def matmul_gflops(self, n):
        a = self.torch.randn(n, n, dtype=self.torch.float32)
        return self.timed(lambda: a @ a)


class Tensorflow(Framework):
    """tf.nn ops run on NHWC (TensorFlow's CPU kernels support no other layout); convlab is called
    on the same NHWC tensors (channels_last) and also on NCHW copies (channels_first)."""

    name = "tensorflow"
    modules = ("tensorflow", "tensorflow-cpu", "keras")

    def load(self, with_convlab: bool = True, native: bool = True) -> None:
        super().load(with_convlab)
        import tensorflow as tf

        self.tf = tf

    def tensor(self, a):
        return self.tf.constant(a)

    def sync(self, outs):
        # Eager CPU ops run synchronously, so the outputs are ready; .numpy() on the last one is the
        # documented sync and is paid once per repeat (a zero-copy view on CPU), not once per call.
        outs[-1].numpy()

    def ops(self, op, x, k, window, pad, eager=False):
        tf = self.tf
        x_cf, x_cl = self.tensor(x), self.tensor(x.transpose(0, 2, 3, 1))
        k_cf = None if k is None else self.tensor(k)
        k_cl = None if k is None else self.tensor(k.transpose(2, 3, 1, 0))
        if op == "conv2d":
            padding = "VALID" if pad == 0 else [[0, 0], [pad, pad], [pad, pad], [0, 0]]
            label, ref = "tf.nn.conv2d", lambda: tf.nn.conv2d(x_cl, k_cl, 1, padding)
        elif op == "max":
            label, ref = "tf.nn.max_pool2d", lambda: tf.nn.max_pool2d(x_cl, window, 1, "VALID")
        else:
            label, ref = "tf.nn.avg_pool2d", lambda: tf.nn.avg_pool2d(x_cl, window, 1, "VALID")
        fns = {
            "convlab channels_last": self.timed(self.convlab(op, x_cl, k_cl, window, pad, data_format="channels_last")),
            "convlab channels_first": self.timed(self.convlab(op, x_cf, k_cf, window, pad)),
            label: self.timed(ref),
        }
        return fns, [
            ("channels_last", "convlab channels_last", label),
            ("channels_first", "convlab channels_first", label),
        ]

    memory_counter = "tf.config.experimental.get_memory_info('CPU:0') peak"

    def peak_bytes(self, timed):
        memory = self.tf.config.experimental
        memory.reset_memory_stats("CPU:0")
        before = memory.get_memory_info("CPU:0")["current"]
        out = [timed.fn()]
        timed.sync(out)
        return memory.get_memory_info("CPU:0")["peak"] - before

    def book_zeros(self, shape):
        return self.tf.Variable(self.tf.zeros(shape))

    def book_set(self, Y, i, j, products):
        Y[i, j].assign(self.tf.reduce_sum(products))
        return Y

    def matmul_gflops(self, n):
        a = self.tf.random.normal((n, n), dtype=self.tf.float32)
        return self.timed(lambda: self.tf.matmul(a, a))


class Jax(Framework):
    """Both sides jitted (compiled during warm-up); at 8x8 also both eager, for the dispatch overhead."""

    name = "jax"
    modules = ("jax", "jaxlib")

    def load(self, with_convlab: bool = True, native: bool = True) -> None:
        super().load(with_convlab)
        import jax

        self.jax, self.lax, self.jnp = jax, jax.lax, jax.numpy

    def tensor(self, a):
        return self.jax.device_put(a)

    def sync(self, outs):
        self.jax.block_until_ready(outs)

    def _native(self, op, window, pad):
        lax, jnp = self.lax, self.jnp
        if op == "conv2d":
            pads = ((pad, pad), (pad, pad))
            return "lax.conv_general_dilated", lambda x, k: lax.conv_general_dilated(
                x, k, (1, 1), pads, dimension_numbers=("NCHW", "OIHW", "NCHW")
            )
        dims, ones = (1, 1) + tuple(window), (1, 1, 1, 1)
        if op == "max":
            return "lax.reduce_window max", lambda x: lax.reduce_window(
                x, jnp.array(-jnp.inf, x.dtype), lax.max, dims, ones, "VALID"
            )
        scale = 1.0 / (window[0] * window[1])
        return (
            "lax.reduce_window add",
            lambda x: lax.reduce_window(x, jnp.array(0, x.dtype), lax.add, dims, ones, "VALID") * scale,
        )

    def ops(self, op, x, k, window, pad, eager=False):
        jax, cl = self.jax, getattr(self, "cl", None)
        x, k = self.tensor(x), None if k is None else self.tensor(k)
        label, native = self._native(op, window, pad)
        if op == "conv2d":
            ours = lambda x, k: cl.conv2d(x, k, padding=pad, backend="jax")  # noqa: E731
            args = (x, k)
        else:
            ours = lambda x: cl.pool2d(x, window, op, backend="jax")  # noqa: E731
            args = (x,)
        jit_ours, jit_native = jax.jit(ours), jax.jit(native)
        fns = {
            "convlab jit": self.timed(lambda: jit_ours(*args)),
            label + " jit": self.timed(lambda: jit_native(*args)),
        }
        fns["convlab jit"].compiled = lambda: jit_ours.lower(*args).compile()
        fns[label + " jit"].compiled = lambda: jit_native.lower(*args).compile()
        pairs = [("jit", "convlab jit", label + " jit")]
        if eager:
            fns["convlab eager"] = self.timed(lambda: ours(*args))
            fns[label + " eager"] = self.timed(lambda: native(*args))
            pairs.append(("eager", "convlab eager", label + " eager"))
        return fns, pairs

    memory_counter = "XLA memory_analysis(): temp + output bytes"

    def peak_bytes(self, timed):
        compiled = getattr(timed, "compiled", None)
        if compiled is None:
            return None
        stats = compiled().memory_analysis()
        return stats.temp_size_in_bytes + stats.output_size_in_bytes

    def book_zeros(self, shape):
        return self.jnp.zeros(shape)

    def book_set(self, Y, i, j, products):
        return Y.at[i, j].set(products.sum())  # JAX arrays are immutable: a new array

    def matmul_gflops(self, n):
        a = self.jax.random.normal(self.jax.random.PRNGKey(0), (n, n), dtype=self.jnp.float32)
        dot = self.jax.jit(self.jnp.dot)
        return self.timed(lambda: dot(a, a))


class Mxnet(Framework):
    """MXNet's engine is asynchronous: one ``npx.waitall()`` per repeat waits for every call in it."""

    name = "mxnet"
    modules = ("mxnet",)

    def load(self, with_convlab: bool = True, native: bool = True) -> None:
        super().load(with_convlab)
        import mxnet

        self.mx, self.mnp, self.npx = mxnet, mxnet.np, mxnet.npx
        mxnet.npx.set_np()  # as the book does (its corr2d assigns 0-d arrays); convlab works either way

    def tensor(self, a):
        out = self.mnp.array(a, dtype=a.dtype)
        out.wait_to_read()
        return out

    def sync(self, outs):
        self.npx.waitall()

    def ops(self, op, x, k, window, pad, eager=False):
        x, k = self.tensor(x), None if k is None else self.tensor(k)
        npx = self.npx
        if op == "conv2d":
            window, filters = tuple(k.shape[2:]), k.shape[0]
            label = "npx.convolution"
            ref = lambda: npx.convolution(  # noqa: E731
                x, k, kernel=window, num_filter=filters, pad=(pad, pad), no_bias=True
            )
        else:
            label = f"npx.pooling {op}"
            ref = lambda: npx.pooling(x, kernel=tuple(window), stride=(1, 1), pool_type=op)  # noqa: E731
        return {"convlab": self.timed(self.convlab(op, x, k, window, pad)), label: self.timed(ref)}, [
            ("", "convlab", label)
        ]

    def book_zeros(self, shape):
        return self.mnp.zeros(shape)

    def matmul_gflops(self, n):
        a = self.mnp.random.normal(size=(n, n)).astype("float32")
        return self.timed(lambda: self.mnp.dot(a, a))


FRAMEWORKS = {cls.name: cls for cls in (Numpy, Torch, Tensorflow, Jax, Mxnet)}
