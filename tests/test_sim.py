"""The simulated backend draws what the profiles say, and the profile table summarizes them correctly."""

from __future__ import annotations

import functools
import random
import statistics

import anyio
import pytest

import runtime
from adapters.sim import draw_sample, tokens_at
from tests.conftest import EXAMPLES, build, chain_spec
from tests.helpers import comparable

N = 20_000


def table_for(profile: dict[str, object], max_tokens: int = 100_000) -> runtime.ProfileTable:
    spec = chain_spec(1, max_tokens=max_tokens, tps=50.0, ttft=0.25)
    spec["subtasks"][0]["profiles"]["m"] = profile
    return runtime.ProfileTable.from_workflow(build(spec))


def draws(table: runtime.ProfileTable, n: int = N) -> list[tuple[bool, int, float]]:
    rng = random.Random(1)
    return [draw_sample(table, 0, 0, rng) for _ in range(n)]


def test_lognormal_tokens_have_the_spec_mean_and_std() -> None:
    t = table_for({"p": 0.3, "output_tokens": {"mean": 1500, "std": 400}})
    d = draws(t)
    tokens = [x[1] for x in d]
    assert statistics.fmean(tokens) == pytest.approx(1500, rel=0.02)
    assert statistics.pstdev(tokens) == pytest.approx(400, rel=0.05)
    assert sum(x[0] for x in d) / N == pytest.approx(0.3, abs=0.015)
    assert all(lat == pytest.approx(0.25 + tok / 50.0) for _, tok, lat in d)
    assert t.mean_cost[0, 0] == pytest.approx(100 * 1e-6 * 1e12 + 1500 * 2e-6 * 1e12, rel=0.01)


def test_fixed_tokens_are_fixed() -> None:
    d = draws(table_for({"p": 0.5, "output_tokens": {"fixed": 321}}), 200)
    assert {x[1] for x in d} == {321}
    assert {x[2] for x in d} == {0.25 + 321 / 50.0}


def test_pool_rows_are_drawn_uniformly_with_their_latency() -> None:
    rows = [[1, 100, 3.0], [0, 200, None], [1, 300, 9.0], [0, 400, None]]
    t = table_for({"samples": rows})
    d = draws(t)
    by_tokens = {tok: (ok, lat) for ok, tok, lat in d}
    assert set(by_tokens) == {100, 200, 300, 400}
    assert by_tokens[100] == (True, 3.0) and by_tokens[200] == (False, 0.25 + 200 / 50.0)
    counts = [sum(1 for x in d if x[1] == tok) / N for tok in (100, 200, 300, 400)]
    assert all(c == pytest.approx(0.25, abs=0.015) for c in counts)
    assert t.p[0, 0] == 0.5 and t.min_latency[0, 0] == 3.0


def test_output_is_capped_at_max_tokens_and_a_capped_attempt_fails() -> None:
    t = table_for({"p": 1.0, "output_tokens": {"mean": 1000, "std": 300}}, max_tokens=1000)
    d = draws(t)
    assert max(x[1] for x in d) == 1000
    assert all(good for good, tok, _ in d if tok < 1000)  # p = 1: only truncation fails
    at_cap = [good for good, tok, _ in d if tok == 1000]
    assert len(at_cap) > 0.3 * N and sum(at_cap) < 0.01 * len(at_cap)  # nearly all of them were cut off
    # The table's effective p accounts for truncation (about half the mass lies above the mean).
    assert t.p[0, 0] == pytest.approx(sum(x[0] for x in d) / N, abs=0.02)
    pool = table_for({"samples": [[1, 5000, None], [1, 10, None]]}, max_tokens=1000)
    assert pool.p[0, 0] == 0.5


def test_tokens_stream_linearly_between_first_token_and_end() -> None:
    assert tokens_at(0.4, 1000, 10.0, 0.5) == 0
    assert tokens_at(5.25, 1000, 10.0, 0.5) == 500
    assert tokens_at(10.0, 1000, 10.0, 0.5) == 1000
    assert tokens_at(99.0, 1000, 10.0, 0.5) == 1000
    assert tokens_at(1.0, 100, 2.0, 5.0) == 0  # a recorded latency shorter than the ttft


def test_same_seed_same_run_on_asyncio_and_trio() -> None:
    # trio deliberately varies the order it runs ready tasks in; draws are keyed by sample, not by order.
    wf = runtime.load_workflow(EXAMPLES / "diamond.json")

    def events(seed: int, backend: str) -> list[dict[str, object]]:
        out: list[runtime.Event] = []
        anyio.run(
            functools.partial(runtime.arun, wf, 1.0, 600, seed=seed, planner="retry:small:4", on_event=out.append),
            backend=backend,
        )
        return comparable(out)

    a = events(11, "asyncio")
    assert a == events(11, "trio") == events(11, "asyncio")
    assert a != events(12, "asyncio")
