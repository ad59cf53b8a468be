"""Video files -> uint8 RGB frames. decord for real videos, Pillow for animated GIFs (decord's
ffmpeg build cannot measure their length); both imported on first use.

What a file says cannot make us allocate much: every file is opened by PyAV (or Pillow) first,
which reads the headers only, and frames larger than MAX_PIXELS (or more than MAX_ASPECT times
longer than wide) are refused before anything is decoded; frames are decoded a few at a time
(CHUNK_BYTES) and handed to the caller's transform (resize, crop) as they arrive; reading
"all" frames stops at MAX_FRAMES. Nothing touches file descriptors: FFmpeg's logging is off in
PyAV and decord, and decord, which prints to stderr when it cannot open a file, only opens
files that PyAV opened.

MindSpore aborts (std::random_device) when it is imported after decord in one process: import
`i3d_ms` before decoding anything in a process that uses both.
"""
from __future__ import annotations

import re

import numpy as np

from convert.errors import I3DError, printable
from convert.fileio import read_prefix

MAX_PIXELS = 1 << 25  # a frame of 8K UHD (7680x4320) fits; an 8000x8000 GIF screen does not
MAX_ASPECT = 16  # longer side / shorter side: a resize of the shorter side stays small
MAX_FRAMES = 4096  # "all frames" of a video: more is refused (ask for N frames instead)
CHUNK_BYTES = 64 << 20  # decoded RGB frames held at once (at least one frame)


def _unreadable(path: str, e: Exception) -> I3DError:
    """decord, PyAV and Pillow raise their own types, with multi-line texts: one line of ours."""
    text = (getattr(e, "strerror", None) or str(e)).strip()
    text = re.sub(r"\[\d\d:\d\d:\d\d\] \S+:\d+: ", "", text)  # decord's log prefixes
    reason = text.splitlines()[-1] if text else type(e).__name__
    return I3DError(f"{path}: not a readable video ({printable(reason, 200)})")


def check_frame_size(path: str, height: int, width: int):
    """Refuses frames too large to decode, or too elongated to resize, before decoding."""
    if min(height, width) < 1:
        raise I3DError(f"{path}: frames of {width}x{height} pixels: not a video")
    if height * width > MAX_PIXELS:
        raise I3DError(f"{path}: frames of {width}x{height} pixels, more than {MAX_PIXELS} "
                       "(8K): refused before decoding")
    if max(height, width) > MAX_ASPECT * min(height, width):
        raise I3DError(f"{path}: frames of {width}x{height} pixels, more than {MAX_ASPECT} "
                       "times longer than wide: refused before decoding")


def _is_gif(path: str) -> bool:
    """Also refuses what is not a regular file (a FIFO without blocking on it)."""
    return read_prefix(path, 6) in (b"GIF87a", b"GIF89a")


def read_video(path: str, frames: int | None = None, transform=None) -> np.ndarray:
    """The first `frames` frames (all, up to MAX_FRAMES, if None) as uint8 (T, H, W, 3) RGB,
    or as `transform` makes them chunk by chunk (see `VideoFile.frames`)."""
    with open_video(path) as video:
        if frames is None and len(video) > MAX_FRAMES:
            raise I3DError(f"{path}: {len(video)} frames, more than the {MAX_FRAMES} read at "
                           "once: ask for fewer (--frames N)")
        n = len(video) if frames is None else min(frames, len(video))
        return video.frames(range(n), transform)


