"""`i3d bench`: run the suites, write JSON (with the environment), markdown and a PNG chart."""
from __future__ import annotations

import json
import os
import textwrap
import time

from convert.fileio import atomic_output

SUITES = ("infer", "train", "ops", "data", "features", "convert")


def defaults(device: str) -> dict:
    """What a run measures unless told otherwise. On CUDA the GPU mode meant for use: batch 8,
    bf16 autocast, channels_last_3d, the training step on the inference clip; on the CPU
    batch 1, float32, NCDHW, and a 16x112x112 training clip (a 64x224x224 step of batch 2
    takes several seconds on 2 cores)."""
    if device == "cuda":
        return {"batch": 8, "dtype": "bfloat16", "repeat": 10, "layout": "channels_last_3d",
                "train_frames": None, "train_size": None}
    return {"batch": 1, "dtype": "float32", "repeat": 3, "layout": "contiguous",
            "train_frames": 16, "train_size": 112}


def run(suites, device="cpu", frameworks=("torch", "mindspore", "jax"), batch=None, frames=64,
        size=224, dtype=None, repeat=None, train_frames=None, train_size=None, workers=(0, 1, 2),
        video=None, compile=True, ms_conv="auto", progress=print) -> dict:
    """Run `suites`; None arguments take `defaults(device)` (the training clip: the inference
    clip on CUDA). Returns {date, environment, config, ceilings, bandwidth, rows}."""
    if "mindspore" in frameworks:
        import i3d_ms  # noqa: F401  (before any video is decoded: see i3d_ms/__init__.py)
    from convert.checkpoints import read_weights

    from . import network, pipeline
    from .timing import environment

    d = defaults(device)
    batch, dtype, repeat = batch or d["batch"], dtype or d["dtype"], repeat or d["repeat"]
    train_frames = train_frames or d["train_frames"] or frames
    train_size = train_size or d["train_size"] or size
    layout = d["layout"]
    weights, _ = read_weights("default")
    config = {"batch": batch, "frames": frames, "size": size, "dtype": dtype, "repeat": repeat,
              "train_batch": max(batch, 2), "train_frames": train_frames,
              "train_size": train_size, "layout": layout, "compile": compile,
              "ms_conv": ms_conv}
    if device == "cuda":
        import torch

        torch.backends.cudnn.benchmark = True  # autotuned convolutions: the GPU mode for use
        config.update(cudnn_benchmark=True, tf32_convolutions=torch.backends.cudnn.allow_tf32)
    result = {"date": time.strftime("%Y-%m-%d %H:%M:%S"), "environment": environment(device),
              "config": config, "rows": []}
    if {"infer", "train"} & set(suites):
        progress("measuring the matmul ceilings and the copy bandwidth")
        result["ceilings"] = network.ceilings(device, dtype)
        result["bandwidth"] = network.bandwidth(device, 1024 if device == "cuda" else 256)
    torch_runs = ("eager", "channels_last_3d") + (("compile",) if compile else ())
    if "infer" in suites:
        progress(f"infer: batch {batch}, {frames}x{size}x{size}, {dtype}")
        result["rows"] += network.infer(weights, batch, frames, size, device, dtype, frameworks,
                                        result["ceilings"], repeat, torch_runs, layout, ms_conv)
    if "train" in suites:
        progress(f"train: batch {max(batch, 2)}, {train_frames}x{train_size}x{train_size}, "
                 f"{dtype}")
        cuda = device == "cuda"  # compiling the training step takes minutes on a CPU
        result["rows"] += network.train(weights, max(batch, 2), train_frames, train_size,
                                        device, dtype, frameworks, result["ceilings"], repeat,
                                        network.LAYOUTS if cuda else (layout,),
                                        layout if cuda and compile else None, ms_conv)
    if "ops" in suites and "torch" in frameworks:
        progress(f"ops: the torch twin's stem and max-pools, {layout}")
        result["rows"] += network.ops(weights, batch, frames, size, device, dtype, repeat, layout)
    if "data" in suites:
        progress("data: the training and evaluation input pipelines, CPU-s per clip")
        result["rows"] += pipeline.data(video, frames, workers, repeat)
    if "features" in suites:
        progress(f"features: FVD's protocol, {min(frames, 16)}-frame videos, CPU-s per video")
        result["rows"] += pipeline.features(frameworks, device, video, min(frames, 16),
                                            max(batch, 4), repeat)
    if "convert" in suites:
        progress("convert: the 50 MB checkpoint, per direction")
        result["rows"] += pipeline.convert(repeat)
    result["ratios"] = ratios(result["rows"])
    return result


