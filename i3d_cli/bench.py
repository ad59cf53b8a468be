"""`i3d bench`: throughput suites against the machine's measured ceilings."""
from __future__ import annotations

import sys

from convert.errors import I3DError

def cmd_bench(args) -> int:
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise I3DError("--device cuda: torch sees no CUDA device on this machine")
    from benchmarks.run import markdown, run, write

    result = run(args.suite, args.device, args.frameworks, args.batch, args.frames, args.size,
                 args.dtype, args.repeat, video=args.video,
                 progress=lambda m: print(f"[bench] {m}", file=sys.stderr, flush=True))
    base = write(result, args.out, args.name)
    print(markdown(result))
    print(f"written: {base}.json, {base}.md, {base}.png")
    return 0


def register(sub):
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
