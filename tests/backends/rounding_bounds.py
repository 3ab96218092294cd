"""Float64 NumPy oracle and rounding-error bounds for the distributed / sharded tests.

The tests compare a distributed run (torch DDP, TF MirroredStrategy, JAX sharding) with one process on
the whole batch. Splitting the batch reorders the sums (each worker sums its half, then an all-reduce adds
the halves), so the two runs differ by rounding, and DESIGN.md section 4 gives the rule: a computed sum of
n products differs from the exact value by at most c * n * u * (the same sum of absolute values), u the
unit roundoff and c = 2. Two computations of the same quantity, each within that bound of the exact value,
differ by at most twice the bound; that factor is written out below as ``TWO_RUNS``.

Training: the model is one convolution (stride 1, dilation 1) with a bias and the loss is the mean squared
error ``L = sum((conv(X, W) + b - T)**2) / M`` (M the number of outputs), so one SGD step is

    R = A @ W + b - T,   gW = (2/M) A^T R,   gb = (2/M) sum(R),   W <- W - lr * gW

with A the im2col matrix of X. Per step and per parameter the rounding error is at most

    e_t = lr * n * u * g_abs + 2 u (|theta_t| + lr * g_abs)

where g_abs is the gradient with every term replaced by its absolute value (|A|^T (|A||W| + |b| + |T|)
scaled by 2/M), n the depth of the computation (the C*kh*kw products and two additions of the forward
pass, the N*Ho*Wo products of the weight gradient, the 2/M scaling and the all-reduce), and the second term
the scaling by lr and the subtraction. The loss is a convex quadratic in (W, b) with Hessian
H = (2/M) [A 1]^T [A 1] per output channel, so while lr * lambda_max(H) <= 2 (checked) an SGD step maps a
difference between two trajectories through I - lr*H, which does not grow it in the 2-norm; the errors of
successive steps therefore add: ||theta_T - theta'_T||_2 <= c * TWO_RUNS * sum_t ||e_t||_2.
"""

from __future__ import annotations

import numpy as np

UNIT_ROUNDOFF = {"float32": 2.0**-24, "float64": 2.0**-53}
C = 2.0  # DESIGN.md section 4
TWO_RUNS = 2.0  # both runs are within the bound of the exact value


def im2col(x, window, pads):
    """(N, C, H, W) -> (N, Ho, Wo, C*kh*kw) windows of the zero-padded input (stride 1, dilation 1)."""
    (top, bottom), (left, right) = pads
    padded = np.pad(np.asarray(x, np.float64), ((0, 0), (0, 0), (top, bottom), (left, right)))
    views = np.lib.stride_tricks.sliding_window_view(padded, window, axis=(2, 3))  # N, C, Ho, Wo, kh, kw
    n, c, ho, wo, kh, kw = views.shape
    return views.transpose(0, 2, 3, 1, 4, 5).reshape(n, ho, wo, c * kh * kw)


def conv2d(x, w, b, pads):
    """Channels-first cross-correlation in float64: x (N, C, H, W), w (Co, C, kh, kw), b (Co,) or None."""
    w = np.asarray(w, np.float64)
    cols = im2col(x, w.shape[2:], pads)
    y = cols @ w.reshape(w.shape[0], -1).T  # N, Ho, Wo, Co
    if b is not None:
        y = y + np.asarray(b, np.float64)
    return y.transpose(0, 3, 1, 2)


def conv2d_bound(x, w, b, pads, dtype):
    """|y - y_ref| <= c * n * u * (|X| (*) |K| + |b|), n = C*kh*kw products plus the bias."""
    w = np.asarray(w)
    n = w.shape[1] * w.shape[2] * w.shape[3] + (0 if b is None else 1)
    magnitude = conv2d(np.abs(x), np.abs(w), None if b is None else np.abs(b), pads)
    return C * n * UNIT_ROUNDOFF[dtype] * magnitude


