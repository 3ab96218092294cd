"""What a convolution or pooling configuration means, and how each framework's own call computes it.

``convlab explain conv --input 8x8 --kernel 3 --stride 2 --padding same`` (see :mod:`convlab.cli`) prints the
explicit pads and output shape of a configuration, then for torch, TensorFlow/Keras, JAX (``lax``) and MXNet
the native arguments that compute it, or, where no native call does, the nearest one and how it differs
(torch and MXNet pad the same amount on both sides, so asymmetric pads need an explicit pad first).

Pure Python on shapes: imports no framework.

Example:
    >>> from convlab.explain import explain_conv
    >>> e = explain_conv((8, 8), 3, stride=2, padding="same")
    >>> e.pads, e.output
    (((0, 1), (0, 1)), (4, 4))
    >>> [(f.framework, f.native) for f in e.frameworks]
    [('torch', False), ('tensorflow', True), ('jax', True), ('mxnet', False)]
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Tuple

from convlab.arguments import to_pair
from convlab.errors import ConvlabTypeError, ConvlabValueError
from convlab.geometry import conv_geometry, pool_geometry, resolve_pads

Pair = Tuple[int, int]
Pads = Tuple[Pair, Pair]

FRAMEWORK_TITLES = {"torch": "torch", "tensorflow": "TensorFlow / Keras", "jax": "JAX (lax)", "mxnet": "MXNet"}


@dataclass(frozen=True)
class FrameworkCall:
    """How one framework computes a configuration."""

    framework: str  # "torch", "tensorflow", "jax", "mxnet"
    native: bool  # one native call (or layer) computes exactly this
    calls: Tuple[str, ...]  # the functional call(s) that compute it (after a pad when not native)
    layer: Optional[str]  # the framework's layer with these arguments, where one has them
    notes: Tuple[str, ...] = ()  # why no native call does, and what the nearest one does differently


@dataclass(frozen=True)
class Explanation:
    """A configuration in convlab's terms and per framework."""

    op: str  # "conv2d" or "pool2d"
    input: Pair
    window: Pair  # kernel or pooling window
    stride: Pair
    dilation: Pair
    padding: Any  # as given
    pads: Pads  # resolved ((top, bottom), (left, right))
    output: Pair
    mode: Optional[str]  # pooling: "max" or "avg"
    count_include_pad: Optional[bool]
    convlab: str  # the convlab call
    frameworks: Tuple[FrameworkCall, ...] = field(default_factory=tuple)

    @property
    def symmetric(self) -> bool:
        return self.pads[0][0] == self.pads[0][1] and self.pads[1][0] == self.pads[1][1]

    def as_dict(self) -> Dict[str, Any]:
        return {
            "op": self.op,
            "input": list(self.input),
            "window": list(self.window),
            "stride": list(self.stride),
            "dilation": list(self.dilation),
            "padding": self.padding if isinstance(self.padding, (str, int)) else _listed(self.padding),
            "pads": _listed(self.pads),
            "symmetric": self.symmetric,
            "output": list(self.output),
            "mode": self.mode,
            "count_include_pad": self.count_include_pad,
            "convlab": self.convlab,
            "frameworks": [
                {
                    "framework": f.framework,
                    "native": f.native,
                    "calls": list(f.calls),
                    "layer": f.layer,
                    "notes": list(f.notes),
                }
                for f in self.frameworks
            ],
        }

    def format(self) -> str:
        """The explanation as the ``convlab explain`` command prints it."""
        (top, bottom), (left, right) = self.pads
        what = "conv2d" if self.op == "conv2d" else f"{self.mode} pool2d"
        header = (
            f"{what}: input {_hw(self.input)}, {'kernel' if self.op == 'conv2d' else 'window'} {_hw(self.window)}, "
            f"stride {_hw(self.stride)}"
        )
        if self.op == "conv2d":
            header += f", dilation {_hw(self.dilation)}"
        header += f", padding {self.padding!r}"
        if self.op == "pool2d" and self.mode == "avg":
            header += f", count_include_pad={self.count_include_pad}"
        shape = "symmetric" if self.symmetric else "asymmetric"
        lines = [
            header,
            f"  pads:    top {top}, bottom {bottom}, left {left}, right {right} ({shape}): {self.pads}",
            f"  output:  {_hw(self.output)}",
            f"  convlab: {self.convlab}",
        ]
        for f in self.frameworks:
            verdict = "native" if f.native else "no single native call"
            lines.append("")
            lines.append(f"{FRAMEWORK_TITLES[f.framework]}: {verdict}")
            for call in f.calls:
                lines.append(f"  {call}")
            if f.layer:
                lines.append(f"  layer: {f.layer}")
            for note in f.notes:
                lines.append(f"  note: {note}")
        return "\n".join(lines)


