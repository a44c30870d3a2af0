"""Repairs on real endpoints (issue 18, item 1): a loop subtask's next prompt shows the failed answer and why; the
chat adapters send the run and the history, and serve-sim draws a loop subtask's history-dependent success from
them."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import anyio
import httpx

import runtime
from adapters.chat import HISTORY_HEADER, RUN_HEADER, ChatRequest, input_token_bound, request_headers
from adapters.openai import OpenAIBackend
from runtime import Message
from runtime._prompts import REPAIR_TEMPLATE
from runtime.types import Adapter, Finish, SampleEnd, SampleFinished
from tests.helpers import server

if TYPE_CHECKING:
    from runtime.types import Batch, Report

MODEL = {"provider": "openai", "model": "gpt-x", "input_price_per_mtok": 1.0, "output_price_per_mtok": 2.0,
         "tokens_per_s": 500, "ttft_s": 0.01, "max_output_tokens": 50}  # fmt: skip


def spec(*, loop: bool = True, history: dict[str, Any] | None = None, repair_p: float | None = 0.3) -> dict[str, Any]:
    profile: dict[str, Any] = {"p": 0.6, "output_tokens": {"fixed": 4}}
    if repair_p is not None:
        profile["repair_p"] = repair_p
    subtask: dict[str, Any] = {
        "id": "fix", "prompt": "Fix the bug.", "reference": "FIXED", "wrong": ["broken"],
        "verifier": {"exact": "FIXED"}, "profiles": {"a": profile},
    }  # fmt: skip
    if loop:
        subtask["loop"] = {"horizon": 2}
    subtask.update(history if history is not None else {"difficulty": {"spread": 1.0}})
    return {"name": "repair", "models": {"a": dict(MODEL)}, "subtasks": [subtask]}


class Scripted(Adapter):
    """A real-looking endpoint (not simulated, so the verifier decides) answering from a script, one per batch."""

    def __init__(self, answers: list[str]) -> None:
        self.answers = answers
        self.batches: list[Batch] = []

    def input_tokens(self, estimate: int, messages: tuple[Message, ...] | None) -> int:
        assert messages is not None
        return input_token_bound(messages)

    async def run(self, batch: Batch, report: Report) -> None:
        assert batch.messages is not None and batch.input_tokens >= input_token_bound(batch.messages)
        self.batches.append(batch)
        text = self.answers[len(self.batches) - 1]
        report(SampleEnd(index=0, finish=Finish.COMPLETE, input_tokens=batch.input_tokens, output_tokens=3,
                         output=text))  # fmt: skip


def test_a_repair_prompt_carries_the_failed_answer_and_the_verifiers_detail() -> None:
    adapter = Scripted(["broken", "FIXED"])
    events: list[runtime.Event] = []
    result = runtime.run(spec(), 1.0, 30, planner="retry:a:1", adapters={"a": adapter}, on_event=events.append)
    assert result.success and result.outputs["fix"] == "FIXED"
    first, second = (b.messages for b in adapter.batches)
    assert first == (Message("user", "Fix the bug."),)
    detail = "output differs from the expected text"  # the exact verifier's
    assert second == (*first, Message("assistant", "broken"), Message("user", REPAIR_TEMPLATE.format(detail=detail)))
    assert [b.history_names for b in adapter.batches] == [(), ("a",)]
    assert {b.run for b in adapter.batches} == {result.run_id}
    # The longer prompt was reserved for: the second batch's input bound covers it, and so does the ledger.
    assert adapter.batches[1].input_tokens == input_token_bound(second) > adapter.batches[0].input_tokens
    ledger = runtime.replay_ledger(events)
    assert ledger.spent_pusd == result.cost_pusd and ledger.peak_committed_pusd <= ledger.budget_pusd


def test_a_subtask_without_a_loop_is_retried_with_its_own_prompt() -> None:
    adapter = Scripted(["broken", "FIXED"])
    result = runtime.run(spec(loop=False, repair_p=None, history={}), 1.0, 30, planner="retry:a:1",
                         adapters={"a": adapter})  # fmt: skip
    assert result.success
    assert adapter.batches[0].messages == adapter.batches[1].messages == (Message("user", "Fix the bug."),)


def test_the_ontime_headers_are_percent_encoded_and_hold_no_key() -> None:
    r = ChatRequest("m", (), 5, tag="fix", run="r 1", history=("a,b", "c"))
    assert request_headers(r) == {"x-ontime-subtask": "fix", RUN_HEADER: "r%201", HISTORY_HEADER: "a%2Cb,c"}
    assert request_headers(ChatRequest("m", (), 5)) == {}


def test_serve_sim_follows_a_cascade_after_the_history_header_and_ignores_no_header() -> None:
    """Deterministic rates: model a always right at once, never right after its own failure."""
    data = spec(history={"cascade": {"a": 1.0, "a>a": 0.0}}, repair_p=None)

    async def ask(url: str, kw: dict[str, Any]) -> str:
        backend = OpenAIBackend(api_key="x", base_url=url + "/v1")
        try:
            reply = await backend.complete(ChatRequest("gpt-x", (Message("user", "Fix the bug."),), 20, **kw))
        finally:
            await backend.aclose()
        return reply.choices[0].text.strip()

    with server(data, seed=1, speed=100.0) as (srv, _):
        assert srv.url is not None
        asks = [{"tag": "fix", "run": f"r{n}", "history": h} for n in range(5) for h in ((), ("a",))]
        texts = [anyio.run(ask, srv.url, kw) for kw in asks]
        bare = anyio.run(ask, srv.url, {"tag": "fix"})
    assert texts == ["FIXED", "broken"] * 5
    assert bare == "FIXED"  # no header: a first attempt, as before
    assert [r.history for r in srv.record[:2]] == [(), ("a",)]


def test_first_and_repair_rates_through_runtime_run_match_the_difficulty_model() -> None:
    """300 runs of a loop subtask (first rate 0.6, repair rate 0.3 after its own failure) through the OpenAI SDK
    against serve-sim on loopback. Each measured rate must lie within 3.5 standard errors of the spec's (a
    two-sided test at about 5e-4); an endpoint that ignored the history would repair at 0.6, 7 errors away."""
    p, q, runs = 0.6, 0.3, 300
    first: list[bool] = []
    repairs: list[bool] = []
    with server(spec(), seed=7, speed=200.0) as (srv, wf):
        for seed in range(runs):
            events: list[runtime.Event] = []
            runtime.run(wf, 1.0, 30, planner="retry:a:1", seed=seed, on_event=events.append)
            ends = [e.status.value == "succeeded" for e in events if isinstance(e, SampleFinished)]
            first.append(ends[0])
            repairs.extend(ends[1:2])
        assert {r.history for r in srv.record} == {(), ("a",)}
        assert len({r.run for r in srv.record}) == runs
    for rate, seen in ((p, first), (q, repairs)):
        measured, se = sum(seen) / len(seen), math.sqrt(rate * (1 - rate) / len(seen))
        assert abs(measured - rate) <= 3.5 * se, (rate, measured, len(seen))
    assert len(repairs) == runs - sum(first)


def test_serve_sim_refuses_a_history_naming_an_unknown_model() -> None:
    with server(spec(), seed=1) as (srv, _):
        body = {"model": "gpt-x", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}
        reply = httpx.post(f"{srv.url}/v1/chat/completions", json=body,
                           headers={"x-ontime-subtask": "fix", HISTORY_HEADER: "nobody"})  # fmt: skip
    assert reply.status_code == 400 and "unknown model" in reply.text
