"""numpy's .npy and .npz files, read as untrusted input: the header is parsed with numpy's own
bounded parser, object arrays and Fortran order are refused, the data size the header declares
must be what the file (or the zip member) holds, and data is read one row (one video) at a time,
so a file cannot make us allocate more than one row, however large it claims to be (a deflated
member only ever inflates as far as it is read)."""
from __future__ import annotations

import io
import json
import zipfile

import numpy as np

from convert.errors import I3DError, printable
from convert.fileio import open_input

MAX_HEADER = 10000  # numpy's own default


class Array:
    """One array of a .npy file or .npz member: shape, dtype, and its rows in order."""

    def __init__(self, where: str, stream, size: int):
        self.where, self._f = where, stream
        try:
            version = np.lib.format.read_magic(stream)
            read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                    else np.lib.format.read_array_header_2_0)
            shape, fortran, dtype = read(stream, max_header_size=MAX_HEADER)
        except (ValueError, SyntaxError, EOFError, zipfile.BadZipFile) as e:
            raise I3DError(f"{where}: not a numpy array ({printable(e)})") from None
        known = dtype.kind in "fU" or dtype in (np.uint8, np.int64)  # U: metadata strings
        if dtype.hasobject or not known or dtype.byteorder == ">":
            raise I3DError(f"{where}: arrays of {printable(dtype.str)} are not read (uint8 or "
                           "little-endian floats)")
        if fortran and len(shape) > 1:
            raise I3DError(f"{where}: Fortran-ordered arrays are not read (save it C-ordered)")
        self.shape, self.dtype = tuple(shape), dtype
        self.nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        held = size - stream.tell()
        if held != self.nbytes:
            raise I3DError(f"{where}: the header declares {self.shape} {dtype.name} "
                           f"({self.nbytes} bytes) but the data holds {held}")

    def rows(self, start: int = 0):
        """Yields a[start], a[start + 1], ... read from the file one at a time."""
        row = self.shape[1:]
        n = int(np.prod(row, dtype=np.int64)) * self.dtype.itemsize
        self._f.seek(self._f.tell() + start * n)
        for _ in range(start, self.shape[0] if self.shape else 0):
            yield self._read(n).reshape(row)

    def read(self) -> np.ndarray:
        return self._read(self.nbytes).reshape(self.shape)

    def _read(self, n: int) -> np.ndarray:
        try:
            buf = self._f.read(n)
        except (OSError, zipfile.BadZipFile, EOFError) as e:  # zlib.error is an Exception too
            raise I3DError(f"{self.where}: cannot read ({printable(e)})") from None
        except Exception as e:
            raise I3DError(f"{self.where}: corrupt data ({printable(e)})") from None
        if len(buf) != n:
            raise I3DError(f"{self.where}: truncated ({len(buf)} of {n} bytes)")
        return np.frombuffer(buf, self.dtype)


def open_arrays(path: str, stack) -> dict:
    """{name: Array} of a .npy file ('' -> its array) or .npz archive; files stay open on
    `stack` (a contextlib.ExitStack) while the rows are read."""
    f = stack.enter_context(open_input(path))
    size = f.seek(0, io.SEEK_END)
    f.seek(0)
    if not path.endswith(".npz"):
        return {"": Array(path, f, size)}
    try:
        z = stack.enter_context(zipfile.ZipFile(f))
        members = z.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as e:
        raise I3DError(f"{path}: not an .npz archive ({printable(e)})") from None
    out = {}
    for m in members:
        name = m.filename[:-4] if m.filename.endswith(".npy") else m.filename
        try:
            stream = stack.enter_context(z.open(m))
        except (zipfile.BadZipFile, NotImplementedError, RuntimeError) as e:
            raise I3DError(f"{path}: member {printable(m.filename)} unreadable "
                           f"({printable(e)})") from None
        out[name] = Array(f"{path}: {printable(name)}", stream, m.file_size)
    return out


def json_member(arrays: dict, key: str, path: str) -> dict:
    """The JSON object stored as the 0-d string member `key` (this tool's metadata), checked:
    a string of at most 64 KB that parses to an object; one line naming the file otherwise."""
    member = arrays.get(key)
    if member is None or member.dtype.kind != "U" or member.shape != () or member.nbytes > 1 << 16:
        raise I3DError(f"{path}: no '{key}' record of this tool")
    try:
        value = json.loads(str(member.read()[()]))
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise I3DError(f"{path}: its '{key}' record is not a JSON object")
    return value


def save_npz(path: str, arrays: dict):
    """Uncompressed .npz (np.savez) at `path`, a file the caller made (atomic_output's)."""
    with open(path, "wb") as f:
        np.savez(f, **arrays)
