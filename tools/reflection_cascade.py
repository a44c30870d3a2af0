"""The fully profiled cascade trie of the real reflection data (issue 18): every path over a set of models, on
every question, with the real outcome and the real price of every invocation.

Invocation t of model m on question q returns m's ``retry`` outcome if m already appears earlier on the path
(its own repair after its own failure), else m's ``baseline`` outcome (a fresh answer). A path succeeds if any
invocation on it does. A repeat is reached only after m's first answer failed, and the file holds a ``retry``
for every such question; a missing one counts as a wrong answer that cost nothing.

An invocation costs its row's input tokens x the input price + output tokens x the output price. Prices come
from genai-prices (the data's model names mapped to its ids in :data:`PRICE_IDS`), then from a LiteLLM price
table if one is given; ``unit="tokens"`` counts tokens instead.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Literal

import numpy as np

from adapters.pricing import list_price
from planners.cascade_sampling import PathOutcomes, PathTrie
from runtime.types import UsageError

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path

    from tools.reflection_data import Attempt

__all__ = ["PRICE_IDS", "cascade_table", "price_per_million"]

# The data's model names -> (genai-prices provider, model id): the closest list price of the same model.
PRICE_IDS = {
    "claude-3-opus-20240229": ("anthropic", "claude-3-opus-20240229"),
    "cohere-command-r-plus": ("cohere", "command-r-plus"),
    "gemini-1.0-pro": ("google", "gemini-1.0-pro"),
    "gemini-1.5-pro-preview-0409": ("google", "gemini-1.5-pro"),
    "gpt-35-turbo": ("openai", "gpt-3.5-turbo"),
    "gpt-4": ("openai", "gpt-4"),
    "llama-2-70b-chat": ("together", "meta-llama/Llama-2-70b-chat-hf"),
    "llama-2-7b-chat": ("together", "meta-llama/Llama-2-7b-chat-hf"),
    "mistral-large": ("mistral", "mistral-large"),
}


def price_per_million(model: str, litellm: Path | None = None) -> tuple[float, float]:
    """(input, output) dollars per million tokens of a model named as in the reflection data.

    Raises:
        UsageError: neither genai-prices nor the LiteLLM table (if given) knows the model.
    """
    provider, name = PRICE_IDS.get(model, (None, model))
    try:
        return list_price(provider, name) if provider else _any_provider(name)
    except LookupError:
        pass
    if litellm is not None:
        try:
            entry = json.loads(litellm.read_text(encoding="utf-8"))["models"][model]
            return float(entry["input_usd_per_1M"]), float(entry["output_usd_per_1M"])
        except (OSError, ValueError, KeyError, TypeError):
            pass
    raise UsageError(f"no list price for {model!r}: give one, or count tokens")


def _any_provider(model: str) -> tuple[float, float]:
    from genai_prices import Usage, calc_price

    per_in = calc_price(Usage(input_tokens=1_000_000, output_tokens=0), model)
    per_out = calc_price(Usage(input_tokens=0, output_tokens=1_000_000), model)
    return float(per_in.total_price), float(per_out.total_price)


def cascade_table(
    attempts: Sequence[Attempt],
    models: Sequence[str],
    depth: int,
    *,
    questions: Sequence[tuple[str, str]] | None = None,
    unit: Literal["dollars", "tokens"] = "dollars",
    litellm: Path | None = None,
) -> tuple[PathOutcomes, list[tuple[str, str]]]:
    """The cascade table of ``models`` up to ``depth`` on ``questions`` (default: every question every model
    answered), and the questions in row order.

    Raises:
        UsageError: an unknown model, no question, or a model without a price (with ``unit="dollars"``).
    """
    trie = PathTrie(models, depth)
    first: dict[tuple[str, tuple[str, str]], Attempt] = {}
    retry: dict[tuple[str, tuple[str, str]], Attempt] = {}
    for a in attempts:
        if a.attempt == 1:
            first[a.model, a.question] = a
        elif a.agent == "retry":
            retry[a.model, a.question] = a
    known = {m for m, _ in first}
    if missing := [m for m in models if m not in known]:
        raise UsageError(f"no first attempts of {', '.join(missing)} (known: {', '.join(sorted(known))})")
    if questions is None:
        common = set.intersection(*({q for m2, q in first if m2 == m} for m in models))
        questions = sorted(common)
    qs = list(questions)
    if not qs:
        raise UsageError("no question that every model answered")
    prices = {m: price_per_million(m, litellm) if unit == "dollars" else (1e6, 1e6) for m in models}
    # Per model and question: (fresh ok, fresh cost, repair ok, repair cost).
    n_m, n_q = len(models), len(qs)
    ok, price = np.zeros((2, n_m, n_q), dtype=bool), np.zeros((2, n_m, n_q))
    for i, m in enumerate(models):
        p_in, p_out = prices[m]
        for j, q in enumerate(qs):
            if (m, q) not in first:
                raise UsageError(f"model {m} has no first answer to question {q}")
            answers: tuple[Attempt | None, ...] = (first[m, q], retry.get((m, q)))
            for k, ans in enumerate(answers):
                if ans is not None:
                    ok[k, i, j] = ans.right
                    price[k, i, j] = (ans.input_tokens * p_in + ans.output_tokens * p_out) / 1e6
    kind = np.minimum(trie.repeat, 1)  # 0: a fresh answer; 1: the model's own repair
    invoke = ok[kind, trie.model].T.copy()
    cost = price[kind, trie.model].T.copy()
    return PathOutcomes(trie, invoke, cost), qs
