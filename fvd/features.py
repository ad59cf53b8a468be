"""Features of video sets with one twin: the FVD features of a set (time-averaged logits of each
whole video, TF's protocol) and, for `i3d features`, per-video files of windows (logits, the
1024-d pooled Mixed_5c features, optionally per 8 frames), batched across windows and videos,
each file written atomically, resumable and shardable, and the statistics FVD needs."""
from __future__ import annotations

import collections
import contextlib
import json
import os

import numpy as np

from convert.errors import I3DError, printable
from convert.fileio import atomic_output

from .arrays import json_member, open_arrays, save_npz
from .distance import Stats
from .protocol import fvd_frames
from .sets import STATS_KIND

PROTOCOL = "tf-fvd"  # google-research frechet_video_distance.py: TF1 bilinear to 224, 2x/255-1
VERSION = 1          # of the per-video files' layout


def prefetched(jobs, workers: int):
    """Each job's result (or the I3DError it raised), in order, computed up to 2 x `workers`
    jobs ahead in threads: decoding and resizing overlap the network (decord, zlib and numpy's
    large operations release the GIL), and memory holds only the jobs in flight."""
    from concurrent.futures import ThreadPoolExecutor

    def run(job):
        try:
            return job()
        except I3DError as e:
            return e

    with ThreadPoolExecutor(max(workers, 1)) as pool:
        pending = collections.deque()
        for job in jobs:
            pending.append(pool.submit(run, job))
            if len(pending) > 2 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def _workers(videos: list, workers: int) -> int:
    return 1 if any(v.sequential for v in videos) else workers  # array sets: rows in order


def set_logits(videos: list, frames: int, extractor, batch: int, progress=None,
               workers: int = 2) -> np.ndarray:
    """(N, classes) float32: each video's first `frames` frames, TF's protocol, logits averaged
    over time: the FVD reference's features. A video that cannot be read raises."""
    out, clips = [], []
    jobs = (lambda v=v: v.read(0, frames, fvd_frames) for v in videos)
    for clip in prefetched(jobs, _workers(videos, workers)):
        if isinstance(clip, I3DError):
            raise clip
        clips.append(clip)
        if len(clips) == batch or len(out) * batch + len(clips) == len(videos):
            out.append(extractor(np.stack(clips))["Logits"])
            clips = []
            if progress:
                progress(min(len(out) * batch, len(videos)))
    return np.concatenate(out)


def windows(frames: int, window: int | None, stride: int | None) -> list:
    """Start frames of the windows over a video's first `frames` (window None: one, all)."""
    if window is None:
        return [0]
    return list(range(0, frames - window + 1, stride or window))


def _plan(video, path: str, settings: dict, min_frames: int) -> dict:
    """What to compute for one video: its windows; I3DError if it cannot have any."""
    frames, window, stride = settings["frames_asked"], settings["window"], settings["stride"]
    n = video.length if frames is None else frames
    if n > video.length:
        raise I3DError(f"{video.name}: {video.length} frames, fewer than --frames {n}")
    if (window or n) < min_frames:
        raise I3DError(f"{video.name}: {window or n} frames, fewer than the network's "
                       f"{min_frames}")
    starts = windows(n, window, stride)
    if not starts:
        raise I3DError(f"{video.name}: {n} frames, shorter than the {window}-frame window")
    return {"path": path, "rows": [], "starts": starts, "length": window or n, "error": None,
            "meta": {**settings, "video": video.name, "frames": n}}


