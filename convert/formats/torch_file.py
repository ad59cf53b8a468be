"""PyTorch state_dict files (.pt/.pth): read without torch and without unpickling, written with
torch.save.

Both of torch.save's formats are read: the zip (torch >= 1.6: `*/data.pkl` plus one stored
record per storage) and the legacy stream (pickles of a magic number, the protocol, the system,
the object, the storage keys, then each storage's element count and bytes). The object's pickle
is run by `pickle_vm` knowing only what a state_dict needs: dicts (OrderedDict), lists, tuples,
strings, numbers, storages (persistent ids) and torch's dense-tensor recipes
(`_rebuild_tensor`, `_v2`, `_v3`, `_rebuild_parameter`); anything else is refused by name, with
the reason for sparse, quantized, nested, complex and float8 tensors.

A tensor is copied out of the mapped file only after its fields are checked: a numeric element
type, sizes and strides that are non-negative integers, no stride 0 on a dimension of more than
one element (an `expand` view), no view overlapping itself, running past its storage or sharing
storage bytes with another tensor, storages whose records are exactly their declared size and
do not overlap. So the arrays built never hold more bytes than the file.

Metadata rides in the state_dict's `_metadata` attribute, as torch keeps it: `torch.save` and
`torch.load(weights_only=True)` carry it, and `load_state_dict` looks up only module paths in
it, so an entry under another name leaves the file a plain, strictly loading state_dict.
"""
from __future__ import annotations

import math
import struct
import zipfile
from collections import OrderedDict

import numpy as np

from ..errors import I3DError, printable
from ..fileio import mapped
from .dtypes import BFLOAT16
from .pickle_vm import Bad, Global, Machine, kind, short

# torch.save's legacy (pre-1.6) format: a pickle of this magic number first.
LEGACY_MAGIC = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19"
MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
MAX_DIMS = 32
MAX_RECORDS = 1 << 16  # zip entries (one per storage; I3D's state_dict has ~600)

# Element types: legacy storage classes (torch.FloatStorage ...) and torch.<dtype> (with
# UntypedStorage, `_rebuild_tensor_v3`), as numpy little-endian types.
DTYPES = {"float32": "<f4", "float64": "<f8", "float16": "<f2", "bfloat16": BFLOAT16,
          "int64": "<i8", "int32": "<i4", "int16": "<i2", "int8": "i1", "uint8": "u1",
          "uint16": "<u2", "uint32": "<u4", "uint64": "<u8", "bool": "?"}
STORAGES = {"FloatStorage": "float32", "DoubleStorage": "float64", "HalfStorage": "float16",
            "BFloat16Storage": "bfloat16", "LongStorage": "int64", "IntStorage": "int32",
            "ShortStorage": "int16", "CharStorage": "int8", "ByteStorage": "uint8",
            "BoolStorage": "bool"}
# What torch's other recipes and element types are, for the message that refuses them.
REFUSED = {"_rebuild_sparse_tensor": "a sparse tensor", "_rebuild_sparse_csr_tensor":
           "a sparse tensor", "_rebuild_qtensor": "a quantized tensor",
           "_rebuild_nested_tensor": "a nested tensor", "_rebuild_meta_tensor_no_storage":
           "a meta tensor", "_rebuild_wrapper_subclass": "a tensor subclass",
           "_rebuild_from_type_v2": "a tensor subclass", "_rebuild_device_tensor_from_numpy":
           "a tensor made from numpy", "_rebuild_xla_tensor": "an XLA tensor",
           "_rebuild_mps_tensor": "an MPS tensor"}


def _dtype(name: str) -> np.dtype:
    return np.dtype(DTYPES[name])


class _Dict(dict):
    """A dict (or OrderedDict) of the file, with the attributes BUILD gave it."""
    __slots__ = ("attrs",)

    def __init__(self):
        super().__init__()
        self.attrs = {}


