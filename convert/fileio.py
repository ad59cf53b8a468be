"""Files in and out without losing anything: reads fail with one line naming the file, writes
happen completely or not at all (a temporary name in the same folder, then a rename)."""
import contextlib
import os
import tempfile

from .errors import I3DError


def read_bytes(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise I3DError(f"{path}: cannot read ({e.strerror})") from None


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
