"""Reading data out of a pickle without unpickling it.

Some files users bring (Stable-Baselines3's VecNormalize statistics) exist only as pickles.
:func:`read_symbolic` walks the pickle's opcodes and builds plain Python values, with every
class or function reference kept as an inert :class:`Global` and every call as an inert
:class:`Call`: nothing named in the file is imported, called or constructed. The caller then
picks the values it expects (numbers, strings, NumPy arrays rebuilt from their raw bytes) and
refuses anything else.
"""

from __future__ import annotations

import pickletools
from dataclasses import dataclass, field
from typing import Any

import numpy as np

MAX_OPS = 1_000_000


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


class _Mark:
    pass


class UnsupportedPickle(ValueError):
    """The pickle uses an opcode or a structure this reader does not accept."""


def read_symbolic(data: bytes) -> Any:
    """The object a pickle describes, with references and calls left symbolic.

    Raises:
        UnsupportedPickle: an opcode outside the plain-data subset, or a malformed stream.
    """
    stack: list[Any] = []
    memo: dict[int, Any] = {}
    mark = _Mark()

    def pop_mark() -> list[Any]:
        for i in range(len(stack) - 1, -1, -1):
            if stack[i] is mark:
                items = stack[i + 1 :]
                del stack[i:]
                return items
        raise UnsupportedPickle("MARK missing")

    try:
        ops = pickletools.genops(data)
        for count, (op, arg, _pos) in enumerate(ops):
            if count > MAX_OPS:
                raise UnsupportedPickle("too many opcodes")
            name = op.name
            if name in ("PROTO", "FRAME"):
                continue
            if name == "STOP":
                return stack.pop()
            if name in ("SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE",
                        "SHORT_BINBYTES", "BINBYTES", "BINBYTES8", "BININT", "BININT1",
                        "BININT2", "LONG1", "LONG4", "BINFLOAT", "INT", "LONG", "FLOAT",
                        "SHORT_BINSTRING", "BINSTRING"):  # fmt: skip
                stack.append(arg)
            elif name == "BYTEARRAY8":
                stack.append(bytes(arg))
            elif name == "NONE":
                stack.append(None)
            elif name in ("NEWTRUE", "NEWFALSE"):
                stack.append(name == "NEWTRUE")
            elif name == "EMPTY_DICT":
                stack.append({})
            elif name == "EMPTY_LIST":
                stack.append([])
            elif name == "EMPTY_TUPLE":
                stack.append(())
            elif name in ("TUPLE1", "TUPLE2", "TUPLE3"):
                n = int(name[-1])
                items = tuple(stack[-n:])
                del stack[-n:]
                stack.append(items)
            elif name == "TUPLE":
                stack.append(tuple(pop_mark()))
            elif name == "LIST":
                stack.append(list(pop_mark()))
            elif name == "DICT":
                items = pop_mark()
                stack.append(dict(zip(items[::2], items[1::2])))
            elif name == "MARK":
                stack.append(mark)
            elif name in ("MEMOIZE",):
                memo[len(memo)] = stack[-1]
            elif name in ("BINPUT", "LONG_BINPUT", "PUT"):
                memo[int(arg)] = stack[-1]
            elif name in ("BINGET", "LONG_BINGET", "GET"):
                stack.append(memo[int(arg)])
            elif name == "GLOBAL":
                module, _, attr = str(arg).partition(" ")
                stack.append(Global(module, attr))
            elif name == "STACK_GLOBAL":
                attr, module = stack.pop(), stack.pop()
                stack.append(Global(str(module), str(attr)))
            elif name == "SETITEM":
                value, key = stack.pop(), stack.pop()
                _setitem(stack[-1], key, value)
            elif name == "SETITEMS":
                items = pop_mark()
                for key, value in zip(items[::2], items[1::2]):
                    _setitem(stack[-1], key, value)
            elif name == "APPEND":
                value = stack.pop()
                _append(stack[-1], [value])
            elif name == "APPENDS":
                items = pop_mark()  # before reading the list under the mark
                _append(stack[-1], items)
            elif name == "REDUCE":
                args, func = stack.pop(), stack.pop()
                stack.append(Call(func, tuple(args) if isinstance(args, tuple) else (args,)))
            elif name == "NEWOBJ":
                args, cls = stack.pop(), stack.pop()
                stack.append(Call(cls, tuple(args) if isinstance(args, tuple) else (args,)))
            elif name == "BUILD":
                state = stack.pop()
                target = stack[-1]
                if not isinstance(target, Call):
                    raise UnsupportedPickle("BUILD on a plain value")
                target.state = state
            else:
                raise UnsupportedPickle(f"opcode {name} is not accepted")
    except (IndexError, KeyError, TypeError, ValueError) as err:
        if isinstance(err, UnsupportedPickle):
            raise
        raise UnsupportedPickle(f"malformed pickle: {err}") from None
    raise UnsupportedPickle("no STOP opcode")


