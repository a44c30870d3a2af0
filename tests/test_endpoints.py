"""Real endpoints, end to end: the official openai and anthropic SDKs over HTTP against ``serve-sim`` on loopback.

Every test starts a real aiohttp server on 127.0.0.1 and drives it through the real SDK clients; nothing
leaves the machine.
"""

from __future__ import annotations

import io
import json
import time
from collections import Counter
from typing import TYPE_CHECKING, Any

import anyio
import pytest
import structlog
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import runtime
from adapters.anthropic import AnthropicBackend
from adapters.chat import ChatRequest
from adapters.chat_adapter import CANCEL_ALLOWANCE_TOKENS
from adapters.openai import OpenAIBackend
from adapters.resilience import Resilient, RetryPolicy
from adapters.sim_server import Faults
from runtime import Message
from runtime.types import Decision, Launch, SampleStatus, Snapshot
from tests.helpers import example_spec, server, settled_open_requests

if TYPE_CHECKING:
    from pathlib import Path


def journal_usage(events: list[runtime.Event]) -> tuple[int, int]:
    ends = [e for e in events if isinstance(e, runtime.SampleFinished)]
    return sum(e.input_tokens for e in ends), sum(e.output_tokens for e in ends)


@pytest.mark.parametrize("provider", ["openai", "anthropic", "mixed"])
def test_runs_finish_through_the_sdks_despite_faults_and_the_ledger_matches_the_server(provider: str) -> None:
    """20% of requests fail (every kind); one sample per batch, so nothing is cancelled and usage is exact.

    Requests arrive one at a time, so the server's draws are deterministic: its seed 0 injects faults of
    several kinds in the first 25 requests (7 of them; other seeds draw from 1 to 7).
    """
    data = example_spec(provider, timeout_s=0.5)
    faults = Faults.every_kind(0.2, retry_after_s=0.02)
    with server(data, seed=0, speed=20.0, faults=faults) as (srv, wf):
        for seed in range(5):
            before = len(srv.record)
            events: list[runtime.Event] = []
            result = runtime.run(wf, 0.05, 120, planner="retry:haiku:1", seed=seed, on_event=events.append)
            assert result.success, result.reason
            ledger = runtime.replay_ledger(events)
            assert ledger.spent_pusd == ledger.reported_spent_pusd == result.cost_pusd
            assert ledger.peak_committed_pusd <= ledger.budget_pusd
            served = srv.record[before:]
            assert srv.open_requests == 0
            inp, out = journal_usage(events)
            assert out == sum(r.total_output_tokens for r in served)
            # The client charges a dropped OpenAI stream its input bound (no usage arrived); otherwise exact.
            dropped = [r for r in served if r.status == "drop" and r.total_output_tokens and r.api == "openai"]
            server_in = sum(r.input_tokens for r in served)
            assert inp >= server_in
            if not dropped:
                assert inp == server_in
    kinds = Counter(r.status for r in srv.record)
    assert sum(kinds[k] for k in ("rate_limit", "server_error", "drop", "hang", "malformed")) >= 0.1 * len(srv.record)
    assert len(set(kinds) - {"complete"}) >= 3, kinds


def test_a_batch_wider_than_the_endpoints_n_is_split_into_requests_it_accepts() -> None:
    """Issue 16: k = 200 went out as one request with n = 200, which OpenAI refuses (HTTP 400), again and again."""
    data = example_spec("openai")
    with server(data, seed=1, speed=20.0) as (srv, wf):
        events: list[runtime.Event] = []
        result = runtime.run(wf, 5.0, 30, planner="retry:mini:200", on_event=events.append)
    assert result.success, result.detail
    assert srv.record and max(r.n for r in srv.record) == 128 and {r.n for r in srv.record} == {128, 72}
    assert runtime.replay_ledger(events).spent_pusd == result.cost_pusd


def test_a_models_max_batch_caps_every_launch_on_it() -> None:
    """Issue 16 item 10: k was bounded per batch only; an endpoint's ``max_batch`` bounds it per model."""
    data = example_spec("openai")
    data["models"]["mini"]["max_batch"] = 3
    with server(data, seed=1, speed=20.0) as (srv, wf):
        events: list[runtime.Event] = []
        result = runtime.run(wf, 1.0, 60, planner="retry:mini:10", on_event=events.append)
    assert result.success, result.detail
    assert {e.k for e in events if isinstance(e, runtime.BatchLaunched)} == {3}
    assert {r.n for r in srv.record} == {3}
    for bad in (0, 10_001, 2.5):
        data["models"]["mini"]["max_batch"] = bad
        with pytest.raises(runtime.SpecError, match="max_batch"):
            runtime.parse_workflow(data)


