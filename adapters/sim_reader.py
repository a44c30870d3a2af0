"""What the simulated search agent makes of the text it has read: candidate answers, scored, from the question
and the retrieved paragraphs alone.

No gold label reaches this module: it sees the question and :class:`runtime.types.Hit` values (what the search
tool returned), exactly as a model's prompt shows them. It is a deliberately plain extractive reader:

- every sentence of a read paragraph gets a relevance: the share of the question's content words found in it or
  in its paragraph's title, times a seeded log-normal factor of spread ``distraction`` per paragraph (how easily
  an off-topic passage looks relevant: the over-search harm, since every extra paragraph is another chance for a
  wrong one to look best);
- candidates come from the answer form (:func:`runtime.types.answers.question_form`): the two options of a choice
  (compared on a date or year found beside each, for comparatives), yes or no (yes when every entity the
  question names has a paragraph sharing its other content words), full dates, years, numbers, or names
  (capitalised spans and paragraph titles that the question does not already contain);
- a candidate's score is the best relevance among the sentences that contain it plus a little per further
  mention; its support is the share of the question's content words that sentence covers.
"""

from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from runtime.types import content_tokens
from runtime.types.answers import (
    CHOICE,
    DATE,
    MONTHS,
    NUMBER,
    YEAR,
    YESNO,
    choice_options,
    dates_in,
    normalize,
    question_form,
    years_in,
)

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from runtime.types import Hit

__all__ = ["Reading", "read", "relevant_sentences", "sentences"]

