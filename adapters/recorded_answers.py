"""Real models' recorded answers to the exam questions, served as a model backend.

:class:`RecordedAnswers` answers for one of the 9 models of the reflection data (``renze_attempts.csv``, Renze &
Guven 2024) what that model really answered, with the tokens it really used, so a generated workflow's model
choices, votes, escalations and costs are scored on real behaviour. It finds the question in the prompt
(:meth:`AnswerBook.find`) and replies ``"<model>'s recorded answer.\\nAnswer: <letter>"``:

- Repeats: every sample (n > 1, any temperature) gets the one recorded answer: the data holds one first answer
  per model and question, so self-consistency over one model gains nothing here (it would on a live model).
- Reconsider: a line ``Your previous answer: X`` (the protocol; no other wording is needed). If X is the
  model's own first answer and that was wrong, the reply is its ``retry`` row (the second attempt of an agent
  told only that it was wrong; its answer and tokens). If it was right, the model, told the same, changes it
  with probability ``p_flip`` (drawn once per question and model) to another letter, and keeps it otherwise.
  By default ``p_flip`` is the model's own *change rate*: the share of its retry rows whose letter differs
  from its first answer (0.42 for GPT-4 to 0.59 for Gemini 1.0 Pro on the full data; the whole book's rate
  when the model has fewer than 20 retries). That is the assumption that a model told its answer is wrong
  changes it as often whether or not it was right (it cannot tell); the data cannot show what models do
  with a right answer, so ``p_flip`` may be given instead, as a sensitivity (0 keeps every right answer).
  A wrong first answer without a retry row (the full data has one for each) is repeated.
  If X is not the model's own answer, the reply is its own first answer: a program learns nothing from
  reconsidering an answer it did not produce.
- Verify: a line ``Proposed answer: X`` (checked before reconsider): ``Verdict: correct`` iff X is the
  model's own first answer (a model judges by what it would answer), with its first answer's tokens.
- Anything else without exactly one known question: ``I cannot answer this.`` (no answer: scored wrong), with
  tokens estimated from the text's length.

The answer key enters at one place only: whether the first answer was wrong picks the retry row. With the
default ``p_flip`` a reconsidered answer changes about as often whether it was right or wrong, so "reconsider"
is a gamble a workflow must earn with a signal of its own (a disagreement, a negative verdict): asked blindly
it loses points (a right answer dropped at the change rate costs more than a wrong one repaired gains).
With ``p_flip = 0`` every right answer survives and a blind reconsider can only gain: that setting leans on
the key, and the benchmark reports it only as a sensitivity. The agents that wrote with the answer in view
(``solution``, ``composite``, ``unredacted``) are never loaded, nor is the questions' ``solution``.

A first answer whose call failed (``error = 1``: 45 of the 7,200) is replayed as a reply without an answer that
costs nothing, as the file scores and a vendor bills it. Usage per sample otherwise: input = the recorded row's
input tokens, or the prompt's length estimate if that is larger (a prompt that carries more than the question
costs more); output = the row's output tokens (cut off at ``max_tokens``: no answer then). Every sample is
charged its input (k separate calls; an OpenAI ``n`` request would bill the prompt once). Latency on the run's
clock: ``ttft_s + output_tokens / tokens_per_s`` (:data:`tools.exams.TTFT_S`, :data:`tools.exams.TOKENS_PER_S`:
assumed, the data holds no timings); a cancelled sample is charged its input and the output it had streamed by
then.
"""

from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from adapters.sim import tokens_at
from runtime.types import Adapter, Finish, SampleEnd, UsageError
from tools.exams import TOKENS_PER_S, TTFT_S, attempts_file, load_exams
from tools.reflection_data import load_attempts

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence
    from pathlib import Path

    from runtime.types import Batch, Clock, Message, Report
    from tools.exams import ExamQuestion, ExamTask
    from tools.reflection_data import Attempt

__all__ = ["MIN_RETRIES", "UNKNOWN_REPLY", "AnswerBook", "RecordedAnswers", "Reply", "recorded_adapters"]

UNKNOWN_REPLY = "I cannot answer this."
MIN_RETRIES = 20  # retries of a model below which its change rate is the whole book's
_PROPOSED = re.compile(r"^[ \t*_>#-]*proposed answer[*_ \t]*:[*_ \t(\[]*([A-E])\b", re.IGNORECASE | re.MULTILINE)
_PREVIOUS = re.compile(r"^[ \t*_>#-]*your previous answer[*_ \t]*:[*_ \t(\[]*([A-E])\b", re.IGNORECASE | re.MULTILINE)


def _norm(text: str) -> str:
    return " ".join(text.split()).casefold()


