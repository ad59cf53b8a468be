"""Video files -> uint8 RGB frames. decord for real videos, Pillow for animated GIFs (decord's
ffmpeg build cannot measure their length); both imported on first use.

MindSpore aborts (std::random_device) when it is imported after decord in one process: import
`i3d_ms` before decoding anything in a process that uses both.
"""
from __future__ import annotations

import contextlib
import os
import threading

import numpy as np

from convert.errors import I3DError


def _unreadable(path: str, e: Exception) -> I3DError:
    """decord and Pillow raise their own types, with multi-line texts: one line of ours."""
    reason = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
    return I3DError(f"{path}: not a readable video ({reason[:200]})")


def _is_gif(path: str) -> bool:
    with open(path, "rb") as f:
        return f.read(6) in (b"GIF87a", b"GIF89a")


def read_video(path: str, frames: int | None = None) -> np.ndarray:
    """The first `frames` frames (all if None) as uint8 (T, H, W, 3) RGB."""
    with open_video(path) as video:
        return video.frames(range(len(video) if frames is None else min(frames, len(video))))


class VideoFile:
    """An open video: `len(v)` frames; `v.frames(indices, transform)` decodes only what those
    frames need and hands them to `transform` CHUNK at a time (a sequence of (H, W, 3) uint8
    frames, in index order) as they arrive, so full-size frames never pile up.

    decord decodes real videos (from the keyframe before each run of indices), Pillow GIFs
    (seeking forward, stopping after the last one). With `fast`, PyAV decodes instead, in one
    pass from the keyframe before the first frame asked for, skipping the frames that no other
    frame refers to and that were not asked for (FFmpeg's skip_frame=NONREF: exact; ~1/4 of an
    x264 stream);
    its RGB is decord's (the same FFmpeg conversion). A file PyAV cannot index by timestamp
    falls back to decord."""

    CHUNK = 16

    def __init__(self, path: str, fast: bool = False):
        self.path, self.gif, self._pts, self._im = path, _is_gif(path), None, None
        if self.gif:
            from PIL import Image

            self._im = Image.open(path)
            self._len = getattr(self._im, "n_frames", 1)
            return
        if fast:
            self._im, self._pts, self._keys = _pyav_index(path)
            if self._pts is not None:
                self._len = len(self._pts)
                return
        self._open_decord()

    def _open_decord(self):
        import decord

        self.close()

        decord.logging.set_level(decord.logging.QUIET)  # ffmpeg's complaints mid-stream
        with _native_stderr_silenced():  # decord's own when it cannot open the file
            self._im = decord.VideoReader(self.path, ctx=decord.cpu(0), num_threads=1)
        self._len, self._pts = len(self._im), None

    def __len__(self):
        return self._len

    def frames(self, indices, transform=None) -> np.ndarray:
        """Frames `indices` (any order, repeats allowed), each through `transform`, stacked."""
        indices = np.asarray(list(indices), np.int64)
        order = np.unique(indices)
        if len(order) == 0 or order[0] < 0 or order[-1] >= self._len:
            raise I3DError(f"{self.path}: frames {indices.min(initial=0)}..{indices.max(initial=-1)} "
                           f"asked of a video of {self._len}")
        transform = transform or np.asarray
        try:
            out = [transform(chunk) for chunk in self._chunks(order)]
        except I3DError:
            if self._pts is None:
                raise
            self._open_decord()  # PyAV's seek missed: decord, from the start of the run
            out = [transform(chunk) for chunk in self._chunks(order)]
        out = np.concatenate(out)
        return out if np.array_equal(order, indices) else out[np.searchsorted(order, indices)]

    def _chunks(self, order: np.ndarray):
        """The frames `order` (sorted, unique), CHUNK at a time."""
        try:
            if self._pts is not None:
                yield from self._pyav_chunks(order)
            elif self.gif:
                for start in range(0, len(order), self.CHUNK):
                    frames = []
                    for i in order[start:start + self.CHUNK]:
                        self._im.seek(int(i))
                        frames.append(np.asarray(self._im.convert("RGB")))
                    yield frames
            else:
                for start in range(0, len(order), self.CHUNK):
                    yield self._im.get_batch(order[start:start + self.CHUNK].tolist()).asnumpy()
        except I3DError:
            raise
        except Exception as e:
            raise _unreadable(self.path, e) from None

    def _pyav_chunks(self, order: np.ndarray):
        want = {self._pts[i] for i in order.tolist()}
        first = self._pts[order[0]]
        key = max((k for k in self._keys if k <= first), default=self._pts[0])
        buf, found, container = [], 0, self._im
        stream = container.streams.video[0]
        codec = stream.codec_context
        codec.thread_count = 1  # the dataset's worker threads are the parallelism
        container.seek(key, stream=stream, backward=True, any_frame=False)
        skip = None
        for packet in container.demux(stream):
            if (packet.pts in want) == (skip != "DEFAULT"):
                skip = codec.skip_frame = "DEFAULT" if packet.pts in want else "NONREF"
            for frame in packet.decode():
                if frame.pts in want:
                    buf.append(frame.to_ndarray(format="rgb24"))
                    found += 1
                    if len(buf) == self.CHUNK:
                        yield buf
                        buf = []
            if found == len(order):
                break
        if found < len(order):
            raise I3DError(f"{self.path}: {len(order) - found} frames missing after a seek")
        if buf:
            yield buf

    def close(self):
        if self._im is not None and (self.gif or self._pts is not None):
            self._im.close()  # Pillow's image, PyAV's container
        self._im = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _pyav_index(path: str) -> tuple:
    """(the open PyAV container, sorted frame timestamps, keyframe timestamps) from the
    packets, or Nones when they cannot index the frames (missing or repeated timestamps, no
    video stream, not a container PyAV reads)."""
    import av

    try:
        container = av.open(path)
    except Exception:
        return None, None, None
    try:
        packets = [(p.pts, p.is_keyframe) for p in container.demux(container.streams.video[0])
                   if p.size]
    except Exception:
        packets = []
    pts = sorted(p for p, _ in packets if p is not None)
    if not pts or len(pts) < len(packets) or len(set(pts)) < len(pts):
        container.close()
        return None, None, None
    return container, pts, sorted(p for p, key in packets if key)


def open_video(path: str, fast: bool = False) -> VideoFile:
    """The video at `path`, open for `frames()` (see VideoFile for `fast`); one-line I3DError
    if it is missing, not a video, or has no frames."""
    if not os.path.isfile(path):
        raise I3DError(f"{path}: no such file")
    try:
        video = VideoFile(path, fast)
    except Exception as e:
        raise _unreadable(path, e) from None
    if len(video) == 0:
        video.close()
        raise I3DError(f"{path}: the video has no frames")
    return video


_quiet = {"lock": threading.Lock(), "depth": 0, "saved": None}


@contextlib.contextmanager
def _native_stderr_silenced():
    """decord prints to fd 2 when it cannot open a file; our own error says it in one line.
    fd 2 is the process's: the first of overlapping callers (dataset worker threads) points it
    at /dev/null and the last one restores it."""
    with _quiet["lock"]:
        if _quiet["depth"] == 0:
            _quiet["saved"] = os.dup(2)
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, 2)
            os.close(null)
        _quiet["depth"] += 1
    try:
        yield
    finally:
        with _quiet["lock"]:
            _quiet["depth"] -= 1
            if _quiet["depth"] == 0:
                os.dup2(_quiet["saved"], 2)
                os.close(_quiet["saved"])
