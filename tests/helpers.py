"""What the tests share: running `i3d` as a user does (a real process, or in-process for the
training commands), the one-line-error contract, and a pickle payload that must never run."""
from __future__ import annotations

import os
import subprocess
import sys

from convert import architecture as arch

I3D = [sys.executable, "-m", "i3d_cli"]
# every distinct (kernel, stride) of I3D's max-pools, the Mixed blocks' branch pool included
POOLS = sorted({(p.kernel, p.stride) for p in arch.LAYERS if isinstance(p, arch.Pool)}
               | {arch.BRANCH3_POOL})


def i3d(*args, cwd=None, timeout=900) -> subprocess.CompletedProcess:
    """`i3d ARGS` in a new process."""
    return subprocess.run([*I3D, *map(str, args)], capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, "GLOG_v": "3"}, timeout=timeout)


def ok(*args, **kw) -> str:
    """stdout of a run that must succeed."""
    r = i3d(*args, **kw)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


def expect_error(r: subprocess.CompletedProcess, *words) -> str:
    """Exit status 2, exactly one line on stderr, no traceback, naming every word."""
    err = r.stderr.strip()
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    for w in words:
        assert w in err, err
    return err


def fails(*args, words=(), cwd=None) -> str:
    return expect_error(i3d(*args, cwd=cwd), *words)


def call(*argv) -> int:
    """`i3d ARGV` in this process (for the training commands, whose state tests inspect)."""
    from i3d_cli.main import main

    return main([str(a) for a in argv])


class Payload:
    """Pickles to `os.system('touch PWNED')`: a file that runs it has executed code."""

    def __reduce__(self):
        return (os.system, ("touch PWNED",))