class _Recording(runtime.Planner):
    """Two samples of every ready subtask on the first model, noting what the snapshot says each reserves."""

    name = "recording"
    in_thread = False

    def __init__(self) -> None:
        self.shown: dict[str, int] = {}

    def decide(self, snapshot: Snapshot) -> Decision:
        t = snapshot.table
        for i in snapshot.ready:
            self.shown[t.subtask_ids[i]] = snapshot.worst(i, 0)
        return Decision({i: Launch(0, 2) for i in snapshot.ready})


def test_the_planner_is_shown_the_reservation_the_ledger_holds() -> None:
    """Issue 16 item 7: the planner planned with the spec's input_tokens while the ledger reserved the real
    prompt's bound, so MCP asked for batches the ledger refused. The snapshot now carries the ledger's figure."""
    data = example_spec("openai")
    with server(data, seed=1, speed=20.0) as (_srv, wf):
        planner = _Recording()
        events: list[runtime.Event] = []
        result = runtime.run(wf, 1.0, 60, planner=planner, on_event=events.append)
    assert result.success, result.detail
    table = runtime.ProfileTable.from_workflow(wf)
    launched = {e.batch: e for e in events if isinstance(e, runtime.BatchLaunched)}
    differs = 0
    for e in events:
        if isinstance(e, runtime.BudgetReserved):
            b = launched[e.batch]
            assert e.pusd == b.k * planner.shown[b.subtask]
            differs += planner.shown[b.subtask] != table.worst_cost[table.subtask_ids.index(b.subtask), 0]
    assert differs  # the real prompts' bounds are not the spec's estimates


def test_the_default_planner_with_n_samples_and_cancelled_siblings() -> None:
    """MCP's wide batches go out as one request with n=k; siblings are cancelled once one passes."""
    data = example_spec("openai")
    with server(data, seed=5, speed=20.0) as (srv, wf):
        events: list[runtime.Event] = []
        result = runtime.run(wf, 0.05, 60, planner="retry:mini:4", on_event=events.append)
        assert result.success
        assert settled_open_requests(srv) == 0
    assert {r.n for r in srv.record} == {4}
    inp, out = journal_usage(events)
    served_out = sum(r.total_output_tokens for r in srv.record)
    # A cancelled stream is charged what arrived plus an allowance for what was served but still in flight.
    cancelled = sum(1 for e in events if isinstance(e, runtime.SampleFinished) and e.status == "cancelled")
    assert cancelled and served_out <= out <= served_out + CANCEL_ALLOWANCE_TOKENS * cancelled
    assert inp >= sum(r.input_tokens for r in srv.record)
    assert runtime.replay_ledger(events).peak_committed_pusd <= runtime.replay_ledger(events).budget_pusd


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_the_deadline_stops_streams_in_flight_within_a_fraction_of_a_second(provider: str) -> None:
    data = example_spec(provider)
    for m in data["models"].values():
        m["tokens_per_s"] = 20  # a 100-token answer takes 5 s: the 1.5 s deadline cuts every stream
    with server(data, seed=1, speed=1.0) as (srv, wf):
        events: list[runtime.Event] = []
        start = time.monotonic()
        result = runtime.run(wf, 0.05, 1.5, planner="retry:mini:2", on_event=events.append)
        wall = time.monotonic() - start
        stop = time.monotonic() + 0.5
        while srv.open_requests and time.monotonic() < stop:
            time.sleep(0.005)
        closed_within = time.monotonic() - start - 1.5
        open_left = srv.open_requests
    assert result.reason == "deadline" and not result.success
    assert wall < 1.5 + 0.5, wall
    assert open_left == 0, f"{open_left} streams still open {closed_within:.2f} s after the deadline"
    cancelled = [e for e in events if isinstance(e, runtime.SampleFinished) and e.status == "cancelled"]
    assert cancelled and all(e.output_tokens > 0 for e in cancelled)  # charged what was produced
    assert {r.status for r in srv.record} == {"cancelled"}
    _, out = journal_usage(events)
    served = sum(r.total_output_tokens for r in srv.record)
    assert served <= out <= served + CANCEL_ALLOWANCE_TOKENS * len(cancelled)


