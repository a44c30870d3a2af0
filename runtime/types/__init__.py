"""The leaf of ontime: the public data types and interfaces every other package shares.

Planners, adapters and tools import this package and nothing else of ``runtime``; it imports nothing of
theirs, nor the engine. ``runtime.types.answers`` holds the answer forms and scores of multi-hop QA.
"""

from __future__ import annotations

from runtime.types import (
    _adapter,
    _errors,
    _events,
    _history,
    _money,
    _plan,
    _profiles,
    _program,
    _qa,
    _verifier,
    _workflow,
)
from runtime.types._adapter import *  # noqa: F403
from runtime.types._clock import Clock, RealClock, VirtualClock
from runtime.types._errors import *  # noqa: F403
from runtime.types._events import *  # noqa: F403
from runtime.types._history import *  # noqa: F403
from runtime.types._money import *  # noqa: F403
from runtime.types._plan import *  # noqa: F403
from runtime.types._profiles import *  # noqa: F403
from runtime.types._program import *  # noqa: F403
from runtime.types._qa import *  # noqa: F403
from runtime.types._verifier import *  # noqa: F403
from runtime.types._workflow import *  # noqa: F403

__all__ = ["Clock", "RealClock", "VirtualClock"]
__all__ += _adapter.__all__ + _errors.__all__ + _events.__all__ + _history.__all__ + _money.__all__ + _plan.__all__
__all__ += _profiles.__all__ + _program.__all__ + _qa.__all__ + _verifier.__all__ + _workflow.__all__
