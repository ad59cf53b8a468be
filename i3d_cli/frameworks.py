"""The one place the CLI imports a twin. MindSpore goes first whenever it is wanted: it aborts
(std::random_device) when imported after decord, which any video decoding loads."""
from __future__ import annotations

FRAMEWORKS = ("torch", "mindspore")


def twins(*frameworks, ms_mode: str = "pynative") -> dict:
    """{framework: twin module}, imported now, before any video is decoded."""
    out = {}
    if "mindspore" in frameworks:
        import i3d_ms

        i3d_ms.set_mode(ms_mode)
        out["mindspore"] = i3d_ms
    if "torch" in frameworks:
        import i3d_torch

        out["torch"] = i3d_torch
    return out