class VideoFile:
    """An open video: `len(v)` frames; `v.frames(indices, transform)` decodes only what those
    frames need and hands them to `transform` a chunk at a time (a sequence of at most CHUNK
    (H, W, 3) uint8 frames, CHUNK_BYTES in all, in index order) as they arrive, so full-size
    frames never pile up.

    decord decodes real videos (from the keyframe before each run of indices), Pillow GIFs
    (seeking forward, stopping after the last one). With `fast`, PyAV decodes instead, in one
    pass from the keyframe before the first frame asked for, skipping the frames that no other
    frame refers to and that were not asked for (FFmpeg's skip_frame=NONREF: exact; ~1/4 of an
    x264 stream);
    its RGB is decord's (the same FFmpeg conversion). A file PyAV cannot index by timestamp
    falls back to decord."""

    CHUNK = 16  # frames per chunk at most (fewer when they are large: CHUNK_BYTES)

    def __init__(self, path: str, fast: bool = False):
        self.path, self.gif, self._pts, self._im = path, _is_gif(path), None, None
        if self.gif:
            from PIL import Image

            self._im = Image.open(path)
            self.size = self._im.size[::-1]
            try:
                check_frame_size(path, *self.size)  # the GIF's screen: frames are drawn on it
            except I3DError:
                self.close()
                raise
            self._len = getattr(self._im, "n_frames", 1)
        else:
            container = _probe(path)
            stream = container.streams.video[0]
            self.size = stream.codec_context.height, stream.codec_context.width
            try:
                check_frame_size(path, *self.size)
            except I3DError:
                container.close()
                raise
            self._im, self._pts, self._keys = _pyav_index(container) if fast else (container, None, None)
            if self._pts is not None:
                self._len = len(self._pts)
            else:
                self._open_decord()
        self.chunk = max(1, min(self.CHUNK, CHUNK_BYTES // (3 * self.size[0] * self.size[1])))

    def _open_decord(self):
        import decord

        if self._im is not None:
            self._im.close()  # PyAV's container
            self._im = None
        decord.logging.set_level(decord.logging.QUIET)  # ffmpeg's complaints mid-stream
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
                for start in range(0, len(order), self.chunk):
                    frames = []
                    for i in order[start:start + self.chunk]:
                        self._im.seek(int(i))
                        frames.append(np.asarray(self._im.convert("RGB")))
                    yield frames
            else:
                for start in range(0, len(order), self.chunk):
                    batch = self._im.get_batch(order[start:start + self.chunk].tolist()).asnumpy()
                    if batch.shape[1:3] != self.size:
                        raise I3DError(f"{self.path}: frames of {batch.shape[2]}x{batch.shape[1]}"
                                       f", the stream said {self.size[1]}x{self.size[0]}")
                    yield batch
        except I3DError:
            raise
        except Exception as e:
            raise _unreadable(self.path, e) from None

    def _pyav_chunks(self, order: np.ndarray):
        want = {self._pts[i] for i in order.tolist()}
        first = self._pts[order[0]]
        key = max((k for k in self._keys if k <= first), default=self._pts[0])
        from av.video.reformatter import VideoReformatter

        buf, found, container = [], 0, self._im
        # one converter for all frames: frame.to_ndarray builds FFmpeg's swscale context anew
        # for every frame, which cost more than the conversion itself (0.77 vs 0.38 ms a frame)
        rgb = VideoReformatter()
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
                    if (frame.height, frame.width) != self.size:  # a new size mid-stream
                        raise I3DError(f"{self.path}: a frame of {frame.width}x{frame.height}, "
                                       f"the stream said {self.size[1]}x{self.size[0]}")
                    buf.append(rgb.reformat(frame, format="rgb24").to_ndarray())
                    found += 1
                    if len(buf) == self.chunk:
                        yield buf
                        buf = []
            if found == len(order):
                break
        if found < len(order):
            raise I3DError(f"{self.path}: {len(order) - found} frames missing after a seek")
        if buf:
            yield buf

    def close(self):
        if self._im is not None and hasattr(self._im, "close"):
            self._im.close()  # Pillow's image, PyAV's container (decord's reader has none)
        self._im = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _probe(path: str):
    """The file opened by PyAV (headers only: nothing decoded yet), with a video stream."""
    import av

    try:
        container = av.open(path)
    except Exception as e:
        raise _unreadable(path, e) from None
    if not container.streams.video:
        container.close()
        raise I3DError(f"{path}: no video stream")
    return container


def _pyav_index(container) -> tuple:
    """(the open PyAV container, sorted frame timestamps, keyframe timestamps) from the
    packets, or (container, None, None) when they cannot index the frames (missing or
    repeated timestamps)."""
    try:
        packets = [(p.pts, p.is_keyframe) for p in container.demux(container.streams.video[0])
                   if p.size]
    except Exception:
        packets = []
    pts = sorted(p for p, _ in packets if p is not None)
    if not pts or len(pts) < len(packets) or len(set(pts)) < len(pts):
        return container, None, None
    return container, pts, sorted(p for p, key in packets if key)


def open_video(path: str, fast: bool = False) -> VideoFile:
    """The video at `path`, open for `frames()` (see VideoFile for `fast`); one-line I3DError
    if it is missing, not a video, or has no frames."""
    try:
        video = VideoFile(path, fast)
    except I3DError:
        raise
    except Exception as e:
        raise _unreadable(path, e) from None
    if len(video) == 0:
        video.close()
        raise I3DError(f"{path}: the video has no frames")
    return video