_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(])")
_NAME = re.compile(r"\b[A-Z][\w'\u2019.\-]*(?:\s+(?:of|the|de|la|le|von|van|du|del|da)?\s*[A-Z][\w'\u2019.\-]*)*")
_NUMBER = re.compile(r"\b\d[\d,]*(?:\.\d+)?\b")
_PAREN = re.compile(r"\s*\([^)]*\)")
_DEMONYM = ("ian", "ese", "ish", "ean", "can", "ern", "ic")
_GENERIC = frozenset(
    ("history", "career", "life", "early", "personal", "background", "plot", "music", "film", "one", "two", "three")
)
_EARLY = re.compile(r"\b(earlier|older|first|oldest|before|earliest)\b", re.IGNORECASE)
_LATE = re.compile(r"\b(later|younger|last|youngest|after|latest|more recent)\b", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Reading:
    """The reader's view of the evidence: candidates best first, with scores and support in [0, 1]."""

    candidates: tuple[tuple[str, float, float], ...]  # (answer, score, support)

    @property
    def margin(self) -> float:
        """How far the best candidate leads the next one, relative to its score (1 when it stands alone)."""
        if not self.candidates:
            return 0.0
        top = self.candidates[0][1]
        second = self.candidates[1][1] if len(self.candidates) > 1 else 0.0
        return 0.0 if top <= 0 else max(0.0, (top - second) / top)


def sentences(hit: Hit) -> list[str]:
    """The sentences of a paragraph."""
    return [s.strip() for s in _SENTENCE.split(hit.text) if s.strip()]


def _relevance(question_words: set[str], hit: Hit, sentence: str) -> float:
    if not question_words:
        return 0.0
    words = set(content_tokens(f"{hit.title} {sentence}"))
    return len(question_words & words) / len(question_words)


def relevant_sentences(question: str, hits: Iterable[Hit], k: int) -> list[str]:
    """The ``k`` sentences most relevant to ``question`` (Reason-in-Documents notes), in relevance order."""
    q = set(content_tokens(question))
    scored = [(_relevance(q, h, s), n, s) for n, h in enumerate(hits) for s in sentences(h)]
    return [s for _, _, s in sorted(scored, key=lambda x: (-x[0], x[1]))[:k]]


def _names(sentence: str, hit: Hit) -> list[str]:
    found = [m.group(0).strip(" .,'\u2019") for m in _NAME.finditer(sentence)]
    return [*found, _PAREN.sub("", hit.title)]


def _form_candidates(question: str, form: str, sentence: str, hit: Hit) -> list[str]:
    if form == DATE:
        return dates_in(sentence) or years_in(sentence)
    if form == YEAR:
        return years_in(sentence)
    if form == NUMBER:
        return [n.group(0) for n in _NUMBER.finditer(sentence) if not years_in(n.group(0))]
    q = set(content_tokens(question))
    return [n for n in _names(sentence, hit) if (w := set(content_tokens(n))) and not w <= q and not _untyped(n)]


def _untyped(name: str) -> bool:
    """A capitalised word that is no answer to a "who/which/what" question: a month, a demonym, an initial."""
    words = name.split()
    if len(words) > 1:
        return False
    w = words[0].lower()
    return len(w) < 3 or w in MONTHS or w.endswith(_DEMONYM) or w in _GENERIC


def read(question: str, hits: Sequence[Hit], *, distraction: float, key: str, form: str | None = None) -> Reading:
    """Score the candidate answers ``hits`` offer for ``question`` (in ``form``, by default the question's own).

    ``key`` seeds the per-paragraph distraction factors (with the paragraph's id), so the same paragraph looks
    the same way every time the same run reads it.
    """
    form = form or question_form(question)
    q = set(content_tokens(question))
    noise = {h.id: math.exp(distraction * random.Random(f"{key}:distract:{h.id}").gauss()) for h in hits}
    rated = [(_relevance(q, h, s) * noise[h.id], s, h) for h in hits for s in sentences(h)]
    if form in (YESNO, CHOICE):
        return _decide(question, form, rated)
    scores: dict[str, list[float]] = {}
    support: dict[str, float] = {}
    shown: dict[str, str] = {}
    for rel, s, h in rated:
        for c in dict.fromkeys(_form_candidates(question, form, s, h)):
            n = normalize(c)
            if not n:
                continue
            shown.setdefault(n, c)
            scores.setdefault(n, []).append(rel)
            support[n] = max(support.get(n, 0.0), _relevance(q, h, s))
    # the best sentence, a little per further mention, and a little per word (a full name over a surname)
    score = {n: max(r) + 0.05 * (len(r) - 1) + 0.03 * min(3, len(n.split())) for n, r in scores.items()}
    ranked = sorted(((shown[n], score[n], support[n]) for n in scores), key=lambda c: -c[1])
    return Reading(tuple(ranked))


def _decide(question: str, form: str, rated: list[tuple[float, str, Hit]]) -> Reading:
    """Yes/no and two-option questions: weigh each side by what the evidence says about its entities."""
    options = choice_options(question)
    if form == CHOICE and options is not None:
        a, b = (_option(o) for o in options)
        options = (a, b)
        side = {o: [(rel, s, h) for rel, s, h in rated if _mentions(o, s, h)] for o in options}
        dated = {o: _first_year(side[o]) for o in options}
        ya, yb = dated[a], dated[b]
        if ya is not None and yb is not None and ya != yb and (_EARLY.search(question) or _LATE.search(question)):
            early = a if ya < yb else b
            win = early if _EARLY.search(question) else (b if early == a else a)
            lose = b if win == a else a
            rel = min(1.0, max(r for r, _, _ in side[win] + side[lose]))
            return Reading(((win, 0.6 + 0.4 * rel, rel), (lose, 0.3, rel)))
        weight = {o: max((r for r, _, _ in side[o]), default=0.0) for o in options}
        ranked = sorted(options, key=lambda o: -weight[o])
        return Reading(tuple((o, weight[o], min(1.0, weight[o])) for o in ranked))
    rest = question.split(" ", 1)[-1]  # past the auxiliary ("Are ..."), which is capitalised too
    entities = [n for n in (m.group(0) for m in _NAME.finditer(rest)) if content_tokens(n)] or [rest]
    others = set(content_tokens(question)) - {w for e in entities for w in content_tokens(e)}
    covered = []
    for e in entities:
        best = 0.0
        for rel, s, h in rated:
            if _mentions(e, s, h):
                words = set(content_tokens(f"{h.title} {s}"))
                best = max(best, len(others & words) / len(others) if others else rel)
        covered.append(best)
    if not covered or not any(covered):
        return Reading(())
    yes = min(covered)
    if yes >= 0.5:
        return Reading((("yes", yes, yes), ("no", 1.0 - yes, yes)))
    return Reading((("no", 1.0 - yes, 1.0 - yes), ("yes", yes, yes)))


def _option(text: str) -> str:
    """An option without the question's lead-in ("who is younger Keith Bostic" -> "Keith Bostic")."""
    names = [m.group(0) for m in _NAME.finditer(text) if content_tokens(m.group(0))]
    return names[-1] if names and not text[:1].isupper() else text


def _mentions(entity: str, sentence: str, hit: Hit) -> bool:
    words = set(content_tokens(entity))
    return bool(words) and words <= set(content_tokens(f"{hit.title} {sentence}"))


def _first_year(rated: list[tuple[float, str, Hit]]) -> int | None:
    for _, s, _ in sorted(rated, key=lambda x: -x[0]):
        years = years_in(s)
        if years:
            return int(years[0])
    return None
