"""Closed-form gradients of the correlation, written once with the seam's primitives.

Both gradients of ``sum(conv2d(X, K) * dY)`` are correlations themselves: dK correlates the padded
input with dY (stride and dilation swap roles), dX is the transposed convolution of dY: dY spread out
by the stride, padded fully, correlated with the flipped kernel with its channels swapped.
"""

from __future__ import annotations

from typing import Any, Tuple

from convlab.geometry import ConvGeometry, conv_geometry

_TO_NCHW, _TO_NHWC = (0, 3, 1, 2), (0, 2, 3, 1)


def conv2d_vjp(be: Any, x: Any, k: Any, dy: Any, geometry: ConvGeometry) -> Tuple[Any, Any, Any]:
    """``(dX, dK, dbias)`` as 4-D tensors in the geometry's layout (dbias (Co,)); inputs of any rank."""
    g = geometry
    x, k, dy = be.reshape(x, g.x4), be.reshape(k, g.k4), be.reshape(dy, g.out4)
    if g.channels_last:  # the formulas below are written for NCHW / OIHW
        x, k, dy = be.transpose(x, _TO_NCHW), be.transpose(k, (3, 2, 0, 1)), be.transpose(dy, _TO_NCHW)
    kernel_h, kernel_w = g.window
    (sh, sw), (dh, dw), pads = g.stride, g.dilation, g.pads

    # dK[o, c, i, j] = sum_{n, y, x} Xpad[n, c, i*dh + y*sh, j*dw + x*sw] * dY[n, o, y, x]:
    # a correlation with channels as the batch, the batch as channels, stride and dilation swapped.
    x_padded = be.transpose(be.pad(x, ((0, 0), (0, 0)) + pads), (1, 0, 2, 3))
    dy_as_kernel = be.transpose(dy, (1, 0, 2, 3))
    inner = conv_geometry(tuple(x_padded.shape), tuple(dy_as_kernel.shape), stride=(dh, dw), dilation=(sh, sw))
    dk = be.conv2d(x_padded, dy_as_kernel, None, inner)
    dk = be.transpose(dk[:, :, :kernel_h, :kernel_w], (1, 0, 2, 3))
    dx = conv_transpose(be, dy, k, g.in_hw, g.window, g.stride, pads, g.dilation)
    dbias = be.sum(dy, (0, 2, 3))
    if g.channels_last:
        dx, dk = be.transpose(dx, _TO_NHWC), be.transpose(dk, (2, 3, 1, 0))
    return dx, dk, dbias


def conv_transpose(be: Any, dy: Any, k: Any, in_hw: Any, window: Any, stride: Any, pads: Any, dilation: Any) -> Any:
    """The adjoint of the NCHW correlation with OIHW kernel ``k``: dY (N, Co, Ho, Wo) -> dX (N, C, H, W).

    dY is spread out by the stride, padded fully (less the forward pads), and correlated with the
    flipped kernel, channels swapped. ``in_hw`` is the forward input's (H, W).
    """
    (sh, sw), (dh, dw) = stride, dilation
    ((top, bottom), (left, right)), (kernel_h, kernel_w) = pads, window
    batch, out_channels, out_h, out_w = (int(n) for n in dy.shape)
    spread = dy
    if (sh, sw) != (1, 1):
        spread = be.reshape(dy, (batch, out_channels, out_h, 1, out_w, 1))
        spread = be.pad(spread, ((0, 0), (0, 0), (0, 0), (0, sh - 1), (0, 0), (0, sw - 1)))
        spread = be.reshape(spread, (batch, out_channels, out_h * sh, out_w * sw))
        spread = spread[:, :, : (out_h - 1) * sh + 1, : (out_w - 1) * sw + 1]
    spread_h, spread_w = (out_h - 1) * sh + 1, (out_w - 1) * sw + 1
    padded_h, padded_w = in_hw[0] + top + bottom, in_hw[1] + left + right
    flipped = be.flip(be.transpose(k, (1, 0, 2, 3)), (2, 3))
    # full pads: (k-1)*d before, and after whatever brings the result to the padded input's size (rows the
    # stride skipped at the end included)
    full = (((kernel_h - 1) * dh, padded_h - spread_h), ((kernel_w - 1) * dw, padded_w - spread_w))
    inner = conv_geometry(
        (batch, out_channels, spread_h, spread_w), tuple(flipped.shape), padding=full, dilation=(dh, dw)
    )
    dx = be.conv2d(spread, flipped, None, inner)
    if (top, bottom, left, right) != (0, 0, 0, 0):
        dx = dx[:, :, top : top + in_hw[0], left : left + in_hw[1]]
    return dx
