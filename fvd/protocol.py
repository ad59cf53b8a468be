"""The FVD reference's input protocol (google-research `frechet_video_distance.py`, `preprocess`):
every frame resized to 224x224 by TF 1.x's `tf.image.resize_bilinear`, then 2 * x / 255 - 1.
numpy in, numpy out, bit-exact to TensorFlow (benchmarks/results/tf-resize-bilinear.md).

TF 1.x's bilinear resize (align_corners=False, half_pixel_centers=False) is neither Pillow's
nor torch's default: output pixel i samples the input at i * (in / out), all in float32, with no
half-pixel offset and no antialiasing, so a downscale skips pixels instead of averaging them.
"""
from __future__ import annotations

import numpy as np

SIZE = 224
_F = np.float32


def _axis(n_in: int, n_out: int) -> tuple:
    """(lower, upper, lerp) per output index, as TF's kernel computes them (float32 throughout:
    the scale in / float(out), the coordinate i * scale, the fraction c - floor(c))."""
    scale = _F(n_in) / _F(n_out)
    c = np.arange(n_out, dtype=_F) * scale
    floor = np.floor(c)
    lower = np.maximum(floor.astype(np.int64), 0)
    upper = np.minimum(np.ceil(c).astype(np.int64), n_in - 1)
    return lower, upper, (c - floor).astype(_F)


def resize_bilinear_tf1(frames: np.ndarray, size: int = SIZE) -> np.ndarray:
    """(N, H, W, C) uint8 or float -> float32 (N, size, size, C), TF 1.x's resize_bilinear:
    pixels cast to float32 first, then top + (bottom - top) * lerp in that order."""
    frames = np.asarray(frames)
    n, h, w, c = frames.shape
    if (h, w) == (size, size):
        return frames.astype(_F)
    y0, y1, ly = _axis(h, size)
    x0, x1, lx = _axis(w, size)
    lx = lx[None, None, :, None]
    rows0, rows1 = frames[:, y0], frames[:, y1]
    top = rows0[:, :, x0].astype(_F)
    top += (rows0[:, :, x1].astype(_F) - top) * lx
    bottom = rows1[:, :, x0].astype(_F)
    bottom += (rows1[:, :, x1].astype(_F) - bottom) * lx
    top += (bottom - top) * ly[None, :, None, None]
    return top


def pixels(frames: np.ndarray) -> np.ndarray:
    """Frames as the reference feeds them: uint8 as is; floats in [0, 1] times 255 (float32)."""
    if frames.dtype == np.uint8:
        return frames
    return frames.astype(_F) * _F(255)


def scale(resized: np.ndarray) -> np.ndarray:
    """float32 0..255 -> [-1, 1] as the reference writes it: 2 * x / 255 - 1, in float32."""
    out = resized * _F(2)
    out /= _F(255)
    out -= _F(1)
    return out


def fvd_frames(frames: np.ndarray, size: int = SIZE) -> np.ndarray:
    """Decoded frames (T, H, W, 3) -> the network's frames (T, size, size, 3) in [-1, 1]."""
    frames = np.asarray(frames)
    return scale(resize_bilinear_tf1(pixels(frames), size))


def fvd_frames_batch(videos) -> np.ndarray:
    """(B, T, H, W, 3) videos -> (B, T, size, size, 3) network frames, video by video."""
    return np.stack([fvd_frames(v) for v in videos])