class _Storage:
    """A storage the pickle names by key: its element type and count; where its bytes lie in
    the file is the container's to say (`start`)."""
    __slots__ = ("key", "dtype", "numel", "start")

    def __init__(self, key, dtype, numel):
        self.key, self.dtype, self.numel, self.start = key, dtype, numel, None

    @property
    def nbytes(self) -> int:
        return self.numel * self.dtype.itemsize


class _Tensor:
    """A dense view of a storage: not built until the state_dict is checked."""
    __slots__ = ("storage", "offset", "size", "stride", "dtype")

    def __init__(self, storage, offset, size, stride, dtype):
        self.storage, self.offset, self.size, self.stride, self.dtype = \
            storage, offset, size, stride, dtype


class _Parser(Machine):
    GLOBALS = {("collections", "OrderedDict"): "dict",
               ("torch._utils", "_rebuild_tensor"): "tensor",
               ("torch._utils", "_rebuild_tensor_v2"): "tensor",
               ("torch._utils", "_rebuild_tensor_v3"): "tensor_v3",
               ("torch._utils", "_rebuild_parameter"): "parameter",
               ("torch._utils", "_rebuild_parameter_with_state"): "parameter",
               ("torch.storage", "UntypedStorage"): "storage",
               **{("torch", name): "storage" for name in STORAGES},
               **{("torch", name): "dtype" for name in DTYPES}}
    WHAT = "a PyTorch state_dict"

    def __init__(self, buf, start=0, end=None, storages=None):
        super().__init__(buf, start, end)
        self.storages = {} if storages is None else storages

    def refuse(self, module: str, name: str) -> str:
        if module in ("torch._utils", "torch._tensor") and name in REFUSED:
            return f"{REFUSED[name]} ({module}.{name}): only dense tensors are read"
        if module == "torch" and (name.endswith("Storage") or name[:1].islower()):
            return (f"element type torch.{printable(name, 40)}: not one this tool reads "
                    f"({', '.join(DTYPES)})")
        return super().refuse(module, name)

    def check_item(self, k, v):
        if not isinstance(k, (str, int)):
            raise Bad(f"a dict key that is not a string or an integer ({short(k)})")

    def append(self, items):
        lst = self.top()
        if not isinstance(lst, list):
            raise Bad(f"items appended to a {kind(lst)} at byte {self.pos}")
        self.count(len(items))
        lst.extend(items)

    def persistent(self):
        """('storage', storage type, key, location, numel[, view]): the storage by key, the
        same object each time (checked to agree)."""
        pid = self.pop()
        if not (isinstance(pid, tuple) and len(pid) in (5, 6) and pid[0] == "storage"
                and isinstance(pid[1], Global) and pid[1].role == "storage"
                and isinstance(pid[2], str) and isinstance(pid[3], str)
                and type(pid[4]) is int and pid[4] >= 0):
            raise Bad(f"persistent id {short(pid)} at byte {self.pos} is not a storage")
        if len(pid) == 6 and pid[5] is not None:
            raise Bad(f"storage '{printable(pid[2])}' is a view of another (pre-0.4 torch)")
        name = pid[1].name.rsplit(".", 1)[1]
        dtype = _dtype(STORAGES.get(name, "uint8"))  # UntypedStorage: bytes
        have = self.storages.setdefault(pid[2], _Storage(pid[2], dtype, pid[4]))
        if (have.dtype, have.numel) != (dtype, pid[4]):
            raise Bad(f"storage '{printable(pid[2])}' declared twice, differently")
        self.push(have)

    def reduce(self):
        at, f, args = self.call()
        if f.role == "dict" and args == ():
            self.push(_Dict())
        elif f.role == "tensor" and 4 <= len(args) <= 7:  # storage, offset, size, stride, ...
            self.push(self.tensor(args[:4], args[0].dtype if isinstance(args[0], _Storage)
                                  else None, at))
        elif f.role == "tensor_v3" and len(args) in (7, 8) and isinstance(args[6], Global) \
                and args[6].role == "dtype":
            self.push(self.tensor(args[:4], _dtype(args[6].name.rsplit(".", 1)[1]), at))
        elif f.role == "parameter" and 3 <= len(args) <= 4 and isinstance(args[0], _Tensor):
            self.push(args[0])
        else:
            raise Bad(f"{f.name} with unexpected arguments at byte {at}")

    def tensor(self, args, dtype, at: int) -> _Tensor:
        storage, offset, size, stride = args
        sizes = (lambda t: isinstance(t, tuple) and len(t) <= MAX_DIMS
                 and all(type(d) is int and d >= 0 for d in t))
        if not isinstance(storage, _Storage) or type(offset) is not int or offset < 0 \
                or not sizes(size) or not sizes(stride) or len(size) != len(stride):
            raise Bad(f"a tensor at byte {at} with unexpected fields (storage, offset "
                      f"{short(offset)}, size {short(size)}, stride {short(stride)})")
        return _Tensor(storage, offset, size, stride, dtype)

    def build(self):
        at = self.pos
        state, obj = self.pop(), self.top()
        if not isinstance(obj, _Dict) or not isinstance(state, dict) \
                or not all(isinstance(k, str) for k in state):
            raise Bad(f"state {short(state)} given to a {kind(obj)} at byte {at}")
        obj.attrs.update(state)

    OPS = {**Machine.OPS,
           ord("}"): lambda p: p.push(_Dict()),  # EMPTY_DICT: attributes may follow
           ord("Q"): lambda p: p.persistent(),  # BINPERSID
           ord("]"): lambda p: p.push([]),  # EMPTY_LIST APPEND APPENDS
           ord("a"): lambda p: p.append([p.pop()]), ord("e"): lambda p: p.append(p.pop_mark()),
           ord("G"): lambda p: p.push(p.unpack(">d", 8)),  # BINFLOAT
           ord("U"): lambda p: p.push(p.text(p.unpack("<B", 1))),  # SHORT_BINSTRING (Python 2)
           ord("T"): lambda p: p.push(p.text(p.unpack("<I", 4)))}  # BINSTRING


