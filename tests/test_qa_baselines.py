"""The faithful baselines (issue 17): each does its paper's step on a scripted model, and none breaks either cap."""

from __future__ import annotations

from typing import TYPE_CHECKING

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.chat_agent import read_turn, render_turn
from planners import CONTROLLERS, make_controller
from planners.bavt import BAVT, selection_weights
from runtime._qa import QAResult, run_agent
from runtime.types import (
    Action,
    AgentModel,
    AgentStep,
    Directive,
    Event,
    Hit,
    ModelTurn,
    Node,
    QABudget,
    QAController,
    SearchTool,
    Step,
    Trace,
)
from tests.helpers import FuzzAgentModel

if TYPE_CHECKING:
    from collections.abc import Callable

QUESTION = "Who designed the building where The Glass Harbour was first performed?"


class Scripted(AgentModel):
    """A model driven by a test function of (trace, directive); every turn costs ``cost`` tokens."""

    def __init__(self, reply: Callable[[Trace, Directive], str], cost: int = 20) -> None:
        self.reply = reply
        self.cost = cost
        self.seen: list[Directive] = []

    async def turn(self, trace: Trace, directive: Directive, budget: QABudget) -> ModelTurn:
        self.seen.append(directive)
        return ModelTurn(self.reply(trace, directive), min(self.cost, directive.max_tokens))


class Index(SearchTool):
    """A paragraph per query, or none for a query in ``empty``."""

    def __init__(self, empty: tuple[str, ...] = ()) -> None:
        self.empty = empty

    async def search(self, query: str, top_k: int = 5) -> list[Hit]:
        return [] if query in self.empty else [Hit(query, f"Title {query}", f"{query} was designed by Kell.", 1.0)]


def _run(model: AgentModel, controller: QAController, tool_calls: int = 3, tokens: int = 500) -> QAResult:
    async def go() -> QAResult:
        return await run_agent(QUESTION, model=model, search=Index(), controller=controller, tool_calls=tool_calls,
                               tokens=tokens, finalize=False)  # fmt: skip

    return anyio.run(go)


def _bats_model(verdicts: list[str]) -> Scripted:
    def reply(trace: Trace, d: Directive) -> str:
        if d.action is Action.VERIFY:
            return f"<thought>Verdict: {verdicts.pop(0)}. Confidence: 0.7. Candidate: Kell</thought>"
        if d.action in (Action.ANSWER, Action.BACKSTOP):
            return "<answer>Kell</answer>"
        return f"<thought>Confidence: 0.5. Candidate: Kell</thought><tool_call>q{trace.searches}</tool_call>"

    return Scripted(reply)


def test_bats_verifies_before_answering_and_continues_on_unsupported() -> None:
    model = _bats_model(["unsupported", "supported"])
    r = _run(model, make_controller("bats"))
    assert [d.action for d in model.seen] == [Action.SEARCH, Action.VERIFY, Action.SEARCH, Action.VERIFY, Action.ANSWER]
    assert all(d.show_budget for d in model.seen)
    assert [s.verdict for s in r.trace.steps if s.action is Action.VERIFY] == [False, True]
    assert r.reason == "answered" and r.answer == "Kell" and r.tool_calls == 2


def test_bats_answers_an_unsupported_candidate_when_the_budget_allows_no_more() -> None:
    model = _bats_model(["unsupported"])
    r = _run(model, make_controller("bats"), tool_calls=1)
    assert [d.action for d in model.seen] == [Action.SEARCH, Action.VERIFY, Action.BACKSTOP]
    assert r.reason == "answered" and r.tool_calls == 1


