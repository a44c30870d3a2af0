"""Answer-form errors an LLM makes, family by family, and how the risk-controlled finalizer treats them.

The families are written from the answers themselves (how LLM answers go wrong in form), not from the
simulated model's slips (``adapters.sim_agent``) or the finalizer's rules (``planners.finalizer``), and were not
tuned on the finalizer. The evidence a corrupted answer is finalized against is what the agent's first search
returns: BM25 over the data set's pooled paragraphs with the question as the query, top 5; the thought states no
candidate, so nothing in the trace comes from gold but the corrupted answer itself. ``tests/test_finalizer.py``
asserts bounds on these tallies; ``benchmarks/finalizer_precision.py`` prints them.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

from planners.finalizer import finalize
from runtime.types import Action, Hit, Step, Trace
from runtime.types.answers import f1, normalize
from tools.qa_data import QAExample, pool_corpus
from tools.retrieval import BM25Search

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

__all__ = ["FAMILIES", "Case", "Tally", "is_yesno", "measure", "retrieved_trace"]

# -- answer-form errors, family by family ------------------------------------------------------------------

_COUNTRIES = {
    "United States": "American", "United Kingdom": "British", "England": "English", "Scotland": "Scottish",
    "Wales": "Welsh", "Ireland": "Irish", "France": "French", "Germany": "German", "Italy": "Italian",
    "Spain": "Spanish", "Portugal": "Portuguese", "Netherlands": "Dutch", "Belgium": "Belgian",
    "Switzerland": "Swiss", "Austria": "Austrian", "Sweden": "Swedish", "Norway": "Norwegian",
    "Denmark": "Danish", "Finland": "Finnish", "Poland": "Polish", "Hungary": "Hungarian", "Greece": "Greek",
    "Turkey": "Turkish", "Russia": "Russian", "Canada": "Canadian", "Mexico": "Mexican", "Brazil": "Brazilian",
    "Argentina": "Argentine", "Australia": "Australian", "New Zealand": "New Zealander", "Japan": "Japanese",
    "China": "Chinese", "India": "Indian", "Pakistan": "Pakistani", "Iran": "Iranian", "Israel": "Israeli",
    "Egypt": "Egyptian", "South Korea": "South Korean", "Philippines": "Filipino", "South Africa": "South African",
}  # fmt: skip
_DEMONYMS = {v: k for k, v in _COUNTRIES.items()}
_ONES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
         "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen")  # fmt: skip
_TENS = ("", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")
_MONTHS = "January|February|March|April|May|June|July|August|September|October|November|December"
_FULL_DATE = re.compile(rf"\b(?:\d{{1,2}} (?:{_MONTHS}) \d{{4}}|(?:{_MONTHS}) \d{{1,2}}, \d{{4}})\b")
_LEADING_NUMBER = re.compile(r"^(\d[\d,]*)(?:\s+(\S.*))?$")
# what a Wikipedia title's disambiguation says, by the kind of thing a "Which/What <kind> ..." question asks for
_KINDS = {"film": "film", "movie": "film", "song": "song", "album": "album", "band": "band", "novel": "novel",
          "book": "novel", "series": "TV series", "show": "TV series", "magazine": "magazine", "opera": "opera",
          "game": "video game", "river": "river", "ship": "ship", "company": "company",
          "newspaper": "newspaper"}  # fmt: skip


def _spelled(n: int) -> str:
    """``n`` (0 to 999) in English words, as a model writes a count out."""
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + ("" if n % 10 == 0 else "-" + _ONES[n % 10])
    rest = n % 100
    return f"{_ONES[n // 100]} hundred" + ("" if rest == 0 else " and " + _spelled(rest))


def is_yesno(gold: str) -> bool:
    return normalize(gold) in ("yes", "no")


def _is_name(gold: str) -> bool:
    """Capitalized words only, no digits: a person's, a place's or a work's name."""
    words = gold.split()
    return 2 <= len(words) <= 4 and all(w[0].isupper() and w.replace(".", "").isalpha() for w in words)


