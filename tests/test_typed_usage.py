"""The public API as a user writes it, checked by mypy (strict, as part of ``.ci/run``) and run by pytest.

``assert_type`` fails the type check if a public signature drifts (an option that becomes ``Any``, a
result that becomes a dict); the ``type: ignore`` lines are misuses mypy must keep refusing.
"""

from __future__ import annotations

from typing import assert_type

import anyio
import pytest

import runtime
from tests.conftest import EXAMPLES
from tools.qa_data import Paragraph

CHAIN = EXAMPLES / "chain.json"


def test_run_and_its_result_are_typed() -> None:
    options: runtime.RunOptions = {"planner": "retry:small:2", "seed": 3, "cancel_siblings": False}
    result = runtime.run(CHAIN, 0.05, 60, **options)
    assert_type(result, runtime.RunResult)
    assert_type(result.reason, runtime.Reason | None)
    assert_type(result.detail, str | None)
    assert_type(result.outputs, dict[str, str | None])
    if not result.success:
        assert result.reason in set(runtime.Reason)
    with pytest.raises(runtime.UsageError):
        runtime.run(CHAIN, 0.05, 60, planner="retry:small:2", sede=3)  # type: ignore[call-overload]


def test_async_entry_points_are_typed() -> None:
    async def main() -> tuple[runtime.RunResult, list[runtime.Event]]:
        async with runtime.open_run(CHAIN, 0.05, 60, planner="retry:small:2") as r:
            assert_type(r, runtime.Run)
            first = await r.execute()
        seen: list[runtime.Event] = []
        async with runtime.stream(CHAIN, 0.05, 60, planner="retry:small:2") as events:
            async for event in events:
                assert_type(event, runtime.Event)
                seen.append(event)
        return first, seen

    result, seen = anyio.run(main)
    assert isinstance(seen[-1], runtime.RunFinished) and seen[-1].success == result.success


def test_evaluate_predict_and_answer_return_typed_reports() -> None:
    report = runtime.evaluate(CHAIN, 0.05, 60, planner="retry:small:2", runs=20, workers=1)
    assert_type(report, runtime.EvalReport)
    assert_type(report.ci95, tuple[float, float])
    assert_type(report.planner_ms.p50, float)
    prediction = runtime.predict(CHAIN, 0.05, 60, planner="retry:small:2", runs=100)
    assert_type(prediction, runtime.Prediction)
    corpus = [Paragraph("p1", "Quill", "The Quill phone is made by Ardent.")]
    answered = runtime.answer("Who makes the Quill phone?", corpus=corpus, tool_calls=1, tokens=100)
    assert_type(answered, runtime.QAResult)
    assert_type(answered.reason, runtime.StopReason)
    assert_type(answered.trace.steps[0].action, runtime.Action)
    assert 0 <= report.p_success <= 1 and 0 <= prediction.p_success <= 1


def test_a_planner_of_ones_own_is_typed_against_the_interface() -> None:
    class FirstModel(runtime.Planner):
        name = "first-model"
        in_thread = False

        def decide(self, snapshot: runtime.Snapshot) -> runtime.Decision:
            return runtime.Decision({i: runtime.Launch(model=0, k=1) for i in snapshot.ready})

    result = runtime.run(CHAIN, 0.05, 60, planner=FirstModel())
    assert result.planner == "first-model"
