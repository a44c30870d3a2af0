"""The simulated search agent cannot leak the answer: nothing a controller reads is a function of gold labels."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

import runtime
from adapters.sim_agent import SimAgentModel
from planners import CONTROLLERS
from runtime.types import AgentModel, Directive, ModelTurn, QABudget, Trace
from tools.qa_data import QAExample, load_qa

if TYPE_CHECKING:
    from runtime._qa import QAResult

ROOT = Path(__file__).resolve().parent.parent
SMALL = load_qa(ROOT / "examples" / "qa" / "questions.jsonl")


def _swapped(examples: list[QAExample]) -> list[QAExample]:
    """Every gold label moved: each question takes the next one's answers, its supporting flags move to
    paragraphs that were not supporting (or to none), and the gold decomposition is dropped."""
    out = []
    for k, ex in enumerate(examples):
        other = examples[(k + 1) % len(examples)]
        unsupported = tuple(p.id for p in ex.paragraphs if p.id not in ex.supporting)
        out.append(replace(ex, answers=other.answers, supporting=unsupported[: len(ex.supporting)], hops=()))
    return out


def _controller_inputs(
    examples: list[QAExample], seed: int, model: AgentModel | None = None
) -> tuple[list[Any], list[float]]:
    """What every controller saw, turn by turn, on every question and budget (and the F1 scores)."""
    seen: list[Any] = []

    def keep(ex: QAExample, r: QAResult) -> None:
        steps = [(s.action, s.directive, s.output_tokens, s.thought, s.query, tuple(h.id for h in s.hits), s.answer,
                  s.candidate, s.confidence) for s in r.trace.steps]  # fmt: skip
        seen.append((ex.question, r.controller, steps, r.answer, r.tool_calls, r.output_tokens))

    cells = runtime.evaluate_qa(examples, controllers=list(CONTROLLERS), ladder=((1, 100), (3, 500)),
                                finalize=(True,), seed=seed, keep_scores=True, on_result=keep,
                                model=model)  # fmt: skip
    return seen, [x for c in cells for x in c.f1_scores]


def _check(examples: list[QAExample], seed: int, leak: type[_Leaky] | None = None) -> None:
    swapped = _swapped(examples)
    truth, f1_true = _controller_inputs(examples, seed, None if leak is None else leak(examples, seed))
    fake, f1_fake = _controller_inputs(swapped, seed, None if leak is None else leak(swapped, seed))
    assert f1_true != f1_fake  # the swap moved the gold labels the scores are computed from ...
    assert truth == fake  # ... and nothing any controller read, nor any answer, moved with them
    assert any(s[3] and "Confidence:" in s[3] for row in truth for s in row[2])  # the critic signal was there


class _Leaky(AgentModel):
    """The simulated model with a leak: it is given the gold answers and puts one into its thought now and then."""

    def __init__(self, examples: list[QAExample], seed: int) -> None:
        self.inner, self.gold = SimAgentModel(seed=seed), {ex.question: ex.answers[0] for ex in examples}

    async def turn(self, trace: Trace, directive: Directive, budget: QABudget) -> ModelTurn:
        turn = await self.inner.turn(trace, directive, budget)
        if len(trace.steps) == 1 and len(trace.question) % 3 == 0:  # a third of the questions, once
            return ModelTurn(turn.text.replace("<thought>", f"<thought>Perhaps {self.gold[trace.question]}. ", 1),
                             turn.output_tokens)  # fmt: skip
        return turn


@pytest.mark.parametrize("seed", [0, 7])
def test_swapping_gold_labels_changes_no_controller_input(seed: int) -> None:
    _check(SMALL, seed)


def test_the_swap_test_catches_a_model_that_sees_gold() -> None:
    with pytest.raises(AssertionError):
        _check(SMALL, 0, _Leaky)


@pytest.mark.skipif(not os.environ.get("ONTIME_DATA_DIR"), reason="set ONTIME_DATA_DIR for the real data sets")
@pytest.mark.parametrize("name", ["hotpotqa_dev500.jsonl", "musique_100.jsonl", "2wikimultihopqa_82.jsonl"])
def test_swapping_gold_labels_changes_no_controller_input_on_real_data(name: str) -> None:
    _check(load_qa(Path(os.environ["ONTIME_DATA_DIR"]) / "qa" / name, limit=40), seed=0)
