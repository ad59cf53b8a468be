"""Exports of a twin for deployment, each verified before it is kept: ONNX and a torch.export
program (.pt2) from the torch twin, MindIR from the MindSpore twin. The file is written under a
temporary name, loaded back by its own runtime, run on a clip of the exported shape (DeepMind's
sample when it fits) and compared with the twin it came from; over TOLERANCE, nothing is left
behind and the command fails with the figure."""
from __future__ import annotations

import contextlib
import functools
import io
import json
import logging
import os
import stat
import tempfile
import warnings

import numpy as np

from convert import architecture as arch
from convert.errors import I3DError
from convert.fileio import atomic_outputs
from convert.labels import labels
from convert.weights import num_classes, weights_id

from . import metadata

FORMATS = {".onnx": "onnx", ".mindir": "mindir", ".pt2": "exported-program"}
TOLERANCE = 1e-4  # max |exported - twin| of the output, float32


def format_for(path: str, fmt: str | None) -> str:
    if fmt:
        return fmt
    ext = os.path.splitext(path)[1].lower()
    if ext not in FORMATS:
        raise I3DError(f"{path}: give --format (or a name ending in {', '.join(FORMATS)})")
    return FORMATS[ext]


def sidecar(path: str) -> str:
    """MindIR's metadata file, beside the model."""
    return path + ".json"


def check_clip(frames: int, size: int, variant: arch.Variant):
    if frames < arch.min_frames(variant):
        raise I3DError(f"--frames {frames}: the network needs at least "
                       f"{arch.min_frames(variant)}")
    pool = arch.LAYERS[-1].pool[1]
    if arch.output_size(variant, size, 1) < pool:
        raise I3DError(f"--size {size}: the head's {pool}x{pool} pool needs a larger clip")


@functools.lru_cache(maxsize=2)
def _one_clip(frames: int, size: int) -> np.ndarray:
    if size == 224 and frames <= 79:
        from i3d_video import SAMPLE, deepmind_clip

        return deepmind_clip(SAMPLE, frames)
    return np.random.RandomState(0).uniform(-1, 1, (1, 3, frames, size, size)).astype(np.float32)


def verification_clip(frames: int, size: int, batch: int) -> np.ndarray:
    """DeepMind's sample (its first `frames` frames) when the export takes 224x224 clips of at
    most 79 frames, else a seeded random clip; repeated to `batch` (decoded once per export)."""
    return np.ascontiguousarray(np.repeat(_one_clip(frames, size), batch, axis=0))


@contextlib.contextmanager
def _quiet():
    """The exporters' progress prints, log lines and warnings are not the user's business."""
    log = logging.getLogger("torch")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        log.setLevel(level)


def _torch_module(weights, variant, output: str):
    import torch

    import i3d_torch

    net = i3d_torch.build(weights, variant)

    class Output(torch.nn.Module):
        """The twin with one head output (`output`) as the model's output."""

        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, clip):
            return self.net.head_outputs(clip)[output]

    return Output().eval()


def _compare(got: np.ndarray, want: np.ndarray, what: str) -> float:
    diff = float(np.abs(got - want).max()) if got.shape == want.shape else float("inf")
    if not diff <= TOLERANCE:
        raise I3DError(f"{what}: the export's output differs from the twin's by {diff:.3g} "
                       f"(> {TOLERANCE:g}): nothing written")
    return diff


def export(weights: dict, info: dict, out: str, fmt: str, frames: int = 64, size: int = 224,
           batch: int | None = None, output: str = "Logits", force: bool = False) -> dict:
    """Writes the export at `out` (MindIR: and its metadata beside it) and returns what was
    checked: {format, path, max_diff, verified_batches, ...}."""
    variant = info["variant"]
    check_clip(frames, size, variant)
    if fmt == "mindir" and batch is None:
        raise I3DError("--format mindir: MindSpore's GraphCell runs the exported shape only: "
                       "give --batch N")
    n = num_classes(weights)
    meta = metadata.record(variant, frames, size, batch, output, labels(n), weights_id(weights),
                           os.path.basename(info["path"]))
    paths = [out, sidecar(out)] if fmt == "mindir" else [out]
    with atomic_outputs(paths, force) as temps:
        if fmt == "onnx":
            report = _onnx(weights, variant, meta, temps[0], frames, size, batch, output)
        elif fmt == "exported-program":
            report = _program(weights, variant, meta, temps[0], frames, size, batch, output)
        elif fmt == "mindir":
            report = _mindir(weights, variant, meta, temps, frames, size, batch, output)
        else:
            raise I3DError(f"unknown format {fmt!r}: {', '.join(FORMATS.values())}")
    return {"format": fmt, "path": out, **report}


def _dynamic(batch):
    import torch

    return None if batch is not None else {"clip": {0: torch.export.Dim("batch", min=1, max=4096)}}


def _twin_output(module, clip):
    import torch

    with torch.inference_mode():
        return module(torch.from_numpy(clip)).numpy()


def _batches(batch):
    """The batches a verification runs: a dynamic export is run at 1 and 3 (the example it was
    traced with has 2: a traced size must not be the only one that works)."""
    return (1, 3) if batch is None else (batch,)


