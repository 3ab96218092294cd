"""Learning a kernel from input-output pairs (section 6.2.4), on any backend."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, List, Optional

import numpy as np

from convlab.arguments import to_pair
from convlab.dispatch import BackendArg, inputs, prepare
from convlab.errors import ConvlabTypeError, ConvlabValueError
from convlab.geometry import conv_geometry
from convlab.layers import initial_weights
from convlab.ops import conv2d, conv2d_vjp

GRADIENTS = ("autodiff", "analytic")


@dataclass
class TrainResult:
    """What :func:`train_kernel` learned: tensors of the backend, and one loss per epoch."""

    kernel: Any
    bias: Any
    losses: List[float] = field(default_factory=list)
    backend: str = ""
    gradient: str = ""


def train_kernel(
    X: Any,
    Y: Any,
    kernel_size: Any = (1, 2),
    *,
    lr: float = 3e-2,
    epochs: int = 10,
    bias: bool = False,
    seed: Optional[int] = 0,
    gradient: str = "autodiff",
    callback: Optional[Callable[[int, float, Any], Any]] = None,
    backend: BackendArg = None,
) -> TrainResult:
    """Learn a kernel K with ``conv2d(X, K) (+ bias) ~= Y`` by plain gradient descent, as the book does.

    The loss is the squared error summed over the output; ``losses[e]`` is the loss before the
    update of epoch ``e``. ``gradient="autodiff"`` uses the framework's automatic differentiation,
    ``"analytic"`` convlab's closed-form :func:`convlab.conv2d_vjp`. NumPy has no autodiff, so the
    NumPy backend always trains with the analytic gradient (``result.gradient`` says which ran).
    X is (H, W) or (N, 1, H, W); Y has the shape of the output. ``callback(epoch, loss, kernel)``
    runs after each epoch.

    Example:
        >>> import convlab as cl
        >>> X = cl.images.stripes()
        >>> Y = cl.corr2d(X, cl.kernels.edge())
        >>> result = cl.train_kernel(X, Y, epochs=10)
        >>> result.losses[-1] < result.losses[0]
        True
    """
    chosen, described = inputs(backend, ("X", "Y"), (X, Y))
    x_in, y_in = (item for item in described if item is not None)
    kernel = to_pair("kernel_size", kernel_size)
    if gradient not in GRADIENTS:
        raise ConvlabValueError(f"gradient must be one of {GRADIENTS}, got {gradient!r}")
    if isinstance(epochs, bool) or not isinstance(epochs, (int, np.integer)) or epochs < 0:
        raise ConvlabValueError(f"epochs must be a non-negative int, got {epochs!r}")
    if isinstance(lr, bool) or not isinstance(lr, (int, float, np.floating)) or not np.isfinite(lr):
        raise ConvlabTypeError(f"lr must be a finite number, got {lr!r}")
    if callback is not None and not callable(callback):
        raise ConvlabTypeError(f"callback must be callable, got {callback!r}")
    if len(x_in.shape) not in (2, 4) or (len(x_in.shape) == 4 and x_in.shape[1] != 1):
        raise ConvlabValueError(f"train_kernel needs X of shape (H, W) or (N, 1, H, W); got X of shape {x_in.shape}")
    weight_np, bias_np = initial_weights(kernel, 1, 1, bool(bias), seed)
    if len(x_in.shape) == 2:
        weight_np = weight_np.reshape(kernel)
    geometry = conv_geometry(x_in.shape, weight_np.shape)
    if y_in.shape != geometry.out:
        raise ConvlabValueError(
            f"Y must have the output shape {geometry.out} of X of shape {x_in.shape} under a {kernel} kernel; "
            f"got Y of shape {y_in.shape}"
        )
    (x, y), dtype = prepare(chosen, X=x_in.value, Y=y_in.value)
    params = [chosen.asarray(weight_np, dtype)]
    if bias_np is not None:
        params.append(chosen.asarray(bias_np, dtype))
    everything = tuple(range(len(geometry.out)))

    def loss_of(current: list) -> Any:
        residual = conv2d(x, current[0], current[1] if len(current) > 1 else None, backend=chosen) - y
        return chosen.sum(residual * residual, everything)

    used = gradient if chosen.has_autodiff else "analytic"
    step = chosen.value_and_grad(loss_of) if used == "autodiff" else None
    losses: List[float] = []
    for epoch in range(int(epochs)):
        if step is not None:
            loss, grads = step(params)
        else:
            residual = conv2d(x, params[0], params[1] if len(params) > 1 else None, backend=chosen) - y
            loss = chosen.sum(residual * residual, everything)
            _, grad_kernel, grad_bias = conv2d_vjp(x, params[0], 2 * residual, backend=chosen)
            grads = [grad_kernel, grad_bias][: len(params)]
        params = [p - lr * g for p, g in zip(params, grads)]
        losses.append(float(chosen.to_numpy(loss)))
        if callback is not None:
            callback(epoch, losses[-1], params[0])
    return TrainResult(params[0], params[1] if len(params) > 1 else None, losses, chosen.name, used)
