"""Generated rule tables (convlab.rules): the shipped files load strictly, predicates mean what the JSON says,
and anything malformed is refused rather than executed."""

from __future__ import annotations

import json
import os

import pytest

import convlab as cl
from convlab import algorithms, rules
from convlab.algorithms import ConvShape, PoolShape

RULES_DIR = os.path.join(os.path.dirname(rules.__file__), "rules")
SHIPPED = (
    sorted(name[:-5] for name in os.listdir(RULES_DIR) if name.endswith(".json")) if os.path.isdir(RULES_DIR) else []
)


def conv(batch=1, cin=1, cout=1, h=512, w=512, kh=3, kw=3, stride=(1, 1), dilation=(1, 1), last=False, dtype="float32"):
    return ConvShape(batch, cin, cout, h, w, kh, kw, stride, dilation, last, dtype)


def pool(batch=1, c=4, h=128, w=128, window=(3, 3), stride=(1, 1), mode="max", last=False, dtype="float32"):
    return PoolShape(batch, c, h, w, window, stride, mode, last, dtype)


def file_with(conv_rules=(), pool_rules=(), domain=None):
    data = {"format": rules.FORMAT, "conv": {"rules": list(conv_rules)}, "pool": {"rules": list(pool_rules)}}
    if domain is not None:
        data["conv"]["domain"] = domain
    return data


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_rule_files_load_strictly(name):
    for op, shape in (("conv", conv()), ("pool", pool())):
        table = rules.load(name, op, strict=True)
        for description, predicate, algorithm in table:
            assert isinstance(description, str) and description
            assert algorithm in rules.ALGORITHMS[op]
            assert predicate(shape) in (True, False)


def test_features_of_a_strided_convolution():
    f = rules.features("conv", conv(batch=2, cin=3, cout=4, h=9, w=8, kh=5, kw=3, stride=(2, 3), dilation=(2, 1)))
    assert f["pixels"] == 2 * 5 * 3  # ceil(9 / 2) x ceil(8 / 3)
    assert f["channel_pairs"] == 12 and f["taps"] == 15 and f["unrolled"] == 180
    assert f["macs"] == 30 * 12 * 15 and f["stride"] == 3 and f["dilation"] == 2 and f["views"] == 45
    p = rules.features("pool", pool(batch=2, c=5, h=10, w=10, window=(2, 3), stride=(2, 2)))
    assert p["pixels"] == 50 and p["elements"] == 250 and p["taps"] == 6 and p["mode"] == "max"


def test_ranges_are_inclusive_and_the_domain_bounds_every_rule():
    data = file_with(
        [{"algorithm": "shift", "when": {"channel_pairs": {"max": 4}, "pixels": {"min": 65536}}}],
        domain={"pixels": {"max": 2**22}},
    )
    ((description, predicate, algorithm),) = rules.table(data, "conv")
    assert algorithm == "shift" and description == "channel_pairs <= 4, pixels >= 65536"
    assert predicate(conv(h=256, w=256)) and not predicate(conv(h=255, w=256))
    assert predicate(conv(cin=2, cout=2)) and not predicate(conv(cin=5))
    assert predicate(conv(h=2048, w=2048)) and not predicate(conv(h=4096, w=2048))  # outside the swept domain


def test_boolean_and_string_conditions():
    data = file_with(
        pool_rules=[
            {"algorithm": "layout", "when": {"channels_last": False, "mode": "max", "dtype": ["float32", "float64"]}}
        ]
    )
    ((_, predicate, _),) = rules.table(data, "pool")
    assert predicate(pool()) and not predicate(pool(last=True)) and not predicate(pool(mode="avg"))


def test_first_matching_rule_wins_through_choose():
    data = file_with([{"algorithm": "gemm", "when": {"in_channels": {"min": 8}}}, {"algorithm": "shift", "when": {}}])
    table = rules.table(data, "conv")
    be = cl.get_backend("numpy")
    assert algorithms.choose(be, table, conv(cin=8), None) == "gemm"
    assert algorithms.choose(be, table, conv(cin=7), None) == "shift"
    assert table[1][0] == "everywhere"


