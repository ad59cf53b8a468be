"""`i3d fvd` (the Fréchet Video Distance of two sets, TF's reference protocol) and
`i3d features` (per-video I3D features and FVD statistics, resumable and shardable)."""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys

from convert.errors import I3DError

from .args import frames, positive
from .frameworks import FRAMEWORKS, twins
from .progress import Bar
from .weights import add_variant_option


def shard(value: str) -> tuple:
    """'i/n' -> (i, n), 0 <= i < n."""
    try:
        i, n = (int(p) for p in value.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected i/n, got {value!r}") from None
    if not 0 <= i < n:
        raise argparse.ArgumentTypeError(f"shard {value}: need 0 <= i < n")
    return i, n


def _mindspore_first(args):
    """MindSpore aborts when imported after decord, which opening a video loads; torch is
    imported later, once the input has been checked."""
    if args.framework == "mindspore":
        twins("mindspore", ms_mode=args.ms_mode)


def _extractor(args):
    """The extractor and what identifies its features (weights digest, variant)."""
    from convert.checkpoints import read_weights
    from fvd.extract import Extractor
    from convert.weights import weights_id

    if args.device == "cuda":
        import torch

        if args.framework != "torch" or not torch.cuda.is_available():
            raise I3DError("--device cuda: needs --framework torch and a CUDA device")
    weights, info = read_weights(args.weights, args.variant)
    ident = {"weights": weights_id(weights), "variant": info["variant"].name,
             "dtype": args.dtype}
    try:
        ex = Extractor(args.framework, weights, info["variant"], args.device, args.ms_mode,
                       args.dtype)
    except ValueError as e:
        raise I3DError(f"--dtype {e}") from None
    return ex, ident


def _side(path: str, args, stack):
    """('stats', (Stats, meta)) for a statistics file, else ('videos', videos)."""
    from fvd.sets import open_set, read_stats

    if path.endswith(".npz") and os.path.isfile(path):
        got = read_stats(path)
        if got is not None:
            return "stats", got
    return "videos", open_set(path, stack)


def cmd_fvd(args) -> int:
    from fvd.distance import Stats, frechet_distance, kvd
    from fvd.features import PROTOCOL, set_logits
    from fvd.sets import common_length

    _mindspore_first(args)
    with contextlib.ExitStack() as stack:
        extractor, ident = None, None
        sides = [_side(p, args, stack) for p in (args.real, args.generated)]
        lengths = [common_length(v, args.frames) if kind == "videos" else None
                   for kind, v in sides]
        stats, metas, features = [], [], []
        for path, (kind, value) in zip((args.real, args.generated), sides):
            if kind == "videos" and len(value) < 2:
                raise I3DError(f"{path}: FVD needs at least 2 videos, the set has {len(value)}")
        for path, (kind, value), t in zip((args.real, args.generated), sides, lengths):
            if kind == "stats":
                if args.kvd:
                    raise I3DError(f"{path}: --kvd needs the features, not their statistics")
                s, meta = value
                stats.append(s)
                metas.append((path, meta))
                continue
            if extractor is None:
                extractor, ident = _extractor(args)
            if t < extractor.min_frames:
                raise I3DError(f"{path}: {t} frames per video, but the network needs at least "
                               f"{extractor.min_frames}")
            bar = Bar(f"[fvd] {os.path.basename(os.path.normpath(path))}", len(value))
            try:
                features.append(set_logits(value, t, extractor, args.batch, bar, args.workers))
            finally:
                bar.close()
            stats.append(Stats.of(features[-1]))
            metas.append((path, {"protocol": PROTOCOL, "frames": t, **ident}))
    (pa, a), (pb, b) = metas
    for key in ("protocol", "frames", "weights", "variant", "dtype"):
        if a.get(key) != b.get(key):
            raise I3DError(f"{pb}: {key} {b.get(key)}, but {pa} has {a.get(key)}: the two "
                           "sets' features are not comparable")
    value = frechet_distance(*stats)
    out = {"fvd": value, "protocol": PROTOCOL, "frames": a["frames"], "framework": args.framework,
           "weights": a["weights"], "variant": a["variant"], "dtype": a["dtype"],
           "videos": [s.count for s in stats], "sets": [args.real, args.generated]}
    if args.kvd:
        try:
            out["kvd"], std = kvd(*features)
            out["kvd_std"] = std if std == std else None  # one block: no spread
        except ValueError as e:
            raise I3DError(f"--kvd: {e}") from None
    if args.json:
        print(json.dumps(out))
    else:
        print(f"FVD {value:.4f}  ({stats[0].count} and {stats[1].count} videos, "
              f"{a['frames']} frames, {PROTOCOL} protocol, {args.framework})")
        if args.kvd:
            spread = f" +- {out['kvd_std']:.4f}" if out["kvd_std"] is not None else ""
            print(f"KVD {out['kvd']:.4f}{spread}")
    return 0


def cmd_features(args) -> int:
    from fvd import features as F
    from fvd.sets import open_set

    if args.stride is not None and args.window is None:
        raise I3DError("--stride needs --window")
    _mindspore_first(args)
    os.makedirs(args.out, exist_ok=True)
    with contextlib.ExitStack() as stack:
        unopened = []  # videos that cannot be read: skipped, counted and listed
        videos = [v for p in args.videos for v in open_set(p, stack, unopened)]
        F.check_stems(videos)
        if args.stats:
            from convert.fileio import check_destination

            check_destination(args.stats, args.force)
        mine = videos[args.shard[0]::args.shard[1]]
        extractor, ident = _extractor(args)
        if (args.window or extractor.min_frames) < extractor.min_frames:
            raise I3DError(f"--window {args.window}: the network needs at least "
                           f"{extractor.min_frames} frames")
        settings = {"protocol": F.PROTOCOL, **ident, "framework": args.framework,
                    "window": args.window, "stride": args.stride, "frames_asked": args.frames,
                    "per_time": args.per_time, "version": F.VERSION}
        bar = Bar("[features]", len(mine))
        try:
            written, kept, bad = F.extract(mine, args.out, extractor, settings, args.batch,
                                           args.per_time, args.force, bar, args.workers)
        finally:
            bar.close()
        bad = unopened[args.shard[0]::args.shard[1]] + bad
    print(f"{written} written, {kept} already there, {len(bad)} skipped -> {args.out}")
    for reason in bad:
        print(f"skipped: {reason}", file=sys.stderr)
    if args.stats:
        paths = [os.path.join(args.out, v.stem + ".npz") for v in videos]
        missing = [p for p in paths if not os.path.exists(p)]
        if missing:
            raise I3DError(f"{missing[0]}: missing ({len(missing)} of {len(paths)} videos have "
                           "no features yet: other shards, or skipped): no statistics written")
        stats, meta = F.stats_of_files(paths)
        F.write_stats(args.stats, stats, meta, args.force)
        print(f"statistics of {stats.count} videos -> {args.stats}")
    return 1 if bad else 0


def _common(q):
    q.add_argument("--frames", type=frames, default=None, metavar="N|all",
                   help="the first N frames of each video (default: all)")
    q.add_argument("--framework", choices=FRAMEWORKS, default="torch")
    q.add_argument("--weights", default="default", help="'default' (DeepMind's Kinetics-400 "
                   "RGB, the FVD network) or a weight file")
    add_variant_option(q)
    q.add_argument("--batch", type=positive, default=4, help="clips per forward (default 4)")
    q.add_argument("--workers", type=positive, default=2,
                   help="threads decoding and resizing ahead of the network (default 2)")
    q.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    q.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default="float32",
                   help="the network's precision (torch autocast; FVD's reference: float32)")
    q.add_argument("--ms-mode", choices=("pynative", "graph"), default="graph",
                   help="MindSpore's mode (graph: compiled once, then fastest)")


