"""Scripts that a distributed test runs in a subprocess of its own (device counts, ranks, logical CPUs)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def run_script(name: str, *args, env=None) -> None:
    """Run this folder's script ``name`` with ``args`` (as strings) in this Python; fail with its stderr's end."""
    command = [sys.executable, str(Path(__file__).with_name(name)), *map(str, args)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
