"""The search agent: caps that cannot be exceeded, the VOI controller's guards, the finalizer's abstentions."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

import runtime
from adapters.sim_agent import SimAgentModel
from planners import ABLATIONS, CONTROLLERS, make_controller
from planners.finalizer import finalize
from planners.voi import VOIController
from runtime import AgentModel, Hit, ModelTurn, QAController, evaluate_qa
from runtime._qa import run_agent
from runtime.cli import app
from runtime.types import Action, Directive, QABudget, Step, Trace, parse_turn
from runtime.types.answers import CHOICE, DATE, YESNO, choice_options, exact_match, f1, question_form
from tests.helpers import FuzzAgentModel
from tools.qa_data import load_qa, pool_corpus, read_corpus
from tools.retrieval import BM25Search

ROOT = Path(__file__).resolve().parent.parent
QUESTIONS = load_qa(ROOT / "examples" / "qa" / "questions.jsonl")
INDEX = BM25Search(pool_corpus(QUESTIONS), cache_dir=None)


def test_turns_parse_and_malformed_ones_have_no_action() -> None:
    p = parse_turn("<thought>need more. Candidate: Kell</thought>\n<tool_call>architect Velmora Opera</tool_call>")
    assert (p.query, p.answer, p.candidate) == ("architect Velmora Opera", None, "Kell")
    assert parse_turn("<thought>done</thought><answer> Kell </answer>").answer == "Kell"
    cut = parse_turn("<thought>I should search for the archi")
    assert cut.query is None and cut.answer is None
    both = parse_turn("<tool_call>x</tool_call><answer>y</answer>")
    assert both.answer == "y" and both.query is None


class Greedy(QAController):
    """A controller that breaks its contract: it always asks for far more tokens than are left."""

    name = "greedy"

    def decide(self, trace: Trace, budget: QABudget) -> Directive:
        return Directive(None, 10_000)


@settings(max_examples=150, deadline=None)
@given(
    tool_calls=st.integers(0, 4),
    tokens=st.integers(1, 600),
    controller=st.sampled_from([*CONTROLLERS, *ABLATIONS, "greedy"]),
    seed=st.integers(0, 10_000),
    fuzz=st.booleans(),
)
def test_no_run_ever_exceeds_either_cap(tool_calls: int, tokens: int, controller: str, seed: int, fuzz: bool) -> None:
    ex = QUESTIONS[seed % len(QUESTIONS)]
    model: AgentModel = FuzzAgentModel(seed) if fuzz else SimAgentModel(seed=seed)
    steps: list[tuple[Step, QABudget]] = []
    ctl = Greedy() if controller == "greedy" else make_controller(controller)

    async def go() -> runtime.QAResult:
        return await run_agent(ex.question, model=model, search=INDEX, controller=ctl,
                               tool_calls=tool_calls, tokens=tokens,
                               on_step=lambda s, b: steps.append((s, b)))  # fmt: skip

    r = anyio.run(go)
    assert r.tool_calls <= tool_calls and r.output_tokens <= tokens
    assert r.reason != "over_allowance"  # both models honour the max_tokens they are sent: the agent sent its allowance
    assert r.tool_calls == sum(1 for s, _ in steps if s.query is not None)
    assert r.output_tokens == sum(s.output_tokens for s, _ in steps)
    assert all(b.tool_calls_left >= 0 and b.tokens_left >= 0 for _, b in steps)


class Overrunning(AgentModel):
    """An endpoint that ignores ``max_tokens``: it answers at three times the allowance, and says so."""

    async def turn(self, trace: Trace, directive: Directive, budget: QABudget) -> ModelTurn:
        return ModelTurn("<answer>Kell</answer>", 3 * directive.max_tokens)


def test_a_model_over_its_allowance_is_caught_not_clamped() -> None:
    """Issue 17 item 4: usage was clamped to the allowance twice, so the over-cap audit could never fire."""
    ex = QUESTIONS[0]

    async def go() -> runtime.QAResult:
        return await run_agent(ex.question, model=Overrunning(), search=INDEX, controller=make_controller("voi"),
                               tool_calls=2, tokens=300)  # fmt: skip

    r = anyio.run(go)
    assert r.reason == "over_allowance" and r.answer == ""  # its first turn, at 3x the allowance: no answer taken
    assert r.output_tokens == r.trace.steps[-1].output_tokens > 0  # recorded as reported


def test_serve_sim_ignoring_max_tokens_is_a_cap_violation_scored_zero() -> None:
    """The cap audit catches a real endpoint (the OpenAI SDK against serve-sim) that ignores max_tokens."""
    from adapters.chat_agent import ChatAgentModel
    from adapters.openai import OpenAIBackend
    from adapters.sim_server import SimServer, serve_in_thread

    wf = runtime.load_workflow(ROOT / "examples" / "chain.json")
    results: dict[bool, list[runtime.QAResult]] = {}
    for ignore in (False, True):
        server = SimServer(wf, speed=50.0, agent=SimAgentModel(seed=3), ignore_max_tokens=ignore)

        async def go(url: str) -> list[runtime.QAResult]:
            backend = OpenAIBackend(api_key="k", base_url=url + "/v1", timeout_s=5.0)
            try:
                return [await run_agent(ex.question, model=ChatAgentModel(backend, "gpt-4o-mini"), search=INDEX,
                                        controller=make_controller("search-o1"), tool_calls=2, tokens=120)
                        for ex in QUESTIONS]  # fmt: skip
            finally:
                await backend.aclose()

        with serve_in_thread(server) as url:
            results[ignore] = anyio.run(go, url)
    assert all(r.output_tokens <= 120 and r.reason != "over_allowance" for r in results[False])
    caught = [r for r in results[True] if r.reason == "over_allowance"]
    assert caught
    for r in caught:  # the last turn reported more than it was allowed, and was recorded as reported
        last = r.trace.steps[-1]
        said = re.fullmatch(r"(\d+) output tokens against an allowance of (\d+)", last.thought)
        assert said is not None and int(said[1]) == last.output_tokens > int(said[2])
        assert int(said[2]) <= 120 - sum(s.output_tokens for s in r.trace.steps[:-1])


def _trace(question: str, searches: int = 0, candidate: str | None = None, hits: tuple[Hit, ...] = ()) -> Trace:
    t = Trace(question)
    for k in range(searches):
        t.steps.append(
            Step(Action.SEARCH, Action.SEARCH, 30, query=f"q{k}", hits=hits if k == 0 else (), candidate=candidate)
        )
    for h in hits:
        t.evidence[h.id] = h
    return t


def test_voi_guards() -> None:
    voi = VOIController()
    roomy = QABudget(3, 500, 3, 500)
    compositional = "Who designed the building where The Glass Harbour was first performed?"
    # minimum search: no answer before a search, and two on a compositional question
    assert voi.decide(_trace(compositional), roomy).action in (Action.SEARCH, Action.DECOMPOSE)
    hit = Hit("h", "Marta Oresund", "Marta Oresund designed the Velmora Opera House.", 3.0)
    one = _trace(compositional, 1, "Marta Oresund", (hit,))
    assert voi.scores(one, roomy)[Action.ANSWER] == 0.0
    assert voi.scores(_trace(compositional, 2, "Marta Oresund", (hit,)), roomy)[Action.ANSWER] > 0.0
    # factoid-like questions are never decomposed
    assert voi.scores(_trace("When was Kell founded?", 1), roomy)[Action.DECOMPOSE] == 0.0
    # the backstop: no tool call left, or no room for a search turn and an answer after it
    assert voi.decide(_trace(compositional, 1), QABudget(3, 500, 0, 400)).action == Action.BACKSTOP
    assert voi.decide(_trace(compositional, 1), QABudget(3, 500, 2, 60)).action == Action.BACKSTOP
    # allowances never exceed what is left
    assert voi.decide(_trace(compositional), QABudget(1, 100, 1, 75)).max_tokens <= 75 - 30
    # each ablation removes one component
    assert {make_controller(a).name for a in ABLATIONS} == set(ABLATIONS)
    full = voi.scores(one, roomy)
    assert VOIController(guards=False).scores(one, roomy)[Action.ANSWER] > full[Action.ANSWER]


def test_voi_aims_at_an_open_bridge_but_not_after_a_stalled_search() -> None:
    voi = VOIController()
    roomy = QABudget(3, 500, 2, 440)
    compositional = "Who designed the building where The Glass Harbour was first performed?"
    first_hop = Hit("p", "The Glass Harbour", "The Glass Harbour premiered at the Velmora Opera House.", 3.0)
    # the first hop was found and nothing answers the question yet: aim at the bridge entity
    opened = _trace(compositional, 1, None, (first_hop,))
    assert voi.decide(opened, roomy).action == Action.DECOMPOSE
    # the same trace on a factoid question: no bridge to open, so another plain search
    assert voi.decide(_trace("When was Kell founded?", 1, None, (first_hop,)), roomy).action == Action.SEARCH
    # a second search that found nothing new leaves no open bridge: Decompose is worth less than above
    stalled = _trace(compositional, 2, None, (first_hop,))
    assert stalled.new_hits_last() == 0
    assert voi.scores(stalled, roomy)[Action.DECOMPOSE] < voi.scores(opened, roomy)[Action.DECOMPOSE]


def test_question_forms() -> None:
    assert question_form("Was the Kell Bridge completed before 1880?") == YESNO
    assert question_form("Which river is longer, the Vess or the Tarn?") == CHOICE
    assert choice_options("Who was born first, Ann Ro or Bo Lin?") == ("Ann Ro", "Bo Lin")
    assert question_form("When did Ilya Zorvan die?") == DATE
    assert exact_match("the Vess", ["Vess"]) == 1.0 and f1("Ada Brink", ["Ada Brink"]) == 1.0
    assert f1("yes", ["no"]) == 0.0


def test_the_finalizer_abstains_on_comparisons_and_decomposed_traces() -> None:
    comparative = _trace("Which is older, the one designed by Marta Oresund?", 1, "Kell Bridge")
    comparative.steps.append(Step(Action.ANSWER, Action.ANSWER, 10, answer="The answer is Kell Bridge"))
    assert not finalize(comparative, "The answer is Kell Bridge").accepted
    hit = Hit("h", "Velmora Opera House", "The Velmora Opera House was designed by Marta Oresund.", 2.0)
    decomposed = _trace("Who designed the building where The Glass Harbour was first performed?", 1, hits=(hit,))
    decomposed.steps.append(Step(Action.DECOMPOSE, Action.DECOMPOSE, 40, query="building Glass Harbour"))
    decomposed.steps.append(Step(Action.ANSWER, Action.ANSWER, 10, answer="The answer is Marta Oresund"))
    fin = finalize(decomposed, "The answer is Marta Oresund")
    assert not fin.accepted and fin.branch == "decomposed"


def test_answer_api_and_evaluation_on_the_example_set() -> None:
    r = runtime.answer(QUESTIONS[3].question, corpus=ROOT / "examples" / "qa" / "corpus.jsonl",
                       tool_calls=3, tokens=500)  # fmt: skip
    assert r.tool_calls <= 3 and r.output_tokens <= 500 and r.reason in ("answered", "budget", "turns")
    rows = evaluate_qa(QUESTIONS, controllers=["voi", "search-o1"], ladder=[(1, 100), (3, 500)], search=INDEX)
    assert len(rows) == 2 * 2 * 2 and all(row.cap_violations == 0 for row in rows)
    assert all(row.em_lo <= row.em <= row.em_hi for row in rows)
    with pytest.raises(runtime.UsageError, match="unknown controller"):
        make_controller("magic")


def test_qa_cli(tmp_path: Path) -> None:
    runner = CliRunner()
    corpus = str(ROOT / "examples" / "qa" / "corpus.jsonl")
    questions = str(ROOT / "examples" / "qa" / "questions.jsonl")
    out = runner.invoke(app, ["qa", QUESTIONS[0].question, "--corpus", corpus, "--json"])
    assert out.exit_code == 0, out.output
    data = json.loads(out.stdout)
    assert data["tool_calls"] <= 3 and data["output_tokens"] <= 500 and data["steps"]
    ev = runner.invoke(app, ["qa-eval", "--dataset", questions, "--tool-calls", "1", "--tokens", "100",
                             "--controllers", "voi", "--json"])  # fmt: skip
    assert ev.exit_code == 0, ev.output
    assert {r["controller"] for r in json.loads(ev.stdout)} == {"voi"}
    bad = runner.invoke(app, ["qa", "x", "--corpus", str(tmp_path / "missing.jsonl")])
    assert bad.exit_code == 2 and "cannot read" in bad.output


def test_the_same_agent_runs_through_the_openai_sdk_against_serve_sim() -> None:
    """serve-sim's agent mode answers ChatAgentModel's prompts with the same simulated model: same results."""
    from adapters.chat_agent import ChatAgentModel
    from adapters.openai import OpenAIBackend
    from adapters.resilience import Resilient, RetryPolicy
    from adapters.sim_server import Faults, SimServer, serve_in_thread

    wf = runtime.load_workflow(ROOT / "examples" / "chain.json")
    clean = SimServer(wf, speed=50.0, agent=SimAgentModel(seed=3))
    faulty = SimServer(wf, speed=50.0, agent=SimAgentModel(seed=3), faults=Faults.every_kind(0.2, 0.01))
    local = SimAgentModel(seed=3)

    async def go(url: str, faults: bool) -> None:
        inner = OpenAIBackend(api_key="k", base_url=url + "/v1", timeout_s=0.5)
        backend = Resilient(inner, retry=RetryPolicy(attempts=4, initial_s=0.01, max_s=0.05))
        try:
            for ex in QUESTIONS:
                for name in ("voi", "bavt", "bats", "search-o1"):
                    kw: dict[str, Any] = {
                        "search": INDEX,
                        "controller": make_controller(name),
                        "tool_calls": 2,
                        "tokens": 300,
                    }
                    http = await run_agent(ex.question, model=ChatAgentModel(backend, "gpt-4o-mini"), **kw)
                    assert http.tool_calls <= 2 and http.output_tokens <= 300
                    if not faults:
                        here = await run_agent(ex.question, model=local, **kw)
                        assert (http.answer, http.tool_calls, http.output_tokens) == (
                            here.answer,
                            here.tool_calls,
                            here.output_tokens,
                        )
        finally:
            await backend.aclose()

    with serve_in_thread(clean) as url:
        anyio.run(go, url, False)
    with serve_in_thread(faulty) as url:
        anyio.run(go, url, True)
    assert {r.subtask for r in clean.record} == {"qa-agent"}
    assert any(r.status != "complete" for r in faulty.record)


def test_serve_sim_checks_the_key_of_agent_turns_too() -> None:
    import httpx

    from adapters.chat import SUBTASK_HEADER
    from adapters.chat_agent import QA_TAG
    from adapters.sim_server import SimServer, serve_in_thread

    wf = runtime.load_workflow(ROOT / "examples" / "chain.json")
    server = SimServer(wf, api_key="right", agent=SimAgentModel())
    body = {"model": "m", "max_tokens": 50, "messages": [{"role": "user", "content": QUESTIONS[0].question}]}
    with serve_in_thread(server) as url:
        r = httpx.post(url + "/v1/chat/completions", json=body,
                       headers={SUBTASK_HEADER: QA_TAG, "authorization": "Bearer wrong"})  # fmt: skip
    assert r.status_code == 401 and server.record == []


def test_answer_emits_typed_events(tmp_path: Path) -> None:
    events: list[runtime.Event] = []
    r = runtime.answer(QUESTIONS[0].question, corpus=ROOT / "examples" / "qa" / "corpus.jsonl",
                       on_event=events.append, journal=tmp_path / "qa.jsonl")  # fmt: skip
    kinds = [e.kind for e in events]
    assert (
        kinds[0] == "agent_started"
        and kinds[-1] == "agent_finished"
        and kinds.count("agent_step") == len(r.trace.steps)
    )
    assert len((tmp_path / "qa.jsonl").read_text().splitlines()) == len(events)


def test_ontime_qa_through_ontime_serve_sim_matches_the_in_process_answer() -> None:
    import signal
    import socket
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    corpus = str(ROOT / "examples" / "qa" / "corpus.jsonl")
    cli = [sys.executable, "-m", "runtime.cli"]
    spec = str(ROOT / "examples" / "chain.json")
    srv = subprocess.Popen([*cli, "serve-sim", spec, "--port", str(port), "--qa-agent", "--quiet"],
                           stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert srv.stderr is not None and "serve-sim" in srv.stderr.readline()
        ask = [*cli, "qa", QUESTIONS[1].question, "--corpus", corpus, "--json"]
        remote = subprocess.run([*ask, "--endpoint", f"http://127.0.0.1:{port}/v1"], capture_output=True, text=True,
                                timeout=120)  # fmt: skip
        local = subprocess.run(ask, capture_output=True, text=True, timeout=120)
    finally:
        srv.send_signal(signal.SIGINT)
        try:
            srv.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            srv.kill()
            srv.communicate()
    assert remote.returncode == 0 and local.returncode == 0, remote.stderr + local.stderr
    a, b = json.loads(remote.stdout), json.loads(local.stdout)
    assert (a["answer"], a["tool_calls"], a["output_tokens"]) == (b["answer"], b["tool_calls"], b["output_tokens"])


@pytest.mark.parametrize("content", [b'{"id": "\xff"}\n', b"[" * 100_000 + b"\n", b'{"id": 1' + b"0" * 5000 + b"}\n"])
@pytest.mark.parametrize("reader", [load_qa, read_corpus])
def test_unreadable_qa_files_are_usage_errors(tmp_path: Path, reader: Any, content: bytes) -> None:
    """Issue 16: a non-UTF-8, too deeply nested or too long-numbered file raised an untyped error."""
    path = tmp_path / "rows.jsonl"
    path.write_bytes(content)
    with pytest.raises(runtime.UsageError, match=r"rows\.jsonl"):
        reader(path)


class _SlowSearch(runtime.SearchTool):
    async def search(self, query: str, top_k: int = 5) -> list[Hit]:
        await anyio.sleep(2)
        return await INDEX.search(query, top_k)


class _FailingSearch(runtime.SearchTool):
    async def search(self, query: str, top_k: int = 5) -> list[Hit]:
        raise runtime.ProviderUnavailableError("search endpoint: HTTP 503", provider="search")


@pytest.mark.anyio
async def test_a_search_is_bounded_by_the_deadline() -> None:
    """Issue 16 (review): a 2 s search made an answer with a 0.5 s deadline take 2 s."""
    start = time.monotonic()
    r = await runtime.aanswer(QUESTIONS[0].question, search=_SlowSearch(), deadline=0.5,
                              controller="search-then-answer")  # fmt: skip
    assert time.monotonic() - start < 1.5 and r.reason == "deadline"


@pytest.mark.anyio
async def test_a_failing_search_is_a_spent_call_not_the_end_of_the_answer() -> None:
    """Issue 16 (review): one ProviderUnavailableError from the search tool aborted the whole answer."""
    r = await runtime.aanswer(QUESTIONS[0].question, search=_FailingSearch(), tool_calls=2,
                              controller="search-then-answer")  # fmt: skip
    failed = [s for s in r.trace.steps if s.thought.startswith("search failed")]
    assert failed and r.tool_calls <= 2
