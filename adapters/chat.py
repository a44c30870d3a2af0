"""The chat backend interface: what every real model endpoint (and the simulator server) is driven through.

A :class:`ChatBackend` sends one chat request for ``n`` samples and returns them with real usage, either
whole (:meth:`ChatBackend.complete`) or as a stream of :class:`Delta` that the caller may abandon part-way
(:meth:`ChatBackend.stream`): leaving the ``async with`` closes the connection, and the stream's ``usage``
says what was produced up to then. Backends never see budgets; ``max_tokens`` comes from the ledger's
reservation and is always sent.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar
from urllib.parse import quote

from runtime.types import ProviderUnavailableError

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Sequence
    from contextlib import AbstractAsyncContextManager

    from runtime.types import Message

__all__ = [
    "ChatBackend",
    "ChatRequest",
    "ChatResponse",
    "ChatStream",
    "Choice",
    "Delta",
    "input_token_bound",
    "request_headers",
    "request_timeout",
]

# Chat templates add a few tokens per message and per request; these bound them for every vendor we know.
_PER_MESSAGE, _PER_REQUEST = 16, 16
# Subtask requests carry this header so the simulator server knows which profile to draw from.
SUBTASK_HEADER = "x-ontime-subtask"
# And these, so it can draw a loop subtask's history-dependent success: the run's id (a subtask's hidden class is
# drawn once per run) and the models of the subtask's earlier failed batches, in order, comma-separated, each
# percent-encoded (a name may hold a comma). Neither holds anything secret; real endpoints ignore both.
RUN_HEADER = "x-ontime-run"
HISTORY_HEADER = "x-ontime-history"


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """One request for ``n`` samples of the same prompt.

    Attributes:
        model: the endpoint's model id (``gpt-4o-mini``, ``claude-haiku-4-5``, ...).
        deadline: ``time.monotonic()`` after which the answer is useless: no attempt or retry starts
            after it, and it bounds the request's timeout.
        tag: the subtask id, sent in the ``x-ontime-subtask`` header (the simulator server draws the
            subtask's profile from it; real endpoints ignore it).
        run: the run's id, sent in the ``x-ontime-run`` header.
        history: the models (spec names) of the subtask's earlier failed batches, sent in ``x-ontime-history``.
    """

    model: str
    messages: tuple[Message, ...]
    max_tokens: int
    n: int = 1
    temperature: float | None = None
    deadline: float | None = None
    tag: str | None = None
    run: str | None = None
    history: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Delta:
    """A piece of one sample's output; ``finish_reason`` is set on the sample's last piece."""

    index: int
    text: str = ""
    finish_reason: str | None = None


@dataclass(frozen=True, slots=True)
class Choice:
    text: str
    output_tokens: int
    finish_reason: str | None


@dataclass(frozen=True, slots=True)
class ChatResponse:
    """The finished samples and the request's usage (input tokens are billed once per request)."""

    choices: tuple[Choice, ...]
    input_tokens: int
    output_tokens: int


@dataclass(slots=True)
class ChatStream:
    """A live stream of deltas with its usage so far.

    ``output_tokens[i]`` counts sample i's tokens as they arrive (one per content piece, the unit every OpenAI- and
    Anthropic-style stream we know sends); when the endpoint reports its own usage at the end, that replaces the count.
    ``input_tokens`` is the endpoint's figure once known, else ``None`` (the caller then charges its upper bound).
    """

    n: int
    input_tokens: int | None = None
    reported_output_tokens: int | None = None  # the endpoint's total, if it sent one
    output_tokens: list[int] = field(init=False)
    deltas: AsyncIterator[Delta] = field(init=False)  # set by the backend once the request is open

    def __post_init__(self) -> None:
        self.output_tokens = [0] * self.n


class ChatBackend(ABC):
    """One endpoint (a base URL and a key) of one wire protocol."""

    provider: ClassVar[str]
    max_n: ClassVar[int] = 1  # samples one request may ask for (OpenAI's ``n``); a wider batch is split

    @abstractmethod
    def stream(self, request: ChatRequest) -> AbstractAsyncContextManager[ChatStream]:
        """Open a streaming request; leave the context to cancel it (the connection is closed)."""

    async def complete(self, request: ChatRequest) -> ChatResponse:
        """Send the request and wait for all ``n`` samples."""
        texts: list[list[str]] = [[] for _ in range(request.n)]
        finish: list[str | None] = [None] * request.n
        async with self.stream(request) as s:
            async for d in s.deltas:
                texts[d.index].append(d.text)
                if d.finish_reason is not None:
                    finish[d.index] = d.finish_reason
        counted = s.output_tokens
        return ChatResponse(
            choices=tuple(Choice("".join(t), c, f) for t, c, f in zip(texts, counted, finish, strict=True)),
            input_tokens=s.input_tokens if s.input_tokens is not None else input_token_bound(request.messages),
            output_tokens=s.reported_output_tokens if s.reported_output_tokens is not None else sum(counted),
        )

    async def aclose(self) -> None:  # noqa: B027 (optional hook: backends without a client have nothing to close)
        """Close the backend's connections."""


def request_headers(request: ChatRequest) -> dict[str, str]:
    """The ontime headers of a request: its subtask, run and history (none for a request without a tag)."""
    if request.tag is None:
        return {}
    headers = {SUBTASK_HEADER: request.tag}
    if request.run is not None:
        headers[RUN_HEADER] = quote(request.run, safe="")
    if request.run is not None or request.history:
        headers[HISTORY_HEADER] = ",".join(quote(m, safe="") for m in request.history)
    return headers


def input_token_bound(messages: Sequence[Message]) -> int:
    """An upper bound on the input tokens of ``messages`` for any byte-level BPE tokenizer.

    Such a tokenizer never makes more tokens than bytes; templates add a few per message. The ledger
    reserves this before a request is sent, so a prompt longer than the spec's estimate cannot overspend.
    """
    return _PER_REQUEST + sum(_PER_MESSAGE + len(m.content.encode("utf-8")) + len(m.role) for m in messages)


def request_timeout(request: ChatRequest, timeout_s: float, provider: str) -> float:
    """The request's timeout: ``timeout_s``, or less if its deadline is nearer; raises if that has passed."""
    if request.deadline is None:
        return timeout_s
    left = request.deadline - time.monotonic()
    if left <= 0:
        raise ProviderUnavailableError("the deadline passed before the request was sent", provider=provider)
    return min(timeout_s, left)
