"""Model backends, behind :class:`runtime.types.Adapter` (one method: run a batch, report each sample's end).

The executor runs batches through the in-process simulator (:mod:`adapters.sim`) or, on a real endpoint,
:class:`adapters.chat_adapter.ChatAdapter` driving a :class:`adapters.chat.ChatBackend` (:mod:`adapters.openai`,
:mod:`adapters.anthropic`) wrapped in :class:`adapters.resilience.Resilient`. :mod:`adapters.sim_server` serves
workflow profiles over both HTTP APIs. A vendor SDK is imported only on first use, so unused SDKs never load.
"""
