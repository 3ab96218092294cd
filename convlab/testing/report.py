"""Judging results: each backend against the reference, each pair against each other, the table, the command."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import numpy as np

from convlab.errors import ConvlabValueError
from convlab.testing.asserts import _installed
from convlab.testing.bounds import _check_bound, _check_exact, _check_nonfinite, _ratio
from convlab.testing.bundles import Results, load_bundle, run_cases, save_bundle
from convlab.testing.cases import CASES, Case
from convlab.testing.operations import reference_case


@dataclass
class Verdict:
    """The outcome of one case on one backend (or one pair of backends)."""

    status: str  # "exact", "bound", "violation", "missing", "n/a"
    ratio: float = 0.0
    message: str = ""


def judge(
    case: Case, outputs: Optional[List[np.ndarray]], reference: List[np.ndarray], bounds: List[Optional[np.ndarray]]
) -> Verdict:
    """Compare one backend's outputs for a case against the reference and its bounds."""
    if outputs is None or len(outputs) != len(reference) or any(o is None for o in outputs):
        return Verdict("missing", math.inf, f"{case.id}: no result")
    worst, exact = 0.0, True
    for index, (actual, expected, bound) in enumerate(zip(outputs, reference, bounds)):
        what = f"{case.id} output {index}"
        try:
            if bound is None:
                _check_exact(np.asarray(actual), expected, what)
            else:
                actual64 = np.asarray(actual, dtype=np.float64)
                worst = max(worst, _check_bound(actual64, expected, bound, what))
                exact = exact and bool(
                    np.array_equal(np.asarray(actual).astype(case.dtype), expected.astype(case.dtype), equal_nan=True)
                )
        except AssertionError as error:
            return Verdict("violation", math.inf, str(error))
    return Verdict("exact" if exact else "bound", worst)


def judge_pair(case: Case, first: Optional[List[np.ndarray]], second: Optional[List[np.ndarray]], bounds) -> Verdict:
    """Two backends agree when bit-identical (exact tier) or within the sum of their bounds."""
    if first is None or second is None:
        return Verdict("missing", math.inf)
    worst, exact = 0.0, True
    for index, (a, b, bound) in enumerate(zip(first, second, bounds)):
        a64, b64 = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
        if a64.shape != b64.shape:
            return Verdict("violation", math.inf, f"{case.id} output {index}: shapes {a64.shape} and {b64.shape}")
        same = np.array_equal(a64, b64, equal_nan=True)
        exact = exact and same
        if bound is None and not same:
            return Verdict("violation", math.inf, f"{case.id} output {index}: not bit-identical (exact tier)")
        if bound is not None:
            try:  # NaN and each signed infinity at the same positions first, then the bound elsewhere
                finite = _check_nonfinite(a64, b64, f"{case.id} output {index}")
            except AssertionError as error:
                return Verdict("violation", math.inf, str(error))
            with np.errstate(invalid="ignore"):
                ratio = _ratio(np.where(finite, np.abs(a64 - b64), 0.0), np.where(finite, 2 * bound, 1.0))
            worst = max(worst, float(ratio.max()) if ratio.size else 0.0)
    if worst > 1.0:
        return Verdict("violation", worst, f"{case.id}: differ by {worst:.3g} times the sum of their bounds")
    return Verdict("exact" if exact else "bound", worst)


def _summarise(verdicts: List[Verdict]) -> str:
    applicable = [v for v in verdicts if v.status != "n/a"]
    if not applicable:
        return "n/a"
    if any(v.status == "missing" for v in applicable):
        return "MISSING"
    if any(v.status == "violation" for v in applicable):
        return "VIOLATION"
    if all(v.status == "exact" for v in applicable):
        return "exact"
    return f"{max(v.ratio for v in applicable):.2g}"


