"""One owner per run (issue 15): ``open_run`` closes what it opened on every way out, ``stream`` can be left
with a plain ``break``, and the planner threads belong to the event loop that uses them."""

from __future__ import annotations

import threading
from functools import partial
from typing import TYPE_CHECKING, Any

import anyio
import pytest

import runtime
from adapters.endpoints import make_backend
from adapters.resilience import Resilient
from runtime import _api
from runtime._executor import planner_threads, usable_cpus
from runtime.types import Decision, Launch, Planner, Snapshot
from tests.conftest import build, chain_spec
from tests.helpers import example_spec, of, server, settled_open_requests

if TYPE_CHECKING:
    from collections.abc import Iterator

    from adapters.chat import ChatBackend
    from runtime.types import ModelSpec

pytestmark = pytest.mark.anyio


def slow_chain() -> runtime.Workflow:
    """Three 1.5 s attempts that always pass: about 0.1 s of wall time each at speed 15."""
    return build(chain_spec(3, p=1.0, tokens=100, tps=100, ttft=0.5))


# -- stream -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_a_stream_can_be_left_with_a_plain_break() -> None:
    """Issue 15: a break out of the README's loop raised "exit cancel scope in a different task" on asyncio
    and TrioInternalError on trio. Leaving now stops the run, settles it, and says it was cancelled."""
    seen: list[runtime.Event] = []
    async with runtime.stream(slow_chain(), 1.0, 100, clock="real", speed=15.0, on_event=seen.append) as events:
        async for event in events:
            if isinstance(event, runtime.SubtaskCompleted):
                break
    finished = of(seen, runtime.RunFinished)
    assert len(finished) == 1 and finished[0].reason == runtime.Reason.CANCELLED
    assert finished[0].completed == 1
    ledger = runtime.replay_ledger(seen)
    assert ledger.reserved_pusd == 0 and ledger.spent_pusd == finished[0].spent_pusd


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_a_stream_is_read_inside_its_async_with() -> None:
    with pytest.raises(runtime.UsageError, match=r"async with runtime\.stream"):
        async for _ in runtime.stream(slow_chain(), 1.0, 100):  # type: ignore[attr-defined]  # mypy says so too
            pass


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_an_error_inside_a_stream_stops_the_run_and_propagates() -> None:
    seen: list[runtime.Event] = []
    with pytest.raises(KeyError):
        async with runtime.stream(slow_chain(), 1.0, 100, clock="real", speed=15.0, on_event=seen.append) as events:
            async for event in events:
                if isinstance(event, runtime.BatchLaunched):
                    raise KeyError("the consumer failed")
    assert of(seen, runtime.RunFinished)[0].reason == runtime.Reason.CANCELLED


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_a_stream_delivers_the_event_an_on_event_callback_raised_on() -> None:
    """The stream dropped the event a user's callback raised on; it has every event, then the error."""
    seen: list[runtime.Event] = []

    def fail_on_second_launch(event: runtime.Event) -> None:
        if isinstance(event, runtime.BatchLaunched) and event.batch == 2:
            raise RuntimeError("the callback failed")

    with pytest.raises(RuntimeError, match="the callback failed"):
        async with runtime.stream(slow_chain(), 1.0, 100, on_event=fail_on_second_launch) as events:
            async for event in events:
                seen.append(event)
    assert [e.batch for e in of(seen, runtime.BatchLaunched)][:2] == [1, 2]
    assert isinstance(seen[-1], runtime.RunFinished)


# -- open_run owns what it opens ----------------------------------------------------------------------


@pytest.fixture
def opened(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[ChatBackend]]:
    """Every backend a run builds; the test checks that each was closed."""
    made: list[ChatBackend] = []

    def make(model: ModelSpec) -> ChatBackend:
        backend = make_backend(model)
        made.append(backend)
        return backend

    monkeypatch.setattr(_api, "make_backend", make)
    yield made


def _closed(backends: list[ChatBackend]) -> list[bool]:
    out = []
    for b in backends:
        assert isinstance(b, Resilient)
        client: Any = getattr(b.inner, "client")  # noqa: B009 (the SDK client each backend wraps)
        out.append(bool(client.is_closed()))
    return out


