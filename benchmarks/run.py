"""`i3d bench`: run the suites, write JSON (with the environment), markdown and a PNG chart."""
from __future__ import annotations

import json
import os
import time

from convert.fileio import atomic_output

SUITES = ("infer", "train", "data", "convert")


def run(suites, device="cpu", frameworks=("torch", "mindspore", "jax"), batch=1, frames=64,
        size=224, dtype="float32", repeat=3, train_frames=16, train_size=112, workers=(0, 1, 2),
        video=None, progress=print) -> dict:
    if "mindspore" in frameworks:
        import i3d_ms  # noqa: F401  (before any video is decoded: see i3d_ms/__init__.py)
    from convert.checkpoints import read_weights
    from i3d_video import SAMPLE

    from . import network, pipeline
    from .timing import environment

    weights, _ = read_weights("default")
    result = {"date": time.strftime("%Y-%m-%d %H:%M:%S"), "environment": environment(device),
              "config": {"batch": batch, "frames": frames, "size": size, "dtype": dtype,
                         "repeat": repeat, "train_frames": train_frames,
                         "train_size": train_size},
              "rows": []}
    if {"infer", "train"} & set(suites):
        progress("measuring the matmul ceiling")
        result["ceiling"] = network.ceiling(device, dtype)
        roof = result["ceiling"]["gflops"]
    if "infer" in suites:
        progress(f"infer: batch {batch}, {frames}x{size}x{size}, {dtype}")
        result["rows"] += network.infer(weights, batch, frames, size, device, dtype, frameworks,
                                        roof, repeat)
    if "train" in suites:
        progress(f"train: batch {max(batch, 2)}, {train_frames}x{train_size}x{train_size}")
        result["rows"] += network.train(weights, max(batch, 2), train_frames, train_size,
                                        device, frameworks, roof, repeat)
    if "data" in suites:
        progress("data: decode + transforms")
        result["rows"] += pipeline.data(video or SAMPLE, frames, workers, repeat)
    if "convert" in suites:
        progress("convert: the 50 MB checkpoint, per direction")
        result["rows"] += pipeline.convert(repeat)
    return result


def markdown(result: dict) -> str:
    env, lines = result["environment"], []
    lines.append(f"Measured {result['date']} on {env['cpu']} ({env['cpu_count']} cores, torch "
                 f"threads {env['torch_threads']}){', GPU ' + env['gpu'] if 'gpu' in env else ''}; "
                 + ", ".join(f"{k} {v}" for k, v in env["versions"].items()) + ".")
    if "ceiling" in result:
        c = result["ceiling"]
        lines.append(f"\nCeiling: {c['dtype']} {c['n']}x{c['n']} matmul, {c['gflops']:.0f} GFLOP/s.")
    for suite in ("infer", "train", "data", "convert"):
        rows = [r for r in result["rows"] if r["suite"] == suite]
        if not rows:
            continue
        lines.append(f"\n### {suite}\n")
        if suite in ("infer", "train"):
            lines.append("| run | median s | min-max s | clips/s | GFLOP/s | of ceiling |")
            lines.append("|---|---|---|---|---|---|")
            for r in rows:
                lines.append(f"| {r['name']} | {r['median_s']:.3f} | {r['min_s']:.3f}-"
                             f"{r['max_s']:.3f} | {r['clips_per_s']:.3f} | {r['gflops']:.1f} | "
                             f"{r['fraction_of_ceiling']:.1%} |")
        else:
            unit = "clips/s" if suite == "data" else "MB/s"
            key = "clips_per_s" if suite == "data" else "mb_per_s"
            lines.append(f"| run | median s | min-max s | {unit} |")
            lines.append("|---|---|---|---|")
            for r in rows:
                lines.append(f"| {r['name']} | {r['median_s']:.3f} | {r['min_s']:.3f}-"
                             f"{r['max_s']:.3f} | {r[key]:.1f} |")
    return "\n".join(lines) + "\n"


def chart(result: dict, path: str):
    os.environ.setdefault("MPLBACKEND", "Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in result["rows"] if r["suite"] in ("infer", "train")]
    if not rows:
        return
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(rows) + 1.5))
    labels = [f"{r['suite']}: {r['name']}" for r in rows]
    ax.barh(range(len(rows)), [100 * r["fraction_of_ceiling"] for r in rows], color="tab:blue")
    for i, r in enumerate(rows):
        ax.text(100 * r["fraction_of_ceiling"] + 0.5, i, f"{r['clips_per_s']:.2f} clips/s",
                va="center", fontsize=8)
    ax.set_yticks(range(len(rows)), labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel(f"% of measured {result['ceiling']['dtype']} matmul ceiling "
                  f"({result['ceiling']['gflops']:.0f} GFLOP/s)")
    ax.set_title(f"I3D throughput, {result['environment']['cpu']}", fontsize=9)
    fig.tight_layout()
    with atomic_output(path, force=True) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def write(result: dict, out_dir: str, stem: str = "bench"):
    os.makedirs(out_dir, exist_ok=True)
    base = os.path.join(out_dir, stem)
    with atomic_output(base + ".json", force=True) as tmp, open(tmp, "w") as f:
        json.dump(result, f, indent=1)
    with atomic_output(base + ".md", force=True) as tmp, open(tmp, "w") as f:
        f.write(markdown(result))
    chart(result, base + ".png")
    return base
