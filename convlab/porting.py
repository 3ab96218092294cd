"""Porting layers between frameworks: :func:`from_native` reads a framework's own layer into a :class:`LayerSpec`.

A :class:`LayerSpec` is a layer's configuration in convlab's terms (the keyword arguments of
:func:`convlab.conv2d` or :func:`convlab.pool2d`, with the framework's padding rule resolved) plus its
weights as NumPy arrays. ``spec.build(backend=...)`` makes convlab's native layer on any backend that
computes the same function on the same input layout; ``spec.save(path)`` / ``LayerSpec.load(path)`` move a
spec between environments (frameworks that cannot share one process) as an ``.npz`` file read with
``allow_pickle=False``: nothing in a file is executed.

Supported layers (identified by type among the frameworks already imported; this module imports none):

=========== ============================================================
torch       ``nn.Conv2d``, ``nn.MaxPool2d``, ``nn.AvgPool2d``
Keras       ``Conv2D``, ``MaxPooling2D``, ``AveragePooling2D`` (Keras 3, and tf_keras)
Gluon       ``nn.Conv2D``, ``nn.MaxPool2D``, ``nn.AvgPool2D`` (MXNet 1.x)
=========== ============================================================

The frameworks' rules, in convlab's terms:

- torch ``padding=p`` is symmetric; ``padding="same"`` (stride 1 only) pads ``d*(k-1)`` in total with the odd
  extra at the bottom/right; average pooling counts padded zeros unless ``count_include_pad=False``.
- Keras ``"same"`` is convlab's ``"same"`` (output ``ceil(in/stride)``, odd extra bottom/right). Its pads
  depend on the input size when a stride exceeds 1, so the config keeps ``"same"`` then; with stride 1 the
  pads are explicit. ``AveragePooling2D`` averages only real pixels: ``count_include_pad=False``. The Keras
  kernel is HWIO in both data formats; a ``channels_first`` layer's kernel becomes OIHW.
- Gluon ``padding`` is symmetric, ``AvgPool2D`` counts padded zeros by default (``count_include_pad=True``);
  layout ``NHWC`` is ``channels_last`` (its OHWI weight becomes HWIO).

What convlab cannot express is a :class:`~convlab.ConvlabValueError` naming the attribute and its value:
groups > 1, ``ceil_mode=True`` (Gluon ``pooling_convention="full"``), ``padding_mode`` other than zeros,
dilated pooling, ``return_indices``, ``divisor_override``, an activation other than linear, global pooling,
weights in float16/bfloat16 (convlab computes in float32 or float64), a subclass that overrides the
forward pass.

Example:
    >>> import numpy as np, convlab as cl
    >>> spec = cl.LayerSpec("pool2d", {"pool_size": 3, "mode": "avg", "stride": 2, "padding": "same",
    ...                                "count_include_pad": False})
    >>> spec.output_shape((1, 1, 7, 7)), spec.geometry((1, 1, 8, 8)).pads
    ((1, 1, 4, 4), ((0, 1), (0, 1)))
    >>> layer = spec.build(backend="numpy")
    >>> float(layer(np.ones((1, 1, 7, 7)))[0, 0, -1, -1])
    1.0
"""

from __future__ import annotations

import io
import json
import os
import sys
import zipfile
from typing import Any, Callable, Dict, Mapping, Optional, Tuple, Union

import numpy as np

from convlab.arguments import to_pair
from convlab.errors import ConvlabError, ConvlabTypeError, ConvlabValueError
from convlab.geometry import ConvGeometry, PoolGeometry, conv_geometry, pool_geometry, resolve_pads

#: the marker and version of the ``.npz`` format :meth:`LayerSpec.save` writes
FILE_FORMAT = "convlab.LayerSpec"
FILE_VERSION = 1

KINDS = ("conv2d", "pool2d")
_CONV_KEYS = ("stride", "padding", "dilation", "data_format")
_POOL_KEYS = ("pool_size", "mode", "stride", "padding", "count_include_pad", "data_format")
_DTYPES = ("float32", "float64")
_MAX_JSON = 1 << 20  # a spec's JSON is a few hundred bytes; refuse anything absurd before parsing

Pads = Tuple[Tuple[int, int], Tuple[int, int]]


