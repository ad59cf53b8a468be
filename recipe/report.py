"""What a training run shows people: a self-rewriting progress line, and a PNG of loss,
learning rate and accuracy."""
from __future__ import annotations

import json
import sys
import time

from convert.fileio import atomic_output


class Progress:
    """One self-rewriting line on stderr: step, loss, lr, speed and ETA."""

    def __init__(self, total: int, start: int):
        self.total, self.start, self.t0 = total, start, time.perf_counter()

    def update(self, step: int, loss: float, lr: float):
        done = step + 1 - self.start
        per = (time.perf_counter() - self.t0) / max(done, 1)
        eta = int(per * (self.total - step - 1))
        bar = "#" * int(30 * (step + 1) / self.total)
        sys.stderr.write(f"\r[{bar:<30}] {step + 1}/{self.total} loss {loss:.4f} lr {lr:.2e} "
                         f"{per:.2f} s/step ETA {eta // 3600}:{eta // 60 % 60:02d}:{eta % 60:02d}")
        sys.stderr.flush()


def plot(log_path: str, png: str):
    """loss, lr and accuracy against step, from the JSON-lines log."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(log_path) as f:
        rows = [json.loads(line) for line in f]
    train = {r["step"]: r for r in rows if "loss" in r}  # a resumed run's repeats: last wins
    evals = [r for r in rows if "val_top1" in r]
    steps = sorted(train)
    fig, ax = plt.subplots(1, 3, figsize=(13, 3.5))
    ax[0].plot(steps, [train[s]["loss"] for s in steps])
    ax[0].set_title("training loss")
    ax[1].plot(steps, [train[s]["lr"] for s in steps])
    ax[1].set_title("learning rate")
    ax[2].plot(steps, [train[s]["acc"] for s in steps], label="train (batch)", alpha=0.5)
    if evals:
        ax[2].plot([r["step"] for r in evals], [r["val_top1"] for r in evals], "o-", label="val top-1")
    ax[2].set_title("accuracy")
    ax[2].legend()
    for a in ax:
        a.set_xlabel("step")
    fig.tight_layout()
    with atomic_output(png, force=True) as tmp:  # replaced whole: a reader never sees half
        fig.savefig(tmp, format="png")
    plt.close(fig)
