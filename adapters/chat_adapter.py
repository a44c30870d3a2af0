"""Runs the executor's samples on a real chat endpoint and checks each output with its subtask's verifier.

A batch of k samples becomes one request with ``n=k`` when the backend has ``n`` (OpenAI-style), else k
requests in parallel. Every sample streams, so cancelling it (a sibling succeeded, the deadline passed)
closes its connection and leaves its usage so far in its :class:`SampleProgress`. With ``n=k`` the request
is shared: each sample reads the pieces for every sample while it waits for its own, and the request is
closed when the last of its samples has left. A request's input tokens are charged once, to the sample that
leaves last, at the endpoint's own count if it sent one, else at the bound reserved for them. A request
that failed or was cancelled before it produced anything is charged nothing (vendors bill what they
answer; ``serve-sim`` bills the same way).
"""

from __future__ import annotations

from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import anyio

from adapters.base import Adapter, SampleOutcome, SampleProgress, SampleRequest
from adapters.chat import ChatBackend, ChatRequest, ChatStream, input_token_bound
from runtime._errors import ProviderError, ProviderUnavailableError, UsageError

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from adapters.chat import Message

__all__ = ["COMPLETE", "ChatAdapter"]

# Finish reasons of a sample that ended by itself (not cut off at max_tokens or by a filter).
COMPLETE = frozenset({"stop", "end_turn", "stop_sequence"})


@dataclass(slots=True)
class _Shared:
    """One request serving the k samples of a batch."""

    k: int
    lock: anyio.Lock = field(default_factory=anyio.Lock)
    stack: AsyncExitStack = field(default_factory=AsyncExitStack)
    stream: ChatStream | None = None
    parts: list[list[str]] = field(init=False)
    finish: list[str | None] = field(init=False)
    left: int = field(init=False)  # samples still reading
    failed: ProviderError | None = None

    def __post_init__(self) -> None:
        self.parts = [[] for _ in range(self.k)]
        self.finish = [None] * self.k
        self.left = self.k


class ChatAdapter(Adapter):
    """Args:
    backend: the endpoint (usually wrapped in :class:`adapters.resilience.Resilient`).
    model_id: the endpoint's name for the model.
    check: decides whether an output passes (the subtask's verifier) and says what deciding cost.
    check_worst: the most ``check`` may spend on one output of a subtask, by (subtask, max_tokens).
    temperature: sent with every request if set.
    """

    def __init__(
        self,
        backend: ChatBackend,
        model_id: str,
        check: Callable[[SampleRequest, str], Awaitable[tuple[bool, int]]],
        *,
        check_worst: Callable[[int, int], int] = lambda i, max_tokens: 0,
        temperature: float | None = None,
    ) -> None:
        self.backend = backend
        self.model_id = model_id
        self.check = check
        self._check_worst = check_worst
        self.temperature = temperature
        self._shared: dict[int, _Shared] = {}

    def input_tokens(self, estimate: int, messages: tuple[Message, ...] | None) -> int:
        if messages is None:
            raise UsageError("a subtask run on a real model needs a prompt")
        return input_token_bound(messages)

    def check_pusd(self, subtask: int, max_tokens: int) -> int:
        return self._check_worst(subtask, max_tokens)

    async def aclose(self) -> None:
        await self.backend.aclose()

    def _request(self, req: SampleRequest, n: int) -> ChatRequest:
        assert req.messages is not None
        return ChatRequest(
            self.model_id, req.messages, req.max_tokens, n, self.temperature, req.deadline, tag=req.subtask_id
        )

    async def sample(self, request: SampleRequest, progress: SampleProgress) -> SampleOutcome:
        if self.backend.supports_n and request.k > 1:
            text, finish = await self._shared_sample(request, progress)
        else:
            text, finish = await self._own_sample(request, progress)
        if finish not in COMPLETE:  # cut off at max_tokens (or filtered): cannot pass
            return SampleOutcome(False, progress.input_tokens, progress.output_tokens, text)
        progress.check_pusd = request.check_pusd  # if cancelled while checking, charge the worst case
        ok, cost = await self.check(request, text)
        progress.check_pusd = cost
        return SampleOutcome(ok, progress.input_tokens, progress.output_tokens, text, check_pusd=cost)

    async def _own_sample(self, req: SampleRequest, progress: SampleProgress) -> tuple[str, str | None]:
        parts: list[str] = []
        finish: str | None = None
        async with self.backend.stream(self._request(req, 1)) as s:
            try:
                async for d in s.deltas:
                    parts.append(d.text)
                    if d.finish_reason is not None:
                        finish = d.finish_reason
            finally:  # also when cancelled: the executor charges what progress says once the sample ends
                _usage(progress, s, 0, req, charge_input=True)
        return "".join(parts), finish

    async def _shared_sample(self, req: SampleRequest, progress: SampleProgress) -> tuple[str, str | None]:
        batch, idx = req.key
        sh = self._shared.get(batch)
        if sh is None:
            sh = self._shared[batch] = _Shared(req.k)
        try:
            while sh.finish[idx] is None:
                await self._read_one(sh, req)
            if sh.left == 1 and all(f is not None for f in sh.finish):  # the last one reads the final usage
                while sh.stream is not None and await anext(sh.stream.deltas, None) is not None:
                    pass
            return "".join(sh.parts[idx]), sh.finish[idx]
        finally:
            sh.left -= 1
            if sh.stream is not None:  # else nothing was answered, and nothing is charged
                _usage(progress, sh.stream, idx, req, charge_input=sh.left == 0)
            if sh.left == 0:
                del self._shared[batch]
                with anyio.CancelScope(shield=True):
                    await sh.stack.aclose()

    async def _read_one(self, sh: _Shared, req: SampleRequest) -> None:
        async with sh.lock:
            if sh.failed is not None:
                raise sh.failed
            try:
                if sh.stream is None:
                    sh.stream = await sh.stack.enter_async_context(self.backend.stream(self._request(req, sh.k)))
                d = await anext(sh.stream.deltas, None)
            except ProviderError as exc:
                sh.failed = exc
                raise
            if d is None:
                sh.failed = ProviderUnavailableError(
                    f"{self.backend.provider}: the stream ended early", provider=self.backend.provider
                )
                raise sh.failed
            sh.parts[d.index].append(d.text)
            if d.finish_reason is not None:
                sh.finish[d.index] = d.finish_reason


def _usage(progress: SampleProgress, s: ChatStream, index: int, req: SampleRequest, *, charge_input: bool) -> None:
    """Put sample ``index``'s final usage in ``progress``.

    Counts are capped at what was reserved: an endpoint bills at most ``max_tokens`` of output, and the
    input bound holds for every byte-level BPE tokenizer.
    """
    out = s.output_tokens[index]
    if s.n == 1 and s.reported_output_tokens is not None:
        out = s.reported_output_tokens
    progress.output_tokens = min(out, req.max_tokens)
    if not charge_input:
        progress.input_tokens = 0
    elif s.input_tokens is not None:
        progress.input_tokens = min(s.input_tokens, req.input_tokens)
    else:
        progress.input_tokens = req.input_tokens