def ratios(rows) -> list:
    """MindSpore's median time over the torch twin's (eager, NCDHW: what `predict` runs), per
    suite and MindSpore mode, from the rows of one run."""
    out = []
    for suite in ("infer", "train"):
        torch = next((r for r in rows if r["suite"] == suite and r["name"] == "torch eager"),
                     None)
        for r in rows:
            if torch and r["suite"] == suite and r["name"].startswith("mindspore "):
                out.append({"suite": suite, "name": r["name"], "conv": r.get("conv", "auto"),
                            "clip": r["clip"], "ratio": r["median_s"] / torch["median_s"]})
    return out


def over(result: dict, limit: float) -> list:
    """The ratios of `result` above `limit`, as lines; an error when there is none to check."""
    if not result["ratios"]:
        raise ValueError("--max-ratio needs a torch eager row and MindSpore rows (infer or "
                         "train suite, --frameworks torch mindspore, float32)")
    return [f"{r['suite']}: {r['name']} takes {r['ratio']:.2f}x torch eager's time "
            f"({r['clip']}), over --max-ratio {limit:g}" for r in result["ratios"]
            if r["ratio"] > limit]


def machine(env: dict) -> str:
    """The device a result was measured on, in words: the GPU when there is one."""
    if env.get("gpu"):
        return env["gpu"]
    return f"{env['cpu']} ({env['cpu_count']} cores)"


def _rate(gflops: float) -> str:
    return f"{gflops / 1e3:.0f} TFLOP/s" if gflops >= 1e4 else f"{gflops:.0f} GFLOP/s"


def _roofs(result: dict) -> str:
    parts = [f"{p} {c['n']}^3 matmul {_rate(c['gflops'])}" for p, c in result["ceilings"].items()]
    if "bandwidth" in result:
        parts.append(f"copy {result['bandwidth']['gb_per_s']:.0f} GB/s")
    return "; ".join(parts)


