"""Files in and out without losing anything. Reads take regular files only (a folder, FIFO or
device is named for what it is, a FIFO without waiting for a writer), fail with one line naming
the file, map files instead of reading them whole, and refuse sparse files (mostly holes: their
size is not data). Writes happen completely or not at all: each output is written under a
temporary name in its own folder and moved into place only when the writing finished, never onto
something that is not a regular file, never onto an existing file without `force` (not even one
that appeared while we wrote: new files are linked into place, which fails if the name was
taken), with the umask's permissions; temporary files are removed on errors, Ctrl-C and SIGTERM
(a SIGKILL can leave one: hidden, uniquely named, never read)."""
from __future__ import annotations

import contextlib
import errno
import glob
import mmap
import os
import secrets
import shutil
import signal
import stat
import threading

from .errors import I3DError

NAME_MAX = 255  # bytes in one file name on Linux file systems
# Holes a file read may have: file systems that compress (ZFS) store blocks of zeros as holes,
# so a few are real data; a file of mostly holes is a memory bomb of its apparent size.
SPARSE_SLACK = 64 << 20


def _kind(mode: int) -> str:
    for test, kind in ((stat.S_ISDIR, "a directory"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISFIFO, "a FIFO"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return kind
    return "not a regular file"


def open_input(path: str):
    """A regular file opened for reading (binary). Anything else is refused by what it is,
    without blocking on it (a FIFO is opened non-blocking, then refused)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise I3DError(f"{path}: no such file") from None
    except OSError as e:
        raise I3DError(f"{path}: cannot read ({e.strerror})") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise I3DError(f"{path}: is {_kind(mode)}, not a file to read")
    return os.fdopen(fd, "rb")


def read_prefix(path: str, n: int) -> bytes:
    """At most the first `n` bytes of a regular file."""
    with open_input(path) as f:
        try:
            return f.read(n)
        except OSError as e:
            raise I3DError(f"{path}: cannot read ({e.strerror})") from None


def _holes(fd: int, size: int, enough: int) -> int:
    """Bytes of the file that are holes (never written: read as zeros), counted until more
    than `enough` are found; 0 where the file system cannot tell."""
    holes = pos = 0
    try:
        while pos < size and holes <= enough:
            hole = os.lseek(fd, pos, os.SEEK_HOLE)
            if hole >= size:
                break
            try:
                pos = os.lseek(fd, hole, os.SEEK_DATA)
            except OSError as e:
                if e.errno != errno.ENXIO:  # ENXIO: no data after the hole
                    raise
                pos = size
            holes += pos - hole
    except OSError:
        return 0
    return holes


@contextlib.contextmanager
def mapped(path: str):
    """The bytes of a regular file as a read-only buffer, paged in as they are used (b'' for an
    empty file). A sparse file (more than SPARSE_SLACK bytes of holes) is refused unread: its
    size is not data, and a reader would copy its zeros into memory."""
    with open_input(path) as f:
        try:
            size = os.fstat(f.fileno()).st_size
            holes = _holes(f.fileno(), size, SPARSE_SLACK)
            if holes > SPARSE_SLACK:
                raise I3DError(f"{path}: a sparse file of {size} bytes, at least {holes} of them "
                               "never written (holes): refused unread")
            buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if size else b""
        except OSError as e:
            raise I3DError(f"{path}: cannot read ({e.strerror})") from None
    try:
        yield buf
    finally:
        if buf:
            with contextlib.suppress(BufferError):  # a view still alive: closed when collected
                buf.close()


def check_destination(path: str, force: bool = False) -> os.stat_result | None:
    """Raise I3DError unless `path` may be written: new, or (with `force`) a regular file, in
    an existing folder. Returns the stat of the file it would replace."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        st = None
    except OSError as e:
        raise I3DError(f"{path}: {e.strerror}") from None
    if st is not None:
        if not stat.S_ISREG(st.st_mode):
            raise I3DError(f"{path}: is {_kind(st.st_mode)}, not a file this tool replaces")
        if not force:
            raise I3DError(f"{path}: already exists (use --force to overwrite)")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise I3DError(f"{path}: folder {folder} does not exist")
    return st


def temp_name(path: str) -> str:
    """A hidden, unique name beside `path` that fits in NAME_MAX however long `path`'s is."""
    folder, base = os.path.split(path)
    tail = f".{os.getpid()}.{secrets.token_hex(4)}.tmp"
    room = NAME_MAX - 1 - len(tail)
    while len(os.fsencode(base)) > room:
        base = base[:-1]
    return os.path.join(folder, f".{base}{tail}")


def remove_stale(folder: str, pattern: str) -> list:
    """Removes the temporary files (`temp_name`) of writes to `folder`/`pattern` whose process
    is gone (a SIGKILL leaves them); returns their paths. Live writers' files stay."""
    gone = []
    for tmp in glob.glob(os.path.join(folder, f".{pattern}.*.*.tmp")):
        pid = os.path.basename(tmp).rsplit(".", 3)[-3]
        if pid.isdigit() and not _alive(int(pid)):
            with contextlib.suppress(FileNotFoundError):
                os.remove(tmp)
            gone.append(tmp)
    return gone


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's
        return True
    return True


def _create(path: str, replaced: os.stat_result | None, temps: list):
    """An empty temporary file for `path` (the umask's permissions, or those of the file it
    replaces), listed in `temps` for removal. SIGTERM and SIGHUP wait while it is created and
    listed: delivered between the two, the unwinding left it behind (seen under load)."""
    for _ in range(100):
        tmp = temp_name(path)
        held = signal.pthread_sigmask(signal.SIG_BLOCK, (signal.SIGTERM, signal.SIGHUP))
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
            temps.append(tmp)
        except FileExistsError:
            continue
        except OSError as e:
            raise I3DError(f"{path}: cannot write ({e.strerror})") from None
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, held)
        if replaced is not None:
            os.fchmod(fd, stat.S_IMODE(replaced.st_mode) & 0o777)
        os.close(fd)
        return
    raise I3DError(f"{path}: no free temporary name beside it")


def _link_new(tmp: str, path: str):
    """Move `tmp` to `path` only if `path` does not exist, atomically (a hard link fails if the
    name is taken). File systems without hard links: claim the name exclusively, then rename."""
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise I3DError(f"{path}: already exists (created while writing; use --force to "
                       "overwrite)") from None
    except OSError as e:
        if e.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK):
            raise
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            raise I3DError(f"{path}: already exists (created while writing; use --force to "
                           "overwrite)") from None
        os.replace(tmp, path)
    else:
        os.unlink(tmp)


