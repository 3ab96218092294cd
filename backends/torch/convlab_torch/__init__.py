"""convlab's PyTorch backend: every primitive is one or two ``torch`` ops; layers are ``torch.nn.Module``s.

Importing this module does not import torch: the framework is imported when the backend is first
created (``convlab.get_backend("torch")``, or the first torch tensor convlab sees), and the layer
classes are built on first access.

Example:
    >>> import torch, convlab as cl
    >>> cl.corr2d(torch.arange(9.0).reshape(3, 3), torch.tensor([[0.0, 1.0], [2.0, 3.0]])).tolist()
    [[19.0, 25.0], [37.0, 43.0]]
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Dict, Sequence, Tuple, Union

import numpy as np

import convlab
from convlab import algorithms
from convlab.backend import Backend, Pads, Pair
from convlab.geometry import ConvGeometry, PoolGeometry, taps
from convlab.layers import lazy_classes

__all__ = ["TorchBackend", "TorchConv2D", "TorchPool2D"]

#: output bytes per row block of the in-place shift-and-accumulate: block and input rows stay in the 2 MB L2
#: (measured at 2048^2, one thread: 64 KB blocks 24.7 ms, 512 KB 13.6 ms, 2 MB 21.8 ms, whole image 30.8 ms)
SHIFT_BLOCK_BYTES = 512 * 1024


def _native_padding(geometry: Union[ConvGeometry, PoolGeometry]) -> Any:
    """torch's ``padding`` argument for the geometry's pads, or None where torch cannot pad that way itself.

    F.conv2d pads symmetrically only; the pooling functions also by at most half the window.
    """
    if not geometry.symmetric_pads:
        return None
    top, left = geometry.pads[0][0], geometry.pads[1][0]
    if isinstance(geometry, PoolGeometry) and (2 * top > geometry.window[0] or 2 * left > geometry.window[1]):
        return None
    return top if top == left else (top, left)


def _flat_pads(pads: Pads) -> Tuple[int, int, int, int]:
    """F.pad's order for the last two axes: (left, right, top, bottom)."""
    (top, bottom), (left, right) = pads
    return (left, right, top, bottom)


def _compact(pair: Pair) -> Any:
    """An int for a square pair: torch parses an int argument about 0.7 µs faster than a tuple."""
    return pair[0] if pair[0] == pair[1] else pair