class LayerSpec:
    """A layer's configuration in convlab's terms plus its weights: portable between frameworks.

    Args:
        kind: ``"conv2d"`` or ``"pool2d"``.
        config: the keyword arguments of :func:`convlab.conv2d` (``stride``, ``padding``, ``dilation``,
            ``data_format``) or of :func:`convlab.pool2d` (``pool_size``, ``mode``, ``stride``, ``padding``,
            ``count_include_pad``, ``data_format``); missing keys take those functions' defaults, except
            that a pooling stride defaults to the window as in the layers.
        weight: for ``"conv2d"``, the kernel (Co, C, kh, kw), or (kh, kw, C, Co) with
            ``data_format="channels_last"``, float32 or float64; ``None`` for pooling.
        bias: ``None`` or (Co,), the weight's dtype.
        source: what the spec was read from (framework, layer, version); informational only.

    The configuration is normalised (pairs as tuples, padding as explicit ``((top, bottom), (left, right))``
    or ``"same"``, whose pads depend on the input size) and validated with
    :func:`convlab.geometry.conv_geometry` / :func:`~convlab.geometry.pool_geometry`; weights that do not
    fit it raise :class:`~convlab.ConvlabValueError`. The arrays are read-only copies.
    """

    __slots__ = ("kind", "config", "weight", "bias", "source")
    kind: str
    config: Dict[str, Any]
    weight: Optional[np.ndarray]
    bias: Optional[np.ndarray]
    source: Dict[str, str]

    def __init__(
        self,
        kind: str,
        config: Dict[str, Any],
        weight: Optional[np.ndarray] = None,
        bias: Optional[np.ndarray] = None,
        source: Optional[Dict[str, str]] = None,
    ):
        if kind not in KINDS:
            raise ConvlabValueError(f"LayerSpec kind must be one of {KINDS}, got {kind!r}")
        if not isinstance(config, dict):
            raise ConvlabTypeError(f"LayerSpec config must be a dict, got {type(config).__name__}")
        if source is not None and not (
            isinstance(source, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in source.items())
        ):
            raise ConvlabTypeError(f"LayerSpec source must be a dict of strings, got {source!r}")
        if kind == "conv2d":
            config, weight, bias = _check_conv(config, weight, bias)
        else:
            if weight is not None or bias is not None:
                raise ConvlabValueError("a pool2d LayerSpec has no weights: weight and bias must be None")
            config = _check_pool(config)
        object.__setattr__(self, "kind", kind)
        object.__setattr__(self, "config", config)
        object.__setattr__(self, "weight", weight)
        object.__setattr__(self, "bias", bias)
        object.__setattr__(self, "source", dict(source or {}))

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("a LayerSpec is immutable; make a new one")

    # -- what the layer is ---------------------------------------------------------------------

    @property
    def channels_last(self) -> bool:
        return self.config["data_format"] == "channels_last"

    @property
    def kernel_size(self) -> Tuple[int, int]:
        """(kh, kw) of the kernel or the pooling window."""
        if self.weight is None:  # pooling
            return self.config["pool_size"]
        shape = self.weight.shape
        return (shape[0], shape[1]) if self.channels_last else (shape[2], shape[3])

    @property
    def in_channels(self) -> Optional[int]:
        """The input channels a convolution expects (None for pooling, which takes any)."""
        if self.weight is None:
            return None
        return self.weight.shape[2] if self.channels_last else self.weight.shape[1]

    @property
    def out_channels(self) -> Optional[int]:
        if self.weight is None:
            return None
        return self.weight.shape[3] if self.channels_last else self.weight.shape[0]

    def geometry(self, x_shape: Any) -> Union[ConvGeometry, PoolGeometry]:
        """The geometry of this layer on an input of ``x_shape``: explicit pads, output shape, ..."""
        if self.weight is not None:  # convolution
            bias_shape = None if self.bias is None else self.bias.shape
            return conv_geometry(x_shape, self.weight.shape, bias_shape, **self.config)
        config = dict(self.config)
        return pool_geometry(x_shape, config.pop("pool_size"), config.pop("mode"), **config)

    def output_shape(self, x_shape: Any) -> Tuple[int, ...]:
        """The shape this layer gives for an input of ``x_shape`` (in the spec's data format)."""
        return self.geometry(x_shape).out

    # -- making layers -------------------------------------------------------------------------

    def build(self, backend: Any = None) -> Any:
        """convlab's native layer on ``backend`` (a name or a :class:`~convlab.Backend`; default: the current one).

        A ``torch.nn.Module``, a Keras ``Layer``, a Gluon ``HybridBlock``, a JAX pytree or a NumPy layer,
        computing this spec's function on the same input layout; its weights are copies of the spec's.
        """
        from convlab.backend import Backend
        from convlab.registry import default_backend_name, get_backend

        if not isinstance(backend, Backend):
            if backend is not None and not isinstance(backend, str):
                raise ConvlabTypeError(f"backend must be a name (str), a Backend or None, got {backend!r}")
            backend = get_backend(backend or default_backend_name())
        if self.weight is not None:  # convolution
            bias = None if self.bias is None else self.bias.copy()
            return backend.conv2d_layer(dict(self.config), self.weight.copy(), bias)
        return backend.pool2d_layer(dict(self.config))

    # -- files ---------------------------------------------------------------------------------

    def to_json(self) -> str:
        """The kind, configuration and source as JSON (the weights are not included)."""
        return json.dumps(
            {
                "kind": self.kind,
                "config": self.config,
                "source": self.source,
                "weight": self.weight is not None,
                "bias": self.bias is not None,
            },
            sort_keys=True,
        )

    def save(self, path: Union[str, os.PathLike, io.IOBase]) -> None:
        """Write the spec to ``path`` (an ``.npz`` file, written at exactly that path, or a binary file object).

        The file holds the format marker and version, the spec as a JSON string and the weights as
        numeric arrays: :meth:`load` reads it with ``allow_pickle=False`` in any environment.
        """
        arrays: Dict[str, Any] = {
            "format": np.array(FILE_FORMAT),
            "version": np.array(FILE_VERSION, dtype=np.int64),
            "spec": np.array(self.to_json()),
        }
        if self.weight is not None:
            arrays["weight"] = self.weight
        if self.bias is not None:
            arrays["bias"] = self.bias
        if isinstance(path, (str, os.PathLike)):
            with open(path, "wb") as handle:  # why: np.savez would append ".npz" to a path without it
                np.savez(handle, **arrays)
        else:
            np.savez(path, **arrays)

    @classmethod
    def load(cls, path: Union[str, os.PathLike, io.IOBase]) -> LayerSpec:
        """Read a spec written by :meth:`save`; a file that is not one is a :class:`~convlab.ConvlabValueError`.

        Read with ``allow_pickle=False``: object arrays (pickles) are refused, nothing is executed, and the
        contents are validated like a new spec's (format marker, version, keys, dtypes, shapes, configuration).
        A missing file raises ``FileNotFoundError``.
        """
        where = os.fspath(path) if isinstance(path, (str, os.PathLike)) else "the file object"
        unreadable = (ValueError, OSError, EOFError, zipfile.BadZipFile, KeyError, TypeError, RuntimeError)
        try:
            contents = np.load(path, allow_pickle=False)
        except FileNotFoundError:
            raise
        except unreadable as error:
            raise ConvlabValueError(
                f"{where} is not a readable LayerSpec file (not an .npz archive, or pickled data): {error}"
            ) from None
        if not isinstance(contents, np.lib.npyio.NpzFile):
            raise ConvlabValueError(f"{where} is not a LayerSpec file: it holds one array, not an .npz archive")
        try:
            arrays = {name: contents[name] for name in contents.files}
        except unreadable as error:
            raise ConvlabValueError(
                f"{where} is not a readable LayerSpec file (truncated, corrupted or pickled data): {error}"
            ) from None
        finally:
            contents.close()
        return cls._from_arrays(arrays, where)

    @classmethod
    def _from_arrays(cls, arrays: Dict[str, np.ndarray], where: str) -> LayerSpec:
        def fail(reason: str) -> ConvlabValueError:
            return ConvlabValueError(f"{where} is not a valid LayerSpec file: {reason}")

        for name in ("format", "version", "spec"):
            if name not in arrays:
                raise fail(f"it has no {name!r} entry (entries: {sorted(arrays)})")
        unknown = set(arrays) - {"format", "version", "spec", "weight", "bias"}
        if unknown:
            raise fail(f"unexpected entries {sorted(unknown)}")
        marker = arrays["format"]
        if marker.shape != () or marker.dtype.kind != "U" or str(marker[()]) != FILE_FORMAT:
            raise fail(f"format marker is {marker!r}, expected {FILE_FORMAT!r}")
        version = arrays["version"]
        if version.shape != () or version.dtype.kind not in "iu":
            raise fail(f"version must be an integer, got {version!r}")
        if int(version) != FILE_VERSION:
            raise fail(f"format version {int(version)} is not supported (this convlab reads version {FILE_VERSION})")
        text = arrays["spec"]
        if text.shape != () or text.dtype.kind != "U" or text.dtype.itemsize > 4 * _MAX_JSON:
            raise fail("the 'spec' entry must be one JSON string")
        try:
            meta = json.loads(str(text[()]))
        except ValueError as error:
            raise fail(f"the 'spec' entry is not JSON: {error}") from None
        if not isinstance(meta, dict) or set(meta) != {"kind", "config", "source", "weight", "bias"}:
            raise fail("the 'spec' entry must hold exactly kind, config, source, weight and bias")
        for name in ("weight", "bias"):
            if meta[name] is not (name in arrays):
                raise fail(
                    f"the spec says weight={meta['weight']}, bias={meta['bias']} but the file holds {name}"
                    f"={'present' if name in arrays else 'absent'}"
                )
        try:
            return cls(meta["kind"], meta["config"], arrays.get("weight"), arrays.get("bias"), meta["source"])
        except ConvlabError as error:
            raise fail(str(error)) from None

    def __eq__(self, other: Any) -> bool:
        if not isinstance(other, LayerSpec):
            return NotImplemented
        return (
            (self.kind, self.config, self.source) == (other.kind, other.config, other.source)
            and _same_array(self.weight, other.weight)
            and _same_array(self.bias, other.bias)
        )

    __hash__ = None  # type: ignore[assignment]

    def __reduce__(self) -> Any:
        return (LayerSpec, (self.kind, self.config, self.weight, self.bias, self.source))

    # -- printing ------------------------------------------------------------------------------

    def __repr__(self) -> str:
        config = ", ".join(f"{key}={value!r}" for key, value in self.config.items())
        weights = ""
        if self.weight is not None:
            weights = f", weight {self.weight.shape} {self.weight.dtype}, bias={self.bias is not None}"
        origin = f", from {self.source['layer']}" if "layer" in self.source else ""
        return f"LayerSpec({self.kind}: {config}{weights}{origin})"


