"""``torch.compile`` for the agents' update losses and the runners' rollout step, with a clean
eager fallback."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import torch


class CompiledOnce:
    """``torch.compile(fn)`` that falls back to ``fn`` for good when compiling fails.

    The forward graph compiles at the first call (before anything runs), so a failure there
    (no C++ compiler for inductor, an unsupported platform or Python) leaves the eager
    function, with one warning naming ``owner``; later calls go straight to whichever works.
    An error that the eager function raises too (a bad input) is raised as it is, not taken
    for a compiler failure. Not covered: the backward graph compiles at the first
    ``backward()`` and a new input shape recompiles at a later call; a compiler failure there
    raises (it has not been seen where the forward compiled); past torch's recompile limit
    (8 per function) Dynamo runs the function eagerly without a warning.

    Args:
        fn: the function (a bound method computing losses from tensors).
        owner: the name in the warning (the algorithm).
        what: what runs eagerly after a failure, in the warning.
        mode: ``torch.compile``'s mode (``None``: its default).
    """

    def __init__(
        self,
        fn: Callable[..., Any],
        owner: str,
        what: str = "the update",
        mode: str | None = None,
    ):
        self.eager, self.owner, self.what = fn, owner, what
        self.compiled: Callable[..., Any] = (
            torch.compile(fn, mode=mode, dynamic=False) if hasattr(torch, "compile") else fn
        )
        self.checked = self.compiled is fn

    def __call__(self, *args: Any) -> Any:
        if self.checked:
            return self.compiled(*args)
        try:
            out = self.compiled(*args)
        except Exception as err:  # noqa: BLE001 - any compiler failure means: run eagerly
            # a genuine error of the function itself raises again here, unwrapped and
            # without the warning; compilation is then tried again at the next call
            out = self.eager(*args)
            text = str(err).strip()
            reason = text.splitlines()[0][:200] if text else ""
            warnings.warn(
                f"{self.owner}: torch.compile failed ({type(err).__name__}: {reason}); "
                f"{self.what} runs eagerly",
                RuntimeWarning,
                stacklevel=2,
            )
            self.compiled = self.eager
        self.checked = True
        return out


def loss_function(agent: Any, name: str, compile_update: bool) -> Callable[..., Any]:
    """The agent's method ``name`` (a loss of its update), compiled once per agent when
    ``compile_update`` is set (kept in ``agent._compiled_losses``)."""
    if not compile_update:
        return getattr(agent, name)
    cache = agent.__dict__.setdefault("_compiled_losses", {})
    if name not in cache:
        cache[name] = CompiledOnce(getattr(agent, name), agent.algo_name)
    return cache[name]