class TorchBackend(Backend):
    """The convlab backend for PyTorch tensors; results keep the input's device and dtype.

    Example:
        >>> import torch, convlab as cl
        >>> x = torch.ones(1, 1, 4, 4, dtype=torch.float64)
        >>> y = cl.pool2d(x, 2, "avg", stride=2, backend="torch")
        >>> y.dtype, tuple(y.shape)
        (torch.float64, (1, 1, 2, 2))
    """

    name = "torch"
    framework_modules = ("torch",)
    package = "convlab-torch"
    # "auto" on the CPU, from benchmarks/algorithms.py (results/algorithms-torch*.json; ratios are native/chosen):
    # one or two channels: torch pads to oneDNN's 16-channel blocks (3x3, one thread: 2048^2 11x, 512^2 3.5x,
    # C1->2 512^2 2.4x, C2->2 1.3x; 128^2 and below native wins, 0.4x); C3->8 and up native wins (gemm never does)
    conv_rules = (
        (
            "at most 4 channel pairs, at least 256x256 pixels",
            lambda s: s.channel_pairs <= 4 and s.pixels >= 65536,
            "shift",
        ),
    )
    # pooling of NCHW data (one thread): torch's NCHW kernels are slow; with more channels its channels_last kernels
    # (vectorised over channels) win: N=8 C=64 56^2 3x3 max layout 10.1 ms, shift 13.0, native 74.0; with few
    # channels shifted views in L2-sized blocks win: C=4 128^2 max shift 7x native, avg 4.4x; one 2048^2 channel
    # max 10.5x, avg 5.5x; 512^2 max 11x, avg 6.5x; at 32^2 native wins (0.037 vs 0.097 ms). NHWC data: native.
    pool_rules = (
        ("NCHW data, more than 4 channels", lambda s: s.channels > 4 and not s.channels_last, "layout"),
        (
            "NCHW data, at least 128x128 pixels",
            lambda s: s.batch * s.height * s.width >= 16384 and not s.channels_last,
            "shift",
        ),
    )

    def __init__(self) -> None:
        import torch
        import torch.nn.functional

        self._torch = torch
        self._functional = torch.nn.functional
        self._dtypes = {"float32": torch.float32, "float64": torch.float64}
        self._dtype_names = {torch.float32: "float32", torch.float64: "float64"}
        self._repaired_max_pool = _repaired_max_pool()  # built here: torch.compile cannot trace a class statement

    # -- tensors ----------------------------------------------------------------------------------
    def version(self) -> str:
        return str(self._torch.__version__)

    def equivalence_settings(self) -> dict:
        torch = self._torch
        # why: TF32 matmuls and convolutions (Ampere GPUs) round inputs to 10 bits, far outside the bound
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        torch.use_deterministic_algorithms(True, warn_only=True)
        return {"allow_tf32": False, "deterministic_algorithms": torch.are_deterministic_algorithms_enabled()}

    def is_tensor(self, x: Any) -> bool:
        return isinstance(x, self._torch.Tensor)

    def dtype_name(self, x: Any) -> str:
        dtype = x.dtype
        return self._dtype_names.get(dtype) or str(dtype).replace("torch.", "")

    def device_of(self, x: Any) -> Any:
        return x.device

    def is_accelerator(self, device: Any) -> bool:
        return device.type != "cpu"  # CUDA, MPS, XPU: "auto" keeps cuDNN and friends

    def place_like(self, x: Any, like: Any) -> Any:
        return x if x.device == like.device else x.to(like.device)

    def constant(self, values: Sequence[float], like: Any, shape: Sequence[int]) -> Any:
        # why: torch.as_tensor of Python numbers traces under torch.compile; from_numpy(np.array(...)) does not
        return self._torch.as_tensor(values, dtype=like.dtype, device=like.device).reshape(tuple(shape))

    def synchronize(self, y: Any) -> Any:
        return y if y.device.type == "cpu" else self.to_numpy(y)

    def asarray(self, x: Any, dtype: str) -> Any:
        target = self._dtypes[dtype]
        if isinstance(x, self._torch.Tensor):
            return x if x.dtype is target else x.to(target)
        # why: torch refuses negative strides and warns on read-only arrays; one fresh C copy avoids both
        return self._torch.from_numpy(np.array(x, dtype=dtype, order="C"))

    def to_numpy(self, x: Any) -> np.ndarray:
        return x.detach().cpu().numpy()

    # -- array plumbing -----------------------------------------------------------------------------
    def reshape(self, x: Any, shape: Sequence[int]) -> Any:
        # why: the function is ~0.8 µs faster per call than the method x.reshape (torch 2.x, one thread); the
        # book functions (corr2d & co.) reshape three times per call
        return self._torch.reshape(x, tuple(shape))

    def transpose(self, x: Any, axes: Sequence[int]) -> Any:
        return x.permute(*axes)

    def flip(self, x: Any, axes: Sequence[int]) -> Any:
        return self._torch.flip(x, tuple(axes))

    def pad(self, x: Any, pads: Sequence[Pair], value: float = 0.0) -> Any:
        if not any(before or after for before, after in pads):
            return x
        # why: F.pad lists (before, after) pairs from the last axis backwards
        flat = [side for pair in reversed(pads) for side in pair]
        return self._functional.pad(x, flat, value=value)

    def maximum(self, a: Any, b: Any) -> Any:
        return self._torch.maximum(a, b)

    def sum(self, x: Any, axes: Sequence[int]) -> Any:
        # why: torch reads an empty dim tuple as "reduce everything"; NumPy (the contract) reduces nothing
        return x.sum(dim=tuple(axes)) if len(axes) else x

    # -- compute primitives ---------------------------------------------------------------------------
    def conv2d(self, x: Any, k: Any, bias: Any, geometry: ConvGeometry) -> Any:
        g = geometry
        if g.channels_last:  # NHWC/HWIO as NCHW/OIHW views: torch's conv runs natively on channels_last memory
            x, k = x.permute(0, 3, 1, 2), k.permute(3, 2, 0, 1)
        padding = _native_padding(g)
        if padding is None:
            x, padding = self._functional.pad(x, _flat_pads(g.pads)), 0
        y = self._torch.conv2d(x, k, bias, _compact(g.stride), padding, _compact(g.dilation))
        return y.permute(0, 2, 3, 1) if g.channels_last else y

    def conv2d_bound(self, geometry: ConvGeometry) -> Callable[..., Any]:
        g = geometry
        padding = _native_padding(g)
        if g.channels_last or padding is None:
            return super().conv2d_bound(g)
        # why: at 8x8 torch's conv takes ~9 µs, so the adapter's own argument handling (~1 µs) is bound away here
        conv2d = self._torch.conv2d
        return functools.partial(conv2d, stride=_compact(g.stride), padding=padding, dilation=_compact(g.dilation))

    def pool2d_bound(self, geometry: PoolGeometry) -> Callable[[Any], Any]:
        g = geometry
        padding = _native_padding(g)
        if g.channels_last or padding is None:
            return super().pool2d_bound(g)
        options = dict(kernel_size=_compact(g.window), stride=_compact(g.stride), padding=padding)
        if g.mode == "max":
            native, torch = functools.partial(self._torch.max_pool2d, **options), self._torch

            def run(x: Any) -> Any:  # why: the gradient of non-finite windows (see pool2d)
                return self.pool2d(x, g) if x.requires_grad and torch.is_grad_enabled() else native(x)

            return run
        return functools.partial(self._functional.avg_pool2d, **options, count_include_pad=g.count_include_pad)

    def pool2d(self, x: Any, geometry: PoolGeometry) -> Any:
        g, functional = geometry, self._functional
        if g.channels_last:
            x = x.permute(0, 3, 1, 2)
        if g.mode == "max" and x.requires_grad and self._torch.is_grad_enabled() and _needs_repair(self._torch, x):
            # why: torch's gradient of a window holding two NaN goes to the last, and one of -inf only padded by hand
            # may go to the padding; convlab's to the first NaN, or the first real pixel (convlab.algorithms)
            y = self._repaired_max_pool(x, g)
            return y.permute(0, 2, 3, 1) if g.channels_last else y
        window, stride = _compact(g.window), _compact(g.stride)
        padding = native = _native_padding(g)  # torch's own padding is -inf for max pooling
        if native is None and (g.mode == "max" or g.count_include_pad):
            x, padding = functional.pad(x, _flat_pads(g.pads), value=g.fill), 0
        if g.mode == "max":  # torch.max_pool2d: the op itself, without F.max_pool2d's Python wrapper
            y = self._torch.max_pool2d(x, window, stride, padding)
        elif native is not None or g.count_include_pad:
            y = functional.avg_pool2d(x, window, stride, padding, False, g.count_include_pad)
        else:  # window sums divided by the number of real pixels each window covers
            sums = functional.avg_pool2d(functional.pad(x, _flat_pads(g.pads)), window, stride, divisor_override=1)
            y = algorithms.divide(self, sums, g, channels_last=False)
        return y.permute(0, 2, 3, 1) if g.channels_last else y

    def conv2d_shift(self, x: Any, k: Any, bias: Any, geometry: ConvGeometry) -> Any:
        if self._torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (x, k, bias)):
            return super().conv2d_shift(x, k, bias, geometry)  # autograd: out of place
        return _shift_in_place(self._torch, self._functional, x, k, bias, geometry)

    def pool2d_shift(self, x: Any, geometry: PoolGeometry) -> Any:
        if self._torch.is_grad_enabled() and x.requires_grad:
            # why: torch.maximum splits the gradient of ties between both sides, max pooling gives it to one input
            return self.pool2d(x, geometry)
        if geometry.mode == "avg" and not geometry.uniform_divisor:
            return super().pool2d_shift(x, geometry)
        return _pool_shift_in_place(self._torch, self._functional, x, geometry)

    def pool2d_layout(self, x: Any, geometry: PoolGeometry) -> Any:
        # why: torch's max pooling kernel for channels_last memory is vectorised over channels, NCHW's is not;
        # the result keeps channels_last strides (as torch's own ops return it), same values and shape
        if geometry.channels_last:
            y = self.pool2d(x.permute(0, 3, 1, 2).contiguous(), algorithms.other_layout(geometry))
            return y.permute(0, 2, 3, 1)
        return self.pool2d(x.contiguous(memory_format=self._torch.channels_last), geometry)

    # -- training and layers -------------------------------------------------------------------------
    def value_and_grad(self, fn: Callable[[list], Any]) -> Callable[[list], Tuple[Any, list]]:
        autograd = self._torch.autograd

        def step(params: list) -> Tuple[Any, list]:
            leaves = [p.detach().requires_grad_(True) for p in params]
            loss = fn(leaves)
            return loss.detach(), list(autograd.grad(loss, leaves))

        return step

    def conv2d_layer(self, config: dict, weight: np.ndarray, bias: np.ndarray | None) -> Any:
        return _layer_classes()["TorchConv2D"](config, weight, bias, self.name)

    def pool2d_layer(self, config: dict) -> Any:
        return _layer_classes()["TorchPool2D"](config, self.name)


