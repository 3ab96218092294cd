"""The loop that count.sh runs under callgrind: one statement ``N`` times, after 50 warm-up calls.

    python loop.py CASE N      # prints "ready", waits for a line on stdin, then runs the loop inside exec()

count.sh turns callgrind's instrumentation on after "ready" and counts only inside ``exec`` (the loop), so
imports and warm-up are left out. The cases: torch, 1x1x8x8 * 3x3, and the book's functions on 8x8.
"""

import sys

import torch
import torch.nn.functional as F  # noqa: F401 (used by the statements)

import convlab as cl  # noqa: F401

torch.set_num_threads(1)
x, k = torch.randn(1, 1, 8, 8), torch.randn(1, 1, 3, 3)
X2, K2 = torch.randn(2, 8, 8), torch.randn(2, 3, 3)
K4 = K2.reshape(1, 2, 3, 3)
CASES = {
    "F": "F.conv2d(x, k)",
    "tc": "torch.conv2d(x, k)",
    "cl": "cl.conv2d(x, k)",
    "clb": "cl.conv2d(x, k, backend='torch')",
    "mi": "cl.corr2d_multi_in(X2, K2)",
    "mi4": "cl.conv2d(X2, K4)",
    "c3": "torch.conv2d(X2, K4)",
}
statement, n = CASES[sys.argv[1]], int(sys.argv[2])
loop = compile(f"for _ in range({n}):\n    {statement}\n", "loop", "exec")
for _ in range(50):
    eval(statement)
print("ready", flush=True)
sys.stdin.readline()
exec(loop)
