"""The batch-level adapter contract, held against adapters and endpoints that misbehave (issue 15's review).

An endpoint's fault is a typed, settled sample error; a plug-in's bug stops the run at once, settled, and
propagates; a request a model keeps refusing stops being sent.
"""

from __future__ import annotations

import time
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, ClassVar

import anyio
import pytest

import runtime
from adapters.chat import ChatBackend, ChatRequest, ChatStream, Delta
from adapters.chat_adapter import ChatAdapter
from adapters.endpoints import make_backend
from runtime.types import Adapter, Batch, Decision, Finish, Launch, ModelTurn, Planner, Report, SampleEnd, Snapshot
from tests.conftest import build, chain_spec
from tests.helpers import of, run_collect
from tools.qa_data import Paragraph, QAExample

if TYPE_CHECKING:
    import pathlib
    from collections.abc import AsyncIterator, Sequence


def prompted(n: int = 1) -> runtime.Workflow:
    spec = chain_spec(n, p=1.0)
    for s in spec["subtasks"]:
        s["prompt"] = "Say hi."
    return build(spec)


class Replies(ChatBackend):
    """Streams the given deltas for every request (each request's usage: 10 in, 1 token per piece)."""

    provider: ClassVar[str] = "openai"
    max_n: ClassVar[int] = 128

    def __init__(self, deltas: Sequence[Delta]) -> None:
        self.deltas = deltas

    @asynccontextmanager
    async def stream(self, request: ChatRequest) -> AsyncIterator[ChatStream]:
        s = ChatStream(request.n)
        s.input_tokens = 10

        async def deltas() -> AsyncIterator[Delta]:
            for d in self.deltas:
                if 0 <= d.index < request.n and d.text:
                    s.output_tokens[d.index] += 1
                yield d

        s.deltas = deltas()
        yield s


class Wide(Planner):
    """k samples of every ready subtask on model 0."""

    in_thread = False

    def __init__(self, k: int) -> None:
        self.k = k

    def decide(self, snapshot: Snapshot) -> Decision:
        return Decision({i: Launch(0, self.k) for i in snapshot.ready})


def test_a_repeated_finish_from_the_endpoint_reports_each_sample_once() -> None:
    backend = Replies([Delta(0, "a", "stop"), Delta(0, "", "stop"), Delta(1, "b", "stop"), Delta(2, "c", "stop")])
    result, events = run_collect(prompted(), 1.0, 60, planner=Wide(3), adapters={"m": ChatAdapter(backend, "x")})
    assert result.success
    ends = of(events, runtime.SampleFinished)
    assert sorted(e.sample for e in ends) == [0, 1, 2]
    assert runtime.replay_ledger(events).reserved_pusd == 0


def test_a_reply_for_a_sample_that_was_not_asked_for_is_a_typed_endpoint_error() -> None:
    backend = Replies([Delta(0, "a", None), Delta(5, "z", "stop")])
    result, events = run_collect(prompted(), 1.0, 60, planner=Wide(2), adapters={"m": ChatAdapter(backend, "x")})
    assert not result.success and result.reason == runtime.Reason.UNREACHABLE
    errors = [e.error for e in of(events, runtime.SampleFinished)]
    assert errors and all(e is not None and e.startswith("ProviderUnavailableError") for e in errors)


class Refusing(Adapter):
    """The endpoint answers every request with HTTP 400 (a prompt too long for the model, say)."""

    def __init__(self) -> None:
        self.batches = 0

    async def run(self, batch: Batch, report: Report) -> None:
        self.batches += 1
        error = runtime.ProviderRejectedError("context too long", provider="test", status=400)
        for idx in range(batch.k):
            report(SampleEnd(index=idx, finish=Finish.ERROR, input_tokens=0, output_tokens=0, error=error))


def test_a_request_the_model_refused_is_not_sent_again() -> None:
    """It was sent again and again until the deadline (251 requests in 3 s), and the run said "deadline"; then
    three times (issue 15); a refused request is sent once (issue 16: not re-sent unchanged)."""
    refusing = Refusing()
    result = runtime.run(prompted(), 1.0, 60, planner="retry:m:1", adapters={"m": refusing})
    assert refusing.batches == 1
    assert result.reason == runtime.Reason.PROVIDER_REJECTED
    assert result.detail is not None and "model 'm' refused subtask 's0', not sent again" in result.detail


