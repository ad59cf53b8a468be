"""Canonical weights `{unit name: {param: np.ndarray}}` and their move to and from each naming
scheme. Pure numpy: the layouts a scheme declares in `convert.names` are applied here, and
nowhere else."""
from __future__ import annotations

import hashlib

import numpy as np

from . import names
from .architecture import units
from .errors import I3DError

_TO_OIDHW, _TO_DHWIO = (4, 3, 0, 1, 2), (2, 3, 4, 1, 0)


def expected_shape(unit, param) -> tuple:
    return (unit.cout, unit.cin, *unit.kernel) if param == "w" else (unit.cout,)


def num_classes(weights: dict) -> int:
    return int(weights[units()[-1].name]["w"].shape[0])


def has_bn_scale(weights: dict) -> bool:
    return any("gamma" in p for p in weights.values())


def to_canonical(a: np.ndarray, scheme: str, param: str) -> np.ndarray:
    """One tensor as `scheme` stores it -> its canonical layout (OIDHW kernels, flat vectors).
    Shapes are not checked here (`from_scheme` does)."""
    a = np.asarray(a)
    if param != "w":
        return a.reshape(-1)
    if names.scheme(scheme).kernel == names.DHWIO and a.ndim == 5:
        return a.transpose(_TO_OIDHW)
    return a


def from_canonical(a: np.ndarray, scheme: str, param: str) -> np.ndarray:
    s = names.scheme(scheme)
    if param == "w" and s.kernel == names.DHWIO:
        return a.transpose(_TO_DHWIO)
    if param in ("mean", "var"):
        return a.reshape(s.stats_shape)
    return a


def scheme_shape(flat: dict, scheme: str) -> tuple:
    """(number of classes or None, BN scale present) of flat weights in `scheme`, read from the
    logits kernel and from whether any gamma is there."""
    logits = flat.get(names.key(scheme, units()[-1], "w"))
    classes = None if logits is None else int(to_canonical(logits, scheme, "w").shape[0])
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
        a = to_canonical(flat[k], scheme, param)
        shape = expected_shape(unit, param)
        if a.shape != shape:
            raise I3DError(f"{source}: '{k}' has shape {tuple(np.shape(flat[k]))}, "
                           f"expected {shape} ({scheme} layout)")
        out.setdefault(unit.name, {})[param] = np.ascontiguousarray(a)
    return out


def to_scheme(weights: dict, scheme: str) -> dict:
    """Canonical weights -> {scheme key: array} in that scheme's layout."""
    classes, bn_scale = num_classes(weights), has_bn_scale(weights)
    return {k: np.ascontiguousarray(from_canonical(weights[unit.name][param], scheme, param))
            for k, (unit, param) in names.keys(scheme, classes, bn_scale).items()}


def weights_id(weights: dict) -> str:
    """A digest of the canonical weights (names and float32 bytes): equal for the same weights
    in any file format, so outputs of a converted file are known to be comparable."""
    h = hashlib.sha256()
    for unit in sorted(weights):
        for k in sorted(weights[unit]):
            h.update(f"{unit}/{k}".encode() + b"\0")
            h.update(np.ascontiguousarray(weights[unit][k], np.float32).tobytes())
    return h.hexdigest()[:16]
