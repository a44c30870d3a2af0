"""The compile notice, and what :func:`planners._compile.njit` changes about compiling.

A cold compile of the real kernels takes tens of seconds, so these tests compile tiny kernels made in a
module named under ``planners.`` (the notice hears those) and check the plumbing with them.
"""

from __future__ import annotations

import json
import warnings
from typing import TYPE_CHECKING, Any

import numpy as np
from typer.testing import CliRunner

from planners._compile import njit, watch
from runtime._compile import COMPILING, CompileNotice, compile_notice
from runtime.cli import app
from tests.conftest import EXAMPLES

if TYPE_CHECKING:
    import pytest

_probes = iter(range(10**6))


def _kernel(source: str, name: str, namespace: dict[str, Any] | None = None, **options: Any) -> Any:
    """A fresh kernel ``name`` defined by ``source`` in a module ``planners._probe`` (never compiled yet)."""
    scope: dict[str, Any] = {"__name__": "planners._probe", **(namespace or {})}
    exec(source, scope)  # a function of its own each time: numba compiles it on its first call
    return njit(**options)(scope[name])


def _probe() -> Any:
    n = next(_probes)
    return _kernel(f"def probe(x):\n    return x * 2 + {n}\n", "probe")


def test_the_callback_hears_a_compile_once_and_nothing_when_compiled() -> None:
    heard: list[str] = []
    probe = _probe()
    with watch(lambda: heard.append("a")):
        probe(1)
        _probe()(1)  # a second compile in the same block: still one notice
    assert heard == ["a"]
    with watch(lambda: heard.append("b")):
        probe(2)  # already compiled (as a kernel loaded from the cache): nothing
    assert heard == ["a"]


def test_literal_arguments_and_read_only_constants_share_one_compile() -> None:
    f = _kernel("def f(a, k):\n    return a.sum() + k\n", "f", readonly=("a",))
    const = np.ones(3)  # numba passes a module-level array read-only
    caller = _kernel(
        "def caller(a):\n    s = f(a, 0) + f(const, len(a))\n    i = 0\n    i += 1\n    return s + f(a, i)\n",
        "caller",
        {"f": f, "const": const},
    )
    assert caller(np.zeros(3)) == 3 + 3 + 1
    assert len(f.signatures) == 1  # numba alone: three (literal 0, int64 and a read-only array; i is typed 0 first)
    assert f(np.zeros(2), 5) == 5  # a call from Python converts to that compile too
    assert len(f.signatures) == 1


def test_the_library_warns_once_unless_an_outer_entry_point_says_it_its_way() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with compile_notice():
            _probe()(1)
            _probe()(1)
    assert [str(w.message) for w in caught if w.category is CompileNotice] == [COMPILING]
    said: list[int] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with compile_notice(lambda: said.append(1)), compile_notice():
            _probe()(1)
    assert said == [1] and not [w for w in caught if w.category is CompileNotice]


def test_run_json_says_it_on_stderr_only_when_compiling(monkeypatch: pytest.MonkeyPatch) -> None:
    from planners.baselines import RetryPlanner

    probe = _probe()
    decide = RetryPlanner.decide
    monkeypatch.setattr(RetryPlanner, "decide", lambda self, snap: (probe(1), decide(self, snap))[1])
    args = ["run", str(EXAMPLES / "diamond.json"), "-b", "1", "-d", "600", "--planner", "retry:small:2", "--json"]
    first = CliRunner().invoke(app, args)
    assert first.exit_code in (0, 1)
    assert json.loads(first.stdout)["planner"] == "retry:small:2"  # stdout is the JSON alone
    assert first.stderr.count("compiling the planner's kernels") == 1
    again = CliRunner().invoke(app, args)  # compiled now: not a word
    assert again.exit_code == first.exit_code and again.stderr == ""


def test_a_notice_that_fails_never_stops_the_compile() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # as pytest runs this suite: the notice raises
        with compile_notice():
            assert _kernel("def twice(x):\n    return 2 * x\n", "twice")(2) == 4