def test_no_api_key_reaches_logs_events_journals_or_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    good, bad = "sk-ontime-test-GOODKEY-1234567890", "sk-ontime-test-WRONGKEY-0987654321"
    data = example_spec("mixed")
    for m in data["models"].values():
        m["api_key_env"] = "ONTIME_TEST_KEY"
    log_stream = io.StringIO()
    logger = structlog.wrap_logger(structlog.WriteLogger(log_stream), processors=[structlog.processors.JSONRenderer()])
    with server(data, seed=2, speed=20.0, api_key=good, faults=Faults.every_kind(0.2, 0.02)) as (_, wf):
        monkeypatch.setenv("ONTIME_TEST_KEY", good)
        events: list[runtime.Event] = []
        ok = runtime.run(wf, 0.05, 60, journal=tmp_path / "good.jsonl", log=logger, on_event=events.append)
        assert ok.success
        monkeypatch.setenv("ONTIME_TEST_KEY", bad)  # the server echoes a wrong key in its 401 message
        with pytest.raises(runtime.ProviderRejectedError) as info:
            runtime.run(wf, 0.05, 60, journal=tmp_path / "bad.jsonl", log=logger, on_event=events.append)
    assert info.value.status == 401
    texts = [
        log_stream.getvalue(),
        (tmp_path / "good.jsonl").read_text(),
        (tmp_path / "bad.jsonl").read_text(),
        str(info.value),
        repr(info.value),
        json.dumps(ok.to_dict()),
        repr(wf),
        *(json.dumps(e.to_dict()) for e in events),
    ]
    assert "provider_rejected" in texts[2] and "HTTP 401" in texts[2]  # the journal says what happened...
    for text in texts:
        assert good not in text and bad not in text  # ...without the key


def test_a_hung_endpoint_is_given_up_on_and_the_run_still_finishes() -> None:
    data = example_spec("anthropic", timeout_s=0.3)
    with server(data, seed=4, speed=20.0, faults=Faults(hang=0.5)) as (srv, wf):
        result = runtime.run(wf, 0.05, 60, planner="retry:haiku:1")
    assert result.success
    assert Counter(r.status for r in srv.record)["hang"] >= 1


# -- the resilience wrapper, one fault kind at a time ------------------------------------------------------


def _request(model: str = "gpt-4o-mini", deadline_s: float | None = None) -> ChatRequest:
    deadline = None if deadline_s is None else time.monotonic() + deadline_s
    msg = (Message("user", "Write slugify."),)
    return ChatRequest(model, msg, 200, deadline=deadline, tag="slugify")


async def _complete(backend: Resilient, request: ChatRequest) -> Any:
    try:
        return await backend.complete(request)
    finally:
        await backend.aclose()


def _openai(url: str, attempts: int = 3, timeout_s: float = 5.0) -> Resilient:
    inner = OpenAIBackend(api_key="k", base_url=url + "/v1", timeout_s=timeout_s)
    return Resilient(inner, retry=RetryPolicy(attempts=attempts, initial_s=0.01, max_s=0.05))


@pytest.mark.parametrize(
    ("kind", "error"),
    [
        ("rate_limit", runtime.RateLimitedError),
        ("server_error", runtime.ProviderUnavailableError),
        ("malformed", runtime.ProviderUnavailableError),
        ("hang", runtime.ProviderUnavailableError),
    ],
)
def test_each_fault_before_output_is_retried_then_reported_typed(kind: str, error: type[Exception]) -> None:
    with server(example_spec("openai"), speed=50.0, faults=Faults(**{kind: 1.0}, retry_after_s=0.05)) as (srv, _):
        backend = _openai(srv.url or "", attempts=3, timeout_s=0.3)
        start = time.monotonic()
        with pytest.raises(error):
            anyio.run(_complete, backend, _request())
        took = time.monotonic() - start
    assert backend.attempts == 3 and backend.retried == 2
    assert len(srv.record) == 3 and {r.status for r in srv.record} == {kind}
    if kind == "rate_limit":
        assert took >= 2 * 0.05  # Retry-After honoured