def _onnx(weights, variant, meta, tmp, frames, size, batch, output) -> dict:
    import torch

    from .onnx_model import OnnxModel

    module = _torch_module(weights, variant, output)
    example = torch.from_numpy(verification_clip(frames, size, batch or 2))
    with _quiet():
        program = torch.onnx.export(module, (example,), None, dynamo=True,
                                    input_names=["clip"], output_names=[output.lower()],
                                    dynamic_shapes=_dynamic(batch))
    program.model.metadata_props.update(meta)
    with _quiet():
        program.save(tmp)
    model, diff = OnnxModel(tmp), 0.0
    for b in _batches(batch):
        clip = verification_clip(frames, size, b)
        diff = max(diff, _compare(model(clip), _twin_output(module, clip), tmp))
    return {"max_diff": diff, "verified_batches": list(_batches(batch)),
            "opset": int(program.model.opset_imports.get("", 0))}


def _program(weights, variant, meta, tmp, frames, size, batch, output) -> dict:
    import torch

    module = _torch_module(weights, variant, output)
    example = torch.from_numpy(verification_clip(frames, size, batch or 2))
    with _quiet():
        program = torch.export.export(module, (example,), dynamic_shapes=_dynamic(batch))
        torch.export.save(program, tmp, extra_files={"i3d.json": json.dumps(meta)})
    loaded, diff = ProgramModel(tmp), 0.0
    for b in _batches(batch):
        clip = verification_clip(frames, size, b)
        diff = max(diff, _compare(loaded(clip), _twin_output(module, clip), tmp))
    return {"max_diff": diff, "verified_batches": list(_batches(batch))}


class ProgramModel:
    """A .pt2 of this tool: `program(clip)` -> numpy; its record in `.exported`."""

    def __init__(self, path: str):
        import torch

        extra = {"i3d.json": ""}
        try:
            with _quiet():
                self.module = torch.export.load(path, extra_files=extra).module()
            meta = json.loads(extra["i3d.json"] or "{}")
        except I3DError:
            raise
        except Exception as e:
            raise I3DError(f"{path}: not a torch.export program ({type(e).__name__})") from None
        self.exported, self.path = metadata.parse(meta, path), path

    def __call__(self, clip: np.ndarray) -> np.ndarray:
        import torch

        self.exported.check_clip(clip.shape, self.path)
        with torch.inference_mode():
            return self.module(torch.from_numpy(np.ascontiguousarray(clip, np.float32))).numpy()


def _mindir(weights, variant, meta, temps, frames, size, batch, output) -> dict:
    import i3d_ms
    import mindspore as ms
    from mindspore import Tensor, nn

    i3d_ms.set_mode("graph")
    net = i3d_ms.build(weights, variant)
    index = arch.HEAD_OUTPUTS.index(output)

    class Output(nn.Cell):
        def __init__(self):
            super().__init__(auto_prefix=False)
            self.net = net

        def construct(self, clip):
            return self.net.walk(clip, False, True)[index]

    cell = Output()
    clip = verification_clip(frames, size, batch)
    with open(temps[1], "w") as f:
        json.dump(meta, f, indent=1)
    # ms.export appends '.mindir' and ms.load wants it: a folder of its own beside the output
    with tempfile.TemporaryDirectory(dir=os.path.dirname(temps[0]), prefix=".export.") as d:
        with _quiet():
            ms.export(cell, Tensor(clip), file_name=os.path.join(d, "model"), file_format="MINDIR")
        model = os.path.join(d, "model.mindir")
        loaded = MindirModel(model, temps[1])
        diff = _compare(loaded(clip), cell(Tensor(clip)).asnumpy(), temps[0])
        os.chmod(model, stat.S_IMODE(os.stat(temps[0]).st_mode))  # MindSpore's is 0400
        os.replace(model, temps[0])
    return {"max_diff": diff, "verified_batches": [batch]}


class MindirModel:
    """A MindIR of this tool and its metadata file: `model(clip)` -> numpy."""

    def __init__(self, path: str, meta_path: str | None = None):
        import mindspore as ms
        from mindspore import nn

        from convert.fileio import read_prefix

        meta_path = meta_path or sidecar(path)
        try:
            meta = json.loads(read_prefix(meta_path, 1 << 20))
        except I3DError:
            raise I3DError(f"{path}: its metadata file {meta_path} is missing or unreadable "
                           "(an export of this tool writes both)") from None
        except ValueError:
            raise I3DError(f"{meta_path}: not JSON") from None
        self.exported = metadata.parse(meta if isinstance(meta, dict) else {}, meta_path)
        try:
            self.cell = nn.GraphCell(ms.load(path))
        except Exception as e:
            raise I3DError(f"{path}: MindSpore cannot load it as MindIR ({type(e).__name__})") from None
        self.path = path

    def __call__(self, clip: np.ndarray) -> np.ndarray:
        from mindspore import Tensor

        self.exported.check_clip(clip.shape, self.path)
        return self.cell(Tensor(np.ascontiguousarray(clip, np.float32))).asnumpy()


def load_export(path: str):
    """An export of this tool by its extension: `model(clip)` -> numpy, `.exported`."""
    fmt = format_for(path, None)
    if fmt == "onnx":
        from .onnx_model import OnnxModel

        return OnnxModel(path)
    return MindirModel(path) if fmt == "mindir" else ProgramModel(path)
