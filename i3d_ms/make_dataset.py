"""A small video dataset in the Kinetics-400 layout whose classes are learnable only from motion.

Every video shows a random texture, drawn afresh per video, that moves across the frame (and wraps
around it) at 2-4 px per frame; the class is the direction of the motion. By default the texture
fills the frame (a pan); `patch` makes it a square moving over a second random texture instead
(harder: a linear probe of Kinetics features at 32 px gets ~50% on that, ~94% on the pan). Any
one frame is a sample of the same distribution whatever the class, so a model that is right has
learnt motion. Files are real H.264 mp4s encoded by PyAV's bundled ffmpeg (libx264).
"""
from __future__ import annotations

import csv
import os

import numpy as np

from convert.errors import I3DError
from convert.fileio import atomic_folder

DIRECTIONS = {"moving right": (0, 1), "moving left": (0, -1), "moving down": (1, 0),
              "moving up": (-1, 0), "moving down-right": (1, 1), "moving up-left": (-1, -1),
              "moving down-left": (1, -1), "moving up-right": (-1, 1)}
FIELDS = ["label", "youtube_id", "time_start", "time_end", "split"]


def _texture(rng, h, w, block=4):
    """Coarse random colour blocks: they survive the codec's chroma subsampling."""
    small = rng.integers(0, 256, (h // block + 1, w // block + 1, 3), dtype=np.uint8)
    return small.repeat(block, 0).repeat(block, 1)[:h, :w]


def render(direction, rng, frames=16, height=48, width=64, patch=None, speed=(2, 4)) -> np.ndarray:
    """(T, H, W, 3) uint8: the texture moves `speed` px/frame along `direction` (dy, dx)."""
    ph, pw = (height, width) if patch is None else (patch, patch)
    bg, tex = _texture(rng, height, width), _texture(rng, ph, pw)
    y, x = rng.integers(0, height), rng.integers(0, width)
    v = int(rng.integers(speed[0], speed[1] + 1))
    out = np.empty((frames, height, width, 3), np.uint8)
    for t in range(frames):
        f = bg.copy()
        top, left = (y + direction[0] * v * t) % height, (x + direction[1] * v * t) % width
        rows, cols = (top + np.arange(ph)) % height, (left + np.arange(pw)) % width
        f[np.ix_(rows, cols)] = tex
        out[t] = f
    return out


def write_mp4(video: np.ndarray, path: str, fps: int = 25):
    import av

    with av.open(path, "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.height, stream.width = video.shape[1:3]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "12", "preset": "veryfast"}
        for frame in video:
            out.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        out.mux(stream.encode())


def make_dataset(root: str, classes: int = 4, videos_per_class: int = 48, val_per_class: int = 8,
                 frames: int = 16, height: int = 48, width: int = 64, seed: int = 0,
                 fps: int = 25) -> dict:
    """Writes ROOT/kinetics-400_{train,val}.csv and ROOT/{train,val}/*.mp4 (no val split with
    `val_per_class` 0), all or nothing; returns counts.
    Kinetics-shaped: frames=300, height=256, width=340, fps=30 (10 s)."""
    if not 2 <= classes <= len(DIRECTIONS):
        raise I3DError(f"--classes must be between 2 and {len(DIRECTIONS)}, got {classes}")
    if videos_per_class < 1 or val_per_class < 0:
        raise I3DError("--videos-per-class must be at least 1 and --val-per-class at least 0")
    if height % 2 or width % 2:
        raise I3DError("H.264 (yuv420p) needs an even height and width")
    if frames < 1 or height < 2 or width < 2 or not 1 <= fps <= 240:
        raise I3DError("--frames must be at least 1, --height and --width at least 2, --fps 1 to 240")
    rng = np.random.default_rng(seed)
    names = list(DIRECTIONS)[:classes]
    counts = {}
    with atomic_folder(root) as tmp:  # the whole dataset or nothing
        for split, per in (("train", videos_per_class), ("val", val_per_class)):
            counts[split] = per * classes
            if not per:
                continue  # no split rather than an empty one (training then has no validation)
            os.makedirs(os.path.join(tmp, split))
            rows = []
            for c, name in enumerate(names):
                for i in range(per):
                    vid = f"{split[0]}{c:02d}x{i:04d}"
                    rows.append({"label": name, "youtube_id": vid, "time_start": 0,
                                 "time_end": frames, "split": split})
                    video = render(DIRECTIONS[name], rng, frames, height, width)
                    write_mp4(video, os.path.join(tmp, split, f"{vid}_{0:06d}_{frames:06d}.mp4"),
                              fps)
            with open(os.path.join(tmp, f"kinetics-400_{split}.csv"), "w", newline="") as f:
                w = csv.DictWriter(f, FIELDS)
                w.writeheader()
                w.writerows(rows)
    return {"classes": names, **counts}
