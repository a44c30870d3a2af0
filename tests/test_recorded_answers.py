"""Recorded exam answers (issue 19): the exams load, split 1:4 and score; the adapter replays each real model's
answers and tokens, reconsiders and verifies as the contract says, refuses what it cannot tell; serve-sim serves it.

Every test runs on the slice shipped in ``examples/reflection``, and also on the shared data when
``ONTIME_DATA_DIR`` is set.
"""

from __future__ import annotations

import csv
import dataclasses
import os
import random
from pathlib import Path

import anyio
import openai
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

import runtime
from adapters.chat import input_token_bound
from adapters.recorded_answers import MIN_RETRIES, UNKNOWN_REPLY, AnswerBook, RecordedAnswers, recorded_adapters
from adapters.sim_server import SimServer, serve_in_thread
from runtime.cli import app
from runtime.types import Batch, Finish, Message, RealClock, SampleEnd, UsageError, VirtualClock
from tools.exams import (
    TOKENS_PER_S,
    TTFT_S,
    ExamQuestion,
    ExamTask,
    attempts_file,
    find_data_dir,
    load_exams,
    load_tasks,
    per_question_cost,
    render,
    score,
    split,
)
from tools.reflection_data import Attempt

ROOT = Path(__file__).resolve().parent.parent
SLICE = ROOT / "examples" / "reflection"
DATA = os.environ.get("ONTIME_DATA_DIR")
DIRS = [SLICE] + ([Path(DATA) / "reflection"] if DATA else [])


@pytest.fixture(scope="module", params=DIRS, ids=lambda d: "shared" if d != SLICE else "slice")
def data_dir(request: pytest.FixtureRequest) -> Path:
    return Path(request.param)


@pytest.fixture(scope="module")
def tasks(data_dir: Path) -> list[ExamTask]:
    return load_tasks(data_dir)


@pytest.fixture(scope="module")
def task(tasks: list[ExamTask]) -> ExamTask:
    return next(t for t in tasks if t.exam == "aqua-rat-100")


def _ask(adapter: RecordedAnswers, prompt: str, *, k: int = 1, max_tokens: int = 4096) -> list[SampleEnd]:
    """Run one batch on a fresh virtual clock; the ends in index order."""
    messages = (Message("system", "You are a careful test taker."), Message("user", prompt))
    batch = Batch(id=1, subtask=0, tag="t", model=0, k=k, max_tokens=max_tokens,
                  input_tokens=adapter.input_tokens(0, messages), messages=messages)  # fmt: skip
    ends: list[SampleEnd] = []

    async def main() -> None:
        with adapter.clock.participate():
            await adapter.run(batch, ends.append)

    anyio.run(main)
    return sorted(ends, key=lambda e: e.index)


def _adapter(task: ExamTask, model: str, **kw: float) -> RecordedAnswers:
    return RecordedAnswers(AnswerBook.of(task), model, clock=VirtualClock(), **kw)  # type: ignore[arg-type]


# -- exams: loading, split, render, score ---------------------------------------------------------------------


def test_every_exam_loads_whole_and_every_model_answered_every_question(tasks: list[ExamTask]) -> None:
    assert {t.exam for t in tasks} >= {"aqua-rat-100", "arc-challenge-100"}
    for t in tasks:
        assert len(t.questions) == 100 and len({q.id for q in t.questions}) == 100
        assert all(q.answer in q.letters and q.letters in ("ABCD", "ABCDE") for q in t.questions)
        assert len(t.models) in (3, 9)  # the slice holds three of the nine models
        firsts = {(a.model, a.problem) for a in t.attempts if a.attempt == 1}
        assert firsts == {(m, q.id) for m in t.models for q in t.questions}
        assert not {a.agent for a in t.attempts} & {"solution", "composite", "unredacted"}