def _tokens(text: str) -> int:
    """About a quarter of the text's bytes (a typical BPE rate), at least 1."""
    return max(1, math.ceil(len(text.encode("utf-8")) / 4))


class AnswerBook:
    """The questions and the clean recorded attempts, indexed to find a question in a prompt.

    A question is found when its text, its context and every choice's text all appear in the prompt
    (whitespace collapsed, case folded): two exams' questions that share a text are told apart by their
    choices or context. A prompt holding two different questions (a program that batches) finds none. The
    comprehensive exam repeats 70 questions of other exams word for word; a book holding both serves such a
    question with the first exam's answers in name order (build one per exam, as :meth:`of` does, to serve an
    exam's own).
    """

    def __init__(self, questions: Iterable[ExamQuestion], attempts: Iterable[Attempt]) -> None:
        self._groups: dict[tuple[str, str, tuple[str, ...]], ExamQuestion] = {}
        for q in sorted(questions, key=lambda q: q.exam):
            key = (_norm(q.question), _norm(q.context), tuple(_norm(text) for _, text in q.choices))
            self._groups.setdefault(key, q)
        self._first: dict[tuple[str, str, str], Attempt] = {}
        self._retry: dict[tuple[str, str, str], Attempt] = {}
        for a in attempts:
            if a.agent == "baseline":
                self._first[(a.model, *a.question)] = a
            elif a.agent == "retry":
                self._retry[(a.model, *a.question)] = a
        self.models = tuple(sorted({m for m, _, _ in self._first}))

    @classmethod
    def load(cls, data_dir: str | Path, exams: Sequence[str] | None = None) -> AnswerBook:
        """The book of a data folder (:func:`tools.exams.load_exams`).

        Raises:
            UsageError: as :func:`tools.exams.load_exams` and :func:`tools.reflection_data.load_attempts`.
        """
        return cls(load_exams(data_dir, exams), load_attempts(attempts_file(data_dir)))

    @classmethod
    def of(cls, task: ExamTask) -> AnswerBook:
        """The book of one exam."""
        return cls(task.questions, task.attempts)

    def find(self, prompt: str) -> ExamQuestion | None:
        """The one question the prompt holds, or None (no question, or several)."""
        text = _norm(prompt)
        found = [
            q
            for (question, context, choices), q in self._groups.items()
            if question in text and context in text and all(c in text for c in choices)
        ]
        return found[0] if len(found) == 1 else None

    def first(self, model: str, q: ExamQuestion) -> Attempt | None:
        """The model's first answer to the question."""
        return self._first.get((model, *q.key))

    def retry(self, model: str, q: ExamQuestion) -> Attempt | None:
        """The model's second attempt after being told its first answer was wrong (only wrong ones have one)."""
        return self._retry.get((model, *q.key))

    def change_rate(self, model: str) -> float:
        """The share of the model's retries that changed its first answer's letter (the whole book's share when
        the model has fewer than :data:`MIN_RETRIES`; 0 when the book has no retry at all)."""

        def changed(rows: Iterable[tuple[tuple[str, str, str], Attempt]]) -> tuple[int, int]:
            flags = [a.answer != self._first[key].answer for key, a in rows if key in self._first]
            return sum(flags), len(flags)

        own = changed((k, a) for k, a in self._retry.items() if k[0] == model)
        got, n = own if own[1] >= MIN_RETRIES else changed(self._retry.items())
        return got / n if n else 0.0


@dataclass(frozen=True, slots=True)
class Reply:
    """What the model answers a prompt, and the tokens one sample of it uses."""

    text: str
    input_tokens: int
    output_tokens: int


