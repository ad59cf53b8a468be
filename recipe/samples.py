"""Random-access training and evaluation samples, numpy only (each framework's loop feeds them
to its own pipeline: `i3d_ms.pipeline`, `i3d_torch.train`).

The training order is a pure function of (seed, step): every epoch is a seeded permutation,
sharded by rank, so a run resumed at step s reads exactly what the uninterrupted run read, and
no two ranks read the same video in an epoch; augmentation draws from (seed, rank, epoch,
position), so ranks do not crop alike. Missing and undecodable videos never stop a run: a bad
one is replaced by the next good video of the shard (deterministically), counted, and logged
once. Workers are threads (decord, Pillow and numpy release the GIL), so the counts are shared.

Clips travel as uint8, (T, H, W, 3) per clip: only the frames a clip needs are decoded, each is
resized as it arrives (`i3d_video.clips`), and the device scales to [-1, 1]
(`i3d_ms.network.to_input`, `i3d_torch.trainer.to_input`).
"""
from __future__ import annotations

import logging
import os
import threading

import numpy as np

from convert.errors import I3DError
from i3d_video.clips import PROTOCOLS, eval_clip, eval_indices, train_clip
from i3d_video.decode import open_video
from i3d_video.protocol import scale

log = logging.getLogger("i3d.data")
PREFETCH = 2  # batches queued per pipeline stage: a bound on the memory decoded clips hold


