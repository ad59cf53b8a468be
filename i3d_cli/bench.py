"""`i3d bench`: throughput suites against the machine's measured ceilings."""
from __future__ import annotations

import os
import sys

from benchmarks.run import SUITES, markdown, outputs, over, run, write
from convert.errors import I3DError

from .args import positive, positive_float


def cmd_bench(args) -> int:
    """The result files are checked before the run and written together after it."""
    from convert.fileio import atomic_outputs

    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise I3DError("--device cuda: torch sees no CUDA device on this machine")
    if args.max_ratio is not None and not ({"torch", "mindspore"} <= set(args.frameworks)
                                           and {"infer", "train"} & set(args.suite)
                                           and args.dtype in (None, "float32")):
        raise I3DError("--max-ratio compares MindSpore with torch: give --frameworks torch "
                       "mindspore, the infer or train suite, float32")
    os.makedirs(args.out, exist_ok=True)
    paths = outputs(args.out, args.name, args.suite)
    with atomic_outputs(paths, args.force) as temps:
        result = run(args.suite, args.device, args.frameworks, args.batch, args.frames, args.size,
                     args.dtype, args.repeat, args.train_frames, args.train_size,
                     video=args.video, compile=not args.no_compile, ms_conv=args.ms_conv,
                     progress=lambda m: print(f"[bench] {m}", file=sys.stderr, flush=True))
        write(result, temps)
    print(markdown(result))
    print(f"written: {', '.join(paths)}")
    if args.max_ratio is None:
        return 0
    try:
        failed = over(result, args.max_ratio)
    except ValueError as e:
        raise I3DError(str(e)) from None
    for line in failed:
        print(f"i3d bench: {line}", file=sys.stderr)
    return 1 if failed else 0


def register(sub):
    q = sub.add_parser("bench", help="throughput against the machine's matmul ceiling",
                       description="Defaults by device: on cuda batch 8, bfloat16 autocast, "
                       "channels_last_3d, cuDNN autotuning, the training step on the inference "
                       "clip; on cpu batch 1, float32, a 16x112x112 training clip.")
    q.add_argument("--suite", nargs="+", default=["infer", "train", "data", "convert"],
                   choices=SUITES)
    q.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    q.add_argument("--frameworks", nargs="+", default=["torch", "mindspore", "jax"],
                   choices=("torch", "mindspore", "jax", "onnx"),
                   help="onnx: onnxruntime on the `i3d export` ONNX file (infer suite)")
    q.add_argument("--batch", type=positive, default=None, help="cuda 8, cpu 1")
    q.add_argument("--frames", type=positive, default=64)
    q.add_argument("--size", type=positive, default=224)
    q.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default=None,
                   help="cuda bfloat16 (autocast), cpu float32; honoured by infer and train")
    q.add_argument("--train-frames", type=positive, default=None,
                   help="training clip length (cuda: --frames, cpu: 16)")
    q.add_argument("--train-size", type=positive, default=None,
                   help="training clip size (cuda: --size, cpu: 112)")
    q.add_argument("--repeat", type=positive, default=None, help="timed runs (cuda 10, cpu 3)")
    q.add_argument("--no-compile", action="store_true",
                   help="skip the torch.compile rows (on cuda the training step's too)")
    q.add_argument("--ms-conv", choices=("auto", "matmul", "native"), default="auto",
                   help="the MindSpore twin's convolution kernel (auto: i3d_ms.kernels.KERNELS)")
    q.add_argument("--max-ratio", type=positive_float, default=None, metavar="R",
                   help="exit 1 when a MindSpore row's median time is over R x torch eager's "
                   "(same run, same suite)")
    q.add_argument("--video", default=None, help="clip for the data and features suites "
                   "(default: a Kinetics-shaped H.264 clip made for the run)")
    q.add_argument("--out", default="benchmarks/results")
    q.add_argument("--name", default="bench", help="file stem of the results")
    q.add_argument("--force", action="store_true",
                   help="overwrite existing result files (they are written all or none)")
    q.set_defaults(func=cmd_bench)
