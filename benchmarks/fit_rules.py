"""Fit the "auto" rule tables to a sweep: ``results/sweep-<backend>.json`` -> ``convlab/rules/<backend>.json``.

    python benchmarks/fit_rules.py --backend torch [--write] [--folds 5]
    python benchmarks/fit_rules.py --report            # results/sweep.md from every fit-<backend>.json
    python benchmarks/fit_rules.py --overhead          # what choosing costs per plan and per call

The model is a decision list of boxes in feature space (the features of :mod:`convlab.rules`: output
pixels, channels, channel pairs, taps, stride, dilation, multiply-adds, unrolled shifted views, layout,
dtype; for pooling also mode and elements). Rules are found one at a time by sequential covering: for each
formulation, a beam search over cuts (each cut a threshold on one feature, placed at the geometric midpoint
between two swept values) looks for the box with the largest total log speed-up over native among the
configurations no earlier rule covers, such that inside the box

- no configuration has the formulation slower than native by more than ``--tolerance`` (the noise),
- no configuration has its first call more than ``--first-call`` times native's (JAX compiles),
- at least ``--support`` configurations have it faster than native by more than ``--win`` (the noise),

and the best such box over all formulations becomes the next rule; the covered configurations are removed
and the search repeats until no box qualifies. Every rule also holds only within the swept domain (each
feature's range over the sweep): outside it "auto" runs native.

Native's time is the geometric mean of its two interleaved measurements (``native``, ``native_again``);
where "auto" runs native it runs the same plan, so its ratio is 1. Reported: the in-sample distribution
of auto/native, a K-fold cross-validated one (each configuration predicted by rules fitted without it),
the one under the hand-written rules the sweep ran with, and the first-call ratios.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import random
import re
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent))

from convlab import rules  # noqa: E402
from convlab.algorithms import ConvShape, PoolShape  # noqa: E402

RESULTS = ROOT / "results"
RULES = ROOT.parent / "convlab" / "rules"
BACKENDS = ("numpy", "torch", "tensorflow", "jax", "mxnet")
#: features the boxes may cut, per operation; booleans and strings become 0/1
CUT_FEATURES = {
    "conv": (
        "pixels",
        "batch",
        "in_channels",
        "out_channels",
        "channel_pairs",
        "taps",
        "stride",
        "dilation",
        "macs",
        "unrolled",
        "views",
        "channels_last",
        "dtype",
    ),
    "pool": ("pixels", "batch", "channels", "elements", "taps", "stride", "mode", "channels_last", "dtype"),
}
CATEGORIES = {"dtype": ("float32", "float64"), "mode": ("max", "avg"), "channels_last": (False, True)}
#: the features a rule file's "domain" ranges over: the numeric ones (channel pairs follow from the channels)
DOMAIN_FEATURES = {
    op: tuple(name for name in names if name not in CATEGORIES and name != "channel_pairs")
    for op, names in CUT_FEATURES.items()
}


class Settings:
    def __init__(
        self,
        tolerance=0.05,
        win=0.10,
        support=6,
        first_call=1.6,
        max_rules=8,
        max_cuts=5,
        beam=12,
        win_share=0.5,
        regret=0.5,
        tight=True,
    ):
        self.tolerance, self.win, self.support, self.first_call = tolerance, win, support, first_call
        self.max_rules, self.max_cuts, self.beam, self.win_share = max_rules, max_cuts, beam, win_share
        self.regret, self.tight = regret, tight


# -- data -----------------------------------------------------------------------------------------


def shape_of(row: dict) -> Any:
    s = row["shape"]
    if row["op"] == "conv":
        return ConvShape(*s[:7], tuple(s[7]), tuple(s[8]), bool(s[9]), s[10])
    return PoolShape(*s[:4], tuple(s[4]), tuple(s[5]), s[6], bool(s[7]), s[8])


def load_rows(path: Path) -> Tuple[dict, List[dict]]:
    data = json.loads(path.read_text())
    return data["meta"], [row for row in data["rows"] if "native" in row["seconds"]]


def native_time(row: dict) -> float:
    seconds = row["seconds"]
    if "native_again" in seconds:
        return math.sqrt(seconds["native"] * seconds["native_again"])
    return seconds["native"]


def paired_ratio(row: dict, algorithm: str) -> float:
    """``algorithm``'s time over native's: the median over the interleaved rounds of the round's ratio to the
    geometric mean of native's two measurements in that round (load that moves between rounds cancels); the
    ratio of the medians where a formulation was timed once. A formulation that did not run: infinity."""
    seconds, samples = row["seconds"], row.get("samples", {})
    if algorithm not in seconds:
        return math.inf
    own, native, again = samples.get(algorithm), samples.get("native"), samples.get("native_again")
    if own and native and len(own) == len(native):
        base = native if not again or len(again) != len(native) else [math.sqrt(a * b) for a, b in zip(native, again)]
        return statistics.median(t / n for t, n in zip(own, base))
    return seconds[algorithm] / native_time(row)


def noise_ratio(row: dict) -> float:
    """native_again over native, paired by round like :func:`paired_ratio`: the same code against itself."""
    samples = row.get("samples", {})
    native, again = samples.get("native"), samples.get("native_again")
    if native and again and len(native) == len(again):
        return statistics.median(a / n for a, n in zip(again, native))
    return row["seconds"]["native_again"] / row["seconds"]["native"]


class Points:
    """The configurations of one operation as arrays: features, each formulation's ratio to native."""

    def __init__(self, op: str, rows: List[dict], algorithms: Sequence[str]):
        self.op, self.rows, self.algorithms = op, rows, tuple(algorithms)
        self.shapes = [shape_of(row) for row in rows]
        self.values = [rules.features(op, shape) for shape in self.shapes]
        self.names = CUT_FEATURES[op]
        self.X = np.array([[_code(name, v[name]) for name in self.names] for v in self.values], dtype=float)
        self.ratio = {a: np.array([paired_ratio(row, a) for row in rows]) for a in self.algorithms}
        first_native = np.array([row["first_call"].get("native", np.inf) for row in rows])
        self.first = {}
        for a in self.algorithms:
            f = np.array([row["first_call"].get(a, np.inf) for row in rows])
            self.first[a] = f / first_native

    def subset(self, index: np.ndarray) -> Points:
        return Points(self.op, [self.rows[i] for i in index], self.algorithms)


