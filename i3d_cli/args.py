"""Argument types shared by the subcommands: a bad number is an argparse error (one line, exit
status 2) before anything runs, never a traceback or a meaningless result."""
from __future__ import annotations

import argparse
import math


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


def integer(minimum: int):
    """The type of an integer option that must be at least `minimum`."""

    def parse(value: str) -> int:
        try:
            n = int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {value!r}") from None
        if n < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {n}")
        return n

    parse.__name__ = f"integer >= {minimum}"
    return parse


positive = integer(1)      # --top, --batch, --size, --repeat, --steps, --classes, frames counts
non_negative = integer(0)  # counts that may be zero: --val-per-class


def positive_float(value: str) -> float:
    """A finite number above zero (--tolerance)."""
    try:
        x = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {value!r}") from None
    if not math.isfinite(x) or x <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number above 0, got {value}")
    return x