def test_a_run_of_the_models_block_answers_through_the_adapter_and_pays_the_recorded_tokens(task: ExamTask) -> None:
    """The block's models are accepted with ``adapters=``, which replaces the built-in simulator for them."""
    block = task.models_block()
    assert block["gpt-4"]["input_price_per_mtok"] == 30.0 and block["gpt-4"]["output_price_per_mtok"] == 60.0
    assert block["gpt-4"]["provider"] == "sim" and block["gpt-4"]["tokens_per_s"] == TOKENS_PER_S
    served = task.models_block(base_url="http://127.0.0.1:1/v1")
    assert served["gpt-4"]["provider"] == "openai" and served["gpt-4"]["model"] == "gpt-4"
    book = AnswerBook.of(task)
    for q in task.questions[:4]:
        clock = VirtualClock()
        first = book.first("gpt-4", q)
        assert first is not None
        spec = {"name": "exam", "models": {"gpt-4": block["gpt-4"]}, "subtasks": [{
            "id": "q", "input_tokens": 1000, "prompt": render(q), "verifier": {"regex": f"Answer: {q.answer}$"},
            "profiles": {"gpt-4": {"p": 0.5, "output_tokens": {"mean": 100, "std": 10}}}}]}  # fmt: skip
        adapters = recorded_adapters(book, clock, models=["gpt-4"])
        result = runtime.run(runtime.parse_workflow(spec), 1.0, 60.0, clock=clock, planner="retry:gpt-4:1",
                             adapters=adapters)  # fmt: skip
        assert result.success == first.right
        if first.right:  # one call: what the recorded tokens cost at the list price
            assert result.cost == pytest.approx((first.input_tokens * 30.0 + first.output_tokens * 60.0) / 1e6)
    assert 0 < per_question_cost(task, "gpt-4") < 0.05


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{", "line 1: not a question"),
        ('{"id": 1, "question": "Q?", "choices": {"A": "x", "B": "y"}, "answer": "C"}', "answer 'C' is not a choice"),
        ('{"id": 1, "question": "Q?", "choices": {"B": "x", "A": "y"}, "answer": "A"}', "lettered AB in order"),
        ('{"id": 1, "question": "", "choices": {"A": "x", "B": "y"}, "answer": "A"}', "non-empty"),
        ('{"id": 1, "choices": {"A": "x", "B": "y"}, "answer": "A"}', "'question'"),
        ("[1, 2]", "a JSON object"),
    ],
)
def test_a_malformed_exam_is_a_usage_error_naming_the_line(tmp_path: Path, line: str, message: str) -> None:
    (tmp_path / "exams").mkdir()
    (tmp_path / "exams" / "quiz.jsonl").write_text(line + "\n", encoding="utf-8")
    with pytest.raises(UsageError, match=message):
        load_exams(tmp_path)


def test_missing_data_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no exams"):
        load_exams(tmp_path)
    with pytest.raises(UsageError, match="no exam 'gre'"):
        load_exams(SLICE, ["gre"])
    with pytest.raises(UsageError, match="no attempts file"):
        attempts_file(tmp_path)
    with pytest.raises(UsageError, match="not a reflection data folder"):
        find_data_dir(tmp_path)
    assert find_data_dir(SLICE) == SLICE and find_data_dir(SLICE.parent) == SLICE


def test_the_split_is_one_to_four_per_exam_disjoint_and_stable(tasks: list[ExamTask]) -> None:
    questions = [q for t in tasks for q in t.questions]
    validation, test = split(questions, seed=3)
    for t in tasks:
        v, s = [q for q in validation if q.exam == t.exam], [q for q in test if q.exam == t.exam]
        assert (len(v), len(s)) == (20, 80)
        assert {q.id for q in v}.isdisjoint(q.id for q in s) and len({q.id for q in v + s}) == 100
    shuffled = random.Random(0).sample(questions, len(questions))
    assert split(shuffled, seed=3) == (validation, test)  # the input's order does not matter
    assert split(questions, seed=4)[0] != validation
    assert tasks[0].split(3) == split(tasks[0].questions, 3)
    with pytest.raises(UsageError):
        split(questions, seed=0, validation_fraction=1.5)