def _code(name: str, value: Any) -> float:
    if name in CATEGORIES:
        return float(CATEGORIES[name].index(value))
    return float(value)


# -- the fit --------------------------------------------------------------------------------------

Box = Tuple[Tuple[float, float], ...]  # per feature (lo, hi) in feature units, inclusive; +-inf when open


def _inside(X: np.ndarray, box: Box) -> np.ndarray:
    mask = np.ones(len(X), dtype=bool)
    for f, (lo, hi) in enumerate(box):
        if lo > -np.inf:
            mask &= X[:, f] >= lo
        if hi < np.inf:
            mask &= X[:, f] <= hi
    return mask


def _cut(a: float, b: float, name: str) -> Tuple[float, float]:
    """Where to cut between two swept values a < b: (largest value kept below, smallest kept above)."""
    if name in CATEGORIES:
        return a, b
    middle = math.sqrt(a * b) if a > 0 else (a + b) / 2
    return math.floor(middle), math.floor(middle) + 1


def best_box(points: Points, active: np.ndarray, algorithm: str, settings: Settings) -> Optional[dict]:
    """The qualifying box with the largest total gain for ``algorithm`` among the ``active`` points."""
    X = points.X[active]
    if len(X) == 0:
        return None
    ratio = points.ratio[algorithm][active]
    first = points.first[algorithm][active]
    admissible = (ratio <= 1 + settings.tolerance) & (first <= settings.first_call)
    winner = admissible & (ratio <= 1 / (1 + settings.win))
    # the log speed-up over native, less ``regret`` times what another formulation would have gained on top
    best = np.min([points.ratio[a][active] for a in points.algorithms], axis=0)
    log_ratio = np.log(np.clip(ratio, 1e-6, None))
    with np.errstate(invalid="ignore"):  # inf - inf where no formulation ran: no regret (not admissible anyway)
        regret = np.nan_to_num(np.clip(log_ratio - np.log(np.clip(best, 1e-6, None)), 0, None), nan=0.0)
    gain = np.where(admissible, -log_ratio - settings.regret * regret, -5.0)
    if winner.sum() < settings.support:
        return None
    full: Box = tuple((-np.inf, np.inf) for _ in points.names)
    best_rule: Optional[dict] = None

    def consider(box: Box, mask: np.ndarray) -> None:
        nonlocal best_rule
        winners = winner[mask].sum()
        if admissible[mask].all() and winners >= settings.support and winners >= settings.win_share * mask.sum():
            total = float(gain[mask].sum())
            if best_rule is None or total > best_rule["gain"] + 1e-12:
                best_rule = {"box": box, "gain": total, "algorithm": algorithm}

    consider(full, np.ones(len(X), dtype=bool))
    beam: List[Tuple[float, Box]] = [(float(gain.sum()), full)]
    seen = {full}
    for _depth in range(settings.max_cuts):
        candidates: List[Tuple[float, Box, np.ndarray]] = []
        for _score, box in beam:
            mask = _inside(X, box)
            for f, name in enumerate(points.names):
                values = X[mask, f]
                weights = gain[mask]
                order = np.argsort(values, kind="stable")
                values, weights = values[order], weights[order]
                unique, starts = np.unique(values, return_index=True)
                if len(unique) < 2:
                    continue
                prefix = np.concatenate([[0.0], np.cumsum(weights)])
                total = prefix[-1]
                for k in range(len(unique) - 1):
                    below = prefix[starts[k + 1]]
                    keep_hi, keep_lo = _cut(unique[k], unique[k + 1], name)
                    lo, hi = box[f]
                    for score, bound in ((below, (lo, min(hi, keep_hi))), (total - below, (max(lo, keep_lo), hi))):
                        new = box[:f] + (bound,) + box[f + 1 :]
                        if new not in seen:
                            seen.add(new)
                            candidates.append((score, new, None))  # type: ignore[arg-type]
        if not candidates:
            break
        candidates.sort(key=lambda c: -c[0])
        beam = []
        for score, box, _ in candidates[: settings.beam * 4]:
            mask = _inside(X, box)
            if winner[mask].sum() < settings.support:
                continue
            consider(box, mask)
            if len(beam) < settings.beam:
                beam.append((score, box))
        if not beam:
            break
    return best_rule