def compare(results: List[Results], cases: Sequence[Case] = CASES) -> dict:
    """Judge every backend against the reference and every pair against each other.

    Returns ``{"table": {group: {backend: cell}}, "pairs": {"a vs b": cell}, "problems": [...]}``.
    """
    references = {case.id: reference_case(case) for case in cases}
    table: Dict[str, Dict[str, str]] = {}
    problems: List[str] = []
    per_backend: Dict[str, Dict[str, Verdict]] = {}
    for result in results:
        verdicts = {}
        for case in cases:
            if case.id in result.not_applicable:
                verdicts[case.id] = Verdict("n/a", 0.0, result.not_applicable[case.id])
                continue
            reference, bounds = references[case.id]
            if case.id in result.errors:
                verdicts[case.id] = Verdict("violation", math.inf, f"{case.id}: raised {result.errors[case.id]}")
            else:
                verdicts[case.id] = judge(case, result.outputs.get(case.id), reference, bounds)
            if verdicts[case.id].status in ("violation", "missing"):
                problems.append(f"{result.name}: {verdicts[case.id].message}")
        per_backend[result.name] = verdicts
    cells: Dict[str, Dict[str, List[Verdict]]] = {}
    for case in cases:
        row = cells.setdefault(case.group, {})
        for name, verdicts in per_backend.items():
            row.setdefault(name, []).append(verdicts[case.id])
    table = {group: {name: _summarise(column) for name, column in row.items()} for group, row in cells.items()}
    pairs: Dict[str, str] = {}
    names = [result.name for result in results]
    by_name = {result.name: result for result in results}
    for i, first in enumerate(names):
        for second in names[i + 1 :]:
            pair_verdicts = []
            for case in cases:
                if case.id in by_name[first].not_applicable or case.id in by_name[second].not_applicable:
                    continue
                verdict = judge_pair(
                    case,
                    by_name[first].outputs.get(case.id),
                    by_name[second].outputs.get(case.id),
                    references[case.id][1],
                )
                pair_verdicts.append(verdict)
                if verdict.status in ("violation",):
                    problems.append(f"{first} vs {second}: {verdict.message}")
            pairs[f"{first} vs {second}"] = _summarise(pair_verdicts)
    return {"table": table, "pairs": pairs, "problems": problems}


def format_table(report: dict, results: List[Results]) -> str:
    """The report as a Markdown table: rows are case groups, columns backends (worst error / bound)."""
    names = [result.name for result in results]
    width = max(len(group) for group in report["table"]) if report["table"] else 10
    lines = ["| " + "case group".ljust(width) + " | " + " | ".join(name.center(10) for name in names) + " |"]
    lines.append("|" + "-" * (width + 2) + "|" + "|".join("-" * 12 for _ in names) + "|")
    for group, row in report["table"].items():
        lines.append(
            "| " + group.ljust(width) + " | " + " | ".join(row.get(name, "-").center(10) for name in names) + " |"
        )
    versions = ", ".join(f"{r.name}: {r.meta.get('framework_version', '?')}" for r in results)
    lines.append("")
    lines.append(
        f"cells: worst error as a fraction of the DESIGN.md section 4 bound; 'exact' = bit-identical to the "
        f"float64 reference rounded to the case's dtype. Versions: {versions}."
    )
    if report["pairs"]:
        lines.append("")
        lines.append(
            "pairs (worst difference / sum of both bounds): "
            + ", ".join(f"{k}: {v}" for k, v in report["pairs"].items())
        )
    return "\n".join(lines)


def _label_environments(results: List[Results]) -> None:
    """Tell apart results of one backend from several environments (each bundle holds NumPy, say): their
    labels add the framework version and the bundle, and they are compared with each other like any pair."""
    counts: Dict[str, int] = {}
    for result in results:
        counts[result.backend] = counts.get(result.backend, 0) + 1
    for result in results:
        if counts[result.backend] > 1:
            where = result.meta.get("bundle", "this run")
            result.label = f"{result.backend} {result.meta.get('framework_version', '?')} [{where}]"
    labels = [result.name for result in results]
    if len(set(labels)) != len(labels):
        raise ConvlabValueError(f"the same results given twice (the same bundle loaded twice?): {labels}")


def compare_command(
    backends: Optional[List[str]], save: Optional[str], load: List[str], require: List[str], as_json: bool
) -> int:
    """``convlab compare``: run and/or load results, print the table, exit 1 on any violation or missing case."""
    results: List[Results] = []
    for path in load:
        results.extend(load_bundle(path))
    to_run = backends if backends is not None else ([] if load else _installed())
    for name in to_run:
        results.append(run_cases(name))
    if save:
        save_bundle(save, [r for r in results if r.backend in to_run])
    _label_environments(results)
    names = [r.backend for r in results]
    report = compare(results)
    absent = [name for name in require if name not in names]
    report["problems"] += [f"{name}: no results (bundle missing)" for name in absent]
    if as_json:
        print(
            json.dumps(
                {
                    "table": report["table"],
                    "pairs": report["pairs"],
                    "problems": report["problems"],
                    "versions": {r.name: r.meta for r in results},
                },
                indent=2,
                default=str,
            )
        )
    else:
        print(format_table(report, results))
        if save:
            print(f"\nsaved {save}")
        for problem in report["problems"]:
            print(f"PROBLEM {problem}")
        print(f"\n{len(CASES)} cases x {len(results)} backends, {len(report['problems'])} problems")
    return 1 if report["problems"] else 0
