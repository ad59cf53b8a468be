"""The MindSpore twin's kernels layer by layer, at the size users run: what chose the table
`i3d_ms.kernels.KERNELS`.

    python -m benchmarks.ms_kernels OUT.md [--frames 64] [--size 224] [--repeat 3]
                                    [--convs matmul native] [--modes pynative graph] [--force]

For each MindSpore mode and convolution kernel: every step of the network (each cell called on
the previous one's output, so in graph mode each is compiled alone) and the whole network,
first call (graph: compiling) and the median of `--repeat` calls; the torch twin's whole
forward in the same process, the yardstick of the ratio. A 'native' step slower than
`--native-limit` seconds on its first call is not repeated (the reference kernel takes minutes
at 64x224x224). Writes OUT.md and OUT.json (atomically, all or none).
"""
from __future__ import annotations

import json
import sys
import time

from .timing import measure


def _time(fn, repeat):
    """(first call, median of `repeat` more) seconds."""
    first = measure(fn, 0, 1)["median_s"]
    return first, measure(fn, 0, repeat)["median_s"] if repeat else first


def layer_table(frames, size, repeat, convs, modes, native_limit, progress=print) -> dict:
    import i3d_ms  # noqa: F401  (MindSpore first)
    import mindspore as ms
    import numpy as np
    import torch

    import i3d_torch
    from convert.checkpoints import read_weights

    from .timing import environment

    weights, _ = read_weights("default")
    x = np.random.RandomState(0).uniform(-1, 1, (1, 3, frames, size, size)).astype(np.float32)
    head = "deepmind" if size >= 224 else "global"
    model = i3d_torch.build(weights, head=head)
    with torch.inference_mode():
        first, median = _time(lambda: model(torch.from_numpy(x)), repeat)
    result = {"environment": environment("cpu"), "clip": f"{frames}x{size}x{size}",
              "torch": {"first_s": first, "median_s": median}, "runs": []}
    progress(f"torch eager: {median:.3f} s")
    for mode in modes:
        for conv in convs:
            i3d_ms.set_mode(mode)
            net = i3d_ms.build(weights, head=head, conv=conv)
            steps, y = [], ms.Tensor(x)
            for name, cell in zip(net.end_point_names, net.steps):
                start = time.perf_counter()
                out = cell(y)
                out.asnumpy()
                first = time.perf_counter() - start
                again = 0 if conv == "native" and first > native_limit else repeat
                median = _time(lambda: cell(y).asnumpy(), again)[1] if again else first
                steps.append({"name": name, "first_s": first, "median_s": median})
                progress(f"mindspore {mode} {conv} {name}: {median:.3f} s")
                y = out
            xm = ms.Tensor(x)
            whole = sum(s["median_s"] for s in steps)
            if conv != "native" or whole < native_limit:
                first, whole = _time(lambda: net(xm).asnumpy(), repeat)
            else:
                first = None
            result["runs"].append({"mode": mode, "conv": conv, "steps": steps,
                                   "first_s": first, "median_s": whole,
                                   "ratio": whole / result["torch"]["median_s"]})
            progress(f"mindspore {mode} {conv}: {whole:.3f} s, "
                     f"{whole / result['torch']['median_s']:.2f}x torch")
    return result


def markdown(result: dict, argv) -> str:
    env, runs = result["environment"], result["runs"]
    lines = [f"# The MindSpore twin's kernels at {result['clip']}, batch 1\n",
             f"`python -m benchmarks.ms_kernels {' '.join(argv)}`; {env['cpu']} "
             f"({env['cpu_count']} cores), " + ", ".join(f"{k} {v}" for k, v in
                                                         env["versions"].items()) + ".\n",
             "Seconds per call: the median of the repeats (first call in brackets where it "
             "differs by more than 20%; graph mode: compiling that step alone). A step whose "
             "'native' first call took minutes ran once.\n",
             "| step | " + " | ".join(f"{r['mode']} {r['conv']}" for r in runs) + " |",
             "|---|" + "---|" * len(runs)]
    for i, step in enumerate(runs[0]["steps"]):
        cells = []
        for r in runs:
            s = r["steps"][i]
            extra = f" ({s['first_s']:.2f})" if s["first_s"] > 1.2 * s["median_s"] else ""
            cells.append(f"{s['median_s']:.3f}{extra}")
        lines.append(f"| {step['name']} | " + " | ".join(cells) + " |")
    whole = []
    for r in runs:
        first = f" (first {r['first_s']:.1f})" if r["first_s"] else " (sum of steps)"
        whole.append(f"**{r['median_s']:.2f}**{first}")
    lines.append("| whole network | " + " | ".join(whole) + " |")
    lines.append("| / torch eager | " + " | ".join(f"{r['ratio']:.2f}x" for r in runs) + " |")
    t = result["torch"]
    lines.append(f"\nThe torch twin (eager, NCDHW) in the same process: {t['median_s']:.3f} s "
                 f"(first call {t['first_s']:.2f} s).")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    from convert.errors import ArgumentParser, I3DError
    from convert.fileio import atomic_outputs

    argv = sys.argv[1:] if argv is None else argv
    p = ArgumentParser(prog="ms_kernels", description=__doc__.split("\n")[0])
    p.add_argument("out", help="OUT.md (OUT.json beside it)")
    p.add_argument("--frames", type=int, default=64)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--convs", nargs="+", default=["matmul", "native"],
                   choices=("matmul", "native"))
    p.add_argument("--modes", nargs="+", default=["pynative", "graph"],
                   choices=("pynative", "graph"))
    p.add_argument("--native-limit", type=float, default=20.0)
    p.add_argument("--force", action="store_true")
    args = p.parse_args(argv)
    for name in ("frames", "size", "repeat"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be at least 1, got {getattr(args, name)}")
    if not args.native_limit > 0:
        p.error(f"--native-limit must be a number of seconds above 0, got {args.native_limit}")
    base = args.out[:-3] if args.out.endswith(".md") else args.out
    try:
        with atomic_outputs([base + ".md", base + ".json"], args.force) as (md, js):
            result = layer_table(args.frames, args.size, args.repeat, args.convs, args.modes,
                             args.native_limit,
                             lambda m: print(f"[ms_kernels] {m}", file=sys.stderr, flush=True))
            with open(md, "w") as f:
                f.write(markdown(result, argv))
            with open(js, "w") as f:
                json.dump(result, f, indent=1)
    except I3DError as e:
        print(f"ms_kernels: error: {e}", file=sys.stderr)
        return 2
    print(markdown(result, argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