def _setitem(target: Any, key: Any, value: Any) -> None:
    if isinstance(target, dict):
        target[key] = value
    elif isinstance(target, Call):
        target.items.append((key, value))
    else:
        raise UnsupportedPickle("SETITEM on a non-dict")


def _append(target: Any, values: list[Any]) -> None:
    if isinstance(target, list):
        target.extend(values)
    elif isinstance(target, Call):
        target.items.extend(values)
    else:
        raise UnsupportedPickle("APPEND on a non-list")


NUMPY_MODULES = ("numpy.core.multiarray", "numpy._core.multiarray")
NUMERIC_MODULES = ("numpy.core.numeric", "numpy._core.numeric")


def as_bytes(node: Any) -> bytes:
    """Raw bytes: as stored (protocol 3+) or as protocol 2 writes them,
    ``_codecs.encode(text, 'latin1')`` (decoded here, not called)."""
    if isinstance(node, bytes):
        return node
    if (isinstance(node, Call) and node.func == Global("_codecs", "encode")
            and len(node.args) == 2 and node.args[1] == "latin1"
            and isinstance(node.args[0], str)):  # fmt: skip
        return node.args[0].encode("latin1")
    raise UnsupportedPickle("expected raw bytes")


def as_dtype(node: Any) -> np.dtype:
    """A NumPy dtype from its pickled form ``numpy.dtype('f8', ...)`` with its byte order."""
    if not (isinstance(node, Call) and node.func == Global("numpy", "dtype")):
        raise UnsupportedPickle("expected a numpy dtype")
    dtype = np.dtype(str(node.args[0]))
    if dtype.kind not in "biuf":
        raise UnsupportedPickle(f"dtype {dtype} is not numeric")
    order = node.state[1] if isinstance(node.state, tuple) and len(node.state) > 1 else "="
    return dtype.newbyteorder(order) if order in "<>" else dtype


def as_array(node: Any) -> np.ndarray:
    """A NumPy array or scalar from its pickled form, rebuilt from the raw bytes."""
    if isinstance(node, (int, float)):
        return np.asarray(node, dtype=np.float64)
    if not isinstance(node, Call) or not isinstance(node.func, Global):
        raise UnsupportedPickle("expected a numpy array")
    func = node.func
    if func.module in NUMPY_MODULES and func.name == "_reconstruct":
        state = node.state
        if not (isinstance(state, tuple) and len(state) == 5):
            raise UnsupportedPickle("unexpected array state")
        _, shape, dtype_node, fortran, raw = state
        array = np.frombuffer(as_bytes(raw), dtype=as_dtype(dtype_node))
        return array.reshape(tuple(int(n) for n in shape), order="F" if fortran else "C")
    if func.module in NUMERIC_MODULES and func.name == "_frombuffer":  # protocol 5
        raw, dtype_node, shape, order = node.args
        array = np.frombuffer(as_bytes(raw), dtype=as_dtype(dtype_node))
        return array.reshape(tuple(int(n) for n in shape), order=str(order))
    if func.module in NUMPY_MODULES and func.name == "scalar":
        dtype, raw = as_dtype(node.args[0]), as_bytes(node.args[1])
        return np.frombuffer(raw, dtype=dtype)[0]
    raise UnsupportedPickle(f"{func.module}.{func.name} is not a numpy array")
