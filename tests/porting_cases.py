"""Framework layers that tests/test_porting.py ports, and the script that ports them in another environment.

Each framework's cases are (name, layer, input) with random weights and inputs; the framework's own
layer output is the truth a ported layer must reproduce.

As a script (run by tests/test_porting.py with another environment's Python, since torch, TensorFlow and
MXNet do not share one environment)::

    python tests/porting_cases.py FRAMEWORK OUTDIR

writes, for every case, ``OUTDIR/NAME.spec.npz`` (``cl.from_native(layer).save``) and ``OUTDIR/NAME.data.npz``
(the input ``x`` and the framework's own output ``y``), plus ``OUTDIR/manifest.json``.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any, Callable, Dict, Iterator, List, NamedTuple

import numpy as np

FRAMEWORKS = ("torch", "tensorflow", "mxnet")


class Case(NamedTuple):
    name: str
    layer: Any
    x: np.ndarray


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def _x(shape, dtype=np.float32, seed=1) -> np.ndarray:
    return _rng(seed).normal(size=shape).astype(dtype)


# -- torch ---------------------------------------------------------------------------------------


def torch_cases() -> Iterator[Case]:
    import torch
    from torch import nn

    torch.manual_seed(0)
    yield Case("conv_s2_p1", nn.Conv2d(3, 8, 3, stride=2, padding=1), _x((2, 3, 9, 9)))
    yield Case("conv_same_even", nn.Conv2d(2, 4, (4, 3), padding="same", dilation=(1, 2)), _x((1, 2, 8, 8)))
    yield Case("conv_pair_nobias", nn.Conv2d(3, 5, 2, stride=(2, 1), padding=(0, 1), bias=False), _x((1, 3, 7, 6)))
    yield Case("conv_valid_dilated", nn.Conv2d(1, 2, 3, padding="valid", dilation=2), _x((3, 1, 9, 8)))
    yield Case("conv_float64", nn.Conv2d(2, 3, 3, padding=1).double(), _x((1, 2, 6, 6), np.float64))
    yield Case("max_k3_s2_p1", nn.MaxPool2d(3, 2, padding=1), _x((2, 3, 9, 9)))
    yield Case("max_k23", nn.MaxPool2d((2, 3)), _x((1, 2, 7, 9)))
    yield Case("avg_k3_s2_p1", nn.AvgPool2d(3, 2, padding=1), _x((2, 3, 9, 9)))
    yield Case("avg_k3_s2_p1_real", nn.AvgPool2d(3, 2, padding=1, count_include_pad=False), _x((2, 3, 9, 9)))
    yield Case("avg_k32_pair", nn.AvgPool2d((3, 2), stride=(1, 2), padding=(1, 0)), _x((1, 2, 6, 7)))


def torch_run(layer: Any, x: np.ndarray) -> np.ndarray:
    import torch

    with torch.no_grad():
        return layer(torch.from_numpy(x)).numpy()


# -- Keras (TensorFlow) --------------------------------------------------------------------------


def _keras_weights(layer: Any, input_shape, seed: int) -> Any:
    """Build ``layer`` and give it random weights, the bias too (Keras starts it at zero)."""
    layer.build(input_shape)
    rng = _rng(seed)
    layer.set_weights([rng.normal(scale=0.5, size=w.shape).astype(w.dtype) for w in layer.get_weights()])
    return layer


def tensorflow_cases() -> Iterator[Case]:
    import keras
    from keras import layers

    keras.utils.set_random_seed(0)
    yield Case(
        "conv_s2_same_8",
        _keras_weights(layers.Conv2D(8, 3, strides=2, padding="same"), (None, 8, 8, 3), 2),
        _x((2, 8, 8, 3)),
    )
    conv = _keras_weights(layers.Conv2D(8, 3, strides=2, padding="same"), (None, 9, 9, 3), 3)
    yield Case("conv_s2_same_9", conv, _x((1, 9, 9, 3)))
    yield Case(
        "conv_same_dilated_nobias",
        _keras_weights(
            layers.Conv2D(4, (2, 4), padding="same", dilation_rate=(2, 1), use_bias=False), (None, 7, 7, 2), 4
        ),
        _x((1, 7, 7, 2)),
    )
    yield Case("avg_k3_s2_same", layers.AveragePooling2D(3, strides=2, padding="same"), _x((2, 8, 8, 3)))
    yield Case("max_k3_s2_same", layers.MaxPooling2D(3, strides=2, padding="same"), _x((2, 8, 8, 3)))
    yield Case("avg_k2", layers.AveragePooling2D(2), _x((1, 7, 6, 2)))
    yield Case("avg_k3_s1_same", layers.AveragePooling2D(3, strides=1, padding="same"), _x((1, 5, 6, 2)))
    yield Case("max_k2_channels_first", layers.MaxPooling2D(2, data_format="channels_first"), _x((1, 3, 6, 5)))


def tensorflow_run(layer: Any, x: np.ndarray) -> np.ndarray:
    import keras

    return np.asarray(keras.ops.convert_to_numpy(layer(x)))


# -- Gluon (MXNet) -------------------------------------------------------------------------------


def _gluon_weights(layer: Any, seed: int) -> Any:
    import mxnet as mx

    layer.initialize()
    rng = _rng(seed)
    for parameter in layer.collect_params().values():
        parameter.set_data(mx.nd.array(rng.normal(scale=0.5, size=parameter.shape), dtype="float32"))
    return layer


def mxnet_cases() -> Iterator[Case]:
    from mxnet.gluon import nn

    yield Case("conv_s2_p1", _gluon_weights(nn.Conv2D(8, 3, strides=2, padding=1, in_channels=3), 2), _x((2, 3, 9, 9)))
    yield Case(
        "conv_dilated_nobias",
        _gluon_weights(nn.Conv2D(4, (3, 2), dilation=(2, 1), padding=(1, 0), use_bias=False, in_channels=2), 3),
        _x((1, 2, 8, 7)),
    )
    yield Case("max_k3_s2_p1", nn.MaxPool2D(3, 2, 1), _x((2, 3, 9, 9)))
    yield Case("max_default", nn.MaxPool2D(), _x((1, 2, 6, 7)))
    yield Case("avg_k3_s2_p1", nn.AvgPool2D(3, 2, 1), _x((2, 3, 9, 9)))
    yield Case("avg_k3_s2_p1_real", nn.AvgPool2D(3, 2, 1, count_include_pad=False), _x((2, 3, 9, 9)))


def mxnet_run(layer: Any, x: np.ndarray) -> np.ndarray:
    import mxnet as mx

    return layer(mx.nd.array(x, dtype=x.dtype)).asnumpy()


CASES: Dict[str, Callable[[], Iterator[Case]]] = {
    "torch": torch_cases,
    "tensorflow": tensorflow_cases,
    "mxnet": mxnet_cases,
}
RUN: Dict[str, Callable[[Any, np.ndarray], np.ndarray]] = {
    "torch": torch_run,
    "tensorflow": tensorflow_run,
    "mxnet": mxnet_run,
}


def produce(framework: str, outdir: str) -> List[str]:
    """Port every case of ``framework`` and save spec, input and the framework's own output in ``outdir``."""
    import convlab as cl

    names = []
    for case in CASES[framework]():
        cl.from_native(case.layer).save(os.path.join(outdir, f"{case.name}.spec.npz"))
        np.savez(os.path.join(outdir, f"{case.name}.data.npz"), x=case.x, y=RUN[framework](case.layer, case.x))
        names.append(case.name)
    module = sys.modules["keras" if framework == "tensorflow" else framework]
    manifest = {"framework": framework, "version": str(module.__version__), "cases": names}
    with open(os.path.join(outdir, "manifest.json"), "w") as handle:
        json.dump(manifest, handle)
    return names


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in FRAMEWORKS:
        sys.exit(f"usage: python {sys.argv[0]} {{{','.join(FRAMEWORKS)}}} OUTDIR")
    produce(sys.argv[1], sys.argv[2])
