"""Workflow generation end to end: the search as one budgeted run, held-out test problems, and a generated
workflow written as a program file that ``ontime run`` runs against serve-sim over the OpenAI API."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import pytest
from typer.testing import CliRunner

import runtime
from adapters.recorded_answers import AnswerBook, recorded_adapters
from adapters.sim_meta_llm import SimMetaLLM
from adapters.sim_server import SimServer, serve_in_thread
from planners.bayesflow import BayesFlowOptions
from planners.workflow_code import check
from runtime._generate import GenerationTask, Item, generate, load_task, program_file
from runtime.cli import app
from runtime.types import Adapter, LLMCall, RealClock, UsageError, VirtualClock
from tools.exams import load_tasks

if TYPE_CHECKING:
    from runtime.types import Batch, Message, Report

SLICE = Path(__file__).resolve().parent.parent / "examples" / "reflection"
SMALL = BayesFlowOptions(n=3, m=2, concurrency=3)


def _small(task: GenerationTask, steps: int = 2) -> GenerationTask:
    return replace(task, spec=replace(task.spec, max_steps=steps))


class _Seen(Adapter):
    """An adapter that keeps every prompt it is sent and lets ``inner`` answer it."""

    def __init__(self, inner: Adapter, prompts: list[str]) -> None:
        self.inner, self.prompts = inner, prompts

    def input_tokens(self, estimate: int, messages: tuple[Message, ...] | None) -> int:
        return self.inner.input_tokens(estimate, messages)

    async def run(self, batch: Batch, report: Report) -> None:
        self.prompts.append("\n".join(m.content for m in batch.messages or ()))
        await self.inner.run(batch, report)


def test_a_search_is_one_budgeted_run_that_never_sees_a_test_problem() -> None:
    task = _small(load_task("exam:aqua-rat-100", data_dir=SLICE, seed=1))
    prompts: list[str] = []
    inner = task.adapters
    task = replace(task, adapters=lambda clock: {m: _Seen(a, prompts) for m, a in inner(clock).items()})
    budget = 3.0
    found = anyio.run(lambda: generate(task, budget, 3600, options=SMALL, seed=1))
    assert found.run.cost <= budget and found.best is not None
    assert found.search.pool and all(check(w.source) is None for w in found.search.pool)
    assert found.meta.calls == found.search.meta_calls and 0 < found.meta.cost_pusd <= found.run.cost_pusd
    seen = "\n".join(prompts)
    assert any(it.text in seen for it in task.validation)
    assert not any(it.text in seen for it in task.test)  # the held-out split never reaches a model


def test_a_budget_that_runs_out_ends_the_search_with_the_best_so_far_and_never_more_spent() -> None:
    task = _small(load_task("exam:aqua-rat-100", data_dir=SLICE, seed=0), steps=5)
    budget = 0.4
    found = anyio.run(lambda: generate(task, budget, 3600, seed=0))
    assert found.search.stop == "over_budget"
    assert found.run.cost <= budget


def test_unknown_tasks_and_methods_are_usage_errors() -> None:
    with pytest.raises(UsageError, match="unknown task"):
        load_task("nope")
    with pytest.raises(UsageError, match="no exam"):
        load_task("exam:nope", data_dir=SLICE)
    task = load_task("exam:aqua-rat-100", data_dir=SLICE)
    with pytest.raises(UsageError, match="unknown method"):
        anyio.run(lambda: generate(task, 1.0, 60, method="beam"))  # type: ignore[arg-type]


def test_a_data_set_task_runs_on_the_simulated_executor_and_is_labelled_so() -> None:
    task = _small(load_task("gsm8k", seed=0), steps=1)
    assert task.simulated_executor and not task.deterministic and task.validation and task.test
    found = anyio.run(lambda: generate(task, 1.0, 3600, method="random", options=2, seed=0))
    assert found.run.cost <= 1.0 and found.search.pool


def _calls_in_flight_share_one_budget(budget: float, wait: bool) -> tuple[int, int, float]:
    """Eight concurrent calls whose worst cases together exceed the budget: (answered, refused, spent)."""
    task = load_task("exam:aqua-rat-100", data_dir=SLICE)
    clock = VirtualClock()
    prompt = task.validation[0].text
    model = next(iter(task.models))
    got = {"ok": 0, "refused": 0}

    async def program(problem: str) -> str:
        run = runtime.current_run()

        async def one() -> None:
            try:
                await run.call(LLMCall(messages=(prompt,), model=model, max_tokens=1000), wait=wait)
                got["ok"] += 1
            except runtime.OverBudgetError:
                got["refused"] += 1

        async with anyio.create_task_group() as tg:
            for _ in range(8):
                tg.start_soon(one)
        return "done"

    result = runtime.run(runtime.Program(program), budget, 600, input="x", models=task.models,
                         adapters=task.adapters(clock), clock=clock)  # fmt: skip
    return got["ok"], got["refused"], result.cost


def test_calls_that_wait_for_budget_are_served_in_turn_and_never_overspend() -> None:
    task = load_task("exam:aqua-rat-100", data_dir=SLICE)
    spec = task.models[next(iter(task.models))]
    worst = 1000 * spec["output_price_per_mtok"] / 1e6 + 2000 * spec["input_price_per_mtok"] / 1e6
    budget = 2.5 * worst  # two worst cases fit at a time; eight calls' realized costs fit in all
    ok, refused, spent = _calls_in_flight_share_one_budget(budget, wait=False)
    assert refused > 0 and spent <= budget
    ok, refused, spent = _calls_in_flight_share_one_budget(budget, wait=True)
    assert (ok, refused) == (8, 0) and spent <= budget


def test_generate_writes_a_program_that_ontime_run_runs_on_serve_sim_over_the_openai_api(tmp_path: Path) -> None:
    out = tmp_path / "wf.py"
    (exam,) = (t for t in load_tasks(SLICE) if t.exam == "aqua-rat-100")
    server = SimServer(None, answers=recorded_adapters(AnswerBook.of(exam), RealClock(speed=1000.0)))
    with serve_in_thread(server) as url:
        made = CliRunner().invoke(app, ["generate", "--task", "exam:aqua-rat-100", "--budget", "2", "--deadline",
                                        "3600", "--out", str(out), "--data-dir", str(SLICE), "--serve-url",
                                        f"{url}/v1", "--json"])  # fmt: skip
        assert made.exit_code == 0, made.output
        summary: dict[str, Any] = json.loads(made.output)
        assert summary["optimizer_cost_usd"] <= 2 and out.exists()
        program = runtime.load_program(out)
        assert program.example and program.models and all(m.endpoint for m in program.models.values())
        ran = CliRunner().invoke(app, ["run", str(out), "--budget", "1", "--deadline", "300", "--json"])
        assert ran.exit_code in (0, 1), ran.output
        result = json.loads(ran.output)
    assert result["success"] and result["answer"] and "Answer:" in result["answer"]
    assert 0 < result["cost"] <= 1
    assert server.record and all(r.status == "complete" for r in server.record)


def test_program_file_names_its_task_models_and_example() -> None:
    task = load_task("exam:aqua-rat-100", data_dir=SLICE)
    source = "async def workflow(problem: str) -> str:\n    # Step 1: Answer\n    return 'Answer: A'\n"
    text = program_file(source, task, models=task.served("http://127.0.0.1:9/v1"))
    program = runtime.Program.from_source(text)
    assert program.example == task.validation[0].text
    assert program.default_model == task.spec.default_model
    assert program.models is not None and set(program.models) == set(task.models)


def test_an_item_grades_what_the_workflow_answered() -> None:
    task = load_task("exam:aqua-rat-100", data_dir=SLICE)
    item: Item = task.validation[0]
    scores = [anyio.run(item.grade, f"Answer: {letter}") for letter in "ABCDE"]
    assert sorted(scores) == [0.0, 0.0, 0.0, 0.0, 1.0]


def test_a_real_meta_llm_endpoint_drives_the_search_on_the_real_clock(tmp_path: Path) -> None:
    """The meta-LLM behind the OpenAI API (serve-sim playing the simulated meta-LLM on loopback): the search's
    meta calls go through ontime's OpenAI adapter under the same budget."""
    server = SimServer(None, answers={"meta-llm": SimMetaLLM(RealClock(speed=1000.0))})
    with serve_in_thread(server) as url:
        meta = {"provider": "openai", "model": "meta-llm", "base_url": f"{url}/v1", "api_key": "serve-sim",
                "input_price_per_mtok": 3.0, "output_price_per_mtok": 15.0, "tokens_per_s": 60.0, "ttft_s": 1.0,
                "max_output_tokens": 4096}  # fmt: skip
        (tmp_path / "meta.json").write_text(json.dumps(meta))
        out = tmp_path / "wf.py"
        made = CliRunner().invoke(app, ["generate", "--task", "exam:aqua-rat-100", "--budget", "1", "--deadline",
                                        "120", "--method", "random", "--out", str(out), "--data-dir", str(SLICE),
                                        "--meta", str(tmp_path / "meta.json"), "--json"])  # fmt: skip
    assert made.exit_code == 0, made.output
    summary = json.loads(made.output)
    assert summary["meta_calls"] >= 1 and summary["optimizer_cost_usd"] <= 1 and out.exists()
    assert len(server.record) >= summary["meta_calls"]