def test_a_retry_never_starts_past_the_deadline() -> None:
    with server(example_spec("openai"), faults=Faults(rate_limit=1.0, retry_after_s=2.0)) as (srv, _):
        backend = _openai(srv.url or "", attempts=5)
        start = time.monotonic()
        with pytest.raises(runtime.RateLimitedError):
            anyio.run(_complete, backend, _request(deadline_s=1.0))
        assert time.monotonic() - start < 1.0  # the 2 s wait would end past the deadline: no retry
    assert backend.attempts == 1


def test_a_stream_dropped_after_output_is_not_retried_and_is_charged_what_arrived() -> None:
    with server(example_spec("openai"), seed=11, speed=50.0, faults=Faults(drop=1.0)) as (srv, _):
        backend = _openai(srv.url or "", attempts=4)
        with pytest.raises(runtime.ProviderUnavailableError):
            anyio.run(_complete, backend, _request())
        produced = [r.total_output_tokens for r in srv.record]
    # Retried only while a drop had produced nothing; the first drop with output ended the request.
    assert produced[-1] > 0 and all(p == 0 for p in produced[:-1])
    assert backend.attempts == len(produced)


def test_a_refused_request_is_not_retried() -> None:
    with server(example_spec("openai")) as (srv, _):
        backend = _openai(srv.url or "", attempts=4)
        with pytest.raises(runtime.ProviderRejectedError, match="HTTP 404"):
            anyio.run(_complete, backend, _request(model="no-such-model"))
    assert backend.attempts == 1


def test_anthropic_backend_reports_the_endpoints_usage() -> None:
    with server(example_spec("anthropic"), seed=7, speed=50.0) as (srv, _):
        backend = AnthropicBackend(api_key="k", base_url=srv.url)
        reply = anyio.run(_complete_plain, backend, _request(model="claude-haiku-4-5"))
    (r,) = srv.record
    assert reply.input_tokens == r.input_tokens and reply.output_tokens == r.total_output_tokens > 0
    assert reply.choices[0].text.strip()


async def _complete_plain(backend: AnthropicBackend, request: ChatRequest) -> Any:
    try:
        return await backend.complete(request)
    finally:
        await backend.aclose()


def test_openai_n_samples_come_back_with_usage() -> None:
    with server(example_spec("openai"), seed=8, speed=50.0) as (srv, _):
        backend = _openai(srv.url or "")
        req = ChatRequest("gpt-4o-mini", (Message("user", "x"),), 300, n=3, tag="summary")
        reply = anyio.run(_complete, backend, req)
    (r,) = srv.record
    assert len(reply.choices) == 3 and r.n == 3
    assert [c.output_tokens for c in reply.choices] == r.output_tokens
    assert reply.input_tokens == r.input_tokens and reply.output_tokens == r.total_output_tokens


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    budget=st.floats(0.0002, 0.01),
    fault_rate=st.floats(0.0, 0.5),
    seed=st.integers(0, 1000),
    width=st.sampled_from([1, 3]),
)
@example(budget=0.006669, fault_rate=0.289, seed=1000, width=3)  # a cancelled sample had answered (newcomer-check)
def test_spend_never_exceeds_the_budget_under_faults_retries_and_cancellation(
    budget: float, fault_rate: float, seed: int, width: int
) -> None:
    data = example_spec("mixed", timeout_s=0.3)
    with server(data, seed=seed, speed=50.0, faults=Faults.every_kind(fault_rate, 0.01)) as (srv, wf):
        events: list[runtime.Event] = []
        result = runtime.run(wf, budget, 20, planner=f"retry:mini:{width}", on_event=events.append)
    ledger = runtime.replay_ledger(events)
    assert ledger.peak_committed_pusd <= ledger.budget_pusd
    assert ledger.spent_pusd == ledger.reported_spent_pusd == result.cost_pusd <= runtime.PUSD_PER_USD * budget
    assert ledger.reserved_pusd == 0  # every reservation settled: nothing leaked
    _, out = journal_usage(events)
    served_out = sum(r.total_output_tokens for r in srv.record)
    # A stream cancelled after it answered is charged what arrived plus the allowance (what the endpoint may have
    # generated before it saw the close); the server counts a piece before it writes it (at most 8 per request).
    cut = [e for e in events if isinstance(e, runtime.SampleFinished) and e.status is SampleStatus.CANCELLED]
    answered = sum(e.output_tokens > 0 for e in cut)
    assert served_out - 8 * len(srv.record) <= out <= served_out + CANCEL_ALLOWANCE_TOKENS * answered


