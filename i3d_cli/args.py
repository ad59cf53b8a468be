"""Argument types shared by the subcommands."""
from __future__ import annotations

import argparse


def frames(value: str):
    """A number of frames (>= 1) or 'all' (None)."""
    if value == "all":
        return None
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of frames or 'all', got {value!r}")
    if n < 1:
        raise argparse.ArgumentTypeError("the number of frames must be at least 1")
    return n
