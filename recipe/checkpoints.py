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

from convert.checkpoints import check_recorded, variant_record
from convert.errors import I3DError
from convert.fileio import atomic_output
from convert.formats import READERS, WRITERS


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
        if "global_step" not in flat:
            print(f"i3d: note: skipping {path}: not a training checkpoint (no global_step)",
                  file=sys.stderr)
            continue
        check_recorded(meta, variant, path)
        return flat, path
    raise I3DError(f"--resume: no intact checkpoint in {folder} ({len(found)} unreadable)")


def missing(flat: dict, wanted, path: str = "checkpoint"):
    """Refuses a checkpoint that lacks any of the `wanted` entries, naming the first."""
    lacking = [k for k in wanted if k not in flat]
    if lacking:
        raise I3DError(f"{path} lacks {len(lacking)} entries ({lacking[0]}, ...)")
