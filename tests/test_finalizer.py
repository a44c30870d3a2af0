"""The risk-controlled finalizer on answer-form errors it was not written against (issue 17, finding 6).

The test this replaces corrupted gold answers with the simulated model's own slip templates, which the
finalizer's patterns match by construction, and handed the finalizer the gold supporting paragraphs. Here
the errors are families of how LLM answers go wrong in form (:data:`benchmarks.form_errors.FAMILIES`), written from the
answers themselves, not from ``adapters.sim_agent`` or ``planners.finalizer``, and not tuned on the
finalizer; the evidence is what the agent's first search returns: BM25 over the data set's pooled
paragraphs with the question as the query, top 5. The thought states no candidate, so nothing in the
trace comes from gold but the corrupted answer itself.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from benchmarks.form_errors import Case, Tally, is_yesno, measure, retrieved_trace
from planners.finalizer import finalize
from runtime.types import Hit
from tools.qa_data import load_qa

ROOT = Path(__file__).resolve().parent.parent
DATA = os.environ.get("ONTIME_DATA_DIR")


def test_an_answer_naming_both_options_is_not_snapped_to_one() -> None:
    """Issue 17: "Pavel Sergeyevich Alexandrov and Semyon Gershgorin" was finalized to Gershgorin, the only option
    it named verbatim, though it names the other one too, in a fuller spelling."""
    q = "Who wrote more papers, Semyon Gershgorin or Pavel Alexandrov?"
    hit = Hit("h", "Pavel Alexandrov", "Pavel Sergeyevich Alexandrov wrote some 300 papers.", 2.0)
    for base, expected in (("Pavel Sergeyevich Alexandrov and Semyon Gershgorin", None), ("Answer: Pavel Alexandrov",
                           "Pavel Alexandrov")):  # fmt: skip
        fin = finalize(retrieved_trace(q, [hit], base), base)
        assert fin.refined == expected and fin.answer == (expected or base)


def check(tallies: dict[str, Tally], harmed: list[Case]) -> None:
    """The paper's promise in measurable form: harm is rare, never on yes/no, and form errors get repaired.

    The bounds sit above what the three real data sets measure (HotpotQA's 500 questions are the worst:
    4.7% of accepted refinements and 2.2% of correct answers made worse, all on choice or entity questions;
    see the report on issue 17), so a regression fails; the small data set measures no harm at all.
    """
    clean = tallies["correct"]
    errors = [t for name, t in tallies.items() if name != "correct"]
    changed, repaired = sum(t.changed for t in errors), sum(t.repaired for t in errors)
    worse = sum(t.harmed for t in errors)
    assert not [c for c in harmed if is_yesno(c.gold)], "a yes/no answer was made worse"
    assert clean.harmed <= 0.03 * clean.n, [c for c in harmed if c.family == "correct"]
    assert worse <= 0.06 * changed, (worse, changed)
    assert repaired >= 5 * worse and tallies["labelled"].repaired >= 0.1 * tallies["labelled"].n, tallies


def test_the_finalizer_on_unseen_form_errors_in_the_example_set() -> None:
    tallies, harmed = measure(load_qa(ROOT / "examples" / "qa" / "questions.jsonl"))
    assert not harmed, harmed
    check(tallies, harmed)


@pytest.mark.skipif(DATA is None, reason="set ONTIME_DATA_DIR for the real data sets")
@pytest.mark.parametrize("name", ["hotpotqa_dev500", "musique_100", "2wikimultihopqa_82"])
def test_the_finalizer_on_unseen_form_errors_in_real_questions(name: str) -> None:
    check(*measure(load_qa(Path(str(DATA)) / "qa" / f"{name}.jsonl")))