def fit(points: Points, settings: Settings) -> List[dict]:
    """The decision list: ``[{"algorithm", "box", "gain"}, ...]`` by sequential covering."""
    active = np.ones(len(points.rows), dtype=bool)
    chosen: List[dict] = []
    while len(chosen) < settings.max_rules:
        options = [best_box(points, active, a, settings) for a in points.algorithms]
        options = [o for o in options if o is not None]
        if not options:
            break
        rule = max(options, key=lambda o: o["gain"])
        index = np.flatnonzero(active)
        covered = index[_inside(points.X[active], rule["box"])]
        if len(covered) == 0:
            break
        # the rule holds only within the range of the shapes it covers: it says nothing beyond its evidence
        if settings.tight:
            rule["within"] = tuple(
                (float(points.X[covered, f].min()), float(points.X[covered, f].max())) for f in range(len(points.names))
            )
        else:
            rule["within"] = tuple((-np.inf, np.inf) for _ in points.names)
        active[covered] = False
        chosen.append(rule)
    return chosen


def to_json(points: Points, fitted: List[dict]) -> dict:
    """The ``{"domain", "rules"}`` section of a rule file for ``fitted`` boxes (evidence from ``points``)."""
    domain = {}
    for name in DOMAIN_FEATURES[points.op]:
        values = [v[name] for v in points.values]
        domain[name] = {"min": min(values), "max": max(values)}
    out_rules = []
    active = np.ones(len(points.rows), dtype=bool)
    for rule in fitted:
        when = _conditions(points.names, rule["box"], cuts=True)
        within = _conditions(points.names, rule["within"], cuts=False)
        mask = active & _inside(points.X, rule["box"]) & _inside(points.X, rule["within"])
        ratios = points.ratio[rule["algorithm"]][mask]
        active &= ~mask
        evidence = {
            "shapes": int(mask.sum()),
            "median_ratio": round(float(np.median(ratios)), 3),
            "worst_ratio": round(float(ratios.max()), 3),
            "best_ratio": round(float(ratios.min()), 3),
        }
        out_rules.append({"algorithm": rule["algorithm"], "when": when, "within": within, "evidence": evidence})
    return {"domain": domain, "rules": out_rules}


