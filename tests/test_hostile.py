"""Hostile and careless input, crafted here at run time (issue 12): forged and bomb files for the
numpy readers, destinations that must not be clobbered, races, signals, long names, read-only
and full disks; on the training side configs, CSVs and list files, videos, checkpoints and
runs. Every case runs the real `i3d` command under an address-space limit (the MindSpore ones
several in one process: `each`) and must end with exit status 2, exactly one stderr line naming
the file (and the line or key), no traceback and nothing left behind: no output, no temporary
file."""
from __future__ import annotations

import json
import os
import pickle
import signal
import stat
import struct
import subprocess
import sys
import time

import numpy as np
import pytest

from convert.errors import I3DError
from convert.fileio import atomic_output, atomic_outputs
from tests.helpers import Payload, expect_error

# Address space of an `i3d` process: the numpy-only paths (reading, converting to
# safetensors) peak near 250 MB here; every bomb below asks for several times this.
LIMIT = 1 << 30

_SHIM = """
import os, resource, runpy, signal, sys
limit, fsize, umask = (int(a) for a in sys.argv[1:4])
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
if fsize:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
    resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
os.umask(umask)
if sys.argv[4] == "-c":
    code, sys.argv = sys.argv[5], ["-c", *sys.argv[6:]]
    exec(compile(code, "<test>", "exec"), {"__name__": "__main__"})
else:
    sys.argv = ["i3d", *sys.argv[4:]]
    runpy.run_module("i3d_cli", run_name="__main__")
"""


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _env():
    path = os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path, "GLOG_v": "3", "OPENBLAS_NUM_THREADS": "1",
            "OMP_NUM_THREADS": "1"}