def test_rendering_then_answering_scores_exactly_the_key(task: ExamTask) -> None:
    for q in task.questions:
        text = render(q)
        assert text.startswith(f"{q.context}\n\n{q.question}" if q.context else q.question)
        assert text.endswith("\n".join(f"{c}. {t}" for c, t in q.choices))
        assert "\n\nChoices:\nA. " in text
        for letter in q.letters:
            assert score(f"{text}\n\nLet me think.\nAnswer: {letter}", q) == float(letter == q.answer)


Q = ExamQuestion("quiz", "1", "Which is a prime?", "", (("A", "4"), ("B", "6"), ("C", "7"), ("D", "9")), "C")


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        ("Answer: C", 1.0),
        ("answer: c", 1.0),  # the label names the letter: any case
        ("**Answer:** (C)", 1.0),
        ("Answer: A\nOn reflection... Answer: C", 1.0),  # the last one counts
        ("Answer: C\nWait, no. Answer: D", 0.0),
        ("I pick C.", 1.0),  # no label: the last standalone capital
        ("C is prime, as is a 7. A friend said D", 0.0),
        ("It is C. A prime has two divisors.", 1.0),  # "A prime": the article
        ("it is c", 0.0),  # a lowercase letter alone is a word
        ("Clearly Seven", 0.0),
        ("Answer: E", 0.0),  # outside the choices: wrong
        ("", 0.0),
    ],
)
def test_score_reads_the_last_answer(output: str, expected: float) -> None:
    assert score(output, Q) == expected


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_score_never_raises_and_is_zero_or_one(output: str) -> None:
    assert score(output, Q) in (0.0, 1.0)


# -- the adapter: first answers, repeats, reconsider, verify, unknown ------------------------------------------


def test_each_model_answers_what_it_really_answered_with_its_real_tokens(tasks: list[ExamTask], data_dir: Path) -> None:
    with attempts_file(data_dir).open(encoding="utf-8", newline="") as f:  # the CSV itself, not the loader
        rows = [r for r in csv.DictReader(f) if r["agent"] == "baseline"]
    failed = [r for r in rows if r["error"] == "1"]  # 45 in the shared data, none in the slice
    by_exam = {t.exam: t for t in tasks}
    for row in random.Random(0).sample(rows, 60) + failed[:5]:
        task = by_exam[row["exam"]]
        q = next(q for q in task.questions if q.id == row["problem_id"])
        adapter = _adapter(task, row["model"])
        (end,) = _ask(adapter, f"Solve this problem.\n\n{render(q)}\n\nEnd with 'Answer: <letter>'.")
        assert end.finish is Finish.COMPLETE and end.passed is None and end.output is not None  # a verifier judges
        assert score(end.output, q) == float(row["score"])
        if row["error"] == "1":  # the recorded call failed: no answer, nothing billed
            assert end.output == f"{row['model']}'s recorded call failed." and end.input_tokens == 0
            continue
        assert end.output == f"{row['model']}'s recorded answer.\nAnswer: {row['answer']}"
        assert end.output_tokens == int(row["output_tokens"])
        assert end.input_tokens >= int(row["input_tokens"])  # the longer of the recorded and this prompt's
        latency = TTFT_S + end.output_tokens / TOKENS_PER_S
        assert adapter.clock.now() == pytest.approx(latency)


def test_repeat_samples_return_the_one_recorded_answer(task: ExamTask) -> None:
    q = task.questions[0]
    ends = _ask(_adapter(task, task.models[0]), render(q), k=4)
    assert [e.index for e in ends] == [0, 1, 2, 3]
    assert len({(e.output, e.input_tokens, e.output_tokens) for e in ends}) == 1


def _wrong_and_right(task: ExamTask, model: str) -> tuple[ExamQuestion, ExamQuestion]:
    book = AnswerBook.of(task)
    wrong = next(q for q in task.questions if (a := book.first(model, q)) and not a.right and a.answer in q.letters)
    right = next(q for q in task.questions if (a := book.first(model, q)) and a.right)
    return wrong, right