# -- formatting helpers --------------------------------------------------------------------------


def _listed(value: Any) -> Any:
    return [_listed(v) for v in value] if isinstance(value, (list, tuple)) else value


def _hw(pair: Pair) -> str:
    return f"{pair[0]}x{pair[1]}"


def _arg(pair: Pair) -> str:
    """``3`` for (3, 3), ``(3, 2)`` otherwise: how the frameworks' calls take a pair."""
    return str(pair[0]) if pair[0] == pair[1] else f"({pair[0]}, {pair[1]})"


def _kwargs(*items: Tuple[str, Optional[str]]) -> str:
    return ", ".join(f"{name}={value}" for name, value in items if value is not None)


def _unless_one(pair: Pair) -> Optional[str]:
    return None if pair == (1, 1) else _arg(pair)


def _symmetric_pad(pads: Pads) -> Pair:
    return (pads[0][0], pads[1][0])


def _same_pads(spatial: Pair, window: Pair, stride: Pair, dilation: Pair = (1, 1)) -> Pads:
    """TensorFlow's / JAX's "SAME" for this input: output ceil(in / stride), the odd extra at the bottom/right."""
    return resolve_pads("same", spatial, window, stride, dilation)


def _same_lower(pads: Pads) -> Pads:
    """The same totals with the odd extra at the top/left (JAX's "SAME_LOWER")."""
    return tuple((b, t) if t < b else (t, b) for t, b in pads)  # type: ignore[return-value]


def _torch_pad(pads: Pads) -> str:
    (top, bottom), (left, right) = pads
    return f"({left}, {right}, {top}, {bottom})"  # F.pad takes the last axis first


def _tf_explicit(pads: Pads) -> str:
    (top, bottom), (left, right) = pads
    return f"[[0, 0], [{top}, {bottom}], [{left}, {right}], [0, 0]]"


def _mx_pad_width(pads: Pads) -> str:
    (top, bottom), (left, right) = pads
    return f"(0, 0, 0, 0, {top}, {bottom}, {left}, {right})"


def _convlab_padding(padding: Any) -> Optional[str]:
    """The padding argument of the convlab call, in the form it was given (convlab takes every form)."""
    if isinstance(padding, str):
        return repr(padding.lower())
    return None if padding == 0 else str(padding)


