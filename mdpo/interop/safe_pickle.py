"""Reading data out of a pickle without unpickling it.

Some files users bring (Stable-Baselines3's VecNormalize statistics) exist only as pickles.
:func:`read_symbolic` walks the pickle's opcodes and builds plain Python values, with every
class or function reference kept as an inert :class:`Global` and every call as an inert
:class:`Call`: nothing named in the file is imported, called or constructed. The caller then
picks the values it expects (numbers, strings, NumPy arrays rebuilt from their raw bytes) and
refuses anything else.

A pickle is a program that may reuse what it built (memo references), so a few kilobytes can
describe a structure of exponential size ("billion laughs"): reading it is cheap, but printing,
hashing or comparing it is not. The reader therefore bounds what it builds as if every shared
reference were a copy (:data:`~mdpo.core.limits.MAX_PICKLE_OBJECTS`), bounds nesting
(:data:`~mdpo.core.limits.MAX_DEPTH`), refuses a structure that changes after it is shared (only
self-referencing pickles do that), takes only plain scalars as dict keys, and refuses integers
of more than :data:`~mdpo.core.limits.MAX_INT_DIGITS` digits before converting any text. Nothing
here ever calls ``str``, ``repr`` or ``hash`` on a structure from the file.
"""

from __future__ import annotations

import io
import pickletools
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mdpo.core.limits import MAX_DEPTH, MAX_INT_DIGITS, MAX_PICKLE_OBJECTS, BadFileError

#: the most opcodes read from one pickle
MAX_OPS = MAX_PICKLE_OBJECTS
#: bytes of a string or bytes value that count as one object (so that a shared long string
#: counts in proportion to what printing every use of it would produce)
STRING_CHUNK = 64
#: the most dimensions of an array rebuilt from a pickle (NumPy's own limit is 64)
MAX_ARRAY_DIMS = 32

_INT_LIMIT = 10**MAX_INT_DIGITS  # compared with, never converted: both are ints
_DECIMAL = re.compile(rb"[+-]?[0-9]+")
_SCALARS = (str, bytes, int, float, bool, type(None))


@dataclass(frozen=True)
class Global:
    """A reference ``module.name`` found in the pickle (never imported)."""

    module: str
    name: str


@dataclass(eq=False)
class Call:
    """``func(*args)`` as the pickle describes it (never called), with its ``BUILD`` state."""

    func: Any
    args: tuple
    state: Any = None
    items: list = field(default_factory=list)

    def __repr__(self) -> str:  # the fields may be huge shared structures: never print them
        return f"Call({describe(self.func)})"


class _Mark:
    pass


class UnsupportedPickle(BadFileError):
    """The pickle uses an opcode or a structure this reader does not accept, or is over a
    limit."""


def describe(value: Any) -> str:
    """A short description of a value read from a pickle (never ``str`` of a structure)."""
    if isinstance(value, Global):
        return f"{_cut(value.module)}.{_cut(value.name)}"
    if isinstance(value, Call):
        return f"a call of {describe(value.func)}"
    if isinstance(value, bool) or value is None or isinstance(value, float):
        return repr(value)
    if isinstance(value, int):
        return repr(value) if abs(value) < 10**20 else "a long integer"
    if isinstance(value, str):
        return _cut(value)
    return f"a {type(value).__name__}"


def _cut(text: str, limit: int = 60) -> str:
    text = repr(text) if len(text) <= limit else repr(text[:limit]) + "..."
    return text


