"""`i3d parity`: the parity suite as a report (table, JSON, markdown, PNG)."""
from __future__ import annotations

import numpy as np

from .args import frames, positive, positive_float
from .frameworks import twins
from .weights import add_variant_option


def cmd_parity(args) -> int:
    """The report files are checked before the run and written together after it."""
    from convert.checkpoints import read_weights
    from convert.fileio import atomic_outputs
    from convert.weights import num_classes
    from i3d_video import model_clip
    from parity_tests import report, run

    if args.training:
        return _training(args)
    files = {w: path for w, path in ((report.write_json, args.json),
                                     (report.write_markdown, args.markdown),
                                     (report.write_plot, args.plot)) if path}
    with atomic_outputs(list(files.values()), args.force) as temps:
        mindir = any(p.lower().endswith(".mindir") for p in args.exports)
        twins(*(fw for fw in args.frameworks if fw != "jax"), *(["mindspore"] if mindir else []),
              ms_mode=args.ms_mode)
        weights, info = read_weights(args.weights, args.variant)
        clip = model_clip(args.video, args.frames, info["variant"])
        x = run.batch_of(clip, args.batch)
        reports = [run.forward(weights, x, args.frameworks, args.dtype, args.tolerance,
                               info["variant"], args.ms_mode, args.weights == "default",
                               outputs=_exported(args.exports, x, info["variant"]))]
        print(report.text(reports[0]))
        if args.backward:
            # A seeded random batch: on real clips some ReLU inputs sit within float32 noise
            # of zero, where any two float32 implementations may route a gradient differently.
            rng = np.random.RandomState(0)
            n = args.backward_size
            small = rng.uniform(-1, 1, (2, 3, args.backward_frames, n, n)).astype(np.float32)
            y = rng.randint(0, num_classes(weights), 2)
            reports.append(run.backward(weights, small, y, args.steps or 5, args.tolerance or 1e-4,
                                        info["variant"], head="global"))
            print()
            print(report.text(reports[-1]))
        for write, tmp in zip(files, temps):
            write(reports, tmp)
    return 0 if all(r["ok"] for r in reports) else 1


def _training(args) -> int:
    """`--training CONFIG`: both frameworks' loops step by step (`parity_tests.training`)."""
    import i3d_ms  # noqa: F401  (MindSpore before anything decodes)
    from convert.errors import I3DError
    from convert.fileio import atomic_outputs
    from i3d_torch.trainer import PITFALLS
    from parity_tests import report, training
    from recipe.config import load_config

    from .progress import Bar

    for p in args.pitfall:
        if p not in PITFALLS:
            raise I3DError(f"--pitfall {p}: not one of {', '.join(PITFALLS)}")
    cfg = load_config(args.training, args.set)
    files = {w: path for w, path in ((report.write_json, args.json),
                                     (report.write_markdown, args.markdown),
                                     (report.write_plot, args.plot)) if path}
    with atomic_outputs(list(files.values()), args.force) as temps:
        bar = Bar("training parity", min(args.steps or 20, cfg["train"]["steps"]), "steps")
        result = training.training(cfg, args.steps or 20, args.tolerance, tuple(args.pitfall),
                                   lambda done, total: bar(done), args.precision)
        bar.close()
        print(report.text(result))
        for write, tmp in zip(files, temps):
            write([result], tmp)
    return 0 if result["ok"] else 1


def _exported(paths: list, x, variant) -> dict:
    """{'<format> <file>': {its output: array}}: exports as participants (logits, or the head
    output they were exported for, compared where the twins have it)."""
    import os

    from convert.errors import I3DError
    from export.writers import format_for, load_export

    out = {}
    for path in paths:
        model = load_export(path)
        if model.exported.variant != variant:
            raise I3DError(f"{path}: exported as variant {model.exported.variant.name}, the "
                           f"weights compared are {variant.name}")
        out[f"{format_for(path, None)} {os.path.basename(path)}"] = {model.exported.output: model(x)}
    return out


def register(sub, sample: str):
    q = sub.add_parser("parity", help="compare the twins (and the JAX reference) end point by "
                       "end point, forward and backward")
    q.add_argument("--weights", default="default")
    add_variant_option(q)
    q.add_argument("--video", default=sample)
    q.add_argument("--frames", type=frames, default=64, metavar="N|all")
    q.add_argument("--batch", type=positive, default=1)
    q.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default="float32",
                   help="also compare torch under this autocast dtype against float32")
    q.add_argument("--tolerance", type=positive_float, default=None,
                   help="max abs (default 1e-4); with --training, max relative distance")
    q.add_argument("--frameworks", nargs="+", default=["torch", "mindspore", "jax"],
                   choices=("torch", "mindspore", "jax"))
    q.add_argument("--exports", nargs="+", default=[], metavar="FILE",
                   help="`i3d export` files (.onnx, .mindir, .pt2) compared as participants")
    q.add_argument("--ms-mode", choices=("pynative", "graph"), default="pynative")
    q.add_argument("--backward", action="store_true", help="also compare training steps")
    q.add_argument("--steps", type=positive, default=None,
                   help="training steps compared (--backward: 5, --training: 20)")
    q.add_argument("--training", metavar="CONFIG",
                   help="compare the two frameworks' training loops on this config's recipe "
                        "and data, step by step, in float64 (instead of the forward report)")
    q.add_argument("--precision", choices=("fp64", "fp32", "fp16"), default="fp64",
                   help="with --training: both loops in this precision (fp64: the exact "
                        "comparison, tolerance 1e-9; fp32, fp16: distances recorded, gated "
                        "only by --tolerance)")
    q.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="with --training: override a config setting (repeatable)")
    q.add_argument("--pitfall", action="append", default=[], metavar="NAME",
                   help="with --training: reintroduce a porting mistake on the torch side "
                        "(decay_all, bn_momentum, epoch_schedule, clip_epsilon, "
                        "loss_scale_init, dropout_keep_prob) to see the report catch it")
    q.add_argument("--backward-frames", type=positive, default=16)
    q.add_argument("--backward-size", type=positive, default=112)
    q.add_argument("--json", metavar="FILE")
    q.add_argument("--markdown", metavar="FILE")
    q.add_argument("--plot", metavar="FILE", help="PNG of error by end point")
    q.add_argument("--force", action="store_true",
                   help="overwrite existing report files (they are written all or none)")
    q.set_defaults(func=cmd_parity)
