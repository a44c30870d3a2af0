"""Model backends, behind :class:`runtime.types.Adapter` (one method: run a batch, report each sample's end).

The executor runs batches through the in-process simulator (:mod:`adapters.sim`) or
:class:`adapters.chat_adapter.ChatAdapter` on a real endpoint, which drives a
:class:`adapters.chat.ChatBackend` (:mod:`adapters.openai`, :mod:`adapters.anthropic`) wrapped in
:class:`adapters.resilience.Resilient`. :mod:`adapters.sim_server` serves workflow profiles over both HTTP
APIs. A vendor SDK is imported only by its backend, on first use (:func:`adapters.endpoints.make_backend`),
so a workflow that needs neither SDK never loads them.
"""
