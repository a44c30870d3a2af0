"""The risk-controlled finalizer (VOI paper, Section 4.2, Eq. 5, Appendices B.4 and C.5).

From the finished trace it builds a refined candidate without any model or tool call, then accepts it only
in the safe set and when its branch's gain-risk test passes; otherwise it keeps the base answer. This is
the paper's released deterministic rule (Proposition C.17):

- gates: a plausible refined candidate that differs from the base; no blocked risk category (comparative
  semantics that are not a two-option choice; an unresolved bridge: a compositional question whose base
  answer no retrieved paragraph supports); no decomposition steps in the trace;
- branches, in priority order, the first applicable one deciding (no fall-through):
  yes/no or binary choice -> accept a canonical option; filler removed and nothing else changed -> accept;
  explicit factoid completion (the refined span contains the base span) -> support gain >= 0 and at most
  three tokens longer; typed slot (date, year, number) -> support gain >= 0.5 and at most one token
  longer; otherwise -> support gain > 0 and at most two tokens longer. (The paper checks typed slots
  before completions; a year completed to the full date it came from is a completion here, since the
  typed branch's length limit would refuse it.)

The refined candidate: the canonical option or polarity (the answer's own; the model's stated candidate
only when the answer names none: a thought can be as wrong as the answer, so a polarity is never
flipped; none when the answer names both options, one perhaps in a fuller spelling), the answer without
filler ("The answer is", "is the one", trailing clauses), the full date in the evidence that contains a
bare year when the question asks for a date by name, or the longer name in the stated candidate or a
retrieved title (without its parenthetical) that completes a truncated one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from runtime.types import Trace, content_tokens
from runtime.types.answers import (
    CHOICE,
    DATE,
    ENTITY,
    NUMBER,
    YEAR,
    YESNO,
    choice_options,
    compositionality,
    dates_in,
    is_comparison,
    normalize,
    question_form,
    years_in,
)

__all__ = ["Finalization", "finalize", "refine"]

_FILLER = re.compile(
    r"^(?:the answer is|answer:|it is|it was|final answer:)\s+|\s+(?:is the one|is the answer)$|[.!]+$",
    re.IGNORECASE,
)
_PAREN = re.compile(r"\s*\([^)]*\)")  # a title's disambiguation, "Liaison Office (Hong Kong)"
_CLAUSE = re.compile(r",\s+(?:based on|because|since|as)\b.*$", re.IGNORECASE)
TYPED = (DATE, YEAR, NUMBER)


@dataclass(frozen=True, slots=True)
class Finalization:
    answer: str
    base: str
    refined: str | None
    accepted: bool
    branch: str  # which rule decided: none, blocked, decomposed, binary, typed, explicit, compact
    support_gain: float


def _strip(text: str) -> str:
    out = _CLAUSE.sub("", text.strip())
    prev = None
    while prev != out:
        prev, out = out, _FILLER.sub("", out).strip()
    return out


def refine(trace: Trace, base: str) -> str | None:
    """The refined candidate built from the trace alone, or None if there is nothing to refine to."""
    q = trace.question
    form = question_form(q)
    stated = next((s.candidate for s in reversed(trace.steps) if s.candidate), None)
    clean = _strip(base)
    if form == YESNO:  # the answer's own polarity, canonical; the thought's only if the answer states none
        for text in (clean, stated or ""):
            first = normalize(text).split()[:1]
            if first and first[0] in ("yes", "no"):
                return first[0]
        return None
    if form == CHOICE:
        options = choice_options(q)
        if options is None:
            return clean or None
        for text in (clean, stated or ""):
            norm = normalize(text)
            hits = [o for o in options if normalize(o) and normalize(o) in norm]
            # an answer that also names the other option, in a fuller spelling ("Pavel Sergeyevich Alexandrov"
            # for "Pavel Alexandrov"), does not resolve the choice: snapping it to one option may pick the wrong one
            named = [o for o in options if normalize(o) and set(normalize(o).split()) <= set(norm.split())]
            if len(hits) == 1 and len(named) == 1:
                return hits[0]
        return None
    if form in (DATE, YEAR):
        years = years_in(clean)
        if form == YEAR:  # "in 1859" -> "1859"; a longer answer may name more than the year: leave it
            return years[-1] if years and len(clean.split()) <= 3 else clean or None
        # complete a bare year only when the question asks for a date by name ("When ...?" is often a year)
        if years and not dates_in(clean) and "date" in q.lower():
            for h in trace.evidence.values():
                for d in dates_in(h.text):
                    if years[-1] in d and set(content_tokens(q)) & set(content_tokens(h.title + " " + h.text)):
                        return d
    elif form == ENTITY:
        words = normalize(clean).split()
        if words and len(words) <= 2 and not any(w.isdigit() for w in words):
            pool = [stated or ""] + [_PAREN.sub("", h.title) for h in trace.evidence.values()]
            for name in pool:
                n = normalize(name).split()
                if len(n) > len(words) and n[-len(words) :] == words and len(n) <= len(words) + 3:
                    return name
    return clean or None


def finalize(trace: Trace, base: str) -> Finalization:
    """Keep ``base`` or replace it by the refined candidate, by the deterministic rule above."""
    refined = refine(trace, base)
    if not refined or refined.strip() == base.strip():
        return Finalization(base, base, refined, False, "none", 0.0)
    base_support = trace.support(base)
    gain = trace.support(refined) - base_support
    q = trace.question
    form = question_form(q)
    if (is_comparison(q) and form not in (YESNO, CHOICE)) or (
        form not in (YESNO, CHOICE) and compositionality(q) >= 0.5 and base_support < 0.5 and gain <= 0
    ):
        return Finalization(base, base, refined, False, "blocked", gain)
    if trace.decompositions:
        return Finalization(base, base, refined, False, "decomposed", gain)
    lb, lr = len(base.split()), len(refined.split())
    if form in (YESNO, CHOICE):
        branch, ok = "binary", True
    elif refined == _strip(base):  # only filler removed ("The answer is X." -> "X"): the span itself is kept
        branch, ok = "compact", True
    elif normalize(base) and normalize(base) in normalize(refined):  # completes the span: "1859" -> a full date
        branch, ok = "explicit", gain >= 0 and lr <= lb + 3
    elif form in TYPED:
        branch, ok = "typed", gain >= 0.5 and lr <= lb + 1
    else:
        branch, ok = "compact", gain > 0 and lr <= lb + 2
    return Finalization(refined if ok else base, base, refined, ok, branch, gain)
