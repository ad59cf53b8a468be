"""The `i3d` command: the parser, and the one error boundary (an I3DError is one line on
stderr and exit status 2). Each command group lives in its own module and imports its
framework only when it runs."""
from __future__ import annotations

import argparse
import sys

from convert.errors import I3DError

from . import bench, parity, predict, training, weights


def build_parser() -> argparse.ArgumentParser:
    from i3d_video import SAMPLE

    p = argparse.ArgumentParser(prog="i3d", description="I3D in MindSpore and PyTorch: "
                                "predict, convert, check parity, benchmark, train.")
    sub = p.add_subparsers(dest="command", required=True)
    predict.register(sub, SAMPLE)
    weights.register(sub)
    parity.register(sub, SAMPLE)
    bench.register(sub)
    training.register(sub)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except I3DError as e:
        print(f"i3d: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
