"""Model backends behind one interface (:class:`adapters.base.Adapter`).

Only ``sim`` (in-process, profile-driven) exists so far; backends are imported on first use, so a missing
optional SDK never breaks the others.
"""

from __future__ import annotations

from adapters.base import Adapter, SampleOutcome, SampleProgress, SampleRequest

__all__ = ["Adapter", "SampleOutcome", "SampleProgress", "SampleRequest"]