def _nearest_symmetric(
    spatial: Pair, window: Pair, stride: Pair, dilation: Pair, pads: Pads, name: str = "padding"
) -> Tuple[Pair, str]:
    """The nearest symmetric pad (the only kind torch and MXNet take in one call), and how it differs from ``pads``."""
    from convlab.geometry import output_hw

    wanted = output_hw(spatial, pads, window, stride, dilation)
    choice = []
    for axis in range(2):
        total = pads[axis][0] + pads[axis][1]
        options = [-(-total // 2), total // 2]  # ceil first: it keeps every real pixel under some window
        fitting = [
            p for p in options if output_hw(spatial, ((p, p), (p, p)), window, stride, dilation)[axis] == wanted[axis]
        ]
        choice.append((fitting or options)[0])
    pad = (choice[0], choice[1])
    out = output_hw(spatial, ((pad[0], pad[0]), (pad[1], pad[1])), window, stride, dilation)
    shifts = []
    for axis, (before, word) in enumerate(((pads[0][0], "rows"), (pads[1][0], "columns"))):
        delta = pad[axis] - before
        if delta:
            direction = ("up" if axis == 0 else "left") if delta > 0 else ("down" if axis == 0 else "right")
            shifts.append(f"{abs(delta)} {word[:-1] if abs(delta) == 1 else word} {direction}")
    what = f"output {_hw(out)}" + (" (the same shape)" if out == wanted else f" instead of {_hw(wanted)}")
    if shifts:
        what += ", every window shifted " + " and ".join(shifts)
    return pad, f"{name}={_arg(pad) if name == 'padding' else pad} alone, the nearest single call, gives {what}"


# -- convolution ---------------------------------------------------------------------------------


def explain_conv(input_hw: Any, kernel: Any, *, stride: Any = 1, padding: Any = 0, dilation: Any = 1) -> Explanation:
    """Explain ``conv2d`` of an input of spatial size ``input_hw`` with a ``kernel`` (kh, kw) window.

    Channels do not change the geometry; the calls shown take NCHW ``x`` and OIHW ``w`` (TensorFlow: NHWC and
    HWIO, its CPU layout), ``Co`` output channels.
    """
    spatial, window = to_pair("input", input_hw), to_pair("kernel", kernel)
    g = conv_geometry((1, 1) + spatial, (1, 1) + window, stride=stride, padding=padding, dilation=dilation)
    stride_pair, dilation_pair, pads = g.stride, g.dilation, g.pads
    convlab_padding = _convlab_padding(padding)
    convlab = (
        "cl.conv2d(X, K"
        + "".join(
            f", {item}"
            for item in [
                _kwargs(
                    ("stride", _unless_one(stride_pair)),
                    ("padding", convlab_padding),
                    ("dilation", _unless_one(dilation_pair)),
                )
            ]
            if item
        )
        + ")"
    )
    frameworks = (
        _torch_conv(spatial, window, stride_pair, pads, dilation_pair, padding),
        _tf_conv(spatial, window, stride_pair, pads, dilation_pair),
        _jax_conv(spatial, window, stride_pair, pads, dilation_pair),
        _mxnet_conv(spatial, window, stride_pair, pads, dilation_pair),
    )
    return Explanation(
        "conv2d", spatial, window, stride_pair, dilation_pair, padding, pads, g.out_hw, None, None, convlab, frameworks
    )


def _torch_conv(spatial, window, stride, pads, dilation, padding) -> FrameworkCall:
    common = (("stride", _unless_one(stride)), ("dilation", _unless_one(dilation)))
    if pads[0][0] == pads[0][1] and pads[1][0] == pads[1][1]:
        pad = _symmetric_pad(pads)
        args = _kwargs(common[0], ("padding", _arg(pad) if pad != (0, 0) else None), common[1])
        return FrameworkCall(
            "torch",
            True,
            (f"F.conv2d(x, w, b{', ' + args if args else ''})",),
            f"nn.Conv2d(C, Co, {_arg(window)}{', ' + args if args else ''})",
        )
    torch_same = tuple((d * (k - 1) // 2, d * (k - 1) - d * (k - 1) // 2) for k, d in zip(window, dilation))
    if stride == (1, 1) and pads == torch_same:
        args = _kwargs(("padding", '"same"'), common[1])
        return FrameworkCall(
            "torch",
            True,
            (f"F.conv2d(x, w, b, {args})",),
            f"nn.Conv2d(C, Co, {_arg(window)}, {args})",
            ('torch\'s padding="same" (stride 1 only) puts the odd extra pad at the bottom/right, like convlab',),
        )
    notes = ["torch pads both sides of an axis equally (padding=(ph, pw)); these pads are asymmetric"]
    if isinstance(padding, str) and padding.lower() == "same" and stride != (1, 1):
        notes.append('torch refuses padding="same" with a stride > 1')
    notes.append(_nearest_symmetric(spatial, window, stride, dilation, pads)[1])
    notes.append("F.pad copies the input once before the convolution")
    args = _kwargs(*common)
    return FrameworkCall(
        "torch",
        False,
        (f"F.conv2d(F.pad(x, {_torch_pad(pads)}), w, b{', ' + args if args else ''})",),
        f"nn.ZeroPad2d({_torch_pad(pads)}) then nn.Conv2d(C, Co, {_arg(window)}{', ' + args if args else ''})",
        tuple(notes),
    )


def _tf_conv(spatial, window, stride, pads, dilation) -> FrameworkCall:
    same = _same_pads(spatial, window, stride, dilation)
    strides, dilations = _unless_one(stride), _unless_one(dilation)
    if pads == ((0, 0), (0, 0)):
        tf_padding, keras_padding = '"VALID"', '"valid"'
    elif pads == same:
        tf_padding, keras_padding = '"SAME"', '"same"'
    else:
        tf_padding, keras_padding = _tf_explicit(pads), None
    call = (
        f"tf.nn.conv2d(x, w, {_kwargs(('strides', _arg(stride)), ('padding', tf_padding), ('dilations', dilations))})"
    )
    notes = ["x is NHWC, w HWIO (TensorFlow's CPU convolution runs NHWC only)"]
    keras_args = _kwargs(("strides", strides), ("padding", keras_padding or '"valid"'), ("dilation_rate", dilations))
    layer = f"keras.layers.Conv2D(Co, {_arg(window)}, {keras_args})"
    if keras_padding is None:
        layer = f"keras.layers.ZeroPadding2D({pads}) then {layer}"
        notes.append('Keras Conv2D pads only "valid" or "same"; tf.nn.conv2d takes these pads explicitly')
    elif keras_padding == '"same"' and stride != (1, 1):
        notes.append('"same" pads depend on the input size when the stride exceeds 1; these are for this input')
    return FrameworkCall("tensorflow", True, (call,), layer, tuple(notes))


def _jax_conv(spatial, window, stride, pads, dilation) -> FrameworkCall:
    padding = _jax_padding(spatial, window, stride, pads, dilation)
    args = _kwargs(
        ("window_strides", str(stride)),
        ("padding", padding),
        ("rhs_dilation", None if dilation == (1, 1) else str(dilation)),
        ("dimension_numbers", '("NCHW", "OIHW", "NCHW")'),
    )
    return FrameworkCall("jax", True, (f"lax.conv_general_dilated(x, w, {args})",), None)


def _jax_padding(spatial, window, stride, pads, dilation) -> str:
    same = _same_pads(spatial, window, stride, dilation)
    if pads == ((0, 0), (0, 0)):
        return '"VALID"'
    if pads == same:
        return '"SAME"'
    if pads == _same_lower(same) and same != _same_lower(same):
        return '"SAME_LOWER"'
    return str(pads)


def _mxnet_conv(spatial, window, stride, pads, dilation) -> FrameworkCall:
    common = (
        ("kernel", str(window)),
        ("stride", None if stride == (1, 1) else str(stride)),
        ("dilate", None if dilation == (1, 1) else str(dilation)),
    )
    gluon = _kwargs(("strides", _unless_one(stride)), ("dilation", _unless_one(dilation)))
    if pads[0][0] == pads[0][1] and pads[1][0] == pads[1][1]:
        pad = _symmetric_pad(pads)
        args = _kwargs(*common, ("pad", None if pad == (0, 0) else str(pad)), ("num_filter", "Co"))
        layer_args = ", ".join(a for a in (gluon, None if pad == (0, 0) else f"padding={_arg(pad)}") if a)
        return FrameworkCall(
            "mxnet",
            True,
            (f"mx.nd.Convolution(x, w, b, {args})",),
            f"gluon.nn.Conv2D(Co, {_arg(window)}{', ' + layer_args if layer_args else ''})",
        )
    args = _kwargs(*common, ("num_filter", "Co"))
    return FrameworkCall(
        "mxnet",
        False,
        (f'mx.nd.Convolution(mx.nd.pad(x, mode="constant", pad_width={_mx_pad_width(pads)}), w, b, {args})',),
        None,
        (
            "MXNet pads both sides of an axis equally (pad=(ph, pw)); these pads are asymmetric",
            _nearest_symmetric(spatial, window, stride, dilation, pads, "pad")[1],
            "mx.nd.pad copies the input once before the convolution",
        ),
    )


# -- pooling -------------------------------------------------------------------------------------


def explain_pool(
    input_hw: Any,
    window: Any,
    *,
    stride: Any = None,
    padding: Any = 0,
    mode: str = "max",
    count_include_pad: bool = True,
) -> Explanation:
    """Explain ``pool2d`` of an input of spatial size ``input_hw``; the stride defaults to the window.

    ``count_include_pad`` (average pooling): divide by the window's area (padded zeros counted) or by the
    number of real pixels under each window.
    """
    spatial, window_pair = to_pair("input", input_hw), to_pair("window", window)
    stride_pair = window_pair if stride is None else to_pair("stride", stride)
    if not isinstance(count_include_pad, bool):
        raise ConvlabTypeError(f"count_include_pad must be True or False, got {count_include_pad!r}")
    g = pool_geometry(
        (1, 1) + spatial, window_pair, mode, stride=stride_pair, padding=padding, count_include_pad=count_include_pad
    )
    pads = g.pads
    convlab_padding = _convlab_padding(padding)
    args = _kwargs(
        ("mode", f"'{mode}'"),
        ("stride", _arg(stride_pair)),
        ("padding", convlab_padding),
        ("count_include_pad", "False" if mode == "avg" and not count_include_pad else None),
    )
    convlab = f"cl.pool2d(X, {_arg(window_pair)}, {args})"
    counted = mode == "max" or count_include_pad or pads == ((0, 0), (0, 0))
    frameworks = (
        _torch_pool(spatial, window_pair, stride_pair, pads, mode, counted),
        _tf_pool(spatial, window_pair, stride_pair, pads, mode, count_include_pad),
        _jax_pool(spatial, window_pair, stride_pair, pads, mode, counted),
        _mxnet_pool(spatial, window_pair, stride_pair, pads, mode, counted),
    )
    return Explanation(
        "pool2d",
        spatial,
        window_pair,
        stride_pair,
        (1, 1),
        padding,
        pads,
        g.out_hw,
        mode,
        count_include_pad if mode == "avg" else None,
        convlab,
        frameworks,
    )


def _divide_by_count(pooled: str, ones: str) -> str:
    return f"{pooled} / {ones}"


def _torch_pool(spatial, window, stride, pads, mode, counted) -> FrameworkCall:
    function = "F.max_pool2d" if mode == "max" else "F.avg_pool2d"
    layer_class = "nn.MaxPool2d" if mode == "max" else "nn.AvgPool2d"
    symmetric = pads[0][0] == pads[0][1] and pads[1][0] == pads[1][1]
    pad = _symmetric_pad(pads)
    fits = symmetric and all(2 * p <= k for p, k in zip(pad, window))  # torch: pad at most half the window
    stride_arg = None if stride == window else _arg(stride)
    if fits:
        args = _kwargs(
            ("stride", stride_arg),
            ("padding", None if pad == (0, 0) else _arg(pad)),
            ("count_include_pad", "False" if mode == "avg" and not counted else None),
        )
        tail = f", {args}" if args else ""
        return FrameworkCall(
            "torch", True, (f"{function}(x, {_arg(window)}{tail})",), f"{layer_class}({_arg(window)}{tail})"
        )
    notes = []
    if not symmetric:
        notes.append("torch pads both sides of an axis equally (padding=(ph, pw)); these pads are asymmetric")
        pad, nearest = _nearest_symmetric(spatial, window, stride, (1, 1), pads)
        if all(2 * p <= k for p, k in zip(pad, window)):
            notes.append(nearest)
    else:
        notes.append("torch pools with a pad of at most half the window; these pads are larger")
    args = _kwargs(("stride", stride_arg))
    tail = f", {args}" if args else ""
    if mode == "max":
        calls = (f'F.max_pool2d(F.pad(x, {_torch_pad(pads)}, value=float("-inf")), {_arg(window)}{tail})',)
    elif counted:
        calls = (f"F.avg_pool2d(F.pad(x, {_torch_pad(pads)}), {_arg(window)}{tail})",)
    else:
        calls = (
            _divide_by_count(
                f"F.avg_pool2d(F.pad(x, {_torch_pad(pads)}), {_arg(window)}{tail})",
                f"F.avg_pool2d(F.pad(torch.ones_like(x), {_torch_pad(pads)}), {_arg(window)}{tail})",
            ),
        )
        notes.append("the padded zeros must not count: divide by the pooled mask of real pixels")
    return FrameworkCall("torch", False, calls, None, tuple(notes))


def _tf_pool(spatial, window, stride, pads, mode, count_include_pad) -> FrameworkCall:
    same = _same_pads(spatial, window, stride)
    unpadded = pads == ((0, 0), (0, 0))
    keras_class = "keras.layers.MaxPooling2D" if mode == "max" else "keras.layers.AveragePooling2D"
    strides = f"strides={_arg(stride)}"
    notes = ["x is NHWC"]
    if mode == "max":
        if unpadded or pads == same:
            padding = '"VALID"' if unpadded else '"SAME"'
            layer = f"{keras_class}({_arg(window)}, {strides}, padding={padding.lower()})"
            return FrameworkCall(
                "tensorflow",
                True,
                (f"tf.nn.max_pool2d(x, {_arg(window)}, {_arg(stride)}, {padding})",),
                layer,
                tuple(notes),
            )
        notes.append('Keras pools only "valid" or "same"; tf.nn.max_pool2d takes these pads explicitly')
        return FrameworkCall(
            "tensorflow",
            True,
            (f"tf.nn.max_pool2d(x, {_arg(window)}, {_arg(stride)}, {_tf_explicit(pads)})",),
            None,
            tuple(notes),
        )
    # average pooling: TensorFlow's "SAME" averages the real pixels only (count_include_pad=False)
    if unpadded or (pads == same and not count_include_pad):
        padding = '"VALID"' if unpadded else '"SAME"'
        layer = f"{keras_class}({_arg(window)}, {strides}, padding={padding.lower()})"
        if not unpadded:
            notes.append("TensorFlow's and Keras's \"SAME\" average pooling counts real pixels only")
        return FrameworkCall(
            "tensorflow",
            True,
            (f"tf.nn.avg_pool2d(x, {_arg(window)}, {_arg(stride)}, {padding})",),
            layer,
            tuple(notes),
        )
    padded = f"tf.pad(x, {_tf_explicit(pads)})"
    pooled = f'tf.nn.avg_pool2d({padded}, {_arg(window)}, {_arg(stride)}, "VALID")'
    if count_include_pad:
        if pads == same:
            notes.append('TensorFlow\'s "SAME" average pooling would not count the padded zeros; pad them first')
        else:
            notes.append('tf.nn.avg_pool2d pads only "VALID" or "SAME"; pad with zeros first')
        return FrameworkCall("tensorflow", False, (pooled,), None, tuple(notes))
    ones = f'tf.nn.avg_pool2d(tf.pad(tf.ones_like(x), {_tf_explicit(pads)}), {_arg(window)}, {_arg(stride)}, "VALID")'
    notes.append('tf.nn.avg_pool2d pads only "VALID" or "SAME": pad, then divide by the pooled mask of real pixels')
    return FrameworkCall("tensorflow", False, (_divide_by_count(pooled, ones),), None, tuple(notes))


def _jax_pool(spatial, window, stride, pads, mode, counted) -> FrameworkCall:
    padding = _jax_padding(spatial, window, stride, pads, (1, 1))
    dims = f"(1, 1, {window[0]}, {window[1]})"
    steps = f"(1, 1, {stride[0]}, {stride[1]})"
    if padding.startswith('"'):
        padding4 = padding
    else:
        padding4 = f"((0, 0), (0, 0), {pads[0]}, {pads[1]})"
    if mode == "max":
        call = f"lax.reduce_window(x, -jnp.inf, lax.max, {dims}, {steps}, {padding4})"
        return FrameworkCall(
            "jax", True, (call,), None, ("x is NCHW; reduce_window pads with its initial value, -inf",)
        )
    total = f"lax.reduce_window(x, 0.0, lax.add, {dims}, {steps}, {padding4})"
    if counted:
        return FrameworkCall(
            "jax",
            True,
            (f"{total} / {window[0] * window[1]}",),
            None,
            ("x is NCHW; JAX has no average pooling op: a window sum divided by the area",),
        )
    ones = f"lax.reduce_window(jnp.ones_like(x), 0.0, lax.add, {dims}, {steps}, {padding4})"
    return FrameworkCall(
        "jax",
        True,
        (_divide_by_count(total, ones),),
        None,
        ("x is NCHW; the window sum divided by the real pixels under each window",),
    )


def _mxnet_pool(spatial, window, stride, pads, mode, counted) -> FrameworkCall:
    symmetric = pads[0][0] == pads[0][1] and pads[1][0] == pads[1][1]
    pool_type = f'pool_type="{mode}"'
    stride_arg = f"stride={stride}"
    gluon_class = "gluon.nn.MaxPool2D" if mode == "max" else "gluon.nn.AvgPool2D"
    gluon_stride = None if stride == window else _arg(stride)
    if symmetric:
        pad = _symmetric_pad(pads)
        extra = _kwargs(
            ("pad", None if pad == (0, 0) else str(pad)),
            ("count_include_pad", "False" if mode == "avg" and not counted else None),
        )
        call = f"mx.nd.Pooling(x, kernel={window}, {pool_type}, {stride_arg}{', ' + extra if extra else ''})"
        layer_args = _kwargs(
            ("strides", gluon_stride),
            ("padding", None if pad == (0, 0) else _arg(pad)),
            ("count_include_pad", "False" if mode == "avg" and not counted else None),
        )
        return FrameworkCall(
            "mxnet", True, (call,), f"{gluon_class}({_arg(window)}{', ' + layer_args if layer_args else ''})"
        )
    fill = ', constant_value=float("-inf")' if mode == "max" else ""
    padded = f'mx.nd.pad(x, mode="constant", pad_width={_mx_pad_width(pads)}{fill})'
    pooled = f"mx.nd.Pooling({padded}, kernel={window}, {pool_type}, {stride_arg})"
    notes = ["MXNet pads both sides of an axis equally (pad=(ph, pw)); these pads are asymmetric"]
    pad, nearest = _nearest_symmetric(spatial, window, stride, (1, 1), pads, "pad")
    if all(p < k for p, k in zip(pad, window)):
        notes.append(nearest)
    if mode == "avg" and not counted:
        ones = (
            f'mx.nd.Pooling(mx.nd.pad(mx.nd.ones_like(x), mode="constant", pad_width={_mx_pad_width(pads)}), '
            f"kernel={window}, {pool_type}, {stride_arg})"
        )
        notes.append("the padded zeros must not count: divide by the pooled mask of real pixels")
        return FrameworkCall("mxnet", False, (_divide_by_count(pooled, ones),), None, tuple(notes))
    return FrameworkCall("mxnet", False, (pooled,), None, tuple(notes))


# -- command-line parsing ------------------------------------------------------------------------


def parse_pair(name: str, text: str) -> Pair:
    """``"8"`` -> (8, 8); ``"8x6"``, ``"8,6"`` -> (8, 6)."""
    parts = text.lower().replace("x", ",").split(",")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        raise ConvlabValueError(f"--{name} must be N or HxW (e.g. 8 or 8x6), got {text!r}") from None
    if len(values) == 1:
        return (values[0], values[0])
    if len(values) == 2:
        return (values[0], values[1])
    raise ConvlabValueError(f"--{name} must be N or HxW (e.g. 8 or 8x6), got {text!r}")


def parse_padding(text: str) -> Any:
    """``same``, ``valid``, ``1`` (all sides), ``1x2`` (height, width) or ``0,1,0,1`` (top, bottom, left, right)."""
    lowered = text.strip().lower()
    if lowered in ("same", "valid"):
        return lowered
    parts = lowered.replace("x", ",").split(",")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        values = []
    if len(values) == 1:
        return values[0]
    if len(values) == 2:
        return (values[0], values[1])
    if len(values) == 4:
        return ((values[0], values[1]), (values[2], values[3]))
    raise ConvlabValueError(
        f"--padding must be same, valid, P, PHxPW or TOP,BOTTOM,LEFT,RIGHT (e.g. 0,1,0,1), got {text!r}"
    )


def explain_command(args: Any) -> Explanation:
    """The :class:`Explanation` for parsed ``convlab explain`` arguments."""
    padding = parse_padding(args.padding)
    if args.what == "conv":
        return explain_conv(
            parse_pair("input", args.input),
            parse_pair("kernel", args.kernel),
            stride=parse_pair("stride", args.stride or "1"),
            padding=padding,
            dilation=parse_pair("dilation", args.dilation),
        )
    return explain_pool(
        parse_pair("input", args.input),
        parse_pair("window", args.window),
        stride=None if args.stride is None else parse_pair("stride", args.stride),
        padding=padding,
        mode=args.mode,
        count_include_pad=args.count_include_pad,
    )
