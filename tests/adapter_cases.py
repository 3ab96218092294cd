"""The cases every backend's tests run (tests/test_backend_contract.py, tests/test_gradients.py,
tests/backends/test_<name>.py), and ids.

Convolution (X shape, K shape, stride, padding, dilation): symmetric, asymmetric, strided "same", dilation with
stride, one channel in and several out. Pooling (window, stride, padding, mode, count_include_pad): the branches
each adapter listed for its own pool2d, together. Bad input: what every backend refuses before its framework runs.
"""

import numpy as np

import convlab as cl

CONV_CASES = [
    ((1, 1, 6, 7), (1, 1, 2, 3), 1, 0, 1),
    ((2, 3, 7, 7), (4, 3, 3, 3), 2, 1, 1),
    ((1, 2, 8, 9), (3, 2, 2, 3), (2, 3), ((0, 2), (1, 0)), (2, 1)),
    ((1, 2, 7, 6), (2, 2, 3, 2), 3, "same", 1),
    ((2, 1, 9, 9), (1, 1, 3, 3), 2, "valid", 2),
    ((1, 1, 6, 6), (3, 1, 2, 2), 1, ((1, 0), (0, 1)), 1),
    ((1, 2, 6, 6), (2, 2, 4, 4), 2, "same", 1),  # even kernel: odd extra pad at the bottom/right
    ((1, 2, 5, 5), (2, 2, 3, 3), 1, (2, 1), (2, 2)),
    ((2, 3, 9, 10), (2, 3, 3, 2), (3, 2), ((2, 1), (0, 3)), (2, 3)),
]
CONV_IDS = [f"x{c[0]}-k{c[1]}-s{c[2]}-p{c[3]}-d{c[4]}" for c in CONV_CASES]


def pool_ids(cases):
    """Ids for (window, stride, padding, mode, count_include_pad) cases."""
    return [f"{c[3]}-w{c[0]}-s{c[1]}-p{c[2]}-inc{c[4]}" for c in cases]


# (window, stride, padding, mode, count_include_pad): the branches every adapter listed for its own pool2d
POOL_CASES = [
    ((2, 2), 2, 0, "max", True),
    ((3, 3), 2, 1, "max", True),
    ((3, 2), 1, ((0, 1), (1, 0)), "max", True),
    ((3, 3), 1, 2, "max", True),
    ((2, 2), 2, 0, "avg", True),
    ((2, 2), 1, 1, "avg", True),
    ((2, 2), 1, ((1, 0), (0, 1)), "avg", True),
    ((3, 3), 2, 1, "avg", True),
    ((3, 3), 2, 1, "avg", False),
    ((3, 3), 1, 1, "avg", False),
    ((3, 3), 2, "same", "avg", False),
    ((2, 3), (1, 2), ((1, 0), (0, 2)), "avg", True),
    ((2, 3), (1, 2), ((1, 0), (0, 2)), "avg", False),
    ((2, 4), (1, 2), ((1, 0), (0, 2)), "avg", False),
    ((2, 4), (2, 1), ((1, 1), (0, 3)), "avg", True),
    ((3, 3), 1, 2, "avg", False),
] + [  # all three modes on one list of windows, strides and paddings
    (window, stride, padding, mode, count_include_pad)
    for window, stride, padding in [
        ((2, 2), 2, 0),
        ((3, 3), 1, 1),
        ((2, 3), (1, 2), (1, 0)),
        ((3, 3), 2, ((0, 2), (1, 0))),
        ((3, 3), 1, ((2, 0), (0, 2))),  # the largest pads convlab allows
        ((3, 3), 2, "same"),
    ]
    for mode, count_include_pad in [("max", True), ("avg", True), ("avg", False)]
]
POOL_IDS = pool_ids(POOL_CASES)


