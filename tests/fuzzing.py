"""The fuzz suite's harness: run a reader on a hostile input in a child process, bounded in time
and memory, and say how it ended.

Each case runs in a forked child with an address-space limit, so a reader that would allocate
without bound dies of ``MemoryError`` there instead of taking the machine down, and one that
would hang is killed at the time limit. The default test run uses a fixed, seeded budget of
examples per reader (:data:`EXAMPLES`); ``MDPO_FUZZ_EXAMPLES=2000 python -m pytest
tests/test_fuzz_*.py`` is the long, benchmark-style run.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import resource
import traceback
from collections.abc import Callable
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from mdpo.core.limits import BadFileError

#: examples per reader in the default test run (fixed seed); raise it for a long run
EXAMPLES = int(os.environ.get("MDPO_FUZZ_EXAMPLES", "25"))
#: memory a case may take beyond what the test process already maps
MEMORY = 1536 << 20
#: seconds a case may take
TIMEOUT = 30.0

#: hypothesis settings of every fuzz test: deterministic, no example database, no deadline
FUZZ = settings(
    max_examples=EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)


def _mapped_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")


def _child(fn: Callable[..., Any], args: tuple, limit: int, conn: Any) -> None:
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    try:
        fn(*args)
        conn.send(("ok", ""))
    except BadFileError as err:
        conn.send(("refused", f"{type(err).__name__}: {err}"))
    except MemoryError:
        conn.send(("memory", traceback.format_exc()))
    except BaseException:  # noqa: BLE001 - the point is to report whatever escaped
        conn.send(("error", traceback.format_exc()))
    finally:
        conn.close()
        os._exit(0)


def run_case(
    fn: Callable[..., Any], *args: Any, memory: int = MEMORY, timeout: float = TIMEOUT
) -> tuple[str, str]:
    """Run ``fn(*args)`` in a forked child limited to ``memory`` more bytes of address space
    and ``timeout`` seconds. Returns ``(outcome, detail)``, outcome one of ``"ok"``,
    ``"refused"`` (a :class:`BadFileError`), ``"memory"``, ``"error"`` (any other exception,
    with its traceback), ``"timeout"`` or ``"died"``."""
    ctx = multiprocessing.get_context("fork")
    parent, child = ctx.Pipe(duplex=False)
    limit = _mapped_bytes() + memory
    process = ctx.Process(target=_child, args=(fn, args, limit, child))
    process.start()
    child.close()
    try:
        if parent.poll(timeout):
            try:
                return parent.recv()
            except EOFError:
                pass
        else:
            process.kill()
            return "timeout", f"over {timeout} s"
    finally:
        process.join(5)
        if process.is_alive():
            process.kill()
            process.join()
        parent.close()
    return "died", f"exit code {process.exitcode}"


def assert_loads_or_refuses(fn: Callable[..., Any], *args: Any, **limits: Any) -> str:
    """Assert that ``fn(*args)`` either succeeds or raises the project's own error with a
    one-line message, within the time and memory bounds; returns the outcome."""
    outcome, detail = run_case(fn, *args, **limits)
    assert outcome in ("ok", "refused"), f"{outcome}: {detail}"
    if outcome == "refused":
        assert "\n" not in detail.strip(), f"a refusal of more than one line: {detail}"
        assert "weights_only=False" not in detail, detail
    return outcome


# ------------------------------------------------------------------------- mutation strategies
def mutate_bytes(data: bytes, rng: random.Random) -> bytes:
    """One random corruption of ``data``: a truncation, bit flips, a deleted or repeated span,
    or inserted bytes."""
    data = bytearray(data)
    kind = rng.randrange(5)
    if kind == 0 and data:
        return bytes(data[: rng.randrange(len(data))])
    if kind == 1 and data:
        for _ in range(rng.randint(1, 8)):
            i = rng.randrange(len(data))
            data[i] ^= 1 << rng.randrange(8)
        return bytes(data)
    if kind == 2 and data:
        i = rng.randrange(len(data))
        del data[i : i + rng.randint(1, 64)]
        return bytes(data)
    if kind == 3 and data:
        i = rng.randrange(len(data))
        j = min(len(data), i + rng.randint(1, 64))
        return bytes(data[:j] + data[i:j] * rng.randint(2, 20) + data[j:])
    i = rng.randrange(len(data) + 1)
    return bytes(data[:i] + bytes(rng.randrange(256) for _ in range(rng.randint(1, 16))) + data[i:])


#: hostile JSON values: nesting, huge or non-finite numbers, wrong types, long strings, paths
HOSTILE_VALUES = [
    None,
    True,
    -1,
    0,
    2**31,
    2**63,
    10**400,
    1e308,
    -1e308,
    0.5,
    "",
    "x" * 5000,
    "../../etc/passwd",
    "/tmp/elsewhere",
    "os:system",
    "evilmod:Pendulum-v1",
    [],
    {},
    [[[[]]]],
    {"a": {"b": {"c": {}}}},
    [1e308] * 4,
    list(range(50)),
]

deep_json = st.integers(min_value=65, max_value=5000).map(lambda n: "[" * n + "]" * n)


def json_mutation(value: Any, rng: random.Random) -> Any:
    """A copy of the JSON value ``value`` with one leaf or member replaced by a hostile value,
    removed, or a member added."""
    if isinstance(value, dict) and value:
        value = dict(value)
        key = rng.choice(sorted(value))
        action = rng.randrange(4)
        if action == 0:
            del value[key]
        elif action == 1:
            value[key] = rng.choice(HOSTILE_VALUES)
        else:
            value[key] = json_mutation(value[key], rng)
        return value
    if isinstance(value, list) and value:
        value = list(value)
        i = rng.randrange(len(value))
        if rng.randrange(3) == 0:
            value[i] = rng.choice(HOSTILE_VALUES)
        else:
            value[i] = json_mutation(value[i], rng)
        return value
    return rng.choice(HOSTILE_VALUES)


def rngs() -> st.SearchStrategy[random.Random]:
    """A seeded ``random.Random`` per example (hypothesis picks the seeds)."""
    return st.integers(min_value=0, max_value=2**32 - 1).map(random.Random)


def rewrite_zip(src: str, dst: str, change: Callable[[str, bytes], bytes | None]) -> str:
    """Copy the zip ``src`` to ``dst`` with ``change(name, data)`` applied to each member
    (``None`` drops the member); returns ``dst``."""
    import zipfile

    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for item in zin.infolist():
            data = change(item.filename, zin.read(item.filename))
            if data is not None:
                zout.writestr(item.filename, data)
    return str(dst)


def replace_member(member: str, data: bytes) -> Callable[[str, bytes], bytes]:
    """A ``change`` for :func:`rewrite_zip` that replaces one member's bytes."""
    return lambda name, old: data if name == member else old


def tensor_bytes(obj: Any) -> bytes:
    """``torch.save`` of ``obj`` to bytes."""
    import io

    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()
