"""A stack machine for the pickle opcodes a CIFAR batch is made of; it calls nothing from the file.

It walks the stream with pickletools' opcode table and argument readers, which parse without
executing, and builds plain values itself: dicts, lists, tuples, bytes, str, ints, bools, None.
GLOBAL, REDUCE and BUILD, the opcodes that would import and call, go to a ``Rebuilder`` instead,
which knows the few objects it may make (see ndarrays.py) and refuses everything else.
"""

from __future__ import annotations

import io
import pickletools
from typing import Any, Protocol

MAX_OPS = 2_000_000           # a genuine batch has ~30k opcodes
MAX_DEPTH = 8                 # MARKs open at once, and nesting of the result; a batch needs 3
INT64 = (-(1 << 63), (1 << 63) - 1)

_PLAIN = (str, bytes, bytearray, int, bool, type(None))
_CONTAINERS = (dict, list, tuple)
_KEYS = (str, bytes, int)


class Refused(Exception):
    """The stream is not a batch; the message says why."""


class Rebuilder(Protocol):
    """What GLOBAL, REDUCE and BUILD may make: ``finished`` are the types a result may hold."""

    finished: tuple[type, ...]

    def find(self, module: str, name: str) -> Any: ...

    def reduce(self, func: Any, args: tuple) -> Any: ...

    def build(self, obj: Any, state: Any) -> Any: ...


def clip(text: str, n: int = 60) -> str:
    """text on one line, cut to a length that fits in an error message."""
    text = text.replace("\n", " ")
    return text if len(text) <= n else text[:n - 3] + "..."


def short(value: Any) -> str:
    return clip(repr(value))


