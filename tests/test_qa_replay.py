"""Recorded search-agent turns (issue 17, "Replay of recorded real trajectories"): a recording made against
serve-sim over the OpenAI SDK replays every controller exactly as the simulated model runs it in process."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import pytest
from typer.testing import CliRunner

import runtime
from adapters.chat_agent import ChatAgentModel
from adapters.openai import OpenAIBackend
from adapters.replay_agent import ReplayModel, read_recording
from adapters.sim_agent import SimAgentModel
from adapters.sim_server import SimServer, serve_in_thread
from planners import ABLATIONS, CONTROLLERS, make_controller
from runtime import UsageError, evaluate_qa
from runtime._qa import run_agent
from runtime._qa_replay import record_qa
from runtime.cli import app
from tools.qa_data import load_qa, pool_corpus
from tools.retrieval import BM25Search

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    from tools.qa_data import QAExample

ROOT = Path(__file__).resolve().parent.parent
DATASET = ROOT / "examples" / "qa" / "questions.jsonl"
QUESTIONS = load_qa(DATASET, limit=3)
LADDER = [(1, 100), (2, 200)]
SEED = 5


@pytest.fixture(scope="module")
def served() -> Iterator[str]:
    """serve-sim's agent mode on loopback: the simulated model behind the OpenAI API."""
    wf = runtime.load_workflow(ROOT / "examples" / "chain.json")
    with serve_in_thread(SimServer(wf, speed=1000.0, agent=SimAgentModel(seed=SEED))) as url:
        yield url


def _record(url: str, out: Path, examples: Sequence[QAExample], ladder: Sequence[tuple[int, int]], *,
            controllers: Sequence[str] = (*CONTROLLERS, *ABLATIONS), explore: bool = False) -> None:  # fmt: skip
    async def go() -> None:
        backend = OpenAIBackend(api_key="secret-key-123", base_url=url + "/v1", timeout_s=5.0)
        try:
            await record_qa(examples, model=ChatAgentModel(backend, "sim-model"), out=out, model_id="sim-model",
                            dataset=DATASET.name, ladder=ladder, controllers=controllers, explore=explore,
                            search=BM25Search(pool_corpus(examples), cache_dir=None))  # fmt: skip
        finally:
            await backend.aclose()

    anyio.run(go)