def test_reconsidering_its_own_wrong_answer_gives_the_retry_row_and_a_right_one_stays(task: ExamTask) -> None:
    model = "gpt-35-turbo"
    book = AnswerBook.of(task)
    wrong, right = _wrong_and_right(task, model)
    first, retry = book.first(model, wrong), book.retry(model, wrong)
    assert first is not None and retry is not None
    (end,) = _ask(_adapter(task, model), f"{render(wrong)}\n\nYour previous answer: {first.answer}\nReconsider.")
    assert end.output is not None and end.output.endswith(f"Answer: {retry.answer}")
    assert end.output_tokens == retry.output_tokens
    kept = book.first(model, right)
    assert kept is not None
    (end,) = _ask(_adapter(task, model, p_flip=0.0), f"{render(right)}\n\nYour previous answer: {kept.answer}")
    assert end.output is not None and end.output.endswith(f"Answer: {kept.answer}")
    flips = [_ask(_adapter(task, model, p_flip=1.0), f"{render(right)}\nYour previous answer: {kept.answer}")]
    flips.append(_ask(_adapter(task, model, p_flip=1.0), f"{render(right)}\nYour previous answer: {kept.answer}"))
    assert flips[0] == flips[1]  # seeded per question and model
    assert flips[0][0].output is not None and score(flips[0][0].output, right) == 0.0


def test_by_default_a_right_answer_is_dropped_at_the_models_own_change_rate(task: ExamTask) -> None:
    """The default p_flip is each model's change rate on its retries, so a workflow that reconsiders every
    answer blindly (no signal of its own) loses on average: the key gives it nothing for free."""
    book = AnswerBook.of(task)
    for model in task.models:
        rows = [(book.first(model, q), book.retry(model, q)) for q in task.questions]
        changed = [r.answer != f.answer for f, r in rows if f is not None and r is not None]
        rate = sum(changed) / len(changed) if len(changed) >= MIN_RETRIES else book.change_rate(model)
        assert book.change_rate(model) == pytest.approx(rate)
        adapter = RecordedAnswers(book, model, clock=VirtualClock())
        assert adapter.p_flip == pytest.approx(rate)
        first = blind = 0.0
        for q in task.questions:
            f = book.first(model, q)
            assert f is not None
            if f.error:
                continue
            first += f.right
            reply = adapter.reply((Message("user", f"{render(q)}\n\nYour previous answer: {f.answer}"),))
            blind += score(reply.text, q)
        assert blind < first, (model, blind, first)


def test_reconsidering_an_answer_it_did_not_give_reveals_nothing_of_the_key(task: ExamTask) -> None:
    """With p_flip = 0 the key picks retry rows only for the model's own wrong answers: reconsidering any other
    letter returns the model's first answer, the same under a falsified key, so such a program scores exactly
    the model's own first-answer accuracy."""
    real = AnswerBook.of(task)
    lies = AnswerBook(task.questions, [dataclasses.replace(a, right=not a.right) for a in task.attempts])
    for model in task.models:
        honest, fooled = (RecordedAnswers(b, model, clock=VirtualClock()) for b in (real, lies))
        gained = 0.0
        for q in task.questions:
            first = real.first(model, q)
            assert first is not None
            other = next(c for c in q.letters if c != first.answer)
            prompt = (Message("user", f"{render(q)}\n\nYour previous answer: {other}\nPlease reconsider."),)
            reply = honest.reply(prompt)
            assert reply == fooled.reply(prompt)
            assert reply == honest.reply((Message("user", render(q)),)) or first.error
            gained += score(reply.text, q) - float(first.right)
        assert gained == 0.0


