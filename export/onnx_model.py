"""An ONNX export run by onnxruntime alone (no torch, no MindSpore, no `onnx` package): a
deployment needs numpy, the decoder and onnxruntime.

An ONNX file is data to onnxruntime, except that a tensor may live in "external data": a file
named by a path inside the model, which onnxruntime reads relative to the model's folder. So
before onnxruntime sees the bytes, the protobuf is walked here (`scan`): every tensor of the
graph, its nodes' attributes, subgraphs, sparse tensors, functions and training graphs; a tensor
with external data (or a data_location other than the default) is refused, naming it, and so is
a file without this tool's metadata. onnxruntime then gets the bytes already checked, not the
path, so neither a second read nor a swapped file can bring back what was refused."""
from __future__ import annotations

import numpy as np

from convert.errors import I3DError, printable
from convert.fileio import mapped
from convert.formats import protobuf

from . import metadata

# Message type -> {field: message type} of the fields that hold messages which can hold tensors.
_CHILDREN = {
    "model": {7: "graph", 20: "training", 25: "function"},
    "training": {1: "graph", 2: "graph"},
    "function": {7: "node"},
    "graph": {1: "node", 5: "tensor", 15: "sparse"},
    "node": {5: "attribute"},
    "attribute": {5: "tensor", 6: "graph", 10: "tensor", 11: "graph", 22: "sparse", 23: "sparse"},
    "sparse": {1: "tensor", 2: "tensor"},
    "tensor": {},
}
MAX_DEPTH = 64  # nested subgraphs (If/Loop bodies): deeper is not a model of this tool
_WIRES = (0, 1, 2, 5)


def _text(buf, span) -> str:
    return bytes(buf[span[0]:span[1]]).decode("utf-8", "replace")


def _tensor(buf, start, end):
    name, external = "?", False
    for field, wire, value in protobuf.fields(buf, start, end, _WIRES, "an ONNX tensor"):
        if field == 8 and wire == 2:
            name = _text(buf, value)
        elif (field == 13 and wire == 2) or (field == 14 and wire == 0 and value != 0):
            external = True
    if external:
        raise protobuf.Bad(f"tensor {printable(name)!r} keeps its data in another file "
                           "(external data), which this tool does not read")


def scan(buf) -> dict:
    """{key: value} of the model's metadata_props, once every tensor is known to be inside;
    protobuf.Bad otherwise."""
    meta, stack = {}, [("model", 0, len(buf), 0)]
    while stack:
        kind, start, end, depth = stack.pop()
        if kind == "tensor":
            _tensor(buf, start, end)
            continue
        if depth > MAX_DEPTH:
            raise protobuf.Bad(f"messages nested deeper than {MAX_DEPTH}")
        for field, wire, value in protobuf.fields(buf, start, end, _WIRES, "an ONNX message"):
            child = _CHILDREN[kind].get(field)
            if child and wire == 2:
                stack.append((child, *value, depth + 1))
            elif kind == "model" and field == 14 and wire == 2:  # StringStringEntryProto
                entry = dict((f, _text(buf, v)) for f, w, v in
                             protobuf.fields(buf, *value, _WIRES, "a metadata entry") if w == 2)
                meta[entry.get(1, "")] = entry.get(2, "")
    return meta


class OnnxModel:
    """`model(clip)` -> the exported output (numpy) for a clip of the exported shape."""

    def __init__(self, path: str, providers=("CPUExecutionProvider",)):
        with mapped(path) as buf:
            try:
                meta = scan(buf)
            except (protobuf.Bad, UnicodeDecodeError) as e:
                raise I3DError(f"{path}: not an ONNX model this tool runs ({e})") from None
            self.exported = metadata.parse(meta, path)
            data = bytes(buf)
        import onnxruntime as ort

        try:
            self.session = ort.InferenceSession(data, providers=list(providers))
        except Exception as e:  # onnxruntime's own error types (Fail, InvalidGraph, ...)
            raise I3DError(f"{path}: onnxruntime cannot load it ({printable(e, 200)})") from None
        self.path, self.input = path, self.session.get_inputs()[0].name

    def __call__(self, clip: np.ndarray) -> np.ndarray:
        self.exported.check_clip(clip.shape, self.path)
        return self.session.run(None, {self.input: np.ascontiguousarray(clip, np.float32)})[0]
