"""The `i3d` command: the parser, and the one error boundary. Whatever the user's input,
arguments, configuration or environment did wrong (an I3DError, an OSError such as a full disk
or a read-only folder, a bad argument) ends as one line on stderr naming the culprit and exit
status 2; Ctrl-C is 130, and SIGTERM while a file is written 143 (its temporary file removed:
`convert.fileio`). Each command
group lives in its own module and imports its framework only when it runs."""
from __future__ import annotations

import argparse
import sys

from convert import threads
from convert.errors import ArgumentParser, I3DError, printable

from . import bench, export, fvd, parity, predict, training, weights


def build_parser() -> argparse.ArgumentParser:
    from i3d_video import SAMPLE

    p = ArgumentParser(prog="i3d", description="I3D in MindSpore and PyTorch: "
                       "predict, convert, check parity, benchmark, train, FVD and features, export.")
    sub = p.add_subparsers(dest="command", required=True)
    predict.register(sub, SAMPLE)
    weights.register(sub)
    parity.register(sub, SAMPLE)
    bench.register(sub)
    training.register(sub)
    fvd.register(sub)
    export.register(sub)
    return p


def one_line(error: BaseException) -> str:
    """An error as one line: an OSError names its file first, as I3DErrors do."""
    if isinstance(error, OSError) and error.filename is not None:
        files = " -> ".join(str(f) for f in (error.filename, error.filename2) if f is not None)
        text = f"{files}: {error.strerror or error}"
    else:
        text = str(error) or type(error).__name__
    return printable(" ".join(text.splitlines()), limit=None)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        threads.requested()  # a bad I3D_THREADS is refused before any work
        return args.func(args)
    except (I3DError, OSError) as e:
        print(f"i3d: error: {one_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