def _conditions(names: Sequence[str], box: Any, cuts: bool) -> Dict[str, Any]:
    """A box of feature ranges as a rule file's conditions. ``cuts`` (a rule's "when"): the bounds that are cut,
    a category or the list of those allowed; else (its "within"): both bounds, a category only when one is left."""
    conditions: Dict[str, Any] = {}
    for f, name in enumerate(names):
        lo, hi = box[f]
        if lo == -np.inf and hi == np.inf:
            continue
        if name in CATEGORIES:
            allowed = [c for i, c in enumerate(CATEGORIES[name]) if lo <= i <= hi]
            if len(allowed) == 1 or (cuts and name == "channels_last"):
                conditions[name] = allowed[0]
            elif cuts:
                conditions[name] = allowed
        elif cuts:
            conditions[name] = {key: int(v) for key, v in (("min", lo), ("max", hi)) if abs(v) < np.inf}
        else:
            conditions[name] = {"min": int(lo), "max": int(hi)}
    return conditions


def predict(section: dict, op: str, shapes: Sequence[Any]) -> List[str]:
    """What "auto" runs for each shape under a rule-file section, through convlab.rules itself."""
    table = rules.table({"format": rules.FORMAT, op: section}, op)
    out = []
    for shape in shapes:
        out.append(next((algorithm for _d, predicate, algorithm in table if predicate(shape)), "native"))
    return out


def ratios_of(points: Points, choices: Sequence[str]) -> Tuple[np.ndarray, np.ndarray]:
    """auto/native and first-call auto/native for each point when "auto" runs ``choices``; NaN where the
    chosen formulation was not timed (skipped by the sweep: its floor showed it could not win)."""
    steady, first = [], []
    for i, choice in enumerate(choices):
        if choice == "native":
            steady.append(1.0)
            first.append(1.0)
        else:
            r, f = float(points.ratio[choice][i]), float(points.first[choice][i])
            steady.append(r if math.isfinite(r) else math.nan)
            first.append(f if math.isfinite(f) else math.nan)
    return np.array(steady), np.array(first)


def oracle(points: Points, first_call: float = 2.0) -> np.ndarray:
    """Per shape, the best measured formulation over native (1.0 when none beats it) among those whose first call
    is within ``first_call`` times native's: what a perfect per-shape choice would give (its noise included)."""
    best = np.ones(len(points.rows))
    for a in points.algorithms:
        ok = points.first[a] <= first_call
        best = np.where(ok, np.minimum(best, points.ratio[a]), best)
    return best


def cross_validate(points: Points, settings: Settings, folds: int, seed: int = 0) -> Tuple[List[str], np.ndarray]:
    n = len(points.rows)
    order = list(range(n))
    random.Random(seed).shuffle(order)
    choices: List[str] = ["native"] * n
    for k in range(folds):
        test = np.array(sorted(order[k::folds]))
        train = np.array(sorted(set(range(n)) - set(test.tolist())))
        section = to_json(points.subset(train), fit(points.subset(train), settings))
        for i, choice in zip(test, predict(section, points.op, [points.shapes[i] for i in test])):
            choices[i] = choice
    steady, _first = ratios_of(points, choices)
    return choices, steady