class Machine:
    """Interprets the opcodes of one pickle; run() returns the value it describes."""

    def __init__(self, stream: io.BytesIO, rebuild: Rebuilder) -> None:
        self.stream, self.rebuild = stream, rebuild
        self.stack: list[Any] = []
        self.marks: list[int] = []
        self.memo: dict[int, Any] = {}
        # id(object) -> (object, what BUILD turned it into); holding the object keeps its id unique.
        self.replaced: dict[int, tuple[Any, Any]] = {}
        self.ops = 0
        self.name, self.pos = "", 0

    def run(self) -> Any:
        while True:
            op = self._next_op()
            if op.name == "STOP":
                return self._result()
            reader = _READERS.get(op.name, op.arg.reader if op.arg is not None else None)
            arg = reader(self.stream) if reader is not None else None
            try:
                _HANDLERS[op.name](self, arg)
            except Refused as e:
                raise Refused(f"{op.name} at byte {self.pos} {e}") from None

    def _next_op(self) -> pickletools.OpcodeInfo:
        """The next opcode, refused before its argument is read.

        pickletools.genops parses the argument of any opcode before yielding it (a protocol-0 STRING
        goes through codecs.escape_decode, a LONG4 through a big-int decode); this loop reads the
        arguments of the opcodes a batch uses only, with the same readers.
        """
        self.ops += 1
        if self.ops > MAX_OPS:
            raise Refused(f"has more than {MAX_OPS:,} opcodes")
        self.pos = self.stream.tell()
        code = self.stream.read(1)
        op = _OPCODES.get(code)
        if op is None:
            if not code:
                raise Refused(f"ends at byte {self.pos} before the pickle's STOP (truncated)")
            known = pickletools.code2op.get(code.decode("latin-1"))
            if known is not None and known.name in ("NEXT_BUFFER", "READONLY_BUFFER"):
                raise Refused(f"asks for an out-of-band buffer ({known.name} at byte {self.pos}); "
                              f"a batch file must hold its data itself")
            if known is not None:
                raise Refused(f"uses opcode {known.name} (byte {self.pos}), which CIFAR batches do not")
            raise Refused(f"has an unknown opcode {code!r} at byte {self.pos}")
        if self.pos == 0 and op.name != "PROTO":
            raise Refused("is not a pickle of protocol 2 or later")
        self.name = op.name
        return op

    def _result(self) -> Any:
        if self.marks or len(self.stack) != 1:
            raise Refused(f"leaves {len(self.stack)} values and {len(self.marks)} open MARKs at STOP, "
                          f"expected exactly one value")
        rest = len(self.stream.getbuffer()) - self.stream.tell()
        if rest:
            raise Refused(f"has {rest} bytes after the pickle's STOP")
        self._check_tree(self.stack[0])
        return self.stack[0]

    def _check_tree(self, root: Any) -> None:
        """Nothing unfinished left anywhere (a marker of the rebuilder), and no deep nesting.

        The visit budget bounds the work when the memo shares one list many times over.
        """
        todo, budget = [(root, 1)], 4 * self.ops + 64
        while todo:
            obj, depth = todo.pop()
            budget -= 1
            if budget < 0:
                raise Refused("shares its lists too often to be a batch")
            if type(obj) in _CONTAINERS:
                if depth > MAX_DEPTH:
                    raise Refused(f"nests deeper than {MAX_DEPTH} levels (or refers to itself)")
                todo.extend((child, depth + 1) for child in (obj.values() if type(obj) is dict else obj))
            elif not isinstance(obj, _PLAIN + self.rebuild.finished):
                raise Refused(f"holds an unfinished {getattr(obj, 'what', type(obj).__name__)}")

    # -- stack helpers ------------------------------------------------------------------------

    def _frame_empty(self) -> bool:
        """Nothing above the last MARK: like pickle, an opcode cannot reach below it."""
        return len(self.stack) <= (self.marks[-1] if self.marks else 0)

    def _pop(self) -> Any:
        if self._frame_empty():
            raise Refused("finds no value on the stack")
        return self.stack.pop()

    def _top(self, kind: type) -> Any:
        if self._frame_empty():
            raise Refused("finds no value on the stack")
        if type(self.stack[-1]) is not kind:
            raise Refused(f"expects a {kind.__name__}, finds a {type(self.stack[-1]).__name__}")
        return self.stack[-1]

    def _pop_mark(self) -> list[Any]:
        if not self.marks:
            raise Refused("has no MARK to go back to")
        base = self.marks.pop()
        items = self.stack[base:]
        del self.stack[base:]
        return items

    def _set(self, d: dict, key: Any, value: Any) -> None:
        if type(key) not in _KEYS:
            raise Refused(f"uses a {type(key).__name__} as a key; batches use str or bytes")
        d[key] = value

    # -- opcodes ------------------------------------------------------------------------------

    def proto(self, arg: int) -> None:
        if self.pos != 0 or not 2 <= arg <= 5:
            raise Refused(f"asks for protocol {arg}; batches use 2 to 5, at the start")

    def push(self, value: Any) -> None:
        self.stack.append(value)

    def long1(self, arg: int) -> None:
        if not INT64[0] <= arg <= INT64[1]:
            raise Refused("holds an integer beyond 64 bits")
        self.stack.append(arg)

    def py2_string(self, arg: str) -> None:
        # pickletools decodes a Python 2 str as latin-1; the official loader reads it as bytes.
        self.stack.append(arg.encode("latin-1"))

    def mark(self, _: None) -> None:
        if len(self.marks) >= MAX_DEPTH:
            raise Refused(f"opens more than {MAX_DEPTH} nested MARKs")
        self.marks.append(len(self.stack))

    def put(self, index: int | None) -> None:
        if self._frame_empty():
            raise Refused("has nothing to memoize")
        self.memo[len(self.memo) if index is None else index] = self.stack[-1]

    def get(self, index: int) -> None:
        if index not in self.memo:
            raise Refused(f"refers to memo entry {index}, which was never stored")
        value = self.memo[index]
        old, new = self.replaced.get(id(value), (None, None))
        self.stack.append(new if old is value else value)

    def append(self, _: None) -> None:
        value = self._pop()
        self._top(list).append(value)

    def appends(self, _: None) -> None:
        items = self._pop_mark()
        self._top(list).extend(items)

    def setitem(self, _: None) -> None:
        value, key = self._pop(), self._pop()
        self._set(self._top(dict), key, value)

    def setitems(self, _: None) -> None:
        items = self._pop_mark()
        d = self._top(dict)
        if len(items) % 2:
            raise Refused("has a key without a value")
        for i in range(0, len(items), 2):
            self._set(d, items[i], items[i + 1])

    def tuple_mark(self, _: None) -> None:
        self.stack.append(tuple(self._pop_mark()))

    def tuple_n(self, n: int) -> None:
        items = [self._pop() for _ in range(n)]
        self.stack.append(tuple(reversed(items)))

    def global_(self, arg: str) -> None:
        module, _, name = arg.partition(" ")
        self.stack.append(self.rebuild.find(module, name))

    def stack_global(self, _: None) -> None:
        name, module = self._pop(), self._pop()
        if type(module) is not str or type(name) is not str:
            raise Refused("names a global with something other than text")
        self.stack.append(self.rebuild.find(module, name))

    def reduce(self, _: None) -> None:
        args, func = self._pop(), self._pop()
        if type(args) is not tuple:
            raise Refused(f"calls with a {type(args).__name__} for arguments")
        self.stack.append(self.rebuild.reduce(func, args))

    def build(self, _: None) -> None:
        state = self._pop()
        if self._frame_empty():
            raise Refused("finds no object to set the state of")
        obj = self.stack[-1]
        new = self.rebuild.build(obj, state)
        if new is not obj:  # later memo references to obj must see what it became
            self.replaced[id(obj)] = (obj, new)
            self.stack[-1] = new


