"""convlab: the "Convolutions for Images" chapter of Dive into Deep Learning as a multi-framework library.

One API (``corr2d``, ``conv2d``, ``pool2d``, ``Conv2D``, ``train_kernel``, ...) runs natively on
NumPy, PyTorch, TensorFlow, JAX and MXNet. Importing convlab imports no framework.

Example:
    >>> import convlab as cl
    >>> cl.corr2d([[0, 1, 2], [3, 4, 5], [6, 7, 8]], [[0, 1], [2, 3]]).tolist()
    [[19.0, 25.0], [37.0, 43.0]]
"""

from convlab import geometry, images, kernels
from convlab.autotune import autotune_enabled, clear_autotune, set_autotune
from convlab.backend import Backend
from convlab.conv_transpose import ConvTranspose2D, conv_transpose2d, conv_transpose2d_vjp
from convlab.errors import BackendNotAvailableError, ConvlabError, ConvlabTypeError, ConvlabValueError
from convlab.layers import AvgPool2D, Conv2D, MaxPool2D
from convlab.ops import (
    conv2d,
    conv2d_vjp,
    conv_matrix,
    corr2d,
    corr2d_matmul,
    corr2d_multi_in,
    corr2d_multi_in_out,
    corr2d_multi_in_out_1x1,
    output_shape,
    pool2d,
)
from convlab.porting import LayerSpec, from_native
from convlab.registry import backends, get_backend, register_backend, set_backend, use_backend
from convlab.training import TrainResult, train_kernel

__version__ = "0.1.0"

__all__ = [
    "AvgPool2D",
    "Backend",
    "BackendNotAvailableError",
    "Conv2D",
    "ConvTranspose2D",
    "ConvlabError",
    "ConvlabTypeError",
    "ConvlabValueError",
    "LayerSpec",
    "MaxPool2D",
    "TrainResult",
    "autotune_enabled",
    "backends",
    "clear_autotune",
    "conv2d",
    "conv2d_vjp",
    "conv_transpose2d",
    "conv_transpose2d_vjp",
    "conv_matrix",
    "corr2d",
    "corr2d_matmul",
    "corr2d_multi_in",
    "corr2d_multi_in_out",
    "corr2d_multi_in_out_1x1",
    "from_native",
    "geometry",
    "get_backend",
    "images",
    "kernels",
    "output_shape",
    "pool2d",
    "register_backend",
    "set_autotune",
    "set_backend",
    "train_kernel",
    "use_backend",
]