# --- the two containers -------------------------------------------------------------------

def _zip_records(buf) -> int:
    """How many entries the zip's end record declares (zip64 too), read before zipfile builds
    an object for each."""
    eocd = buf.rfind(b"PK\x05\x06", max(0, len(buf) - 65557))
    if eocd < 0 or eocd + 22 > len(buf):
        raise Bad("a zip without its end record")
    (n,) = struct.unpack_from("<H", buf, eocd + 10)
    locator = eocd - 20
    if n == 0xFFFF and locator >= 0 and buf[locator:locator + 4] == b"PK\x06\x07":
        (at,) = struct.unpack_from("<Q", buf, locator + 8)
        if at + 40 > len(buf) or buf[at:at + 4] != b"PK\x06\x06":
            raise Bad("a zip64 end record out of place")
        (n,) = struct.unpack_from("<Q", buf, at + 32)
    return n


def _stored(buf, info: zipfile.ZipInfo) -> tuple:
    """(start, size) of an uncompressed record's bytes in the file."""
    o = info.header_offset
    if info.compress_type != zipfile.ZIP_STORED or info.compress_size != info.file_size:
        raise Bad(f"record '{printable(info.filename)}' is compressed (torch.save stores them)")
    if o + 30 > len(buf) or buf[o:o + 4] != b"PK\x03\x04":
        raise Bad(f"record '{printable(info.filename)}' has no local header")
    n, m = struct.unpack_from("<HH", buf, o + 26)
    start = o + 30 + n + m
    if start + info.file_size > len(buf):
        raise Bad(f"record '{printable(info.filename)}' runs past the end of the file")
    return start, info.file_size