class Silent(Adapter):
    """Returns without reporting anything: a bug in the adapter."""

    def __init__(self) -> None:
        self.calls = 0

    async def run(self, batch: Batch, report: Report) -> None:
        self.calls += 1


class PassesThenBreaks(Adapter):
    async def run(self, batch: Batch, report: Report) -> None:
        report(SampleEnd(index=0, finish=Finish.COMPLETE, input_tokens=1, output_tokens=1, passed=True))
        raise ValueError("a bug after a success")


def test_an_adapter_bug_stops_the_run_before_anything_else_is_launched_or_completed() -> None:
    silent = Silent()
    with pytest.raises(runtime.InvariantError, match="returned without reporting"):
        runtime.run(prompted(), 1.0, 60, planner="retry:m:1", adapters={"m": silent})
    assert silent.calls == 1
    events: list[runtime.Event] = []
    with pytest.raises(ValueError, match="a bug after a success"):
        runtime.run(prompted(), 1.0, 60, planner="retry:m:1", adapters={"m": PassesThenBreaks()},
                    on_event=events.append)  # fmt: skip
    (finished,) = of(events, runtime.RunFinished)
    assert not finished.success and finished.reason == runtime.Reason.ERROR and finished.completed == 0
    assert runtime.replay_ledger(events).reserved_pusd == 0


class BadDecision(Planner):
    in_thread = False

    def decide(self, snapshot: Snapshot) -> Decision:
        return Decision({0: Launch(0, 0)})


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_a_stream_delivers_every_event_before_the_error_that_ended_its_run(backend: str) -> None:
    """The failing run cancelled the reader before it could see RunFinished."""
    seen: list[runtime.Event] = []

    async def read() -> None:
        async with runtime.stream(prompted(), 1.0, 60, planner=BadDecision()) as events:
            async for event in events:
                seen.append(event)

    with pytest.raises(runtime.PlannerError):
        anyio.run(read, backend=backend)
    assert isinstance(seen[-1], runtime.RunFinished) and seen[-1].reason == runtime.Reason.ERROR


def test_a_run_cannot_execute_once_its_context_has_closed() -> None:
    async def late() -> None:
        async with runtime.open_run(prompted(), 1.0, 60) as r:
            pass
        await r.execute()

    with pytest.raises(runtime.UsageError, match="closed"):
        anyio.run(late)


@pytest.mark.parametrize("key", ["sk-test-123\n", " sk-test-123", "sk-test\x00123", "sk-tést-123"])
def test_a_key_a_header_cannot_carry_is_a_usage_error_that_does_not_show_it(key: str) -> None:
    """Issue 16: a key with a newline was retried as a connection error until the run gave up."""
    spec = runtime.ModelSpec("m", "openai", 0.0, 0.0, 1.0, 0.0, 100, runtime.Endpoint(model="gpt", api_key=key))
    with pytest.raises(runtime.UsageError, match="an HTTP header cannot carry") as info:
        make_backend(spec)
    assert "123" not in str(info.value)


@pytest.mark.parametrize(
    "options",
    [{"on_event": "x"}, {"journal": 123}, {"run_id": 5}, {"speed": 2.0}, {"speed": -1.0}, {"clock": "bogus"}],
)
def test_bad_options_are_refused_before_anything_runs(options: dict[str, object]) -> None:
    with pytest.raises(runtime.UsageError):
        runtime.run(prompted(), 1.0, 60, **options)  # type: ignore[call-overload]


def test_the_sync_qa_entry_point_refuses_an_unknown_keyword() -> None:
    with pytest.raises(runtime.UsageError, match="unknown option 'tool_cals'"):
        runtime.answer("Who?", tool_cals=2)  # type: ignore[call-arg]


