"""Checking that backends agree: the rule of DESIGN.md section 4 as helpers, and the canonical case list.

Two tiers:

* exact: integer-valued inputs whose partial sums stay below 2**24, max pooling, and average pooling
  with a power-of-two divisor must give bit-identical results on every backend;
* bounded: every other output element y must satisfy
  ``|y - y_ref| <= c * n * u * (|X| (*) |K|)`` with y_ref the float64 NumPy reference, ``(|X| (*) |K|)``
  the same operation on absolute values, n the number of products summed per element, u the unit
  roundoff of the dtype (2**-24 float32, 2**-53 float64) and c = 2.

Two backends agree on a bounded case when they differ by at most the sum of their two bounds.

Example:
    >>> import numpy as np, convlab as cl
    >>> from convlab import testing
    >>> X, K = np.random.default_rng(0).normal(size=(2, 3, 8, 8)), np.ones((4, 3, 3, 3))
    >>> y = cl.conv2d(X.astype(np.float32), K.astype(np.float32), padding="same")
    >>> testing.assert_close_to_reference(y, X, K, padding="same")

The package: :mod:`~convlab.testing.bounds` (the rule: one bound function per kind of operation, the checks),
:mod:`~convlab.testing.asserts` (the public asserts), :mod:`~convlab.testing.cases` (the case list, as data),
:mod:`~convlab.testing.operations` (op name -> run and reference), :mod:`~convlab.testing.bundles` (results
and their ``.npz`` files), :mod:`~convlab.testing.report` (judging, the table, ``convlab compare``).
"""

from convlab.testing.asserts import assert_backends_agree, assert_close_to_reference
from convlab.testing.bounds import (
    EXACT_LIMIT,
    UNIT_ROUNDOFF,
    C,
    conv2d_bound,
    conv_bound,
    conv_vjp_bounds,
    pool_bound,
)
from convlab.testing.bounds import (
    _check_nonfinite as _check_nonfinite,  # the tests check the mask rule directly
)
from convlab.testing.bundles import Results, load_bundle, run_cases, save_bundle
from convlab.testing.cases import CASES, CASES_BY_ID, CASES_VERSION, Case, fingerprint, make_inputs
from convlab.testing.operations import OPERATIONS, NotApplicable, Operation, pool2d_vjp, reference_case, run_case
from convlab.testing.report import Verdict, compare, compare_command, format_table, judge, judge_pair

_pool2d_vjp_reference = pool2d_vjp  # the name the tests used before the package

__all__ = [
    "C",
    "CASES",
    "CASES_BY_ID",
    "CASES_VERSION",
    "EXACT_LIMIT",
    "OPERATIONS",
    "UNIT_ROUNDOFF",
    "Case",
    "NotApplicable",
    "Operation",
    "Results",
    "Verdict",
    "assert_backends_agree",
    "assert_close_to_reference",
    "compare",
    "compare_command",
    "conv2d_bound",
    "conv_bound",
    "conv_vjp_bounds",
    "fingerprint",
    "format_table",
    "judge",
    "judge_pair",
    "load_bundle",
    "make_inputs",
    "pool2d_vjp",
    "pool_bound",
    "reference_case",
    "run_case",
    "run_cases",
    "save_bundle",
]