def _needs_repair(torch: Any, x: Any) -> bool:
    """Does torch's max-pool gradient need convlab's repair? Only where x holds NaN or -inf (one sum tells); always
    on an accelerator or while torch.compile traces (no sync, no data-dependent branch)."""
    if x.device.type != "cpu" or torch.compiler.is_compiling():
        return True
    with torch.no_grad():
        return not bool(algorithms.free_of_nan_and_negative_inf(x.sum()))


def _repaired_max_pool() -> Callable[[Any, PoolGeometry], Any]:
    """``run(x, geometry)``: max pooling of NCHW x whose gradient follows convlab's rule (convlab.algorithms):
    torch's own pooling with indices, the indices of windows holding NaN or only -inf taken from the pooling of
    :func:`convlab.algorithms.nonfinite_code`; the gradient is torch's own scatter to those indices."""
    import torch
    import torch.nn.functional as F

    class RepairedMaxPool(torch.autograd.Function):
        @staticmethod
        def forward(ctx: Any, x: Any, geometry: PoolGeometry) -> Any:
            g = geometry
            code = algorithms.nonfinite_code(torch, x).to(x.dtype)
            padding = _native_padding(g)
            by_hand = padding is None
            if by_hand:  # x and its code padded with -inf (below every code: never chosen)
                flat = _flat_pads(g.pads)
                x, code, padding = F.pad(x, flat, value=g.fill), F.pad(code, flat, value=g.fill), 0
            y, at_max = F.max_pool2d(x, g.window, g.stride, padding, return_indices=True)
            classes, at_code = F.max_pool2d(code, g.window, g.stride, padding, return_indices=True)
            ctx.save_for_backward(x, torch.where(classes == algorithms.CODE_NUMBER, at_max, at_code))
            ctx.options = (g.window, g.stride, padding, g.pads if by_hand else None)
            return y

        @staticmethod
        def backward(ctx: Any, dy: Any) -> Any:
            x, indices = ctx.saved_tensors
            window, stride, padding, pads = ctx.options
            padding = (padding, padding) if isinstance(padding, int) else padding
            dx = torch.ops.aten.max_pool2d_with_indices_backward(dy, x, window, stride, padding, (1, 1), False, indices)
            if pads is not None:  # the gradient of the padding is dropped
                (top, bottom), (left, right) = pads
                dx = dx[:, :, top : dx.shape[2] - bottom, left : dx.shape[3] - right]
            return dx, None

    return RepairedMaxPool.apply