def _same_array(a: Optional[np.ndarray], b: Optional[np.ndarray]) -> bool:
    if a is None or b is None:
        return a is b
    return a.dtype == b.dtype and a.shape == b.shape and bool(np.array_equal(a, b, equal_nan=True))


# -- validation ----------------------------------------------------------------------------------


def _tuple(value: Any) -> Any:
    """JSON lists back to tuples, recursively."""
    if isinstance(value, (list, tuple)):
        return tuple(_tuple(v) for v in value)
    return value


def _check_keys(kind: str, config: dict, allowed: Tuple[str, ...]) -> None:
    unknown = [key for key in config if key not in allowed]
    if unknown:
        raise ConvlabValueError(f"{kind} config has unknown keys {unknown}; allowed: {list(allowed)}")


def _check_data_format(value: Any) -> str:
    if value not in ("channels_first", "channels_last"):
        raise ConvlabValueError(f"data_format must be 'channels_first' or 'channels_last', got {value!r}")
    return value


def _normal_padding(padding: Any, window: Tuple[int, int], stride: Tuple[int, int], dilation: Tuple[int, int]) -> Any:
    """``"same"`` (lower case) as it is; every other form as explicit pads, which do not depend on the input."""
    if isinstance(padding, str) and padding.lower() == "same":
        return "same"
    # Resolve on an input large enough for any pad: the explicit pads of these forms do not depend on it.
    extent = ((window[0] - 1) * dilation[0] + 1, (window[1] - 1) * dilation[1] + 1)
    return resolve_pads(padding, extent, window, stride, dilation)