def markdown(ex: QAExample, gold: str, hits: Sequence[Hit]) -> list[str]:
    """Chat models format the answer for display: bold, sometimes italics."""
    return [f"**{gold}**", f"*{gold}*"]


def quoted(ex: QAExample, gold: str, hits: Sequence[Hit]) -> list[str]:
    """Titles and names put in quotes, typographic ones included (SQuAD's normalization keeps those)."""
    return [f'"{gold}"', f"\u201c{gold}\u201d"]


def labelled(ex: QAExample, gold: str, hits: Sequence[Hit]) -> list[str]:
    """The answer slot repeats the label of a chain-of-thought or few-shot prompt's output format."""
    return [f"Answer: {gold}", f"Final answer - {gold}", f"**Final Answer:** {gold}", f"The final answer is {gold}."]


def explained(ex: QAExample, gold: str, hits: Sequence[Hit]) -> list[str]:
    """A justification trails the span: in parentheses, after a dash, or as a second sentence."""
    source = hits[0].title if hits else "retrieved"
    return [f"{gold} (based on the search results)", f"{gold} - the passage states this directly",
            f"{gold}. The {source} article says so."]  # fmt: skip


def article(ex: QAExample, gold: str, hits: Sequence[Hit]) -> list[str]:
    """A leading article the gold span does not have ("the Velmora Opera House")."""
    if is_yesno(gold) or gold.lower().startswith(("the ", "a ", "an ")) or gold[:1].isdigit():
        return []
    return [f"the {gold}"]


def case(ex: QAExample, gold: str, hits: Sequence[Hit]) -> list[str]:
    """All lower case (a casual style) or all upper case (an emphasis habit)."""
    return [v for v in (gold.lower(), gold.upper()) if v != gold]


def demonym(ex: QAExample, gold: str, hits: Sequence[Hit]) -> list[str]:
    """The nationality for the country or the country for the nationality (HotpotQA asks both ways)."""
    other = _COUNTRIES.get(gold) or _DEMONYMS.get(gold)
    return [other] if other else []


def initials(ex: QAExample, gold: str, hits: Sequence[Hit]) -> list[str]:
    """A person's given names shortened to initials ("M. Oresund")."""
    words = gold.split()
    if not re.match(r"(?:who|whom|whose)\b", ex.question.lower()) or not _is_name(gold):
        return []
    return [" ".join(f"{w[0]}." for w in words[:-1]) + f" {words[-1]}"]


def acronym(ex: QAExample, gold: str, hits: Sequence[Hit]) -> list[str]:
    """An organisation's or a work's name given as its initials ("NBA")."""
    capitals = [w for w in gold.split() if w[:1].isupper()]
    if len(capitals) < 3 or re.match(r"(?:who|whom|whose)\b", ex.question.lower()) or not _is_name(gold):
        return []
    return ["".join(w[0] for w in capitals)]


def year_for_date(ex: QAExample, gold: str, hits: Sequence[Hit]) -> list[str]:
    """Only the year where the gold is a full date: the coarse slot."""
    return [gold[-4:]] if _FULL_DATE.fullmatch(gold) else []


def date_for_year(ex: QAExample, gold: str, hits: Sequence[Hit]) -> list[str]:
    """The full date a retrieved passage gives where the gold is its year: the answer copied too wide."""
    if not re.fullmatch(r"\d{4}", gold):
        return []
    dates = [d for h in hits for d in _FULL_DATE.findall(h.text) if d.endswith(gold)]
    return dates[:1]


def number_words(ex: QAExample, gold: str, hits: Sequence[Hit]) -> list[str]:
    """A count written out in words, or a count in words given in digits."""
    m = _LEADING_NUMBER.match(gold)
    if m and int(m[1].replace(",", "")) < 1000:
        return [" ".join([_spelled(int(m[1].replace(",", ""))), *([m[2]] if m[2] else [])])]
    first, _, rest = gold.partition(" ")
    if first.lower() in _ONES:
        return [" ".join([str(_ONES.index(first.lower())), *([rest] if rest else [])])]
    return []


