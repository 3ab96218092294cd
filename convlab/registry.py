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
from typing import Any, Callable, Dict, Iterator, List, Optional, Union

import numpy as np

from convlab.backend import Backend
from convlab.errors import BackendNotAvailableError, ConvlabTypeError

ENTRY_POINT_GROUP = "convlab.backends"

#: top-level modules of tensor libraries: an unclaimed tensor of one is an error, never converted silently
_TENSOR_LIBRARIES = ("torch", "tensorflow", "keras", "jax", "jaxlib", "mxnet", "dask")


def install_hint(name: str) -> str:
    """What to install for backend ``name``: its distribution, by the plugin naming rule."""
    if name == "numpy":
        return "convlab"
    return f"convlab-{name} (pip install convlab-{name}, or ./backends/{name} from a source checkout)"


_factories: Dict[str, Callable[[], Any]] = {}  # registered factories, and entry points once loaded
_entry_points: Dict[str, Any] = {}  # entry points not loaded yet (importlib.metadata's or the backport's)
_listeners: List[Callable[[], Any]] = []
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
    _entry_points.pop(name, None)
    _instances.pop(name, None)
    _by_type.clear()
    for callback in _listeners:
        callback()


def on_change(callback: Callable[[], Any]) -> None:
    """Call ``callback()`` whenever a backend is registered or replaced (the dispatcher drops its plans)."""
    _listeners.append(callback)


def cached_owner(kind: type) -> Optional[Backend]:
    """The backend owning tensors of type ``kind`` if :func:`backend_of` has seen one, else None."""
    return _by_type.get(kind)


def _load_entry_points() -> None:
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    for entry_point in metadata.entry_points(group=ENTRY_POINT_GROUP):
        if entry_point.name not in _factories:
            _entry_points.setdefault(entry_point.name, entry_point)
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
    factory = _factory(name)
    try:
        made = factory()
        # A factory may be the class itself or a function returning a class or an instance.
        backend = made() if isinstance(made, type) else made
        backend.version()  # imports the framework: fail here, with the package to install
    except ImportError as error:
        package = getattr(factory, "package", "") or install_hint(name)
        raise BackendNotAvailableError(
            f"backend {name!r} cannot import its framework ({error}); install the dependencies of {package}"
        ) from error
    _instances[name] = backend
    return backend


def _factory(name: str) -> Callable[[], Any]:
    """The factory registered as ``name``, loading its entry point (the adapter module only) on first use."""
    factory = _factories.get(name)
    if factory is not None:
        return factory
    entry_point = _entry_points.get(name)
    if entry_point is None:
        if name in _TENSOR_LIBRARIES:
            raise BackendNotAvailableError(f"backend {name!r} is not installed: install {install_hint(name)}")
        raise BackendNotAvailableError(f"unknown backend {name!r}; installed backends: {names()}")
    try:
        factory = entry_point.load()
    except ImportError as error:
        distribution = getattr(getattr(entry_point, "dist", None), "name", None) or install_hint(name)
        raise BackendNotAvailableError(
            f"backend {name!r} cannot be loaded ({error}); reinstall {distribution}"
        ) from error
    _factories[name] = factory
    del _entry_points[name]
    return factory


def names() -> List[str]:
    """The names of every registered backend, installed or not yet imported."""
    _load_entry_points()
    return sorted(set(_factories) | set(_entry_points))


def backends() -> Dict[str, str]:
    """Installed backends and their framework versions (``"unavailable: ..."`` if one fails to import).

    Example:
        >>> import convlab as cl
        >>> "numpy" in cl.backends()
        True
    """
    found = {}
    for name in names():
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
        for name in names():
            if name == "numpy":
                continue
            try:
                modules = getattr(_factory(name), "framework_modules", None)
                if modules is not None and not any(m in sys.modules for m in modules):
                    continue  # that framework is not even imported: x cannot be one of its tensors
                backend = get_backend(name)
            except BackendNotAvailableError:
                continue
            if backend.is_tensor(x):
                owner = backend
                break
        root = kind.__module__.split(".")[0]
        if owner is None and root in _TENSOR_LIBRARIES:
            framework = {"keras": "tensorflow", "jaxlib": "jax"}.get(root, root)
            raise BackendNotAvailableError(
                f"got a {kind.__module__}.{kind.__name__} but no convlab backend for it is installed: "
                f"install {install_hint(framework)}"
            )
    _by_type[kind] = owner
    return owner


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
