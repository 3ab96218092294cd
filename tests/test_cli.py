"""The ``convlab`` command: the demo walks the chapter on every backend, and ``backends`` lists them."""

from __future__ import annotations

import subprocess
import sys


def run(*args):
    return subprocess.run([sys.executable, "-m", "convlab", *args], capture_output=True, text=True, timeout=300)


def test_demo_prints_the_chapter(backend, tmp_path):
    result = run("demo", "--backend", backend.name)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for expected in [
        f"demo on backend {backend.name}",
        "[[19. 25.]\n [37. 43.]]",
        "[[ 0.  1.  0.  0.  0. -1.  0.]",
        "epoch 10, loss 0.007",
        "kernel (3, 5), padding (0, 1), stride (3, 4) -> (2, 2)",
        "[[ 56.  72.]\n [104. 120.]]",
        "[[ 96. 128.]\n  [192. 224.]]]",
        "[[ 5.  7.]\n [13. 15.]]",
        "[[1. 0. 0. 0. 0.]\n [0. 1. 0. 0. 0.]",
        "derivative of order 3: kernel [-1.0, 3.0, -3.0, 1.0], minimum size 4",
    ]:
        assert expected in out, f"missing {expected!r} in the demo output"


def test_demo_plot(tmp_path):
    target = tmp_path / "chapter.png"
    result = run("demo", "--plot", str(target))
    assert result.returncode == 0, result.stderr
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert "pip install" in result.stdout and not target.exists()
    else:
        assert target.stat().st_size > 10_000


def test_backends_command():
    result = run("backends")
    assert result.returncode == 0 and "numpy" in result.stdout


def test_unknown_backend_is_a_clear_error():
    result = run("demo", "--backend", "theano")
    assert result.returncode == 2 and "unknown backend 'theano'" in result.stderr and "Traceback" not in result.stderr
