"""The MindSpore training side of `i3d`: train, eval, make-dataset, check-videos. Handlers
import MindSpore (through `i3d_ms`) when they run, before any video is decoded."""
from __future__ import annotations

import json
import os

from .args import non_negative, positive
from .weights import add_variant_option


def _backend(framework: str):
    """The framework's backend of the loop and the evaluation (MindSpore imported before
    anything decodes)."""
    if framework == "torch":
        from i3d_torch.train import TorchBackend

        return TorchBackend()
    from i3d_ms.train import MindSporeBackend

    return MindSporeBackend()


def cmd_train(args) -> int:
    backend = _backend(args.framework)
    from recipe.config import load_config
    from recipe.loop import train

    cfg = _with_variant(load_config(args.config, args.overrides), args.variant)
    summary, _ = train(cfg, backend, resume=args.resume, pretrained=args.pretrained)
    if summary["rank"] == 0:
        bad = summary["skipped"]
        print(f"trained steps {summary['start']}..{summary['steps']} with {args.framework} on "
              f"{summary['world']} device(s) in {summary['seconds']} s; last loss {summary['last_loss']:.4f}; "
              f"outputs in {cfg['train']['out']}")
        for path, why in bad.items():
            print(f"skipped {path}: {why}")
    return 0


def cmd_eval(args) -> int:
    backend = _backend(args.framework)
    from recipe.config import load_config
    from recipe.evaluation import evaluate

    overrides = list(args.overrides)
    if args.data:
        overrides.append(f"data.{'root' if os.path.isdir(args.data) else 'val'}={args.data}")
    if args.device:
        overrides.append(f"train.device={args.device}")
    cfg = _with_variant(load_config(args.config, overrides), args.variant)
    m = evaluate(cfg, args.checkpoint, backend, args.protocol, args.csv, args.force)
    if args.json:
        print(json.dumps(m))
        return 0
    if "video_top1" in m:
        print(f"{m['videos']} videos, {m['clips']} clips")
        for level in ("clip", "video"):
            print(f"  {level:<6} top-1 {m[level + '_top1']:.2%}  top-5 {m[level + '_top5']:.2%}  "
                  f"mean class {m[level + '_mean_class']:.2%}")
    for path, why in m["skipped"].items():
        print(f"skipped {path}: {why}")
    if args.csv:
        print(f"per-video predictions: {args.csv}")
    return 0


def cmd_make_dataset(args) -> int:
    from i3d_ms.make_dataset import make_dataset

    out = make_dataset(args.out, args.classes, args.videos_per_class, args.val_per_class,
                       args.frames, args.height, args.width, args.seed, args.fps)
    print(f"{args.out}: {out['train']} train and {out['val']} val videos of "
          f"{len(out['classes'])} classes ({', '.join(out['classes'])})")
    return 0


def cmd_check_videos(args) -> int:
    from recipe.sources import check_videos, read_source

    videos = read_source(args.source, args.split)
    bad = check_videos(videos)
    for path, why in bad:
        print(f"{path}: {why}")
    print(f"{len(videos) - len(bad)} of {len(videos)} videos readable, {len(bad)} bad")
    return 1 if bad else 0


def _with_variant(cfg: dict, variant) -> dict:
    """`--variant` is model.variant: the network's numerics, which the weights it starts from
    must have (a file that records another is refused)."""
    if variant is not None:
        cfg["model"]["variant"] = variant.name
    return cfg


def _config_args(q):
    q.add_argument("--config", required=True, help="YAML file (see config/)")
    q.add_argument("overrides", nargs="*", metavar="SECTION.KEY=VALUE",
                   help="override config settings, e.g. train.lr=0.01 data.workers=8")


def register(subparsers):
    q = subparsers.add_parser("train", help="train or fine-tune a twin (msrun or torchrun for many devices)")
    _config_args(q)
    q.add_argument("--framework", choices=("mindspore", "torch"), default="mindspore",
                   help="the loop's framework (one recipe; either resumes the other's checkpoints)")
    q.add_argument("--resume", action="store_true",
                   help="continue from the last checkpoint in train.out (weights, optimizer, step, data order)")
    q.add_argument("--pretrained", metavar="CKPT",
                   help="start from these weights (overrides model.weights; 'scratch' for none)")
    add_variant_option(q, "model.variant: the network's and its pretrained weights' variant")
    q.set_defaults(func=cmd_train)

    q = subparsers.add_parser("eval", help="top-1/top-5/mean class accuracy of a checkpoint")
    _config_args(q)
    q.add_argument("--checkpoint", required=True, help="a training checkpoint, 'default', or any weight file")
    q.add_argument("--protocol", choices=("centre", "multi", "whole"),
                   help="one centre clip of data.frames, data.clips uniform clips x 3 crops, or "
                        "DeepMind's whole video (up to eval.max_frames); default: the config's")
    q.add_argument("--data", help="Kinetics root or val list file (overrides the config)")
    q.add_argument("--device", choices=("CPU", "GPU"))
    q.add_argument("--framework", choices=("mindspore", "torch"), default="mindspore",
                   help="the twin that scores the clips (a checkpoint of either loop)")
    add_variant_option(q, "model.variant: the network's and the checkpoint's variant")
    q.add_argument("--csv", help="write per-video predictions here (checked before the run)")
    q.add_argument("--force", action="store_true", help="overwrite an existing --csv file")
    q.add_argument("--json", action="store_true", help="print the metrics as one JSON object")
    q.set_defaults(func=cmd_eval)

    q = subparsers.add_parser("make-dataset", help="write a small motion-direction dataset (Kinetics layout, mp4)")
    q.add_argument("out")
    q.add_argument("--classes", type=positive, default=4)
    q.add_argument("--videos-per-class", type=positive, default=48, help="training videos per class")
    q.add_argument("--val-per-class", type=non_negative, default=8)
    q.add_argument("--frames", type=positive, default=16)
    q.add_argument("--height", type=positive, default=48)
    q.add_argument("--width", type=positive, default=64)
    q.add_argument("--fps", type=positive, default=25,
                   help="frame rate (Kinetics-shaped: --frames 300 --height 256 --width 340 --fps 30)")
    q.add_argument("--seed", type=int, default=0)
    q.set_defaults(func=cmd_make_dataset)

    q = subparsers.add_parser("check-videos", help="list missing and undecodable videos (exit 1 if any)")
    q.add_argument("source", help="a list file ('PATH LABEL' lines) or a Kinetics root")
    q.add_argument("--split", default="train", help="the CSV split of a Kinetics root")
    q.set_defaults(func=cmd_check_videos)
