"""Which frames and which pixels make a clip. Pure numpy; randomness comes from the caller's
generator so that a clip is a function of (seed, epoch, index) and a resumed run sees the same
data as the uninterrupted one."""
from __future__ import annotations

import numpy as np

from .protocol import centre_crop, resize_shorter, scale


def train_indices(n: int, frames: int, stride: int, rng: np.random.Generator) -> np.ndarray:
    """`frames` frame numbers `stride` apart from a random start; short videos loop."""
    span = (frames - 1) * stride + 1
    start = int(rng.integers(0, max(n - span, 0) + 1))
    return (start + stride * np.arange(frames)) % n


def centre_indices(n: int, frames: int, stride: int) -> np.ndarray:
    return uniform_indices(n, frames, stride, 1)[0]


def uniform_indices(n: int, frames: int, stride: int, count: int) -> list:
    """`count` clips with starts spread evenly over the video (one clip: the centre one)."""
    span = (frames - 1) * stride + 1
    room = max(n - span, 0)
    starts = [room // 2] if count == 1 else np.linspace(0, room, count).round().astype(int)
    return [(int(s) + stride * np.arange(frames)) % n for s in starts]


def random_crop(video: np.ndarray, size: int, scales, rng: np.random.Generator) -> np.ndarray:
    """Multi-scale crop: a square of side size*s (s drawn from `scales`, clipped to the frame)
    at a random place, resized to `size`."""
    h, w = video.shape[1:3]
    side = min(int(round(size * float(rng.choice(scales)))), h, w)
    top, left = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
    crop = video[:, top:top + side, left:left + side]
    return crop if side == size else resize_shorter(crop, size)


def three_crops(video: np.ndarray, size: int) -> list:
    """Left/top, centre and right/bottom squares along the longer side."""
    h, w = video.shape[1:3]
    if h >= w:
        offs = [(0, (w - size) // 2), ((h - size) // 2, (w - size) // 2), (h - size, (w - size) // 2)]
    else:
        offs = [((h - size) // 2, 0), ((h - size) // 2, (w - size) // 2), ((h - size) // 2, w - size)]
    return [video[:, t:t + size, l:l + size] for t, l in offs]


def train_clip(video, frames, stride, resize, crop, scales, flip, rng) -> np.ndarray:
    """(T, H, W, 3) uint8 video -> (3, T, crop, crop) float32 in [-1, 1]."""
    clip = resize_shorter(video[train_indices(len(video), frames, stride, rng)], resize)
    clip = random_crop(clip, crop, scales, rng)
    if flip and rng.random() < 0.5:
        clip = clip[:, :, ::-1]
    return np.ascontiguousarray(scale(clip).transpose(3, 0, 1, 2))


def eval_clips(video, frames, stride, resize, crop, protocol: str, clips: int = 10) -> list:
    """'centre': one centre clip, centre crop; 'multi': `clips` uniform clips x 3 crops."""
    if protocol == "centre":
        idx = [centre_indices(len(video), frames, stride)]
    else:
        idx = uniform_indices(len(video), frames, stride, clips)
    out = []
    for i in idx:
        v = resize_shorter(video[i], resize)
        crops = [centre_crop(v, crop)] if protocol == "centre" else three_crops(v, crop)
        out += [np.ascontiguousarray(scale(c).transpose(3, 0, 1, 2)) for c in crops]
    return out
