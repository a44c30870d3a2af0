"""Building the chat backend of a model from its spec: SDK client, key, retries, limits."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from adapters.resilience import RateLimiter, Resilient, RetryPolicy
from runtime.types import UsageError

if TYPE_CHECKING:
    from adapters.chat import ChatBackend
    from runtime.types import ModelSpec

__all__ = ["make_backend"]

_KEY_ENV = {"openai": "OPENAI_API_KEY", "anthropic": "ANTHROPIC_API_KEY"}


def make_backend(model: ModelSpec) -> ChatBackend:
    """The backend of a real model, wrapped with its retries, concurrency limit and rate limit.

    The key comes from the spec's ``api_key``, else the variable ``api_key_env`` names, else the vendor's
    usual variable. A custom ``base_url`` (a local server) may need no key; a placeholder is sent then.
    """
    ep = model.endpoint
    if ep is None:
        raise UsageError(f"model {model.name!r} is simulated; it has no endpoint")
    if model.provider not in _KEY_ENV:
        raise UsageError(f"model {model.name!r}: unknown provider {model.provider!r}")
    env = ep.api_key_env or _KEY_ENV[model.provider]
    key = ep.api_key or os.environ.get(env)
    if not key:
        if ep.base_url is None:
            raise UsageError(f"model {model.name!r}: no API key; set {env} (or api_key_env in the spec)")
        key = "no-key"
    if not key.isprintable() or not key.isascii() or key != key.strip():  # a header cannot carry it: refuse
        why = "spaces, control or non-ASCII characters, which an HTTP header cannot carry (a pasted newline?)"
        raise UsageError(f"model {model.name!r}: the API key holds {why}")
    backend: ChatBackend
    if model.provider == "openai":
        from adapters.openai import OpenAIBackend

        backend = OpenAIBackend(api_key=key, base_url=ep.base_url, timeout_s=ep.timeout_s)
    else:
        from adapters.anthropic import AnthropicBackend

        backend = AnthropicBackend(api_key=key, base_url=ep.base_url, timeout_s=ep.timeout_s)
    rate = None if ep.requests_per_s is None else RateLimiter(ep.requests_per_s, burst=max(1, int(ep.requests_per_s)))
    return Resilient(backend, retry=RetryPolicy(attempts=ep.retries), concurrency=ep.concurrency, rate=rate)