def markdown(result: dict) -> str:
    env, cfg, lines = result["environment"], result["config"], []
    where = f"{env['cpu']} ({env['cpu_count']} cores, torch threads {env['torch_threads']})"
    if env.get("gpu"):
        where = f"{env['gpu']} ({env.get('cuda', '')}), host {where}"
    lines.append(f"Measured {result['date']} on {where}; "
                 + ", ".join(f"{k} {v}" for k, v in env["versions"].items()) + ".")
    if cfg.get("cudnn_benchmark"):
        lines.append(f"\ncuDNN autotuning on; TF32 convolutions "
                     f"{'on' if cfg.get('tf32_convolutions') else 'off'} (float32 rows).")
    if "ceilings" in result:
        lines.append(f"\nCeilings: {_roofs(result)}.")
    if result.get("ratios"):
        lines.append("\nMindSpore / torch eager, median time: " + "; ".join(
            f"{r['suite']} {r['name'][10:]} {r['ratio']:.2f}x" for r in result["ratios"]) + ".")
    for suite in ("infer", "train", "ops", "data", "features", "convert"):
        rows = [r for r in result["rows"] if r["suite"] == suite]
        if not rows:
            continue
        lines.append(f"\n### {suite}\n")
        if suite in ("infer", "train"):
            lines.append("| run | dtype | clip | batch | median s | min-max s | clips/s | GFLOP/s "
                         "| of ceiling | peak GB |")
            lines.append("|---|---|---|---|---|---|---|---|---|---|")
            for r in rows:
                peak = f"{r['peak_gb']:.1f}" if "peak_gb" in r else "-"
                first = f" (first call {r['warmup_s']:.0f} s)" if "warmup_s" in r else ""
                name = r["name"] + first
                lines.append(f"| {name} | {r.get('dtype', '')} | {r.get('clip', '')} | "
                             f"{r['batch']} | {r['median_s']:.4f} | {r['min_s']:.4f}-"
                             f"{r['max_s']:.4f} | {r['clips_per_s']:.2f} | {r['gflops']:.0f} | "
                             f"{r['fraction_of_ceiling']:.1%} | {peak} |")
        elif suite == "ops":
            lines.append("| op | dtype | layout | clip | batch | median ms | min-max ms |")
            lines.append("|---|---|---|---|---|---|---|")
            for r in rows:
                lines.append(f"| {r['name']} | {r['dtype']} | {r['layout']} | {r['clip']} | "
                             f"{r['batch']} | {1e3 * r['median_s']:.2f} | "
                             f"{1e3 * r['min_s']:.2f}-{1e3 * r['max_s']:.2f} |")
        elif suite in ("data", "features"):
            lines.append(f"Video: {rows[0]['video']}; {rows[0]['frames']}-frame clips.\n")
            lines.append("| run | CPU s per clip | clips/s | median s | min-max s |")
            lines.append("|---|---|---|---|---|")
            for r in rows:
                lines.append(f"| {r['name']} | {r['cpu_s_per_clip']:.3f} | {r['clips_per_s']:.1f} "
                             f"| {r['median_s']:.3f} | {r['min_s']:.3f}-{r['max_s']:.3f} |")
        else:
            unit, key = "MB/s", "mb_per_s"
            lines.append(f"| run | median s | min-max s | {unit} |")
            lines.append("|---|---|---|---|")
            for r in rows:
                lines.append(f"| {r['name']} | {r['median_s']:.3f} | {r['min_s']:.3f}-"
                             f"{r['max_s']:.3f} | {r[key]:.1f} |")
    return "\n".join(lines) + "\n"


def chart(result: dict, path: str):
    """Bars: each inference and training row as a % of the ceiling of its own precision,
    labelled with clips/s; the device named in the title."""
    os.environ.setdefault("MPLBACKEND", "Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in result["rows"] if r["suite"] in ("infer", "train")]
    if not rows:
        return
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(rows) + 1.8))
    labels = [f"{r['suite']}: {r['name']} ({r.get('dtype', '')}, {r.get('clip', '')}, "
              f"batch {r['batch']})" for r in rows]
    ax.barh(range(len(rows)), [100 * r["fraction_of_ceiling"] for r in rows], color="tab:blue")
    for i, r in enumerate(rows):
        ax.text(100 * r["fraction_of_ceiling"] + 0.3, i, f"{r['clips_per_s']:.2f} clips/s",
                va="center", fontsize=8)
    ax.set_xlim(0, 1.25 * max(100 * r["fraction_of_ceiling"] for r in rows))
    ax.set_yticks(range(len(rows)), labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("% of the measured matmul ceiling of the row's precision\n"
                  + textwrap.fill(f"({_roofs(result)})", 80), fontsize=8)
    ax.set_title(f"I3D throughput on {machine(result['environment'])}", fontsize=10)
    fig.tight_layout()
    with atomic_output(path, force=True) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def outputs(out_dir: str, stem: str, suites) -> list:
    """The files a run writes: JSON, markdown, and the chart when it has rows to draw."""
    base = os.path.join(out_dir, stem)
    charted = bool({"infer", "train"} & set(suites))
    return [base + ".json", base + ".md"] + ([base + ".png"] if charted else [])


def write(result: dict, paths: list):
    """The files of `outputs`, at these (temporary) paths: the caller places them."""
    with open(paths[0], "w") as f:
        json.dump(result, f, indent=1)
    with open(paths[1], "w") as f:
        f.write(markdown(result))
    if len(paths) > 2:
        chart(result, paths[2])