def test_verify_judges_by_the_models_own_answer(task: ExamTask) -> None:
    model = task.models[-1]
    book = AnswerBook.of(task)
    for q in task.questions[:20]:
        first = book.first(model, q)
        assert first is not None
        for letter in q.letters:
            reply = RecordedAnswers(book, model, clock=VirtualClock()).reply(
                (Message("user", f"{render(q)}\n\nProposed answer: {letter}\nIs it right?"),)
            )
            verdict = "correct" if letter == first.answer and not first.error else "incorrect"
            assert reply.text.endswith(f"Verdict: {verdict}") or first.error
            assert score(reply.text, q) == 0.0  # a verdict is no answer


def test_an_unknown_or_ambiguous_prompt_gets_the_unknown_reply(task: ExamTask) -> None:
    adapter = _adapter(task, task.models[0])
    a, b = task.questions[:2]
    for prompt in ("What is the capital of France?", f"{render(a)}\n\n{render(b)}", a.question):
        (end,) = _ask(adapter, prompt)
        assert end.output == UNKNOWN_REPLY and score(end.output, a) == 0.0
        assert end.output_tokens > 0 and end.input_tokens > 0
    with pytest.raises(UsageError, match="no recorded answers of model 'gpt-5'"):
        _adapter(task, "gpt-5")


def test_a_question_text_two_exams_share_is_told_apart_by_its_choices() -> None:
    shared = "Which one is heavier?"
    one = ExamQuestion("one", "1", shared, "", (("A", "a kilo of lead"), ("B", "a gram of gold")), "A")
    two = ExamQuestion("two", "1", shared, "", (("A", "a feather"), ("B", "a brick")), "B")
    rows = [Attempt("m", "baseline", q.exam, "1", 1, q.answer, True, 10, 20, False) for q in (one, two)]
    book = AnswerBook([one, two], rows)
    assert book.find(render(one)) == one and book.find(render(two)) == two
    assert book.find(shared) is None