def test_a_meta_file_that_is_not_a_model_entry_is_a_usage_error(tmp_path: Path) -> None:
    (tmp_path / "meta.json").write_text("[1, 2]")
    made = CliRunner().invoke(app, ["generate", "--task", "exam:aqua-rat-100", "--budget", "1", "--deadline", "60",
                                    "--data-dir", str(SLICE), "--meta", str(tmp_path / "meta.json")])  # fmt: skip
    assert made.exit_code == 2 and "JSON object" in made.output


def test_endpoint_executors_answer_the_search_over_http() -> None:
    (exam,) = (t for t in load_tasks(SLICE) if t.exam == "aqua-rat-100")
    server = SimServer(None, answers=recorded_adapters(AnswerBook.of(exam), RealClock(speed=1000.0)))
    with serve_in_thread(server) as url:
        block = exam.models_block(base_url=f"{url}/v1")
        task = _small(load_task("exam:aqua-rat-100", data_dir=SLICE, executors=block), steps=1)
        assert task.endpoints and task.models == block and task.served("ignored") == block
        found = anyio.run(lambda: generate(task, 1.0, 120, method="random", options=2, seed=0))
    assert found.run.cost <= 1.0 and found.search.pool
    assert {r.model for r in server.record} <= set(block) and len(server.record) >= len(task.validation)
    with pytest.raises(UsageError, match="endpoints"):
        load_task("exam:aqua-rat-100", data_dir=SLICE, executors=exam.models_block())