def distribution(values: Sequence[float]) -> dict:
    values = np.asarray(values, dtype=float)
    unmeasured = int(np.isnan(values).sum())
    values = values[~np.isnan(values)]
    if len(values) == 0:
        return {}
    return {
        "n": int(len(values)),
        "unmeasured": unmeasured,
        "median": round(float(np.median(values)), 3),
        "p95": round(float(np.percentile(values, 95)), 3),
        "worst": round(float(values.max()), 3),
        "best": round(float(values.min()), 3),
        "geomean": round(float(np.exp(np.mean(np.log(values)))), 3),
        "share_faster": round(float(np.mean(values < 1.0)), 3),
    }


# -- one backend ----------------------------------------------------------------------------------


def fit_backend(backend: str, settings: Settings, folds: int, write: bool, results: Path) -> dict:
    meta, rows = load_rows(results / f"sweep-{backend}.json")
    sections, summary = {}, {"backend": backend, "meta": meta, "settings": vars(settings), "ops": {}}
    all_steady, all_first, all_cv, all_before, all_noise, all_first_before = [], [], [], [], [], []
    all_oracle: List[float] = []
    for op in ("conv", "pool"):
        op_rows = [row for row in rows if row["op"] == op]
        if not op_rows:
            continue
        points = Points(op, op_rows, rules.ALGORITHMS[op])
        fitted = fit(points, settings)
        section = to_json(points, fitted)
        section["about"] = (
            f"fitted by benchmarks/fit_rules.py to {len(op_rows)} {op} shapes of "
            f"benchmarks/results/sweep-{backend}.json"
        )
        sections[op] = section
        choices = predict(section, op, points.shapes)
        steady, first = ratios_of(points, choices)
        cv_choices, cv = cross_validate(points, settings, folds)
        before_choices = [row.get("chosen", "native") for row in op_rows]
        before, first_before = ratios_of(points, before_choices)
        noise = [noise_ratio(row) for row in op_rows if "native_again" in row["seconds"]]
        anchors = [
            {
                "label": _label(row),
                "choice": c,
                "ratio": round(float(r), 3),
                "native_ms": round(native_time(row) * 1e3, 3),
            }
            for row, c, r in zip(op_rows, choices, steady)
            if row.get("anchor")
        ]
        worst = sorted(zip(steady, choices, op_rows), key=lambda t: -t[0])[:3]
        cv_worst = sorted(zip(cv, cv_choices, op_rows), key=lambda t: -t[0])[:3]
        summary["ops"][op] = {
            "shapes": len(op_rows),
            "in_sample": distribution(steady),
            "cross_validated": distribution(cv),
            "before": distribution(before),
            "first_call": distribution(first),
            "first_call_before": distribution(first_before),
            "noise_native_again": distribution(noise),
            "chosen": {a: choices.count(a) for a in sorted(set(choices))},
            "anchors": anchors,
            "worst_in_sample": [(round(float(r), 3), c, _label(row)) for r, c, row in worst],
            "worst_cross_validated": [(round(float(r), 3), c, _label(row)) for r, c, row in cv_worst],
        }
        summary["ops"][op]["rules"] = [
            {"description": d, "algorithm": a} for d, _p, a in rules.table({"format": rules.FORMAT, op: section}, op)
        ]
        all_steady += list(steady)
        all_first += list(first)
        all_cv += list(cv)
        all_before += list(before)
        all_first_before += list(first_before)
        all_noise += noise
        all_oracle += list(oracle(points))
    summary["all"] = {
        "oracle": distribution(all_oracle),
        "in_sample": distribution(all_steady),
        "cross_validated": distribution(all_cv),
        "before": distribution(all_before),
        "first_call": distribution(all_first),
        "first_call_before": distribution(all_first_before),
        "noise_native_again": distribution(all_noise),
    }
    data = {
        "format": rules.FORMAT,
        "backend": backend,
        "generated_by": "benchmarks/fit_rules.py",
        "source": f"benchmarks/results/sweep-{backend}.json",
        "measured_on": f"{meta.get('cpu')}, {meta.get('backend')} {meta.get('version')}, one thread, CPU time",
        "settings": dict(vars(settings)),
        **sections,
    }
    for op in ("conv", "pool"):  # the file must load strictly
        rules.table(data, op)
    if write:
        RULES.mkdir(exist_ok=True)
        (RULES / f"{backend}.json").write_text(dumps(data) + "\n")
    (results / f"fit-{backend}.json").write_text(json.dumps(summary, indent=1, default=str) + "\n")
    return summary


