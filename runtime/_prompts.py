"""Subtask prompts: ``{{dep_id}}`` in a prompt is replaced by that dependency's output.

Double braces keep single ones free for the code and JSON that prompts often contain.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from runtime.types import Message

if TYPE_CHECKING:
    from collections.abc import Mapping

    from runtime.types import Subtask

__all__ = ["REPAIR_TEMPLATE", "placeholders", "render", "repair"]

# The user message that follows a failed answer in a repair loop's next prompt (``{detail}``: the verifier's
# ``Verdict.detail``, or why the answer could not be checked). The failed answer itself goes before it, as the
# assistant's message, so the model sees what it is repairing.
REPAIR_TEMPLATE = "That answer failed: {detail}. Fix it."
_NO_DETAIL = "it did not pass the check"

_SLOT = re.compile(r"\{\{\s*([^{}\s]+)\s*\}\}")


def placeholders(template: str) -> list[str]:
    """The subtask ids a prompt template refers to, in order."""
    return _SLOT.findall(template)


def render(subtask: Subtask, outputs: Mapping[str, str | None]) -> tuple[Message, ...] | None:
    """The messages of ``subtask`` given its dependencies' outputs, or None if it has no prompt."""
    if subtask.prompt is None:
        return None
    user = _SLOT.sub(lambda m: outputs.get(m.group(1)) or "", subtask.prompt)
    system = () if subtask.system is None else (Message("system", subtask.system),)
    return (*system, Message("user", user))


def repair(messages: tuple[Message, ...], output: str, detail: str) -> tuple[Message, ...]:
    """A repair invocation's prompt: ``messages`` (the subtask's own prompt), the failed ``output`` as the
    assistant's answer, then :data:`REPAIR_TEMPLATE` with the verifier's ``detail``."""
    why = " ".join(detail.split()).rstrip(".") or _NO_DETAIL
    return (*messages, Message("assistant", output), Message("user", REPAIR_TEMPLATE.format(detail=why)))
