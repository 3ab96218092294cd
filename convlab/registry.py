"""Which backend runs a call: the registry and the selection rules.

Precedence (DESIGN.md section 2): ``backend=`` on the call; else the framework of
the tensors among the inputs; else the innermost :func:`use_backend` scope, else
:func:`set_backend`, else ``$CONVLAB_BACKEND``, else ``"numpy"``.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import sys
from importlib import metadata
from typing import Any, Callable, Dict, Iterator, Optional, Union

import numpy as np

from convlab.backend import Backend
from convlab.errors import BackendNotAvailableError, ConvlabTypeError

ENTRY_POINT_GROUP = "convlab.backends"

#: where to get the backends convlab knows about, for the error message
KNOWN_PACKAGES = {
    "numpy": "convlab",
    "torch": "convlab-torch (pip install ./backends/torch)",
    "tensorflow": "convlab-tensorflow (pip install ./backends/tensorflow)",
    "jax": "convlab-jax (pip install ./backends/jax)",
    "mxnet": "convlab-mxnet (pip install ./backends/mxnet, in an environment with numpy<1.24)",
}

_factories: Dict[str, Callable[[], Backend]] = {}
_instances: Dict[str, Backend] = {}
_by_type: Dict[type, Optional[Backend]] = {}
_entry_points_loaded = False
_scoped: contextvars.ContextVar[Optional[str]] = contextvars.ContextVar("convlab_backend", default=None)
_global_default: Optional[str] = None

_NEUTRAL_TYPES = (np.ndarray, np.generic, list, tuple, int, float, bool)


def register_backend(name: str, factory: Callable[[], Backend]) -> None:
    """Register (or replace) a backend under ``name``; ``factory()`` returns a :class:`Backend`.

    Example:
        >>> import convlab as cl
        >>> from convlab.numpy_backend import NumpyBackend
        >>> cl.register_backend("numpy2", NumpyBackend)
        >>> cl.corr2d([[1, 2], [3, 4]], [[1]], backend="numpy2").tolist()
        [[1.0, 2.0], [3.0, 4.0]]
    """
    if not isinstance(name, str) or not name:
        raise ConvlabTypeError(f"name must be a non-empty string, got {name!r}")
    if not callable(factory):
        raise ConvlabTypeError(f"factory must be callable, got {factory!r}")
    _load_entry_points()
    _factories[name] = factory
    _instances.pop(name, None)
    _by_type.clear()
    from convlab.ops import _PLANS

    _PLANS.clear()


def _load_entry_points() -> None:
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    for entry_point in metadata.entry_points(group=ENTRY_POINT_GROUP):
        _factories.setdefault(entry_point.name, entry_point)
    # The reference backend is always there, even when the distribution metadata is not (a source checkout).
    from convlab.numpy_backend import NumpyBackend

    _factories.setdefault("numpy", NumpyBackend)


def get_backend(name: str) -> Backend:
    """The backend instance registered as ``name``; imports its framework on first use."""
    backend = _instances.get(name)
    if backend is not None:
        return backend
    _load_entry_points()
    if not isinstance(name, str):
        raise ConvlabTypeError(f"backend must be a name (str) such as 'torch', got {name!r}")
    factory = _factories.get(name)
    if factory is None:
        hint = KNOWN_PACKAGES.get(name)
        if hint:
            raise BackendNotAvailableError(f"backend {name!r} is not installed: install {hint}")
        raise BackendNotAvailableError(f"unknown backend {name!r}; installed backends: {sorted(_factories)}")
    try:
        if isinstance(factory, metadata.EntryPoint):
            factory = _factories[name] = factory.load()
        made = factory()
        # A factory may be the class itself or a function returning a class or an instance.
        backend = made() if isinstance(made, type) else made
        backend.version()  # imports the framework: fail here, with the package to install
    except ImportError as error:
        hint = KNOWN_PACKAGES.get(name, f"the framework of backend {name!r}")
        raise BackendNotAvailableError(
            f"backend {name!r} cannot import its framework ({error}); install {hint}"
        ) from error
    _instances[name] = backend
    return backend


def backends() -> Dict[str, str]:
    """Installed backends and their framework versions (``"unavailable: ..."`` if one fails to import).

    Example:
        >>> import convlab as cl
        >>> "numpy" in cl.backends()
        True
    """
    _load_entry_points()
    found = {}
    for name in sorted(_factories):
        try:
            found[name] = get_backend(name).version()
        except BackendNotAvailableError as error:
            found[name] = f"unavailable: {error}"
    return found


def default_backend_name() -> str:
    """The backend for backend-neutral inputs: use_backend scope, set_backend, $CONVLAB_BACKEND, numpy."""
    return _scoped.get() or _global_default or os.environ.get("CONVLAB_BACKEND") or "numpy"


def set_backend(name: Optional[str]) -> None:
    """Set the process-wide default backend for NumPy arrays and lists (``None`` resets it).

    Example:
        >>> import convlab as cl
        >>> cl.set_backend("numpy")
        >>> cl.set_backend(None)
    """
    global _global_default
    if name is not None:
        get_backend(name)
    _global_default = name


@contextlib.contextmanager
def use_backend(name: str) -> Iterator[Backend]:
    """Within the ``with`` block (this thread or asyncio task only), neutral inputs run on ``name``.

    Example:
        >>> import convlab as cl
        >>> with cl.use_backend("numpy"):
        ...     cl.corr2d([[0, 1], [2, 3]], [[1]]).shape
        (2, 2)
    """
    backend = get_backend(name)
    token = _scoped.set(name)
    try:
        yield backend
    finally:
        _scoped.reset(token)


def backend_of(x: Any) -> Optional[Backend]:
    """The backend owning tensor ``x``, or None for backend-neutral values (cached per type)."""
    kind = type(x)
    try:
        return _by_type[kind]
    except KeyError:
        pass
    owner = None
    if not isinstance(x, _NEUTRAL_TYPES):
        _load_entry_points()
        for name, factory in list(_factories.items()):
            if name == "numpy":
                continue
            modules = _framework_modules(name, factory)
            if modules is not None and not any(m in sys.modules for m in modules):
                continue  # that framework is not even imported: x cannot be one of its tensors
            try:
                backend = get_backend(name)
            except BackendNotAvailableError:
                continue
            if backend.is_tensor(x):
                owner = backend
                break
        root = kind.__module__.split(".")[0] if owner is None else ""
        if root in ("torch", "tensorflow", "keras", "jax", "jaxlib", "mxnet"):
            framework = "tensorflow" if root == "keras" else "jax" if root == "jaxlib" else root
            raise BackendNotAvailableError(
                f"got a {kind.__module__}.{kind.__name__} but no convlab backend for it is installed: "
                f"install {KNOWN_PACKAGES[framework]}"
            )
    _by_type[kind] = owner
    return owner


def _framework_modules(name: str, factory: Callable[[], Any]) -> Optional[tuple]:
    """The modules a backend's tensors come from, without importing its framework."""
    if name in _instances:
        return _instances[name].framework_modules
    if isinstance(factory, metadata.EntryPoint):
        factory = factory.load()  # imports the adapter module only: adapters import frameworks lazily
        _factories[name] = factory
    return getattr(factory, "framework_modules", None)


def select_backend(inputs: tuple, names: tuple, backend: Union[str, Backend, None]) -> Backend:
    """Pick the backend for one call; ``names`` name the ``inputs`` for error messages."""
    owner = None
    owner_arg = None
    for arg_name, x in zip(names, inputs):
        if x is None or type(x) in _NEUTRAL_TYPES:
            continue
        found = backend_of(x)
        if found is None:
            continue
        if owner is None:
            owner, owner_arg = found, arg_name
        elif found is not owner:
            raise ConvlabTypeError(
                f"{owner_arg} is a {owner.name} tensor but {arg_name} is a {found.name} tensor: convlab never "
                f"converts a framework tensor silently; convert one of them yourself"
            )
    if backend is not None:
        chosen = backend if isinstance(backend, Backend) else get_backend(backend)
        if owner is not None and owner is not chosen:
            raise ConvlabTypeError(
                f"backend={chosen.name!r} was asked for but {owner_arg} is a {owner.name} tensor: convlab never "
                f"converts a framework tensor silently"
            )
        return chosen
    if owner is not None:
        return owner
    return get_backend(default_backend_name())