def dumps(data: dict) -> str:
    """JSON with each condition ``{"min": .., "max": ..}`` and each evidence object on one line."""
    text = json.dumps(data, indent=1)
    return re.sub(r"\{\n\s*(\"[^{}\[\]]*?)\n\s*\}", lambda m: "{" + re.sub(r"\n\s*", " ", m.group(1)) + "}", text)


def _label(row: dict) -> str:
    x = "x".join(map(str, row["x_shape"]))
    window = "x".join(map(str, row["window"]))
    layout = "NHWC" if row["data_format"] == "channels_last" else "NCHW"
    if row["op"] == "conv":
        what = f"conv {x} ->{row['out_channels']} {window} s{'x'.join(map(str, row['stride']))}"
        what += f" d{'x'.join(map(str, row['dilation']))}" if row["dilation"] != [1, 1] else ""
    else:
        what = f"{row['mode']} pool {x} {window} s{'x'.join(map(str, row['stride']))}"
    return f"{what} {row['padding']} {layout} {row['dtype']}"


def print_summary(summary: dict) -> None:
    print(f"== {summary['backend']} ({summary['meta'].get('version')}, {summary['meta'].get('cpu')})")
    for op, s in summary["ops"].items():
        print(f"  {op}: {s['shapes']} shapes; rules:")
        for rule in s["rules"]:
            print(f"    {rule['algorithm']:7s} {rule['description']}")
        for key in ("in_sample", "cross_validated", "before", "first_call", "noise_native_again"):
            d = s[key]
            print(
                f"    {key:20s} median {d.get('median')} p95 {d.get('p95')} worst {d.get('worst')} "
                f"faster {d.get('share_faster')}"
            )
        for anchor in s["anchors"]:
            print(f"    anchor {anchor['label']}: {anchor['choice']} {anchor['ratio']}")
        print(f"    worst in sample: {s['worst_in_sample']}")
        print(f"    worst held out:  {s['worst_cross_validated']}")


# -- what deciding costs --------------------------------------------------------------------------