def test_search_o1_reasons_after_every_search_and_never_shows_the_budget() -> None:
    def reply(trace: Trace, d: Directive) -> str:
        if d.action is Action.REASON:  # a tool call here is neither executed nor paid for
            return (
                "<thought>Notes: Kell designed it. Confidence: 0.6. Candidate: Kell</thought><tool_call>x</tool_call>"
            )
        return "<answer>Kell</answer>" if trace.searches == 2 else f"<tool_call>q{trace.searches}</tool_call>"

    model = Scripted(reply)
    r = _run(model, make_controller("search-o1"))
    assert [s.action for s in r.trace.steps] == [Action.SEARCH, Action.REASON] * 2 + [Action.ANSWER]
    assert [d.action for d in model.seen] == [None, Action.REASON] * 2 + [None]  # the model decided to answer
    assert not any(d.show_budget for d in model.seen)
    assert r.tool_calls == 2 and r.trace.steps[1].query is None and r.trace.steps[1].thought.startswith("Notes:")


def test_bavt_selection_sharpens_as_the_budget_runs_out() -> None:
    values = [0.0, 0.3, 0.6]
    shares = [max(selection_weights(values, QABudget(4, 400, t, 100 * t))) for t in (4, 3, 2, 1)]
    assert shares == sorted(shares) and shares[-1] > 0.9 > shares[0]  # proportional at first, greedy at the end
    full = selection_weights(values, QABudget(4, 400, 4, 400))
    assert full[2] / full[1] == pytest.approx(0.65 / 0.35)  # the whole budget left: proportional to value + FLOOR


def test_bavt_branches_past_a_dead_end_and_answers_from_the_best_node() -> None:
    calls = iter(range(100))

    def reply(trace: Trace, d: Directive) -> str:
        if d.action in (Action.ANSWER, Action.BACKSTOP):
            return "<answer>Kell</answer>"
        conf = 0.9 if any(h.id == "good" for h in trace.evidence.values()) else 0.2
        return f"<thought>Confidence: {conf}. Candidate: Kell</thought><tool_call>q{next(calls)}</tool_call>"

    class Search(SearchTool):
        async def search(self, query: str, top_k: int = 5) -> list[Hit]:  # the first query finds nothing
            return [] if query == "q0" else [Hit("good" if query == "q1" else query, "T", "Kell designed it.", 1.0)]

    events: list[Event] = []

    async def go() -> QAResult:
        return await run_agent(QUESTION, model=Scripted(reply), search=Search(), controller=BAVT(), tool_calls=3,
                               tokens=500, finalize=False, emit=events.append)  # fmt: skip

    r = anyio.run(go)
    steps = [e for e in events if isinstance(e, AgentStep)]
    assert [e.parent for e in steps[:2]] == [0, 0]  # the dead end was pruned and the question widened again
    assert r.reason == "answered" and r.trace.steps[-1].directive is Action.ANSWER
    assert "good" in r.trace.evidence and all(s.query != "q0" for s in r.trace.steps)  # the best branch answered


def _tree(confidences: list[tuple[int, float | None, str]]) -> list[Node]:
    """Nodes made by searches: (parent id, the confidence stated, the hit's id)."""
    tree = [Node(0, None, Trace(QUESTION))]
    for parent, conf, hit in confidences:
        p = tree[parent]
        t = p.trace.branch()
        h = Hit(hit, hit, "text", 1.0)
        t.steps.append(Step(Action.SEARCH, Action.SEARCH, 30, query=hit, hits=(h,), confidence=conf, candidate="X"))
        t.evidence[h.id] = h
        tree.append(Node(len(tree), p, t))
        p.children.append(tree[-1])
    return tree


def test_bavt_deepens_a_line_that_made_progress_and_answers_at_the_threshold() -> None:
    roomy, tight = QABudget(3, 500, 2, 400), QABudget(3, 500, 1, 100)
    tree = _tree([(0, None, "a"), (1, 0.4, "b")])
    node, d = BAVT().expand(tree, tight)  # low budget: greedy on the best open node, whose child made progress
    assert d.action in (Action.DECOMPOSE, Action.SEARCH) and node.id in (1, 2)
    node, d = BAVT().expand(_tree([(0, None, "a"), (1, 0.8, "b"), (0, 0.1, "c")]), roomy)
    assert (node.id, d.action) == (2, Action.ANSWER)
    node, d = BAVT().expand(tree, QABudget(3, 500, 0, 400))
    assert (node.id, d.action) == (2, Action.BACKSTOP)  # no retrieval left: answer from the best node
    assert BAVT().decide(tree[2].trace, QABudget(3, 500, 0, 400)).action is Action.BACKSTOP


