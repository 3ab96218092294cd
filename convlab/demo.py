"""``convlab demo``: the whole chapter, and its exercises, on any backend."""

from __future__ import annotations

from typing import Any, List, Optional, Tuple

import numpy as np

import convlab as cl


def _show(title: str, value: Any, backend: cl.Backend) -> None:
    array = backend.to_numpy(value) if not isinstance(value, np.ndarray) else value
    print(f"{title}\n{np.array2string(np.asarray(array), precision=4, suppress_small=True)}\n")


def run(backend_name: Optional[str] = None, plot: Optional[str] = None, out=print) -> None:
    backend = cl.get_backend(backend_name or cl.registry.default_backend_name())
    t = lambda a: backend.asarray(np.asarray(a, dtype=np.float32), "float32")  # noqa: E731
    print(f"convlab {cl.__version__} demo on backend {backend.name} {backend.version()}\n")

    print("== 6.2.1 The cross-correlation operation")
    X, K = t(cl.images.ramp()), t([[0.0, 1.0], [2.0, 3.0]])
    _show("corr2d(X, K) with X = 0..8 as 3x3 and K = [[0, 1], [2, 3]]:", cl.corr2d(X, K), backend)

    print("== 6.2.3 Object edge detection in images")
    stripes = t(cl.images.stripes())
    _show("X, white (1) with a black (0) stripe:", stripes, backend)
    edges = cl.corr2d(stripes, t(cl.kernels.edge()))
    _show("Y = corr2d(X, [[1, -1]]): 1 from white to black, -1 from black to white:", edges, backend)
    _show(
        "corr2d(X.T, K): K detects vertical edges only:",
        cl.corr2d(t(cl.images.stripes().T), t(cl.kernels.edge())),
        backend,
    )

    print("== 6.2.4 Learning a kernel (lr 3e-2, squared error summed, seed 0)")
    result = cl.train_kernel(stripes, edges, (1, 2), lr=3e-2, epochs=10, seed=0)
    for epoch, loss in enumerate(result.losses, start=1):
        if epoch % 2 == 0:
            print(f"epoch {epoch}, loss {loss:.3f}")
    _show(f"learned kernel ({result.gradient} gradients):", result.kernel, backend)

    print("== 6.3 Padding and stride: output shapes for an 8x8 input")
    shapes: List[Tuple[Any, Any, Any]] = [
        ((3, 3), 1, 1),
        ((5, 3), (2, 1), 1),
        ((3, 3), 1, 2),
        ((3, 5), (0, 1), (3, 4)),
        ((3, 3), "same", 2),
    ]
    for kernel, padding, stride in shapes:
        shape = cl.output_shape((8, 8), kernel, padding=padding, stride=stride)
        print(f"kernel {kernel}, padding {padding!r}, stride {stride!r} -> {shape}")
    print()

    print("== 6.4 Multiple input and multiple output channels")
    X2 = t([cl.images.ramp(), cl.images.ramp() + 1])
    K2 = np.array([[[0.0, 1.0], [2.0, 3.0]], [[1.0, 2.0], [3.0, 4.0]]])
    _show("corr2d_multi_in(X, K):", cl.corr2d_multi_in(X2, t(K2)), backend)
    K3 = np.stack([K2, K2 + 1, K2 + 2])
    _show(f"corr2d_multi_in_out(X, K) with K of shape {K3.shape}:", cl.corr2d_multi_in_out(X2, t(K3)), backend)
    rng = np.random.default_rng(0)
    X1, K1 = t(rng.normal(size=(3, 3, 3))), t(rng.normal(size=(2, 3, 1, 1)))
    difference = np.abs(
        backend.to_numpy(cl.corr2d_multi_in_out_1x1(X1, K1)) - backend.to_numpy(cl.corr2d_multi_in_out(X1, K1))
    )
    print(f"1x1 convolution as a matrix product: largest difference from corr2d_multi_in_out {difference.max():.2e}\n")

    print("== 6.5 Pooling")
    _show("max pooling 2x2 of 0..8:", cl.pool2d(X, (2, 2)), backend)
    _show("average pooling 2x2 of 0..8:", cl.pool2d(X, (2, 2), "avg"), backend)
    X16 = t(np.arange(16.0).reshape(4, 4))
    _show("MaxPool2D(3) of 0..15 (stride defaults to the window):", cl.MaxPool2D(3, backend=backend.name)(X16), backend)
    _show(
        "MaxPool2D(3, padding=1, stride=2):", cl.MaxPool2D(3, padding=1, stride=2, backend=backend.name)(X16), backend
    )
    _show(
        "MaxPool2D((2, 3), padding=(0, 1), stride=(2, 3)):",
        cl.MaxPool2D((2, 3), stride=(2, 3), padding=(0, 1), backend=backend.name)(X16),
        backend,
    )
    two = t(np.stack([np.arange(16.0).reshape(4, 4) + offset for offset in (0, 1)]))
    _show(
        "pooling each channel of [X, X + 1] separately:",
        cl.MaxPool2D(3, padding=1, stride=2, backend=backend.name)(two),
        backend,
    )

    print("== 14.10 Transposed convolution")
    B, KB = t([[0.0, 1.0], [2.0, 3.0]]), t([[0.0, 1.0], [2.0, 3.0]])
    _show("conv_transpose2d(X, K) with X = K = [[0, 1], [2, 3]]:", cl.conv_transpose2d(B, KB), backend)
    _show("with stride 2:", cl.conv_transpose2d(B, KB, stride=2), backend)
    _show("with padding 1 (first and last rows and columns removed):", cl.conv_transpose2d(B, KB, padding=1), backend)
    X10, K20 = t(rng.normal(size=(1, 10, 16, 16))), t(rng.normal(size=(20, 10, 5, 5)))
    Y20 = cl.conv2d(X10, K20, padding=2, stride=3)
    back = cl.conv_transpose2d(Y20, K20, padding=2, stride=3)
    print(f"conv2d of a {tuple(X10.shape)} input, kernel {tuple(K20.shape)}, padding 2, stride 3: {tuple(Y20.shape)}; "
          f"conv_transpose2d of that, same kernel: {tuple(back.shape)}")  # fmt: skip
    W = backend.to_numpy(cl.conv_matrix(KB, (3, 3)))
    from_matrix = (W.T @ backend.to_numpy(B).ravel()).reshape(3, 3)
    same = np.array_equal(from_matrix, backend.to_numpy(cl.conv_transpose2d(B, KB)))
    print(f"conv_transpose2d(X, K) == (conv_matrix(K, (3, 3)).T @ X.ravel()).reshape(3, 3): {same}\n")

    print("== Exercises")
    diagonal = cl.images.diagonal(6)
    _show("an image with a diagonal edge:", diagonal, backend)
    _show("corr2d(X, K): the edge on the diagonal:", cl.corr2d(t(diagonal), t(cl.kernels.edge())), backend)
    _show(
        "corr2d(X.T, K): the edge below the diagonal, sign flipped:",
        cl.corr2d(t(diagonal.T), t(cl.kernels.edge())),
        backend,
    )
    _show("corr2d(X, K.T): a horizontal-edge detector:", cl.corr2d(t(diagonal), t(cl.kernels.edge().T)), backend)
    # the weight Conv2D((1, 2), seed=0) starts from, on this backend
    weight = t(cl.layers.initial_weights((1, 2), 1, 1, False, 0)[0].reshape(1, 2))
    residual = cl.corr2d(stripes, weight) - edges
    _, grad_weight, _ = cl.conv2d_vjp(stripes, weight, 2 * residual)
    _show("gradient of Conv2D's weight (the TensorFlow notebook's loop got None here):", grad_weight, backend)
    M = cl.conv_matrix(t([[0.0, 1.0], [2.0, 3.0]]), (3, 3))
    _show("cross-correlation as one matrix product: conv_matrix(K, (3, 3)) =", M, backend)
    _show(
        "corr2d_matmul(X, K) = (M @ X.ravel()).reshape(2, 2):",
        cl.corr2d_matmul(X, t([[0.0, 1.0], [2.0, 3.0]])),
        backend,
    )
    _show("second-derivative kernel:", cl.kernels.second_derivative(), backend)
    _show("integral (running-sum) kernel:", cl.kernels.integral(3), backend)
    for order in range(4):
        taps = cl.kernels.derivative(order).ravel().tolist()
        print(f"derivative of order {order}: kernel {taps}, minimum size {cl.kernels.min_size(order)}")
    if plot:
        _plot(plot, backend, stripes, edges, result)


def _plot(path: str, backend: cl.Backend, image: Any, edges: Any, result: Any) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(f"\n--plot needs matplotlib: pip install 'convlab[plot]' (or pip install matplotlib); {path} not written")
        return
    figure, axes = plt.subplots(1, 4, figsize=(14, 3.2))
    panels = [
        ("image X", backend.to_numpy(image)),
        ("kernel [[1, -1]]", cl.kernels.edge()),
        ("corr2d(X, K)", backend.to_numpy(edges)),
    ]
    for axis, (title, array) in zip(axes, panels):
        shown = axis.imshow(array, cmap="gray" if title == "image X" else "coolwarm")
        axis.set_title(title)
        figure.colorbar(shown, ax=axis, shrink=0.8)
    axes[3].semilogy(range(1, len(result.losses) + 1), result.losses, marker="o")
    axes[3].set_title(f"learning K ({backend.name})")
    axes[3].set_xlabel("epoch")
    axes[3].set_ylabel("loss")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    print(f"\nwrote {path}")
