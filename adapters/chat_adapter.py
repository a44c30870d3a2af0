"""Runs batches on a real chat endpoint, through a :class:`adapters.chat.ChatBackend`.

A batch of k samples is one request with ``n=k`` when the backend has ``n`` (OpenAI-style), split into requests of
at most the backend's ``max_n`` samples (OpenAI refuses ``n`` above 128), else k requests in parallel. Every request
streams, so cancelling the batch (a sibling succeeded, the deadline passed) closes its connections and leaves each
sample charged for what it produced. A sample is reported as soon as its last piece arrives, except the last one of a
request, which waits for the end of the stream: it carries the request's input tokens (billed once per request) and
the endpoint's reported output the others' pieces did not cover (the endpoint's own counts if it sent them, else the
bound reserved for the input). A request that failed or was cancelled before it produced anything is charged nothing
(vendors bill what they answer; ``serve-sim`` too). A stream cancelled once answered is charged what arrived plus
:data:`CANCEL_ALLOWANCE_TOKENS`: the endpoint keeps generating until it sees the close, and those tokens never arrive.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import anyio

from adapters.chat import ChatRequest, ChatStream, input_token_bound
from runtime.types import Adapter, Finish, ProviderError, ProviderUnavailableError, SampleEnd, UsageError

if TYPE_CHECKING:
    from collections.abc import Sequence

    from adapters.chat import ChatBackend
    from runtime.types import Batch, Message, Report

__all__ = ["CANCEL_ALLOWANCE_TOKENS", "COMPLETE", "ChatAdapter"]

# Finish reasons of a sample that ended by itself (not cut off at max_tokens or by a filter).
COMPLETE = frozenset({"stop", "end_turn", "stop_sequence"})
# Output tokens charged to a cancelled stream beyond those that arrived: what the endpoint may have generated
# and sent before it saw the close. serve-sim streamed 1-20 such tokens (issue 16's probe, 42 faulted runs).
CANCEL_ALLOWANCE_TOKENS = 32


class ChatAdapter(Adapter):
    """Args:
    backend: the endpoint (usually wrapped in :class:`adapters.resilience.Resilient`).
    model_id: the endpoint's name for the model.
    temperature: sent with every request if set.
    """

    def __init__(self, backend: ChatBackend, model_id: str, *, temperature: float | None = None) -> None:
        self.backend = backend
        self.model_id = model_id
        self.temperature = temperature

    def input_tokens(self, estimate: int, messages: tuple[Message, ...] | None) -> int:
        if messages is None:
            raise UsageError("a subtask run on a real model needs a prompt")
        return input_token_bound(messages)

    async def aclose(self) -> None:
        await self.backend.aclose()

    async def run(self, batch: Batch, report: Report) -> None:
        size = self.backend.max_n
        if batch.k <= size:
            await self._request(batch, range(batch.k), report)
            return
        async with anyio.create_task_group() as tg:
            for lo in range(0, batch.k, size):
                tg.start_soon(self._request, batch, range(lo, min(batch.k, lo + size)), report)

    async def _request(self, batch: Batch, indices: Sequence[int], report: Report) -> None:
        """One request for the samples ``indices`` of ``batch``; reports each of them exactly once."""
        if batch.messages is None:  # the executor never sends one (``input_tokens`` refuses it first)
            raise UsageError("a subtask run on a real model needs a prompt")
        n = len(indices)
        request = ChatRequest(self.model_id, batch.messages, batch.max_tokens, n, self.temperature, batch.deadline,
                              tag=batch.tag, run=batch.run, history=batch.history_names)  # fmt: skip
        parts: list[list[str]] = [[] for _ in range(n)]
        finish: list[str | None] = [None] * n
        left = set(range(n))
        charged = 0  # output tokens charged to the request's samples reported so far
        stream: ChatStream | None = None

        def end(c: int, how: Finish, error: ProviderError | None = None) -> None:
            nonlocal charged
            if finish[c] is not None:  # it had finished: a later failure of the request is not its own
                how, error = _finish(finish[c]), None
            left.discard(c)
            out = in_ = 0
            if stream is not None:  # else nothing was answered, and nothing is charged
                out = stream.output_tokens[c]
                if how is Finish.CANCELLED:  # generated past what arrived, before the endpoint saw the close
                    out += CANCEL_ALLOWANCE_TOKENS
                if not left:  # the last sample carries the request's input, and the rest of its reported output
                    in_ = batch.input_tokens if stream.input_tokens is None else stream.input_tokens
                    if stream.reported_output_tokens is not None:
                        out = max(0, stream.reported_output_tokens - charged)
            # An endpoint bills at most max_tokens of output, and the input bound holds for every byte-level BPE.
            out = min(out, batch.max_tokens)
            charged += out
            text = "".join(parts[c]) if how in (Finish.COMPLETE, Finish.CUT_OFF) else None
            report(SampleEnd(index=indices[c], finish=how, input_tokens=min(in_, batch.input_tokens),
                             output_tokens=out, output=text, error=error))  # fmt: skip

        try:
            async with self.backend.stream(request) as stream:
                async for d in stream.deltas:
                    if not 0 <= d.index < n:
                        raise ProviderUnavailableError(
                            f"{self.backend.provider}: a reply for sample {d.index} of {n}",
                            provider=self.backend.provider,
                        )
                    parts[d.index].append(d.text)
                    if d.finish_reason is not None and finish[d.index] is None:
                        finish[d.index] = d.finish_reason
                        if len(left) > 1:  # the last one waits for the endpoint's usage at the end
                            end(d.index, _finish(d.finish_reason))
            for c in sorted(left):
                end(c, _finish(finish[c]))
        except ProviderError as exc:
            for c in sorted(left):
                end(c, Finish.ERROR, exc)
        finally:  # cancelled: charged what they produced
            for c in sorted(left):
                end(c, Finish.CANCELLED)


def _finish(reason: str | None) -> Finish:
    return Finish.COMPLETE if reason in COMPLETE else Finish.CUT_OFF
