"""Answer forms of multi-hop questions, and the standard QA scores.

:func:`question_form` tells from the question alone what shape its answer takes (the finalizer and the
simulated model need it); :func:`exact_match` and :func:`f1` are the SQuAD-style scores over the gold aliases.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = [
    "YESNO",
    "CHOICE",
    "DATE",
    "YEAR",
    "NUMBER",
    "ENTITY",
    "choice_options",
    "compositionality",
    "dates_in",
    "exact_match",
    "f1",
    "is_comparison",
    "normalize",
    "question_form",
    "years_in",
]

YESNO, CHOICE, DATE, YEAR, NUMBER, ENTITY = "yesno", "choice", "date", "year", "number", "entity"
_AUX = ("is", "are", "was", "were", "do", "does", "did", "can", "could", "has", "have", "had", "will", "would")
_CHOICE = re.compile(r",?\s*(?:the\s+)?([^,?]+?)\s+or\s+(?:the\s+)?([^,?]+?)\s*\?*$", re.IGNORECASE)
_COMPARATIVE = re.compile(
    r"\b(earlier|later|older|younger|larger|smaller|longer|shorter|higher|lower|bigger|closer|farther|oldest|"
    r"youngest|both|same|more|fewer|less)\b|\b\w+ed first\b|\bborn first\b|\bcame first\b|\bfirst,",
    re.IGNORECASE,
)
_BRIDGE = re.compile(
    r"\b(who|which|that|whose|where)\b.+\b(is|was|were|are|did|does|played|directed|founded|born|wrote)\b"
    r"|\bof the\b|'s\b",
    re.IGNORECASE,
)
_MONTH = "january|february|march|april|may|june|july|august|september|october|november|december"
MONTHS = tuple(_MONTH.split("|"))
_DATE = re.compile(rf"\b(\d{{1,2}}\s+(?:{_MONTH})\s+\d{{3,4}}|(?:{_MONTH})\s+\d{{1,2}},?\s+\d{{3,4}})\b", re.IGNORECASE)
_YEAR = re.compile(r"\b(1\d{3}|20\d{2})\b")


def question_form(question: str) -> str:
    """The answer form a question asks for (one of the module's constants)."""
    q = question.strip().lower()
    if choice_options(question) is not None:
        return CHOICE
    if q.split(" ", 1)[0] in _AUX:
        return YESNO
    if q.startswith(("what year", "which year", "in what year", "in which year")):
        return YEAR
    if q.startswith(("when", "what date", "on what date", "what is the date", "what was the date")):
        return DATE
    if q.startswith(("how many", "how much", "how long", "how old", "what number")):
        return NUMBER
    return ENTITY


def choice_options(question: str) -> tuple[str, str] | None:
    """The two options of a question like "Who was born first, Ann Ro or Bo Lin?", if it is one."""
    m = _CHOICE.search(question.strip()) if " or " in question else None
    if m is None:
        return None
    # The options hold no comma, so a match lies after the question's last comma, if it has one.
    a, b = m.group(1).strip(), m.group(2).strip()
    if not a or not b or len(a.split()) > 8 or len(b.split()) > 8:
        return None
    return a, b


def is_comparison(question: str) -> bool:
    return question_form(question) == CHOICE or bool(_COMPARATIVE.search(question))


def compositionality(question: str) -> float:
    """How multi-hop a question looks, in [0, 1], from its wording alone (bridge and comparison cues)."""
    score = (0.5 if _BRIDGE.search(question) else 0.0) + (0.3 if is_comparison(question) else 0.0)
    score += min(0.3, max(0.0, (len(question.split()) - 8) / 40))
    return min(1.0, score)


def dates_in(text: str) -> list[str]:
    """Full dates in ``text`` ("10 September 1859", "September 10, 1859")."""
    return [m.group(1) for m in _DATE.finditer(text)]


def years_in(text: str) -> list[str]:
    """Four-digit years in ``text``."""
    return _YEAR.findall(text)


_PUNCTUATION = str.maketrans("", "", string.punctuation)


def normalize(text: str) -> str:
    """The SQuAD normalization EM and F1 use: lower case, no punctuation, no articles, single spaces."""
    text = text.lower().translate(_PUNCTUATION)
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def exact_match(prediction: str, golds: Sequence[str]) -> float:
    p = normalize(prediction)
    return float(any(p == normalize(g) for g in golds))


def f1(prediction: str, golds: Sequence[str]) -> float:
    best = 0.0
    p = normalize(prediction)
    pred = p.split()
    for g in golds:
        n = normalize(g)
        gold = n.split()
        if not pred or not gold:
            best = max(best, float(pred == gold))
            continue
        if n in ("yes", "no", "noanswer") and p != n:
            continue
        same = sum((Counter(pred) & Counter(gold)).values())
        if same == 0:
            continue
        precision, recall = same / len(pred), same / len(gold)
        best = max(best, 2 * precision * recall / (precision + recall))
    return best
