"""Shared fixtures: workflow builders, and a guard that keeps every test on loopback."""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING, Any

import pytest

import runtime

if TYPE_CHECKING:
    from collections.abc import Iterator

EXAMPLES = __import__("pathlib").Path(__file__).resolve().parent.parent / "examples"


@pytest.fixture(scope="session", autouse=True)
def _kernels_compiled() -> None:
    """Compile the planners' numba kernels (or load them from the cache) once, before any test. The tests
    that signal a command a fraction of a second after it starts measure how it handles signals, not a
    first use on a fresh clone, where a run's first decision compiles for about 20 s and a signalled run
    waits for it (issue 20)."""
    runtime.run(EXAMPLES / "chain.json", 1.0, 60.0)
    runtime.evaluate(EXAMPLES / "release20.json", 2.0, 1200.0, planner="retry:mini:1", runs=2, workers=1)


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Indexes built by tests go to a temporary folder, never the user's cache."""
    monkeypatch.setenv("ONTIME_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "ontime-cache"))


@pytest.fixture(autouse=True)
def _loopback_only(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Fail any test that tries to reach an address outside loopback."""
    real_connect = socket.socket.connect

    def connect(self: socket.socket, address: Any) -> Any:
        host = address[0] if isinstance(address, tuple) else address
        inet = isinstance(host, str) and self.family in (socket.AF_INET, socket.AF_INET6)
        if inet and not (host.startswith("127.") or host in ("localhost", "::1")):
            raise RuntimeError(f"test tried to reach {host!r}: only loopback is allowed")
        return real_connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    yield


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def model(
    *,
    inp: float = 1.0,
    out: float = 2.0,
    tps: float = 100.0,
    ttft: float = 0.5,
    max_tokens: int = 2000,
) -> dict[str, Any]:
    """A model entry of a spec, in the spec's own units ($/Mtok, tokens/s, s)."""
    return {
        "provider": "sim",
        "input_price_per_mtok": inp,
        "output_price_per_mtok": out,
        "tokens_per_s": tps,
        "ttft_s": ttft,
        "max_output_tokens": max_tokens,
    }


def chain_spec(n: int = 2, p: float = 0.5, tokens: int = 100, inp: int = 100, **model_kw: Any) -> dict[str, Any]:
    """A chain s0 -> s1 -> ... of one model with fixed output tokens."""
    return {
        "name": f"chain{n}",
        "models": {"m": model(**model_kw)},
        "subtasks": [
            {
                "id": f"s{i}",
                "deps": [f"s{i - 1}"] if i else [],
                "input_tokens": inp,
                "profiles": {"m": {"p": p, "output_tokens": {"fixed": tokens}}},
            }
            for i in range(n)
        ],
    }


def build(spec: dict[str, Any]) -> runtime.Workflow:
    return runtime.parse_workflow(spec, source="<test>")


def mixed_diamond() -> runtime.Workflow:
    """examples/mixed_diamond.json: plan -> (proof, code) -> merge, where the cheap model is hopeless on the
    proof and the strong one too dear to use everywhere, so winning needs different models on different
    subtasks. Fixed output tokens, so the exact solver applies."""
    return runtime.load_workflow(EXAMPLES / "mixed_diamond.json")
