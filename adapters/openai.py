"""The OpenAI chat-completions backend, through the official SDK (``AsyncOpenAI``).

Works with api.openai.com and every OpenAI-compatible server (vLLM, SGLang, Ollama, the LiteLLM proxy, serve-sim)
through ``base_url``. k samples go in one request with ``n=k``. Streams ask for the final usage chunk
(``stream_options.include_usage``); a stream cut short is charged the pieces received. The SDK's own retries are off:
:mod:`adapters.resilience` retries with the deadline and the ledger in mind.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, ClassVar

import openai

from adapters.chat import ChatBackend, ChatRequest, ChatStream, Delta, request_headers, request_timeout
from adapters.errors import VendorErrors, vendor_stream
from runtime.types import ProviderUnavailableError, UsageError

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

__all__ = ["ERRORS", "OpenAIBackend"]

# Every other APIError is transient: connection failures, timeouts, replies the SDK could not read.
ERRORS = VendorErrors(status=openai.APIStatusError, transient=(openai.APIError,))


class OpenAIBackend(ChatBackend):
    """Args:
    api_key: the key (never logged); ``None`` reads ``OPENAI_API_KEY``.
    base_url: an OpenAI-compatible endpoint; ``None`` is api.openai.com.
    timeout_s: the longest a request may wait for its next byte (a hung endpoint is given up on after it).
    max_tokens_field: ``max_completion_tokens`` (OpenAI's current name, required by reasoning models)
        or ``max_tokens`` (what most compatible servers expect); default: the first for api.openai.com,
        the second for any other ``base_url``.
    """

    provider: ClassVar[str] = "openai"
    max_n: ClassVar[int] = 128  # the API's limit on ``n``

    def __init__(
        self,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        timeout_s: float = 60.0,
        max_tokens_field: str | None = None,
    ) -> None:
        try:
            self.client = openai.AsyncOpenAI(api_key=api_key, base_url=base_url, max_retries=0, timeout=timeout_s)
        except openai.OpenAIError as exc:
            raise UsageError(f"cannot make an OpenAI client: {exc}") from None
        self._secrets = (self.client.api_key,) if isinstance(self.client.api_key, str) else ()
        self.timeout_s = timeout_s
        self.max_tokens_field = max_tokens_field or ("max_tokens" if base_url else "max_completion_tokens")

    def __repr__(self) -> str:  # the client's repr is safe, but say what matters without it
        return f"OpenAIBackend(base_url={str(self.client.base_url)!r})"

    @asynccontextmanager
    async def stream(self, request: ChatRequest) -> AsyncIterator[ChatStream]:
        kwargs: dict[str, Any] = {self.max_tokens_field: request.max_tokens}
        if request.n != 1:
            kwargs["n"] = request.n
        if request.temperature is not None:
            kwargs["temperature"] = request.temperature
        if request.tag is not None:
            kwargs["extra_headers"] = request_headers(request)
        create: Any = self.client.chat.completions.create  # the overloads cannot follow **kwargs
        opening = create(
            model=request.model,
            messages=[{"role": m.role, "content": m.content} for m in request.messages],
            stream=True,
            stream_options={"include_usage": True},
            timeout=request_timeout(request, self.timeout_s, self.provider),
            **kwargs,
        )
        async with vendor_stream(opening, request.n, self._deltas, self.provider, ERRORS, self._secrets) as s:
            yield s

    async def _deltas(self, raw: Any, s: ChatStream) -> AsyncIterator[Delta]:
        finished = 0
        async for chunk in raw:
            if chunk.usage is not None:
                s.input_tokens = chunk.usage.prompt_tokens
                s.reported_output_tokens = chunk.usage.completion_tokens
            for c in chunk.choices:
                if not 0 <= c.index < s.n:
                    raise ProviderUnavailableError(
                        f"{self.provider}: a choice {c.index} of {s.n}", provider=self.provider
                    )
                text = (c.delta.content or "") if c.delta is not None else ""
                if text:
                    s.output_tokens[c.index] += 1
                if c.finish_reason is not None:
                    finished += 1
                if text or c.finish_reason is not None:
                    yield Delta(c.index, text, c.finish_reason)
        if finished < s.n:
            raise ProviderUnavailableError(
                f"{self.provider}: the stream ended before {s.n - finished} of {s.n} samples finished",
                provider=self.provider,
            )

    async def aclose(self) -> None:
        await self.client.close()
