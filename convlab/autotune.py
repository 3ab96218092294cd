"""Autotuning "auto": time the candidate formulations on a call's own data, once per plan.

Off by default. ``cl.set_autotune(True)`` or ``CONVLAB_AUTOTUNE=1`` turns it on (the idea of torch's
``cudnn.benchmark``): the first call of a signature runs each formulation that applies (``native``,
``shift``, ``gemm`` for convolution; ``native``, ``shift``, ``layout`` for pooling) a few times on that
call's inputs and its plan keeps the fastest. Every formulation passes the same equivalence suite, so the
choice never changes results beyond what the suite allows. What runs per call afterwards is the plan:
autotuning costs nothing after the first call of a signature.

Winners are kept in a small JSON file (like FFTW's wisdom), keyed by CPU model, backend, framework version
and call signature, so a later process skips the timing: ``$CONVLAB_AUTOTUNE_CACHE``, else
``$XDG_CACHE_HOME/convlab/autotune.json``, else ``~/.cache/convlab/autotune.json``. Set
``CONVLAB_AUTOTUNE_CACHE=off`` to keep winners in memory only; :func:`clear_autotune` (or
``convlab autotune --clear``) deletes the file. The file holds names of algorithms only, and one that is
not a known algorithm name is ignored; nothing read from it is executed.

Example:
    >>> import convlab as cl
    >>> cl.set_autotune(False)
    >>> cl.autotune_enabled()
    False
"""

from __future__ import annotations

import json
import os
import platform
import threading
import time
from typing import Any, Callable, Dict, Optional, Sequence

_enabled: Optional[bool] = None  # None: follow $CONVLAB_AUTOTUNE
_memory: Dict[str, str] = {}
_loaded_from: Optional[str] = None
_lock = threading.Lock()  # blocks of one dask graph may tune from several threads
REPEATS = 5
#: how much faster than native another formulation must time to be chosen
MARGIN = 0.05


def set_autotune(enabled: bool) -> None:
    """Turn autotuning of ``algorithm="auto"`` on or off for this process (``None``: follow the environment).

    Plans made before keep their choice; :func:`convlab.dispatch.clear_plans` drops them.
    """
    global _enabled
    if enabled is not None and not isinstance(enabled, bool):
        from convlab.errors import ConvlabTypeError

        raise ConvlabTypeError(f"enabled must be True, False or None, got {enabled!r}")
    _enabled = enabled
    from convlab import dispatch

    dispatch.clear_plans()


def autotune_enabled() -> bool:
    """Whether "auto" times its candidates: :func:`set_autotune`, else ``$CONVLAB_AUTOTUNE`` (1/true/yes/on)."""
    if _enabled is not None:
        return _enabled
    return os.environ.get("CONVLAB_AUTOTUNE", "").strip().lower() in ("1", "true", "yes", "on")


def cache_path() -> Optional[str]:
    """Where winners persist, or None when ``CONVLAB_AUTOTUNE_CACHE=off``."""
    configured = os.environ.get("CONVLAB_AUTOTUNE_CACHE")
    if configured is not None:
        return None if configured.strip().lower() in ("", "0", "off", "none") else configured
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "convlab", "autotune.json")


def clear_autotune() -> Optional[str]:
    """Forget every winner, in memory and on disk; returns the file removed (None if there was none)."""
    global _loaded_from
    _memory.clear()
    _loaded_from = None
    path = cache_path()
    if path and os.path.exists(path):
        os.remove(path)
        return path
    return None


def cpu_model() -> str:
    """The processor's model name (from /proc/cpuinfo where there is one)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _load() -> None:
    global _loaded_from
    path = cache_path()
    if path is None or _loaded_from == path:
        return
    _loaded_from = path
    try:
        with open(path, encoding="utf-8") as handle:
            stored = json.load(handle)
    except (OSError, ValueError):
        return  # no file yet, or an unreadable one: time again
    if isinstance(stored, dict) and isinstance(stored.get("winners"), dict):
        for key, value in stored["winners"].items():
            if isinstance(key, str) and isinstance(value, str):
                _memory.setdefault(key, value)


def _save() -> None:
    path = cache_path()
    if path is None:
        return
    try:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        temporary = f"{path}.{os.getpid()}.tmp"
        with open(temporary, "w", encoding="utf-8") as handle:
            json.dump({"format": 1, "winners": _memory}, handle, indent=0, sort_keys=True)
        os.replace(temporary, path)
    except OSError:
        pass  # a read-only home: winners stay in memory


def signature(backend: Any, geometry: Any, dtype: str) -> str:
    """The key of one tuning decision: CPU model, backend, framework version, geometry and dtype."""
    return f"{cpu_model()}|{backend.name}|{backend.version()}|{dtype}|{geometry!r}"


def choose(
    key: str, candidates: Dict[str, Callable[[], Any]], synchronize: Callable[[Any], Any], known: Sequence[str]
) -> Optional[str]:
    """The fastest of ``candidates`` (name -> a function running the call once), remembered under ``key``.

    Returns None when no candidate ran (every one raised: the caller keeps its rule).
    """
    _load()
    remembered = _memory.get(key)
    if remembered in candidates and remembered in known:
        return remembered
    runnable: Dict[str, Callable[[], Any]] = {}
    for name, run in candidates.items():
        try:
            synchronize(run())  # warm-up: compiles, allocates, fills caches
        except Exception:  # a formulation that cannot run here is not a candidate
            continue
        runnable[name] = run
    # interleaved rounds (order alternating), each candidate's fastest: a burst of other load on a shared machine
    # slows whichever candidate it lands on, and only the minimum is a property of the candidate
    times: Dict[str, float] = {name: float("inf") for name in runnable}
    for round_ in range(REPEATS):
        for name in list(runnable) if round_ % 2 == 0 else list(runnable)[::-1]:
            start = time.perf_counter()
            synchronize(runnable[name]())
            times[name] = min(times[name], time.perf_counter() - start)
    if "native" in times:  # another formulation replaces the framework's op only when clearly faster
        times["native"] /= 1.0 + MARGIN
    if not times:
        return None
    winner = min(times, key=times.__getitem__)
    with _lock:
        _memory[key] = winner
        _save()
    return winner
