"""Real first answers and repairs (issue 18): the loader fails closed, leaky agents stay out, and the data show
that attempts are not independent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from runtime.types import UsageError
from tools.reflection_data import LEAKY_AGENTS, Outcomes, Rate, load_attempts

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "examples" / "reflection" / "attempts_sample.csv"
DATA = os.environ.get("ONTIME_DATA_DIR")
HEADER = "model,agent,exam,problem_id,attempt,answer,correct,score,input_tokens,output_tokens,error"


def test_answers_written_with_the_answer_in_view_are_left_out_unless_asked_for() -> None:
    clean, every = load_attempts(SAMPLE), load_attempts(SAMPLE, leaky=True)
    assert not [a for a in clean if a.agent in LEAKY_AGENTS]
    assert {a.agent for a in every} - {a.agent for a in clean} == {"solution"}


def test_rates_are_what_the_attempts_say() -> None:
    o = Outcomes(load_attempts(SAMPLE))
    assert o.models == ["gpt-35-turbo", "gpt-4", "llama-2-7b-chat"]
    for m in o.models:
        first = o.first(m)
        assert first.trials == 200  # 2 exams x 100 questions
        assert o.after(m, []) == first  # no condition: the plain first-attempt rate
        assert o.after(m, [m]) == Rate(0, first.trials - first.successes)  # never right where it was wrong
        assert 0 < o.repair(m).trials <= first.trials - first.successes  # a retry only after a failure
    with pytest.raises(UsageError, match="no first attempts of model 'gpt-5'"):
        o.first("gpt-5")


def test_a_question_that_beat_a_model_is_harder_for_it_on_the_shipped_slice() -> None:
    o = Outcomes(load_attempts(SAMPLE))
    for m in o.models:
        assert o.repair(m).interval()[1] < o.first(m).interval()[0], m


@pytest.mark.skipif(DATA is None, reason="set ONTIME_DATA_DIR for the full attempts file")
def test_attempts_are_not_independent_on_every_real_model() -> None:
    """Issue 18: independent draws overstate the value of retrying. For all 9 models the retry after a failure
    succeeds less often than a first attempt (disjoint 95% intervals), and every model answers less often on the
    questions any other model got wrong."""
    o = Outcomes(load_attempts(Path(str(DATA)) / "reflection" / "renze_attempts.csv"))
    assert len(o.models) == 9
    for m in o.models:
        assert o.repair(m).interval()[1] < o.first(m).interval()[0], m
        assert all(o.after(m, [other]).mean < o.first(m).mean for other in o.models if other != m), m
    gpt4 = o.first("gpt-4").mean, o.repair("gpt-4").mean
    assert 0.77 < gpt4[0] < 0.80 and 0.17 < gpt4[1] < 0.22  # 78.6% first, 19.9% on a retry


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("model,agent\nm,baseline\n", "no column exam"),
        (f"{HEADER}\nm,baseline,e,1,1,A,A,yes,1,1,0\n", "row 2: malformed"),
        (f"{HEADER}\nm,baseline,e,1,1,A,A,1,1,1,0\nm,guess,e,1,2,A,A,1,1,1,0\n", "row 3: unknown agent 'guess'"),
        (f"{HEADER}\nm,retry,e,1,1,A,A,1,1,1,0\n", "row 2: agent 'retry' on attempt 1"),
        (f"{HEADER}\nm,solution,e,1,2,A,A,1,1,1,0\n", "no attempts"),
        (f"{HEADER}\n", "no attempts"),
        (f"{HEADER}\nm,baseline,e,1,1,A,A,1,many,1,0\n", "row 2: malformed"),
    ],
)
def test_malformed_files_are_usage_errors_naming_the_row(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "attempts.csv"
    path.write_text(text)
    with pytest.raises(UsageError, match=problem):
        load_attempts(path)


def test_a_missing_or_binary_file_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="cannot read"):
        load_attempts(tmp_path / "absent.csv")
    (tmp_path / "bin.csv").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(UsageError):
        load_attempts(tmp_path / "bin.csv")


@given(st.integers(0, 1000), st.integers(0, 1000))
def test_the_wilson_interval_holds_the_rate(successes: int, extra: int) -> None:
    rate = Rate(successes, successes + extra)
    lo, hi = rate.interval()
    assert 0.0 <= lo <= hi <= 1.0
    if rate.trials:
        assert lo <= rate.mean <= hi
