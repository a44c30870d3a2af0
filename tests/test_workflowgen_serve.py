"""The paper's data sets offline through serve-sim (issue 19): the simulated executor (:mod:`adapters.sim_solver`)
answers a step-annotated program's calls over the OpenAI API, usage, cut-off, streaming and cancellation behave as
for the recorded answers, and ``ontime serve-sim --workflowgen`` serves it from a shell. Every number here is
simulated."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import anthropic
import openai
import pytest
from typer.testing import CliRunner

import runtime
from adapters.sim_server import SimServer, serve_in_thread
from adapters.sim_solver import MODELS, SimSolver
from runtime._generate import load_task
from runtime.cli import app
from runtime.types import RealClock, SampleFinished, price_per_token_pusd
from tests.helpers import of
from tools.workflowgen import DATASETS, EXAMPLES, load_dataset, score

ROOT = Path(__file__).resolve().parent.parent
SLICE = [
    p
    for name in DATASETS
    for split in ("validate", "test")
    if (name, split) != ("hotpotqa", "test")  # HotpotQA has a validation split only
    for p in load_dataset(name, EXAMPLES, split)
]
GSM8K = [p for p in SLICE if p.dataset == "gsm8k"]
CLAUDE, QWEN = "claude-3-7-sonnet", "qwen2.5-7b-instruct"

# The paper's chain of thought and three-sample self-consistency (App. H), written as a program: it runs in the
# sandbox and reaches the models through the parent's run, which calls serve-sim over the OpenAI API.
VOTE = '''"""Answer a grade-school math problem by a chain of thought, then a vote of three samples."""
import re
from collections import Counter


def _answer(text):
    found = re.findall(r"Answer:\\s*(-?[\\d,]*\\.?\\d+)", text)
    return found[-1].replace(",", "") if found else None


async def workflow(problem: str) -> str:
    ask = f"{problem}\\n\\nThink step by step, then end with 'Answer: <number>'."
    # Step 1: One chain of thought from the cheap model
    first = await call_llm([ask], model="qwen2.5-7b-instruct", max_tokens=1024, tag="cot")
    # Step 2: Three samples from the strong model and their majority answer (step 1's if none has one)
    more = await call_llm([ask], temperature=0.7, n=3, model="claude-3-7-sonnet", max_tokens=1024, tag="vote")
    votes = [a for a in map(_answer, more) if a is not None]
    if not votes:
        return first[0]
    return f"Answer: {Counter(votes).most_common(1)[0][0]}"
'''


def _server(speed: float, seed: int = 0) -> SimServer:
    clock = RealClock(speed=speed)
    return SimServer(None, seed=seed, answers={m: SimSolver(SLICE, m, clock=clock, seed=seed) for m in MODELS})


def _cot(problem_text: str) -> str:
    return f"{problem_text}\n\nThink step by step."


def test_a_cot_vote_program_runs_on_serve_sim_and_pays_exactly_the_tokens_it_reports() -> None:
    """The issue's bar for the data sets: a program against serve-sim over the OpenAI API, its answer graded by the
    real scorer, its cost the server's usage at the models' prices; a second server of the same seed agrees."""
    answers = []
    for _ in range(2):
        server = _server(speed=200.0)
        with serve_in_thread(server) as url:
            models = load_task("gsm8k").served(f"{url}/v1")
            events: list[runtime.Event] = []
            result = runtime.run(runtime.Program.from_source(VOTE, name="vote.py"), 1.0, 60.0, input=GSM8K[0].text,
                                 models=models, on_event=events.append)  # fmt: skip
        assert result.success, result.detail
        assert result.answer is not None and result.answer.startswith("Answer: ")
        assert score(GSM8K[0], result.answer) in (0.0, 1.0)
        answers.append(result.answer)
        assert sorted((r.model, r.n, r.status) for r in server.record) == [
            (CLAUDE, 3, "complete"),
            (QWEN, 1, "complete"),
        ]
        price = {m: (price_per_token_pusd(e["input_price_per_mtok"]), price_per_token_pusd(e["output_price_per_mtok"]))
                 for m, e in models.items()}  # fmt: skip
        billed = sum(
            r.input_tokens * price[r.model][0] + r.total_output_tokens * price[r.model][1] for r in server.record
        )
        assert result.cost_pusd == billed > 0
        ends = of(events, SampleFinished)
        assert sum(e.output_tokens for e in ends) == sum(r.total_output_tokens for r in server.record)
    assert answers[0] == answers[1]  # the draws are keyed by the seed and the requests' order


def test_usage_cut_off_streaming_and_the_anthropic_api_behave_as_for_recorded_answers() -> None:
    problem = GSM8K[1]
    server = _server(speed=1000.0)
    with (
        serve_in_thread(server) as url,
        openai.OpenAI(base_url=f"{url}/v1", api_key="any", max_retries=0) as client,
    ):
        assert {m.id for m in client.models.list()} == set(MODELS)
        whole = client.chat.completions.create(
            model=QWEN, messages=[{"role": "user", "content": _cot(problem.text)}], max_tokens=4000, n=2
        )
        assert [c.finish_reason for c in whole.choices] == ["stop", "stop"]
        assert all(score(problem, c.message.content or "") in (0.0, 1.0) for c in whole.choices)
        assert whole.usage is not None and whole.usage.prompt_tokens > 0
        assert whole.usage.completion_tokens == server.record[-1].total_output_tokens > 0
        cut = client.chat.completions.create(
            model=CLAUDE, messages=[{"role": "user", "content": _cot(problem.text)}], max_tokens=3
        )
        assert cut.choices[0].finish_reason == "length" and cut.usage is not None and cut.usage.completion_tokens == 3
        assert score(problem, cut.choices[0].message.content or "") == 0.0  # cut off before its answer
        stream = client.chat.completions.create(
            model=CLAUDE,
            messages=[{"role": "user", "content": _cot(problem.text)}],
            max_tokens=4000,
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = list(stream)
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        usage = chunks[-1].usage
        assert usage is not None and usage.completion_tokens == server.record[-1].total_output_tokens
        assert text.strip().startswith(f"(simulated {CLAUDE}, reasoning step by step)\nAnswer: ")
        with anthropic.Anthropic(base_url=url, api_key="any", max_retries=0) as claude:
            reply = claude.messages.create(
                model=QWEN,
                system="Solve it.",
                messages=[{"role": "user", "content": _cot(problem.text)}],
                max_tokens=4000,
            )
        block = reply.content[0]
        assert block.type == "text" and score(problem, block.text) in (0.0, 1.0)
        assert reply.usage.output_tokens == server.record[-1].total_output_tokens
        unknown = client.chat.completions.create(
            model=QWEN, messages=[{"role": "user", "content": "hi"}], max_tokens=99
        )
        assert (unknown.choices[0].message.content or "").strip() == "I cannot answer this."
    assert [r.status for r in server.record] == ["complete"] * 5


def test_a_request_the_client_abandons_is_charged_its_input_and_what_it_streamed() -> None:
    """Claude's chain of thought takes its 1 s to first token plus about 2.5 s at 80 tokens/s in real time: a client
    that gives up after 1.6 s leaves a cancelled request charged what had streamed by then."""
    server = _server(speed=1.0)
    with (
        serve_in_thread(server) as url,
        openai.OpenAI(base_url=f"{url}/v1", api_key="any", max_retries=0, timeout=1.6) as client,
    ):
        with pytest.raises(openai.APITimeoutError):
            client.chat.completions.create(
                model=CLAUDE, messages=[{"role": "user", "content": _cot(GSM8K[2].text)}], max_tokens=4000
            )
        give_up = time.monotonic() + 10
        while server.record[-1].status == "open" and time.monotonic() < give_up:
            time.sleep(0.05)
    [r] = server.record
    assert r.status == "cancelled" and r.input_tokens > 0
    assert 0 < r.total_output_tokens <= 1.6 * MODELS[CLAUDE].tokens_per_s  # 0.6 s of streaming, and 1 s of slack


# -- ontime serve-sim --workflowgen -------------------------------------------------------------------------------


def test_ontime_serve_sim_workflowgen_sample_answers_a_request_from_a_shell() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "runtime.cli", "serve-sim", "--workflowgen", "sample", "--port", str(port),
           "--speed", "100"]  # fmt: skip
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        banner = proc.stderr.readline()
        assert banner.startswith("serve-sim: SIMULATED answers (39 workflowgen problems) of 2 models")
        problem = next(p for p in SLICE if p.dataset == "mmlu_pro")
        with openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="any", max_retries=0, timeout=30) as client:
            reply = client.chat.completions.create(model=QWEN, messages=[{"role": "user", "content": problem.text}],
                                                   max_tokens=2000)  # fmt: skip
        text = reply.choices[0].message.content or ""
        assert text.startswith(f"(simulated {QWEN})\nAnswer: ") and score(problem, text) in (0.0, 1.0)
        assert reply.usage is not None and reply.usage.completion_tokens > 0
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            _, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
            pytest.fail(f"serve-sim did not stop within 30 s of Ctrl-C:\n{err}")
    assert f"openai {QWEN} answers n=1: complete" in err and "stopped after 1 requests" in err


def test_serve_sim_help_says_the_workflowgen_numbers_are_simulated() -> None:
    result = CliRunner().invoke(app, ["serve-sim", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert "--workflowgen" in result.output and "SIMULATED executor" in result.output
    assert "simulated, not a real model's" in " ".join(result.output.split())


def test_a_folder_without_the_data_sets_is_refused_with_one_line(tmp_path: Path) -> None:
    runner = CliRunner()
    missing = runner.invoke(app, ["serve-sim", "--workflowgen", str(tmp_path / "nowhere")])
    assert missing.exit_code == 2 and "no such folder" in missing.output
    (tmp_path / "notes.jsonl").write_text("{}\n")
    empty = runner.invoke(app, ["serve-sim", "--workflowgen", str(tmp_path)])
    assert empty.exit_code == 2 and "no split file" in empty.output
    (tmp_path / "gsm8k_test.jsonl").write_text('{"question": "What is 1 + 1?"}\n')  # no answer, no id
    bad = runner.invoke(app, ["serve-sim", "--workflowgen", str(tmp_path)])
    assert bad.exit_code == 2 and "gsm8k_test.jsonl:1" in bad.output


def test_a_model_two_sources_serve_is_refused(tmp_path: Path) -> None:
    """Recorded answers under the simulated executor's name would shadow it: refused rather than one replacing the
    other."""
    reflection = tmp_path / "reflection"
    shutil.copytree(ROOT / "examples" / "reflection", reflection)
    attempts = reflection / "attempts_sample.csv"
    attempts.write_text(attempts.read_text().replace("gpt-35-turbo,", f"{QWEN},"))
    result = CliRunner().invoke(app, ["serve-sim", "--recorded-answers", str(reflection), "--workflowgen", "sample"])
    assert (
        result.exit_code == 2
        and f"model {QWEN!r} is served twice: by recorded answers and by SIMULATED" in " ".join(result.output.split())
    ), result.output
