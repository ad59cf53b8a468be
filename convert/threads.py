"""The CPU thread count both twins take from the environment.

`I3D_THREADS=N` caps torch's intra-op threads and MindSpore's CPU kernel threads at N, for
jobs that share a machine. MindSpore's thread pools wait for work by spinning on sched_yield:
when other processes keep its cores busy, every kernel waits for a scheduler slice, and a
16x112x112 forward took 12x its idle time in PyNative (14x in graph mode) beside two busy
loops on 2 cores; one thread each, 4x and 7x (benchmarks/results/cpu-2core-mindspore.md).
`make test` runs its two workers with I3D_THREADS=1. Unset, each framework picks its own
(one thread per core)."""
from __future__ import annotations

import os

from .errors import I3DError, printable

VARIABLE = "I3D_THREADS"


def requested() -> int | None:
    """I3D_THREADS as a positive whole number, or None when it is unset or empty."""
    value = os.environ.get(VARIABLE, "").strip()
    if not value:
        return None
    if not value.isdigit() or int(value) < 1 or int(value) > 4096:
        raise I3DError(f"{VARIABLE}={printable(value)}: not a number of threads (1 to 4096)")
    return int(value)
