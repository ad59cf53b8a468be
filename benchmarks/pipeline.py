"""The suites around the network: video decoding with the evaluation transforms, and checkpoint
conversion. Each returns a list of result rows: {suite, name, ..., median_s, and a rate}."""
from __future__ import annotations

import os
import tempfile

from .timing import measure


def data(video, frames, workers, repeat, clips=8) -> list:
    """Decode + DeepMind transforms of `clips` clips, by number of worker processes."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from i3d_video import deepmind_clip

    spawn = multiprocessing.get_context("spawn")  # fork after JAX or MindSpore threads can hang

    rows = []
    for n in workers:
        if n == 0:
            fn = lambda: [deepmind_clip(video, frames) for _ in range(clips)]  # noqa: E731
            t = measure(fn, 1, repeat)
        else:
            with ProcessPoolExecutor(n, mp_context=spawn) as pool:
                fn = lambda: list(pool.map(deepmind_clip, [video] * clips, [frames] * clips))  # noqa: E731
                t = measure(fn, 1, repeat)
        rows.append({"suite": "data", "name": f"decode+transform, {n} workers", **t,
                     "clips_per_s": clips / t["median_s"], "frames": frames})
    return rows


def convert(repeat) -> list:
    """Conversion of the 50 MB default checkpoint, per direction, through canonical weights."""
    from convert.checkpoints import read_weights, write_weights

    rows = []
    with tempfile.TemporaryDirectory() as d:
        paths = {"mindspore": os.path.join(d, "w.ckpt"), "torch": os.path.join(d, "w.pt"),
                 "safetensors": os.path.join(d, "w.safetensors")}
        weights, _ = read_weights("default")
        for fmt, path in paths.items():
            write_weights(weights, path, fmt)
        size = os.path.getsize(paths["mindspore"])
        steps = [("default", "mindspore"), ("mindspore", "torch"), ("torch", "safetensors"),
                 ("safetensors", "mindspore"), ("torch", "mindspore"), ("mindspore", "safetensors")]
        for src, dst in steps:
            out = os.path.join(d, "out")

            def run():
                w, _ = read_weights(src if src == "default" else paths[src])
                write_weights(w, out, dst, force=True)

            t = measure(run, 1, repeat)
            rows.append({"suite": "convert", "name": f"{src} -> {dst}", **t,
                         "mb_per_s": size / 1e6 / t["median_s"]})
    return rows
