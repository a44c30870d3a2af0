"""The public API: what ``runtime`` exports, and run / arun / stream behaving as documented."""

from __future__ import annotations

from typing import Any

import pytest
import structlog
from hypothesis import example, given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

import runtime
from tests.conftest import EXAMPLES, build, chain_spec
from tests.helpers import comparable

pytestmark = pytest.mark.anyio


def test_all_names_exist_and_nothing_private_is_exported() -> None:
    for name in runtime.__all__:
        assert hasattr(runtime, name), name
        assert not name.startswith("_")
    assert len(set(runtime.__all__)) == len(runtime.__all__)
    for name in ("run", "arun", "stream", "load_workflow", "RunResult", "OntimeError"):
        assert name in runtime.__all__


def test_every_error_descends_from_one_root() -> None:
    errors = [getattr(runtime, n) for n in runtime.__all__ if n.endswith("Error")]
    assert all(issubclass(e, runtime.OntimeError) for e in errors)
    assert issubclass(runtime.UsageError, ValueError)


_ANY_VALUE = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(max_size=6),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)


@settings(max_examples=200, deadline=None)
@given(
    name=st.sampled_from([*sorted(set(runtime.RunOptions.__annotations__) - {"journal"}), "nonsense"]), value=_ANY_VALUE
)
@example(name="adapters", value=[1])  # once an AttributeError: the clock was checked before the adapters' type
def test_any_value_of_any_run_option_runs_or_is_refused_with_a_typed_error(name: str, value: Any) -> None:
    options: dict[str, Any] = {name: value}
    try:
        result = runtime.run(EXAMPLES / "diamond.json", 0.01, 5, **options)
    except runtime.OntimeError:
        return
    assert result.cost <= 0.01


async def test_arun_inside_an_event_loop() -> None:
    result = await runtime.arun(EXAMPLES / "diamond.json", 1.0, 600, seed=2)
    assert result.success
    assert result.elapsed <= 600 and result.cost <= 1.0


async def test_stream_yields_the_run_in_order_and_ends_with_run_finished() -> None:
    wf = build(chain_spec(3, p=0.6))
    async with runtime.stream(wf, 1.0, 600, seed=5) as events:
        seen = [e async for e in events]
    assert isinstance(seen[0], runtime.RunStarted)
    assert isinstance(seen[-1], runtime.RunFinished)
    assert [e.t for e in seen] == sorted(e.t for e in seen)
    collected: list[runtime.Event] = []
    await runtime.arun(wf, 1.0, 600, seed=5, on_event=collected.append)
    assert comparable(seen) == comparable(collected)


async def test_stream_rejects_bad_input_with_the_typed_error() -> None:
    with pytest.raises(runtime.LimitError):
        async with runtime.stream(build(chain_spec(1)), -1.0, 10):
            pass


def test_the_library_logs_nothing_unless_asked() -> None:
    with capture_logs() as logs:
        runtime.run(build(chain_spec(2, p=1.0)), 1.0, 100)
    assert logs == []


def test_every_event_goes_to_structlog_when_asked() -> None:
    with capture_logs() as logs:
        result = runtime.run(build(chain_spec(2, p=1.0)), 1.0, 100, log=True)
    kinds = [entry["event"] for entry in logs]
    assert kinds[0] == "run_started" and kinds[-1] == "run_finished"
    assert {entry["run_id"] for entry in logs} == {result.run_id}
    assert "budget_settled" in kinds and "decision_made" in kinds
    done = [entry for entry in logs if entry["event"] == "subtask_completed"]
    assert done and all("output" not in e for e in done)  # the journal keeps outputs; a log line, their length
    assert [e["output_chars"] for e in done] == [len(result.outputs[e["subtask"]] or "") for e in done]


def test_structlog_logger_can_be_passed() -> None:
    lines: list[str] = []

    class Collect:
        def msg(self, message: str) -> None:
            lines.append(message)

        info = msg

    logger = structlog.wrap_logger(Collect(), processors=[structlog.processors.JSONRenderer()])
    runtime.run(build(chain_spec(1, p=1.0)), 1.0, 100, log=logger)
    assert lines and all(line.startswith("{") for line in lines)


def test_real_clock_with_speed_runs_the_same_executor() -> None:
    wf = build(chain_spec(2, p=1.0, tokens=100, tps=100, ttft=0.5))  # 1.5 s per attempt
    result = runtime.run(wf, 1.0, 100, clock="real", speed=50.0)
    assert result.success
    assert 3.0 <= result.elapsed < 4.5  # two 1.5 s attempts, played at 50x


def test_run_result_to_dict_is_json_ready() -> None:
    import json

    result = runtime.run(EXAMPLES / "chain.json", 1.0, 600)
    data = json.loads(json.dumps(result.to_dict()))
    assert data["success"] == result.success and data["cost_pusd"] == result.cost_pusd
