"""`i3d export`: a twin as ONNX, MindIR or a torch.export program, verified before it is kept."""
from __future__ import annotations

from convert import architecture as arch

from .args import positive
from .weights import add_variant_option


def batch_size(value: str):
    """'dynamic' or a batch size >= 1."""
    return value if value == "dynamic" else positive(value)


def cmd_export(args) -> int:
    from export.writers import export, format_for

    fmt = format_for(args.out, args.format)
    if fmt == "mindir":
        import i3d_ms  # noqa: F401  (MindSpore before anything decodes)
    from convert.checkpoints import read_weights

    weights, info = read_weights(args.weights, args.variant)
    batch = args.batch or (1 if fmt == "mindir" else "dynamic")
    batch = None if batch == "dynamic" else batch
    r = export(weights, info, args.out, fmt, args.frames, args.size, batch, args.end_point,
               args.force)
    twin = "mindspore" if fmt == "mindir" else "torch"
    opset = f", opset {r['opset']}" if "opset" in r else ""
    print(f"{args.weights} -> {args.out} ({fmt}{opset}; {args.end_point} of clips "
          f"(B, 3, {args.frames}, {args.size}, {args.size}), batch "
          f"{'dynamic' if batch is None else batch}, variant {info['variant'].name})")
    print(f"verified at batch {', '.join(map(str, r['verified_batches']))}: max |export - "
          f"{twin} twin| = {r['max_diff']:.2e}")
    return 0


def register(sub):
    q = sub.add_parser("export", help="export a twin for deployment (ONNX, MindIR, .pt2)",
                       description="The clip's time and size are fixed at export ('SAME' "
                       "padding depends on them); the batch is dynamic (ONNX, .pt2) unless "
                       "--batch N. Every export is loaded back by its runtime and run before "
                       "it is kept: over 1e-4 from the twin, nothing is written.")
    q.add_argument("weights", help="'default' or a weight file")
    q.add_argument("out", help="the export (.onnx, .mindir, .pt2)")
    q.add_argument("--format", choices=("onnx", "mindir", "exported-program"),
                   help="default: from OUT's extension")
    q.add_argument("--frames", type=positive, default=64)
    q.add_argument("--size", type=positive, default=224)
    q.add_argument("--batch", type=batch_size, default=None, metavar="dynamic|N",
                   help="dynamic (ONNX, .pt2: the default) or N (MindIR: 1 by default)")
    q.add_argument("--end-point", default="Logits", choices=arch.HEAD_OUTPUTS,
                   help="the model's output (default Logits)")
    add_variant_option(q)
    q.add_argument("--force", action="store_true", help="overwrite OUT")
    q.set_defaults(func=cmd_export)
