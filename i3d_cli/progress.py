"""A progress line for long commands: drawn on stderr when it is a terminal, so that logs and
the one-line error contract see nothing of it."""
from __future__ import annotations

import sys
import time


class Bar:
    """`bar(done)` redraws `label [####    ] done/total, rate unit/s, ETA`."""

    def __init__(self, label: str, total: int, unit: str = "videos", stream=sys.stderr):
        self.label, self.total, self.unit, self.stream = label, total, unit, stream
        self.t0, self.drawn = time.perf_counter(), False
        self.live = getattr(stream, "isatty", lambda: False)()

    def __call__(self, done: int):
        if not self.live or not self.total:
            return
        rate = done / max(time.perf_counter() - self.t0, 1e-9)
        eta = int((self.total - done) / rate) if rate > 0 else 0
        bar = "#" * int(24 * done / self.total)
        self.stream.write(f"\r{self.label} [{bar:<24}] {done}/{self.total} {rate:.2f} "
                          f"{self.unit}/s ETA {eta // 60}:{eta % 60:02d} ")
        self.stream.flush()
        self.drawn = True

    def close(self):
        if self.drawn:
            self.stream.write("\n")
            self.drawn = False
