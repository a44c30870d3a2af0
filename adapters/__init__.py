"""Model backends, behind :class:`runtime.types.Adapter` (one method: run a batch, report each sample's end).

The executor runs batches through the in-process simulator (:mod:`adapters.sim`) or, on a real endpoint,
:class:`adapters.chat_adapter.ChatAdapter` driving a :class:`adapters.chat.ChatBackend` (:mod:`adapters.openai`,
:mod:`adapters.anthropic`) wrapped in :class:`adapters.resilience.Resilient`. :mod:`adapters.sim_server` serves
workflow profiles over both HTTP APIs, and text from any answering adapter: real LLMs' recorded exam answers
(:mod:`adapters.recorded_answers`), the simulated executor of the paper's data sets (:mod:`adapters.sim_solver`),
the simulated meta-LLM that writes workflow programs (:mod:`adapters.sim_meta_llm`). A vendor SDK is imported
only on first use, so unused SDKs never load.
"""