@pytest.mark.parametrize(
    ("question", "options"),
    [
        (3, {}),
        ("  ", {}),
        ("Who?", {"controller": 5}),
        ("Who?", {"controller": None}),
        ("Who?", {"backbone": None}),
        ("Who?", {"corpus": 5}),
        ("Who?", {"search": "bm25"}),
        ("Who?", {"model": "gpt"}),
        ("Who?", {"clock": "real"}),
        ("Who?", {"seed": -1}),
        ("Who?", {"finalize": "yes"}),
        ("Who?", {"log": 3}),
        ("Who?", {"on_event": 3}),
        ("Who?", {"journal": 3}),
        ("Who?", {"corpus": ["not a paragraph"]}),
        ("Who?", {"corpus": "no-such-corpus.jsonl"}),
    ],
)
def test_answer_refuses_bad_input_with_a_usage_error(question: object, options: dict[str, object]) -> None:
    """These raised AttributeError or TypeError from deep inside the agent loop, or were ignored."""
    options.setdefault("corpus", [Paragraph("p", "Quill", "made by Ardent")])
    with pytest.raises(runtime.UsageError):
        runtime.answer(question, **options)  # type: ignore[arg-type]


async def _inside_a_loop() -> None:
    with pytest.raises(runtime.UsageError, match="worker thread"):
        runtime.evaluate(prompted(), 1.0, 60, planner="retry:m:1", runs=5, workers=1)


def test_evaluate_refuses_a_running_event_loop() -> None:
    anyio.run(_inside_a_loop)


class RefusedKey(runtime.AgentModel):
    async def turn(self, trace: runtime.Trace, directive: runtime.Directive, budget: runtime.QABudget) -> ModelTurn:
        raise runtime.ProviderRejectedError("invalid key", provider="test", status=401)


def test_the_qa_agent_stops_on_a_refused_key() -> None:
    """It stalled through every turn and answered '' with reason "budget"."""
    with pytest.raises(runtime.ProviderRejectedError):
        runtime.answer("Who makes the Quill?", corpus=[Paragraph("p", "Quill", "made by Ardent")], model=RefusedKey())


class NegativeBound(Adapter):
    def input_tokens(self, estimate: int, messages: tuple[runtime.Message, ...] | None) -> int:
        return -(10**9)  # would reserve a negative amount, and so free budget for everyone else

    async def run(self, batch: Batch, report: Report) -> None:
        raise AssertionError("never launched")


class Overreporting(Adapter):
    def __init__(self, output_tokens: int) -> None:
        self.output_tokens = output_tokens

    async def run(self, batch: Batch, report: Report) -> None:
        for idx in range(batch.k):
            report(SampleEnd(index=idx, finish=Finish.COMPLETE, input_tokens=1, output_tokens=self.output_tokens))


@pytest.mark.parametrize(
    ("adapter", "message"),
    [
        (NegativeBound(), "input_tokens gave -1000000000"),
        (Overreporting(10**6), "outside the"),
        (Overreporting(-5), "outside the"),
    ],
)
def test_usage_outside_what_was_reserved_is_a_bug_and_the_ledger_stays_whole(adapter: Adapter, message: str) -> None:
    events: list[runtime.Event] = []
    with pytest.raises(runtime.InvariantError, match=message):
        runtime.run(prompted(), 0.05, 60, planner=Wide(2), adapters={"m": adapter}, on_event=events.append)
    replay = runtime.replay_ledger(events)
    assert replay.reserved_pusd == 0 and replay.peak_committed_pusd <= replay.budget_pusd
    assert len(of(events, runtime.RunFinished)) == 1


class _Stop(Exception):
    pass


@pytest.mark.parametrize("at", ["run_started", "budget_reserved", "sample_finished", "run_finished"])
def test_an_event_callback_that_raises_stops_the_run_which_still_settles_and_journals_all(
    at: str, tmp_path: pathlib.Path
) -> None:
    """It left the run unsettled, without RunFinished, in the journal too."""

    def on_event(event: runtime.Event) -> None:
        if event.kind == at:
            raise _Stop(at)

    journal = tmp_path / "run.jsonl"
    with pytest.raises(_Stop):
        runtime.run(prompted(3), 1.0, 600, planner="retry:m:2", on_event=on_event, journal=journal)
    written = runtime.read_journal(journal)
    assert written[-1]["event"] == "run_finished"
    replay = runtime.replay_ledger(written)
    assert replay.reserved_pusd == 0 and replay.spent_pusd == written[-1]["spent_pusd"]


