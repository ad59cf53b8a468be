"""Features of video sets with one twin: the FVD features of a set (time-averaged logits of each
whole video, TF's protocol) and, for `i3d features`, per-video files of windows (logits, the
1024-d pooled Mixed_5c features, optionally per 8 frames), batched across windows and videos,
each file written atomically, resumable and shardable, and the statistics FVD needs."""
from __future__ import annotations

import contextlib
import hashlib
import json
import os

import numpy as np

from convert.errors import I3DError, printable
from convert.fileio import atomic_output

from .arrays import open_arrays, save_npz
from .distance import Stats
from .protocol import fvd_frames
from .sets import STATS_KIND

PROTOCOL = "tf-fvd"  # google-research frechet_video_distance.py: TF1 bilinear to 224, 2x/255-1
VERSION = 1          # of the per-video files' layout


def weights_id(weights: dict) -> str:
    """A digest of the canonical weights (names and float32 bytes): equal for the same weights
    in any file format, so outputs of a converted file are known to be comparable."""
    h = hashlib.sha256()
    for unit in sorted(weights):
        for k in sorted(weights[unit]):
            h.update(f"{unit}/{k}".encode() + b"\0")
            h.update(np.ascontiguousarray(weights[unit][k], np.float32).tobytes())
    return h.hexdigest()[:16]


def set_logits(videos: list, frames: int, extractor, batch: int, progress=None) -> np.ndarray:
    """(N, classes) float32: each video's first `frames` frames, TF's protocol, logits averaged
    over time: the FVD reference's features."""
    out = []
    for i in range(0, len(videos), batch):
        clips = np.stack([v.read(0, frames, fvd_frames) for v in videos[i:i + batch]])
        out.append(extractor(clips)["Logits"])
        if progress:
            progress(min(i + batch, len(videos)))
    return np.concatenate(out)


def windows(frames: int, window: int | None, stride: int | None) -> list:
    """Start frames of the windows over a video's first `frames` (window None: one, all)."""
    if window is None:
        return [0]
    return list(range(0, frames - window + 1, stride or window))


@contextlib.contextmanager
def _skipping(bad: list):
    try:
        yield
    except I3DError as e:
        bad.append(str(e))


def extract(videos: list, out_dir: str, extractor, settings: dict, batch: int,
            per_time: bool = False, force: bool = False, progress=None) -> tuple:
    """Writes out_dir/<name>.npz per video (windows' logits, features, starts; settings in
    `meta`); a file already there with the same settings is kept. Returns (written, kept, bad):
    bad lists the one-line reasons of videos that could not be read or are too short."""
    written, kept, bad, pending = 0, 0, [], []
    frames, window, stride = settings["frames"], settings["window"], settings["stride"]

    def flush():
        nonlocal written
        if not pending:
            return
        outs = extractor(np.stack([c for _, _, c in pending]))
        for j, (v, k, _) in enumerate(pending):
            v["rows"].append({key: outs[key][j] for key in ("Logits", "Features", "PerTimeFeatures")})
            if len(v["rows"]) == v["count"]:
                _write(v, per_time, force)
                written += 1
        pending.clear()

    for done, video in enumerate(videos, 1):
        path = os.path.join(out_dir, video.stem + ".npz")
        if not force and os.path.exists(path):
            _check_kept(path, settings)
            kept += 1
        else:
            with _skipping(bad):
                n = video.length if frames is None else frames
                if n > video.length:
                    raise I3DError(f"{video.name}: {video.length} frames, fewer than --frames {n}")
                if (window or n) < extractor.min_frames:
                    raise I3DError(f"{video.name}: {window or n} frames, fewer than the "
                                   f"network's {extractor.min_frames}")
                starts = windows(n, window, stride)
                if not starts:
                    raise I3DError(f"{video.name}: {n} frames, shorter than the {window}-frame window")
                v = {"path": path, "rows": [], "count": len(starts), "starts": starts,
                     "meta": {**settings, "video": video.name, "frames": n}}
                for s in starts:
                    pending.append((v, s, video.read(s, s + (window or n), fvd_frames)))
                    if len(pending) == batch:
                        flush()
        if progress:
            progress(done)
    flush()
    return written, kept, bad


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


def _read_meta(path: str, arrays: dict) -> dict:
    meta = arrays.get("meta")
    if meta is None or meta.dtype.kind != "U" or meta.shape != () or meta.nbytes > 1 << 16:
        raise I3DError(f"{path}: not a features file of this tool (no metadata)")
    try:
        return json.loads(str(meta.read()[()]))
    except ValueError:
        raise I3DError(f"{path}: metadata is not JSON") from None


_SAME = ("protocol", "weights", "variant", "window", "stride", "frames_asked", "per_time", "version")


def _check_kept(path: str, settings: dict):
    with contextlib.ExitStack() as stack:
        meta = _read_meta(path, open_arrays(path, stack))
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
            meta = _read_meta(path, arrays)
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
    keep = {k: first[k] for k in ("protocol", "weights", "variant", "frames", "framework")}
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