def _check_array(name: str, value: Any) -> np.ndarray:
    if not isinstance(value, np.ndarray):
        raise ConvlabTypeError(f"LayerSpec {name} must be a NumPy array, got {type(value).__name__}")
    if value.dtype.name not in _DTYPES:
        raise ConvlabValueError(f"LayerSpec {name} must be float32 or float64, got dtype {value.dtype}")
    copy = np.array(value, dtype=value.dtype.name, copy=True, order="C")  # native byte order
    copy.setflags(write=False)
    return copy


def _check_conv(config: dict, weight: Any, bias: Any) -> Tuple[dict, np.ndarray, Optional[np.ndarray]]:
    _check_keys("conv2d", config, _CONV_KEYS)
    if weight is None:
        raise ConvlabValueError("a conv2d LayerSpec needs a weight")
    weight = _check_array("weight", weight)
    if bias is not None:
        bias = _check_array("bias", bias)
        if bias.dtype != weight.dtype:
            raise ConvlabValueError(f"LayerSpec bias dtype {bias.dtype} differs from the weight's {weight.dtype}")
    data_format = _check_data_format(config.get("data_format", "channels_first"))
    stride = to_pair("stride", _tuple(config.get("stride", 1)))
    dilation = to_pair("dilation", _tuple(config.get("dilation", 1)))
    if weight.ndim != 4:
        layout = "(kh, kw, C, Co)" if data_format == "channels_last" else "(Co, C, kh, kw)"
        raise ConvlabValueError(f"LayerSpec weight must be 4-D {layout}, got shape {weight.shape}")
    channels_last = data_format == "channels_last"
    window = weight.shape[:2] if channels_last else weight.shape[2:]
    in_channels = weight.shape[2] if channels_last else weight.shape[1]
    padding = _normal_padding(_tuple(config.get("padding", 0)), window, stride, dilation)
    normal = dict(stride=stride, padding=padding, dilation=dilation, data_format=data_format)
    # The smallest input the layer accepts: checks the weight and bias against the configuration.
    extent = tuple((k - 1) * d + 1 for k, d in zip(window, dilation))
    x_shape = (1,) + extent + (in_channels,) if channels_last else (1, in_channels) + extent
    conv_geometry(x_shape, weight.shape, None if bias is None else bias.shape, **normal)
    return normal, weight, bias


