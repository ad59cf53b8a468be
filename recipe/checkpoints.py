"""Training checkpoints, one layout for both loops: a MindSpore .ckpt written by `convert`'s
numpy writer under a temporary name (a kill never leaves a torn one), holding the parameters
and BatchNorm statistics under the MindSpore twin's names, the momentum buffers as
`moments.NAME`, `global_step` and, with dynamic loss scaling, `scale_sense` = [scale, counter].
Either framework resumes the other's checkpoint as its own: the hand-off needs no conversion.
"""
from __future__ import annotations

import glob
import os
import sys

import numpy as np

from convert.checkpoints import check_recorded, resolve, variant_record
from convert.errors import I3DError
from convert.fileio import atomic_output
from convert.formats import READERS, WRITERS, detect

HEAD_PREFIXES = ("Logits.", "fc.", "norm.")  # the classifier's tensors, in either network


def checkpoints(folder: str) -> list:
    return sorted(glob.glob(os.path.join(folder, "step_*.ckpt")))


def save(state: dict, folder: str, step: int, keep: int, variant, framework: str) -> str:
    """Written whole or not at all, its variant recorded as `i3d convert` records it (so that
    converting or predicting with it never runs it as another); only the last `keep` are
    kept."""
    path = os.path.join(folder, f"step_{step:08d}.ckpt")
    with atomic_output(path, force=True) as tmp:
        WRITERS["mindspore"](state, tmp, variant_record(variant, f"i3d train --framework {framework}"))
    for old in checkpoints(folder)[:-keep] if keep > 0 else []:
        os.remove(old)
    return path


def latest(folder: str, variant) -> tuple:
    """(entries, path) of the newest intact checkpoint, for `--resume`: a torn or unreadable
    newer one is skipped (said on stderr); one of another variant is refused."""
    found = checkpoints(folder)
    if not found:
        raise I3DError(f"--resume: no checkpoint in {folder}")
    for path in reversed(found):
        try:
            flat, meta = READERS["mindspore"](path)
        except I3DError as e:
            print(f"i3d: note: skipping {e}", file=sys.stderr)
            continue
        why = _not_training(flat)
        if why:
            print(f"i3d: note: skipping {path}: {why}", file=sys.stderr)
            continue
        check_recorded(meta, variant, path)
        return flat, path
    raise I3DError(f"--resume: no intact checkpoint in {folder} ({len(found)} unreadable)")


def _not_training(flat: dict) -> str | None:
    """Why `flat` is not a training checkpoint of this tool's layout (None if it is)."""
    step = flat.get("global_step")
    if step is None:
        return "not a training checkpoint (no global_step)"
    if np.shape(step) != (1,) or not np.issubdtype(np.asarray(step).dtype, np.integer) \
            or int(step[0]) < 0:
        return f"global_step is not one step number (shape {np.shape(step)})"
    if "scale_sense" in flat and np.shape(flat["scale_sense"]) != (2,):
        return f"scale_sense is not [scale, counter] (shape {np.shape(flat['scale_sense'])})"
    return None


def training_state(source: str, variant) -> dict | None:
    """The entries of `source` if it is a training checkpoint of either loop (its variant
    checked against `variant`), None if it is some other weight file."""
    path = resolve(source)
    if detect(path) != "mindspore":
        return None
    flat, meta = READERS["mindspore"](path)
    if "global_step" not in flat:
        return None
    why = _not_training(flat)
    if why:
        raise I3DError(f"{source}: {why}")
    check_recorded(meta, variant, source)
    return flat


def check(flat: dict, shapes: dict, path: str = "checkpoint"):
    """Refuses a checkpoint that lacks any of the entries `shapes` names ({name: shape}) or
    holds one of another shape, naming the first: nothing is copied from a file that does not
    fit."""
    lacking = [k for k in shapes if k not in flat]
    if lacking:
        raise I3DError(f"{path} lacks {len(lacking)} entries ({lacking[0]}, ...)")
    for k, shape in shapes.items():
        if tuple(np.shape(flat[k])) != tuple(shape):
            raise I3DError(f"{path}: {k} has shape {tuple(np.shape(flat[k]))}, the network "
                           f"{tuple(shape)}")
