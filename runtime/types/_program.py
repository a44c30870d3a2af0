"""What a workflow written as code asks of ontime: one ``call_llm`` request, and what it cost.

A program (an ``async def workflow(problem)`` that calls ``call_llm`` and, for code tasks, ``exec_code``: the
helper interface of the BayesFlow paper, Appendix G) reaches models only through these requests. Whether it
runs in ontime's process (a user's own code) or in the sandbox (model-written code, whose requests cross a
channel to the parent as JSON), the parent turns each request into one batch under the run's ledger and clock.
The request is plain data so that it can cross that channel: strings, numbers and None.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from runtime.types._errors import UsageError

__all__ = ["CallResult", "LLMCall"]

_MAX_N = 64  # the widest batch MCP's portfolio launches; a program asking for more is a bug, not a plan


@dataclass(frozen=True, slots=True, kw_only=True)
class LLMCall:
    """One ``call_llm`` request: n samples of one prompt on one model, all of which are needed (a gathered
    batch: voting, ensembles, self-consistency).

    Attributes:
        messages: the input messages, in order; sent as one user message, joined by blank lines.
        model: the model's name in the program's models; None for the program's default model.
        n: how many answers (the paper's ``num_of_response``).
        temperature: the sampling temperature.
        agent_role: the assistant's persona, put into the system prompt ("You are a {agent_role}.").
        instructions: task guidance appended to the system prompt.
        max_tokens: output tokens each answer may use at most (what the ledger reserves); None for the model's
            ``max_output_tokens``.
        tag: a label for events and the journal (the program's step, the problem it works on).
    """

    messages: tuple[str, ...]
    model: str | None = None
    n: int = 1
    temperature: float = 0.0
    agent_role: str = ""
    instructions: str = ""
    max_tokens: int | None = None
    tag: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.messages, tuple) or not self.messages:
            raise UsageError("call_llm: messages must be a non-empty list of strings")
        if not all(isinstance(m, str) for m in self.messages):
            raise UsageError("call_llm: every message must be a string")
        if self.model is not None and not (isinstance(self.model, str) and self.model):
            raise UsageError(f"call_llm: model must be a model's name, not {self.model!r}")
        if isinstance(self.n, bool) or not isinstance(self.n, int) or not 1 <= self.n <= _MAX_N:
            raise UsageError(f"call_llm: n (num_of_response) must be an integer from 1 to {_MAX_N}, not {self.n!r}")
        t = self.temperature
        if isinstance(t, bool) or not isinstance(t, int | float) or not (math.isfinite(t) and 0.0 <= t <= 2.0):
            raise UsageError(f"call_llm: temperature must be a number from 0 to 2, not {t!r}")
        for name in ("agent_role", "instructions", "tag"):
            if not isinstance(getattr(self, name), str):
                raise UsageError(f"call_llm: {name} must be a string, not {getattr(self, name)!r}")
        cap = self.max_tokens
        if cap is not None and (isinstance(cap, bool) or not isinstance(cap, int) or not 1 <= cap <= 2**31):
            raise UsageError(f"call_llm: max_tokens must be a positive integer, not {cap!r}")

    @property
    def system(self) -> str:
        """The system prompt the paper's helper builds from the persona and the instructions."""
        role = f"You are a {self.agent_role}." if self.agent_role else ""
        return " ".join(part for part in (role, self.instructions) if part)

    @property
    def prompt(self) -> str:
        """The user message: the messages joined by blank lines (one message keeps every API's turn order)."""
        return "\n\n".join(self.messages)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> LLMCall:
        """A request decoded from the sandbox channel: every field checked, unknown keys refused.

        Raises:
            UsageError: a field is missing, unknown or of the wrong type.
        """
        if not isinstance(data, Mapping):
            raise UsageError(f"call_llm: a request must be an object, not {type(data).__name__}")
        unknown = sorted(set(data) - set(cls.__slots__))
        if unknown:
            raise UsageError(f"call_llm: unknown argument {unknown[0]!r}")
        messages = data.get("messages")
        if isinstance(messages, str):
            messages = [messages]
        if not isinstance(messages, Sequence):
            raise UsageError("call_llm: messages must be a non-empty list of strings")
        return cls(**{**dict(data), "messages": tuple(messages)})

    def to_json(self) -> dict[str, Any]:
        """The request as JSON-ready data (what crosses the channel)."""
        return {name: list(self.messages) if name == "messages" else getattr(self, name) for name in self.__slots__}


@dataclass(frozen=True, slots=True)
class CallResult:
    """What one ``call_llm`` produced and cost: the answers in sample order, the money settled for them (in
    pico-dollars, as the ledger counts), and the tokens."""

    outputs: tuple[str, ...]
    cost_pusd: int
    input_tokens: int
    output_tokens: int
