"""How far a training run carries a difference of 1e-15: the torch loop against itself, one copy's
convolution weights multiplied by (1 + 1e-15), step by step on the same batches in float64.
The yardstick for `i3d parity --training`: MindSpore and torch cannot agree better over N steps
than one framework agrees with itself.

    python -m benchmarks.training_sensitivity CONFIG [SECTION.KEY=VALUE ...] [--steps 20]
"""
from __future__ import annotations

import argparse

import numpy as np


def sensitivity(cfg: dict, steps: int) -> list:
    """[(step, loss, loss rel, worst tensor rel)] of the perturbed copy against the other."""
    from i3d_torch.train import TorchBackend
    from recipe.samples import TrainSource, batches
    from recipe.sources import num_classes, split_videos

    t, d = cfg["train"], cfg["data"]
    t.update(precision="fp64", device="CPU")
    cfg["model"]["dropout_keep_prob"] = 1.0
    videos, names = split_videos(d, "train")
    classes = num_classes(cfg["model"]["num_classes"], videos, names)
    backend = TorchBackend()
    backend.setup(cfg)
    a, b = (backend.trainer(cfg, classes, None, 1) for _ in range(2))
    b.restore({k: v * (1 + 1e-15) if k.endswith("conv.weight") else v
               for k, v in a.state(0).items()})
    source = TrainSource(videos, d, t["batch_size"], t["steps"], 0, t["seed"])
    rows = []
    for step, (x, y, flip) in enumerate(batches(source, source.batch, 2, drop_remainder=True)):
        if step == steps:
            break
        la, lb = a.step(x, y, flip)[0], b.step(x, y, flip)[0]
        sa, sb = a.state(0), b.state(0)
        worst = max(float(np.abs(sa[k] - sb[k]).max() / max(np.abs(sa[k]).max(), 1e-300))
                    for k in sa if k != "global_step")
        rows.append((step, la, abs(la - lb) / abs(la), worst))
    return rows


def main(argv=None) -> int:
    from recipe.config import load_config

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("config")
    p.add_argument("overrides", nargs="*", metavar="SECTION.KEY=VALUE")
    p.add_argument("--steps", type=int, default=20)
    args = p.parse_args(argv)
    print(f"{'step':>4} {'loss':>10} {'loss rel':>9} {'worst tensor rel':>17}")
    for step, loss, rel, worst in sensitivity(load_config(args.config, args.overrides), args.steps):
        print(f"{step:>4} {loss:>10.6f} {rel:>9.1e} {worst:>17.1e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