@pytest.fixture(scope="module")
def recording(served: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("replay") / "rec.jsonl"
    _record(served, out, QUESTIONS, LADDER)  # every controller's own turns; exploration has its own test below
    return out


def _cells(rows: list[runtime.QACell]) -> list[dict[str, Any]]:
    return [{**r.to_dict(), "seconds": 0, "em": r.em_scores, "f1": r.f1_scores} for r in rows]


def test_replay_equals_the_simulated_model_in_process(recording: Path) -> None:
    """serve-sim's agent sees only what the prompt shows: the replay must match the in-process run exactly."""
    index = BM25Search(pool_corpus(QUESTIONS), cache_dir=None)
    names = [*CONTROLLERS, *ABLATIONS]
    replay, sim = ReplayModel(recording), SimAgentModel(seed=SEED)

    async def runs(model: runtime.AgentModel) -> list[tuple[str, int, int, str]]:
        out: list[tuple[str, int, int, str]] = []
        for tools, tokens in LADDER:
            for name in names:
                for ex in QUESTIONS:
                    r = await run_agent(ex.question, model=model, search=index, controller=make_controller(name),
                                        tool_calls=tools, tokens=tokens)  # fmt: skip
                    out.append((r.answer, r.tool_calls, r.output_tokens, r.reason))
        return out

    assert anyio.run(runs, replay) == anyio.run(runs, sim)
    kw: dict[str, Any] = {"controllers": names, "ladder": LADDER, "search": index, "keep_scores": True, "seed": SEED}
    assert _cells(evaluate_qa(QUESTIONS, model=replay, **kw)) == _cells(evaluate_qa(QUESTIONS, **kw))


def test_an_unrecorded_turn_fails_closed(recording: Path) -> None:
    replay = ReplayModel(recording)
    ex = QUESTIONS[0]
    index = BM25Search(pool_corpus(QUESTIONS), cache_dir=None)

    async def go(tools: int, tokens: int) -> runtime.QAResult:
        return await run_agent(ex.question, model=replay, search=index, controller=make_controller("voi"),
                               tool_calls=tools, tokens=tokens)  # fmt: skip

    with pytest.raises(UsageError, match=r"question 'In which city.*', step 1: .* never recorded"):
        anyio.run(go, 3, 500)  # a budget it was not recorded at: the budget shown differs
    with pytest.raises(UsageError, match=r"no finished turns for question .* at budget \(3,500\)"):
        evaluate_qa(QUESTIONS, model=replay, ladder=[(3, 500)], controllers=["search-o1"])
    missing = load_qa(DATASET)[5:6]
    with pytest.raises(UsageError, match="no finished turns for question"):
        evaluate_qa(missing, model=replay, ladder=LADDER, controllers=["search-o1"])


def test_exploration_covers_controllers_it_never_ran(served: str, tmp_path: Path) -> None:
    """Every directive kind at every reachable prefix: the full-allowance controllers replay without being run."""
    out = tmp_path / "explored.jsonl"
    one = QUESTIONS[:1]
    _record(served, out, one, [(1, 100)], controllers=(), explore=True)
    rec = read_recording(out)
    assert rec.header["actions"] == [None, "search", "decompose", "answer", "backstop", "verify", "reason"]
    kw: dict[str, Any] = {
        "controllers": ["search-o1", "bats"],
        "ladder": [(1, 100)],
        "keep_scores": True,
        "seed": SEED,
    }
    assert _cells(evaluate_qa(one, model=ReplayModel(rec), **kw)) == _cells(evaluate_qa(one, **kw))


def test_cli_records_and_replays_without_the_key(served: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REPLAY_TEST_KEY", "sk-do-not-write-me")
    out = tmp_path / "cli.jsonl"
    runner = CliRunner()
    args = ["qa-record", "--endpoint", served + "/v1", "--model", "sim-model", "--dataset", str(DATASET),
            "--limit", "2", "--budgets", "1,100", "--budgets", "2,200", "--api-key-env", "REPLAY_TEST_KEY",
            "--out", str(out)]  # fmt: skip
    done = runner.invoke(app, [*args, "--no-explore"])
    assert done.exit_code == 0, done.output
    assert "sk-do-not-write-me" not in out.read_text() and "calls" in done.output
    again = runner.invoke(app, [*args, "--no-explore"])
    assert again.exit_code == 2 and "exists" in again.output
    ev = ["qa-eval", "--dataset", str(DATASET), "--limit", "2", "--replay", str(out), "--json"]
    replayed = runner.invoke(app, ev)
    assert replayed.exit_code == 0, replayed.output
    sim = runner.invoke(app, ["qa-eval", "--dataset", str(DATASET), "--limit", "2", "--seed", str(SEED), "--json",
                              "--tool-calls", "1", "--tokens", "100"])  # fmt: skip
    by_cell = {(r["budget"], r["controller"], r["finalizer"]): r for r in json.loads(replayed.stdout)}
    assert {k[0] for k in by_cell} == {"(1,100)", "(2,200)"}  # the recording's budgets, not the default ladder
    for row in json.loads(sim.stdout):
        assert {**by_cell[(row["budget"], row["controller"], row["finalizer"])], "seconds": 0} == {**row, "seconds": 0}
    wider = runner.invoke(app, ["qa-eval", "--dataset", str(DATASET), "--limit", "3", "--replay", str(out)])
    assert wider.exit_code == 2 and "no finished turns for question" in wider.output


@pytest.mark.parametrize(
    ("rows", "problem"),
    [
        (["{oops"], "row 1: not JSON"),
        (['{"row": "turn"}'], "row 1: not a recording header"),
        (["HEADER", '{"row": "turn", "question": 3, "trace": []}'], "row 2: field 'question'"),
        (["HEADER", "", '{"row": "mystery"}'], "row 3: unknown row kind"),
        (["HEADER", "TURN", '{"row": "question", "question": "q", "budgets": [[1]]}'], "row 3: a budget"),
        ([], "empty"),
    ],
)
def test_malformed_recordings_are_usage_errors_naming_the_row(tmp_path: Path, rows: list[str], problem: str) -> None:
    header = {"row": "header", "format": "ontime-qa-recording", "version": 2, "model": "m", "questions": [],
              "budgets": []}  # fmt: skip
    turn: dict[str, Any] = {"row": "turn", "question": "q", "trace": [], "action": None, "show_budget": False,
                            "budget": None, "max_tokens": 10, "text": "<answer>x</answer>", "output_tokens": 3,
                            "latency_s": 0.1}  # fmt: skip
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(json.dumps(header) if r == "HEADER" else json.dumps(turn) if r == "TURN" else r
                              for r in rows))  # fmt: skip
    with pytest.raises(UsageError, match=problem):
        read_recording(path)
    bad = CliRunner().invoke(app, ["qa-eval", "--dataset", str(DATASET), "--replay", str(path)])
    assert bad.exit_code == 2 and "bad.jsonl" in bad.output


def test_a_turn_replays_cut_to_a_smaller_allowance() -> None:
    """Replay equals an endpoint that honours max_tokens: cut as the simulated model cuts, unknown past a cut."""
    from adapters.replay_agent import Recorded

    trace = runtime.Trace("q")
    d, b = runtime.Directive(None, 50), runtime.QABudget(1, 100, 1, 100)
    full = Recorded.of(trace, d, b, runtime.ModelTurn("<thought>t</thought><answer>x</answer>", 40), 0.1)
    assert full.replay(20) == runtime.ModelTurn("<thought>t</thought><answer>x</answer>", 40).cut(20)
    assert full.covers(500) and full.replay(500).output_tokens == 40  # it stopped by itself
    cut = replace(full, output_tokens=50)  # cut off at its allowance: what comes after is unknown
    assert cut.covers(50) and not cut.covers(51)


class _Breaks(runtime.AgentModel):
    """The simulated model behind an endpoint that fails for good after ``calls`` turns."""

    def __init__(self, calls: int) -> None:
        self.inner, self.left = SimAgentModel(seed=SEED), calls

    async def turn(self, trace: runtime.Trace, directive: runtime.Directive, budget: runtime.QABudget) -> Any:
        self.left -= 1
        if self.left < 0:
            raise runtime.ProviderUnavailableError("HTTP 503", provider="openai", status=503)
        return await self.inner.turn(trace, directive, budget)


def test_a_failing_endpoint_stops_the_recording_and_records_no_failed_state(tmp_path: Path) -> None:
    """A failed turn is a stalled step to the agent: no turn after it is recorded, and its question is unfinished."""
    out = tmp_path / "broken.jsonl"
    model, index = _Breaks(3), BM25Search(pool_corpus(QUESTIONS), cache_dir=None)
    with pytest.raises(runtime.ProviderUnavailableError, match="503"):
        anyio.run(lambda: record_qa(QUESTIONS, model=model, out=out, model_id="m", dataset="d", ladder=LADDER,
                                    controllers=["search-o1"], search=index))  # fmt: skip
    rec = read_recording(out)
    assert len(rec.turns) == 3 and not rec.finished
    assert all("model error" not in json.dumps(t.trace) for t in rec.turns.values())
    with pytest.raises(UsageError, match="exists"):
        anyio.run(lambda: record_qa(QUESTIONS, model=model, out=out, model_id="m", dataset="d", ladder=LADDER,
                                    controllers=["search-o1"], search=index))  # fmt: skip