def test_a_cancelled_sample_is_charged_its_input_and_what_it_streamed(task: ExamTask) -> None:
    adapter = _adapter(task, task.models[0])
    q = next(q for q in task.questions if (a := AnswerBook.of(task).first(adapter.model, q)) and a.output_tokens > 50)
    messages = (Message("user", render(q)),)
    reply = adapter.reply(messages)
    batch = Batch(id=7, subtask=0, tag="t", model=0, k=2, max_tokens=4096,
                  input_tokens=adapter.input_tokens(0, messages), messages=messages)  # fmt: skip
    ends: list[SampleEnd] = []
    half = TTFT_S + reply.output_tokens / TOKENS_PER_S / 2

    async def main() -> None:
        clock = adapter.clock
        with clock.participate():
            async with anyio.create_task_group() as tg:
                handle = clock.spawn(tg, lambda: adapter.run(batch, ends.append))
                await clock.sleep_until(half)
                handle.cancel()

    anyio.run(main)
    assert [e.finish for e in ends] == [Finish.CANCELLED] * 2
    assert all(e.input_tokens == reply.input_tokens for e in ends)
    assert all(abs(e.output_tokens - reply.output_tokens // 2) <= 1 for e in ends)


def test_an_answer_longer_than_max_tokens_is_cut_off_without_its_answer(task: ExamTask) -> None:
    adapter = _adapter(task, task.models[0])
    q = task.questions[0]
    (end,) = _ask(adapter, render(q), max_tokens=5)
    assert end.finish is Finish.CUT_OFF and end.output_tokens == 5
    assert end.output is not None and score(end.output, q) == 0.0


def test_bad_parameters_are_usage_errors(task: ExamTask) -> None:
    for kw in ({"p_flip": 1.5}, {"tokens_per_s": 0.0}, {"ttft_s": -1.0}):
        with pytest.raises(UsageError):
            _adapter(task, task.models[0], **kw)
    with pytest.raises(UsageError, match="need the prompt"):
        _adapter(task, task.models[0]).input_tokens(10, None)


# -- serve-sim ------------------------------------------------------------------------------------------------


def test_serve_sim_answers_the_openai_sdk_with_the_recorded_answer_and_usage(task: ExamTask) -> None:
    book = AnswerBook.of(task)
    server = SimServer(None, answers=recorded_adapters(book, RealClock(speed=1000.0)))
    model = task.models[0]
    picks = task.questions[:3]
    with (
        serve_in_thread(server) as url,
        openai.OpenAI(base_url=f"{url}/v1", api_key="any", max_retries=0) as client,
    ):
        assert model in {m.id for m in client.models.list()}
        for q in picks:
            first = book.first(model, q)
            assert first is not None
            reply = client.chat.completions.create(
                model=model, messages=[{"role": "user", "content": render(q)}], max_tokens=2000
            )
            text = reply.choices[0].message.content or ""
            assert text.strip() == f"{model}'s recorded answer.\nAnswer: {first.answer}"
            assert reply.usage is not None and reply.usage.completion_tokens == first.output_tokens
            assert reply.usage.prompt_tokens >= first.input_tokens
        stream = client.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": render(picks[0])}],
            max_tokens=2000,
            stream=True,
            stream_options={"include_usage": True},
        )
        text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        assert score(text, picks[0]) == float(book.first(model, picks[0]).right)  # type: ignore[union-attr]
        with pytest.raises(openai.NotFoundError):
            client.chat.completions.create(model="gpt-5", messages=[{"role": "user", "content": "hi"}], max_tokens=9)
    assert [r.status for r in server.record] == ["complete"] * 4  # the unknown model's request was refused


def test_serve_sim_needs_a_spec_or_recorded_answers() -> None:
    result = CliRunner().invoke(app, ["serve-sim"])
    assert result.exit_code != 0 and "--recorded-answers" in result.output
    with pytest.raises(UsageError):
        SimServer(None)


def test_a_run_on_serve_sim_pays_what_the_recorded_answers_used(task: ExamTask) -> None:
    """ontime's own OpenAI adapter against ``serve-sim --recorded-answers``: the models block pointed at the
    server, the recorded answer verified, the recorded tokens charged at the list price (the input no more than
    the client's byte bound of the prompt it sent, which the ledger reserved)."""
    book = AnswerBook.of(task)
    model = "gpt-35-turbo"
    inp, out = task.prices[model]
    right = [q for q in task.questions if (a := book.first(model, q)) and a.right][:3]
    server = SimServer(None, answers=recorded_adapters(book, RealClock(speed=1000.0)))
    with serve_in_thread(server) as url:
        block = task.models_block(base_url=f"{url}/v1")
        for q in right:
            first = book.first(model, q)
            assert first is not None
            spec = {"name": "exam", "models": {model: block[model]}, "subtasks": [{
                "id": "q", "input_tokens": 1000, "prompt": render(q), "verifier": {"regex": f"Answer: {q.answer}"},
                "profiles": {model: {"p": 0.5, "output_tokens": {"mean": 100, "std": 10}}}}]}  # fmt: skip
            result = runtime.run(runtime.parse_workflow(spec), 1.0, 60.0, planner=f"retry:{model}:1")
            assert result.success
            charged = min(first.input_tokens, input_token_bound((Message("user", render(q)),)))
            assert result.cost == pytest.approx((charged * inp + first.output_tokens * out) / 1e6)


def test_serve_sim_answers_the_anthropic_api_too(task: ExamTask) -> None:
    import anthropic

    book = AnswerBook.of(task)
    model, q = task.models[-1], task.questions[1]
    first = book.first(model, q)
    assert first is not None
    server = SimServer(None, answers=recorded_adapters(book, RealClock(speed=1000.0)))
    with (
        serve_in_thread(server) as url,
        anthropic.Anthropic(base_url=url, api_key="any", max_retries=0) as client,
    ):
        reply = client.messages.create(
            model=model,
            system="Answer the question.",
            messages=[{"role": "user", "content": render(q)}],
            max_tokens=2000,
        )
    block = reply.content[0]
    assert block.type == "text" and block.text.strip() == f"{model}'s recorded answer.\nAnswer: {first.answer}"
    assert reply.usage.output_tokens == first.output_tokens
