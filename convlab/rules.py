"""What ``algorithm="auto"`` runs, as data: rule tables generated from a benchmark sweep.

``convlab/rules/<backend>.json`` holds, per operation (``"conv"``, ``"pool"``), a decision list that
``benchmarks/fit_rules.py`` fitted to the timings of ``benchmarks/algorithms.py --sweep``: each rule names
a formulation and the ranges of a few features of the call's shape where the sweep measured it beating the
native op by more than the noise, and nowhere losing to it. :func:`load` turns a file into the
``(description, predicate, algorithm)`` rows of :attr:`convlab.Backend.conv_rules` /
:attr:`~convlab.Backend.pool_rules`; an adapter writes ``conv_rules = rules.load("torch", "conv")``.

The file is data only: comparisons of named features with numbers, booleans and strings, checked on load
(an unknown feature, algorithm or key is an error); nothing in it is executed. A call outside the swept
``domain`` (every feature's range over the swept shapes) runs native: the rules say nothing there.

Features of a convolution (:class:`convlab.algorithms.ConvShape`):

- ``pixels``: batch x output height x output width, the output taken as ``ceil(input / stride)`` per side
  (the shape does not carry the padding);
- ``batch``, ``in_channels``, ``out_channels``, ``channel_pairs`` (in x out), ``taps`` (kernel
  height x width), ``stride`` and ``dilation`` (the larger of the two sides);
- ``macs``: pixels x channel pairs x taps, the multiply-adds; ``unrolled``: taps x channel pairs, the
  multiply-adds of whole shifted views torch's in-place shift issues; ``views``: taps x input channels, the
  shifted views the generic shift takes (its op count eagerly, and the size of what XLA compiles under JAX);
- ``channels_last`` (true/false) and ``dtype`` ("float32"/"float64").

Of a pooling (:class:`convlab.algorithms.PoolShape`): ``pixels``, ``batch``, ``channels``, ``elements``
(pixels x channels), ``taps`` (window height x width), ``stride``, ``mode`` ("max"/"avg"),
``channels_last``, ``dtype``.

A rule is ``{"algorithm": ..., "when": {...}, "within": {...}, "evidence": {...}}``: ``when`` holds the cuts
that separate where the formulation wins from where it loses (what the description shows), ``within`` the
range of every feature over the swept shapes the rule covers (it says nothing beyond its evidence), and
``evidence`` numbers for the description. A condition is ``{"min": a, "max": b}`` (inclusive, either may be
left out) for a number, ``true``/``false`` for ``channels_last``, a string or a list of strings for ``dtype``
and ``mode``.

Example:
    >>> from convlab import rules
    >>> from convlab.algorithms import ConvShape
    >>> table = rules.table({"format": 1, "conv": {"rules": [
    ...     {"algorithm": "shift", "when": {"channel_pairs": {"max": 4}, "pixels": {"min": 65536}}}]}}, "conv")
    >>> description, predicate, algorithm = table[0]
    >>> description
    'channel_pairs <= 4, pixels >= 65536'
    >>> predicate(ConvShape(1, 1, 1, 512, 512, 3, 3, (1, 1), (1, 1), False, "float32")), algorithm
    (True, 'shift')
    >>> predicate(ConvShape(1, 1, 1, 512, 512, 3, 3, (4, 4), (1, 1), False, "float32"))
    False
"""

from __future__ import annotations

import json
import os
import warnings
from typing import Any, Callable, Dict, List, Optional, Tuple

from convlab.errors import ConvlabValueError

FORMAT = 1
OPERATIONS = ("conv", "pool")
#: the formulations a rule may name, per operation ("native" is what no rule matching means)
ALGORITHMS = {"conv": ("shift", "gemm"), "pool": ("shift", "layout")}
Rule = Tuple[str, Callable[[Any], bool], str]


