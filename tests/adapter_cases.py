"""The convolution cases every adapter's own tests run (tests/backends/test_<name>.py), and their test ids.

(X shape, K shape, stride, padding, dilation): symmetric, asymmetric, strided "same", dilation with stride,
one channel in and several out. Pooling cases differ per adapter (each lists its own branches), their ids not.
"""

CONV_CASES = [
    ((1, 1, 6, 7), (1, 1, 2, 3), 1, 0, 1),
    ((2, 3, 7, 7), (4, 3, 3, 3), 2, 1, 1),
    ((1, 2, 8, 9), (3, 2, 2, 3), (2, 3), ((0, 2), (1, 0)), (2, 1)),
    ((1, 2, 7, 6), (2, 2, 3, 2), 3, "same", 1),
    ((2, 1, 9, 9), (1, 1, 3, 3), 2, "valid", 2),
    ((1, 1, 6, 6), (3, 1, 2, 2), 1, ((1, 0), (0, 1)), 1),
    ((1, 2, 6, 6), (2, 2, 4, 4), 2, "same", 1),
    ((1, 2, 5, 5), (2, 2, 3, 3), 1, (2, 1), (2, 2)),
    ((2, 3, 9, 10), (2, 3, 3, 2), (3, 2), ((2, 1), (0, 3)), (2, 3)),
]
CONV_IDS = [f"x{c[0]}-k{c[1]}-s{c[2]}-p{c[3]}-d{c[4]}" for c in CONV_CASES]


def pool_ids(cases):
    """Ids for (window, stride, padding, mode, count_include_pad) cases."""
    return [f"{c[3]}-w{c[0]}-s{c[1]}-p{c[2]}-inc{c[4]}" for c in cases]
