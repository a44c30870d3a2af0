"""The simulated backend: samples drawn from the workflow's profiles, latency slept on the run's clock.

Each sample's draws come from a generator seeded by ``(run seed, batch, sample index)``, so the same seed gives the
same run whatever order the event loop starts tasks in. A batch's samples end in the order of their latencies (ties by
index), each reported at its own wake-up on the clock. A sample's output tokens stream out linearly between its time
to first token and its end, which is what a cancelled sample is charged for; its input tokens are charged in full from
its start (the prompt is processed first). The draw says whether the sample passes (``SampleEnd.passed``): the
simulation is its own verifier. Where success depends on history (``runtime.types.LatentClasses``,
``CascadeTable``), the rate follows the batch's history, and a subtask's hidden class is drawn once per run from
``(run seed, subtask)``: every batch and sample of the run shares it, and nothing outside the backend sees it.
"""

from __future__ import annotations

import math
import random
from typing import TYPE_CHECKING

from runtime.types import KIND_FIXED, KIND_LOGNORMAL, KIND_POOL, Adapter, Finish, SampleEnd, UsageError

if TYPE_CHECKING:
    from runtime.types import Batch, Clock, ProfileTable, Report

__all__ = ["SimAdapter", "draw_sample", "tokens_at"]


def draw_sample(
    table: ProfileTable, i: int, j: int, rng: random.Random, rate: float | None = None
) -> tuple[bool, int, float]:
    """One attempt of subtask i on model j: ``(success, output_tokens, latency_s)``.

    Output tokens are capped at the model's max_output_tokens; a capped attempt was cut off and fails. A ``rate``
    (a history-dependent success rate) decides success in place of the profile's, which then gives the length only.
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
        ok = bool(rng.random() < table.p_draw[i, j])
        tokens = int(table.fixed_tokens[i, j])
    elif kind == KIND_LOGNORMAL:
        ok = bool(rng.random() < table.p_draw[i, j])
        tokens = max(1, round(math.exp(table.ln_mu[i, j] + table.ln_sigma[i, j] * rng.gauss())))
    else:
        raise UsageError(f"model {table.model_names[j]!r} cannot run subtask {table.subtask_ids[i]!r}")
    if rate is not None:
        ok = rng.random() < rate
    if tokens > cap:
        ok, tokens = False, cap
    if math.isnan(latency):
        latency = table.latency_of(j, tokens)
    return ok, tokens, latency + float(table.tool_latency[i])  # a loop's tool stage runs on the output


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

    simulated = True

    def __init__(self, table: ProfileTable, clock: Clock, seed: int) -> None:
        self.table = table
        self.clock = clock
        self.seed = seed
        self._classes: dict[int, int] = {}  # the hidden class of each subtask with classes, drawn at its first batch

    def success_rate(self, i: int, j: int, history: tuple[int, ...]) -> float | None:
        """The history-dependent rate of a sample of model j on subtask i (None: the profile's own draw)."""
        t = self.table
        if t.has_classes(i):
            if i not in self._classes:
                self._classes[i] = t.draw_class(i, random.Random(f"{self.seed}:class:{i}").random())
            return t.success_rate(i, j, history, self._classes[i])
        return t.success_rate(i, j, history) if t.cas_root[i] >= 0 else None

    async def run(self, batch: Batch, report: Report) -> None:
        i, j = batch.subtask, batch.model
        rate = self.success_rate(i, j, batch.history)
        draws = [
            draw_sample(self.table, i, j, random.Random(f"{self.seed}:{batch.id}:{idx}"), rate)
            for idx in range(batch.k)
        ]
        pending = sorted(range(batch.k), key=lambda idx: (draws[idx][2], idx))
        start = self.clock.now()
        try:
            while pending:
                idx = pending[0]
                ok, tokens, latency = draws[idx]
                await self.clock.sleep_until(start + latency, order=(batch.id, idx))
                pending.pop(0)
                # cut off by a tighter cap than the table's
                finish = Finish.COMPLETE if tokens <= batch.max_tokens else Finish.CUT_OFF
                tokens = min(tokens, batch.max_tokens)
                verdict = "passed" if ok else "failed"
                output = f"[sim] {batch.tag} on {self.table.model_names[j]}: {tokens} tokens, {verdict}"
                report(SampleEnd(index=idx, finish=finish, input_tokens=batch.input_tokens, output_tokens=tokens,
                                 output=output, passed=ok))  # fmt: skip
        finally:  # cancelled: each of the others is charged what it has produced by now
            elapsed = self.clock.now() - start
            ttft, tool = float(self.table.ttft_s[j]), float(self.table.tool_latency[i])
            for idx in sorted(pending):
                _, tokens, latency = draws[idx]
                produced = tokens_at(elapsed, min(tokens, batch.max_tokens), latency - tool, ttft)
                report(SampleEnd(index=idx, finish=Finish.CANCELLED, input_tokens=batch.input_tokens,
                                 output_tokens=produced))  # fmt: skip
