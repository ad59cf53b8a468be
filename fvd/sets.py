"""The sets `i3d fvd` and `i3d features` read: a folder of video files, a folder of frame
folders (PNG/JPEG, in name order), a .npy/.npz array (N, T, H, W, 3) of uint8 or of floats in
[0, 1], or a statistics file of `i3d features --stats`. Each video is decoded when its turn
comes, through the caller's transform a chunk at a time, so a set of any size takes the memory
of one video."""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Callable

import numpy as np

from convert.errors import I3DError, printable
from i3d_video.decode import MAX_FRAMES, check_frame_size, open_video

from .arrays import json_member, open_arrays

VIDEO_EXTS = (".mp4", ".avi", ".mkv", ".webm", ".mov", ".gif")
IMAGE_EXTS = (".png", ".jpg", ".jpeg")
CHUNK = 16  # frames decoded before the transform takes them
ROW_BYTES = 1 << 31  # one video of an array set, read whole
STATS_KIND = "i3d-fvd-stats"


@dataclass
class Video:
    """One video of a set: `read(start, stop, transform)` -> frames start..stop-1 through
    `transform`; `stem` names its outputs."""
    name: str
    stem: str
    length: int
    read: Callable
    sequential: bool = False  # an array set's: read in order, by one thread


def _entries(folder: str) -> list:
    try:
        return sorted((e for e in os.scandir(folder) if not e.name.startswith(".")),
                      key=lambda e: e.name)
    except OSError as e:
        raise I3DError(f"{folder}: cannot list ({e.strerror})") from None


def _video_file(path: str) -> Video:
    with open_video(path) as v:
        n = len(v)

    def read(start: int, stop: int, transform) -> np.ndarray:
        with open_video(path) as v:
            return v.frames(range(start, stop), transform)

    return Video(path, os.path.splitext(os.path.basename(path))[0], n, read)


def _frame_folder(folder: str) -> Video:
    files = [e.path for e in _entries(folder) if e.is_file() and e.name.lower().endswith(IMAGE_EXTS)]
    if not files:
        raise I3DError(f"{folder}: no frames ({', '.join(IMAGE_EXTS)})")

    def read(start: int, stop: int, transform) -> np.ndarray:
        from PIL import Image

        out, chunk, size = [], [], None
        for path in files[start:stop]:
            try:
                with Image.open(path) as im:
                    h, w = im.size[::-1]
                    check_frame_size(path, h, w)
                    if size not in (None, (h, w)):
                        raise I3DError(f"{path}: {h}x{w}, but the video's first frame is "
                                       f"{size[0]}x{size[1]}")
                    size = (h, w)
                    chunk.append(np.asarray(im.convert("RGB")))
            except I3DError:
                raise
            except Exception as e:  # Pillow's errors: truncated, not an image, bombs
                raise I3DError(f"{path}: not a readable image ({printable(e)})") from None
            if len(chunk) == CHUNK:
                out.append(transform(np.stack(chunk)))
                chunk = []
        if chunk:
            out.append(transform(np.stack(chunk)))
        return np.concatenate(out)

    return Video(folder, os.path.basename(os.path.normpath(folder)), len(files), read)


def _array_videos(path: str, stack) -> list:
    arrays = {k: a for k, a in open_arrays(path, stack).items()}
    if len(arrays) != 1:
        raise I3DError(f"{path}: holds {len(arrays)} arrays; a video set is one array "
                       "(N, T, H, W, 3)")
    (a,) = arrays.values()
    if len(a.shape) != 5 or a.shape[-1] != 3 or a.dtype.kind not in "uf" or (
            a.dtype.kind == "u" and a.dtype != np.uint8):
        raise I3DError(f"{a.where}: {a.shape} {a.dtype.name}: expected (N, T, H, W, 3) uint8 "
                       "or floats in [0, 1]")
    n, t, h, w = a.shape[:4]
    check_frame_size(a.where, h, w)
    if t > MAX_FRAMES or a.nbytes // max(n, 1) > ROW_BYTES:
        raise I3DError(f"{a.where}: videos of {t} frames of {h}x{w}, more than one video read "
                       f"at once allows ({MAX_FRAMES} frames, {ROW_BYTES >> 20} MiB)")
    rows, held = a.rows(), [-1, None]  # videos are read in order: one row in memory

    def reader(i):
        def read(start: int, stop: int, transform) -> np.ndarray:
            if held[0] > i:
                raise ValueError("an array set's videos are read in order")
            while held[0] < i:
                held[:] = held[0] + 1, next(rows)
                video = held[1]
                if held[0] == i and video.dtype.kind == "f" and not (
                        np.isfinite(video).all() and video.min() >= 0 and video.max() <= 1):
                    raise I3DError(f"{a.where}: video {i} has values outside [0, 1]")
            return np.concatenate([transform(held[1][j:min(j + CHUNK, stop)])
                                   for j in range(start, stop, CHUNK)])
        return read

    stem = os.path.splitext(os.path.basename(path))[0]
    return [Video(f"{path}[{i}]", f"{stem}_{i:06d}", t, reader(i), True) for i in range(n)]