def test_bavt_extends_a_failed_answer_turn_instead_of_repeating_it() -> None:
    """A deterministic model asked the same prompt twice stalls twice: the run must not spend its caps on that."""

    def reply(trace: Trace, d: Directive) -> str:
        stalled = trace.steps and trace.steps[-1].action is Action.STALL
        if d.action is Action.BACKSTOP:
            return "<answer>Kell</answer>" if stalled else "<tool_call>more</tool_call>"  # no call left: a stall
        return f"<tool_call>q{trace.searches}</tool_call>"

    r = _run(Scripted(reply), BAVT(), tool_calls=1, tokens=500)
    assert r.reason == "answered" and [s.action for s in r.trace.steps][-2:] == [Action.STALL, Action.ANSWER]


@settings(max_examples=150, deadline=None)
@given(tool_calls=st.integers(0, 4), tokens=st.integers(1, 600), controller=st.sampled_from(list(CONTROLLERS)),
       seed=st.integers(0, 10_000))  # fmt: skip
def test_no_baseline_ever_exceeds_either_cap(tool_calls: int, tokens: int, controller: str, seed: int) -> None:
    steps: list[Step] = []

    async def go() -> QAResult:
        return await run_agent(QUESTION, model=FuzzAgentModel(seed), search=Index(empty=("q0",)),
                               controller=make_controller(controller), tool_calls=tool_calls, tokens=tokens,
                               on_step=lambda s, b: steps.append(s))  # fmt: skip

    r = anyio.run(go)
    assert r.tool_calls <= tool_calls and r.output_tokens <= tokens and r.reason != "over_allowance"
    assert r.tool_calls == sum(1 for s in steps if s.query is not None)
    assert r.output_tokens == sum(s.output_tokens for s in steps)
    assert all(s.query is None for s in steps if s.directive in (Action.VERIFY, Action.REASON))


def test_verify_and_reason_prompts_round_trip() -> None:
    trace = Trace(QUESTION)
    hit = Hit("p1", "Velmora Opera House", "The Velmora Opera House was designed by Kell.", 1.0)
    trace.steps += [
        Step(Action.SEARCH, Action.SEARCH, 30, "Plan: find the venue.", query="Glass Harbour venue", hits=(hit,)),
        Step(Action.REASON, Action.REASON, 20, "Notes: Kell designed it. Confidence: 0.6. Candidate: Kell",
             candidate="Kell", confidence=0.6),
        Step(Action.VERIFY, Action.VERIFY, 20, "Verdict: unsupported. Confidence: 0.4. Candidate: Kell",
             candidate="Kell", confidence=0.4, verdict=False),
        Step(Action.STALL, Action.SEARCH, 60, ""),
    ]  # fmt: skip
    trace.evidence[hit.id] = hit
    budget = QABudget(3, 500, 2, 370)
    for action, sample in ((Action.VERIFY, 0), (Action.REASON, 0), (Action.SEARCH, 2)):
        system, user = render_turn(trace, Directive(action, 40, show_budget=True, sample=sample), budget)
        back, d, b = read_turn(system.content, user.content, 40)
        assert d == Directive(action, 40, show_budget=True, sample=sample) and b == budget
        assert [s.action for s in back.steps] == [s.action for s in trace.steps]
        assert [(s.thought, s.candidate, s.confidence, s.verdict) for s in back.steps] == [
            (s.thought, s.candidate, s.confidence, s.verdict) for s in trace.steps
        ]
        assert back.evidence.keys() == trace.evidence.keys()