def workers(setting, local_ranks: int = 1) -> int:
    """`data.workers`: a number, or 'auto' = the cores this process may use, shared among the
    ranks on this machine."""
    if setting != "auto":
        return max(1, int(setting))
    return max(1, len(os.sched_getaffinity(0)) // max(1, local_ranks))


class _Skips:
    def __init__(self):
        self.bad, self._lock = {}, threading.Lock()

    def read(self, path, fn, fast=False):
        """fn(the open video), or None (recorded and logged once) if it is missing or cannot be
        decoded into a clip."""
        if path in self.bad:
            return None
        try:
            with open_video(path, fast) as video:
                return fn(video)
        except Exception as e:  # I3DError or a decoder's own: a multi-day run outlives any file
            with self._lock:
                if path not in self.bad:
                    self.bad[path] = str(e).split(": ", 1)[-1]
                    log.warning("skipping %s: %s", path, self.bad[path])
            return None


class TrainSource(_Skips):
    """Row k = sample k of this rank from global step `start` on: (clip uint8 (T, H, W, 3),
    label, flip), flip for the device to mirror the clip."""

    def __init__(self, videos, data: dict, batch: int, steps: int, start: int = 0,
                 seed: int = 0, rank: int = 0, world: int = 1):
        super().__init__()
        self.videos, self.data, self.batch, self.seed = videos, data, batch, seed
        self.shard_len = len(videos) // world
        self.steps_per_epoch = self.shard_len // batch
        if self.steps_per_epoch < 1:
            raise I3DError(f"{len(videos)} videos cannot fill a batch of {batch} on each of "
                           f"{world} ranks")
        self.rank, self.world, self.start, self.steps = rank, world, start, steps
        self.failed = None

    def shard(self, epoch: int) -> np.ndarray:
        perm = np.random.default_rng((self.seed, epoch)).permutation(len(self.videos))
        return perm[self.rank::self.world][: self.shard_len]

    def __len__(self):
        return (self.steps - self.start) * self.batch

    def __getitem__(self, k):
        step, j = divmod(k, self.batch)
        step += self.start
        epoch, pos = divmod(step, self.steps_per_epoch)
        shard = self.shard(epoch)
        pos = pos * self.batch + j
        d = self.data
        for tries in range(len(shard)):
            v = self.videos[shard[(pos + tries) % len(shard)]]
            rng = np.random.default_rng((self.seed, self.rank, epoch, pos, tries))
            clip = self.read(v.path, lambda video: train_clip(
                video, d["frames"], d["stride"], d["resize"], d["crop"], d["scales"], d["flip"], rng),
                fast=True)
            if clip is not None:
                return clip[0], np.int32(v.label), np.bool_(clip[1])
        # MindSpore hands a worker's exception on as a multi-line RuntimeError: the training
        # loop raises this one instead (`failed`)
        path, why = next(iter(self.bad.items()), ("?", "?"))
        self.failed = I3DError(f"no video of this shard can be read ({len(self.bad)} skipped; "
                               f"{path}: {why})")
        raise self.failed


class EvalSource(_Skips):
    """Row r = one temporal clip of one video of this rank's shard (videos rank, rank + world,
    ...): (clips, label, video index, valid). 'centre' and 'whole' give one row per video,
    'multi' `data.clips` rows of 3 crops each. clips is DeepMind's model input, float32
    (k, 3, T, H, W) in [-1, 1], or with `uint8` the clip as decoded, (k, T, H, W, 3), for the
    device to scale. A bad video gives valid=0 and zeros, so workers keep shapes; the
    evaluator drops it."""

    def __init__(self, videos, data: dict, protocol: str, rank: int = 0, world: int = 1,
                 uint8: bool = False, max_frames: int = 300):
        super().__init__()
        if protocol not in PROTOCOLS:
            raise I3DError(f"protocol must be one of {', '.join(PROTOCOLS)}, got {protocol!r}")
        self.videos, self.data, self.protocol, self.uint8 = videos, data, protocol, uint8
        self.max_frames, d = max_frames, data
        self.k = 3 if protocol == "multi" else 1
        per_video = d["clips"] if protocol == "multi" else 1
        self.rows = [(i, j) for i in range(rank, len(videos), world) for j in range(per_video)]
        clip = (d["frames"], d["crop"], d["crop"], 3) if uint8 else (3, d["frames"], d["crop"], d["crop"])
        self.shape = (self.k, *clip)

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, r):
        i, j = self.rows[r]
        v, d = self.videos[i], self.data

        def clip(video):
            idx = eval_indices(len(video), self.protocol, d["frames"], d["stride"], d["clips"],
                               self.max_frames)[j]
            return eval_clip(video, idx, d["resize"], d["crop"], self.k)

        clips = self.read(v.path, clip)
        if clips is None:
            return (np.zeros(self.shape, np.uint8 if self.uint8 else np.float32),
                    np.int32(v.label), np.int32(i), np.int32(0))
        if not self.uint8:
            clips = np.ascontiguousarray(scale(clips).transpose(0, 4, 1, 2, 3))
        return clips, np.int32(v.label), np.int32(i), np.int32(1)

    def rows_per_batch(self, batch_clips: int) -> int:
        """Rows per batch for `batch_clips` clips; one for 'whole' (every video its length)."""
        return 1 if self.protocol == "whole" else max(1, batch_clips // self.k)


def batches(source, rows: int, workers: int, drop_remainder: bool = False):
    """Rows of `source` stacked `rows` at a time, column by column, in order, decoded by
    `workers` threads at most `PREFETCH` batches ahead (the framework-free pipeline the torch
    loop uses; MindSpore's is `i3d_ms.pipeline`). A source's error is raised as itself."""
    from concurrent.futures import ThreadPoolExecutor

    n = len(source) - len(source) % rows if drop_remainder else len(source)
    starts = range(0, n, rows)
    with ThreadPoolExecutor(max(1, workers)) as pool:
        pending = []
        for start in starts:
            pending.append([pool.submit(source.__getitem__, k)
                            for k in range(start, min(start + rows, n))])
            if len(pending) > PREFETCH:
                yield _stack(pending.pop(0))
        while pending:
            yield _stack(pending.pop(0))


def _stack(futures) -> tuple:
    rows = [f.result() for f in futures]
    return tuple(np.stack(column) for column in zip(*rows))