def read_stats(path: str):
    """A statistics file of `i3d features --stats` -> (Stats, metadata dict), or None if
    `path` is not one."""
    from .distance import Stats

    with contextlib.ExitStack() as stack:
        arrays = open_arrays(path, stack)
        if set(arrays) != {"mean", "cov", "count", "meta"}:
            return None
        info = json_member(arrays, "meta", path)
        if info.get("kind") != STATS_KIND:
            return None
        mean, cov, count = arrays["mean"], arrays["cov"], arrays["count"]
        d = mean.shape[0] if len(mean.shape) == 1 else -1
        if not 0 < d <= 8192 or cov.shape != (d, d) or count.shape != () or \
                {mean.dtype.name, cov.dtype.name, count.dtype.name} != {"float64", "int64"}:
            raise I3DError(f"{path}: statistics of shapes mean {mean.shape}, cov {cov.shape}, "
                           f"count {count.shape} (expected (D,), (D, D), ())")
        stats = Stats(mean.read(), cov.read(), int(count.read()[()]))
    if stats.count < 2 or not (np.isfinite(stats.mean).all() and np.isfinite(stats.cov).all()):
        raise I3DError(f"{path}: statistics of {stats.count} videos or not finite")
    return stats, info


def _each(opener, paths: list, bad: list | None) -> list:
    out = []
    for p in paths:
        try:
            out.append(opener(p))
        except I3DError as e:
            if bad is None:
                raise
            bad.append(str(e))
    return out


def open_set(path: str, stack, bad: list | None = None) -> list:
    """The videos of the set at `path`, in name order (files kept open on `stack`). With a
    list `bad`, a video that cannot be opened is listed there (one line) instead of raised."""
    if os.path.isdir(path):
        entries = _entries(path)
        videos = [e.path for e in entries if e.is_file() and e.name.lower().endswith(VIDEO_EXTS)]
        folders = [e.path for e in entries if e.is_dir()]
        if videos and folders:
            raise I3DError(f"{path}: holds both videos and folders; a set is one or the other")
        if not videos and not folders:
            raise I3DError(f"{path}: no videos ({', '.join(VIDEO_EXTS)}) or frame folders")
        return _each(_video_file, videos, bad) if videos else _each(_frame_folder, folders, bad)
    if path.endswith((".npy", ".npz")):
        return _array_videos(path, stack)
    if path.lower().endswith(VIDEO_EXTS):
        return _each(_video_file, [path], bad)
    if not os.path.exists(path):
        raise I3DError(f"{path}: no such file or folder")
    raise I3DError(f"{path}: not a folder of videos or frames, an .npy/.npz array or a "
                   "statistics file")


def common_length(videos: list, frames: int | None) -> int:
    """The frames every video gives: all of them (which must be equal across the set), or the
    first `frames` (which each video must have)."""
    first = videos[0]
    for v in videos:
        if frames is None and v.length != first.length:
            raise I3DError(f"{v.name}: {v.length} frames, but {first.name} has {first.length}: "
                           "FVD takes videos of one length (--frames N uses the first N)")
        if frames is not None and v.length < frames:
            raise I3DError(f"{v.name}: {v.length} frames, fewer than --frames {frames}")
    if frames is None and first.length > MAX_FRAMES:
        raise I3DError(f"{first.name}: {first.length} frames, more than {MAX_FRAMES} (--frames N)")
    return first.length if frames is None else frames