def _read_zip(buf) -> tuple:
    """(object, {key: storage}, byte order) of a zip file."""
    if _zip_records(buf) > MAX_RECORDS:
        raise Bad(f"a zip of more than {MAX_RECORDS} records")
    z = zipfile.ZipFile(buf)
    infos = {i.filename: i for i in z.infolist()}
    pickles = [n for n in infos if n.endswith("/data.pkl") and n.count("/") == 1]
    if len(pickles) != 1:
        raise Bad("not a torch.save zip (no single */data.pkl)")
    prefix = pickles[0][:-len("data.pkl")]
    start, size = _stored(buf, infos[pickles[0]])
    parser = _Parser(buf, start, start + size)
    obj = parser.run()
    order = "little"
    if prefix + "byteorder" in infos:
        s, n = _stored(buf, infos[prefix + "byteorder"])
        order = bytes(buf[s:s + n]).decode("ascii", "replace")
    for key, storage in parser.storages.items():
        info = infos.get(f"{prefix}data/{key}")
        if info is None:
            raise Bad(f"storage '{printable(key)}' has no record")
        storage.start, n = _stored(buf, info)
        if n != storage.nbytes:
            raise Bad(f"storage '{printable(key)}' declares {storage.nbytes} bytes, its record "
                      f"holds {n}")
    return obj, parser.storages, order


def _read_legacy(buf) -> tuple:
    """(object, {key: storage}, byte order) of a legacy file."""
    def next_pickle(p):
        p.stack, p.marks, p.memo = [], [], {}
        return p.run()

    p = _Parser(buf)
    if next_pickle(p) != MAGIC_NUMBER or next_pickle(p) != 1001:
        raise Bad("not a torch.save legacy file (magic number or protocol 1001 missing)")
    info = next_pickle(p)
    if not isinstance(info, dict) or type(info.get("little_endian")) is not bool:
        raise Bad("the legacy system info is not a dict saying the byte order")
    obj, keys = next_pickle(p), next_pickle(p)
    if not isinstance(keys, list) or sorted(keys) != sorted(p.storages) \
            or len(set(keys)) != len(keys):
        raise Bad("the storage keys do not list the storages the object uses, once each")
    at = p.pos
    for key in keys:
        storage = p.storages[key]
        if at + 8 > len(buf):
            raise Bad(f"storage '{printable(key)}' missing at byte {at}")
        (n,) = struct.unpack_from("<q" if info["little_endian"] else ">q", buf, at)
        storage.start, at = at + 8, at + 8 + storage.nbytes
        if n != storage.numel or at > len(buf):
            raise Bad(f"storage '{printable(key)}' at byte {storage.start - 8}: {n} elements "
                      f"of {storage.numel} declared, {len(buf) - storage.start} bytes left")
    if at != len(buf):
        raise Bad(f"{len(buf) - at} bytes after the last storage")
    return obj, p.storages, "little" if info["little_endian"] else "big"


# --- from the parsed object to arrays -----------------------------------------------------

def _extent(t: _Tensor, key: str) -> tuple:
    """(first, last + 1) elements of its storage that a dense, non-overlapping view covers."""
    where = f"'{printable(key)}'"
    if any(st == 0 and n > 1 for n, st in zip(t.size, t.stride)):
        raise Bad(f"{where} has stride 0 (an expanded view: {math.prod(t.size)} elements "
                  "from fewer stored)")
    reach = 1
    for n, st in sorted(((n, st) for n, st in zip(t.size, t.stride) if n > 1),
                        key=lambda d: d[1]):
        if st < reach:
            raise Bad(f"{where} is a view that overlaps itself (size {t.size}, stride "
                      f"{t.stride})")
        reach = st * (n - 1) + reach
    if 0 in t.size:
        return t.offset, t.offset
    itemsize = t.dtype.itemsize
    if t.storage.nbytes % itemsize:
        raise Bad(f"{where}: a storage of {t.storage.nbytes} bytes read as {itemsize}-byte "
                  "elements")
    end = t.offset + reach
    if end > t.storage.nbytes // itemsize:
        raise Bad(f"{where} is a view past its storage ({end} elements of "
                  f"{t.storage.nbytes // itemsize})")
    return t.offset, end


