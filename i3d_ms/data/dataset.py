"""Random-access sources and their MindSpore GeneratorDatasets.

The training order is a pure function of (seed, step): every epoch is a seeded permutation,
sharded by rank, so a run resumed at step s reads exactly what the uninterrupted run read, and
no two ranks read the same video in an epoch. Missing and undecodable videos never stop a run:
a bad one is replaced by the next good video of the shard (deterministically), counted, and
logged once. Workers are threads (decord and numpy release the GIL), so the counts are shared.
"""
from __future__ import annotations

import logging
import threading

import numpy as np

from convert.errors import I3DError
from i3d_video import read_video

from i3d_video.clips import eval_clips, train_clip

log = logging.getLogger("i3d.data")


class _Skips:
    def __init__(self):
        self.bad, self._lock = {}, threading.Lock()

    def read(self, path):
        """The video, or None (recorded and logged once) if it is missing or undecodable."""
        if path in self.bad:
            return None
        try:
            return read_video(path)
        except Exception as e:  # I3DError or a decoder's own: a multi-day run outlives any file
            with self._lock:
                if path not in self.bad:
                    self.bad[path] = str(e).split(": ", 1)[-1]
                    log.warning("skipping %s: %s", path, self.bad[path])
            return None


class TrainSource(_Skips):
    """Row k = sample k of this rank from global step `start` on: (clip, label)."""

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
        for tries in range(len(shard)):
            v = self.videos[shard[(pos + tries) % len(shard)]]
            video = self.read(v.path)
            if video is not None:
                d = self.data
                rng = np.random.default_rng((self.seed, epoch, pos, tries))
                clip = train_clip(video, d["frames"], d["stride"], d["resize"], d["crop"],
                                  d["scales"], d["flip"], rng)
                return clip, np.int32(v.label)
        raise I3DError("no video of this shard can be read")


class EvalSource(_Skips):
    """Row i = every clip of video i: (clips (N, 3, T, H, W), label, valid). A bad video gives
    valid=0 and zeros, so workers keep shapes; the evaluator drops it."""

    def __init__(self, videos, data: dict, protocol: str, rank: int = 0, world: int = 1):
        super().__init__()
        self.videos, self.data, self.protocol = videos, data, protocol
        self.index = list(range(rank, len(videos), world))
        d = data
        n = 1 if protocol == "centre" else 3 * d["clips"]
        self.shape = (n, 3, d["frames"], d["crop"], d["crop"])

    def __len__(self):
        return len(self.index)

    def __getitem__(self, k):
        i = self.index[k]
        video, d = self.read(self.videos[i].path), self.data
        if video is None:
            return np.zeros(self.shape, np.float32), np.int32(self.videos[i].label), np.int32(i), np.int32(0)
        clips = eval_clips(video, d["frames"], d["stride"], d["resize"], d["crop"], self.protocol,
                           d["clips"])
        return np.stack(clips), np.int32(self.videos[i].label), np.int32(i), np.int32(1)


def train_dataset(source: TrainSource, workers: int):
    import mindspore.dataset as ds

    data = ds.GeneratorDataset(source, ["clip", "label"], shuffle=False,
                               num_parallel_workers=workers, python_multiprocessing=False)
    return data.batch(source.batch, drop_remainder=True)


def eval_dataset(source: EvalSource, workers: int, batch_clips: int = 32):
    """Rows of whole videos, as many per batch as fit in `batch_clips` clips."""
    import mindspore.dataset as ds

    data = ds.GeneratorDataset(source, ["clips", "label", "index", "valid"], shuffle=False,
                               num_parallel_workers=workers, python_multiprocessing=False)
    return data.batch(max(1, batch_clips // source.shape[0]))
