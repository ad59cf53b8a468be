"""DeepMind's evaluation protocol: decode, shorter side 256 (PIL bilinear), centre crop 224,
scale to [-1, 1]. numpy in, numpy out; decord and Pillow are imported when first used.

Animated GIFs (the DeepMind sample clip is one) are decoded with Pillow: decord's ffmpeg build
cannot measure their length.
"""
from __future__ import annotations

import contextlib
import os

import numpy as np

from .errors import I3DError

RESIZE, CROP = 256, 224
SAMPLE = os.path.join(os.path.dirname(__file__), "data", "v_CricketShot_g04_c01_rgb.gif")


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


def resize_shorter(video: np.ndarray, size: int = RESIZE) -> np.ndarray:
    """Resize every frame so its shorter side is `size`, as PIL's BILINEAR resize does it."""
    from PIL import Image

    h, w = video.shape[1:3]
    scale = size / min(h, w)
    new_w, new_h = int(w * scale + 0.5), int(h * scale + 0.5)
    if (new_h, new_w) == (h, w):
        return video
    return np.stack([np.asarray(Image.fromarray(f).resize((new_w, new_h), Image.BILINEAR))
                     for f in video])


def centre_crop(video: np.ndarray, size: int = CROP) -> np.ndarray:
    h, w = video.shape[1:3]
    if h < size or w < size:
        raise ValueError(f"frames of {h}x{w} are smaller than the {size} crop")
    top, left = (h - size) // 2, (w - size) // 2
    return video[:, top:top + size, left:left + size]


def scale(video: np.ndarray) -> np.ndarray:
    """uint8 -> float32 in [-1, 1], as DeepMind's x / 127.5 - 1."""
    return video.astype(np.float32) / 127.5 - 1.0


def to_ncdhw(clip: np.ndarray) -> np.ndarray:
    """(T, H, W, 3) -> (1, 3, T, H, W), the twins' layout."""
    return np.ascontiguousarray(clip.transpose(3, 0, 1, 2)[None])


def deepmind_clip(path: str, frames: int | None = None) -> np.ndarray:
    """The model input for `path` by DeepMind's protocol: float32 (1, 3, T, 224, 224)."""
    video = read_video(path, frames)
    if video.shape[1:3] == (CROP, CROP):
        return to_ncdhw(scale(video))  # stored already cropped (DeepMind's sample): as is
    return to_ncdhw(scale(centre_crop(resize_shorter(video))))