class RecordedAnswers(Adapter):
    """One model's recorded answers (see the module docstring for every rule).

    Args:
        book: the questions and attempts.
        model: the model's name in the data (``gpt-4``, ``claude-3-opus-20240229``, ...).
        clock: the run's clock (pass the same one to the run): the samples' latencies are slept on it.
        tokens_per_s: output tokens per second (default :data:`tools.exams.TOKENS_PER_S`, assumed).
        ttft_s: seconds to the first token (default :data:`tools.exams.TTFT_S`, assumed).
        p_flip: the chance that reconsidering its own right answer makes the model change it (default None: the
            model's change rate, :meth:`AnswerBook.change_rate`).
        seed: seeds the ``p_flip`` draws, one per question and model.

    Raises:
        UsageError: an unknown model, or a parameter out of range.
    """

    def __init__(
        self,
        book: AnswerBook,
        model: str,
        *,
        clock: Clock,
        tokens_per_s: float = TOKENS_PER_S,
        ttft_s: float = TTFT_S,
        p_flip: float | None = None,
        seed: int = 0,
    ) -> None:
        if model not in book.models:
            raise UsageError(f"no recorded answers of model {model!r} (models: {', '.join(book.models)})")
        if not (math.isfinite(tokens_per_s) and tokens_per_s > 0 and math.isfinite(ttft_s) and ttft_s >= 0):
            raise UsageError(f"tokens_per_s must be > 0 and ttft_s >= 0, not {tokens_per_s!r}, {ttft_s!r}")
        if p_flip is None:
            p_flip = book.change_rate(model)
        if not 0.0 <= p_flip <= 1.0:
            raise UsageError(f"p_flip must be in [0, 1], not {p_flip!r}")
        self.book, self.model, self.clock = book, model, clock
        self.tokens_per_s, self.ttft_s, self.p_flip, self.seed = tokens_per_s, ttft_s, p_flip, seed

    def reply(self, messages: Sequence[Message]) -> Reply:
        """The answer to a prompt and one sample's usage (before any ``max_tokens`` cut)."""
        prompt = "\n\n".join(m.content for m in messages)
        estimate = 3 + sum(4 + _tokens(m.content) for m in messages)
        q = self.book.find(prompt)
        first = None if q is None else self.book.first(self.model, q)
        if q is None or first is None:
            return Reply(UNKNOWN_REPLY, estimate, _tokens(UNKNOWN_REPLY))
        if first.error:  # the recorded call failed: no answer, nothing billed
            return Reply(f"{self.model}'s recorded call failed.", 0, 0)
        row, letter = first, first.answer
        proposed = _PROPOSED.findall(prompt)
        previous = _PREVIOUS.findall(prompt)
        if proposed:
            verdict = "correct" if proposed[-1].upper() == first.answer else "incorrect"
            text = f"{self.model}'s recorded judgement.\nVerdict: {verdict}"
            return Reply(text, max(row.input_tokens, estimate), row.output_tokens)
        if previous and previous[-1].upper() == first.answer:
            retry = self.book.retry(self.model, q)
            if not first.right and retry is not None:  # the answer key's one use: wrong firsts have a retry row
                row, letter = retry, retry.answer
            elif first.right and self.p_flip > 0:
                rng = random.Random(f"{self.seed}:{q.exam}:{q.id}:{self.model}")
                if rng.random() < self.p_flip:
                    letter = rng.choice([c for c in q.letters if c != first.answer])
        text = f"{self.model}'s recorded answer.\nAnswer: {letter}"
        return Reply(text, max(row.input_tokens, estimate), row.output_tokens)

    def input_tokens(self, estimate: int, messages: tuple[Message, ...] | None) -> int:
        if messages is None:
            raise UsageError("recorded answers need the prompt")
        return self.reply(messages).input_tokens

    async def run(self, batch: Batch, report: Report) -> None:
        if batch.messages is None:  # the executor never sends one (``input_tokens`` refuses it first)
            raise UsageError("recorded answers need the prompt")
        r = self.reply(batch.messages)
        tokens = min(r.output_tokens, batch.max_tokens)
        finish = Finish.COMPLETE if r.output_tokens <= batch.max_tokens else Finish.CUT_OFF
        text = r.text if finish is Finish.COMPLETE else f"{self.model}'s recorded answer, cut off."
        inp = min(r.input_tokens, batch.input_tokens)  # never more than was reserved
        latency = self.ttft_s + tokens / self.tokens_per_s
        pending = list(range(batch.k))
        start = self.clock.now()
        try:
            await self.clock.sleep_until(start + latency, order=(batch.id,))
            while pending:
                report(SampleEnd(index=pending.pop(0), finish=finish, input_tokens=inp, output_tokens=tokens,
                                 output=text))  # fmt: skip
        finally:  # cancelled: each is charged its input and what it had streamed
            produced = tokens_at(self.clock.now() - start, tokens, latency, self.ttft_s)
            for idx in pending:
                report(SampleEnd(index=idx, finish=Finish.CANCELLED, input_tokens=inp, output_tokens=produced))


def recorded_adapters(
    book: AnswerBook,
    clock: Clock,
    *,
    models: Iterable[str] | None = None,
    tokens_per_s: float = TOKENS_PER_S,
    ttft_s: float = TTFT_S,
    p_flip: float | None = None,
    seed: int = 0,
) -> Mapping[str, RecordedAnswers]:
    """A :class:`RecordedAnswers` per model (default: every model of the book), for ``runtime.run(adapters=...)``.

    Raises:
        UsageError: as :class:`RecordedAnswers`.
    """
    return {
        m: RecordedAnswers(book, m, clock=clock, tokens_per_s=tokens_per_s, ttft_s=ttft_s, p_flip=p_flip, seed=seed)
        for m in (book.models if models is None else models)
    }