class _Stop(Exception):
    pass


@pytest.mark.parametrize("way_out", ["success", "error", "cancelled", "opened_only", "refused_key"])
def test_every_way_out_of_open_run_closes_every_client(way_out: str, opened: list[ChatBackend]) -> None:
    data = example_spec("mixed")
    kw = {"api_key": "right-key"} if way_out == "refused_key" else {}
    with server(data, seed=1, speed=5.0, **kw) as (srv, wf):

        async def go() -> None:
            with anyio.move_on_after(0.3 if way_out == "cancelled" else 60):
                async with runtime.open_run(wf, 0.05, 60, planner="retry:mini:2") as r:
                    if way_out == "error":
                        raise _Stop
                    if way_out != "opened_only":
                        result = await r.execute()
                        assert result.success, result.reason

        if way_out == "error":
            with pytest.raises(_Stop):
                anyio.run(go)
        elif way_out == "refused_key":
            with pytest.raises(runtime.ProviderRejectedError):
                anyio.run(go)
        else:
            anyio.run(go)
        assert len(opened) == 2 and _closed(opened) == [True, True]
        assert settled_open_requests(srv) == 0


def test_bad_input_opens_nothing(opened: list[ChatBackend]) -> None:
    wf = build(example_spec("openai") | {"name": "x"})
    with pytest.raises(runtime.PlannerSpecError):
        runtime.run(wf, 0.05, 60, planner="bogus")
    with pytest.raises(runtime.LimitError):
        runtime.run(wf, -1, 60)
    assert opened == []


def test_a_failure_while_opening_closes_what_was_opened_before_it(
    opened: list[ChatBackend], monkeypatch: pytest.MonkeyPatch
) -> None:
    data = example_spec("mixed")
    del data["models"]["haiku"]["base_url"]  # Anthropic's own API, and no key for it
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    with pytest.raises(runtime.UsageError, match="no API key"):
        runtime.run(runtime.parse_workflow(data), 0.05, 60, planner="retry:mini:1")
    assert len(opened) == 1 and _closed(opened) == [True]


def test_a_run_executes_once() -> None:
    async def twice() -> None:
        async with runtime.open_run(slow_chain(), 1.0, 100) as r:
            await r.execute()
            await r.execute()

    with pytest.raises(runtime.UsageError, match="executes once"):
        anyio.run(twice)


# -- threads and event loops --------------------------------------------------------------------------


class Threaded(Planner):
    """Every ready subtask on model 0, once; decided in a worker thread."""

    name = "threaded"
    in_thread = True

    def __init__(self) -> None:
        self.threads: set[str] = set()

    def decide(self, snapshot: Snapshot) -> Decision:
        self.threads.add(threading.current_thread().name)
        return Decision({i: Launch(0, 1) for i in snapshot.ready})


def test_threaded_planners_run_on_asyncio_then_on_trio_in_one_process() -> None:
    """Issue 15: a module-global limiter bound to the first event loop failed on the next ("no running event
    loop"). Each loop now has its own, one thread per usable CPU."""
    for backend in ("asyncio", "trio", "asyncio"):
        planner = Threaded()
        result = anyio.run(partial(runtime.arun, slow_chain(), 1.0, 100, planner=planner), backend=backend)
        assert result.success and planner.threads and threading.main_thread().name not in planner.threads

    async def size() -> float:
        return planner_threads().total_tokens

    assert anyio.run(size, backend="trio") == usable_cpus() >= 1


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_the_sync_entry_points_refuse_a_running_event_loop() -> None:
    """In Jupyter (or any async code) ``runtime.run`` cannot start a loop of its own: it says what to do."""
    with pytest.raises(runtime.UsageError, match=r"await runtime\.arun"):
        runtime.run(slow_chain(), 1.0, 100)
    with pytest.raises(runtime.UsageError, match=r"await runtime\.aanswer"):
        runtime.answer("Who?", corpus=[])