def test_evidence_reads_in_the_description():
    data = file_with(
        [
            {
                "algorithm": "shift",
                "when": {"taps": {"max": 9}},
                "evidence": {"shapes": 12, "median_ratio": 0.4, "worst_ratio": 1.01, "best_ratio": 0.1},
            }
        ]
    )
    ((description, _, _),) = rules.table(data, "conv")
    assert description == "taps <= 9 (swept: 12 shapes, median 0.4x native, worst 1.01x)"


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"format": 2}, "format"),
        ([], "JSON object"),
        (file_with([{"algorithm": "fft", "when": {}}]), "algorithm must be one of"),
        (file_with([{"algorithm": "native", "when": {}}]), "algorithm must be one of"),
        (file_with([{"algorithm": "shift", "when": {"colour": {"max": 1}}}]), "unknown feature"),
        (file_with([{"algorithm": "shift", "when": {"taps": {"max": "9"}}}]), "must be a number"),
        (file_with([{"algorithm": "shift", "when": {"taps": {"max": True}}}]), "must be a number"),
        (file_with([{"algorithm": "shift", "when": {"taps": {"min": 9, "max": 3}}}]), "above max"),
        (file_with([{"algorithm": "shift", "when": {"taps": {"below": 3}}}]), "unknown keys"),
        (file_with([{"algorithm": "shift", "when": {"taps": 3}}]), "must be"),
        (file_with([{"algorithm": "shift", "when": {"channels_last": 1}}]), "true or false"),
        (file_with([{"algorithm": "shift", "when": {"dtype": "float16"}}]), "one or a list of"),
        (file_with([{"algorithm": "shift", "when": {}, "code": "import os"}]), "unknown keys"),
        (file_with([{"algorithm": "shift", "evidence": {"x": [1]}}]), "evidence"),
        (file_with(pool_rules=[{"algorithm": "gemm"}]), "algorithm must be one of"),
    ],
)
def test_malformed_files_are_refused(bad, message):
    with pytest.raises(cl.ConvlabValueError, match=message):
        for op in ("conv", "pool"):
            rules.table(bad, op)


def test_a_broken_file_warns_and_falls_back_to_native(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text("{not json")
    with pytest.warns(RuntimeWarning, match="ignoring the rule file"):
        assert rules.load("numpy", "conv", str(path)) == ()
    with pytest.raises(cl.ConvlabValueError, match="rule file"):
        rules.load("numpy", "conv", str(path), strict=True)
    path.write_text(json.dumps(file_with([{"algorithm": "fft"}])))
    with pytest.warns(RuntimeWarning):
        assert rules.load("numpy", "conv", str(path)) == ()


def test_no_file_means_no_rules(tmp_path):
    assert rules.load("numpy", "conv", str(tmp_path / "missing.json")) == ()
    assert rules.load("no-such-backend", "pool") == ()


def test_the_fit_recovers_a_planted_rule_and_refuses_noise():
    """benchmarks/fit_rules.py on synthetic timings: shift 4x faster than native for at most 4 channel pairs and
    at least 65536 output pixels, 3x slower elsewhere; gemm everywhere within 3% of native (noise)."""
    import random
    import sys

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))
    import fit_rules

    rng = random.Random(0)
    rows = []
    for _ in range(150):
        cin, cout = rng.choice((1, 2, 4, 8, 16)), rng.choice((1, 2, 4, 8))
        size = rng.choice((16, 64, 128, 256, 512, 1024))
        shape = [1, cin, cout, size, size, 3, 3, [1, 1], [1, 1], False, "float32"]
        wins = cin * cout <= 4 and size * size >= 65536
        native = 1e-3
        seconds = {
            "native": native,
            "native_again": native * rng.uniform(0.98, 1.02),
            "shift": native * (0.25 if wins else 3.0),
            "gemm": native * rng.uniform(0.97, 1.03),
        }
        first = dict(seconds)
        rows.append({"op": "conv", "shape": shape, "seconds": seconds, "first_call": first})
    points = fit_rules.Points("conv", rows, ("shift", "gemm"))
    fitted = fit_rules.fit(points, fit_rules.Settings())
    section = fit_rules.to_json(points, fitted)
    assert [rule["algorithm"] for rule in section["rules"]] == ["shift"]
    when = section["rules"][0]["when"]
    assert set(when) <= {"channel_pairs", "pixels", "macs", "unrolled", "views", "in_channels", "out_channels"}
    choices = fit_rules.predict(section, "conv", points.shapes)
    expected = ["shift" if r["seconds"]["shift"] < r["seconds"]["native"] else "native" for r in rows]
    assert choices == expected
    steady, _ = fit_rules.ratios_of(points, choices)
    assert steady.max() <= 1.0
