"""One backend's results for the case list, and the ``.npz`` bundles that carry them between environments."""

from __future__ import annotations

import io
import json
import os
import platform
import zipfile
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, cast

import numpy as np

import convlab as cl
from convlab.errors import ConvlabValueError
from convlab.registry import get_backend
from convlab.testing.cases import CASES, CASES_VERSION, Case, fingerprint
from convlab.testing.operations import NotApplicable, run_case


@dataclass
class Results:
    """One backend's outputs for the case list, and where they came from."""

    backend: str
    meta: dict
    outputs: Dict[str, List[np.ndarray]] = field(default_factory=dict)
    not_applicable: Dict[str, str] = field(default_factory=dict)
    errors: Dict[str, str] = field(default_factory=dict)
    label: str = ""  # how tables name these results: the backend, or backend, version and bundle when that repeats

    @property
    def name(self) -> str:
        return self.label or self.backend


def run_cases(
    backend_name: str, cases: Sequence[Case] = CASES, progress: Optional[Callable[[str], None]] = None
) -> Results:
    """Run every case on one backend (with TF32 off and deterministic algorithms on)."""
    backend = get_backend(backend_name)
    settings = backend.equivalence_settings()
    meta = {
        "fingerprint": fingerprint(cases),
        "cases_version": CASES_VERSION,
        "backend": backend.name,
        "framework_version": backend.version(),
        "convlab_version": cl.__version__,
        "numpy_version": np.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "precision_settings": settings,
    }
    results = Results(backend.name, meta)
    for case in cases:
        try:
            results.outputs[case.id] = run_case(case, backend)
        except NotApplicable as reason:
            results.not_applicable[case.id] = str(reason)
        except Exception as error:  # a backend that raises on a valid case fails that case, visibly
            results.errors[case.id] = f"{type(error).__name__}: {error}"
        if progress:
            progress(case.id)
    return results


def save_bundle(path: str, results: Iterable[Results]) -> None:
    """Write results to an ``.npz`` bundle: numeric arrays plus one JSON string of metadata (no pickles)."""
    arrays: Dict[str, np.ndarray] = {}
    meta = {}
    for result in results:
        meta[result.backend] = {**result.meta, "not_applicable": result.not_applicable, "errors": result.errors}
        for case_id, outputs in result.outputs.items():
            for index, output in enumerate(outputs):
                arrays[f"{result.backend}|{case_id}|{index}"] = np.asarray(output)
    arrays["__meta__"] = np.asarray(json.dumps({"fingerprint": fingerprint(), "backends": meta}))
    with open(path, "wb") as handle:
        np.savez_compressed(handle, **cast(Dict[str, Any], arrays))


def load_bundle(path: str) -> List[Results]:
    """Read a bundle written by :func:`save_bundle`, refusing corrupt, pickled or stale files clearly."""
    try:
        with open(path, "rb") as handle:
            data = handle.read()
        if not data.startswith(b"PK"):  # an .npz is a zip archive; anything else (a raw pickle, say) is refused unread
            raise ConvlabValueError(f"bundle {path}: not an .npz bundle (corrupt, truncated, or another format)")
        archive = np.load(io.BytesIO(data), allow_pickle=False)
        names = list(archive.files)
        if "__meta__" not in names:
            raise ConvlabValueError(f"bundle {path}: not a convlab bundle (no __meta__ entry)")
        meta = json.loads(str(archive["__meta__"][()]))
        arrays = {name: archive[name] for name in names if name != "__meta__"}
    except ConvlabValueError:
        raise
    except FileNotFoundError:
        raise ConvlabValueError(f"bundle {path}: no such file (did its tests-<backend> session run?)") from None
    except ValueError as error:
        if "allow_pickle" in str(error) or "pickled" in str(error).lower():
            raise ConvlabValueError(f"bundle {path}: holds pickled objects, which convlab never loads") from None
        raise ConvlabValueError(f"bundle {path}: unreadable ({error})") from None
    except (OSError, zipfile.BadZipFile, EOFError, KeyError, json.JSONDecodeError, TypeError) as error:
        raise ConvlabValueError(f"bundle {path}: corrupt or truncated ({type(error).__name__}: {error})") from None
    if not isinstance(meta, dict) or meta.get("fingerprint") != fingerprint():
        found = meta.get("fingerprint") if isinstance(meta, dict) else None
        raise ConvlabValueError(
            f"bundle {path}: made from a different case list (fingerprint {found}, this convlab has "
            f"{fingerprint()}); re-run its tests-<backend> session"
        )
    loaded = []
    for backend, backend_meta in meta.get("backends", {}).items():
        result = Results(
            backend,
            backend_meta,
            not_applicable=dict(backend_meta.get("not_applicable", {})),
            errors=dict(backend_meta.get("errors", {})),
        )
        result.meta["bundle"] = os.path.basename(path)
        loaded.append(result)
    by_name = {result.backend: result for result in loaded}
    for key, array in arrays.items():
        backend, _, rest = key.partition("|")
        case_id, _, index = rest.rpartition("|")
        if backend not in by_name or not index.isdigit() or array.dtype.kind not in "fiu":
            raise ConvlabValueError(f"bundle {path}: unexpected entry {key!r} ({array.dtype})")
        outputs: List[Any] = by_name[backend].outputs.setdefault(case_id, [])
        outputs.extend([None] * (int(index) + 1 - len(outputs)))
        outputs[int(index)] = array
    return loaded