def register(sub):
    q = sub.add_parser("fvd", help="Fréchet Video Distance of two sets (TF's reference protocol)",
                       description="Each set: a folder of videos, a folder of frame folders, "
                       "an .npy/.npz array (N, T, H, W, 3) of uint8 or floats in [0, 1], or a "
                       "statistics file of `i3d features --stats`. Every frame is resized to "
                       "224x224 as TF 1.x's resize_bilinear does, scaled to [-1, 1]; the "
                       "features are the 400 logits averaged over time; the distance is "
                       "TF-GAN's, in float64.")
    q.add_argument("real")
    q.add_argument("generated")
    _common(q)
    q.add_argument("--kvd", action="store_true", help="also the kernel distance (TF-GAN's "
                   "KID estimator on the same features, blocks of 1024)")
    q.add_argument("--json", action="store_true", help="print one JSON object")
    q.set_defaults(func=cmd_fvd)

    q = sub.add_parser("features", help="per-video I3D features (and FVD statistics)",
                       description="One OUT/<video>.npz per video: for each window, the "
                       "time-averaged logits and the 1024-d pooled Mixed_5c features (with "
                       "--per-time, one per 8 frames), and the settings. Videos whose file "
                       "exists with the same settings are skipped (resume); --shard i/n takes "
                       "every n-th video from the i-th.")
    q.add_argument("videos", nargs="+", help="video files, folders of videos or frame "
                   "folders, .npy/.npz arrays")
    q.add_argument("--out", required=True, help="output folder")
    _common(q)
    q.add_argument("--window", type=positive, default=None,
                   help="frames per window (default: one window of the whole video)")
    q.add_argument("--stride", type=positive, default=None, help="window step (default: --window)")
    q.add_argument("--per-time", action="store_true",
                   help="also the pooled Mixed_5c features per 8 frames (piergiaj's layout)")
    q.add_argument("--shard", type=shard, default=(0, 1), metavar="I/N")
    q.add_argument("--stats", metavar="FILE.npz",
                   help="write the FVD statistics (mean, covariance, count) of all the videos")
    q.add_argument("--force", action="store_true", help="recompute and overwrite")
    q.set_defaults(func=cmd_features)