class StrayCancellation(Adapter):
    async def run(self, batch: Batch, report: Report) -> None:
        raise anyio.get_cancelled_exc_class()()  # what awaiting a future someone else cancelled looks like


def test_a_cancellation_nobody_asked_for_is_a_bug_not_a_silent_stop() -> None:
    with pytest.raises(runtime.InvariantError, match="cancellation nobody asked for"):
        runtime.run(prompted(), 1.0, 60, planner="retry:m:1", adapters={"m": StrayCancellation()})


class Sleepy(Adapter):
    """Does real I/O (here a sleep), which virtual time would not wait for."""

    async def run(self, batch: Batch, report: Report) -> None:
        await anyio.sleep(5)
        report(SampleEnd(index=0, finish=Finish.COMPLETE, input_tokens=1, output_tokens=1))


def test_an_adapter_of_ones_own_runs_on_the_real_clock_so_the_deadline_holds() -> None:
    """On the virtual clock (the default for a simulated spec) the 1 s deadline never came."""
    events: list[runtime.Event] = []
    start = time.monotonic()
    result = runtime.run(prompted(), 1.0, 1.0, planner="retry:m:1", adapters={"m": Sleepy()}, on_event=events.append)
    assert result.reason == runtime.Reason.DEADLINE and time.monotonic() - start < 4
    assert of(events, runtime.RunStarted)[0].clock == "RealClock"


class Malformed(Adapter):
    def __init__(self, end: object) -> None:
        self.end = end

    async def run(self, batch: Batch, report: Report) -> None:
        report(self.end)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "end",
    [
        "complete",
        SampleEnd(index="0", finish=Finish.COMPLETE, input_tokens=1, output_tokens=1),  # type: ignore[arg-type]
        SampleEnd(index=0, finish="complete", input_tokens=1, output_tokens=1),  # type: ignore[arg-type]
        SampleEnd(index=0, finish=Finish.COMPLETE, input_tokens=1.5, output_tokens=1),  # type: ignore[arg-type]
        SampleEnd(index=0, finish=Finish.ERROR, input_tokens=1, output_tokens=1, error="down"),  # type: ignore[arg-type]
    ],
)
def test_a_malformed_sample_end_is_a_bug_and_the_ledger_stays_whole(end: object) -> None:
    events: list[runtime.Event] = []
    with pytest.raises(runtime.InvariantError, match="Malformed reported"):
        runtime.run(prompted(), 0.05, 60, planner=Wide(1), adapters={"m": Malformed(end)}, on_event=events.append)
    assert runtime.replay_ledger(events).reserved_pusd == 0 and len(of(events, runtime.RunFinished)) == 1


def test_a_model_of_an_unknown_provider_is_a_usage_error() -> None:
    """It raised KeyError from the key lookup."""
    spec = runtime.ModelSpec("m", "cohere", 0.0, 0.0, 1.0, 0.0, 100, runtime.Endpoint(model="command"))
    with pytest.raises(runtime.UsageError, match="unknown provider 'cohere'"):
        make_backend(spec)


@pytest.mark.parametrize(
    "options",
    [
        {"progress": 5},  # a TypeError once the first question was done
        {"controllers": None},
        {"ladder": "x"},
        {"finalize": None},
        {"search": 1.5},
        {"examples": 1.5},
    ],
)
def test_evaluate_qa_refuses_bad_input_before_any_question(options: dict[str, object]) -> None:
    quill = QAExample("q", "Who makes the Quill?", ("Ardent",), (Paragraph("p", "Quill", "Ardent"),), ("p",))
    examples = options.pop("examples", [quill])
    with pytest.raises(runtime.UsageError):
        runtime.evaluate_qa(examples, **options)  # type: ignore[arg-type]