def _replace(tmp: str, path: str):
    """Move `tmp` onto `path`, which may exist but must still be a regular file."""
    check_destination(path, force=True)
    os.replace(tmp, path)


class _Terminated(SystemExit):
    """SIGTERM/SIGHUP as an exception, so `finally` blocks remove temporary files."""


def _terminate(signum, frame):
    raise _Terminated(128 + signum)


@contextlib.contextmanager
def _signals_unwind():
    """While writing, SIGTERM and SIGHUP unwind the stack (exit status 128 + signal) instead of
    killing the process where it stands. Handlers someone else installed are left alone."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    installed = {}
    for sig in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(sig) == signal.SIG_DFL:
            installed[sig] = signal.signal(sig, _terminate)
    try:
        yield
    finally:
        for sig, old in installed.items():
            signal.signal(sig, old)


def _oserror(e: OSError, paths: list, temps: list) -> I3DError:
    """An OSError while writing as one line naming the destination it concerns."""
    names = dict(zip(temps, paths))
    where = names.get(e.filename) or (e.filename if e.filename in paths else None)
    where = where or (paths[0] if len(paths) == 1 else ", ".join(paths))
    return I3DError(f"{where}: cannot write ({e.strerror or e})")


@contextlib.contextmanager
def atomic_outputs(paths: list, force: bool = False):
    """Yields one temporary path per destination; all are moved into place only if the block
    finishes. Every destination is checked before anything is written; new files are taken
    all or none (if one of them appeared meanwhile, those already placed are removed again)."""
    paths = [str(p) for p in paths]
    real = [os.path.realpath(p) for p in paths]
    for i, r in enumerate(real):
        if r in real[:i]:
            raise I3DError(f"{paths[i]}: given twice as an output")
    replaced = [check_destination(p, force) for p in paths]
    temps, placed = [], []
    try:
        with _signals_unwind():
            try:
                for p, st in zip(paths, replaced):
                    _create(p, st, temps)
                yield list(temps)
                for tmp in temps:
                    with open(tmp, "rb+") as f:
                        os.fsync(f.fileno())
                try:
                    for p, tmp in zip(paths, temps):
                        (_replace if force else _link_new)(tmp, p)
                        placed.append(p)
                except BaseException:
                    if not force:
                        for p in placed:
                            os.unlink(p)
                    raise
            except OSError as e:
                raise _oserror(e, paths, temps) from None
    finally:
        for tmp in temps:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


@contextlib.contextmanager
def atomic_folder(path: str):
    """Yields a hidden temporary folder beside `path`, moved onto `path` (which must not exist,
    or be an empty folder) only if the block finishes; removed with its contents otherwise."""
    if os.path.lexists(path) and not (os.path.isdir(path) and not os.path.islink(path)):
        raise I3DError(f"{path}: exists and is not a folder")
    if os.path.isdir(path) and os.listdir(path):
        raise I3DError(f"{path}: exists and is not empty")
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise I3DError(f"{path}: folder {parent} does not exist")
    tmp = temp_name(os.path.join(parent, os.path.basename(os.path.abspath(path))))
    try:
        with _signals_unwind():
            try:
                os.mkdir(tmp)
                yield tmp
                os.rename(tmp, path)  # onto an empty folder too; fails if one was filled
            except OSError as e:
                raise _oserror(e, [path], [tmp]) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def atomic_output(path: str, force: bool = False):
    """Yields a temporary path; moved onto `path` only if the block finishes."""
    with atomic_outputs([path], force) as (tmp,):
        yield tmp