def _shift_in_place(torch, functional, x, k, bias, geometry: ConvGeometry):
    """Shift-and-accumulate with in-place ``add_(patch, alpha=weight)`` over blocks of output rows.

    One fused multiply-add per kernel offset and channel pair, each on a block of rows small enough to stay
    in the L2 cache, so the image is read from memory about once (torch's own conv2d pads a single channel to
    oneDNN's 16-channel blocks and is ten times slower). Weights are read as Python floats: fine on the CPU,
    where "auto" chooses this; on a GPU it would synchronise, and "auto" keeps cuDNN there.
    """
    g = geometry
    if g.channels_last:
        x, k = x.permute(0, 3, 1, 2), k.permute(3, 2, 0, 1)
    if g.padded:
        x = functional.pad(x, _flat_pads(g.pads))
    out = x.new_empty(g.out4)
    # channels_last: write through an NCHW view of the NHWC output, hand back the NHWC tensor
    y = out.permute(0, 3, 1, 2) if g.channels_last else out
    (out_h, out_w), (kernel_h, kernel_w) = g.out_hw, g.window
    weights = k.tolist()
    biases = None if bias is None else bias.tolist()
    block = max(1, SHIFT_BLOCK_BYTES // max(1, g.batch * out_w * y.element_size()))
    (sh, sw), (dh, dw) = g.stride, g.dilation
    for start in range(0, out_h, block):
        rows = min(block, out_h - start)
        for o in range(g.out_channels):
            target = y[:, o, start : start + rows]
            first = True
            for c in range(g.in_channels):
                for i in range(kernel_h):
                    source = x[:, c, taps(start * sh + i * dh, rows, sh)]
                    for j in range(kernel_w):
                        patch = source[:, :, taps(j * dw, out_w, sw)]
                        if first:
                            torch.mul(patch, weights[o][c][i][j], out=target)
                            first = False
                        else:
                            target.add_(patch, alpha=weights[o][c][i][j])
            if biases is not None:
                target.add_(biases[o])
    return out


def _pool_shift_in_place(torch, functional, x, geometry: PoolGeometry):
    """Max (``torch.maximum(out=)``) or sum (``add_``) of shifted views over L2-sized blocks of output rows.

    Average pooling comes here only with a uniform divisor (one float); real-pixel counts go to the generic
    version (:func:`convlab.algorithms.pool2d_shift`).
    """
    g = geometry
    if g.channels_last:
        x = x.permute(0, 3, 1, 2)
    if g.padded:
        x = functional.pad(x, _flat_pads(g.pads), value=g.fill)
    out = x.new_empty(g.out4)
    y = out.permute(0, 3, 1, 2) if g.channels_last else out
    (out_h, out_w), (sh, sw), (wh, ww) = g.out_hw, g.stride, g.window
    block = max(1, SHIFT_BLOCK_BYTES // max(1, g.x4[0] * g.channels * out_w * y.element_size()))
    for start in range(0, out_h, block):
        rows = min(block, out_h - start)
        target = y[:, :, start : start + rows]
        for i in range(wh):
            source = x[:, :, taps(start * sh + i, rows, sh)]
            for j in range(ww):
                patch = source[:, :, :, taps(j, out_w, sw)]
                if i == j == 0:
                    target.copy_(patch)
                elif g.mode == "max":
                    torch.maximum(target, patch, out=target)
                else:
                    target.add_(patch)
        if g.mode == "avg":
            target.div_(g.divisor)
    return out


def _build_layer_classes() -> Dict[str, type]:
    """The nn.Module classes, built on first use so that importing this module does not import torch."""
    import torch

    class TorchConv2D(torch.nn.Module):
        """convlab's Conv2D as a ``torch.nn.Module``: ``weight`` (Co, C, kh, kw) and ``bias`` (Co,) parameters.

        With ``data_format="channels_last"`` the weight is (kh, kw, C, Co). Works with ``torch.optim``,
        ``state_dict`` and ``torch.compile``. :func:`convlab.ConvTranspose2D` builds one too, whose forward
        pass is :func:`convlab.conv_transpose2d` (weight (C, Co, kh, kw)).

        Example:
            >>> import torch, convlab as cl
            >>> layer = cl.Conv2D(3, 2, 4, padding=1, seed=0, backend="torch")
            >>> tuple(layer(torch.ones(1, 2, 5, 5)).shape), tuple(layer.weight.shape)
            ((1, 4, 5, 5), (4, 2, 3, 3))
        """

        def __init__(self, config: dict, weight: np.ndarray, bias: np.ndarray | None, backend: str = "torch"):
            super().__init__()
            self.config = dict(config)
            self.operation = self.config.pop("operation", "conv2d")  # or "conv_transpose2d" (cl.ConvTranspose2D)
            self.backend = backend
            self.weight = torch.nn.Parameter(torch.from_numpy(weight))
            self.bias = None if bias is None else torch.nn.Parameter(torch.from_numpy(bias))
            # why: convlab's first lookup of a tensor type cannot be traced by dynamo; do it now, eagerly
            convlab.registry.backend_of(self.weight)

        def forward(self, X: Any) -> Any:
            forward = convlab.conv2d if self.operation == "conv2d" else convlab.conv_transpose2d
            return forward(X, self.weight, self.bias, backend=self.backend, **self.config)

        def extra_repr(self) -> str:
            config = ", ".join(f"{key}={value!r}" for key, value in self.config.items())
            operation = "" if self.operation == "conv2d" else f", operation={self.operation!r}"
            return f"weight={tuple(self.weight.shape)}, bias={self.bias is not None}, {config}{operation}"

    class TorchPool2D(torch.nn.Module):
        """convlab's MaxPool2D / AvgPool2D as a parameter-free ``torch.nn.Module``.

        Example:
            >>> import torch, convlab as cl
            >>> cl.MaxPool2D(2, backend="torch")(torch.arange(16.0).reshape(4, 4)).tolist()
            [[5.0, 7.0], [13.0, 15.0]]
        """

        def __init__(self, config: dict, backend: str = "torch"):
            super().__init__()
            self.config = dict(config)
            self.backend = backend

        def forward(self, X: Any) -> Any:
            return convlab.pool2d(X, backend=self.backend, **self.config)

        def extra_repr(self) -> str:
            return ", ".join(f"{key}={value!r}" for key, value in self.config.items())

    return {"TorchConv2D": TorchConv2D, "TorchPool2D": TorchPool2D}


#: ``convlab_torch.TorchConv2D`` / ``TorchPool2D``, built (and torch imported) on first access
_layer_classes, __getattr__ = lazy_classes(__name__, _build_layer_classes)
