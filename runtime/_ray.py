"""Runs spread over a Ray cluster (the optional extra ``ontime[ray]``): what ``eval`` and ``predict`` use
with ``--ray ADDRESS``. Ray is imported only here, and only when asked for.

``ADDRESS`` is ``local`` (start a Ray instance on this machine, and stop it after), ``auto`` (the cluster
``ray start`` left on this machine, or ``RAY_ADDRESS``), ``host:port`` or ``ray://host:port``. A Ray
already initialized in this process is used as it is and left running.
"""

from __future__ import annotations

import contextlib
import socket
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from runtime.types import UsageError

if TYPE_CHECKING:
    from collections.abc import Callable, Generator, Iterator, Sequence
    from types import ModuleType

__all__ = ["check_ray", "ray_map", "ray_session"]

R = TypeVar("R")

_ROOT = str(Path(__file__).resolve().parent.parent)  # where ``runtime``, ``planners``... import from
_REACH_S = 5.0  # how long an address may take to answer a TCP connect before it is called unreachable


def _ray() -> ModuleType:
    try:
        import ray
    except ImportError as e:
        raise UsageError("running on Ray needs the optional extra: pip install 'ontime[ray]'") from e
    return ray


def check_ray(address: object) -> None:
    """Raise :class:`UsageError`, before anything runs, unless Ray is installed and ``address`` is
    ``local``, ``auto`` or a ``[ray://]host:port`` that accepts a connection."""
    if not isinstance(address, str) or not address:
        raise UsageError(f"ray must be 'local', 'auto' or a cluster address host:port, not {address!r}")
    _ray()
    if address in ("local", "auto"):
        return
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"ray must be 'local', 'auto' or a cluster address host:port, not {address!r}")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=_REACH_S).close()
    except OSError as e:
        raise UsageError(f"no Ray cluster answers at {address} ({e})") from e


@contextlib.contextmanager
def ray_session(address: str, workers: int | None) -> Iterator[int]:
    """Ray connected for the block (``local``: a new instance with ``workers`` CPUs, default all of this
    machine's), yielding the cluster's CPUs; shuts down only a Ray it started."""
    ray = _ray()
    started = not ray.is_initialized()
    if started:
        env = {"env_vars": {"PYTHONPATH": _ROOT}}
        try:
            if address == "local":
                ray.init(num_cpus=workers, include_dashboard=False, runtime_env=env, log_to_driver=False)
            else:
                ray.init(address=address, runtime_env=env, log_to_driver=False)
        except (ConnectionError, ValueError, RuntimeError) as e:
            raise UsageError(f"cannot start or reach Ray at {address!r}: {e}") from e
    try:
        yield max(1, int(ray.cluster_resources().get("CPU", 1)))
    finally:
        if started:
            ray.shutdown()


def ray_map(fn: Callable[..., R], calls: Sequence[tuple[Any, ...]]) -> Generator[R]:
    """``fn(*args)`` for each ``args`` as Ray tasks, all submitted at once; their results in the order of
    ``calls``. Closing the generator early (enough, an error, Ctrl-C) cancels the tasks not yet taken."""
    ray = _ray()
    remote = ray.remote(_call)
    refs = [remote.remote(fn, *args) for args in calls]
    taken = 0
    try:
        for ref in refs:
            yield ray.get(ref)
            taken += 1
    finally:
        for ref in refs[taken:]:
            ray.cancel(ref, force=True)


def _call(fn: Callable[..., R], *args: Any) -> R:
    """What a task runs: ``fn`` may be any picklable callable (a bound method, ``anyio.run``), which
    ``ray.remote`` itself does not take."""
    return fn(*args)