def overhead() -> None:
    """Microseconds of one "auto" decision per plan, and of a repeated call with and without the rules."""
    import timeit

    import convlab as cl
    from convlab import algorithms, dispatch
    from convlab.numpy_backend import NumpyBackend

    results = {}
    be = cl.get_backend("numpy")
    shape = ConvShape(1, 1, 1, 512, 512, 3, 3, (1, 1), (1, 1), False, "float32")
    pool = PoolShape(1, 4, 128, 128, (3, 3), (1, 1), "max", False, "float32")
    for backend in BACKENDS:
        if not Path(rules.path(backend)).exists():
            continue
        conv_table, pool_table = rules.load(backend, "conv", strict=True), rules.load(backend, "pool", strict=True)
        n = 20000
        cpu = time.process_time  # CPU time: the machine is shared, wall time here measures the other jobs
        decide_conv = functools.partial(algorithms.choose, be, conv_table, shape, None)
        decide_pool = functools.partial(algorithms.choose, be, pool_table, pool, None)
        per_conv = min(timeit.repeat(decide_conv, number=n, repeat=5, timer=cpu)) / n
        per_pool = min(timeit.repeat(decide_pool, number=n, repeat=5, timer=cpu)) / n
        reload = functools.partial(rules.load, backend, "conv")
        load = min(timeit.repeat(reload, number=100, repeat=5, timer=cpu)) / 100
        results[backend] = {
            "choose_conv_us": per_conv * 1e6,
            "choose_pool_us": per_pool * 1e6,
            "load_ms": load * 1e3,
            "rules": len(conv_table) + len(pool_table),
        }
        print(
            f"{backend}: choose conv {per_conv * 1e6:.2f} us, pool {per_pool * 1e6:.2f} us "
            f"({len(conv_table)}+{len(pool_table)} rules); loading the file {load * 1e3:.2f} ms"
        )
    # a repeated call is a plan hit: the rules ran when the plan was made. Count the predicate calls, and time the
    # hit with no rules and with a generated table, interleaved (the same plan code either way)
    x = np.ones((1, 1, 8, 8), np.float32)
    k = np.ones((1, 1, 3, 3), np.float32)
    original = NumpyBackend.conv_rules
    evaluated = [0]

    def counting(predicate: Any) -> Any:
        def counted(shape: Any) -> bool:
            evaluated[0] += 1
            return predicate(shape)

        return counted

    tables = {
        "no rules": (("never", lambda s: False, "shift"),),
        "generated rules": tuple((d, counting(p), a) for d, p, a in rules.load("numpy", "conv", strict=True)),
    }
    cpu = time.process_time
    hits: Dict[str, List[float]] = {label: [] for label in tables}
    firsts: Dict[str, List[float]] = {label: [] for label in tables}
    try:
        NumpyBackend.conv_rules = tables["generated rules"]
        dispatch.clear_plans()
        cl.conv2d(x, k, backend="numpy")
        on_plan = evaluated[0]
        for _ in range(1000):
            cl.conv2d(x, k, backend="numpy")
        on_hits = evaluated[0] - on_plan
        for _round in range(9):
            for label, table in tables.items():
                NumpyBackend.conv_rules = table
                dispatch.clear_plans()
                cl.conv2d(x, k, backend="numpy")
                hits[label].append(timeit.timeit(lambda: cl.conv2d(x, k, backend="numpy"), number=1000, timer=cpu))
                first = timeit.timeit(
                    lambda: (dispatch.clear_plans(), cl.conv2d(x, k, backend="numpy")), number=200, timer=cpu
                )
                firsts[label].append(first / 200)
    finally:
        NumpyBackend.conv_rules = original
        dispatch.clear_plans()
    timings = {}
    for label in tables:
        timings[label] = statistics.median(hits[label]) / 1000 * 1e6
        timings[label + ", first call of a signature"] = statistics.median(firsts[label]) * 1e6
    for label, us in timings.items():
        print(f"numpy 8x8 conv2d, {label}: {us:.2f} us per call")
    print(f"predicates evaluated: {on_plan} when the plan was made, {on_hits} in 1000 repeated calls")
    results["numpy_call_us"] = timings
    results["predicates_evaluated"] = {"first_call": on_plan, "next_1000_calls": on_hits}
    (RESULTS / "rules-overhead.json").write_text(json.dumps(results, indent=1) + "\n")


# -- the report -----------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backend", action="append", default=[], help="one or more (default: every sweep found)")
    parser.add_argument("--results", default=str(RESULTS))
    parser.add_argument("--write", action="store_true", help="write convlab/rules/<backend>.json")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--tolerance", type=float, default=0.05)
    parser.add_argument("--win", type=float, default=0.10)
    parser.add_argument("--support", type=int, default=6)
    parser.add_argument("--first-call", type=float, default=1.6)
    parser.add_argument("--max-rules", type=int, default=8)
    parser.add_argument("--regret", type=float, default=0.5)
    parser.add_argument("--win-share", type=float, default=0.5)
    parser.add_argument("--loose", action="store_true", help="rules not bounded by the range of their own shapes")
    parser.add_argument("--report", action="store_true", help="write results/sweep.md")
    parser.add_argument("--overhead", action="store_true", help="time the decision (per plan) and a repeated call")
    args = parser.parse_args()
    results = Path(args.results)
    if args.overhead:
        overhead()
        return
    if args.report:
        import sweep_report

        sweep_report.write(results)
        return
    settings = Settings(
        args.tolerance,
        args.win,
        args.support,
        args.first_call,
        args.max_rules,
        win_share=args.win_share,
        regret=args.regret,
        tight=not args.loose,
    )
    backends = args.backend or [b for b in BACKENDS if (results / f"sweep-{b}.json").exists()]
    for backend in backends:
        started = time.perf_counter()
        summary = fit_backend(backend, settings, args.folds, args.write, results)
        print_summary(summary)
        print(f"  ({time.perf_counter() - started:.1f} s)")


if __name__ == "__main__":
    main()