def _state_dict(obj) -> _Dict:
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise Bad(f"it holds {short(obj)}, not a state_dict (a dict of tensors)")
    for k, v in obj.items():
        if not isinstance(k, str):
            raise Bad(f"a state_dict key that is not a string ({short(k)})")
        if not isinstance(v, _Tensor):
            raise Bad(f"'{printable(k)}' is {short(v)}, not a tensor")
    return obj


def _arrays(buf, sd: dict, order: str) -> dict:
    """Each tensor copied out once its view and its neighbours' are checked."""
    if order not in ("little", "big"):
        raise Bad(f"byte order '{printable(order, 10)}'")
    spans, out = {}, {}
    for key, t in sd.items():
        first, end = _extent(t, key)
        if end > first:
            spans.setdefault(t.storage.key, []).append((first * t.dtype.itemsize,
                                                        end * t.dtype.itemsize, key))
    for key, ranges in spans.items():
        ranges.sort()
        for (_, a_end, a), (b_start, _, b) in zip(ranges, ranges[1:]):
            if b_start < a_end:
                raise Bad(f"'{printable(b)}' shares storage bytes with '{printable(a)}'")
    regions = sorted((s.start, s.start + s.nbytes, s.key) for s in
                     {t.storage.key: t.storage for t in sd.values()}.values() if s.nbytes)
    for (_, a_end, a), (b_start, _, b) in zip(regions, regions[1:]):
        if b_start < a_end:
            raise Bad(f"storages '{printable(a)}' and '{printable(b)}' overlap in the file")
    for key, t in sd.items():
        if math.prod(t.size) == 0:
            out[key] = np.empty(t.size, t.dtype)
            continue
        dt = t.dtype.newbyteorder(">") if order == "big" else t.dtype
        base = np.frombuffer(buf, dt, t.storage.nbytes // dt.itemsize, t.storage.start)
        view = np.lib.stride_tricks.as_strided(base[t.offset:], t.size,
                                               [st * dt.itemsize for st in t.stride])
        out[key] = np.array(view, t.dtype, order="C")
        del base, view
    return out


def read(path: str) -> tuple:
    """({key: np.ndarray}, the state_dict's `_metadata`, or {})."""
    with mapped(path) as buf:
        try:
            legacy = bytes(buf[:len(LEGACY_MAGIC)]) == LEGACY_MAGIC
            obj, storages, order = (_read_legacy if legacy else _read_zip)(buf)
            sd = _state_dict(obj)
            return _arrays(buf, sd, order), sd.attrs.get("_metadata") or {}
        except (Bad, UnicodeError, zipfile.BadZipFile, zipfile.LargeZipFile,
                NotImplementedError, EOFError, ValueError, struct.error) as e:
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
    # raised outside the handler: no traceback cycle keeps the arrays read so far alive
    raise I3DError(f"{path}: not a PyTorch state_dict this tool reads ({printable(reason, 200)})")


# --- writing (torch needed) -----------------------------------------------------------------

def _to_torch(a):
    import torch

    if a.dtype == BFLOAT16:
        return torch.from_numpy(np.ascontiguousarray(a).view(np.int16).copy()).view(torch.bfloat16)
    return torch.from_numpy(np.ascontiguousarray(a).copy())


def write(obj, path: str, metadata: dict | None = None):
    """torch.save of a state_dict ({name: np.ndarray}) or of a structure holding them;
    `metadata` becomes the state_dict's `_metadata`."""
    try:
        import torch
    except ImportError:
        raise I3DError(f"{path}: writing a PyTorch file needs torch, which is not "
                       "installed") from None

    obj = _tensors(obj)
    if metadata:
        obj = OrderedDict(obj)
        obj._metadata = OrderedDict(metadata)
    torch.save(obj, path)


def _tensors(obj):
    if isinstance(obj, np.ndarray):
        return _to_torch(obj)
    if isinstance(obj, dict):
        return {k: _tensors(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_tensors(v) for v in obj]
    return obj
