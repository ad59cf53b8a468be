"""A/B on CUDA of the torch twin's training step (bf16 autocast, batch 8, 64x224x224, SGD with
momentum), in both layouts: the step as it is against the step with one of its speed changes
undone ("undo" rows of `AB`; "try" rows, when there are any, for candidates not in the twin),
in one process, alternating rounds of 10 steps (the best round counts); optionally a
torch.profiler table of where the step's GPU time goes. The step under torch.compile is a row
of `i3d bench --device cuda` (and `make gpu-check`).

    python3 -m benchmarks.train_ab [--rounds 3] [--profile DIR [--force]]

Run on the GPU machine as set up for `make gpu-check` (docs/gpu.md); `--device cpu` with a small
`--size` and `--frames` checks the script itself."""
from __future__ import annotations

import os
import time

import torch
import torch.nn.functional as F

import i3d_torch
from convert import architecture as arch
from convert.checkpoints import read_weights
from convert.errors import ArgumentParser, I3DError
from convert.fileio import atomic_output, check_destination
from i3d_torch import model as twin


def _mixed_one_by_one(self, x):
    """A Mixed block unit by unit: its three 1x1x1 units on x as three convs and batch norms."""
    pool = twin._max_pool(x, *arch.BRANCH3_POOL)
    return torch.cat([self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)), self.b3b(pool)], 1)


# row -> the changes it makes, each (owner, attribute, its value in that row): "undo" rows set
# one of the twin's speed changes back, "try" rows apply candidates that are not in the twin.
AB = {
    "undo: pools as torch's max_pool3d": [(twin, "_separable_max_pool", twin._torch_max_pool)],
    "undo: batch norm on channels_last_3d as is": [(twin, "_batch_norm", F.batch_norm)],
    "undo: stem unfolded to 21 channels": [(twin, "UNFOLD_ALIGN", 1)],
    "undo: Mixed's 1x1x1 units one by one": [(twin.Mixed, "forward", _mixed_one_by_one)],
}
NOW = {(owner, attr): getattr(owner, attr) for row in AB.values() for owner, attr, _ in row}
LAYOUTS = {"channels_last_3d": torch.channels_last_3d, "contiguous": torch.contiguous_format}


def _stepper(weights, fmt, args):
    model = i3d_torch.build(weights, head="global").to(args.device, memory_format=fmt).train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, weight_decay=1e-4)
    x = torch.rand(args.batch, 3, args.frames, args.size, args.size, device=args.device)
    x = x.mul(2).sub(1).contiguous(memory_format=fmt)
    y = torch.randint(0, model.num_classes, (args.batch,), device=args.device)

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(args.device, torch.bfloat16):
            loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
    return step


def _timed(step, sync, steps=10) -> float:
    for _ in range(3):
        step()
    sync()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    return (time.perf_counter() - start) / steps


def _as(row: str | None):
    """Set the twin's attributes for the A/B `row` (None: the step as it is)."""
    for (owner, attr), value in NOW.items():
        setattr(owner, attr, value)
    for owner, attr, value in AB.get(row, ()):
        setattr(owner, attr, value)


def _profile(step, path: str, force: bool):
    from torch.profiler import ProfilerActivity, profile

    for _ in range(3):
        step()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(3):
            step()
        torch.cuda.synchronize()
    kernels: dict = {}
    for e in prof.events():
        if e.device_type == torch.autograd.DeviceType.CUDA:
            kernels[e.name] = kernels.get(e.name, 0) + e.device_time
    total = sum(kernels.values())
    lines = [f"{t / 3e3:8.2f} ms/step {100 * t / total:5.1f}%  {k[:150]}"
             for k, t in sorted(kernels.items(), key=lambda kv: -kv[1])[:50]]
    with atomic_output(path, force) as tmp, open(tmp, "w") as f:
        f.write(f"# GPU kernels of the bf16 channels_last_3d training step, {total / 3e3:.1f} ms "
                f"a step in all\n" + "\n".join(lines) + "\n")
    print("\n".join(lines[:25]), flush=True)


def main(argv=None):
    p = ArgumentParser(prog="train_ab", description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--frames", type=int, default=64)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--profile", metavar="DIR", help="write DIR/train-kernels.txt (CUDA)")
    p.add_argument("--force", action="store_true", help="replace an earlier train-kernels.txt")
    args = p.parse_args(argv)
    for name in ("rounds", "batch", "frames", "size"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be at least 1, got {getattr(args, name)}")
    if args.profile:  # refused before the run, not after it
        folder, args.profile = args.profile, os.path.join(args.profile, "train-kernels.txt")
        try:
            if os.path.lexists(folder):
                check_destination(args.profile, args.force)
        except I3DError as e:
            p.exit(2, f"train_ab: error: {e}\n")
    cuda = args.device == "cuda"
    if cuda and not torch.cuda.is_available():
        p.error(f"no CUDA device (torch {torch.__version__}); --device cpu checks the script")
    if args.profile and not cuda:
        p.error("--profile times CUDA kernels: it needs --device cuda")
    if args.profile:
        try:
            os.makedirs(folder, exist_ok=True)
        except OSError as e:
            p.exit(2, f"train_ab: error: {folder}: {e.strerror}\n")
    torch.backends.cudnn.benchmark = True
    print(f"{torch.cuda.get_device_name(0) if cuda else args.device}, torch {torch.__version__}, "
          f"cuDNN {torch.backends.cudnn.version()}; train bf16 batch {args.batch} "
          f"{args.frames}x{args.size}x{args.size}", flush=True)
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    weights = read_weights("default")[0]
    for layout, fmt in LAYOUTS.items():
        step = _stepper(weights, fmt, args)
        times: dict = {None: [], **{c: [] for c in AB}}
        peaks: dict = {}
        for _ in range(args.rounds):
            for change in times:
                _as(change)
                if cuda:
                    torch.cuda.reset_peak_memory_stats()
                times[change].append(_timed(step, sync))
                if cuda:
                    peaks[change] = torch.cuda.max_memory_allocated() / 1e9
        _as(None)
        for change, ts in times.items():
            best = min(ts)
            peak = f"; peak {peaks[change]:.1f} GB" if cuda else ""
            print(f"{layout:16s} {change or 'as it is':46s} {args.batch / best:6.1f} clips/s "
                  f"({best * 1e3:.1f} ms/step; rounds {[round(t * 1e3, 1) for t in ts]}{peak})",
                  flush=True)
        if args.profile and fmt is torch.channels_last_3d and cuda:
            _profile(step, args.profile, args.force)
        del step
        if cuda:
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