def test_ontime_serve_sim_and_ontime_run_from_a_shell(tmp_path: Path) -> None:
    import signal
    import socket
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data = example_spec("mixed")
    for m in data["models"].values():
        m["base_url"] = f"http://127.0.0.1:{port}" + ("/v1" if m["provider"] == "openai" else "")
    spec = tmp_path / "codegen.json"
    spec.write_text(json.dumps(data))
    cli = [sys.executable, "-m", "runtime.cli"]
    server_cmd = [*cli, "serve-sim", str(spec), "--port", str(port), "--speed", "20", "--faults", "0.2"]
    server_proc = subprocess.Popen(server_cmd, stderr=subprocess.PIPE, text=True)
    try:
        assert server_proc.stderr is not None
        assert "serve-sim: workflow" in server_proc.stderr.readline()  # listening
        run = subprocess.run(
            [*cli, "run", str(spec), "-b", "0.05", "-d", "60", "--json"], capture_output=True, text=True, timeout=120
        )
        assert run.returncode == 0, run.stderr
        assert json.loads(run.stdout)["success"] is True
    finally:
        server_proc.send_signal(signal.SIGINT)
        try:
            _, err = server_proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            server_proc.kill()
            _, err = server_proc.communicate()
            pytest.fail(f"serve-sim did not stop within 30 s of Ctrl-C:\n{err}")
    assert "complete" in err and "stopped after" in err  # a line per request, then a summary


def test_the_concurrency_limit_holds_requests_back_and_the_rate_limit_spaces_them() -> None:
    from adapters.resilience import RateLimiter

    data = example_spec("openai")
    for m in data["models"].values():
        m["tokens_per_s"] = 200  # about half a second per answer: requests overlap unless held back

    async def many(backend: Resilient, n: int) -> None:
        try:
            async with anyio.create_task_group() as tg:
                for _ in range(n):
                    tg.start_soon(backend.complete, _request())
        finally:
            await backend.aclose()

    with server(data, speed=1.0) as (srv, _):
        inner = OpenAIBackend(api_key="k", base_url=f"{srv.url}/v1")
        anyio.run(many, Resilient(inner, concurrency=2), 6)
        assert srv.peak_open == 2 and len(srv.record) == 6
    with server(data, speed=50.0) as (srv, _):
        inner = OpenAIBackend(api_key="k", base_url=f"{srv.url}/v1")
        start = time.monotonic()
        anyio.run(many, Resilient(inner, rate=RateLimiter(20.0, burst=2)), 6)
        assert time.monotonic() - start >= (6 - 2) / 20.0  # 2 at once, then one every 50 ms


def test_a_workflow_whose_result_is_an_answer_is_finalized() -> None:
    """``answer: true`` marks the subtask whose output is the run's answer; run() refines its form, free."""
    model = {"provider": "openai", "model": "gpt-4o-mini", "tokens_per_s": 200, "ttft_s": 0.1,
             "max_output_tokens": 100, "timeout_s": 2}  # fmt: skip
    profile = {"m": {"p": 1.0, "output_tokens": {"fixed": 8}}}
    data: dict[str, Any] = {
        "models": {"m": model},
        "subtasks": [
            {"id": "lookup", "prompt": "What is the capital of Estria?",
             "reference": "The capital of Estria is Velmora.", "profiles": profile},
            {"id": "final", "deps": ["lookup"], "answer": True,
             "prompt": "Is Velmora the capital of Estria? {{lookup}}",
             "reference": "Yes, based on the evidence", "profiles": profile},
        ],
    }  # fmt: skip
    with server(data, speed=20.0) as (_, wf):
        result = runtime.run(wf, 0.05, 60)
    assert result.success
    assert result.base_answer == "Yes, based on the evidence" and result.answer == "yes"
    assert result.to_dict()["answer"] == "yes"
    data["subtasks"][0]["answer"] = True
    with pytest.raises(runtime.SpecError, match="only one subtask"):
        runtime.parse_workflow(data)
