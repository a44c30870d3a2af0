"""``eval`` and ``predict`` on Ray (``--ray``): the same numbers as processes and threads, on one local Ray
instance started once for the file; a bad address or a missing Ray is a typed error before anything runs."""

from __future__ import annotations

import dataclasses
import json
import sys
from typing import TYPE_CHECKING, Any

import pytest
from typer.testing import CliRunner

import runtime
from runtime._ray import ray_session
from runtime.cli import app
from tests.conftest import EXAMPLES

if TYPE_CHECKING:
    from collections.abc import Iterator

CHAIN = str(EXAMPLES / "chain.json")
# A planner without numba kernels: Ray workers would each compile MCP's on a fresh machine (a minute or more).
RETRY = "retry:small:2"
BUDGET, DEADLINE = 0.015, 60.0  # tight: some runs fail (for budget, for time), so the numbers say something


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    """One local instance for the file: ``ray="local"`` in the tests below uses it and leaves it running."""
    ray = pytest.importorskip("ray")
    with ray_session("local", 2):
        assert ray.is_initialized()
        yield
    assert not ray.is_initialized()  # stopped, since the session started it


def numbers(report: Any) -> dict[str, Any]:
    """All fields but wall times (the planner's decision times, how long a prediction took)."""
    return {k: v for k, v in dataclasses.asdict(report).items() if k not in ("planner_ms", "wall_s")}


def test_eval_on_ray_gives_the_numbers_of_two_processes(local_ray: None) -> None:
    wf = runtime.load_workflow(CHAIN)
    done: list[int] = []
    on_ray = runtime.evaluate(wf, BUDGET, DEADLINE, runs=40, seed=3, ray="local", progress=done.append, planner=RETRY)
    in_processes = runtime.evaluate(wf, BUDGET, DEADLINE, runs=40, seed=3, workers=2, planner=RETRY)
    assert numbers(on_ray) == numbers(in_processes) and 0 < on_ray.p_success < 1
    assert sum(done) == 40 and len(done) > 1  # progress as chunks arrive
    assert on_ray.planner_ms.decisions == in_processes.planner_ms.decisions


def test_predict_on_ray_gives_the_numbers_of_threads(local_ray: None) -> None:
    wf = runtime.load_workflow(CHAIN)
    on_ray = runtime.predict(wf, BUDGET, DEADLINE, runs=40, seed=1, ray="local", planner=RETRY)
    in_threads = runtime.predict(wf, BUDGET, DEADLINE, runs=40, seed=1, workers=2, planner=RETRY)
    assert on_ray.method == in_threads.method == "kernel"
    assert numbers(on_ray) == numbers(in_threads) and 0 < on_ray.p_success < 1


def test_eval_json_on_ray(local_ray: None) -> None:
    result = CliRunner().invoke(
        app, ["eval", CHAIN, "-b", "0.05", "-d", "300", "-n", "20", "-p", RETRY, "--ray", "local", "--json"]
    )
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["runs"] == 20


@pytest.mark.parametrize("address", ["no address", "localhost:0", "127.0.0.1:1", ""])
def test_a_bad_address_is_a_usage_error_before_any_run(address: str) -> None:
    ran: list[int] = []
    with pytest.raises(runtime.UsageError, match=r"(?i)ray"):
        runtime.evaluate(CHAIN, BUDGET, DEADLINE, runs=5, ray=address, progress=ran.append)
    with pytest.raises(runtime.UsageError, match=r"(?i)ray"):
        runtime.predict(CHAIN, BUDGET, DEADLINE, runs=5, ray=address, progress=ran.append)
    assert ran == []


def test_a_missing_ray_says_to_install_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    with pytest.raises(runtime.UsageError, match=r"ontime\[ray\]"):
        runtime.evaluate(CHAIN, BUDGET, DEADLINE, runs=5, ray="local")
    result = CliRunner().invoke(app, ["predict", CHAIN, "-b", "0.05", "-d", "300", "--ray", "local"])
    assert result.exit_code != 0 and "ontime[ray]" in result.stderr


def test_an_interrupt_cancels_the_ray_tasks(local_ray: None, monkeypatch: pytest.MonkeyPatch) -> None:
    import ray

    cancelled: list[Any] = []
    cancel = ray.cancel

    def spy(ref: Any, **kw: Any) -> None:
        cancelled.append(ref)
        cancel(ref, **kw)

    monkeypatch.setattr(ray, "cancel", spy)

    def interrupt(_done: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):  # at the first of 80 chunks of 50 runs
        runtime.evaluate(CHAIN, BUDGET, DEADLINE, runs=4000, ray="local", progress=interrupt, planner=RETRY)
    assert len(cancelled) == 80  # the one taken (a no-op) and the 79 left
    with pytest.raises((ray.exceptions.TaskCancelledError, ray.exceptions.WorkerCrashedError)):
        ray.get(cancelled[-1], timeout=10)
