"""Warm-up, then repeated timed runs; median and spread. GPU work is synchronised by the caller's
`sync`. And the environment a result was measured in."""
from __future__ import annotations

import os
import platform
import statistics
import time


def measure(fn, warmup: int = 1, repeat: int = 3, sync=None) -> dict:
    """Seconds per call of fn(): median, min, max over `repeat` timed calls after `warmup`."""
    sync = sync or (lambda: None)
    for _ in range(warmup):
        fn()
        sync()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times),
            "repeat": repeat, "warmup": warmup}


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(device: str) -> dict:
    import importlib.metadata as md

    versions = {}
    for pkg in ("numpy", "torch", "mindspore", "jax", "flax", "decord"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    env = {"python": platform.python_version(), "platform": platform.platform(),
           "cpu": cpu_model(), "cpu_count": os.cpu_count(), "versions": versions,
           "device": device}
    import torch

    env["torch_threads"] = torch.get_num_threads()
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        env["gpu"] = props.name
        env["cuda"] = (f"CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}, "
                       f"sm_{props.major}{props.minor}, {props.total_memory / 2 ** 30:.0f} GiB")
    return env
