"""Vendor errors mapped to ontime's typed errors, in one boundary, with secrets scrubbed from every message.

The OpenAI and Anthropic SDKs raise their own classes (and, mid-stream, the exceptions of their HTTP transport); the
executor and the retry wrapper only ever see :class:`runtime.ProviderError` subclasses: rejected (do not retry),
unavailable (retry) and rate limited (retry after the time the endpoint asked for). Each backend names its SDK's
classes (:class:`VendorErrors`), so only it imports its SDK. Any other exception is a bug and propagates as it is. A
mapped error keeps the vendor's as its cause, redacted.
"""

from __future__ import annotations

import importlib
import json
import re
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from functools import cache
from typing import TYPE_CHECKING, Any, NoReturn

import anyio

from adapters.chat import ChatStream
from runtime.types import ProviderError, ProviderRejectedError, ProviderUnavailableError, RateLimitedError

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Iterable

    from adapters.chat import Delta

__all__ = ["VendorErrors", "redact", "retry_after_s", "vendor_error", "vendor_stream"]

# Key-shaped strings of the vendors we know (sk-..., sk-ant-...), and bearer tokens in echoed headers.
_KEY_SHAPES = re.compile(r"(sk-[A-Za-z0-9_\-]{6,}|Bearer\s+[A-Za-z0-9._\-]{6,})")
_MAX_MESSAGE = 300


@dataclass(frozen=True, slots=True)
class VendorErrors:
    """An SDK's error classes: ``status`` is an HTTP error answer (``status_code``, ``response``);
    ``transient`` are connection failures, timeouts and replies the SDK could not read."""

    status: type[Exception]
    transient: tuple[type[Exception], ...]


class _VendorCause(Exception):
    """The vendor's own exception, kept as a mapped error's cause with secrets scrubbed from its message."""


@cache
def _transport_errors() -> tuple[type[BaseException], ...]:
    """What the SDKs' HTTP transports (httpx, httpx2) raise mid-stream, plus a reply that is not JSON."""
    found: list[type[BaseException]] = [TimeoutError, ConnectionError, json.JSONDecodeError]
    for name in ("httpx", "httpx2"):
        with suppress(ImportError):  # httpx is a dependency; httpx2 comes with newer SDKs
            found.append(importlib.import_module(name).HTTPError)
    return tuple(found)


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
    for name, scale in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is not None:
            with suppress(ValueError):
                return max(0.0, float(value) / scale)
    if value is None:
        return None
    try:  # an HTTP date
        return max(0.0, (parsedate_to_datetime(value) - datetime.now(UTC)).total_seconds())
    except (TypeError, ValueError):
        return None


def vendor_error(
    exc: BaseException, provider: str, vendor: VendorErrors, secrets: Iterable[str] = ()
) -> ProviderError | None:
    """The typed error for what an SDK or its transport raised (never with a secret), or None if it is
    neither: then it is a bug, to let through."""
    if isinstance(exc, ProviderError):
        return exc
    name = type(exc).__name__
    detail = redact(_short(exc), secrets)
    if isinstance(exc, vendor.status):
        status = getattr(exc, "status_code", 0)
        msg = f"{provider} answered HTTP {status} ({name}): {detail}"
        if status == 429:
            retry = retry_after_s(getattr(getattr(exc, "response", None), "headers", None))
            return RateLimitedError(msg, provider=provider, status=status, retry_after=retry)
        if status in (408, 409) or status >= 500:
            return ProviderUnavailableError(msg, provider=provider, status=status)
        return ProviderRejectedError(msg, provider=provider, status=status)
    if isinstance(exc, vendor.transient + _transport_errors()):
        return ProviderUnavailableError(f"{provider}: {name}: {detail}", provider=provider)
    return None


def _raise_mapped(exc: Exception, provider: str, vendor: VendorErrors, secrets: Iterable[str]) -> NoReturn:
    """Raise ``exc`` as its typed error, its cause the redacted original; re-raise it if it is typed or a bug."""
    mapped = vendor_error(exc, provider, vendor, secrets)
    if mapped is None or mapped is exc:
        raise exc
    # Its message, scrubbed; not its traceback, whose frames hold the request (headers, key) for any error
    # reporter that shows local variables.
    raise mapped from _VendorCause(f"{type(exc).__module__}.{type(exc).__qualname__}: {redact(_short(exc), secrets)}")


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
    vendor: VendorErrors,
    secrets: Iterable[str] = (),
) -> AsyncIterator[ChatStream]:
    """Open an SDK stream as a :class:`ChatStream`, with every vendor error mapped, and close it on exit.

    ``create`` is the SDK call that opens the stream; ``read(raw, stream)`` turns the SDK's events into
    deltas and keeps the stream's usage current. Closing is shielded, so a cancelled sample still hangs up.
    """
    try:
        raw = await create
    except Exception as exc:
        _raise_mapped(exc, provider, vendor, secrets)
    s = ChatStream(n)
    s.deltas = _mapped(read(raw, s), provider, vendor, secrets)
    try:
        yield s
    finally:
        with anyio.CancelScope(shield=True):
            await raw.close()


async def _mapped(
    deltas: AsyncIterator[Delta], provider: str, vendor: VendorErrors, secrets: Iterable[str]
) -> AsyncIterator[Delta]:
    try:
        async for d in deltas:
            yield d
    except Exception as exc:
        _raise_mapped(exc, provider, vendor, secrets)