#: (name, function of (X, K), X shape, K shape) for every public op that computes: the adapters run them
#: through their native gradient checkers (torch.autograd.gradcheck, tf.test.compute_gradient) and graphs
EVERY_OP = [
    ("conv2d", lambda X, K: cl.conv2d(X, K, stride=2, padding="same"), (1, 2, 7, 6), (3, 2, 2, 3)),
    ("conv2d dilated", lambda X, K: cl.conv2d(X, K, padding=((0, 2), (1, 0)), dilation=2), (1, 2, 6, 6), (2, 2, 2, 2)),
    (
        "conv2d dilated strided",
        lambda X, K: cl.conv2d(X, K, stride=(2, 1), padding=((0, 2), (1, 0)), dilation=2),
        (1, 2, 7, 6),
        (2, 2, 2, 2),
    ),
    (
        "conv2d channels_last",
        lambda X, K: cl.conv2d(X, K, stride=(1, 2), padding=1, data_format="channels_last"),
        (2, 5, 6, 2),
        (3, 3, 2, 3),
    ),
    ("corr2d", cl.corr2d, (5, 6), (2, 3)),
    ("corr2d_multi_in", cl.corr2d_multi_in, (2, 5, 5), (2, 2, 2)),
    ("corr2d_multi_in_out", cl.corr2d_multi_in_out, (2, 5, 5), (3, 2, 2, 2)),
    ("corr2d_multi_in_out_1x1", cl.corr2d_multi_in_out_1x1, (2, 4, 5), (3, 2, 1, 1)),
    ("corr2d_matmul", lambda X, K: cl.corr2d_matmul(X, K, stride=2, padding=1), (5, 6), (2, 2)),
    ("conv_matrix", lambda X, K: cl.conv_matrix(K, (4, 5), padding=1) * X[0, 0], (5, 6), (2, 2)),
    ("max pool", lambda X, K: cl.pool2d(X * K[0], 3, "max", 2, ((0, 1), (1, 0))), (2, 6, 7), (1,)),
    ("avg pool", lambda X, K: cl.pool2d(X * K[0], 3, "avg", 1, 2, False), (2, 5, 5), (1,)),
    # a power-of-two window: XLA's SAME average rounds 1 / count first, which is exact only for those
    ("avg pool same", lambda X, K: cl.pool2d(X * K[0], 2, "avg", 2, "same", False), (2, 5, 5), (1,)),
    ("avg pool asymmetric", lambda X, K: cl.pool2d(X * K[0], 2, "avg", 1, ((1, 0), (0, 1)), False), (5, 5), (1,)),
    ("avg pool padded zeros", lambda X, K: cl.pool2d(X * K[0], 2, "avg", 2, 1), (1, 2, 5, 5), (1,)),
    (
        "conv2d_vjp",
        lambda X, K: cl.conv2d_vjp(
            X, K, np.ones((1, 3, 2, 2), np.float32), stride=2, padding=((0, 1), (1, 0)), dilation=2
        ),
        (1, 2, 5, 5),
        (3, 2, 2, 2),
    ),
]
EVERY_OP_IDS = [op[0] for op in EVERY_OP]


def _with(fn, **options):
    def call(*tensors):
        return fn(*tensors, **options)

    return call


#: Bad input every backend refuses with a ConvlabError before any framework code runs: (what, a call of the
#: tensors, the tensors' shapes, error class, a fragment of the message). tests/test_backend_contract.py runs
#: them on each backend's float32 tensors; the JAX tests again under jit, the MXNet tests check that nothing
#: was left in MXNet's queue to fail later.
BAD_INPUT = [
    ("rank-5 X", cl.conv2d, [(1, 1, 1, 5, 5), (1, 1, 3, 3)], cl.ConvlabValueError, "X must be 2-D"),
    ("rank-1 X", cl.conv2d, [(6,), (3, 2, 3, 3)], cl.ConvlabValueError, "X must be 2-D"),
    ("rank-3 K", cl.conv2d, [(1, 2, 5, 5), (2, 3, 3)], cl.ConvlabValueError, "K must be 4-D"),
    ("channels", cl.conv2d, [(1, 2, 5, 5), (1, 3, 3, 3)], cl.ConvlabValueError, "input channels"),
    ("bias shape", cl.conv2d, [(1, 2, 6, 6), (3, 2, 3, 3), (2,)], cl.ConvlabValueError, "bias"),
    ("stride 0", _with(cl.conv2d, stride=0), [(4, 4), (2, 2)], cl.ConvlabValueError, "stride"),
    ("negative pad", _with(cl.conv2d, padding=-1), [(4, 4), (2, 2)], cl.ConvlabValueError, "negative"),
    ("kernel larger than input", cl.corr2d, [(2, 2), (3, 3)], cl.ConvlabValueError, "larger"),
    ("corr2d 3-D X", cl.corr2d, [(1, 5, 5), (2, 2)], cl.ConvlabValueError, "needs a 2-D X"),
    ("corr2d 3-D K", cl.corr2d, [(4, 4), (1, 2, 2)], cl.ConvlabValueError, "2-D"),
    ("pool 1-D X", _with(cl.pool2d, pool_size=2), [(5,)], cl.ConvlabValueError, "X must be 2-D"),
    ("pool 5-D X", _with(cl.pool2d, pool_size=2), [(1, 1, 1, 4, 4)], cl.ConvlabValueError, "X must be"),
    ("pool mode", _with(cl.pool2d, pool_size=2, mode="median"), [(4, 4)], cl.ConvlabValueError, "mode"),
    ("vjp dY 2-D", cl.conv2d_vjp, [(5, 5), (2, 2), (3, 3)], cl.ConvlabValueError, "dY must"),
    ("vjp dY 4-D", cl.conv2d_vjp, [(1, 2, 6, 6), (3, 2, 3, 3), (1, 3, 3, 3)], cl.ConvlabValueError, "dY"),
]