class _Reader:
    """The state of one :func:`read_symbolic` walk: the stack, the memo, and for every
    container built its expanded size, depth and whether it has been shared."""

    def __init__(self) -> None:
        self.stack: list[Any] = []
        self.memo: dict[int, Any] = {}
        self.mark = _Mark()
        # id(container) -> [expanded size, depth, shared]; ``keep`` holds every container so
        # that no id is reused while the walk lasts
        self.meta: dict[int, list] = {}
        self.keep: list[Any] = []

    # ------------------------------------------------------------------ sizes and sharing
    def size_depth(self, value: Any) -> tuple[int, int]:
        meta = self.meta.get(id(value))
        if meta is not None:
            return meta[0], meta[1]
        if isinstance(value, (str, bytes)):
            return 1 + len(value) // STRING_CHUNK, 0
        if isinstance(value, Global):
            return 1 + (len(value.module) + len(value.name)) // STRING_CHUNK, 0
        return 1, 0

    def new(self, container: Any, children: list[Any]) -> Any:
        """Register a container built from ``children`` (each then counts as shared)."""
        size, depth = 1, 0
        for child in children:
            child_size, child_depth = self.size_depth(child)
            size += child_size
            depth = max(depth, child_depth)
            self.share(child)
        self.check(size, depth + 1)
        self.meta[id(container)] = [size, depth + 1, False]
        self.keep.append(container)
        return container

    def grow(self, target: Any, children: list[Any]) -> None:
        """``children`` were added to ``target``, which must not have been shared yet."""
        meta = self.meta.get(id(target))
        if meta is None:
            raise UnsupportedPickle(f"cannot add items to {describe(target)}")
        if meta[2]:
            raise UnsupportedPickle(
                "a list, dict or object changes after it is shared (self-referencing "
                "structures are not accepted)"
            )
        for child in children:
            child_size, child_depth = self.size_depth(child)
            meta[0] += child_size
            meta[1] = max(meta[1], child_depth + 1)
            self.share(child)
        self.check(meta[0], meta[1])

    def share(self, value: Any) -> None:
        meta = self.meta.get(id(value))
        if meta is not None:
            meta[2] = True

    @staticmethod
    def check(size: int, depth: int) -> None:
        if size > MAX_PICKLE_OBJECTS:
            raise UnsupportedPickle(
                f"it describes more than {MAX_PICKLE_OBJECTS} objects (counting each use of a "
                "shared one)"
            )
        if depth > MAX_DEPTH:
            raise UnsupportedPickle(f"it nests deeper than {MAX_DEPTH} levels")

    # -------------------------------------------------------------------------- the stack
    def pop_mark(self) -> list[Any]:
        stack = self.stack
        for i in range(len(stack) - 1, -1, -1):
            if stack[i] is self.mark:
                items = stack[i + 1 :]
                del stack[i:]
                return items
        raise UnsupportedPickle("MARK missing")

    def pop(self) -> Any:
        value = self.stack.pop()
        if value is self.mark:
            raise UnsupportedPickle("a MARK where a value belongs")
        return value

    def set_items(self, target: Any, pairs: list[Any]) -> None:
        if len(pairs) % 2:
            raise UnsupportedPickle("SETITEMS with a key but no value")
        for key in pairs[::2]:
            if not isinstance(key, _SCALARS):  # hashing a structure could take forever
                raise UnsupportedPickle(f"a dict key that is {describe(key)}")
        self.grow(target, pairs)
        if isinstance(target, dict):
            for key, value in zip(pairs[::2], pairs[1::2]):
                target[key] = value
        elif isinstance(target, Call):
            target.items.extend(zip(pairs[::2], pairs[1::2]))
        else:
            raise UnsupportedPickle(f"SETITEM on {describe(target)}")

    def append(self, target: Any, values: list[Any]) -> None:
        self.grow(target, values)
        if isinstance(target, list):
            target.extend(values)
        elif isinstance(target, Call):
            target.items.extend(values)
        else:
            raise UnsupportedPickle(f"APPEND on {describe(target)}")

    def fetch(self, index: int) -> Any:
        if index not in self.memo:
            raise UnsupportedPickle(f"memo entry {index} is read before it is written")
        value = self.memo[index]
        self.share(value)
        return value


