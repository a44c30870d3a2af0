"""The notice that the planner's kernels are compiling: a first use on a machine waits on numba for seconds,
and nothing else would say why.

Every entry point (``run``, ``arun``, ``stream`` and ``open_run`` through :func:`runtime.open_run`,
``evaluate``, ``predict``, the CLI) runs its work inside :func:`compile_notice`. The notice is given once, only
when a kernel really compiles (one loaded from numba's on-disk cache says nothing): by default as a
:class:`CompileNotice` warning; the CLI passes its own ``emit`` (a line on stderr, and the live view).
"""

from __future__ import annotations

import contextlib
import threading
import warnings
from typing import TYPE_CHECKING

from planners._compile import watch

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

__all__ = ["COMPILING", "CompileNotice", "compile_notice"]

# Measured by benchmarks/cold_start.py (2 cores): the default MCP's kernels for a run, and a predict's on top.
COMPILING = "compiling the planner's kernels (first use on this machine: about 20 s, then cached on disk)"


class CompileNotice(UserWarning):
    """The planner's numba kernels are compiling (a first use on this machine); nothing is wrong."""


class _Own(threading.local):
    active = 0  # custom emits active in this thread (the CLI's, around a library call)


_own = _Own()


def _warn() -> None:
    warnings.warn(COMPILING, CompileNotice, stacklevel=2)


@contextlib.contextmanager
def compile_notice(emit: Callable[[], None] | None = None) -> Iterator[None]:
    """Within the block, ``emit()`` (default: a :class:`CompileNotice` warning) once if a kernel compiles.

    A block inside one with a custom ``emit`` (the CLI's around a library call) stays silent, so the
    notice is given once, the outer way.
    """
    if emit is None and _own.active:
        yield
        return
    if emit is None:
        with watch(_warn):
            yield
        return
    _own.active += 1
    try:
        with watch(emit):
            yield
    finally:
        _own.active -= 1