def _check_pool(config: dict) -> dict:
    _check_keys("pool2d", config, _POOL_KEYS)
    if "pool_size" not in config:
        raise ConvlabValueError("a pool2d LayerSpec config needs pool_size")
    window = to_pair("pool_size", _tuple(config["pool_size"]))
    stride = to_pair("stride", _tuple(config.get("stride", window)))
    mode = config.get("mode", "max")
    count_include_pad = config.get("count_include_pad", True)
    data_format = _check_data_format(config.get("data_format", "channels_first"))
    padding = _normal_padding(_tuple(config.get("padding", 0)), window, stride, (1, 1))
    normal = dict(
        pool_size=window,
        mode=mode,
        stride=stride,
        padding=padding,
        count_include_pad=count_include_pad,
        data_format=data_format,
    )
    x_shape = (1,) + window + (1,) if data_format == "channels_last" else (1, 1) + window
    pool_geometry(
        x_shape,
        window,
        mode,
        stride=stride,
        padding=padding,
        count_include_pad=count_include_pad,
        data_format=data_format,
    )
    normal["count_include_pad"] = bool(count_include_pad)
    return normal


# -- reading frameworks' layers ------------------------------------------------------------------


def from_native(layer: Any) -> LayerSpec:
    """Read a framework's own convolution or pooling layer into a :class:`LayerSpec`.

    Supported: torch ``nn.Conv2d`` / ``nn.MaxPool2d`` / ``nn.AvgPool2d``; Keras ``Conv2D`` / ``MaxPooling2D``
    / ``AveragePooling2D`` (built); Gluon ``nn.Conv2D`` / ``nn.MaxPool2D`` / ``nn.AvgPool2D`` (initialized).
    The framework is recognised among the modules already imported; none is imported here.

    Raises:
        ConvlabTypeError: ``layer`` is not one of these layers.
        ConvlabValueError: the layer uses something convlab cannot express (the message names the attribute
            and its value), or it has no weights yet (an unbuilt Keras layer, a deferred Gluon one).

    Example:
        >>> import torch, convlab as cl  # doctest: +SKIP
        >>> spec = cl.from_native(torch.nn.Conv2d(3, 8, 3, stride=2, padding=1))  # doctest: +SKIP
        >>> spec.config["padding"], spec.build(backend="tensorflow")  # doctest: +SKIP
    """
    for find in (_torch_reader, _keras_reader, _gluon_reader):
        reader = find(layer)
        if reader is not None:
            return reader(layer)
    kind = type(layer)
    raise ConvlabTypeError(
        f"from_native expects a torch nn.Conv2d/MaxPool2d/AvgPool2d, a Keras Conv2D/MaxPooling2D/AveragePooling2D "
        f"or a Gluon nn.Conv2D/MaxPool2D/AvgPool2D layer; got {kind.__module__}.{kind.__qualname__}"
    )


Reader = Callable[[Any], LayerSpec]


def _match(layer: Any, candidates: Mapping[str, Tuple[Any, Reader]], method: str, framework: str) -> Optional[Reader]:
    """The reader for the first candidate class ``layer`` is an instance of; a subclass must not override ``method``."""
    for name, (cls, reader) in candidates.items():
        if isinstance(cls, type) and isinstance(layer, cls):
            if getattr(type(layer), method, None) is not getattr(cls, method, None):
                raise ConvlabValueError(
                    f"{type(layer).__qualname__} subclasses the {framework} {name} but overrides {method}(): "
                    "convlab cannot know what it computes; port the plain layer"
                )
            return reader
    return None


def _unsupported(layer_name: str, attribute: str, value: Any, why: str) -> ConvlabValueError:
    return ConvlabValueError(f"{layer_name} {attribute}={value!r} is not supported: {why}")


def _float_weights(
    layer_name: str, weight: np.ndarray, bias: Optional[np.ndarray]
) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    """The weights as they are, when convlab can compute in their dtype."""
    for name, value in (("weight", weight), ("bias", bias)):
        if value is not None and value.dtype.name not in _DTYPES:
            raise _unsupported(
                layer_name,
                f"{name}.dtype",
                value.dtype.name,
                "convlab computes in float32 or float64; cast the layer first",
            )
    return weight, bias


def _source(framework: str, layer_name: str, version: Any) -> Dict[str, str]:
    return {"framework": framework, "layer": layer_name, "version": str(version)}


# torch ------------------------------------------------------------------------------------------


