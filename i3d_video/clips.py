"""Which frames and which pixels make a clip. Randomness comes from the caller's generator, so
that a clip is a function of (seed, rank, epoch, index) and a resumed run sees the same data as
the uninterrupted one.

Clips are uint8 (T, H, W, 3), decoded frame by frame as `VideoFile.frames` delivers them: only
the frames a clip needs are decoded, each is resized as it arrives, and the [-1, 1] scaling is
left to the device (`i3d_ms.network.to_input`), a quarter of the bytes to move.
"""
from __future__ import annotations

import numpy as np

from convert import architecture as arch

from .protocol import centre_crop, resize_shorter, resized_size

PROTOCOLS = ("centre", "multi", "whole")


def train_indices(n: int, frames: int, stride: int, rng: np.random.Generator) -> np.ndarray:
    """`frames` frame numbers `stride` apart from a random start; short videos loop."""
    span = (frames - 1) * stride + 1
    start = int(rng.integers(0, max(n - span, 0) + 1))
    return (start + stride * np.arange(frames)) % n


def uniform_indices(n: int, frames: int, stride: int, count: int) -> list:
    """`count` clips with starts spread evenly over the video (one clip: the centre one)."""
    span = (frames - 1) * stride + 1
    room = max(n - span, 0)
    starts = [room // 2] if count == 1 else np.linspace(0, room, count).round().astype(int)
    return [(int(s) + stride * np.arange(frames)) % n for s in starts]


def eval_indices(n: int, protocol: str, frames: int, stride: int, clips: int,
                 max_frames: int) -> list:
    """The frame numbers of each temporal clip of a video of `n` frames: 'centre' one clip of
    `frames` at the middle; 'multi' `clips` uniform clips; 'whole' (DeepMind's protocol) every
    frame up to `max_frames`, looped up to the fewest frames DeepMind's head takes."""
    if protocol == "whole":
        return [np.arange(min(max(n, arch.min_frames()), max_frames)) % n]
    return uniform_indices(n, frames, stride, 1 if protocol == "centre" else clips)


class TrainCrop:
    """A training clip's pixels, applied chunk by chunk: a random square of side crop*s (s
    from `scales`, clipped to the frame) of the frames as resized to shorter side `resize`,
    resampled once to `crop` straight from the decoded frame (Pillow bilinear over the
    square's box). It also draws the horizontal flip, `mirror`, but leaves it to the device
    (a reversed copy costs the CPU more than the resampling). The draws happen on the first
    chunk, in this order: scale, top, left, flip."""

    def __init__(self, resize: int, crop: int, scales, flip: bool, rng: np.random.Generator):
        self.resize, self.crop, self.scales, self.flip, self.rng = resize, crop, scales, flip, rng
        self.box = None

    def _draw(self, h: int, w: int):
        rh, rw = resized_size(h, w, self.resize)
        side = min(int(round(self.crop * float(self.rng.choice(self.scales)))), rh, rw)
        top, left = int(self.rng.integers(0, rh - side + 1)), int(self.rng.integers(0, rw - side + 1))
        self.mirror = bool(self.flip and self.rng.random() < 0.5)
        if (rh, rw) == (h, w) and side == self.crop:
            self.box = (top, left)  # a plain crop
        else:
            sy, sx = h / rh, w / rw
            self.box = (left * sx, top * sy, (left + side) * sx, (top + side) * sy)

    def __call__(self, chunk) -> np.ndarray:
        if self.box is None:
            self._draw(*chunk[0].shape[:2])
        if len(self.box) == 2:
            top, left = self.box
            return np.stack([f[top:top + self.crop, left:left + self.crop] for f in chunk])
        from PIL import Image

        # Pillow copies a strided frame (PyAV's rows are padded) slowly: hand it just the box
        # and the filter's reach around it, contiguous
        x0, y0, x1, y1 = self.box
        reach = int(np.ceil((x1 - x0) / self.crop)) + 1
        h, w = chunk[0].shape[:2]
        left, top = max(int(x0) - reach, 0), max(int(y0) - reach, 0)
        right, bottom = min(int(np.ceil(x1)) + reach, w), min(int(np.ceil(y1)) + reach, h)
        box, size = (x0 - left, y0 - top, x1 - left, y1 - top), (self.crop, self.crop)
        return np.stack([np.asarray(Image.fromarray(np.ascontiguousarray(f[top:bottom, left:right]))
                                    .resize(size, Image.BILINEAR, box=box)) for f in chunk])


def three_crops(video: np.ndarray, size: int) -> list:
    """Left/top, centre and right/bottom squares along the longer side."""
    h, w = video.shape[1:3]
    if h >= w:
        offs = [(0, (w - size) // 2), ((h - size) // 2, (w - size) // 2), (h - size, (w - size) // 2)]
    else:
        offs = [((h - size) // 2, 0), ((h - size) // 2, (w - size) // 2), ((h - size) // 2, w - size)]
    return [video[:, t:t + size, l:l + size] for t, l in offs]


class EvalCrops:
    """An evaluation clip's pixels, applied chunk by chunk: DeepMind's resize of the whole
    frame (shorter side `resize`, as `i3d predict` does it), then the centre crop (k=1) or three
    crops along the longer side (k=3): (t, H, W, 3) -> (t, k, crop, crop, 3)."""

    def __init__(self, resize: int, crop: int, k: int):
        self.resize, self.crop, self.k = resize, crop, k

    def __call__(self, chunk) -> np.ndarray:
        frames = resize_shorter(np.asarray(chunk), self.resize)
        crops = [centre_crop(frames, self.crop)] if self.k == 1 else three_crops(frames, self.crop)
        return np.stack(crops, 1)


def train_clip(video, frames, stride, resize, crop, scales, flip, rng) -> tuple:
    """A `VideoFile` -> a training clip, uint8 (T, crop, crop, 3), and whether to mirror it."""
    pixels = TrainCrop(resize, crop, scales, flip, rng)
    return video.frames(train_indices(len(video), frames, stride, rng), pixels), pixels.mirror


def eval_clip(video, indices, resize, crop, k: int) -> np.ndarray:
    """The k crops of the clip of frames `indices` of a `VideoFile`: uint8 (k, T, crop, crop, 3)."""
    return video.frames(indices, EvalCrops(resize, crop, k)).transpose(1, 0, 2, 3, 4)
