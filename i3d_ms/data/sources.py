"""Which videos, with which labels: the Kinetics-400 CSV layout and plain list files."""
from __future__ import annotations

import csv
import os
from typing import NamedTuple

from convert.errors import I3DError


class Video(NamedTuple):
    path: str
    label: int  # -1 when unknown (Kinetics test split)


def _csv(root: str, split: str) -> str:
    return os.path.join(root, f"kinetics-400_{split}.csv")


def class_names(root: str) -> list:
    """Sorted labels of the train CSV (the split's own if there is none): for Kinetics-400 this
    is the 400 names in model order."""
    for split in ("train", "val", "test"):
        path = _csv(root, split)
        if os.path.isfile(path):
            with open(path, newline="") as f:
                names = sorted({r["label"] for r in csv.DictReader(f) if r.get("label")})
            if names:
                return names
    raise I3DError(f"{root}: no kinetics-400_{{train,val}}.csv with a label column")


def read_kinetics(root: str, split: str) -> list:
    """ROOT/kinetics-400_SPLIT.csv -> [Video]; files are ROOT/SPLIT/{id}_{start:06d}_{end:06d}.mp4.
    A missing label column (the test split) gives label -1."""
    path = _csv(root, split)
    if not os.path.isfile(path):
        raise I3DError(f"{path}: no such file")
    index = {name: i for i, name in enumerate(class_names(root))}
    out = []
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            name = (f"{r['youtube_id']}_{int(float(r['time_start'])):06d}_"
                    f"{int(float(r['time_end'])):06d}.mp4")
            label = r.get("label")
            if label and label not in index:
                raise I3DError(f"{path}: label {label!r} is not among the train classes")
            out.append(Video(os.path.join(root, split, name), index[label] if label else -1))
    return out


def read_list(path: str) -> list:
    """A list file, one `path label` per line (relative paths are from the list's folder)."""
    if not os.path.isfile(path):
        raise I3DError(f"{path}: no such file")
    folder, out = os.path.dirname(os.path.abspath(path)), []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            if not line.strip() or line.startswith("#"):
                continue
            parts = line.rsplit(None, 1)
            try:
                out.append(Video(os.path.join(folder, parts[0]), int(parts[1])))
            except (IndexError, ValueError):
                raise I3DError(f"{path}:{n}: expected 'PATH LABEL', got {line.strip()!r}") from None
    return out


def read_source(spec: str, split: str) -> list:
    """A Kinetics root folder (the SPLIT csv is used) or a list file."""
    return read_kinetics(spec, split) if os.path.isdir(spec) else read_list(spec)


def check_videos(videos: list) -> list:
    """[(path, reason)] of the videos that are missing or cannot be decoded."""
    from i3d_video import read_video

    bad = []
    for v in videos:
        try:
            read_video(v.path, frames=1)
        except I3DError as e:
            bad.append((v.path, str(e).split(": ", 1)[-1]))
    return bad


def split_videos(d: dict, split: str) -> tuple:
    """([Video], class names or None) of a split, from the config's data section: a list file
    (`data.SPLIT`) or a Kinetics root (`data.root`)."""
    if d.get(split):
        return read_list(d[split]), None
    if d.get("root"):
        return read_kinetics(d["root"], split), class_names(d["root"])
    raise I3DError(f"set data.root (Kinetics layout) or data.{split} (a list file)")


def num_classes(configured, videos: list, names) -> int:
    """`model.num_classes` if set, else the Kinetics root's class count, else 1 + the largest
    label of a list file."""
    return configured or (len(names) if names else 1 + max(v.label for v in videos))
