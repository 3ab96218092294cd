"""The ``convlab`` command ends quietly when its reader leaves early (``convlab demo | head``).

The convention (convlab/cli.py): no traceback, the rest of the output goes to /dev/null, and the exit
status is 141 (128 + SIGPIPE), as the shell reports for ``seq``, ``cat`` or ``yes`` in the same place.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from convlab.cli import EXIT_OUTPUT_CUT

COMMANDS = [
    ["demo"],
    ["backends"],
    ["compare", "--backends", "numpy"],
    ["explain", "conv", "--input", "8x8", "--kernel", "3", "--stride", "2", "--padding", "same"],
]
IDS = ["demo", "backends", "compare", "explain"]


def _quiet(stderr: str) -> bool:
    return "Traceback" not in stderr and "BrokenPipeError" not in stderr and "Exception ignored" not in stderr


@pytest.mark.parametrize("args", COMMANDS, ids=IDS)
def test_reader_gone_before_the_first_line(args):
    """Standard output is a pipe whose reader has already closed: every write fails with EPIPE."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        process = subprocess.Popen(
            [sys.executable, "-m", "convlab", *args],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "CONVLAB_BACKEND": "numpy"},
        )
    finally:
        os.close(write_end)
    _, stderr = process.communicate(timeout=600)
    assert process.returncode == EXIT_OUTPUT_CUT == 141, stderr
    assert _quiet(stderr), stderr


@pytest.mark.parametrize("args", COMMANDS[:3], ids=IDS[:3])
def test_reader_leaves_after_the_first_line(args):
    """``convlab ... | head -n 1``: the reader takes one line and closes the pipe."""
    process = subprocess.Popen(
        [sys.executable, "-u", "-m", "convlab", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "CONVLAB_BACKEND": "numpy"},
    )
    first = process.stdout.readline()
    process.stdout.close()
    stderr = process.stderr.read().decode()
    process.wait(timeout=600)
    assert first.strip(), stderr
    # 141 when convlab wrote after the reader left; 0 when it had written everything before
    assert process.returncode in (0, EXIT_OUTPUT_CUT), stderr
    assert _quiet(stderr), stderr


@pytest.mark.skipif(shutil.which("bash") is None or shutil.which("head") is None, reason="needs bash and head")
def test_demo_piped_to_head():
    script = f'set -o pipefail; "{sys.executable}" -m convlab demo | head -n 2; echo "status ${{PIPESTATUS[0]}}"'
    result = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=600)
    lines = result.stdout.splitlines()
    assert len(lines) == 3 and lines[-1] in ("status 0", f"status {EXIT_OUTPUT_CUT}"), result.stdout
    assert _quiet(result.stderr), result.stderr
