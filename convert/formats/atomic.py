"""Write a file completely or not at all: a temporary name in the same folder, then rename."""
import contextlib
import os
import tempfile

from ..errors import I3DError


@contextlib.contextmanager
def atomic_output(path: str, force: bool = False):
    """Yields a temporary path; renamed onto `path` only if the block finishes."""
    if os.path.exists(path) and not force:
        raise I3DError(f"{path}: already exists (use --force to overwrite)")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise I3DError(f"{path}: folder {folder} does not exist")
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
    os.close(fd)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