def _read_global(stream: io.BytesIO) -> str:
    """GLOBAL's "module name" as pickle reads it (UTF-8 lines). pickletools' reader would pass the
    lines through codecs.escape_decode, which warns, or raises under -W error, on a stray backslash."""
    module, name = stream.readline(), stream.readline()
    if not (module.endswith(b"\n") and name.endswith(b"\n")):
        raise ValueError("no newline after a GLOBAL's module or name")
    return f"{module[:-1].decode()} {name[:-1].decode()}"  # UnicodeDecodeError is a ValueError


_M = Machine
_HANDLERS: dict[str, Any] = {
    "PROTO": _M.proto, "FRAME": lambda m, _: None,
    "EMPTY_DICT": lambda m, _: m.push({}), "EMPTY_LIST": lambda m, _: m.push([]),
    "EMPTY_TUPLE": lambda m, _: m.push(()), "NONE": lambda m, _: m.push(None),
    "NEWTRUE": lambda m, _: m.push(True), "NEWFALSE": lambda m, _: m.push(False),
    "BININT": _M.push, "BININT1": _M.push, "BININT2": _M.push, "LONG1": _M.long1,
    "BINUNICODE": _M.push, "SHORT_BINUNICODE": _M.push, "BINUNICODE8": _M.push,
    "BINBYTES": _M.push, "SHORT_BINBYTES": _M.push, "BINBYTES8": _M.push, "BYTEARRAY8": _M.push,
    "BINSTRING": _M.py2_string, "SHORT_BINSTRING": _M.py2_string,
    "MARK": _M.mark, "BINPUT": _M.put, "LONG_BINPUT": _M.put, "MEMOIZE": _M.put,
    "BINGET": _M.get, "LONG_BINGET": _M.get,
    "APPEND": _M.append, "APPENDS": _M.appends, "SETITEM": _M.setitem, "SETITEMS": _M.setitems,
    "TUPLE": _M.tuple_mark, "TUPLE1": lambda m, _: m.tuple_n(1), "TUPLE2": lambda m, _: m.tuple_n(2),
    "TUPLE3": lambda m, _: m.tuple_n(3),
    "GLOBAL": _M.global_, "STACK_GLOBAL": _M.stack_global, "REDUCE": _M.reduce, "BUILD": _M.build,
}
_OPCODES = {op.code.encode("latin-1"): op for op in pickletools.opcodes if op.name in {*_HANDLERS, "STOP"}}
_READERS = {"GLOBAL": _read_global}
