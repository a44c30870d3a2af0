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

__all__ = ["placeholders", "render"]

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
