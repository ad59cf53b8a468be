"""One twin, built once and kept, mapping batches of clips to the head's outputs as numpy:
the engine under `i3d fvd`, `i3d features` and the Python API. Each framework is imported only
when asked for (MindSpore first: see i3d_cli.frameworks)."""
from __future__ import annotations

import numpy as np

from convert import architecture as arch


class Extractor:
    """`extractor(clips)` with clips (B, T, 224, 224, 3) float32 in [-1, 1] (numpy, or a tensor
    of the extractor's framework in the twins' layout (B, 3, T, H, W)) -> {head output: numpy}
    (`arch.HEAD_OUTPUTS`). On CUDA, torch runs in channels_last_3d."""

    def __init__(self, framework: str, weights="default", variant=arch.DEEPMIND,
                 device: str = "cpu", ms_mode: str = "graph", dtype: str = "float32"):
        """`weights`: canonical weights, or a file (or 'default') for `read_weights`.
        `dtype` 'bfloat16' or 'float16': torch autocast (float16 on CUDA only); the features
        come back float32."""
        if isinstance(weights, str):
            from convert.checkpoints import read_weights

            weights, info = read_weights(weights, variant)
            variant = info["variant"]
        self.framework, self.device, self.dtype = framework, device, dtype
        if dtype != "float32" and (framework != "torch" or
                                   (dtype == "float16" and not device.startswith("cuda"))):
            raise ValueError(f"{dtype}: torch autocast ({'CUDA' if dtype == 'float16' else 'CPU or CUDA'})"
                             " only; the features are float32 otherwise")
        self.min_frames = arch.min_frames(variant)  # fewer, and the head has nothing to pool
        if framework == "mindspore":
            import i3d_ms

            if device != "cpu":
                raise ValueError("the MindSpore twin runs on the CPU here (its GPU plugin "
                                 "needs CUDA 11)")
            i3d_ms.set_mode(ms_mode)
            self.net = i3d_ms.build(weights, variant)
            self.graph_batch = None if ms_mode == "graph" else 0
        elif framework == "torch":
            import torch

            import i3d_torch

            self.net = i3d_torch.build(weights, variant).to(device)
            if device.startswith("cuda"):
                self.net = self.net.to(memory_format=torch.channels_last_3d)
        else:
            raise ValueError(f"unknown framework {framework!r}")

    def __call__(self, clips) -> dict:
        if isinstance(clips, np.ndarray):
            if clips.ndim != 5 or clips.shape[-1] != 3:
                raise ValueError(f"clips must be (B, T, H, W, 3), got {clips.shape}")
            clips = np.ascontiguousarray(clips.transpose(0, 4, 1, 2, 3), np.float32)
        if self.framework == "mindspore":
            from mindspore import Tensor, ops

            x = clips if isinstance(clips, Tensor) else Tensor(clips)
            n = x.shape[0]
            if self.graph_batch is None:
                self.graph_batch = n
            if n < self.graph_batch:  # a graph compiles per shape: pad a last, smaller batch
                x = ops.concat([x] + [x[-1:]] * (self.graph_batch - n))
            return {k: v.asnumpy()[:n] for k, v in self.net.head_outputs(x).items()}
        import torch

        x = clips if isinstance(clips, torch.Tensor) else torch.from_numpy(clips)
        x = x.to(self.device, torch.float32)
        if self.device.startswith("cuda"):
            x = x.contiguous(memory_format=torch.channels_last_3d)
        autocast = torch.autocast(self.device.split(":")[0], getattr(torch, self.dtype),
                                  enabled=self.dtype != "float32")
        with torch.inference_mode(), autocast:
            out = self.net.head_outputs(x)
        return {k: v.float().cpu().numpy() for k, v in out.items()}
