"""Video files -> uint8 RGB frames. decord for real videos, Pillow for animated GIFs (decord's
ffmpeg build cannot measure their length); both imported on first use.

MindSpore aborts (std::random_device) when it is imported after decord in one process: import
`i3d_ms` before decoding anything in a process that uses both.
"""
from __future__ import annotations

import contextlib
import os

import numpy as np

from convert.errors import I3DError


def _is_gif(path: str) -> bool:
    with open(path, "rb") as f:
        return f.read(6) in (b"GIF87a", b"GIF89a")


def read_video(path: str, frames: int | None = None) -> np.ndarray:
    """The first `frames` frames (all if None) as uint8 (T, H, W, 3) RGB."""
    if not os.path.isfile(path):
        raise I3DError(f"{path}: no such file")
    try:
        video = _read_gif(path, frames) if _is_gif(path) else _read_decord(path, frames)
    except I3DError:
        raise
    except Exception as e:  # decord and Pillow raise their own types, with multi-line texts
        reason = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
        raise I3DError(f"{path}: not a readable video ({reason[:200]})") from None
    if len(video) == 0:
        raise I3DError(f"{path}: the video has no frames")
    return video


@contextlib.contextmanager
def _native_stderr_silenced():
    """ffmpeg inside decord prints to fd 2 on bad input; our own error says it in one line."""
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _read_decord(path, frames):
    import decord

    with _native_stderr_silenced():
        reader = decord.VideoReader(path, ctx=decord.cpu(0), num_threads=1)
        n = len(reader) if frames is None else min(frames, len(reader))
        return reader.get_batch(list(range(n))).asnumpy()


def _read_gif(path, frames):
    from PIL import Image

    out = []
    with Image.open(path) as im:
        n = getattr(im, "n_frames", 1) if frames is None else min(frames, getattr(im, "n_frames", 1))
        for i in range(n):
            im.seek(i)
            out.append(np.asarray(im.convert("RGB")))
    return np.stack(out)
