"""The Anthropic messages backend, through the official SDK (``AsyncAnthropic``).

The Messages API has no ``n``: k samples are k parallel requests. Streams report input tokens at ``message_start`` and
cumulative output tokens at ``message_delta``, so a stream cut short is charged the endpoint's own count when it sent
one, else the pieces received. System messages go in ``system``.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, ClassVar

import anthropic

from adapters.chat import ChatBackend, ChatRequest, ChatStream, Delta, request_headers, request_timeout
from adapters.errors import VendorErrors, vendor_stream
from runtime.types import ProviderUnavailableError, UsageError

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

__all__ = ["ERRORS", "AnthropicBackend"]

# Every other APIError is transient: connection failures, timeouts, replies the SDK could not read.
ERRORS = VendorErrors(status=anthropic.APIStatusError, transient=(anthropic.APIError,))


class AnthropicBackend(ChatBackend):
    """Args:
    api_key: the key (never logged); ``None`` reads ``ANTHROPIC_API_KEY``.
    base_url: another Anthropic-compatible endpoint (``ontime serve-sim``, a proxy); ``None``: Anthropic's.
    timeout_s: the longest a request may wait for its next byte.
    """

    provider: ClassVar[str] = "anthropic"

    def __init__(self, *, api_key: str | None = None, base_url: str | None = None, timeout_s: float = 60.0) -> None:
        try:
            self.client = anthropic.AsyncAnthropic(api_key=api_key, base_url=base_url, max_retries=0, timeout=timeout_s)
        except anthropic.AnthropicError as exc:
            raise UsageError(f"cannot make an Anthropic client: {exc}") from None
        key = getattr(self.client, "api_key", None)
        self._secrets = (key,) if isinstance(key, str) else ()
        self.timeout_s = timeout_s

    def __repr__(self) -> str:
        return f"AnthropicBackend(base_url={str(self.client.base_url)!r})"

    @asynccontextmanager
    async def stream(self, request: ChatRequest) -> AsyncIterator[ChatStream]:
        if request.n != 1:
            raise UsageError("the Anthropic Messages API has no n: send one request per sample")
        system = "\n\n".join(m.content for m in request.messages if m.role == "system")
        kwargs: dict[str, Any] = {}
        if system:
            kwargs["system"] = system
        if request.temperature is not None:
            kwargs["extra_body"] = {"temperature": request.temperature}
        if request.tag is not None:
            kwargs["extra_headers"] = request_headers(request)
        create: Any = self.client.messages.create  # the overloads cannot follow **kwargs
        opening = create(
            model=request.model,
            max_tokens=request.max_tokens,
            messages=[{"role": m.role, "content": m.content} for m in request.messages if m.role != "system"],
            stream=True,
            timeout=request_timeout(request, self.timeout_s, self.provider),
            **kwargs,
        )
        async with vendor_stream(opening, 1, self._deltas, self.provider, ERRORS, self._secrets) as s:
            yield s

    async def _deltas(self, raw: Any, s: ChatStream) -> AsyncIterator[Delta]:
        stop: str | None = None
        async for event in raw:
            kind = event.type
            if kind == "message_start":
                s.input_tokens = event.message.usage.input_tokens
            elif kind == "content_block_delta" and getattr(event.delta, "type", None) == "text_delta":
                s.output_tokens[0] += 1
                yield Delta(0, event.delta.text)
            elif kind == "message_delta":
                stop = event.delta.stop_reason or "end_turn"
                s.reported_output_tokens = event.usage.output_tokens
                s.output_tokens[0] = event.usage.output_tokens
        if stop is None:
            raise ProviderUnavailableError(
                f"{self.provider}: the stream ended before the message did", provider=self.provider
            )
        yield Delta(0, "", stop)

    async def aclose(self) -> None:
        await self.client.close()