# the opcodes whose argument is the value pushed, decoded by pickletools' own readers
_VALUE_OPS = frozenset(
    (
        "SHORT_BINUNICODE",
        "BINUNICODE",
        "BINUNICODE8",
        "UNICODE",
        "SHORT_BINBYTES",
        "BINBYTES",
        "BINBYTES8",
        "BININT",
        "BININT1",
        "BININT2",
        "LONG1",
        "LONG4",
        "BINFLOAT",
        "FLOAT",
        "SHORT_BINSTRING",
        "BINSTRING",
    )
)
# the opcodes whose argument is a line of decimal text: read here, so that its length is
# checked before any conversion (``int`` of long text is quadratic)
_DECIMAL_OPS = frozenset(("INT", "LONG", "PUT", "GET"))


def _decimal_line(stream: io.BytesIO, name: str) -> int | bool:
    line = stream.readline(MAX_INT_DIGITS + 4)
    if not line.endswith(b"\n"):
        raise UnsupportedPickle(
            f"{name} holds an integer of more than {MAX_INT_DIGITS} digits, or is unterminated"
        )
    text = line[:-1]
    if name == "LONG" and text.endswith(b"L"):
        text = text[:-1]
    if name == "INT" and text in (b"00", b"01"):  # protocol 0 spells booleans this way
        return text == b"01"
    if not _DECIMAL.fullmatch(text) or len(text.lstrip(b"+-")) > MAX_INT_DIGITS:
        raise UnsupportedPickle(
            f"{name} does not hold an integer of at most {MAX_INT_DIGITS} digits"
        )
    return int(text)


def _opcodes(data: bytes, where: list[int]):
    """``(name, argument)`` for each opcode, like :func:`pickletools.genops`, but reading
    decimal text itself; ``where[0]`` is the position of the opcode being read."""
    stream = io.BytesIO(data)
    while True:
        where[0] = stream.tell()
        code = stream.read(1)
        if not code:
            raise UnsupportedPickle("no STOP opcode")
        op = pickletools.code2op.get(code.decode("latin-1"))
        if op is None:
            raise UnsupportedPickle(f"unknown opcode {code!r}")
        if op.name in _DECIMAL_OPS:
            arg = _decimal_line(stream, op.name)
        elif op.arg is None:
            arg = None
        else:
            arg = op.arg.reader(stream)
        yield op.name, arg


