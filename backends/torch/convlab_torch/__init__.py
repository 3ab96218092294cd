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
from typing import Any, Callable, Optional, Sequence, Tuple

import numpy as np

import convlab
from convlab.backend import Backend, Pads, Pair

__all__ = ["TorchBackend", "TorchConv2D", "TorchPool2D"]

_INF = float("inf")
#: output bytes per row block of the in-place shift-and-accumulate: block and input rows stay in the 2 MB L2
#: (measured at 2048^2, one thread: 64 KB blocks 24.7 ms, 512 KB 13.6 ms, 2 MB 21.8 ms, whole image 30.8 ms)
SHIFT_BLOCK_BYTES = 512 * 1024


def _native_padding(pads: Pads, window: Optional[Pair] = None) -> Any:
    """torch's ``padding`` argument for pads, or None where torch cannot pad that way itself.

    F.conv2d pads symmetrically only; the pooling functions (``window`` given) also by at most half the window.
    """
    (top, bottom), (left, right) = pads
    if top != bottom or left != right or (window is not None and (2 * top > window[0] or 2 * left > window[1])):
        return None
    return top if top == left else (top, left)


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

    def asarray(self, x: Any, dtype: str) -> Any:
        target = self._dtypes[dtype]
        if isinstance(x, self._torch.Tensor):
            return x if x.dtype is target else x.to(target)
        # why: torch refuses negative strides and warns on read-only arrays; one fresh C copy avoids both
        return self._torch.from_numpy(np.array(x, dtype=dtype, order="C"))

    def to_numpy(self, x: Any) -> np.ndarray:
        return x.detach().cpu().numpy()

    # -- array plumbing -----------------------------------------------------------------------------
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
    def conv2d(self, x: Any, k: Any, stride: Pair, pads: Pads, dilation: Pair, channels_last: bool) -> Any:
        return self.conv2d_bias(x, k, None, stride, pads, dilation, channels_last)

    def conv2d_bias(
        self, x: Any, k: Any, bias: Any, stride: Pair, pads: Pads, dilation: Pair, channels_last: bool
    ) -> Any:
        if channels_last:  # NHWC/HWIO as NCHW/OIHW views: torch's conv runs natively on channels_last memory
            x, k = x.permute(0, 3, 1, 2), k.permute(3, 2, 0, 1)
        padding = _native_padding(pads)
        if padding is None:
            (top, bottom), (left, right) = pads
            x, padding = self._functional.pad(x, (left, right, top, bottom)), 0
        y = self._torch.conv2d(x, k, bias, _compact(stride), padding, _compact(dilation))
        return y.permute(0, 2, 3, 1) if channels_last else y

    def conv2d_bound(self, kernel_shape, stride, pads, dilation, channels_last) -> Callable[..., Any]:
        padding = _native_padding(pads)
        if channels_last or padding is None:
            return super().conv2d_bound(kernel_shape, stride, pads, dilation, channels_last)
        # why: at 8x8 torch's conv takes ~9 µs, so the adapter's own argument handling (~1 µs) is bound away here
        conv2d = self._torch.conv2d
        return functools.partial(conv2d, stride=_compact(stride), padding=padding, dilation=_compact(dilation))

    def pool2d_bound(self, window, stride, pads, mode, count_include_pad, channels_last) -> Callable[[Any], Any]:
        padding = _native_padding(pads, window)
        if channels_last or padding is None:
            return super().pool2d_bound(window, stride, pads, mode, count_include_pad, channels_last)
        options = dict(kernel_size=_compact(window), stride=_compact(stride), padding=padding)
        if mode == "max":
            return functools.partial(self._torch.max_pool2d, **options)
        return functools.partial(self._functional.avg_pool2d, **options, count_include_pad=count_include_pad)

    def pool2d(
        self,
        x: Any,
        window: Pair,
        stride: Pair,
        pads: Pads,
        mode: str,
        count_include_pad: bool,
        channels_last: bool,
    ) -> Any:
        functional = self._functional
        if channels_last:
            x = x.permute(0, 3, 1, 2)
        (top, bottom), (left, right) = pads
        padding = native = _native_padding(pads, window)  # torch's own padding is -inf for max pooling
        if native is None and (mode == "max" or count_include_pad):
            x, padding = functional.pad(x, (left, right, top, bottom), value=-_INF if mode == "max" else 0.0), 0
        if mode == "max":  # torch.max_pool2d: the op itself, without F.max_pool2d's Python wrapper
            y = self._torch.max_pool2d(x, _compact(window), _compact(stride), padding)
        elif native is not None or count_include_pad:
            y = functional.avg_pool2d(x, _compact(window), _compact(stride), padding, False, count_include_pad)
        else:  # window sums divided by the number of real pixels each window covers
            flat = (left, right, top, bottom)
            sums = functional.avg_pool2d(functional.pad(x, flat), window, stride, divisor_override=1)
            ones = x.new_ones((1, 1) + tuple(x.shape[2:]))
            y = sums / functional.avg_pool2d(functional.pad(ones, flat), window, stride, divisor_override=1)
        return y.permute(0, 2, 3, 1) if channels_last else y

    def conv2d_shift(
        self, x: Any, k: Any, bias: Any, stride: Pair, pads: Pads, dilation: Pair, channels_last: bool
    ) -> Any:
        if self._torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (x, k, bias)):
            return super().conv2d_shift(x, k, bias, stride, pads, dilation, channels_last)  # autograd: out of place
        return _shift_in_place(self._torch, self._functional, x, k, bias, stride, pads, dilation, channels_last)

    def pool2d_shift(self, x, window, stride, pads, mode, count_include_pad, channels_last) -> Any:
        if self._torch.is_grad_enabled() and x.requires_grad:
            # why: torch.maximum splits the gradient of ties between both sides, max pooling gives it to one input
            return self.pool2d(x, window, stride, pads, mode, count_include_pad, channels_last)
        if mode == "avg" and not count_include_pad and any(any(pair) for pair in pads):
            return super().pool2d_shift(x, window, stride, pads, mode, count_include_pad, channels_last)
        return _pool_shift_in_place(self._torch, self._functional, x, window, stride, pads, mode, channels_last)

    def pool2d_layout(self, x, window, stride, pads, mode, count_include_pad, channels_last) -> Any:
        # why: torch's max pooling kernel for channels_last memory is vectorised over channels, NCHW's is not;
        # the result keeps channels_last strides (as torch's own ops return it), same values and shape
        if channels_last:
            y = self.pool2d(x.permute(0, 3, 1, 2).contiguous(), window, stride, pads, mode, count_include_pad, False)
            return y.permute(0, 2, 3, 1)
        x = x.contiguous(memory_format=self._torch.channels_last)
        return self.pool2d(x, window, stride, pads, mode, count_include_pad, False)

    # -- training and layers -------------------------------------------------------------------------
    def value_and_grad(self, fn: Callable[[list], Any]) -> Callable[[list], Tuple[Any, list]]:
        autograd = self._torch.autograd

        def step(params: list) -> Tuple[Any, list]:
            leaves = [p.detach().requires_grad_(True) for p in params]
            loss = fn(leaves)
            return loss.detach(), list(autograd.grad(loss, leaves))

        return step

    def conv2d_layer(self, config: dict, weight: np.ndarray, bias: np.ndarray | None) -> Any:
        return _layer_classes()[0](config, weight, bias, self.name)

    def pool2d_layer(self, config: dict) -> Any:
        return _layer_classes()[1](config, self.name)