def limited(*args, limit=LIMIT, fsize=0, umask=0o022, cwd=None, timeout=300, popen=False):
    """`i3d ARGS` (or `-c CODE ARGS`: Python code) in a new process whose address space is
    capped at `limit` bytes (and files at `fsize` bytes)."""
    argv = [sys.executable, "-c", _SHIM, str(limit), str(fsize), str(umask), *map(str, args)]
    cwd = cwd or ROOT
    if popen:
        return subprocess.Popen(argv, cwd=cwd, env=_env(), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
    return subprocess.run(argv, capture_output=True, text=True, cwd=cwd, env=_env(),
                          timeout=timeout)


def refused(r, culprit, *words) -> str:
    """Exit 2, one line naming `culprit` (and every word), no traceback."""
    return expect_error(r, str(culprit), *words)


def only(folder, *names):
    """Nothing was left in `folder` but `names` (no output, no temporary file)."""
    assert sorted(os.listdir(folder)) == sorted(names), os.listdir(folder)


def crafted(tmp_path, name: str, blob: bytes, dst: str, *words):
    """`i3d convert NAME DST` of a crafted file, run in its folder: refused (`refused`), and
    nothing left but the file: no output, no temporary file, no PWNED (nothing ran)."""
    src = tmp_path / name
    src.write_bytes(blob)
    refused(limited("convert", src, tmp_path / dst, cwd=tmp_path), src, *words)
    only(tmp_path, name)
    return src


# --- a pickle assembler: numpy's own recipes, spelled opcode by opcode ------------------------

def _str(s: str) -> bytes:
    b = s.encode()
    return b"\x8c" + bytes([len(b)]) + b if len(b) < 256 else b"X" + struct.pack("<I", len(b)) + b


def _int(n: int) -> bytes:
    if -2**31 <= n < 2**31:
        return b"J" + struct.pack("<i", n)
    raw = n.to_bytes((n.bit_length() + 8) // 8, "little", signed=True)  # as pickle's LONG1
    return b"\x8a" + bytes([len(raw)]) + raw


def _tuple(*items: bytes) -> bytes:
    return b"(" + b"".join(items) + b"t"


def _global(module: str, name: str) -> bytes:
    return _str(module) + _str(name) + b"\x93"


def _dtype(code: str, order="<", elsize=-1, alignment=-1, flags=0) -> bytes:
    """numpy.dtype(code, False, True) with BUILD state (3, order, None x3, elsize, align, flags)."""
    state = _tuple(_int(3), _str(order), b"N", b"N", b"N", _int(elsize), _int(alignment),
                   _int(flags))
    return _global("numpy", "dtype") + _tuple(_str(code), b"\x89", b"\x88") + b"R" + state + b"b"


def _array(shape, dtype: bytes, data: bytes) -> bytes:
    """numpy.core.multiarray._reconstruct(ndarray, (0,), b'b') + BUILD (1, shape, dtype,
    fortran, data), as numpy pickles an array at protocols 2-4. `data`: the data's opcodes."""
    empty = (_global("numpy.core.multiarray", "_reconstruct")
             + _tuple(_global("numpy", "ndarray"), _tuple(_int(0)), b"C\x01b") + b"R")
    return empty + _tuple(_int(1), _tuple(*map(_int, shape)), dtype, b"\x89", data) + b"b"


def _bytes(b: bytes) -> bytes:
    return b"B" + struct.pack("<I", len(b)) + b


def _dict(**items: bytes) -> bytes:
    return b"}(" + b"".join(_str(k) + v for k, v in items.items()) + b"u"


def _pickle(ops: bytes) -> bytes:
    return b"\x80\x04" + ops + b"."


def test_the_assembler_writes_what_pickle_reads():
    """The judge of the crafted pickles below: Python's own unpickler reads the assembler's
    plain case as the arrays it spells, and so does our parser."""
    from convert.formats.jax_pickle import parse

    data = np.arange(6, dtype="<f4").reshape(2, 3)
    blob = _pickle(_dict(params=_dict(k=_array((2, 3), _dtype("f4"), _bytes(data.tobytes())))))
    for tree in (pickle.loads(blob), parse(blob, "x")):
        assert list(tree) == ["params"] and np.array_equal(tree["params"]["k"], data)
        assert tree["params"]["k"].dtype == np.float32


def _nested(depth: int) -> bytes:
    """{'a': {'a': ... {} ...}}, `depth` dicts deep, set with SETITEM."""
    ops = b"}"
    for _ in range(depth):
        ops = b"}" + _str("a") + ops + b"s"
    return ops


def _memo_bomb() -> bytes:
    """41 dicts, each holding the next one twice: 2^40 leaves once flattened (~600 bytes)."""
    node = np.zeros(1, np.float32)
    for _ in range(40):
        node = {"a": node, "b": node}
    return pickle.dumps({"params": node}, protocol=4)


def _weights(leaf: bytes) -> bytes:
    """{'params': {'k': LEAF}}."""
    return _pickle(_dict(params=_dict(k=leaf)))


PICKLES = {  # case: (the file, words its error must hold)
    # numpy 1.26 trusts the flags of a pickled dtype: these make f8 data "object pointers" at
    # addresses the file chose
    "forged-dtype": (lambda: _weights(_array(
        (4,), _dtype("f8", elsize=8, alignment=8, flags=0x3F), _bytes(b"A" * 32))),
        ("forged state",)),
    "memo-bomb": (_memo_bomb, ("shared",)),
    # 150M object pointers (1.2 GB) allocated before numpy reads the one-element list
    "object-array": (lambda: _weights(_array((150_000_000,), _dtype("O8", order="|"), b"]Na")),
                     ("'O8'", "numeric")),
    "complex-array": (lambda: _weights(_array((2,), _dtype("c8"), _bytes(bytes(16)))),
                      ("'c8'",)),
    "shape-beyond-data": (lambda: _weights(_array((2**40,), _dtype("f4"), _bytes(bytes(8)))),
                          ("needs 4398046511104 bytes",)),
    "code": (lambda: pickle.dumps({"params": Payload()}, protocol=4), ("refused", "posix.system")),
    "deep-nesting": (lambda: _pickle(_dict(params=_nested(100))), ("nested more than 32",)),
}


@pytest.mark.parametrize("case", list(PICKLES))
def test_hostile_pickles(tmp_path, case):
    make, words = PICKLES[case]
    crafted(tmp_path, "w.ckpt", make(), "out.safetensors", "not a safe pickle", *words)


# --- safetensors -------------------------------------------------------------------------

def _safetensors(header, data=b"") -> bytes:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + data


def _overlapping():
    """3000 tensors on the same 1 MB of data (1.3 MB on disk, 3 GB when read)."""
    info = {"dtype": "U8", "shape": [1 << 20], "data_offsets": [0, 1 << 20]}
    return _safetensors({f"t{i}": info for i in range(3000)}, bytes(1 << 20))


# Read through the `safetensors` package (convert/formats/safetensors_file.py): the words are its
# own refusals, except "float8", whose header it accepts and whose tensor it then fails to build
# (numpy has no float8: an AttributeError, not a format error), refused by this tool's dtype
# check before any tensor is read, and the header over the cap (next test), refused unmapped.
SAFETENSORS = {
    "overlapping-offsets": (_overlapping, ("invalid offset",)),
    "shape-2^70": (lambda: _safetensors(
        {"t": {"dtype": "U8", "shape": [2**70], "data_offsets": [0, 4]}}, bytes(4)),
        ("expected usize",)),
    "shape-1e400": (lambda: _safetensors(
        b'{"t": {"dtype": "U8", "shape": [1e400], "data_offsets": [0, 4]}}', bytes(4)),
        ("number out of range",)),
    "json-3000-deep": (lambda: _safetensors(
        b'{"__metadata__": ' + b"[" * 3000 + b"]" * 3000 + b"}"), ("expected a map",)),
    "float8": (lambda: _safetensors(
        {"t": {"dtype": "F8_E4M3", "shape": [4], "data_offsets": [0, 4]}}, bytes(4)),
        ("'F8_E4M3'",)),
    "data-left-over": (lambda: _safetensors(
        {"t": {"dtype": "U8", "shape": [4], "data_offsets": [0, 4]}}, bytes(1 << 20)),
        ("not fully covered",)),
}


@pytest.mark.parametrize("case", list(SAFETENSORS))
def test_hostile_safetensors(tmp_path, case):
    from safetensors import safe_open

    make, words = SAFETENSORS[case]
    src = crafted(tmp_path, "w.safetensors", make(), "out.ckpt", "not a valid safetensors file",
                  *words)
    with pytest.raises(Exception):  # the package fails on it too (float8: numpy's AttributeError)
        with safe_open(str(src), "np") as f:
            [f.get_tensor(k) for k in f.keys()]


def test_safetensors_header_over_the_cap_is_not_read(tmp_path):
    """A header announced at 2 GB (a sparse file: nothing on disk) is refused unread."""
    src = tmp_path / "w.safetensors"
    n = 2 << 30
    with open(src, "wb") as f:
        f.write(struct.pack("<Q", n) + b"{")
        f.truncate(8 + n)
    r = limited("convert", src, tmp_path / "out.ckpt")
    refused(r, src, "at most 100000000")
    only(tmp_path, "w.safetensors")


# --- MindSpore .ckpt ----------------------------------------------------------------------
# Well-formed messages are built with MindSpore's own protobuf classes; malformed ones are
# spelled field by field.

def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        out.append(n & 0x7F | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _ckpt(*entries) -> bytes:
    """A Checkpoint of (tag, dims, tensor_type, content) entries, serialised by MindSpore."""
    from mindspore.train.checkpoint_pb2 import Checkpoint

    c = Checkpoint()
    for tag, dims, ttype, content in entries:
        v = c.value.add()
        v.tag, v.tensor.tensor_type, v.tensor.tensor_content = tag, ttype, content
        v.tensor.dims.extend(dims)
    return c.SerializeToString()


def _raw_entry(tag: bytes, tensor: bytes) -> bytes:
    return _field(1, _field(1, tag) + _field(2, tensor))


def _sparse_ckpt(path, size: int):
    """One Float32 tensor whose content field declares `size` bytes; the file is extended to
    hold them as a hole (4 KB on disk)."""
    n = size // 4
    head = _varint(1 << 3 | 0) + _varint(n) + _field(2, b"Float32") + _varint(3 << 3 | 2) \
        + _varint(size)
    tensor = _varint(2 << 3 | 2) + _varint(len(head) + size) + head
    value = _field(1, b"w") + tensor
    with open(path, "wb") as f:
        f.write(_varint(1 << 3 | 2) + _varint(len(value) + size) + value)
        f.truncate(f.tell() + size)


CKPTS = {  # case: (the file, words its error must hold)
    "dims-above-2^63": (lambda: _ckpt(("w", [-1, 2], "Float32", bytes(8))), ("beyond 2^63",)),
    "dims-product-overflows": (lambda: _ckpt(("w", [2**32 + 1, 2**32 + 1, 4], "Float32",
                                              bytes(4))), ("needs", "holds 4")),
    "shape-beyond-data": (lambda: _ckpt(("w", [2**30], "Float32", bytes(16))),
                          ("needs 4294967296 bytes", "holds 16")),
    "33-dims": (lambda: _ckpt(("w", [1] * 33, "Float32", bytes(4))), ("more than 32 dims",)),
    "escape-sequences-in-tag-and-type": (lambda: _ckpt(("w\x1b[2J\nnext line", [1],
                                                        "Float32\x1b[31m", bytes(4))),
                                         ("w\\x1b[2J\\nnext line", "Float32\\x1b[31m")),
    "tag-not-utf8": (lambda: _raw_entry(b"\xff\xfe", _field(2, b"Float32")), ("utf-8",)),
    "quantized-int4": (lambda: _ckpt(("w", [2], "Int4", bytes(1))), ("'Int4'",)),
    "complex": (lambda: _ckpt(("w", [1], "Complex64", bytes(8))), ("'Complex64'",)),
    "group-wire-type": (lambda: _ckpt(("w", [1], "Float32", bytes(4))) + b"\x0b" + bytes(8),
                        ("wire type 3",)),
    "truncated-varint": (lambda: b"\x0a\xff\xff\xff", ("truncated",)),
    "length-past-the-end": (lambda: b"\x0a\xff\xff\xff\x7f" + bytes(8), ("runs past",)),
    "entry-without-tensor": (lambda: _field(1, _field(1, b"w")), ("without a tensor",)),
    "map-parameter": (lambda: _field(1, _field(1, b"w") + _field(3, b"")), ("unknown field 3",)),
    "slices-disagree": (lambda: _ckpt(("w", [4], "Float32", bytes(8)),
                                      ("w", [2, 2], "Float32", bytes(8))), ("slices",)),
    "tag-twice": (lambda: _ckpt(("w", [1], "Float32", bytes(4)), ("v", [1], "Float32", bytes(4)),
                                ("w", [1], "Float32", bytes(4))), ("'w' appears twice",)),
    "string-entry-odd-length": (lambda: _ckpt(("w", [1], "Float32", bytes(4)),
                                              ("i3d_parity", [0], "str", b"abc")),
                                ("string entry 'i3d_parity'",)),
    "string-not-utf32": (lambda: _ckpt(("w", [1], "Float32", bytes(4)),
                                       ("i3d_parity", [0], "str", b"\xff" * 4)), ("utf-32",)),
    "crc-mismatch": (lambda: _ckpt(("w", [1], "Float32", bytes(4))) + b"crc_num" + bytes(10),
                     ("CRC-32",)),
    "65537-entries": (lambda: b"".join(_raw_entry(f"t{i}".encode(), b"\x08\x01" + _field(
        2, b"UInt8") + _field(3, b"x")) for i in range(65537)), ("more than 65536 entries",)),
}


@pytest.mark.parametrize("case", list(CKPTS))
def test_hostile_ckpts(tmp_path, case):
    make, words = CKPTS[case]
    crafted(tmp_path, "w.ckpt", make(), "out.safetensors", "not a valid MindSpore checkpoint",
            *words)


def test_sparse_ckpt_declaring_3_gb_is_refused_unread(tmp_path):
    src = tmp_path / "w.ckpt"
    _sparse_ckpt(src, 3 << 30)
    assert os.stat(src).st_blocks * 512 <= 8192  # 4 KB on disk, 3 GB in size
    refused(limited("convert", src, tmp_path / "out.safetensors"), src, "sparse file", "holes")
    only(tmp_path, "w.ckpt")


def test_ckpt_as_mindspore_reads_it(tmp_path):
    """What MindSpore's own loader reads, we read the same: a CRC trailer, a 1.x scalar
    (dims [0]), a tensor in consecutive slices of one tag."""
    import mindspore as ms

    from convert.formats import mindspore_ckpt

    w = np.arange(6, dtype=np.float32)
    path = str(tmp_path / "w.ckpt")
    ms.save_checkpoint([{"name": "w", "data": ms.Tensor(w.reshape(2, 3))}], path, crc_check=True)
    crafted = {"crc": open(path, "rb").read(),
               "scalar": _ckpt(("step", [0], "Int32", np.int32(7).tobytes())),
               "slices": _ckpt(("w", [2, 3], "Float32", w[:4].tobytes()),
                               ("w", [2, 3], "Float32", w[4:].tobytes()))}
    for name, blob in crafted.items():
        src = tmp_path / f"{name}.ckpt"
        src.write_bytes(blob)
        theirs = {k: v.asnumpy() for k, v in ms.load_checkpoint(str(src)).items()}
        ours = mindspore_ckpt.read(str(src))
        assert list(ours) == list(theirs), name
        for k in ours:
            assert ours[k].shape == theirs[k].shape and ours[k].tobytes() == theirs[k].tobytes()


# --- PyTorch files -----------------------------------------------------------------------
# Made by torch.save where torch makes them (both formats), else assembled: a zip of stored
# records around a pickle spelled with the assembler above, which torch.load reads as it is
# meant (test_the_torch_assembler_writes_what_torch_reads).

def _torch_saved(make, legacy: bool) -> bytes:
    import io

    import torch

    buf = io.BytesIO()
    torch.save(make(), buf, _use_new_zipfile_serialization=not legacy)
    return buf.getvalue()


def _aliased():
    import torch

    w = torch.zeros(4)
    return {"a": w, "b": w}


def _overlapping_views():
    import torch

    w = torch.zeros(4)
    return {"a": w[:3], "b": w[1:]}


def _torch(expr: str):
    """A torch object made from its expression when the case runs."""
    def make():
        import torch

        return eval(expr, {"torch": torch, "Payload": Payload})
    return make


TORCH_SAVED = {  # case: (the object, words its error must hold)
    # 1.5 KB on disk, 6.4 GB once made contiguous
    "expand-6.4GB": (_torch("{'w': torch.zeros(1).expand(1_600_000_000)}"), ("stride 0",)),
    # 80 KB on disk, 1.6 GB when copied
    "self-overlapping-view-1.6GB": (
        _torch("{'w': torch.zeros(80000, dtype=torch.int8).as_strided((40000, 40000), (1, 1))}"),
        ("overlaps itself",)),
    "aliased-tensors": (_aliased, ("'b' shares storage bytes with 'a'",)),
    "overlapping-views": (_overlapping_views, ("shares storage bytes",)),
    "sparse": (_torch("{'w': torch.eye(3).to_sparse()}"), ("a sparse tensor",)),
    "quantized": (_torch("{'w': torch.quantize_per_tensor(torch.zeros(4), 0.1, 0, torch.qint8)}"),
                  ("a quantized tensor",)),
    "complex": (_torch("{'w': torch.zeros(4, dtype=torch.complex64)}"),
                ("ComplexFloatStorage",)),
    "float8": (_torch("{'w': torch.zeros(4, dtype=torch.float8_e4m3fn)}"), ("float8_e4m3fn",)),
    "lone-0-d-tensor": (_torch("torch.zeros(())"), ("holds a tensor, not a state_dict",)),
    "number-leaf": (_torch("{'w': 3}"), ("'w' is 3, not a tensor",)),
    "dict-leaf": (_torch("{'w': {'x': torch.zeros(2)}}"), ("'w' is a dict, not a tensor",)),
    "list-leaf": (_torch("{'w': [torch.zeros(2)]}"), ("'w' is a list, not a tensor",)),
    "code": (_torch("{'w': Payload()}"), ("refused to load global posix.system",)),
}


def _torch_refused(tmp_path, blob: bytes, *words):
    # torch is never imported to read: the numpy-only address space suffices
    crafted(tmp_path, "w.pt", blob, "out.safetensors",
            "not a PyTorch state_dict this tool reads", *words)


@pytest.mark.parametrize("fmt", ["zip", "legacy"])
@pytest.mark.parametrize("case", list(TORCH_SAVED))
def test_hostile_torch_files(tmp_path, case, fmt):
    import warnings

    make, words = TORCH_SAVED[case]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # quantized tensors are deprecated
        blob = _torch_saved(make, fmt == "legacy")
    assert len(blob) < 100_000
    _torch_refused(tmp_path, blob, *words)


def _tstr(s: str) -> bytes:
    """BINUNICODE: torch's weights-only unpickler takes protocol 2's opcodes only."""
    b = s.encode()
    return b"X" + struct.pack("<I", len(b)) + b


def _tglobal(module: str, name: str) -> bytes:
    return b"c" + f"{module}\n{name}\n".encode()


def _pickle2(ops: bytes) -> bytes:
    return b"\x80\x02" + ops + b"."


def _rebuild(pid: bytes, offset: int, size, stride) -> bytes:
    """torch._utils._rebuild_tensor_v2(storage, offset, size, stride, False, OrderedDict())."""
    hooks = _tglobal("collections", "OrderedDict") + b")R"
    return _tglobal("torch._utils", "_rebuild_tensor_v2") + _tuple(
        pid + b"Q", _int(offset), _tuple(*map(_int, size)), _tuple(*map(_int, stride)),
        b"\x89", hooks) + b"R"


def _pid(key: str, numel: int, legacy: bool = False) -> bytes:
    """('storage', torch.FloatStorage, key, 'cpu', numel[, None])."""
    return _tuple(_tstr("storage"), _tglobal("torch", "FloatStorage"), _tstr(key), _tstr("cpu"),
                  _int(numel), *([b"N"] if legacy else []))


def _state(**tensors: bytes) -> bytes:
    """A pickled OrderedDict of the tensors' opcodes."""
    return _pickle2(_tglobal("collections", "OrderedDict") + b")R(" +
                   b"".join(_tstr(k) + v for k, v in tensors.items()) + b"u")


def _torch_zip(data_pkl: bytes, records: dict) -> bytes:
    import io
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        z.writestr("archive/data.pkl", data_pkl)
        z.writestr("archive/byteorder", "little")
        for key, raw in records.items():
            z.writestr(f"archive/data/{key}", raw)
        z.writestr("archive/version", "3\n")
    return buf.getvalue()


def _torch_legacy(main: bytes, storages: dict) -> bytes:
    """torch.save's legacy stream: magic, protocol, system info, the object, the keys, then
    each storage as its element count and bytes."""
    info = _pickle2(b"}(" + _tstr("protocol_version") + _int(1001) + _tstr("little_endian")
                    + b"\x88" + _tstr("type_sizes") + b"}(" + _tstr("short") + _int(2)
                    + _tstr("int") + _int(4) + _tstr("long") + _int(4) + b"uu")
    keys = _pickle2(b"](" + b"".join(_tstr(k) for k in storages) + b"e")
    data = b"".join(struct.pack("<q", n) + raw for n, raw in storages.values())
    return (_pickle2(_int(0x1950A86A20F9469CFC6C)) + _pickle2(_int(1001)) + info + main + keys
            + data)


def test_the_torch_assembler_writes_what_torch_reads(tmp_path):
    import torch

    from convert.formats import torch_file

    w = np.arange(6, dtype="<f4")
    tensor = _rebuild(_pid("0", 6), 0, (2, 3), (3, 1))
    files = {"zip": _torch_zip(_state(w=tensor), {"0": w.tobytes()}),
             "legacy": _torch_legacy(_state(w=_rebuild(_pid("0", 6, True), 0, (2, 3), (3, 1))),
                                     {"0": (6, w.tobytes())})}
    for name, blob in files.items():
        path = tmp_path / f"{name}.pt"
        path.write_bytes(blob)
        theirs = torch.load(path, weights_only=True)
        ours, _ = torch_file.read(str(path))
        assert list(theirs) == list(ours) == ["w"]
        assert np.array_equal(theirs["w"].numpy(), w.reshape(2, 3))
        assert np.array_equal(ours["w"], w.reshape(2, 3))


def _records_on_one(n: int) -> bytes:
    """`n` storages whose zip records all point at the same 1 MB of data (1 MB in the file, n
    MB when read): the central directory's offsets patched to the first record's."""
    mb = 1 << 18  # floats
    blob = bytearray(_torch_zip(
        _state(**{f"t{i}": _rebuild(_pid(str(i), mb), 0, (mb,), (1,)) for i in range(n)}),
        {str(i): bytes(4 * mb) if i == 0 else b"" for i in range(n)}))
    first = None
    at = blob.find(b"PK\x01\x02")
    while at >= 0:
        name_len = struct.unpack_from("<H", blob, at + 28)[0]
        name = bytes(blob[at + 46:at + 46 + name_len])
        if name == b"archive/data/0":
            first = struct.unpack_from("<I", blob, at + 42)[0]
        elif name.startswith(b"archive/data/") and first is not None:
            struct.pack_into("<I", blob, at + 42, first)  # this record's header -> the first's
            struct.pack_into("<II", blob, at + 20, 4 * mb, 4 * mb)  # and its sizes
        at = blob.find(b"PK\x01\x02", at + 46)
    return bytes(blob)


TORCH_CRAFTED = {
    "view-past-storage": (lambda: _torch_zip(_state(w=_rebuild(_pid("0", 4), 0, (1 << 30,), (1,))),
                                             {"0": bytes(16)}),
                          ("view past its storage",)),
    "storage-beyond-record": (lambda: _torch_zip(_state(w=_rebuild(_pid("0", 1 << 40), 0, (4,),
                                                                   (1,))), {"0": bytes(16)}),
                              ("declares 4398046511104 bytes", "holds 16")),
    "storage-without-record": (lambda: _torch_zip(_state(w=_rebuild(_pid("0", 4), 0, (4,), (1,))),
                                                  {}), ("no record",)),
    "3000-records-on-1MB": (lambda: _records_on_one(3000), ("overlap in the file",)),
    "legacy-storage-2^40": (lambda: _torch_legacy(
        _state(w=_rebuild(_pid("0", 1 << 40, True), 0, (4,), (1,))), {"0": (1 << 40, bytes(16))}),
        ("storage '0'", "bytes left")),
    "legacy-storage-view": (lambda: _torch_legacy(_state(w=_rebuild(
        _tuple(_tstr("storage"), _tglobal("torch", "FloatStorage"), _tstr("0"), _tstr("cpu"),
               _int(4), _tuple(_tstr("1"), _int(0), _int(4))), 0, (4,), (1,))),
        {"0": (4, bytes(16))}), ("a view of another",)),
    "negative-stride": (lambda: _torch_zip(_state(w=_rebuild(_pid("0", 4), 3, (4,), (-1,))),
                                           {"0": bytes(16)}), ("unexpected fields",)),
    "escape-sequences-in-key": (lambda: _torch_zip(
        _pickle2(b"}" + _tstr("w\x1b[2J\nx") + _int(3) + b"s"), {}), ("'w\\x1b[2J\\nx' is 3",)),
}


@pytest.mark.parametrize("case", list(TORCH_CRAFTED))
def test_crafted_torch_files(tmp_path, case):
    make, words = TORCH_CRAFTED[case]
    _torch_refused(tmp_path, make(), *words)


# --- recorded variants, read strictly ----------------------------------------------------

def _recorded(variant: str, name=None) -> dict:
    meta = {"format": "i3d-parity", "scheme": "torch", "variant": variant}
    return meta if name is None else {**meta, "variant_name": name}


_JSON = '{{"padding": {}, "bn_eps": {}, "bn_scale": {}}}'  # the first release's form
METADATA = {  # case: (metadata, words its error must hold)
    "bn_scale-no": (_recorded(_JSON.format('"same"', "0.001", '"no"')),
                    ("bn_scale true or false",)),
    "bn_scale-1": (_recorded(_JSON.format('"same"', "0.001", "1")), ("bn_scale true or false",)),
    "bn_eps-true": (_recorded(_JSON.format('"same"', "true", "false")), ("bn_eps a number",)),
    "bn_eps-string": (_recorded(_JSON.format('"same"', '"1e-3"', "false")), ("bn_eps a number",)),
    "bn_eps-NaN": (_recorded(_JSON.format('"same"', "NaN", "false")), ("is not JSON",)),
    "bn_eps-10^400": (_recorded(_JSON.format('"same"', "1" + "0" * 400, "false")),
                      ("unreadable variant",)),
    "bn_eps-negative": (_recorded(_JSON.format('"same"', "-1", "false")), ("eps must be in",)),
    "padding-valid": (_recorded(_JSON.format('"valid"', "0.001", "false")), ("padding must be",)),
    "extra-key": (_recorded('{"padding": "same", "bn_eps": 0.001, "bn_scale": false, "x": 1}'),
                  ("not an object of padding",)),
    "nested-3000-deep": (_recorded("{" + '"a": [' * 3000), ("is not JSON",)),
    "custom-form-scale-yes": (_recorded("padding=same,eps=0.001,scale=yes"),
                              ("scale must be true or false",)),
    "name-contradicts": (_recorded(_JSON.format('"same"', "0.001", "false"), "mindvideo"),
                         ("variant_name 'mindvideo' contradicts",)),
    "escape-sequences": (_recorded("\x1b[2J\nmindvideo"), ("\\x1b[2J\\nmindvideo",)),
}


@pytest.mark.parametrize("case", list(METADATA))
def test_recorded_variant_is_read_strictly(tmp_path, case):
    from safetensors.numpy import save

    meta, words = METADATA[case]
    blob = save({"w": np.zeros(1, np.float32)}, metadata=meta)  # written by safetensors itself
    crafted(tmp_path, "w.safetensors", blob, "out.ckpt", "unreadable variant", *words)


# --- inputs that are not regular files -----------------------------------------------------

@pytest.mark.parametrize("kind", ["fifo", "directory", "device-node", "link-to-dev-zero"])
def test_non_regular_input_is_named_for_what_it_is(tmp_path, kind):
    src = tmp_path / "w.ckpt"
    what = {"fifo": "a FIFO", "directory": "a directory"}.get(kind, "a character device")
    if kind == "fifo":
        os.mkfifo(src)  # no writer: opening it for reading must not wait for one
    elif kind == "directory":
        src.mkdir()
    elif kind == "link-to-dev-zero":
        src.symlink_to("/dev/zero")
    else:
        try:
            os.mknod(src, stat.S_IFCHR | 0o666, os.makedev(1, 5))  # a zero device of our own
        except PermissionError:
            pytest.skip("making a device node needs root")
    for args in (("convert", src, tmp_path / "out.safetensors"), ("inspect", src)):
        refused(limited(*args, timeout=60), src, f"is {what}, not a file to read")
    only(tmp_path, "w.ckpt")
    refused(limited("convert", tmp_path / "missing.ckpt", tmp_path / "out.pt"),
            tmp_path / "missing.ckpt", "no such file")


# --- destinations ------------------------------------------------------------------------

def _convert(dst, *extra, **kw):
    return limited("convert", "default", dst, *extra, **kw)


def _special(tmp_path, kind):
    """A destination that is not a regular file; returns (path, check it is unchanged)."""
    dst = tmp_path / "out.safetensors"
    if kind == "fifo":
        os.mkfifo(dst)
        return dst, lambda: stat.S_ISFIFO(os.lstat(dst).st_mode)
    if kind == "directory":
        dst.mkdir()
        return dst, lambda: dst.is_dir()
    if kind == "link-to-dev-null":
        dst.symlink_to("/dev/null")
        return dst, lambda: os.readlink(dst) == "/dev/null" and stat.S_ISCHR(
            os.stat("/dev/null").st_mode)
    try:  # a device node of our own (the null device), never the system's /dev/null
        os.mknod(dst, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    except PermissionError:
        pytest.skip("making a device node needs root")
    return dst, lambda: stat.S_ISCHR(os.lstat(dst).st_mode)


@pytest.mark.parametrize("kind", ["device-node", "link-to-dev-null", "fifo", "directory"])
def test_non_regular_destination_is_refused_even_with_force(tmp_path, kind):
    dst, unchanged = _special(tmp_path, kind)
    r = _convert(dst, "--force")
    refused(r, dst, "not a file this tool replaces")
    assert unchanged()
    only(tmp_path, dst.name)


def test_racing_writers_one_wins(tmp_path):
    """Two writers to one new destination, both past the existence check before either
    finishes (the race, made certain): only the first to finish may place its file."""
    dst = tmp_path / "out.bin"
    first, second = atomic_output(str(dst)), atomic_output(str(dst))
    tmp1, tmp2 = first.__enter__(), second.__enter__()
    open(tmp1, "wb").write(b"first")
    open(tmp2, "wb").write(b"second")
    first.__exit__(None, None, None)
    with pytest.raises(I3DError, match="already exists"):
        second.__exit__(None, None, None)
    assert dst.read_bytes() == b"first"
    only(tmp_path, "out.bin")


def test_racing_conversions_one_wins(tmp_path):
    dst = tmp_path / "out.safetensors"
    runs = [_convert(dst, popen=True) for _ in range(3)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in runs]
    assert sorted(rc for rc, _ in results) == [0, 2, 2], results
    for rc, err in results:
        assert rc == 0 or (len(err.strip().splitlines()) == 1 and "already exists" in err)
    only(tmp_path, "out.safetensors")


def test_several_outputs_are_all_or_nothing(tmp_path):
    weights, state = tmp_path / "w.pt", tmp_path / "opt.pt"
    with pytest.raises(I3DError, match="given twice"):  # `DST --optimizer-out DST`
        with atomic_outputs([weights, tmp_path / "." / "w.pt"]):
            pass
    writing = atomic_outputs([weights, state])
    for tmp in writing.__enter__():
        open(tmp, "wb").write(b"ours")
    state.write_bytes(b"theirs")  # the second name is taken while we write
    with pytest.raises(I3DError, match="already exists"):
        writing.__exit__(None, None, None)
    assert state.read_bytes() == b"theirs"
    only(tmp_path, "opt.pt")  # the first file was taken back
    with pytest.raises(ZeroDivisionError):  # a failure while writing leaves nothing either
        with atomic_outputs([weights, state], force=True) as temps:
            open(temps[0], "wb").write(b"half")
            1 / 0
    assert state.read_bytes() == b"theirs"
    only(tmp_path, "opt.pt")


_WRITER = """
import signal, sys, time
from convert.fileio import atomic_output, atomic_outputs
# Ctrl-C as at a terminal, also where the suite was started with SIGINT ignored (a background
# job of a non-interactive shell): Python then installs no KeyboardInterrupt handler itself
signal.signal(signal.SIGINT, signal.default_int_handler)
with atomic_output(sys.argv[1]) as tmp:
    open(tmp, "wb").write(bytes(1 << 20))
    print("ready", flush=True)
    time.sleep(60)
"""


@pytest.mark.parametrize("sig, status", [(signal.SIGTERM, 128 + signal.SIGTERM),
                                         (signal.SIGINT, -signal.SIGINT)])
def test_signal_while_writing_removes_the_temporary_file(tmp_path, sig, status):
    dst = tmp_path / "out.bin"
    p = limited("-c", _WRITER, dst, popen=True)
    assert p.stdout.readline() == "ready\n"
    assert len(os.listdir(tmp_path)) == 1  # the temporary file, hidden
    p.send_signal(sig)
    assert p.wait(timeout=60) == status, p.stderr.read()
    only(tmp_path)


def test_stale_temporary_files_are_ignored(tmp_path):
    dst = tmp_path / "out.safetensors"
    stale = tmp_path / ".out.safetensors.12345.0badf00d.tmp"  # left by a SIGKILL
    stale.write_bytes(b"half a file")
    r = _convert(dst)
    assert r.returncode == 0, r.stderr
    only(tmp_path, dst.name, stale.name)


def test_long_destination_names(tmp_path):
    dst = tmp_path / ("w" * 238 + ".safetensors")  # 250 bytes: the temporary name is longer
    r = _convert(dst)
    assert r.returncode == 0, r.stderr
    only(tmp_path, dst.name)
    too_long = tmp_path / ("w" * 260 + ".safetensors")
    refused(_convert(too_long), too_long, "File name too long")
    only(tmp_path, dst.name)


def test_outputs_get_the_umask_permissions(tmp_path):
    dst = tmp_path / "out.safetensors"
    assert _convert(dst, umask=0o027).returncode == 0
    assert stat.S_IMODE(os.stat(dst).st_mode) == 0o640
    os.chmod(dst, 0o604)  # overwriting keeps the file's own permissions
    assert _convert(dst, "--force").returncode == 0
    assert stat.S_IMODE(os.stat(dst).st_mode) == 0o604


@pytest.fixture
def read_only_folder(tmp_path):
    """A folder nobody can write in: by its mode, or (for root, whom modes do not stop) by
    the immutable attribute."""
    folder = tmp_path / "ro"
    folder.mkdir()
    os.chmod(folder, 0o555)
    undo = ["chmod"]
    if os.access(folder, os.W_OK):
        if subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode:
            os.chmod(folder, 0o755)
            pytest.skip("cannot make a folder read-only for this user")
        undo.append("chattr")
    yield folder
    if "chattr" in undo:
        subprocess.run(["chattr", "-i", str(folder)], check=True)
    os.chmod(folder, 0o755)


def test_read_only_destination_folder(read_only_folder):
    dst = read_only_folder / "out.safetensors"
    err = refused(_convert(dst), dst, "cannot write")
    assert "Permission denied" in err or "Operation not permitted" in err
    only(read_only_folder)


def test_full_disk(tmp_path):
    """A write that the disk cannot take (here: the process's file size limit, EFBIG, as a
    full disk's ENOSPC) is one line naming the destination, and leaves nothing."""
    dst = tmp_path / "out.safetensors"
    refused(_convert(dst, fsize=1 << 20), dst, "cannot write", "File too large")
    only(tmp_path)


@pytest.fixture(scope="module")
def training_ckpt(tmp_path_factory):
    """The default weights as a MindSpore training checkpoint with SGD momentum buffers."""
    from convert.formats import mindspore_ckpt

    folder = tmp_path_factory.mktemp("training")
    assert limited("convert", "default", folder / "w.ckpt").returncode == 0
    flat = mindspore_ckpt.read(str(folder / "w.ckpt"))
    moments = {f"moments.{k}": np.full_like(v, 0.5) for k, v in flat.items()
               if not k.endswith(("moving_mean", "moving_variance"))}
    mindspore_ckpt.write({**flat, **moments}, str(folder / "train.ckpt"))
    return folder / "train.ckpt"


def _optimizer_out(src, dst, opt, *extra):
    # writing .pt imports torch, whose libraries alone take ~600 MB of address space
    return limited("convert", src, dst, "--optimizer-out", opt, *extra, limit=2 * LIMIT)


@pytest.mark.slow
def test_optimizer_out_is_written_with_the_weights_or_not_at_all(training_ckpt, tmp_path,
                                                                 read_only_folder):
    dst, opt = tmp_path / "w.pt", tmp_path / "sgd.pt"
    r = _optimizer_out(training_ckpt, dst, opt)
    assert r.returncode == 0 and "SGD momentum buffers" in r.stdout, r.stderr
    only(tmp_path, "w.pt", "sgd.pt", "ro")
    os.remove(opt)
    # the weights exist, the optimizer state could be written: without --force, neither is
    before = dst.read_bytes()
    refused(_optimizer_out(training_ckpt, dst, opt), dst, "already exists")
    assert dst.read_bytes() == before
    only(tmp_path, "w.pt", "ro")
    os.remove(dst)
    # the optimizer state cannot be written: the weights are not written either
    ro_opt = read_only_folder / "sgd.pt"
    refused(_optimizer_out(training_ckpt, dst, ro_opt), ro_opt, "cannot write")
    only(tmp_path, "ro")
    # nothing to write as optimizer state: nothing written
    refused(_optimizer_out("default", dst, opt), "default", "no SGD momentum buffers")
    only(tmp_path, "ro")


def test_optimizer_out_onto_the_weights_is_refused(training_ckpt, tmp_path):
    dst = tmp_path / "w.pt"
    dst.write_bytes(b"precious")
    for opt in (dst, tmp_path / "." / "w.pt"):
        refused(_optimizer_out(training_ckpt, dst, opt, "--force"), opt, "given twice")
    assert dst.read_bytes() == b"precious"
    only(tmp_path, "w.pt")


def test_argument_errors_are_one_line():
    refused(limited("predict", "clip.mp4", "--frames", "0"), "--frames", "at least 1")
    refused(limited("convert"), "required")
    for args, words in ((("predict", "clip.mp4", "--top", "-3"), ("--top", "at least 1")),
                        (("demo", "--tolerance", "0"), ("--tolerance", "above 0")),
                        (("parity", "--batch", "0"), ("--batch", "at least 1")),
                        (("parity", "--steps", "0"), ("--steps", "at least 1")),
                        (("parity", "--backward-frames", "-1"), ("--backward-frames",)),
                        (("parity", "--backward-size", "0"), ("--backward-size",)),
                        (("parity", "--tolerance=-1e-4"), ("--tolerance", "above 0")),
                        (("parity", "--tolerance", "nan"), ("--tolerance", "finite"))):
        refused(limited(*args), *words)


@pytest.mark.slow
def test_parity_reports_are_written_all_or_nothing(tmp_path):
    from tests.helpers import i3d

    out = {k: tmp_path / f"parity.{k}" for k in ("json", "md", "png")}
    args = ("parity", "--frames", "9", "--frameworks", "torch", "mindspore", "--json",
            out["json"], "--markdown", out["md"], "--plot", out["png"])
    out["md"].write_text("precious")
    # an existing report is refused before anything runs, and nothing else is written
    refused(limited(*args), out["md"], "already exists", "--force")
    only(tmp_path, "parity.md")
    # a run that fails after the reports were claimed writes none of them
    out["json"].write_text("precious")
    missing = tmp_path / "missing.mp4"
    refused(i3d(*args, "--video", missing, "--force"), missing)
    only(tmp_path, "parity.md", "parity.json")
    assert out["md"].read_text() == out["json"].read_text() == "precious"
    refused(limited(*args, "--json", out["md"], "--force"), out["md"], "given twice")


# --- the training side: configs, CSVs and list files, videos, checkpoints ------------------

def test_training_argument_errors_are_one_line():
    for args, words in ((("make-dataset", "out", "--frames", "0"), ("--frames", "at least 1")),
                        (("make-dataset", "out", "--frames", "-1"), ("--frames", "at least 1")),
                        (("make-dataset", "out", "--classes", "0"), ("--classes",)),
                        (("make-dataset", "out", "--height", "0"), ("--height",)),
                        (("make-dataset", "out", "--val-per-class", "-1"), ("--val-per-class",)),
                        (("bench", "--batch", "0"), ("--batch", "at least 1")),
                        (("bench", "--repeat", "0"), ("--repeat", "at least 1")),
                        (("bench", "--size", "0"), ("--size", "at least 1")),
                        (("bench", "--frames", "x"), ("--frames", "integer"))):
        refused(limited(*args), *words)
    assert not os.path.exists(os.path.join(ROOT, "out"))


CONFIGS = {  # case: (the YAML text, words its error must hold)
    "negative size": ("data:\n  frames: -3\n", ("data.frames", "-3")),
    "zero batch": ("train:\n  batch_size: 0\n", ("train.batch_size", ">= 1")),
    "absurd clip": ("data:\n  frames: 100000000\n", ("data.frames", "<= 4096")),
    "wrong type": ("train:\n  steps: ten\n", ("train.steps", "'ten'")),
    "bool as number": ("data:\n  crop: true\n", ("data.crop",)),
    "float steps": ("train:\n  steps: 1.5\n", ("train.steps",)),
    "unknown protocol": ("eval:\n  protocol: wild\n", ("eval.protocol", "centre")),
    "unknown key": ("train:\n  stpes: 10\n", ("'train.stpes'",)),
    "unknown section": ("trian:\n  steps: 10\n", ("'trian'",)),
    "YAML syntax": ("data:\n  frames: 8\n  scales: [1.0, 0.5\n", (":4:", "YAML error")),
    "tab indentation": ("data:\n\tframes: 8\n", (":2:", "YAML error")),
    "not a mapping": ("- data\n- model\n", ("expected sections",)),
    "crop over resize": ("data:\n  resize: 32\n  crop: 64\n", ("data.crop", "data.resize")),
    "empty scales": ("data:\n  scales: []\n", ("data.scales",)),
    "keep prob": ("model:\n  dropout_keep_prob: 0\n", ("model.dropout_keep_prob",)),
    "unknown variant": ("model:\n  variant: deepmind2\n", ("model.variant", "deepmind2")),
    "binary": ("\x00\x01\x02\xff", ("UTF-8",)),
    "alias bomb": ("data:\n  scales:\n    - &a0 [1, 1, 1, 1, 1, 1, 1, 1, 1]\n" + "".join(
        f"    - &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]\n" for i in range(1, 10)),
        ("data.scales", "got [[1, 1, 1, 1, ...], [[...], [...]")),  # 9^10 items: shown as a few
}


_EACH = """
import contextlib, io, json, sys
if sys.argv[2] == "mindspore":
    import i3d_ms  # MindSpore once, for every run, and before decord
from i3d_cli.main import main
for argv in json.loads(sys.argv[1]):
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main(argv)
        except SystemExit as e:
            code = e.code
    print(json.dumps([code, err.getvalue()]), flush=True)
"""


def each(runs: list, cwd, limit=2 * LIMIT, mindspore=True, fsize=0) -> list:
    """`i3d ARGV` for every ARGV of `runs`, through the real entry point but in one process
    under the address-space limit (the frameworks are imported once, not once per run;
    MindSpore only if `mindspore`): a list of CompletedProcess-like results. Measured peaks
    (VmPeak): numpy alone 0.12 GB; MindSpore and the training modules 0.84 GB, 1.02 GB with
    decord and PyAV; MindSpore, torch and the default weights 1.42 GB: hence 2 GB here."""
    r = limited("-c", _EACH, json.dumps([[str(a) for a in argv] for argv in runs]),
                "mindspore" if mindspore else "-", limit=limit, fsize=fsize, cwd=cwd)
    assert r.returncode == 0, r.stderr
    out = [json.loads(line) for line in r.stdout.splitlines()]
    assert len(out) == len(runs), r.stdout
    return [subprocess.CompletedProcess(argv, code, "", err) for argv, (code, err) in zip(runs, out)]


def test_config_errors_name_the_file_and_key(tmp_path):
    runs, expected = [], []
    for n, (text, words) in enumerate(CONFIGS.values()):
        path = tmp_path / f"bad{n}.yaml"
        path.write_bytes(text.encode("latin-1"))
        for cmd in (("train",), ("eval", "--checkpoint", "default")):
            runs.append((*cmd, "--config", path, f"train.out={tmp_path / 'run'}"))
            expected.append((path, *words))
    for r, words in zip(each(runs, tmp_path), expected):
        refused(r, *words)
    only(tmp_path, *(f"bad{n}.yaml" for n in range(len(CONFIGS))))


def test_config_override_errors_name_the_override(tmp_path):
    cases = (("train.steps=0", ("train.steps", ">= 1")),
             ("train.steps=[1", ("train.steps=[1", "not a YAML value")),
             ("data.workers=-2", ("data.workers", "'auto'")),
             ("trainsteps", ("section.key=value",)))
    runs = [("train", "--config", os.path.join(ROOT, "config", "cpu_smoke.yaml"), item,
             f"train.out={tmp_path / 'run'}") for item, _ in cases]
    for r, (item, words) in zip(each(runs, tmp_path), cases):
        refused(r, item, *words)
    only(tmp_path)


def test_bench_results_are_claimed_before_the_run(tmp_path):
    (tmp_path / "t.md").write_text("precious")
    refused(limited("bench", "--suite", "convert", "--out", tmp_path, "--name", "t"),
            tmp_path / "t.md", "already exists", "--force")
    only(tmp_path, "t.md")


@pytest.mark.slow
def test_bench_results_are_written_all_or_nothing(tmp_path):
    """A run that fails after its files were claimed writes none of them."""
    (tmp_path / "t.md").write_text("precious")
    missing = tmp_path / "missing.mp4"
    r = limited("bench", "--suite", "data", "--frameworks", "torch", "--video", missing,
                "--out", tmp_path, "--name", "t", "--force", limit=2 * LIMIT)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.splitlines()[-1] == f"i3d: error: {missing}: no such file"  # before any work
    only(tmp_path, "t.md")
    assert (tmp_path / "t.md").read_text() == "precious"


_HEADER = "label,youtube_id,time_start,time_end,split\n"
SOURCES = {  # case: ({file: content}, the data settings, culprit file, words its error must hold)
    "missing column": ({"kinetics-400_train.csv": "label,youtube_id,time_end\na,x,10\n"},
                       "root", "kinetics-400_train.csv", (":1:", "'time_start'")),
    "bad number": ({"kinetics-400_train.csv": _HEADER + "a,x,0,10,train\na,y,abc,10,train\n"},
                   "root", "kinetics-400_train.csv", (":3:", "time_start", "'abc'")),
    "short row": ({"kinetics-400_train.csv": _HEADER + "a,x,0\n"},
                  "root", "kinetics-400_train.csv", (":2:", "3 fields", "5")),
    "binary": ({"kinetics-400_train.csv": _HEADER + "a,x\x00\x01,0,10,train\n"},
               "root", "kinetics-400_train.csv", (":2:", "binary")),
    "not UTF-8": ({"kinetics-400_train.csv": _HEADER + "\xe9t\xe9,x,0,10,train\n"},
                  "root", "kinetics-400_train.csv", (":2:", "UTF-8")),
    "empty CSV": ({"kinetics-400_train.csv": ""}, "root", "kinetics-400_train.csv", ("empty",)),
    "header only": ({"kinetics-400_train.csv": _HEADER}, "root", "kinetics-400_train.csv",
                    ("no videos",)),
    "unknown val label": ({"kinetics-400_train.csv": _HEADER + "a,x,0,10,train\nb,y,0,10,train\n",
                           "kinetics-400_val.csv": _HEADER + "a,z,0,10,val\nzzz,w,0,10,val\n"},
                          "root", "kinetics-400_val.csv", (":3:", "'zzz'")),
    "empty list": ({"train.txt": "# nothing\n\n"}, "list", "train.txt", ("no videos",)),
    "list without label": ({"train.txt": "a.mp4 0\nb.mp4\n"}, "list", "train.txt",
                           (":2:", "PATH LABEL")),
    "list bad number": ({"train.txt": "a.mp4 one\n"}, "list", "train.txt", (":1:", "PATH LABEL")),
    "list negative label": ({"train.txt": "a.mp4 -1\n"}, "list", "train.txt", (":1:", "negative")),
    "binary list": ({"train.txt": "a.mp4 0\n\x00\x00\x07\x00 1\n"}, "list", "train.txt",
                    (":2:", "binary")),
    "val label beyond the head": ({"train.txt": "a.mp4 0\nb.mp4 1\n", "val.txt": "c.mp4 5\n"},
                                  "list", "val.txt", ("label 5", "2 classes")),
}


def test_csv_and_list_errors_name_the_file_and_line(tmp_path):
    """Found before any step (the videos named do not even exist): one line naming
    file:line, nothing written."""
    runs, expected = [], []
    smoke = os.path.join(ROOT, "config", "cpu_smoke.yaml")
    for n, (files, kind, culprit, words) in enumerate(SOURCES.values()):
        folder = tmp_path / f"case{n}"
        folder.mkdir()
        for name, text in files.items():
            (folder / name).write_bytes(text.encode("latin-1"))
        data = ([f"data.root={folder}"] if kind == "root" else
                [f"data.train={folder / 'train.txt'}",
                 f"data.val={folder / 'val.txt'}" if "val.txt" in files else "data.val=null"])
        runs.append(("train", "--config", smoke, *data, f"train.out={folder / 'run'}"))
        expected.append((folder / culprit, *words))
        if kind == "root" and "val" in culprit:  # eval reads it too (a list file: its own head)
            runs.append(("eval", "--config", smoke, *data, "--checkpoint", "default"))
            expected.append(expected[-1])
    for r, words in zip(each(runs, tmp_path), expected):
        refused(r, *words)
    for n, (files, *_) in enumerate(SOURCES.values()):
        only(tmp_path / f"case{n}", *files)


# --- videos: decoding bounded by the clip it makes; stderr never taken from the process -----

def _gif(width: int, height: int, frames: int) -> bytes:
    """An animated GIF whose frames are 1x1 images on a `width` x `height` screen: a few
    bytes a frame, but every decoded frame is the whole screen."""
    out = b"GIF89a" + struct.pack("<HHBBB", width, height, 0x80, 0, 0) + b"\0\0\0\xff\xff\xff"
    for i in range(frames):
        out += b"\x21\xf9\x04\x08" + struct.pack("<H", 4) + b"\0\0"  # restore to background
        out += b"\x2c" + struct.pack("<HHHHB", i % width, 0, 1, 1, 0) + b"\x02\x02\x44\x01\x00"
    return out + b"\x3b"


def _mp4(path, frames=8, size=(32, 32)):
    """A real H.264 mp4 (PyAV's libx264) of moving texture."""
    from i3d_ms.make_dataset import render, write_mp4

    write_mp4(render((0, 1), np.random.default_rng(0), frames, *size), str(path))
    return path.read_bytes()


def _audio_only(path):
    import av

    with av.open(str(path), "w") as out:
        s = out.add_stream("aac", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp",
                                           layout="mono")
        frame.sample_rate = 8000
        for p in [*s.encode(frame), *s.encode()]:
            out.mux(p)
    return path.read_bytes()


VIDEOS = {  # case: (the file made in a folder, words its error must hold)
    "GIF screen 8000x8000": (lambda d: _gif(8000, 8000, 40), ("8000x8000", "before decoding")),
    "GIF 60000x4": (lambda d: _gif(60000, 4, 1), ("60000x4", "longer than wide")),
    "more frames than all": (lambda d: _gif(8, 8, 5000), ("5000 frames", "--frames")),
    "truncated mp4": (lambda d: _mp4(d / "t.mp4")[:1500], ("not a readable video",)),
    "corrupt mp4": (lambda d: (lambda b: b[:800] + bytes(len(b) - 1600) + b[-800:])(
        _mp4(d / "c.mp4", 16)), ("not a readable video",)),
    "text": (lambda d: b"not a video at all\n" * 20, ("not a readable video",)),
    "empty": (lambda d: b"", ("not a readable video",)),
    "audio only": (lambda d: _audio_only(d / "a.mp4"), ("no video stream",)),
}


def test_hostile_videos_are_refused_before_decoding(tmp_path):
    """`i3d predict` of each: exit 2, one line naming the file, under 2 GB of address space
    (the 8000x8000 GIF's 40 frames decoded whole would take 7.7 GB)."""
    folder = tmp_path / "made"
    folder.mkdir()
    runs = []
    for n, make in enumerate(VIDEOS.values()):
        path = tmp_path / f"v{n}.{'gif' if n < 3 else 'mp4'}"
        path.write_bytes(make[0](folder))
        runs.append(("predict", path, "--top", "1"))
    os.mkfifo(tmp_path / "fifo.mp4")  # named for what it is, without waiting for a writer
    runs.append(("predict", tmp_path / "fifo.mp4"))
    cases = [*VIDEOS.values(), (None, ("is a FIFO",))]
    for r, argv, (_, words) in zip(each(runs, tmp_path, mindspore=False), runs, cases):
        refused(r, argv[1], *words)
    assert ((tmp_path / "v2.gif").stat().st_size < 200_000
            and (tmp_path / "v0.gif").stat().st_size < 2000)  # bombs: tiny files


_STDERR_RACE = """
import os, sys, threading, time
from convert.errors import I3DError
from i3d_video.decode import open_video
stop = []
def decode():
    while not stop:
        for v in sys.argv[1:]:
            try:
                with open_video(v) as video:
                    video.frames([0])
            except I3DError:
                pass
workers = [threading.Thread(target=decode) for _ in range(2)]
for w in workers:
    w.start()
for i in range(300):
    os.write(2, b"line %d\\n" % i)
    time.sleep(0.002)
stop.append(1)
for w in workers:
    w.join()
"""


def test_decoding_threads_never_take_stderr(tmp_path):
    """Two threads decode good and bad videos (as data.workers: 2 does) while the main thread
    writes 300 lines to file descriptor 2: every line arrives, and no decoder prints. (Pointing
    fd 2 at /dev/null around decord's open, as before, lost about two thirds of them.)"""
    good = tmp_path / "good.mp4"
    data = _mp4(good)
    (tmp_path / "bad.mp4").write_bytes(b"not a video at all\n" * 20)
    (tmp_path / "torn.mp4").write_bytes(data[:len(data) // 2])
    r = limited("-c", _STDERR_RACE, good, tmp_path / "bad.mp4", tmp_path / "torn.mp4",
                limit=2 * LIMIT)
    assert r.returncode == 0, r.stderr
    assert r.stderr.splitlines() == [f"line {i}" for i in range(300)], r.stderr[-2000:]


def test_make_dataset_is_written_whole_or_not_at_all(tmp_path):
    """A make-dataset that fails midway (here: its files may not exceed 3 kB, as on a full
    disk) leaves no partial dataset and no temporary folder; a non-empty folder is refused."""
    (tmp_path / "e").mkdir()
    (tmp_path / "e" / "mine.txt").write_text("precious")
    full, not_empty = each([("make-dataset", tmp_path / "d", "--classes", "2", "--frames", "16"),
                            ("make-dataset", tmp_path / "e")], tmp_path, fsize=3000)
    refused(full, tmp_path / "d", "cannot write", "File too large")
    refused(not_empty, tmp_path / "e", "not empty")
    only(tmp_path, "e")
    only(tmp_path / "e", "mine.txt")


# --- training runs: checkpoints torn, finished or changed runs, temporary files, variants ----

@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """2 motion classes, 4 train and 1 val videos each (real mp4s of 8 frames of 32x32), and a
    list file of 4 of them with a corrupt and a missing video among them."""
    from recipe.sources import read_kinetics
    from i3d_ms.make_dataset import make_dataset

    root = tmp_path_factory.mktemp("tiny") / "data"
    make_dataset(str(root), classes=2, videos_per_class=4, val_per_class=1, frames=8,
                 height=32, width=32)
    (root / "corrupt.mp4").write_bytes(b"\0\0\0\x18ftypmp42" + bytes(range(256)) * 12)
    good = read_kinetics(str(root), "train")[::2]
    lines = [f"{v.path} {v.label}" for v in good[:2]] + ["corrupt.mp4 1", "missing.mp4 0"]
    (root / "bad.txt").write_text("\n".join(lines + [f"{v.path} {v.label}" for v in good[2:]]))
    return root


SMOKE = os.path.join(ROOT, "config", "cpu_smoke.yaml")


def _run(tiny, out, *extra, run=None):
    """`i3d train` (in this process, or as `run` runs it) on the list with bad videos, with
    two decoding threads."""
    from tests.helpers import call

    return (run or call)("train", "--config", SMOKE, f"data.train={tiny / 'bad.txt'}",
                         "data.val=null", "data.workers=2", f"train.out={out}", "train.steps=3",
                         "train.batch_size=2", "train.checkpoint_every=1",
                         "train.keep_checkpoints=3", "train.warmup_steps=1", "train.eval_every=0",
                         *extra)


def _losses(out):
    with open(out / "train.jsonl") as f:
        return {r["step"]: r["loss"] for r in map(json.loads, f) if "loss" in r}


@pytest.mark.slow
def test_resume_after_a_torn_checkpoint_finished_runs_and_stderr_with_two_workers(tiny, tmp_path,
                                                                                   capfd):
    from tests.helpers import i3d

    out, ckpts = tmp_path / "run", tmp_path / "run" / "checkpoints"
    r = _run(tiny, out, run=i3d)
    assert r.returncode == 0, r.stderr
    # a real process with two decoding threads: the skipped videos and the progress line all
    # reach its stderr, and no decoder wrote there
    assert "skipping" in r.stderr and "corrupt.mp4: not a readable video" in r.stderr
    assert "missing.mp4: no such file" in r.stderr and "3/3 loss" in r.stderr
    assert ".cc:" not in r.stderr, r.stderr
    # an evaluation that fails (no video readable) says so last, after its skipped videos
    (tmp_path / "all_bad.txt").write_text(f"{tiny / 'corrupt.mp4'} 0\n{tiny / 'gone.mp4'} 1\n")
    r = i3d("eval", "--config", SMOKE, f"data.val={tmp_path / 'all_bad.txt'}", "data.workers=2",
            "--checkpoint", ckpts / "step_00000003.ckpt")
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and lines[-1] == ("i3d: error: no video of the evaluation set "
                                               "could be read"), r.stderr
    assert sum("skipping" in line for line in lines) == 2, r.stderr
    # and so does a training run (the error comes from a decoding thread, through MindSpore)
    r = i3d("train", "--config", SMOKE, f"data.train={tmp_path / 'all_bad.txt'}", "data.val=null",
            "data.workers=2", f"train.out={tmp_path / 'bad_run'}", "train.batch_size=2")
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert lines[-1].startswith("i3d: error: no video of this shard can be read (2 skipped; ")
    full = _losses(out)
    assert sorted(full) == [0, 1, 2]

    # a finished run restarted by its job script's one line: a notice, nothing trained
    summary = (out / "summary.json").read_text()
    assert _run(tiny, out, "--resume") == 0
    assert "the run finished (step 3 of 3)" in capfd.readouterr().err
    assert (out / "summary.json").read_text() == summary and sorted(_losses(out)) == [0, 1, 2]
    assert _run(tiny, out, "train.steps=4", "--resume") == 2
    expect_error(subprocess.CompletedProcess((), 2, "", capfd.readouterr().err), "config.yaml",
                 "train.steps=3, now 4")

    # the newest checkpoint torn (a copy cut short, a disk error): resumed from the one before;
    # a temporary file a SIGKILL left behind is removed
    newest = ckpts / "step_00000003.ckpt"
    newest.write_bytes(newest.read_bytes()[:100_000])
    dead = subprocess.Popen(["true"])
    dead.wait()  # its pid: a process that is gone
    stale = ckpts / f".step_00000004.ckpt.{dead.pid}.0badf00d.tmp"
    stale.write_bytes(b"half")
    assert _run(tiny, out, "--resume") == 0
    err = capfd.readouterr().err
    assert "i3d: note: skipping" in err and "step_00000003.ckpt" in err, err
    assert _losses(out)[2] == full[2]  # the step the torn checkpoint held, exactly again
    assert sorted(os.listdir(ckpts)) == [f"step_0000000{s}.ckpt" for s in (1, 2, 3)]

    # eval --csv: an existing file only with --force, and then replaced whole
    from tests.helpers import call

    csv_path = tmp_path / "val.csv"
    csv_path.write_text("precious")
    args = ("eval", "--config", SMOKE, f"data.root={tiny}", "--checkpoint", newest, "--csv",
            csv_path)
    assert call(*args) == 2 and csv_path.read_text() == "precious"
    refused(subprocess.CompletedProcess((), 2, "", capfd.readouterr().err), csv_path,
            "already exists", "--force")
    assert call(*args, "--force") == 0
    assert csv_path.read_text().splitlines()[0] == "video,label,prediction,probability,top5"
    assert len(csv_path.read_text().splitlines()) == 3  # a row per val video
    only(tmp_path, "run", "bad_run", "all_bad.txt", "val.csv")


_SAVE = """
import sys
import numpy as np
from convert.architecture import DEEPMIND
from recipe import checkpoints
print("ready", flush=True)
checkpoints.save({"w": np.ones(1 << 25, np.float32), "global_step": np.array([1])}, sys.argv[1],
                 1, 2, DEEPMIND, "mindspore")
"""


def test_sigterm_during_a_checkpoint_write_leaves_no_temporary_file(tmp_path):
    p = limited("-c", _SAVE, tmp_path, popen=True, limit=4 * LIMIT)
    assert p.stdout.readline() == "ready\n", p.stderr.read()
    while not os.listdir(tmp_path) and p.poll() is None:
        time.sleep(0.001)
    (tmp,) = os.listdir(tmp_path)
    assert tmp.startswith(".step_00000001.ckpt.") and tmp.endswith(".tmp")
    p.send_signal(signal.SIGTERM)
    assert p.wait(timeout=60) == 128 + signal.SIGTERM, p.stderr.read()
    only(tmp_path)


def test_training_checkpoints_record_their_variant(tiny, tmp_path, capsys):
    """A checkpoint of a run of --variant mindvideo converts as mindvideo, and is refused as
    another: it never runs silently as deepmind."""
    from convert.architecture import MINDVIDEO
    from convert.checkpoints import read_weights
    from i3d_ms.network import build_net
    from i3d_ms.trainer import Trainer
    from recipe import checkpoints
    from recipe.config import load_config
    from tests.helpers import call

    cfg = load_config(SMOKE, ["model.final_endpoint=Logits", "model.variant=mindvideo",
                              "model.weights=scratch", "train.mode=pynative"])
    trainer = Trainer(build_net(cfg["model"], 2), cfg["train"])
    path = checkpoints.save(trainer.state(7), str(tmp_path), 7, 1, trainer.variant, "mindspore")
    weights, info = read_weights(path)
    assert info["variant"] == MINDVIDEO and info["variant_source"] == "recorded"
    assert call("convert", path, tmp_path / "w.safetensors") == 0
    assert read_weights(str(tmp_path / "w.safetensors"))[1]["variant"] == MINDVIDEO
    capsys.readouterr()
    assert call("convert", path, tmp_path / "x.pt", "--variant", "deepmind") == 2
    assert call("eval", "--config", SMOKE, f"data.root={tiny}", "model.final_endpoint=Logits",
                "--checkpoint", path) == 2
    for line in capsys.readouterr().err.strip().splitlines():
        assert "records variant mindvideo" in line or "variant mindvideo" in line, line


@pytest.mark.slow
def test_mindspore_predict_at_64_frames_fits_3_gb_of_address_space():
    """MindSpore's predict of DeepMind's sample at 64x224x224 under a 3 GB address-space cap:
    here it peaks at 2.3 GB virtual, 1.6 GB resident (MindSpore alone cannot start its threads
    under 2 GB); the convolutions gather their patches in bands under 128 MB
    (`i3d_ms.kernels.PATCH_BYTES`). The first version of the channels-last kernels, patches
    whole, peaked at 3.5 GB resident and fails this."""
    from i3d_video import SAMPLE

    r = limited("predict", SAMPLE, "--framework", "mindspore", "--frames", "64", "--json",
                limit=3 << 30)
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout)
    assert out["frames"] == 64 and out["top"][0]["label"] == "playing cricket"
