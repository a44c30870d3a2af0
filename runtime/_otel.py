"""OpenTelemetry traces of a run: a sink that turns its events into spans run -> subtask -> batch -> sample.

Events say what happened after it happened, so every span is made with explicit start and end times: the wall
clock when the run started plus each event's ``t``. On the virtual clock the spans therefore lay the run's
virtual time out from the moment it started. Sample spans follow the GenAI semantic conventions (``chat
<model>``, ``gen_ai.*``); the rest is ``ontime.*``. Only names, numbers and outcomes become attributes: never a
prompt, an output, an error message, a header or a key (invariant 5).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from runtime.types import (
    BatchLaunched,
    BudgetReserved,
    BudgetSettled,
    DeadlineHit,
    Event,
    LaunchRejected,
    RunFinished,
    RunStarted,
    SampleFinished,
    SampleStatus,
    SubtaskCompleted,
    UsageError,
)
from runtime.types._money import to_usd

try:
    from opentelemetry import trace as otel
except ImportError:  # the optional extra is missing: OTelSink() says how to install it
    otel = None  # type: ignore[assignment]

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider as SDKTracerProvider
    from opentelemetry.trace import Span, Tracer, TracerProvider
    from opentelemetry.util.types import Attributes

__all__ = ["OTelSink"]

_INSTALL = "pip install 'ontime[otel]'"
_FAILED = (SampleStatus.FAILED, SampleStatus.ERROR)


@dataclass(slots=True)
class _Subtask:
    span: Span
    end: float  # its last activity so far, in run seconds
    open_batches: int = 0
    batches: int = 0
    completed: bool = False
    ended: bool = False


@dataclass(slots=True)
class _Batch:
    span: Span
    subtask: _Subtask
    start: float
    end: float
    open: int  # samples not yet settled
    succeeded: bool = False
    cost_pusd: int = 0


class OTelSink:
    """An ``on_event`` sink that sends a run's spans to OpenTelemetry (the ``otel`` extra).

    Without ``tracer_provider`` it builds its own from the standard ``OTEL_*`` environment variables (service
    name, resource, OTLP/HTTP endpoint, headers, timeout) with a batch span processor. When a run finishes it
    flushes that provider in a thread, so the export does not hold up the event loop (the process waits for it
    before it exits); :meth:`close` waits for it and shuts the provider down. A provider you pass stays yours to
    flush and shut down. One sink serves one run at a time, and runs one after another; the run span joins the
    caller's current trace, if there is one.

    Raises:
        UsageError: the OpenTelemetry packages are not installed.
    """

    __slots__ = (
        "_batches",
        "_exporting",
        "_last",
        "_owned",
        "_reserved",
        "_run",
        "_samples",
        "_subtasks",
        "_t0",
        "_tracer",
    )

    def __init__(self, tracer_provider: TracerProvider | None = None) -> None:
        if otel is None:
            raise UsageError(f"OTelSink needs OpenTelemetry: {_INSTALL}")
        self._owned: SDKTracerProvider | None = None
        if tracer_provider is None:
            tracer_provider = self._owned = _env_provider()
        self._tracer: Tracer = tracer_provider.get_tracer("ontime")
        self._exporting: threading.Thread | None = None
        self._run: Span | None = None
        self._t0, self._last = 0, 0.0
        self._subtasks: dict[str, _Subtask] = {}
        self._batches: dict[int, _Batch] = {}
        self._reserved: dict[int, BudgetReserved] = {}
        self._samples: dict[tuple[int, int], tuple[Span, float]] = {}

    def __call__(self, event: Event) -> None:
        if isinstance(event, RunStarted):
            return self._run_started(event)
        if self._run is None:  # not a run's event (a search agent's), or after its end
            return None
        self._last = event.t
        match event:
            case BudgetReserved():
                self._reserved[event.batch] = event  # its batch is launched next
            case BatchLaunched():
                self._batch_launched(event)
            case SampleFinished():
                self._sample_finished(event)
            case BudgetSettled():
                self._settled(event)
            case SubtaskCompleted():
                self._completed(event)
            case DeadlineHit():
                self._run.add_event("ontime.deadline_hit", {"ontime.cancelled_samples": event.cancelled_samples},
                                    self._ns(event.t))  # fmt: skip
            case LaunchRejected():
                self._run.add_event("ontime.launch_rejected", {
                    "ontime.subtask": event.subtask, "gen_ai.request.model": event.model, "ontime.batch.k": event.k,
                    "ontime.reason": event.reason.value,
                }, self._ns(event.t))  # fmt: skip
            case RunFinished():
                self._finished(event)
        return None

    def close(self) -> None:
        """End what a run that never finished left open; shut down the sink's own provider once it has exported
        everything (or given up: ``OTEL_EXPORTER_OTLP_TRACES_TIMEOUT``). Idempotent."""
        if self._run is not None:
            self._abandon()
        if self._exporting is not None:
            self._exporting.join()
        if self._owned is not None:
            self._owned.shutdown()
            self._owned = None

    def _ns(self, t: float) -> int:
        return self._t0 + round(t * 1e9)

    def _start(self, name: str, parent: Span | None, t: float, attributes: Attributes, client: bool = False) -> Span:
        context = None if parent is None else otel.set_span_in_context(parent)
        kind = otel.SpanKind.CLIENT if client else otel.SpanKind.INTERNAL
        return self._tracer.start_span(name, context, kind, attributes, start_time=self._ns(t))

    def _run_started(self, e: RunStarted) -> None:
        if self._run is not None:  # a second run on one sink: end the first rather than mix the two
            self._abandon()
        started = time.time_ns() if e.started_at is None else round(e.started_at * 1e9)
        self._t0, self._last = started - round(e.t * 1e9), e.t
        self._run = self._start("ontime.run", None, e.t, {
            "ontime.run.id": e.run_id, "ontime.workflow": e.workflow, "ontime.planner": e.planner,
            "ontime.seed": e.seed, "ontime.clock": e.clock, "ontime.subtasks": e.subtasks,
            "ontime.budget_usd": to_usd(e.budget_pusd), "ontime.budget_pusd": e.budget_pusd,
            "ontime.deadline_s": e.deadline_s, "ontime.cancel_siblings": e.cancel_siblings,
        })  # fmt: skip
        if e.resumed_from is not None:  # the crashed run this one continues: its trace is found by this id
            self._run.set_attribute("ontime.run.resumed_from", e.resumed_from)

    def _batch_launched(self, e: BatchLaunched) -> None:
        sub = self._subtasks.get(e.subtask)
        if sub is None or sub.ended:  # a program may call under one tag again after its calls ended
            span = self._start(f"ontime.subtask {e.subtask}", self._run, e.t, {"ontime.subtask": e.subtask})
            sub = self._subtasks[e.subtask] = _Subtask(span, e.t)
        sub.open_batches += 1
        sub.batches += 1
        attributes: dict[str, str | int | float] = {
            "ontime.batch.id": e.batch, "ontime.subtask": e.subtask, "ontime.batch.k": e.k,
            "gen_ai.request.model": e.model, "gen_ai.request.max_tokens": e.max_tokens,
        }  # fmt: skip
        res = self._reserved.pop(e.batch, None)
        if res is not None:
            attributes |= {
                "ontime.reservation.id": res.reservation, "ontime.reservation.pusd": res.pusd,
                "ontime.reservation.usd": to_usd(res.pusd), "ontime.reservation.output_tokens": res.output_tokens,
            }  # fmt: skip
        span = self._start("ontime.batch", sub.span, e.t, attributes)
        self._batches[e.batch] = _Batch(span, sub, e.t, e.t, e.k)

    def _sample_finished(self, e: SampleFinished) -> None:
        b = self._batches.get(e.batch)
        if b is None:
            return
        span = self._start(f"chat {e.model}", b.span, max(b.start, e.t - e.latency_s), {
            "gen_ai.operation.name": "chat", "gen_ai.request.model": e.model,
            "gen_ai.usage.input_tokens": e.input_tokens, "gen_ai.usage.output_tokens": e.output_tokens,
            "ontime.subtask": e.subtask, "ontime.batch.id": e.batch, "ontime.sample.index": e.sample,
            "ontime.sample.status": e.status.value, "ontime.sample.latency_s": e.latency_s,
        }, client=True)  # fmt: skip
        if e.status in _FAILED:
            span.set_attribute("error.type", _error_type(e))
            span.set_status(otel.Status(otel.StatusCode.ERROR, e.status.value))
        b.succeeded = b.succeeded or e.status is SampleStatus.SUCCEEDED
        self._samples[e.batch, e.sample] = (span, e.t)  # ended when its cost is settled, just after

    def _settled(self, e: BudgetSettled) -> None:
        sample, b = self._samples.pop((e.batch, e.sample), None), self._batches.get(e.batch)
        if sample is None or b is None:
            return
        span, end = sample
        span.set_attributes({"ontime.cost_usd": to_usd(e.pusd), "ontime.cost_pusd": e.pusd})
        span.end(self._ns(end))
        b.cost_pusd += e.pusd
        b.end = max(b.end, end)
        b.open -= 1
        if b.open == 0:
            self._end_batch(e.batch)

    def _end_batch(self, batch: int) -> None:
        b = self._batches.pop(batch)
        b.span.set_attributes({
            "ontime.batch.outcome": "succeeded" if b.succeeded else "failed",
            "ontime.batch.cost_usd": to_usd(b.cost_pusd), "ontime.batch.cost_pusd": b.cost_pusd,
        })  # fmt: skip
        if not b.succeeded:
            b.span.set_status(otel.Status(otel.StatusCode.ERROR, "no sample succeeded"))
        b.span.end(self._ns(b.end))
        sub = b.subtask
        sub.open_batches -= 1
        sub.end = max(sub.end, b.end)
        if sub.completed and sub.open_batches == 0:
            self._end_subtask(sub)

    def _completed(self, e: SubtaskCompleted) -> None:
        sub = self._subtasks.get(e.subtask)
        if sub is None:
            return
        sub.completed = True
        sub.end = max(sub.end, e.t)
        sub.span.set_attribute("ontime.subtask.model", e.model)
        if sub.open_batches == 0:  # else it ends with its last batch, once the siblings are stopped
            self._end_subtask(sub)

    def _end_subtask(self, sub: _Subtask) -> None:
        sub.span.set_attributes({"ontime.subtask.completed": sub.completed, "ontime.subtask.batches": sub.batches})
        sub.span.end(self._ns(sub.end))
        sub.ended = True

    def _finished(self, e: RunFinished) -> None:
        run = self._end_children(e.t)
        run.set_attributes({
            "ontime.run.success": e.success, "ontime.run.spent_usd": e.cost_usd, "ontime.run.spent_pusd": e.spent_pusd,
            "ontime.run.elapsed_s": e.elapsed_s, "ontime.run.completed": e.completed,
        })  # fmt: skip
        if e.reason is not None:
            run.set_attribute("ontime.run.reason", e.reason.value)
        if not e.success:
            run.set_status(otel.Status(otel.StatusCode.ERROR, e.reason.value if e.reason else "failed"))
        run.end(self._ns(e.t))
        if self._owned is not None:  # export the run now, off the event loop (a collector may be slow or away)
            self._exporting = threading.Thread(target=self._owned.force_flush, name="ontime-otel-export")
            self._exporting.start()  # not a daemon: the process waits for it before it exits

    def _abandon(self) -> None:
        """End a run that never said it finished, at its last event, as an error."""
        run = self._end_children(self._last)
        run.set_status(otel.Status(otel.StatusCode.ERROR, "the run did not finish"))
        run.end(self._ns(self._last))

    def _end_children(self, t: float) -> Span:
        """End every span the run has open (those still at work at ``t``), and hand back the run's own."""
        run, self._run = self._run, None
        assert run is not None
        for span, end in self._samples.values():
            span.end(self._ns(end))
        for batch, b in list(self._batches.items()):
            b.end = t if b.open else b.end
            self._end_batch(batch)
        for sub in self._subtasks.values():
            if not sub.ended:
                self._end_subtask(sub)
        self._subtasks, self._reserved, self._samples = {}, {}, {}
        return run


def _error_type(e: SampleFinished) -> str:
    """The class of a sample's error (``ProviderUnavailableError``), never its message, which may quote what the
    endpoint was sent; a sample that failed its check is ``failed``."""
    name = (e.error or "").split(":", 1)[0]
    return name if name.isidentifier() else e.status.value


def _env_provider() -> SDKTracerProvider:
    """The SDK's provider with an OTLP/HTTP exporter, both configured by the ``OTEL_*`` environment variables."""
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import SERVICE_NAME, Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError as exc:
        raise UsageError(f"OTelSink needs the OpenTelemetry SDK and OTLP exporter ({exc.name}): {_INSTALL}") from None
    resource = Resource.create()  # OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: "ontime"}))
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))  # OTEL_EXPORTER_OTLP_* and OTEL_BSP_*
    return provider
