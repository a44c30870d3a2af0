"""How the planners' numba kernels are compiled, and who hears when they are.

A first run on a machine compiles the kernels (then numba caches them on disk), and what that costs is set
here as much as in the kernels' bodies. :func:`njit` is numba's with three changes that cut it without
changing a result:

- a kernel is compiled for the types of its arguments with literal constants widened (``0`` becomes an
  ``int64``): numba would otherwise compile a call ``f(x, 0)`` and a call ``f(x, i)`` separately, and, while
  it infers a caller's types, also for a variable's first literal value (``stream = 0`` before
  ``stream += 1``): each a full compile of the callee and of everything it calls;
- ``readonly`` names the array parameters compiled as read-only, so a module-level constant (which numba
  passes read-only) and a caller's array share one compile;
- no C-callable wrapper (``no_cfunc_wrapper``): nothing takes a kernel's address.

Helpers that callers need inlined for speed use ``forceinline=True`` (LLVM inlines them) rather than
numba's ``inline="always"`` (which copies and types their code again at every call site, seconds a kernel).

:func:`watch` tells a callback when a kernel starts compiling (a kernel loaded from the cache says nothing).
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

__all__ = ["njit", "watch"]


def _compile(disp: Any, readonly: frozenset[int], sig: Any) -> Any:
    """Numba's ``Dispatcher.compile`` for argument types without literals (and read-only where declared)."""
    from numba.core import types

    unliteral: Any = types.unliteral  # untyped in numba
    if isinstance(sig, tuple):
        sig = tuple(unliteral(a).copy(readonly=True) if i in readonly else unliteral(a) for i, a in enumerate(sig))
    return type(disp).compile(disp, sig)


def njit(*, readonly: tuple[str, ...] = (), **options: Any) -> Callable[[Callable[..., Any]], Any]:
    """``numba.njit(**options)`` compiled once per non-literal signature; ``readonly``: array parameters
    compiled read-only."""

    import numba  # here: the engine imports :func:`watch` without numba

    jit: Any = numba.njit  # its stubs lack no_cfunc_wrapper

    _listen()

    def wrap(func: Callable[..., Any]) -> Any:
        disp = jit(no_cfunc_wrapper=True, **options)(func)
        names = list(inspect.signature(func).parameters)
        disp.compile = functools.partial(_compile, disp, frozenset(names.index(n) for n in readonly))
        return disp

    return wrap


_lock = threading.Lock()
_watchers: list[list[Callable[[], None]]] = []  # one list per active watch: its callback, until it fires


_listening: list[bool] = []


def _listen() -> None:
    """Hear numba's compile events (once a process): every active watch's callback at the first compile of
    a planners kernel (numba raises none for a kernel it loads from its cache)."""
    from numba.core import event

    class Listener(event.Listener):
        def on_start(self, ev: event.Event) -> None:
            disp = ev.data.get("dispatcher") if isinstance(ev.data, dict) else None
            if disp is None or not getattr(disp.py_func, "__module__", "").startswith("planners."):
                return
            with _lock:
                due = [w.pop() for w in _watchers if w]
            for callback in due:
                with contextlib.suppress(Exception):  # a notice never stops a compile (warnings made errors, say)
                    callback()

        def on_end(self, ev: event.Event) -> None:
            pass

    with _lock:
        if not _listening:
            _listening.append(True)
            register: Any = event.register  # untyped in numba
            register("numba:compile", Listener())


@contextlib.contextmanager
def watch(callback: Callable[[], None]) -> Iterator[None]:
    """Within the block, ``callback()`` once, at the first kernel compile in any thread (none if all load
    from numba's cache)."""
    slot = [callback]
    with _lock:
        _watchers.append(slot)
    try:
        yield
    finally:
        with _lock:
            _watchers.remove(slot)
