"""Retries, a concurrency limit and a client-side rate limit, as one wrapper over any :class:`ChatBackend`.

A request is retried (tenacity: exponential backoff with jitter, or a 429's ``Retry-After``) only until its
first piece arrives, so a failed attempt has nothing to charge and the reservation still covers the next one
in full; once output has flowed, a failure ends the sample (charged what it produced) and the planner
decides. No attempt starts, and no backoff sleeps, past the deadline; cancellation is never retried.
"""

from __future__ import annotations

import math
import time
from contextlib import AsyncExitStack, asynccontextmanager
from typing import TYPE_CHECKING, ClassVar

import anyio
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, wait_exponential_jitter

from adapters.chat import ChatBackend, ChatRequest, ChatStream, Delta
from runtime.types import ProviderUnavailableError, RateLimitedError, UsageError

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

__all__ = ["RateLimiter", "Resilient", "RetryPolicy"]


class RetryPolicy:
    """How to retry: at most ``attempts`` tries, backoff from ``initial_s`` doubling up to ``max_s``."""

    def __init__(self, attempts: int = 4, initial_s: float = 0.25, max_s: float = 8.0, jitter_s: float = 0.25) -> None:
        if attempts < 1 or not (0 <= initial_s <= max_s) or jitter_s < 0:
            raise UsageError(f"bad retry policy: attempts={attempts}, initial_s={initial_s}, max_s={max_s}")
        self.attempts = attempts
        self._backoff = wait_exponential_jitter(multiplier=initial_s, max=max_s, jitter=jitter_s)

    def wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome is not None else None
        if isinstance(exc, RateLimitedError) and exc.retry_after is not None:
            return exc.retry_after
        return float(self._backoff(state))


class RateLimiter:
    """At most ``per_s`` request starts per second on average, in bursts of at most ``burst`` (a token bucket).

    Written on anyio (aiolimiter is asyncio-only) so it works under trio too.
    """

    def __init__(self, per_s: float, burst: int = 1) -> None:
        if not (math.isfinite(per_s) and per_s > 0) or burst < 1:
            raise UsageError(f"rate limit must be > 0 per second with burst >= 1, not {per_s}/{burst}")
        self.per_s = per_s
        self.burst = burst
        self._tokens = float(burst)
        self._at = time.monotonic()
        self._lock = anyio.Lock()

    async def acquire(self) -> None:
        async with self._lock:  # first come, first served
            now = time.monotonic()
            self._tokens = min(self.burst, self._tokens + (now - self._at) * self.per_s)
            self._at = now
            if self._tokens < 1:
                await anyio.sleep((1 - self._tokens) / self.per_s)
                self._tokens, self._at = 1.0, time.monotonic()
            self._tokens -= 1


class Resilient(ChatBackend):
    """``inner`` with retries, at most ``concurrency`` open requests and at most ``rate`` starts per second.

    The concurrency slot is held for a stream's whole life, and counts requests (one request may carry
    n samples).
    """

    provider: ClassVar[str] = "resilient"

    def __init__(
        self,
        inner: ChatBackend,
        *,
        retry: RetryPolicy | None = None,
        concurrency: int | None = None,
        rate: RateLimiter | None = None,
    ) -> None:
        if concurrency is not None and concurrency < 1:
            raise UsageError(f"concurrency must be a positive integer, not {concurrency!r}")
        self.inner = inner
        self.provider = inner.provider  # type: ignore[misc]
        self.max_n = inner.max_n  # type: ignore[misc]
        self.retry = retry or RetryPolicy()
        self._slots = anyio.CapacityLimiter(concurrency) if concurrency else None
        self._rate = rate
        self.attempts = 0  # requests sent, retries included
        self.retried = 0

    @asynccontextmanager
    async def stream(self, request: ChatRequest) -> AsyncIterator[ChatStream]:
        def stop(state: RetryCallState) -> bool:
            if state.attempt_number >= self.retry.attempts:
                return True
            # tenacity computes the wait before it asks whether to stop: do not sleep past the deadline
            return request.deadline is not None and time.monotonic() + state.upcoming_sleep >= request.deadline

        async with AsyncExitStack() as stack:
            if self._slots is not None:
                await stack.enter_async_context(self._slots)
            opened: tuple[ChatStream, Delta | None] | None = None
            async for attempt in AsyncRetrying(
                retry=retry_if_exception_type(ProviderUnavailableError),
                wait=self.retry.wait,
                stop=stop,
                sleep=anyio.sleep,
                reraise=True,
            ):
                with attempt:
                    self.retried += attempt.retry_state.attempt_number > 1
                    opened = await self._attempt(request, stack)
            assert opened is not None  # tenacity either succeeded or re-raised
            s, first = opened
            s.deltas = _chain(first, s.deltas)
            yield s

    async def _attempt(self, request: ChatRequest, outer: AsyncExitStack) -> tuple[ChatStream, Delta | None]:
        if self._rate is not None:
            await self._rate.acquire()
        self.attempts += 1
        one = AsyncExitStack()
        try:
            s = await one.enter_async_context(self.inner.stream(request))
            first = await anext(s.deltas, None)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await one.aclose()
            raise
        outer.push_async_exit(one)
        return s, first

    async def aclose(self) -> None:
        await self.inner.aclose()


async def _chain(first: Delta | None, rest: AsyncIterator[Delta]) -> AsyncIterator[Delta]:
    if first is None:
        return
    yield first
    async for d in rest:
        yield d