def _shift_in_place(torch, functional, x, k, bias, stride, pads, dilation, channels_last):
    """Shift-and-accumulate with in-place ``add_(patch, alpha=weight)`` over blocks of output rows.

    One fused multiply-add per kernel offset and channel pair, each on a block of rows small enough to stay
    in the L2 cache, so the image is read from memory about once (torch's own conv2d pads a single channel to
    oneDNN's 16-channel blocks and is ten times slower). Weights are read as Python floats: fine on the CPU,
    where "auto" chooses this; on a GPU it would synchronise, and "auto" keeps cuDNN there.
    """
    if channels_last:
        x, k = x.permute(0, 3, 1, 2), k.permute(3, 2, 0, 1)
    (top, bottom), (left, right) = pads
    if top or bottom or left or right:
        x = functional.pad(x, (left, right, top, bottom))
    batch, in_channels, height, width = x.shape
    out_channels, _, kernel_h, kernel_w = k.shape
    out_h = (height - dilation[0] * (kernel_h - 1) - 1) // stride[0] + 1
    out_w = (width - dilation[1] * (kernel_w - 1) - 1) // stride[1] + 1
    if channels_last:  # write through an NCHW view of NHWC memory, hand back the NHWC tensor
        out = x.new_empty((batch, out_h, out_w, out_channels))
        y = out.permute(0, 3, 1, 2)
    else:
        out = y = x.new_empty((batch, out_channels, out_h, out_w))
    weights = k.tolist()
    biases = None if bias is None else bias.tolist()
    block = max(1, SHIFT_BLOCK_BYTES // max(1, batch * out_w * y.element_size()))
    (sh, sw), (dh, dw) = stride, dilation
    for start in range(0, out_h, block):
        rows = min(block, out_h - start)
        for o in range(out_channels):
            target = y[:, o, start : start + rows]
            first = True
            for c in range(in_channels):
                for i in range(kernel_h):
                    top_row = start * sh + i * dh
                    source = x[:, c, top_row : top_row + (rows - 1) * sh + 1 : sh]
                    for j in range(kernel_w):
                        patch = source[:, :, j * dw : j * dw + (out_w - 1) * sw + 1 : sw]
                        if first:
                            torch.mul(patch, weights[o][c][i][j], out=target)
                            first = False
                        else:
                            target.add_(patch, alpha=weights[o][c][i][j])
            if biases is not None:
                target.add_(biases[o])
    return out


def _pool_shift_in_place(torch, functional, x, window, stride, pads, mode, channels_last):
    """Max (``torch.maximum(out=)``) or sum (``add_``) of shifted views over L2-sized blocks of output rows."""
    if channels_last:
        x = x.permute(0, 3, 1, 2)
    (top, bottom), (left, right) = pads
    if top or bottom or left or right:
        x = functional.pad(x, (left, right, top, bottom), value=-_INF if mode == "max" else 0.0)
    batch, channels, height, width = x.shape
    out_h, out_w = (height - window[0]) // stride[0] + 1, (width - window[1]) // stride[1] + 1
    if channels_last:
        out = x.new_empty((batch, out_h, out_w, channels))
        y = out.permute(0, 3, 1, 2)
    else:
        out = y = x.new_empty((batch, channels, out_h, out_w))
    block = max(1, SHIFT_BLOCK_BYTES // max(1, batch * channels * out_w * y.element_size()))
    (sh, sw), (wh, ww) = stride, window
    for start in range(0, out_h, block):
        rows = min(block, out_h - start)
        target = y[:, :, start : start + rows]
        for i in range(wh):
            source = x[:, :, start * sh + i : start * sh + i + (rows - 1) * sh + 1 : sh]
            for j in range(ww):
                patch = source[:, :, :, j : j + (out_w - 1) * sw + 1 : sw]
                if i == j == 0:
                    target.copy_(patch)
                elif mode == "max":
                    torch.maximum(target, patch, out=target)
                else:
                    target.add_(patch)
        if mode == "avg":
            target.div_(wh * ww)
    return out


@functools.cache
def _layer_classes() -> Tuple[type, type]:
    """Build the nn.Module classes on first use, so that importing this module does not import torch."""
    import torch

    class TorchConv2D(torch.nn.Module):
        """convlab's Conv2D as a ``torch.nn.Module``: ``weight`` (Co, C, kh, kw) and ``bias`` (Co,) parameters.

        With ``data_format="channels_last"`` the weight is (kh, kw, C, Co). Works with ``torch.optim``,
        ``state_dict`` and ``torch.compile``.

        Example:
            >>> import torch, convlab as cl
            >>> layer = cl.Conv2D(3, 2, 4, padding=1, seed=0, backend="torch")
            >>> tuple(layer(torch.ones(1, 2, 5, 5)).shape), tuple(layer.weight.shape)
            ((1, 4, 5, 5), (4, 2, 3, 3))
        """

        def __init__(self, config: dict, weight: np.ndarray, bias: np.ndarray | None, backend: str = "torch"):
            super().__init__()
            self.config = dict(config)
            self.backend = backend
            self.weight = torch.nn.Parameter(torch.from_numpy(weight))
            self.bias = None if bias is None else torch.nn.Parameter(torch.from_numpy(bias))
            # why: convlab's first lookup of a tensor type cannot be traced by dynamo; do it now, eagerly
            convlab.registry.backend_of(self.weight)

        def forward(self, X: Any) -> Any:
            return convlab.conv2d(X, self.weight, self.bias, backend=self.backend, **self.config)

        def extra_repr(self) -> str:
            config = ", ".join(f"{key}={value!r}" for key, value in self.config.items())
            return f"weight={tuple(self.weight.shape)}, bias={self.bias is not None}, {config}"

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

    for cls in (TorchConv2D, TorchPool2D):
        cls.__qualname__ = cls.__name__  # why: pickle finds the class as convlab_torch.<name> (module __getattr__)
    return TorchConv2D, TorchPool2D


def __getattr__(name: str) -> Any:
    """``convlab_torch.TorchConv2D`` / ``TorchPool2D``, built (and torch imported) on first access."""
    if name == "TorchConv2D":
        return _layer_classes()[0]
    if name == "TorchPool2D":
        return _layer_classes()[1]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