def _gradients(cols, w, b, t, absolute=False):
    """Gradients of the mean squared error; with ``absolute`` the same sums of absolute values."""
    co = w.shape[0]
    flat = w.reshape(co, -1)
    if absolute:
        cols, flat, b, t = np.abs(cols), np.abs(flat), np.abs(b), np.abs(t)
        residual = cols @ flat.T + b + t.transpose(0, 2, 3, 1)
    else:
        residual = cols @ flat.T + b - t.transpose(0, 2, 3, 1)
    scale = 2.0 / residual.size
    g_w = scale * np.einsum("nhwk,nhwo->ok", cols, residual).reshape(w.shape)
    g_b = scale * residual.sum(axis=(0, 1, 2))
    return g_w, g_b


def mse_gradient_bound(x, t, w, b, pads, dtype, workers=1):
    """Elementwise bound on the rounding error of (dL/dW, dL/db) at (w, b), c * n * u * g_abs."""
    w, b = np.asarray(w, np.float64), np.asarray(b, np.float64)
    cols = im2col(x, w.shape[2:], pads)
    g_w_abs, g_b_abs = _gradients(cols, w, b, np.asarray(t, np.float64), absolute=True)
    n = _depth(cols, w, workers)
    u = UNIT_ROUNDOFF[dtype]
    return C * n * u * g_w_abs, C * n * u * g_b_abs


def mse_gradients(x, t, w, b, pads):
    w, b = np.asarray(w, np.float64), np.asarray(b, np.float64)
    return _gradients(im2col(x, w.shape[2:], pads), w, b, np.asarray(t, np.float64))


def _depth(cols, w, workers):
    n_batch_positions = cols.shape[0] * cols.shape[1] * cols.shape[2]
    n_products = cols.shape[3]
    # forward products + bias + "- T"; gradient sum over the batch and positions; 2/M scaling (2 roundings);
    # the all-reduce adds one partial sum per extra worker and divides by the number of workers
    return n_products + 2 + n_batch_positions + 2 + workers


def sgd(x, t, w, b, lr, steps, pads, dtype="float64", workers=2):
    """Float64 SGD on the mean squared error, and the bound on the parameters' difference between two runs.

    Returns ``(weight, bias, bound)``: the final float64 parameters and the bound on the 2-norm of the
    difference of the concatenated (weight, bias) of two runs of ``steps`` SGD steps in ``dtype``.
    """
    w, b, t = np.array(w, np.float64), np.array(b, np.float64), np.asarray(t, np.float64)
    cols = im2col(x, w.shape[2:], pads)
    # precondition of the bound: SGD steps do not amplify differences (lr * lambda_max(H) <= 2)
    augmented = np.concatenate([cols.reshape(-1, cols.shape[3]), np.ones((cols[..., 0].size, 1))], axis=1)
    m = cols.shape[0] * cols.shape[1] * cols.shape[2] * w.shape[0]
    lambda_max = np.linalg.eigvalsh(2.0 / m * augmented.T @ augmented)[-1]
    assert lr * lambda_max <= 2.0, f"lr {lr} * lambda_max {lambda_max} > 2: the bound's argument does not hold"
    u, n = UNIT_ROUNDOFF[dtype], _depth(cols, w, workers)
    bound = 0.0
    for _ in range(steps):
        g_w, g_b = _gradients(cols, w, b, t)
        a_w, a_b = _gradients(cols, w, b, t, absolute=True)
        e_w = lr * n * u * a_w + 2 * u * (np.abs(w) + lr * a_w)
        e_b = lr * n * u * a_b + 2 * u * (np.abs(b) + lr * a_b)
        bound += C * TWO_RUNS * np.sqrt(np.sum(e_w**2) + np.sum(e_b**2))
        w, b = w - lr * g_w, b - lr * g_b
    return w, b, bound


def difference(w1, b1, w2, b2):
    """2-norm of the difference of the concatenated parameters."""
    dw = np.asarray(w1, np.float64) - np.asarray(w2, np.float64)
    db = np.asarray(b1, np.float64) - np.asarray(b2, np.float64)
    return float(np.sqrt(np.sum(dw**2) + np.sum(db**2)))
