"""Vendor errors mapped to ontime's typed errors, in one place, with secrets scrubbed from every message.

The OpenAI and Anthropic SDKs raise their own classes (and, mid-stream, the raw exceptions of their HTTP
transport); the executor and the retry wrapper only ever see :class:`runtime.ProviderError` subclasses:
rejected (do not retry), unavailable (retry) and rate limited (retry after the time the endpoint asked for).
"""

from __future__ import annotations

import json
import re
from contextlib import asynccontextmanager
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any

import anyio

from adapters.chat import ChatStream
from runtime._errors import ProviderError, ProviderRejectedError, ProviderUnavailableError, RateLimitedError

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Iterable

    from adapters.chat import Delta

__all__ = ["redact", "retry_after_s", "vendor_error", "vendor_stream"]

# Key-shaped strings of the vendors we know (sk-..., sk-ant-...), and bearer tokens in echoed headers.
_KEY_SHAPES = re.compile(r"(sk-[A-Za-z0-9_\-]{6,}|Bearer\s+[A-Za-z0-9._\-]{6,})")
_TRANSPORT_MODULES = ("httpx", "httpx2", "httpcore", "anyio", "aiohttp", "h11", "ssl")
_MAX_MESSAGE = 300


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with every given secret and every key-shaped string replaced by ``***``."""
    for s in secrets:
        if s:
            text = text.replace(s, "***")
    return _KEY_SHAPES.sub("***", text)


def retry_after_s(headers: Any) -> float | None:
    """The wait a ``Retry-After`` (or ``retry-after-ms``) header asks for, in seconds, if any."""
    if headers is None:
        return None
    ms = headers.get("retry-after-ms")
    if ms is not None:
        try:
            return max(0.0, float(ms) / 1000.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:  # an HTTP date
        from datetime import UTC, datetime

        return max(0.0, (parsedate_to_datetime(value) - datetime.now(UTC)).total_seconds())
    except (TypeError, ValueError):
        return None


def vendor_error(exc: BaseException, provider: str, secrets: Iterable[str] = ()) -> ProviderError:
    """The typed error for anything an SDK or its transport raised; never includes a secret."""
    if isinstance(exc, ProviderError):
        return exc
    status = getattr(exc, "status_code", None)
    response = getattr(exc, "response", None)
    name = type(exc).__name__
    detail = redact(_short(exc), secrets)
    if isinstance(status, int):
        msg = f"{provider} answered HTTP {status} ({name}): {detail}"
        if status == 429:
            retry = retry_after_s(getattr(response, "headers", None))
            return RateLimitedError(msg, provider=provider, status=status, retry_after=retry)
        if status in (408, 409) or status >= 500:
            return ProviderUnavailableError(msg, provider=provider, status=status)
        return ProviderRejectedError(msg, provider=provider, status=status)
    module = type(exc).__module__.split(".")[0]
    transient = (
        isinstance(exc, TimeoutError | ConnectionError | json.JSONDecodeError | EOFError)
        or module in _TRANSPORT_MODULES
        or name in {"APIConnectionError", "APITimeoutError", "APIResponseValidationError", "APIError"}
    )
    if transient:
        return ProviderUnavailableError(f"{provider}: {name}: {detail}", provider=provider)
    return ProviderRejectedError(f"{provider}: unexpected {name}: {detail}", provider=provider)


def _short(exc: BaseException) -> str:
    text = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    text = " ".join(str(text).split())
    return text if len(text) <= _MAX_MESSAGE else text[: _MAX_MESSAGE - 3] + "..."


@asynccontextmanager
async def vendor_stream(
    create: Awaitable[Any],
    n: int,
    read: Callable[[Any, ChatStream], AsyncIterator[Delta]],
    provider: str,
    secrets: Iterable[str] = (),
) -> AsyncIterator[ChatStream]:
    """Open an SDK stream as a :class:`ChatStream`, with every vendor error mapped, and close it on exit.

    ``create`` is the SDK call that opens the stream; ``read(raw, stream)`` turns the SDK's events into
    deltas and keeps the stream's usage current. Closing is shielded, so a cancelled sample still hangs up.
    """
    try:
        raw = await create
    except Exception as exc:
        raise vendor_error(exc, provider, secrets) from None
    s = ChatStream(n)
    s.deltas = _mapped(read(raw, s), provider, secrets)
    try:
        yield s
    finally:
        with anyio.CancelScope(shield=True):
            await raw.close()


async def _mapped(deltas: AsyncIterator[Delta], provider: str, secrets: Iterable[str]) -> AsyncIterator[Delta]:
    try:
        async for d in deltas:
            yield d
    except ProviderError:
        raise
    except Exception as exc:
        raise vendor_error(exc, provider, secrets) from None