def _out(size: int, stride: int) -> int:
    return -(-size // stride)


def _conv_pixels(s: Any) -> int:
    return s.batch * _out(s.height, s.stride[0]) * _out(s.width, s.stride[1])


def _pool_pixels(s: Any) -> int:
    return s.batch * _out(s.height, s.stride[0]) * _out(s.width, s.stride[1])


#: feature name -> function of a ConvShape
CONV_FEATURES: Dict[str, Callable[[Any], Any]] = {
    "pixels": _conv_pixels,
    "batch": lambda s: s.batch,
    "in_channels": lambda s: s.in_channels,
    "out_channels": lambda s: s.out_channels,
    "channel_pairs": lambda s: s.in_channels * s.out_channels,
    "taps": lambda s: s.kernel_h * s.kernel_w,
    "stride": lambda s: max(s.stride),
    "dilation": lambda s: max(s.dilation),
    "macs": lambda s: _conv_pixels(s) * s.in_channels * s.out_channels * s.kernel_h * s.kernel_w,
    "unrolled": lambda s: s.kernel_h * s.kernel_w * s.in_channels * s.out_channels,
    "views": lambda s: s.kernel_h * s.kernel_w * s.in_channels,
    "channels_last": lambda s: bool(s.channels_last),
    "dtype": lambda s: s.dtype,
}
#: feature name -> function of a PoolShape
POOL_FEATURES: Dict[str, Callable[[Any], Any]] = {
    "pixels": _pool_pixels,
    "batch": lambda s: s.batch,
    "channels": lambda s: s.channels,
    "elements": lambda s: _pool_pixels(s) * s.channels,
    "taps": lambda s: s.window[0] * s.window[1],
    "stride": lambda s: max(s.stride),
    "mode": lambda s: s.mode,
    "channels_last": lambda s: bool(s.channels_last),
    "dtype": lambda s: s.dtype,
}
FEATURES = {"conv": CONV_FEATURES, "pool": POOL_FEATURES}
#: the values a string feature may be compared with
CHOICES = {"dtype": ("float32", "float64"), "mode": ("max", "avg")}
BOOLEAN = ("channels_last",)


def features(op: str, shape: Any) -> Dict[str, Any]:
    """Every feature of ``shape`` (a ConvShape for "conv", a PoolShape for "pool"), by name."""
    return {name: feature(shape) for name, feature in FEATURES[op].items()}


def path(backend: str) -> str:
    """The rule file of a backend: ``convlab/rules/<backend>.json`` next to this module."""
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "rules", f"{backend}.json")


def load(backend: str, op: str, file: Optional[str] = None, strict: bool = False) -> Tuple[Rule, ...]:
    """The rule table of ``backend`` for ``op`` ("conv" or "pool") from its JSON file.

    No file: no rules ("auto" is native). An invalid file warns and gives no rules (every formulation
    computes the same result, so native is always a correct answer); ``strict=True`` raises instead.
    """
    file = path(backend) if file is None else file
    if not os.path.exists(file):
        return ()
    try:
        with open(file, encoding="utf-8") as handle:
            data = json.load(handle)
        return table(data, op)
    except (OSError, ValueError) as error:
        if strict:
            raise ConvlabValueError(f"rule file {file}: {error}") from None
        warnings.warn(
            f"convlab: ignoring the rule file {file} ({error}); algorithm='auto' runs native",
            RuntimeWarning,
            stacklevel=2,
        )
        return ()


def table(data: Any, op: str) -> Tuple[Rule, ...]:
    """The ``(description, predicate, algorithm)`` rows of ``data["<op>"]`` (the parsed JSON), validated."""
    if op not in OPERATIONS:
        raise ConvlabValueError(f"op must be one of {OPERATIONS}, got {op!r}")
    if not isinstance(data, dict):
        raise ConvlabValueError("a rule file holds a JSON object")
    if data.get("format") != FORMAT:
        raise ConvlabValueError(f"unknown rule file format {data.get('format')!r} (expected {FORMAT})")
    section = data.get(op)
    if section is None:
        return ()
    if not isinstance(section, dict):
        raise ConvlabValueError(f"{op!r} must be an object with 'rules' (and optionally 'domain')")
    _check_keys(section, ("rules", "domain", "about"), op)
    domain = _conditions(op, section.get("domain", {}), f"{op}.domain")
    rows: List[Rule] = []
    for index, rule in enumerate(section.get("rules", [])):
        where = f"{op}.rules[{index}]"
        if not isinstance(rule, dict):
            raise ConvlabValueError(f"{where} must be an object")
        _check_keys(rule, ("algorithm", "when", "within", "evidence"), where)
        algorithm = rule.get("algorithm")
        if algorithm not in ALGORITHMS[op]:
            raise ConvlabValueError(f"{where}: algorithm must be one of {ALGORITHMS[op]}, got {algorithm!r}")
        when = _conditions(op, rule.get("when", {}), f"{where}.when")
        within = _conditions(op, rule.get("within", {}), f"{where}.within")
        evidence = rule.get("evidence", {})
        if not isinstance(evidence, dict) or not all(
            isinstance(v, (int, float, str)) and not isinstance(v, bool) for v in evidence.values()
        ):
            raise ConvlabValueError(f"{where}.evidence must map names to numbers or strings")
        description = ", ".join(_describe(name, test) for name, test in when) or "everywhere"
        if within:
            description += ", within the range of the swept shapes it covers"
        if {"shapes", "median_ratio", "worst_ratio"} <= set(evidence):
            description += (
                f" (swept: {evidence['shapes']} shapes, median {evidence['median_ratio']}x native, "
                f"worst {evidence['worst_ratio']}x)"
            )
        rows.append((description, _predicate(op, _intersect(domain + within, when)), algorithm))
    return tuple(rows)


