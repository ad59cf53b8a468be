"""DeepMind's evaluation protocol: decode, shorter side 256 (PIL bilinear), centre crop 224,
scale to [-1, 1]. numpy in, numpy out; Pillow is imported when first used."""
from __future__ import annotations

import os

import numpy as np

from convert import architecture as arch
from convert.errors import I3DError

from .decode import read_video

RESIZE, CROP = 256, 224
SAMPLE = os.path.join(os.path.dirname(__file__), "data", "v_CricketShot_g04_c01_rgb.gif")


def resized_size(h: int, w: int, size: int = RESIZE) -> tuple:
    """(height, width) with the shorter side `size`, rounded to the nearest integer."""
    scale = size / min(h, w)
    return int(h * scale + 0.5), int(w * scale + 0.5)


def resize_shorter(video: np.ndarray, size: int = RESIZE) -> np.ndarray:
    """Resize every frame so its shorter side is `size`, as PIL's BILINEAR resize does it."""
    from PIL import Image

    h, w = video.shape[1:3]
    new_h, new_w = resized_size(h, w, size)
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


def deepmind_pixels(chunk) -> np.ndarray:
    """Decoded frames -> DeepMind's 224x224 crops, uint8; applied as the frames are decoded,
    so full-size frames never pile up."""
    frames = np.asarray(chunk)
    if frames.shape[1:3] == (CROP, CROP):
        return frames  # stored already cropped (DeepMind's sample): as is
    return centre_crop(resize_shorter(frames))


def deepmind_clip(path: str, frames: int | None = None) -> np.ndarray:
    """The model input for `path` by DeepMind's protocol: float32 (1, 3, T, 224, 224)."""
    return to_ncdhw(scale(read_video(path, frames, deepmind_pixels)))


def model_clip(path: str, frames: int | None = None, variant=arch.DEEPMIND) -> np.ndarray:
    """`deepmind_clip`, refused in one line when it is too short for DeepMind's head."""
    clip = deepmind_clip(path, frames)
    need = arch.min_frames(variant)
    if clip.shape[2] < need:
        raise I3DError(f"{path}: {clip.shape[2]} frames, but the model needs at least {need} "
                       "(its head pools 2 time steps of Mixed_5c, 1/8 of the frames)")
    return clip
