"""Model backends.

The executor runs samples through :class:`adapters.base.Adapter`: the in-process simulator
(:mod:`adapters.sim`) or :class:`adapters.chat_adapter.ChatAdapter` on a real endpoint, which drives a
:class:`adapters.chat.ChatBackend` (:mod:`adapters.openai`, :mod:`adapters.anthropic`) wrapped in
:class:`adapters.resilience.Resilient`. :mod:`adapters.sim_server` serves workflow profiles over both HTTP
APIs. Backends are imported on first use, so a workflow that needs neither SDK never loads them.
"""

from __future__ import annotations

from adapters.base import Adapter, SampleOutcome, SampleProgress, SampleRequest

__all__ = ["Adapter", "SampleOutcome", "SampleProgress", "SampleRequest"]