def read_symbolic(data: bytes) -> Any:
    """The object a pickle describes, with references and calls left symbolic.

    Raises:
        UnsupportedPickle: an opcode outside the plain-data subset, a malformed stream, or a
            structure over the limits (size counting every use of a shared object, depth,
            integer digits, opcodes).
    """
    reader = _Reader()
    stack = reader.stack
    name, where = "", [0]
    try:
        for count, (name, arg) in enumerate(_opcodes(data, where)):
            if count > MAX_OPS:
                raise UnsupportedPickle(f"more than {MAX_OPS} opcodes")
            if name in ("PROTO", "FRAME"):
                continue
            if name == "STOP":
                return reader.pop()
            if name in _VALUE_OPS or name in ("INT", "LONG"):
                if isinstance(arg, int) and not isinstance(arg, bool) and abs(arg) >= _INT_LIMIT:
                    raise UnsupportedPickle(f"an integer of more than {MAX_INT_DIGITS} digits")
                stack.append(arg)
            elif name == "BYTEARRAY8":
                stack.append(bytes(arg))
            elif name == "NONE":
                stack.append(None)
            elif name in ("NEWTRUE", "NEWFALSE"):
                stack.append(name == "NEWTRUE")
            elif name == "EMPTY_DICT":
                stack.append(reader.new({}, []))
            elif name == "EMPTY_LIST":
                stack.append(reader.new([], []))
            elif name == "EMPTY_TUPLE":
                stack.append(())
            elif name in ("TUPLE1", "TUPLE2", "TUPLE3"):
                items = [reader.pop() for _ in range(int(name[-1]))][::-1]
                stack.append(reader.new(tuple(items), items))
            elif name == "TUPLE":
                items = reader.pop_mark()
                stack.append(reader.new(tuple(items), items))
            elif name == "LIST":
                items = reader.pop_mark()
                stack.append(reader.new(list(items), items))
            elif name == "DICT":
                items = reader.pop_mark()
                target = reader.new({}, [])
                reader.set_items(target, items)
                stack.append(target)
            elif name == "MARK":
                stack.append(reader.mark)
            elif name == "MEMOIZE":
                reader.memo[len(reader.memo)] = stack[-1]
            elif name in ("BINPUT", "LONG_BINPUT", "PUT"):
                reader.memo[int(arg)] = stack[-1]
            elif name in ("BINGET", "LONG_BINGET", "GET"):
                stack.append(reader.fetch(int(arg)))
            elif name == "GLOBAL":
                module, _, attr = arg.partition(" ")
                stack.append(Global(module, attr))
            elif name == "STACK_GLOBAL":
                attr, module = reader.pop(), reader.pop()
                if not (isinstance(module, str) and isinstance(attr, str)):
                    raise UnsupportedPickle(
                        "STACK_GLOBAL names a module or attribute that is not a string"
                    )
                stack.append(Global(module, attr))
            elif name == "SETITEM":
                value, key = reader.pop(), reader.pop()
                reader.set_items(stack[-1], [key, value])
            elif name == "SETITEMS":
                items = reader.pop_mark()  # before reading the dict under the mark
                reader.set_items(stack[-1], items)
            elif name == "APPEND":
                value = reader.pop()
                reader.append(stack[-1], [value])
            elif name == "APPENDS":
                items = reader.pop_mark()  # before reading the list under the mark
                reader.append(stack[-1], items)
            elif name in ("REDUCE", "NEWOBJ"):
                args, func = reader.pop(), reader.pop()
                args = args if isinstance(args, tuple) else (args,)
                stack.append(reader.new(Call(func, args), [func, args]))
            elif name == "BUILD":
                state = reader.pop()
                target = stack[-1]
                if not isinstance(target, Call):
                    raise UnsupportedPickle("BUILD on a plain value")
                reader.grow(target, [state])
                target.state = state
            else:
                raise UnsupportedPickle(f"opcode {name} is not accepted")
    except UnsupportedPickle as err:
        raise UnsupportedPickle(f"{err} (at byte {where[0]})") from None
    except (IndexError, KeyError, TypeError, ValueError, OverflowError, EOFError) as err:
        # pickletools' readers describe truncated or malformed arguments; keep one short line
        raise UnsupportedPickle(
            f"malformed pickle at byte {where[0]} ({name}): {_one_line(err)}"
        ) from None
    raise UnsupportedPickle("no STOP opcode")  # pragma: no cover - _opcodes raises first


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return (text[:200] + "...") if len(text) > 200 else (text or type(err).__name__)


NUMPY_MODULES = ("numpy.core.multiarray", "numpy._core.multiarray")
NUMERIC_MODULES = ("numpy.core.numeric", "numpy._core.numeric")


def as_bytes(node: Any) -> bytes:
    """Raw bytes: as stored (protocol 3+) or as protocol 2 writes them,
    ``_codecs.encode(text, 'latin1')`` (decoded here, not called)."""
    if isinstance(node, bytes):
        return node
    if (
        isinstance(node, Call)
        and node.func == Global("_codecs", "encode")
        and len(node.args) == 2
        and isinstance(node.args[1], str)
        and node.args[1] == "latin1"
        and isinstance(node.args[0], str)
    ):
        try:
            return node.args[0].encode("latin1")
        except UnicodeEncodeError:
            raise UnsupportedPickle("raw bytes that are not latin-1 text") from None
    raise UnsupportedPickle(f"expected raw bytes, found {describe(node)}")


