"""Multi-hop QA data: loaders for HotpotQA (IRCoT format), MuSiQue and 2WikiMultihopQA, and corpora.

Every loader returns :class:`QAExample` values of one shape. The corpus a search agent retrieves from is
the pooled, de-duplicated paragraphs of a data set (:func:`pool_corpus`), or a JSONL file of ``{"id",
"title", "text"}`` rows (:func:`read_corpus`). Which paragraphs support an answer (``supporting``) is
kept for the simulated search agent's environment and for evaluation, never for the controllers.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runtime.types import UsageError
from runtime.types._errors import unreadable

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

__all__ = [
    "FORMATS",
    "SPLITS",
    "Paragraph",
    "QAExample",
    "load_qa",
    "pool_corpus",
    "read_corpus",
    "split",
    "write_corpus",
]


@dataclass(frozen=True, slots=True)
class Paragraph:
    id: str
    title: str
    text: str


@dataclass(frozen=True, slots=True)
class QAExample:
    """One question with its gold answers and the paragraphs the data set gives with it.

    Attributes:
        answers: the gold answer first, then its aliases.
        kind: the data set's question type where it has one (2Wiki: compositional, comparison, inference,
            bridge_comparison; MuSiQue: ``2hop``...``4hop``), else ``""``.
        supporting: ids of the paragraphs that support the answer, in hop order where the data set gives
            one (MuSiQue's decomposition), else in the order it lists them.
        hops: the gold decomposition's sub-questions where the data set has one (MuSiQue).
    """

    id: str
    question: str
    answers: tuple[str, ...]
    paragraphs: tuple[Paragraph, ...]
    supporting: tuple[str, ...]
    kind: str = ""
    hops: tuple[str, ...] = ()
    source: str = ""


def _para(title: str, text: str) -> Paragraph:
    """A paragraph whose id is stable across data sets: the same paragraph pooled twice is one corpus entry."""
    return Paragraph(hashlib.sha1(f"{title}\n{text}".encode()).hexdigest()[:16], title, text)


def _ircot(rows: list[dict[str, Any]]) -> tuple[list[Paragraph], list[str]]:
    """The paragraphs of IRCoT-style rows (HotpotQA, MuSiQue) and the ids of those marked supporting."""
    paras = [_para(c["title"], c["paragraph_text"]) for c in rows]
    return paras, [p.id for p, c in zip(paras, rows, strict=True) if c.get("is_supporting")]


def _hotpot(d: dict[str, Any]) -> QAExample:
    paras, support = _ircot(d["contexts"])
    answers = tuple(s for a in d["answers_objects"] for s in a.get("spans", []) if s)
    return QAExample(str(d["question_id"]), d["question_text"], answers, tuple(paras), tuple(support),
                     source="hotpotqa")  # fmt: skip


def _musique(d: dict[str, Any]) -> QAExample:
    paras, support = _ircot(d["paragraphs"])
    by_idx = {c.get("idx"): p.id for c, p in zip(d["paragraphs"], paras, strict=True)}
    decomposition = d.get("question_decomposition", [])
    hops = tuple(str(h["question"]) for h in decomposition)
    ordered = [by_idx[h["paragraph_support_idx"]] for h in decomposition if h.get("paragraph_support_idx") in by_idx]
    support = list(dict.fromkeys([*ordered, *support]))  # hop order first
    kind = f"{len(hops)}hop" if hops else ""
    answers = (d["answer"], *d.get("answer_aliases", []))
    return QAExample(str(d["id"]), d["question"], tuple(answers), tuple(paras), tuple(support), kind, hops,
                     "musique")  # fmt: skip


def _two_wiki(d: dict[str, Any]) -> QAExample:
    paras = [_para(title, " ".join(sentences)) for title, sentences in d["context"]]
    by_title = {p.title: p.id for p in paras}
    support = tuple(dict.fromkeys(by_title[t] for t, _ in d.get("supporting_facts", []) if t in by_title))
    return QAExample(str(d["_id"]), d["question"], (d["answer"],), tuple(paras), support, d.get("type", ""),
                     source="2wikimultihopqa")  # fmt: skip


FORMATS = {"hotpotqa": _hotpot, "musique": _musique, "2wikimultihopqa": _two_wiki}
_KEYS = {"question_id": "hotpotqa", "question_decomposition": "musique", "_id": "2wikimultihopqa"}


def _lines(p: Path, what: str) -> list[tuple[int, str]]:
    """The non-blank lines of ``p``, numbered from 1."""
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except (OSError, ValueError) as exc:
        raise UsageError(f"{p}: cannot read {what} ({unreadable(exc)})") from None
    return [(n, line) for n, line in enumerate(lines, 1) if line.strip()]


def load_qa(path: str | Path, *, fmt: str | None = None, limit: int | None = None) -> list[QAExample]:
    """Read a JSONL data set in any of :data:`FORMATS` (detected from its first row if ``fmt`` is None).

    Raises:
        UsageError: the file is missing, not JSONL, or not in a known format (the message says which row).
    """
    p = Path(path)
    rows = _lines(p, "the data set")
    if fmt is not None and fmt not in FORMATS:
        raise UsageError(f"unknown format {fmt!r} (known: {', '.join(FORMATS)})")
    out: list[QAExample] = []
    for n, line in rows:
        if limit is not None and len(out) >= limit:
            break
        try:
            row = json.loads(line)
        except (ValueError, RecursionError) as exc:  # a JSONDecodeError, too many digits, too deep
            raise UsageError(f"{p}: row {n}: not JSON ({getattr(exc, 'msg', exc)})") from None
        if fmt is None:
            fmt = next((f for k, f in _KEYS.items() if isinstance(row, dict) and k in row), None)
            if fmt is None:
                keys = sorted(row) if isinstance(row, dict) else type(row).__name__
                raise UsageError(f"{p}: row {n}: not HotpotQA, MuSiQue or 2WikiMultihopQA (keys {keys})")
        try:
            out.append(FORMATS[fmt](row))
        except (KeyError, TypeError, ValueError) as exc:
            raise UsageError(f"{p}: row {n}: malformed {fmt} row ({exc!r})") from None
    return out


SPLITS = ("dev", "test", "all")


def split(examples: Iterable[QAExample], part: str) -> list[QAExample]:
    """The development or the held-out part of a data set: a question is ``dev`` when the SHA-1 of its data set
    and id, read as a number, is 0 modulo 4 (a quarter of the questions, fixed by the data alone), else ``test``.
    Designs (controllers, the simulator's parameters) are settled on ``dev``; headline numbers come from ``test``.

    Raises:
        UsageError: ``part`` is not one of :data:`SPLITS`.
    """
    if part not in SPLITS:
        raise UsageError(f"unknown split {part!r} (known: {', '.join(SPLITS)})")
    if part == "all":
        return list(examples)
    return [ex for ex in examples if _is_dev(ex) == (part == "dev")]


def _is_dev(ex: QAExample) -> bool:
    return int(hashlib.sha1(f"{ex.source}:{ex.id}".encode()).hexdigest(), 16) % 4 == 0


def pool_corpus(examples: Iterable[QAExample]) -> list[Paragraph]:
    """Every paragraph of ``examples`` once, in first-seen order."""
    seen: dict[str, Paragraph] = {}
    for ex in examples:
        for p in ex.paragraphs:
            seen.setdefault(p.id, p)
    return list(seen.values())


def read_corpus(path: str | Path) -> list[Paragraph]:
    """A corpus file: JSONL rows ``{"id", "title", "text"}`` (``title`` may be empty)."""
    p = Path(path)
    out = []
    for n, line in _lines(p, "the corpus"):
        try:
            row = json.loads(line)
            out.append(Paragraph(str(row["id"]), str(row.get("title", "")), str(row["text"])))
        except (ValueError, RecursionError, KeyError, TypeError) as exc:
            raise UsageError(f"{p}: row {n}: expected {{'id', 'title', 'text'}} ({exc!r})") from None
    if not out:
        raise UsageError(f"{p}: the corpus is empty")
    return out


def write_corpus(paragraphs: Sequence[Paragraph], path: str | Path) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    with p.open("w", encoding="utf-8") as f:
        for para in paragraphs:
            f.write(json.dumps({"id": para.id, "title": para.title, "text": para.text}) + "\n")
    return p
