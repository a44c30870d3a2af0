"""The simulated backend: samples drawn from the workflow's profiles, latency slept on the run's clock.

Each sample's draws come from a generator seeded by ``(run seed, batch, sample index)``, so the same seed
gives the same run whatever order the event loop starts tasks in. A sample's output tokens stream out
linearly between its time to first token and its end, which is what a cancelled sample is charged for.
Input tokens are charged in full as soon as a sample starts (the prompt is processed first).
"""

from __future__ import annotations

import math
import random
from typing import TYPE_CHECKING

from adapters.base import Adapter, SampleOutcome, SampleProgress, SampleRequest
from runtime._profiles import KIND_FIXED, KIND_LOGNORMAL, KIND_POOL, ProfileTable

if TYPE_CHECKING:
    from runtime._clock import Clock

__all__ = ["SimAdapter", "draw_sample", "tokens_at"]


def draw_sample(table: ProfileTable, i: int, j: int, rng: random.Random) -> tuple[bool, int, float]:
    """One attempt of subtask i on model j: ``(success, output_tokens, latency_s)``.

    Output tokens are capped at the model's max_output_tokens; a capped attempt was cut off and fails.
    """
    cap = int(table.max_tokens[j])
    kind = table.kind[i, j]
    latency = math.nan
    if kind == KIND_POOL:
        r = int(table.pool_start[i, j]) + rng.randrange(int(table.pool_len[i, j]))
        ok = bool(table.pool_success[r])
        tokens = int(table.pool_tokens[r])
        latency = float(table.pool_latency[r])
    elif kind == KIND_FIXED:
        ok = rng.random() < table.p_draw[i, j]
        tokens = int(table.fixed_tokens[i, j])
    elif kind == KIND_LOGNORMAL:
        ok = rng.random() < table.p_draw[i, j]
        tokens = max(1, round(math.exp(table.ln_mu[i, j] + table.ln_sigma[i, j] * rng.gauss())))
    else:
        raise ValueError(f"model {table.model_names[j]!r} cannot run subtask {table.subtask_ids[i]!r}")
    if tokens > cap:
        ok, tokens = False, cap
    if math.isnan(latency):
        latency = table.latency_of(j, tokens)
    return ok, tokens, latency


def tokens_at(elapsed: float, tokens: int, latency: float, ttft: float) -> int:
    """Output tokens produced ``elapsed`` seconds into an attempt of ``tokens`` tokens over ``latency``."""
    if elapsed >= latency:
        return tokens
    start = min(ttft, latency)
    if elapsed <= start:
        return 0
    return min(tokens, math.floor(tokens * (elapsed - start) / (latency - start)))


class SimAdapter(Adapter):
    """Draws each sample from ``table`` and sleeps its latency on ``clock``.

    Args:
        table: the profiles to draw from.
        clock: the run's clock (virtual in benchmarks and tests, real for a live demo).
        seed: the run's seed.
    """

    def __init__(self, table: ProfileTable, clock: Clock, seed: int) -> None:
        self.table = table
        self.clock = clock
        self.seed = seed

    async def sample(self, request: SampleRequest, progress: SampleProgress) -> SampleOutcome:
        batch, index = request.key
        rng = random.Random(f"{self.seed}:{batch}:{index}")
        ok, tokens, latency = draw_sample(self.table, request.subtask, request.model, rng)
        tokens = min(tokens, request.max_tokens)
        progress.input_tokens = request.input_tokens
        start = self.clock.now()
        try:
            await self.clock.sleep_until(start + latency, order=request.key)
        finally:
            ttft = float(self.table.ttft_s[request.model])
            progress.output_tokens = tokens_at(self.clock.now() - start, tokens, latency, ttft)
        return SampleOutcome(
            success=ok,
            input_tokens=request.input_tokens,
            output_tokens=tokens,
            output=f"[sim] {request.subtask_id} on {request.model_name}: {tokens} tokens, "
            + ("passed" if ok else "failed"),
        )