def as_dtype(node: Any) -> np.dtype:
    """A NumPy dtype from its pickled form ``numpy.dtype('f8', ...)`` with its byte order."""
    if not (
        isinstance(node, Call)
        and node.func == Global("numpy", "dtype")
        and node.args
        and isinstance(node.args[0], str)
        and len(node.args[0]) <= 8
    ):
        raise UnsupportedPickle(f"expected a numpy dtype, found {describe(node)}")
    try:
        dtype = np.dtype(node.args[0])
    except TypeError:
        raise UnsupportedPickle(f"unknown dtype {describe(node.args[0])}") from None
    if dtype.kind not in "biuf" or dtype.shape != ():
        raise UnsupportedPickle(f"dtype {describe(node.args[0])} is not numeric")
    state = node.state
    order = state[1] if isinstance(state, tuple) and len(state) > 1 else "="
    if not isinstance(order, str):
        raise UnsupportedPickle(f"a dtype byte order that is {describe(order)}")
    return dtype.newbyteorder(order) if order in ("<", ">") else dtype


def _shape(node: Any, raw: bytes) -> tuple[int, ...]:
    """A shape read from the pickle: at most :data:`MAX_ARRAY_DIMS` non-negative ints, none
    larger than the raw bytes could hold."""
    if not isinstance(node, (tuple, list)) or len(node) > MAX_ARRAY_DIMS:
        raise UnsupportedPickle(f"an array shape that is {describe(node)}")
    for n in node:
        if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= max(len(raw), 1):
            raise UnsupportedPickle(f"an array dimension that is {describe(n)}")
    return tuple(node)


def _rebuild(raw: bytes, dtype: np.dtype, shape: tuple[int, ...], order: str) -> np.ndarray:
    if len(raw) % dtype.itemsize:
        raise UnsupportedPickle(f"{len(raw)} raw bytes do not hold whole {dtype} values")
    array = np.frombuffer(raw, dtype=dtype)
    elements = 1
    for n in shape:
        elements *= n
    if elements != array.size:
        raise UnsupportedPickle(f"an array of shape {shape} stored in {array.size} values")
    return array.reshape(shape, order=order)


def as_array(node: Any) -> np.ndarray:
    """A NumPy array or scalar from its pickled form, rebuilt from the raw bytes."""
    if isinstance(node, (int, float)) and not isinstance(node, bool):
        return np.asarray(float(node), dtype=np.float64)
    if not isinstance(node, Call) or not isinstance(node.func, Global):
        raise UnsupportedPickle(f"expected a numpy array, found {describe(node)}")
    func = node.func
    if func.module in NUMPY_MODULES and func.name == "_reconstruct":
        state = node.state
        if not (isinstance(state, tuple) and len(state) == 5):
            raise UnsupportedPickle("unexpected array state")
        _, shape, dtype_node, fortran, raw = state
        if not isinstance(fortran, bool):
            raise UnsupportedPickle(f"an array order flag that is {describe(fortran)}")
        raw = as_bytes(raw)
        return _rebuild(raw, as_dtype(dtype_node), _shape(shape, raw), "F" if fortran else "C")
    if func.module in NUMERIC_MODULES and func.name == "_frombuffer":  # protocol 5
        if len(node.args) != 4:
            raise UnsupportedPickle("unexpected _frombuffer arguments")
        raw, dtype_node, shape, order = node.args
        if not isinstance(order, str) or order not in ("C", "F"):
            raise UnsupportedPickle(f"an array order that is {describe(order)}")
        raw = as_bytes(raw)
        return _rebuild(raw, as_dtype(dtype_node), _shape(shape, raw), order)
    if func.module in NUMPY_MODULES and func.name == "scalar":
        if len(node.args) != 2:
            raise UnsupportedPickle("unexpected scalar arguments")
        dtype, raw = as_dtype(node.args[0]), as_bytes(node.args[1])
        if len(raw) != dtype.itemsize:
            raise UnsupportedPickle(f"a {dtype} scalar stored in {len(raw)} bytes")
        return np.frombuffer(raw, dtype=dtype)[0]
    raise UnsupportedPickle(f"{describe(func)} is not a numpy array")
