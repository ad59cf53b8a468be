"""Exports for deployment, each checked against the twin it came from: ONNX (onnxruntime),
MindIR (MindSpore's GraphCell) and torch.export programs. `export.onnx_model` runs an ONNX
export with onnxruntime and numpy alone."""
