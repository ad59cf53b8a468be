"""The suites around the network: the training and evaluation input pipelines, and checkpoint
conversion. Each returns a list of result rows: {suite, name, ..., median_s, and a rate}."""
from __future__ import annotations

import os
import tempfile
import time

from .timing import measure


# The training and evaluation clips of the Kinetics configs (config/kinetics400_finetune_1gpu.yaml).
CLIP = {"frames": 64, "stride": 1, "resize": 256, "crop": 224, "scales": [1.0, 0.875, 0.75],
        "flip": True, "clips": 10}
KINETICS_SHAPED = {"frames": 300, "height": 256, "width": 340, "fps": 30}  # 10 s, 30 fps


def data(video=None, frames=64, workers=(0, 1, 2), repeat=3, clips=8) -> list:
    """The input pipelines of `i3d train` / `i3d eval` (`recipe.samples` through `i3d_ms.pipeline`) on `video`, or on a
    Kinetics-shaped clip made for the run (`i3d make-dataset --frames 300 --height 256
    --width 340 --fps 30`: real H.264): CPU-seconds per clip (all threads of the process) and
    clips/s, serially in this process (0 workers) and through the training dataset's threads."""
    import i3d_ms  # noqa: F401  (MindSpore before decord)
    from i3d_ms.pipeline import train_dataset
    from recipe.samples import EvalSource, TrainSource
    from recipe.sources import Video

    rows, spec = [], {**CLIP, "frames": frames}
    with tempfile.TemporaryDirectory() as tmp:
        if video is None:
            video = _kinetics_shaped(tmp)
        else:  # one line naming the file, before any work, if it cannot be read
            from i3d_video.decode import open_video

            open_video(video).close()
        videos = [Video(video, 0)] * clips
        serial = {"train clip": TrainSource(videos, spec, 1, clips, seed=1),
                  "eval centre clip": EvalSource(videos, spec, "centre", uint8=True),
                  "eval 10x3 views": EvalSource(videos[:1], spec, "multi", uint8=True)}
        for name, source in serial.items():
            n = len(source) * source.k if isinstance(source, EvalSource) else len(source)
            t = _measure(lambda: [source[k] for k in range(len(source))], repeat)
            rows.append(_row(f"{name}, serial", t, n, frames))
        for w in (w for w in workers if w > 0):
            def run():
                source = TrainSource(videos, spec, 1, clips, seed=1)
                for _ in train_dataset(source, w).create_tuple_iterator(output_numpy=True,
                                                                         num_epochs=1):
                    pass

            rows.append(_row(f"train clip, {w} worker threads", _measure(run, repeat), clips,
                             frames))
    for r in rows:
        r["video"] = os.path.basename(video)
    return rows


def features(frameworks, device="cpu", video=None, frames=16, batch=4, repeat=3,
             videos=8) -> list:
    """`i3d features` / `i3d fvd` at the FVD protocol on a set of `videos` copies of `video`
    (default: a Kinetics-shaped H.264 clip made for the run, 340x256): decoding and TF's resize
    alone, each twin's network alone on decoded batches, and both together as the commands run
    them. CPU-seconds per video (every thread of the process) and videos/s, so that what bounds
    a run (decoding or the network) can be read off."""
    if "mindspore" in frameworks:
        import i3d_ms  # noqa: F401  (MindSpore before decord)
    import contextlib

    import numpy as np

    from fvd import Extractor
    from fvd.features import set_logits
    from fvd.protocol import fvd_frames
    from fvd.sets import open_set

    rows = []
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        if video is None:
            video = _kinetics_shaped(tmp)
        folder = os.path.join(tmp, "set")
        os.mkdir(folder)
        ext = os.path.splitext(video)[1]
        for i in range(videos):
            os.symlink(os.path.abspath(video), os.path.join(folder, f"{i:03d}{ext}"))
        vids = open_set(folder, stack)
        rows.append(_row("decode + TF resize", _measure(
            lambda: [v.read(0, frames, fvd_frames) for v in vids], repeat), videos, frames))
        clips = np.stack([vids[0].read(0, frames, fvd_frames)] * batch)
        runs = [("torch", "eager")] if "torch" in frameworks else []
        runs += [("mindspore", m) for m in ("graph", "pynative") if "mindspore" in frameworks
                 and device == "cpu"]
        for fw, mode in runs:
            ex = Extractor(fw, "default", device=device, ms_mode=mode if fw == "mindspore" else "graph")
            name = f"{fw} {mode}"
            rows.append(_row(f"network, {name}, batch {batch}",
                             _measure(lambda: ex(clips), repeat), batch, frames))
            rows.append(_row(f"decode + network, {name}", _measure(
                lambda: set_logits(vids, frames, ex, batch), repeat), videos, frames))
    for r in rows:
        r["suite"], r["video"] = "features", os.path.basename(video)
    return rows


def _kinetics_shaped(folder: str) -> str:
    from recipe.sources import read_kinetics
    from i3d_ms.make_dataset import make_dataset

    root = os.path.join(folder, "kinetics_shaped")
    make_dataset(root, classes=2, videos_per_class=1, val_per_class=0, **KINETICS_SHAPED)
    return read_kinetics(root, "train")[0].path


def _measure(fn, repeat: int) -> dict:
    """measure(), and the process's CPU seconds (every thread) per call, median."""
    cpu = []

    def timed():
        start = time.process_time()
        fn()
        cpu.append(time.process_time() - start)

    t = measure(timed, 1, repeat)
    return {**t, "cpu_s": sorted(cpu[1:])[len(cpu[1:]) // 2]}


def _row(name: str, t: dict, clips: int, frames: int) -> dict:
    cpu = t.pop("cpu_s")
    return {"suite": "data", "name": name, **t, "clips_per_s": clips / t["median_s"],
            "cpu_s_per_clip": cpu / clips, "frames": frames}


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
