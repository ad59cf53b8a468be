"""Training parity: the recipe's loop in MindSpore and in torch, step by step on the same batches
from the same weights on the CPU, compared after every step; the report names the first step
and the first quantity (loss, learning rate, loss scale, gradient norm) or tensor (parameter,
BatchNorm statistic, momentum buffer, in the training checkpoint's names) where they part
beyond the tolerance. Dropout is off in the steps (the frameworks draw different masks): its
probability is compared as the networks were built, before the first step. float64 is the
exact comparison; float32 and mixed precision (fp16) record how far the frameworks' rounding
carries them apart."""
from __future__ import annotations

import copy

import numpy as np

SCALARS = ("loss", "lr", "loss_scale", "grad_norm")
# --tolerance by precision: float64's is the exact comparison's; float32 and fp16 runs record
# their distances ungated (their rounding, amplified by the trajectory, reaches 1e-1 over 20
# steps of the smoke recipe: docs/training.md), unless a tolerance is given
TOLERANCE = {"fp64": 1e-9, "fp32": None, "fp16": None}


def _relative(a: float | None, b: float | None) -> float:
    if a is None or b is None:
        return 0.0 if a is b else float("inf")
    if a == b:
        return 0.0
    return abs(a - b) / max(abs(b), 1e-300)


def _distances(a: dict, b: dict) -> dict:
    """{tensor: max |a - b| / max |b|} over the tensors of two training states."""
    out = {}
    for k in b:
        if k == "global_step":
            continue
        x, y = np.asarray(a[k], np.float64), np.asarray(b[k], np.float64)
        out[k] = float(np.abs(x - y).max() / max(np.abs(y).max(), 1e-300)) if y.size else 0.0
    return out


def _dropout(net, framework: str) -> float:
    """The drop probability of the network's dropout (0 without one); then dropout is turned
    off for the steps."""
    if framework == "torch":
        import torch

        found = [m for m in net.modules() if isinstance(m, torch.nn.Dropout)]
        p = found[0].p if found else 0.0
        for m in found:
            m.p = 0.0  # F.dropout with p=0: every element kept, scaled by 1
        return float(p)
    from mindspore import nn

    for name, cell in net.cells_and_names():
        if isinstance(cell, nn.Dropout):
            parent = net
            for part in name.split(".")[:-1]:
                parent = getattr(parent, part)
            setattr(parent, name.split(".")[-1], nn.Identity())
            return float(cell.p)
    return 0.0


def training(cfg: dict, steps: int | None = None, tolerance: float | None = None,
             pitfalls: tuple = (), progress=None, precision: str = "fp64") -> dict:
    """Runs both loops' steps (`recipe.loop`'s backends) for `steps` (default: the config's)
    and returns the report: per step each framework's scalars and the tensors' distances, and
    the first parting. `pitfalls` reintroduces torch-side mistakes (`i3d_torch.trainer.PITFALLS`)
    for the report to catch."""
    from i3d_ms.train import MindSporeBackend  # MindSpore before anything decodes
    from i3d_torch.train import TorchBackend
    from i3d_torch.trainer import PITFALLS
    from recipe.samples import TrainSource, batches, workers
    from recipe.sources import num_classes, split_videos

    unknown = [p for p in pitfalls if p not in PITFALLS]
    if unknown:
        raise ValueError(f"unknown pitfall {unknown[0]!r} (known: {', '.join(PITFALLS)})")
    cfg = copy.deepcopy(cfg)
    t, d, m = cfg["train"], cfg["data"], cfg["model"]
    t.update(precision=precision, mode="pynative", device="CPU")
    tolerance = tolerance or TOLERANCE[precision]
    steps = min(steps or t["steps"], t["steps"])
    videos, names = split_videos(d, "train")
    classes = num_classes(m["num_classes"], videos, names)
    source = TrainSource(videos, d, t["batch_size"], t["steps"], 0, t["seed"])
    ms_backend, torch_backend = MindSporeBackend(), TorchBackend()
    ms_backend.setup(cfg)
    torch_backend.setup(cfg)
    mindspore = ms_backend.trainer(cfg, classes, None, 1)
    values = {p: source.steps_per_epoch if p == "epoch_schedule" else True for p in pitfalls}
    torch_ = torch_backend.trainer(cfg, classes, None, 1, pitfalls=values)
    settings = {"dropout p": (_dropout(mindspore.net, "mindspore"), _dropout(torch_.net, "torch"))}
    first = next(({"step": "setup", "what": k, "distance": _relative(b, a)}
                  for k, (a, b) in settings.items() if a != b), None)
    start = mindspore.state(0)  # the same weights, whatever the initial values; each loop's
    start.pop("scale_sense", None)  # own initial loss scale (a pitfall's to catch)
    torch_.restore(start)
    rows = []
    for step, (x, y, flip) in enumerate(batches(source, source.batch, workers(d["workers"]),
                                                drop_remainder=True)):
        if step == steps:
            break
        row = {"step": step}
        lrs = (float(mindspore.schedule[step]), torch_.lr(step))
        for name, trainer in (("mindspore", mindspore), ("torch", torch_)):
            loss, _, finite = trainer.step(x, y, flip)
            row[name] = {"loss": loss, "finite": finite, "grad_norm": trainer.grad_norm,
                         "loss_scale": trainer.loss_scale(),
                         "lr": lrs[0] if name == "mindspore" else lrs[1]}
        # a scalar's parting is judged after the step it belongs to: the loss and gradient
        # norm of this step, the lr it ran at, the loss scale it left
        row["scalars"] = {k: _relative(row["torch"][k], row["mindspore"][k]) for k in SCALARS}
        distances = _distances(torch_.state(step + 1), mindspore.state(step + 1))
        worst = max(distances, key=distances.get)
        row["worst"] = {"tensor": worst, "distance": distances[worst]}
        limit = float("inf") if tolerance is None else tolerance
        row["parted"] = sorted([k for k, v in row["scalars"].items() if v > limit]
                               + [k for k, v in distances.items() if v > limit],
                               key=lambda k: -(row["scalars"].get(k) or distances.get(k)))
        row["distances"] = distances
        if first is None and row["parted"]:
            first = {"step": step, "what": row["parted"][0],
                     "distance": row["scalars"].get(row["parted"][0],
                                                    distances.get(row["parted"][0]))}
        rows.append(row)
        if progress:
            progress(step + 1, steps)
    return {"kind": "training", "steps": len(rows), "tolerance": tolerance,
            "pitfalls": {p: PITFALLS[p] for p in pitfalls}, "classes": classes,
            "precision": precision, "settings": settings,
            "batch": t["batch_size"], "clip": [d["frames"], d["crop"], d["crop"]],
            "end_point": m["final_endpoint"], "rows": rows, "first_parting": first,
            "ok": first is None}