def extract(videos: list, out_dir: str, extractor, settings: dict, batch: int,
            per_time: bool = False, force: bool = False, progress=None,
            workers: int = 2) -> tuple:
    """Writes out_dir/<stem>.npz per video (windows' logits, features, starts; settings in
    `meta`); a file already there with the same settings is kept. Windows of all videos go
    through the network in batches. Returns (written, kept, bad): bad lists the one-line
    reasons of videos that could not be read or are too short."""
    count = {"written": 0, "kept": 0, "done": 0}
    bad, pending = [], []

    def finished():
        count["done"] += 1
        if progress:
            progress(count["done"])

    def jobs():
        for video in videos:
            path = os.path.join(out_dir, video.stem + ".npz")
            if not force and os.path.exists(path):
                _check_kept(path, settings)
                count["kept"] += 1
                finished()
                continue
            try:
                v = _plan(video, path, settings, extractor.min_frames)
            except I3DError as e:
                bad.append(str(e))
                finished()
                continue
            for s in v["starts"]:
                yield v, (lambda video=video, s=s, n=v["length"]: video.read(s, s + n, fvd_frames))

    def flush():
        outs = extractor(np.stack([c for _, c in pending]))
        for j, (v, _) in enumerate(pending):
            v["rows"].append({k: outs[k][j] for k in ("Logits", "Features", "PerTimeFeatures")})
            if len(v["rows"]) == len(v["starts"]):
                _write(v, per_time, force)
                count["written"] += 1
                finished()
        pending.clear()

    plan = jobs()
    order = collections.deque()  # the window each prefetched result belongs to

    def windows_only():
        for v, job in plan:
            order.append(v)
            yield job

    for clip in prefetched(windows_only(), _workers(videos, workers)):
        v = order.popleft()
        if v["error"] is not None:
            continue
        if isinstance(clip, I3DError):
            v["error"] = str(clip)
            bad.append(v["error"])
            finished()
            continue
        pending.append((v, clip))
        if len(pending) == batch:
            flush()
    if pending:
        flush()
    return count["written"], count["kept"], bad


def _write(v: dict, per_time: bool, force: bool):
    rows = v["rows"]
    arrays = {"logits": np.stack([r["Logits"] for r in rows]),
              "features": np.stack([r["Features"] for r in rows]),
              "starts": np.asarray(v["starts"], np.int64),
              "meta": np.array(json.dumps(v["meta"]))}
    if per_time:
        arrays["per_time_features"] = np.stack([r["PerTimeFeatures"] for r in rows])
    with atomic_output(v["path"], force=force) as tmp:
        save_npz(tmp, arrays)


_SAME = ("protocol", "weights", "variant", "dtype", "window", "stride", "frames_asked",
         "per_time", "version")


def _check_kept(path: str, settings: dict):
    with contextlib.ExitStack() as stack:
        meta = json_member(open_arrays(path, stack), "meta", path)
    for k in _SAME:
        if meta.get(k) != settings.get(k):
            raise I3DError(f"{path}: made with {k} {printable(meta.get(k))}, not "
                           f"{settings.get(k)} (--force recomputes it)")


def stats_of_files(paths: list) -> tuple:
    """(Stats, metadata) of the FVD features in per-video files: one window each, all of the
    same frames and settings."""
    feats, first = [], None
    for path in paths:
        with contextlib.ExitStack() as stack:
            arrays = open_arrays(path, stack)
            meta = json_member(arrays, "meta", path)
            logits = arrays.get("logits")
            if logits is None or len(logits.shape) != 2 or logits.shape[0] != 1 or \
                    logits.dtype != np.float32 or not 0 < logits.shape[1] <= 8192:
                raise I3DError(f"{path}: FVD statistics take one whole-video window per video "
                               "(features made without --window)")
            feats.append(logits.read()[0])
        if first is None:
            first = meta
        for k in _SAME + ("frames",):
            if meta.get(k) != first.get(k):
                raise I3DError(f"{path}: {k} {printable(meta.get(k))}, but {paths[0]} has "
                               f"{printable(first.get(k))}")
    keep = {k: first[k] for k in ("protocol", "weights", "variant", "dtype", "frames", "framework")}
    return Stats.of(np.stack(feats)), keep


def write_stats(path: str, stats: Stats, meta: dict, force: bool = False):
    info = {**meta, "kind": STATS_KIND, "count": stats.count}
    with atomic_output(path, force=force) as tmp:
        save_npz(tmp, {"mean": stats.mean, "cov": stats.cov,
                       "count": np.array(stats.count, np.int64),
                       "meta": np.array(json.dumps(info))})


def check_stems(videos: list):
    """Two videos whose outputs would share a name are refused before anything runs."""
    seen = {}
    for v in videos:
        if v.stem in seen:
            raise I3DError(f"{v.name}: same output name {v.stem!r} as {seen[v.stem]}")
        seen[v.stem] = v.name
