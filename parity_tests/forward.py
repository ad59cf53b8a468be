"""End points of each twin on one input, in the twins' NCDHW layout (the reference's are in
`parity_tests.reference`)."""
from __future__ import annotations

from convert.architecture import DEEPMIND



def torch_end_points(weights, x, variant=DEEPMIND, dtype="float32", **kw) -> dict:
    """The torch twin; dtype 'bfloat16'/'float16' runs it under CPU autocast."""
    import torch

    import i3d_torch

    with torch.autocast("cpu", getattr(torch, dtype), enabled=dtype != "float32"):
        return i3d_torch.end_points(weights, x, variant, **kw)


def ms_end_points(weights, x, variant=DEEPMIND, mode="pynative", **kw) -> dict:
    import i3d_ms

    i3d_ms.set_mode(mode)
    return i3d_ms.end_points(weights, x, variant, **kw)