def text(report: dict, md: bool = False) -> str:
    """The report's table: one line per step, the first parting last."""
    h = "### " if md else ""
    out = [f"{h}Training parity, MindSpore vs torch, {report['precision']}, {report['steps']} "
           f"steps of batch {report['batch']} at {'x'.join(map(str, report['clip']))} "
           f"(network to {report['end_point']}), " + (
               f"tolerance {report['tolerance']:g} relative" if report["tolerance"] is not None
               else "distances recorded, no tolerance")]
    for name, why in report["pitfalls"].items():
        out.append(f"pitfall reintroduced on the torch side: {name}: {why}")
    for name, (a, b) in report["settings"].items():
        out.append(f"as built: {name} mindspore {a:g}, torch {b:g}")
    head = ["step", "loss (mindspore)", "loss rel", "lr rel", "scale rel", "grad norm rel",
            "worst tensor", "distance"]
    if md:
        out += ["", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    else:
        out.append(f"{'step':>4} {'loss (ms)':>12} {'loss rel':>9} {'lr rel':>9} "
                   f"{'scale rel':>9} {'gnorm rel':>9}  {'worst tensor':<44} distance")
    for r in report["rows"]:
        s = r["scalars"]
        cells = [str(r["step"]), f"{r['mindspore']['loss']:.6f}", f"{s['loss']:.1e}",
                 f"{s['lr']:.1e}", f"{s['loss_scale']:.1e}", f"{s['grad_norm']:.1e}",
                 r["worst"]["tensor"], f"{r['worst']['distance']:.1e}"]
        out.append("| " + " | ".join(cells) + " |" if md else
                   f"{cells[0]:>4} {cells[1]:>12} {cells[2]:>9} {cells[3]:>9} {cells[4]:>9} "
                   f"{cells[5]:>9}  {cells[6]:<44} {cells[7]}")
    f = report["first_parting"]
    out.append("" if md else "")
    where = f if f is None or f["step"] == "setup" else {**f, "step": f"step {f['step']}"}
    out.append("first parting: " + (f"{where['step']}, {f['what']} ({f['distance']:.2e} "
                                    f"relative)" if f else "none"))
    out.append("PASS" if report["ok"] else "FAIL")
    return "\n".join(out)


def plot(report: dict, path: str):
    """Loss of both frameworks, and per step the scalars' and the worst tensor's distance
    (log scale, the tolerance dashed)."""
    import os

    os.environ.setdefault("MPLBACKEND", "Agg")
    import matplotlib.pyplot as plt

    rows = report["rows"]
    steps = [r["step"] for r in rows]
    fig, ax = plt.subplots(1, 2, figsize=(12, 4))
    for name, style in (("mindspore", "o-"), ("torch", "x--")):
        ax[0].plot(steps, [r[name]["loss"] for r in rows], style, label=name)
    ax[0].set_title("training loss")
    ax[0].legend()
    for k in SCALARS:
        ax[1].semilogy(steps, [max(r["scalars"][k], 1e-17) for r in rows], label=k)
    ax[1].semilogy(steps, [max(r["worst"]["distance"], 1e-17) for r in rows], "k-",
                   label="worst tensor")
    if report["tolerance"] is not None:
        ax[1].axhline(report["tolerance"], ls="--", c="gray")
    ax[1].set_title("torch vs mindspore, relative")
    ax[1].legend(fontsize=8)
    for a in ax:
        a.set_xlabel("step")
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)