def _torch_reader(layer: Any) -> Optional[Reader]:
    torch = sys.modules.get("torch")
    nn = getattr(torch, "nn", None)
    if nn is None:
        return None
    candidates = {
        "nn.Conv2d": (getattr(nn, "Conv2d", None), _from_torch_conv),
        "nn.MaxPool2d": (getattr(nn, "MaxPool2d", None), _from_torch_pool),
        "nn.AvgPool2d": (getattr(nn, "AvgPool2d", None), _from_torch_pool),
    }
    return _match(layer, candidates, "forward", "torch")


def _torch_array(tensor: Any) -> np.ndarray:
    tensor = tensor.detach().cpu()
    if tensor.dtype.is_floating_point and str(tensor.dtype) not in ("torch.float32", "torch.float64"):
        raise _unsupported(
            "torch layer",
            "dtype",
            str(tensor.dtype),
            "convlab computes in float32 or float64; call layer.float() first",
        )
    return tensor.numpy().copy()


def _from_torch_conv(layer: Any) -> LayerSpec:
    torch = sys.modules["torch"]
    name = "torch.nn.Conv2d"
    if isinstance(layer.weight, getattr(torch.nn.parameter, "UninitializedParameter", ())):
        raise ConvlabValueError(f"the lazy {name} has no weights yet: call it on an input first")
    if layer.groups != 1:
        raise _unsupported(name, "groups", layer.groups, "convlab convolutions have one group (groups=1)")
    if layer.padding_mode != "zeros":
        raise _unsupported(name, "padding_mode", layer.padding_mode, "convlab pads with zeros only")
    if getattr(layer, "transposed", False):
        raise _unsupported(name, "transposed", True, "use convlab.conv_transpose2d")
    kernel = tuple(layer.kernel_size)
    stride = tuple(layer.stride)
    dilation = tuple(layer.dilation)
    padding = layer.padding
    if isinstance(padding, str):
        if padding == "valid":
            pads: Any = ((0, 0), (0, 0))
        else:  # "same" (torch allows it with stride 1 only): d*(k-1) in total, the odd extra at the bottom/right
            totals = [d * (k - 1) for k, d in zip(kernel, dilation)]
            pads = tuple((t // 2, t - t // 2) for t in totals)
    else:
        pads = tuple((int(p), int(p)) for p in padding)
    weight = _torch_array(layer.weight)
    bias = None if layer.bias is None else _torch_array(layer.bias)
    weight, bias = _float_weights(name, weight, bias)
    config = dict(stride=stride, padding=pads, dilation=dilation, data_format="channels_first")
    return LayerSpec("conv2d", config, weight, bias, _source("torch", name, torch.__version__))


def _from_torch_pool(layer: Any) -> LayerSpec:
    torch = sys.modules["torch"]
    average = isinstance(layer, torch.nn.AvgPool2d)
    name = "torch.nn.AvgPool2d" if average else "torch.nn.MaxPool2d"
    if layer.ceil_mode:
        raise _unsupported(name, "ceil_mode", True, "convlab's output size is the floor rule (no ceil mode)")
    if average:
        if layer.divisor_override is not None:
            raise _unsupported(
                name,
                "divisor_override",
                layer.divisor_override,
                "convlab divides by the window area or the real pixels under it",
            )
    else:
        if layer.return_indices:
            raise _unsupported(name, "return_indices", True, "convlab pooling returns values only")
        if to_pair("dilation", _tuple(layer.dilation)) != (1, 1):
            raise _unsupported(name, "dilation", layer.dilation, "convlab pooling windows are not dilated")
    window = to_pair("kernel_size", _tuple(layer.kernel_size))
    stride = window if layer.stride is None or layer.stride == () else to_pair("stride", _tuple(layer.stride))
    ph, pw = to_pair("padding", _tuple(layer.padding), minimum=0)
    config = dict(
        pool_size=window,
        mode="avg" if average else "max",
        stride=stride,
        padding=((ph, ph), (pw, pw)),
        count_include_pad=bool(layer.count_include_pad) if average else True,
        data_format="channels_first",
    )
    return LayerSpec("pool2d", config, source=_source("torch", name, torch.__version__))


# Keras ------------------------------------------------------------------------------------------


def _keras_reader(layer: Any) -> Optional[Reader]:
    for package in ("keras", "tf_keras"):
        keras = sys.modules.get(package)
        layers = getattr(keras, "layers", None) if keras is not None else None
        if layers is None:
            continue
        candidates = {
            "Conv2D": (getattr(layers, "Conv2D", None), _from_keras_conv),
            "MaxPooling2D": (getattr(layers, "MaxPooling2D", None), _from_keras_pool),
            "AveragePooling2D": (getattr(layers, "AveragePooling2D", None), _from_keras_pool),
        }
        reader = _match(layer, candidates, "call", "Keras")
        if reader is not None:
            return reader
    return None


def _keras_version(layer: Any) -> str:
    package = type(layer).__module__.split(".")[0]
    return str(getattr(sys.modules.get(package), "__version__", "unknown"))


def _keras_array(value: Any) -> np.ndarray:
    if hasattr(value, "numpy") and callable(value.numpy):
        value = value.numpy()
    return np.array(value, copy=True)


def _keras_padding(name: str, padding: Any, window, stride, dilation) -> Any:
    padding = str(padding).lower()
    if padding == "valid":
        return ((0, 0), (0, 0))
    if padding != "same":
        raise _unsupported(name, "padding", padding, "convlab pads 'valid' or 'same' (TensorFlow's rule)")
    if stride == (1, 1):  # then the pads do not depend on the input size: make them explicit
        totals = [(k - 1) * d for k, d in zip(window, dilation)]
        return tuple((t // 2, t - t // 2) for t in totals)
    return "same"  # TensorFlow's rule, convlab's "same": output ceil(in / stride), the odd extra bottom/right


def _check_keras_dtype(name: str, layer: Any) -> None:
    compute = getattr(layer, "compute_dtype", None)
    if compute is not None and str(compute) not in _DTYPES:
        policy = getattr(getattr(layer, "dtype_policy", None), "name", compute)
        raise _unsupported(
            name, "dtype_policy", str(policy), f"it computes in {compute}; convlab computes in float32 or float64"
        )


def _from_keras_conv(layer: Any) -> LayerSpec:
    name = "keras.layers.Conv2D"
    if not getattr(layer, "built", False):
        raise ConvlabValueError(
            f"the {name} layer is not built, so it has no weights yet: call it on an input or "
            "layer.build(input_shape) first"
        )
    if getattr(layer, "groups", 1) != 1:
        raise _unsupported(name, "groups", layer.groups, "convlab convolutions have one group (groups=1)")
    activation = getattr(layer, "activation", None)
    activation_name = getattr(activation, "__name__", repr(activation))
    if activation is not None and activation_name != "linear":
        raise _unsupported(
            name, "activation", activation_name, "convlab layers are linear; port the activation separately"
        )
    if getattr(layer, "quantization_mode", None) is not None:
        raise _unsupported(name, "quantization_mode", layer.quantization_mode, "convlab computes in float32/float64")
    _check_keras_dtype(name, layer)
    channels_last = layer.data_format == "channels_last"
    if layer.data_format not in ("channels_last", "channels_first"):
        raise _unsupported(name, "data_format", layer.data_format, "convlab knows channels_first and channels_last")
    kernel = _keras_array(layer.kernel)  # HWIO in both data formats (with any LoRA update applied)
    bias = _keras_array(layer.bias) if layer.use_bias and layer.bias is not None else None
    kernel, bias = _float_weights(name, kernel, bias)
    weight = kernel if channels_last else np.ascontiguousarray(kernel.transpose(3, 2, 0, 1))
    window = tuple(kernel.shape[:2])
    stride, dilation = tuple(layer.strides), tuple(layer.dilation_rate)
    config = dict(
        stride=stride,
        padding=_keras_padding(name, layer.padding, window, stride, dilation),
        dilation=dilation,
        data_format=layer.data_format,
    )
    return LayerSpec("conv2d", config, weight, bias, _source("keras", name, _keras_version(layer)))


def _from_keras_pool(layer: Any) -> LayerSpec:
    average = _is_keras_average(layer)
    name = "keras.layers.AveragePooling2D" if average else "keras.layers.MaxPooling2D"
    _check_keras_dtype(name, layer)
    if layer.data_format not in ("channels_last", "channels_first"):
        raise _unsupported(name, "data_format", layer.data_format, "convlab knows channels_first and channels_last")
    window = to_pair("pool_size", _tuple(layer.pool_size))
    stride = window if layer.strides is None else to_pair("strides", _tuple(layer.strides))
    config = dict(
        pool_size=window,
        mode="avg" if average else "max",
        stride=stride,
        padding=_keras_padding(name, layer.padding, window, stride, (1, 1)),
        # Keras (TensorFlow) averages over the real pixels under each window only
        count_include_pad=not average,
        data_format=layer.data_format,
    )
    return LayerSpec("pool2d", config, source=_source("keras", name, _keras_version(layer)))


def _is_keras_average(layer: Any) -> bool:
    for package in ("keras", "tf_keras"):
        layers = getattr(sys.modules.get(package), "layers", None)
        average = getattr(layers, "AveragePooling2D", None)
        if isinstance(average, type) and isinstance(layer, average):
            return True
    return False


# Gluon ------------------------------------------------------------------------------------------


def _gluon_reader(layer: Any) -> Optional[Reader]:
    mxnet = sys.modules.get("mxnet")
    nn = getattr(getattr(mxnet, "gluon", None), "nn", None) if mxnet is not None else None
    if nn is None:
        return None
    candidates = {
        "nn.Conv2D": (getattr(nn, "Conv2D", None), _from_gluon_conv),
        "nn.MaxPool2D": (getattr(nn, "MaxPool2D", None), _from_gluon_pool),
        "nn.AvgPool2D": (getattr(nn, "AvgPool2D", None), _from_gluon_pool),
    }
    return _match(layer, candidates, "hybrid_forward", "Gluon")


_GLUON_LAYOUTS = {"NCHW": "channels_first", "NHWC": "channels_last"}


def _gluon_array(name: str, parameter: Any) -> np.ndarray:
    shape = tuple(parameter.shape or ())
    if not shape or any(int(n) <= 0 for n in shape):
        raise ConvlabValueError(
            f"the {name} layer's {parameter.name} has unknown shape {shape} (deferred initialization): "
            "give in_channels, or initialize the layer and call it on an input first"
        )
    try:
        data = parameter.list_data()[0]
    except Exception as error:  # MXNet's RuntimeError / DeferredInitializationError
        raise ConvlabValueError(f"the {name} layer's {parameter.name} is not initialized: {error}") from None
    return np.array(data.asnumpy(), copy=True)


def _from_gluon_conv(layer: Any) -> LayerSpec:
    name = "mxnet.gluon.nn.Conv2D"
    kwargs = layer._kwargs
    if int(kwargs.get("num_group", 1)) != 1:
        raise _unsupported(name, "groups", int(kwargs["num_group"]), "convlab convolutions have one group")
    layout = kwargs.get("layout", "NCHW")
    if layout not in _GLUON_LAYOUTS:
        raise _unsupported(name, "layout", layout, "convlab knows NCHW (channels_first) and NHWC (channels_last)")
    if getattr(layer, "act", None) is not None:
        act = getattr(layer.act, "_act_type", type(layer.act).__name__)
        raise _unsupported(name, "activation", act, "convlab layers are linear; port the activation separately")
    weight = _gluon_array(name, layer.weight)
    bias = None if kwargs.get("no_bias", False) or layer.bias is None else _gluon_array(name, layer.bias)
    weight, bias = _float_weights(name, weight, bias)
    if layout == "NHWC":  # Gluon's NHWC weight is (Co, kh, kw, C): convlab's channels_last kernel is HWIO
        weight = np.ascontiguousarray(weight.transpose(1, 2, 3, 0))
    ph, pw = to_pair("padding", _tuple(kwargs.get("pad", 0)), minimum=0)
    config = dict(
        stride=to_pair("strides", _tuple(kwargs.get("stride", 1))),
        padding=((ph, ph), (pw, pw)),
        dilation=to_pair("dilation", _tuple(kwargs.get("dilate", 1))),
        data_format=_GLUON_LAYOUTS[layout],
    )
    mxnet = sys.modules["mxnet"]
    return LayerSpec("conv2d", config, weight, bias, _source("mxnet", name, mxnet.__version__))


def _from_gluon_pool(layer: Any) -> LayerSpec:
    kwargs = layer._kwargs
    average = kwargs.get("pool_type") == "avg"
    name = "mxnet.gluon.nn.AvgPool2D" if average else "mxnet.gluon.nn.MaxPool2D"
    if kwargs.get("pool_type") not in ("max", "avg"):
        raise _unsupported(name, "pool_type", kwargs.get("pool_type"), "convlab pools with max or avg")
    if kwargs.get("global_pool", False):
        raise _unsupported(name, "global_pool", True, "give the window explicitly")
    convention = kwargs.get("pooling_convention", "valid")
    if convention != "valid":
        raise _unsupported(
            name, "ceil_mode", True, f"(pooling_convention={convention!r}) convlab's output size is the floor rule"
        )
    layout = kwargs.get("layout", "NCHW")
    if layout not in _GLUON_LAYOUTS:
        raise _unsupported(name, "layout", layout, "convlab knows NCHW (channels_first) and NHWC (channels_last)")
    window = to_pair("pool_size", _tuple(kwargs["kernel"]))
    stride = to_pair("strides", _tuple(kwargs.get("stride") or window))
    ph, pw = to_pair("padding", _tuple(kwargs.get("pad", 0)), minimum=0)
    config = dict(
        pool_size=window,
        mode="avg" if average else "max",
        stride=stride,
        padding=((ph, ph), (pw, pw)),
        count_include_pad=bool(kwargs.get("count_include_pad", True)) if average else True,
        data_format=_GLUON_LAYOUTS[layout],
    )
    mxnet = sys.modules["mxnet"]
    return LayerSpec("pool2d", config, source=_source("mxnet", name, mxnet.__version__))