def _check_keys(obj: dict, allowed: Tuple[str, ...], where: str) -> None:
    unknown = sorted(set(obj) - set(allowed))
    if unknown:
        raise ConvlabValueError(f"{where}: unknown keys {unknown} (allowed: {list(allowed)})")


Test = Tuple[str, Any]  # ("range", (lo, hi)) | ("equal", value) | ("in", tuple)


def _conditions(op: str, when: Any, where: str) -> List[Tuple[str, Test]]:
    if not isinstance(when, dict):
        raise ConvlabValueError(f"{where} must be an object of feature conditions")
    out: List[Tuple[str, Test]] = []
    for name, condition in when.items():
        if name not in FEATURES[op]:
            raise ConvlabValueError(f"{where}: unknown feature {name!r} (known: {sorted(FEATURES[op])})")
        if name in BOOLEAN:
            if not isinstance(condition, bool):
                raise ConvlabValueError(f"{where}.{name} must be true or false, got {condition!r}")
            out.append((name, ("equal", condition)))
        elif name in CHOICES:
            values = (condition,) if isinstance(condition, str) else condition
            if not isinstance(values, (list, tuple)) or not values or any(v not in CHOICES[name] for v in values):
                raise ConvlabValueError(f"{where}.{name} must be one or a list of {CHOICES[name]}, got {condition!r}")
            out.append((name, ("in", tuple(values))))
        else:
            if not isinstance(condition, dict):
                raise ConvlabValueError(f"{where}.{name} must be {{'min': ..., 'max': ...}}, got {condition!r}")
            _check_keys(condition, ("min", "max"), f"{where}.{name}")
            bounds = []
            for key in ("min", "max"):
                value = condition.get(key)
                if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
                    raise ConvlabValueError(f"{where}.{name}.{key} must be a number, got {value!r}")
                bounds.append(value)
            lo, hi = bounds
            if lo is not None and hi is not None and lo > hi:
                raise ConvlabValueError(f"{where}.{name}: min {lo} is above max {hi}")
            out.append((name, ("range", (lo, hi))))
    return out


def _intersect(domain: List[Tuple[str, Test]], when: List[Tuple[str, Test]]) -> List[Tuple[str, Test]]:
    """The rule's conditions within the domain: ranges intersected, other tests side by side."""
    merged: Dict[str, List[Test]] = {}
    for name, test in domain + when:
        merged.setdefault(name, []).append(test)
    out = []
    for name, tests in merged.items():
        ranges = [t[1] for t in tests if t[0] == "range"]
        if ranges:
            lows = [lo for lo, _ in ranges if lo is not None]
            highs = [hi for _, hi in ranges if hi is not None]
            out.append((name, ("range", (max(lows) if lows else None, min(highs) if highs else None))))
        out.extend((name, t) for t in tests if t[0] != "range")
    return out


def _predicate(op: str, conditions: List[Tuple[str, Test]]) -> Callable[[Any], bool]:
    checks = tuple((FEATURES[op][name], kind, value) for name, (kind, value) in conditions)

    def predicate(shape: Any) -> bool:
        for feature, kind, value in checks:
            x = feature(shape)
            if kind == "range":
                lo, hi = value
                if (lo is not None and x < lo) or (hi is not None and x > hi):
                    return False
            elif kind == "equal":
                if x != value:
                    return False
            elif x not in value:
                return False
        return True

    return predicate


def _describe(name: str, test: Test) -> str:
    kind, value = test
    if kind == "range":
        lo, hi = value
        if lo is not None and hi is not None:
            return f"{name} {_number(lo)}..{_number(hi)}" if lo != hi else f"{name} = {_number(lo)}"
        return f"{name} >= {_number(lo)}" if lo is not None else f"{name} <= {_number(hi)}"
    if kind == "equal":
        return name if value else f"not {name}"
    return f"{name} {'/'.join(value)}"


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"
