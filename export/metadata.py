"""What every exported file records, so that it cannot run under the wrong numerics or on the
wrong input: the variant, the clip shape it was exported for (TF 'SAME' padding depends on the
clip's size, so time and size are fixed), the batch, the input protocol, the output, the labels
and the weights' digest. ONNX keeps it in `metadata_props`, a .pt2 in an extra file, MindIR
(which has no free-form field) in a JSON file beside the model."""
from __future__ import annotations

import json
from dataclasses import dataclass

from convert import architecture as arch
from convert.errors import I3DError, printable

KIND = "i3d-parity-export/1"
PREFIX = "i3d."
INPUT = ("clip (B, 3, T, S, S) float32, RGB in [-1, 1]: DeepMind's protocol (shorter side 256, "
         "centre crop 224, x / 127.5 - 1)")
OUTPUTS = arch.HEAD_OUTPUTS


@dataclass(frozen=True)
class Exported:
    """An export's record, parsed and checked."""
    variant: arch.Variant
    frames: int
    size: int
    batch: int | None  # None: dynamic
    output: str
    labels: tuple
    weights: str
    source: str

    def shape(self, batch: int) -> tuple:
        return (batch, 3, self.frames, self.size, self.size)

    def check_clip(self, shape, where: str):
        """One line when a clip does not fit the exported shape (padding was fixed for it)."""
        want = self.shape(shape[0] if self.batch is None else self.batch)
        if tuple(shape) != want:
            raise I3DError(f"{where}: exported for clips {want} (batch "
                           f"{'dynamic' if self.batch is None else self.batch}), got "
                           f"{tuple(shape)}: export again with --frames/--size for another "
                           "clip")


def record(variant: arch.Variant, frames: int, size: int, batch: int | None, output: str,
           labels: list, weights: str, source: str) -> dict:
    """{key: str}, every key prefixed 'i3d.'."""
    values = {"format": KIND, "variant": variant.spec, "variant_name": variant.name,
              "frames": frames, "size": size, "batch": "dynamic" if batch is None else batch,
              "input": INPUT, "output": output, "labels": json.dumps(labels),
              "weights": weights, "source": source}
    return {PREFIX + k: str(v) for k, v in values.items()}


def _int(meta: dict, key: str, path: str, low: int, high: int) -> int:
    text = meta.get(PREFIX + key, "")
    if not text.isdigit() or not low <= int(text) <= high:
        raise I3DError(f"{path}: metadata {PREFIX}{key} {printable(text)!r} is not a number in "
                       f"{low}..{high}")
    return int(text)


def parse(meta: dict, path: str) -> Exported:
    """The record of `meta` ({key: str}); one line when it is not this tool's export."""
    if meta.get(PREFIX + "format") != KIND:
        raise I3DError(f"{path}: not an I3D export of this tool (no {PREFIX}format "
                       f"{KIND!r} in its metadata)")
    try:
        variant = arch.variant(meta.get(PREFIX + "variant", ""))
        labels = json.loads(meta.get(PREFIX + "labels", ""))
    except ValueError as e:
        raise I3DError(f"{path}: metadata: {printable(e)}") from None
    if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
        raise I3DError(f"{path}: metadata {PREFIX}labels is not a list of names")
    output = meta.get(PREFIX + "output")
    if output not in OUTPUTS:
        raise I3DError(f"{path}: metadata {PREFIX}output {printable(output)!r} is not one of "
                       f"{', '.join(OUTPUTS)}")
    batch = None if meta.get(PREFIX + "batch") == "dynamic" else _int(meta, "batch", path, 1, 4096)
    return Exported(variant, _int(meta, "frames", path, 1, 4096), _int(meta, "size", path, 32, 4096),
                    batch, output, tuple(labels), meta.get(PREFIX + "weights", ""),
                    meta.get(PREFIX + "source", ""))