def units(ex: QAExample, gold: str, hits: Sequence[Hit]) -> list[str]:
    """The unit dropped from a measure ("41" for "41 metres"), or the counted noun added to a bare count."""
    m = _LEADING_NUMBER.match(gold)
    if m is None or re.fullmatch(r"\d{4}", gold):
        return []
    if m[2]:
        return [m[1]]
    counted = re.match(r"how many (\w+)", ex.question.lower())
    return [f"{gold} {counted[1]}"] if counted else []


def conjoined(ex: QAExample, gold: str, hits: Sequence[Hit]) -> list[str]:
    """A hedge between two candidates, "X and Y", the other one taken from a retrieved title."""
    if is_yesno(gold) or any(c.isdigit() for c in gold):
        return []
    mine = set(normalize(gold).split())
    other = next((h.title for h in hits if h.title and not mine & set(normalize(h.title).split())), None)
    if other is None:
        return []
    return [f"{gold} and {other}" if zlib.crc32(ex.id.encode()) % 2 else f"{other} and {gold}"]


def disambiguated(ex: QAExample, gold: str, hits: Sequence[Hit]) -> list[str]:
    """A Wikipedia title copied with its disambiguation, "Heat (film)", on "Which film ...?" questions."""
    words = ex.question.lower().rstrip("?").split()
    if is_yesno(gold) or not words or words[0] not in ("which", "what"):
        return []
    kind = next((_KINDS[w] for w in words[1:4] if w in _KINDS), None)
    return [f"{gold} ({kind})"] if kind else []


def correct(ex: QAExample, gold: str, hits: Sequence[Hit]) -> list[str]:
    """The gold answer and its aliases, as they are: the finalizer must leave them alone."""
    return list(dict.fromkeys(ex.answers))


FAMILIES: dict[str, Callable[[QAExample, str, Sequence[Hit]], list[str]]] = {
    f.__name__.replace("_", " "): f
    for f in (correct, markdown, quoted, labelled, explained, article, case, demonym, initials, acronym,
              year_for_date, date_for_year, number_words, units, conjoined, disambiguated)
}  # fmt: skip


# -- the measurement -----------------------------------------------------------------------------------------


@dataclass(slots=True)
class Tally:
    """Per family: cases, how often the finalizer changed the answer, and how often that raised or lowered F1."""

    n: int = 0
    changed: int = 0
    repaired: int = 0
    harmed: int = 0


@dataclass(frozen=True, slots=True)
class Case:
    family: str
    question: str
    gold: str
    base: str
    final: str
    branch: str


def retrieved_trace(question: str, hits: Sequence[Hit], answer: str) -> Trace:
    """The trace of an agent that searched once with the question and then answered, stating no candidate."""
    trace = Trace(question)
    trace.steps.append(Step(Action.SEARCH, None, 40, query=question, hits=tuple(hits)))
    trace.evidence.update((h.id, h) for h in hits)
    trace.steps.append(Step(Action.ANSWER, None, 20, answer=answer))
    return trace


def measure(examples: Sequence[QAExample]) -> tuple[dict[str, Tally], list[Case]]:
    """The tally per family over ``examples``, and every case where the finalizer lowered F1."""
    index = BM25Search(pool_corpus(examples), cache_dir=None)
    tallies = {name: Tally() for name in FAMILIES}
    harmed: list[Case] = []
    for ex in examples:
        if not ex.answers:
            continue
        hits = index.search_now(ex.question, 5)
        for name, family in FAMILIES.items():
            for base in family(ex, ex.answers[0], hits):
                fin = finalize(retrieved_trace(ex.question, hits, base), base)
                before, after = f1(base, ex.answers), f1(fin.answer, ex.answers)
                t = tallies[name]
                t.n += 1
                t.changed += fin.answer != base
                t.repaired += after > before
                t.harmed += after < before
                if after < before:
                    harmed.append(Case(name, ex.question, ex.answers[0], base, fin.answer, fin.branch))
    return tallies, harmed
