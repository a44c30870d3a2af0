"""OpenTelemetry traces (issue 21): one span per sample under its batch, subtask and run, with the GenAI and ontime
attributes, times nested, no secret anywhere; in memory, and over real OTLP/HTTP to a receiver on loopback."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from typer.testing import CliRunner

import runtime
from adapters.sim_server import Faults
from runtime.cli import app
from runtime.types import PUSD_PER_USD, SampleStatus
from tests.conftest import EXAMPLES
from tests.helpers import ask_program, example_spec, of, server

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping

DIAMOND = EXAMPLES / "diamond.json"
ROOT = Path(__file__).resolve().parent.parent


def in_memory() -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


def traced(wf: Any, budget: float, deadline: float, **kw: Any) -> tuple[list[runtime.Event], list[ReadableSpan]]:
    """Run once with an OTelSink on an in-memory exporter; the run's events and its finished spans."""
    provider, exporter = in_memory()
    sink = runtime.OTelSink(provider)
    events: list[runtime.Event] = []

    def both(event: runtime.Event) -> None:
        events.append(event)
        sink(event)

    runtime.run(wf, budget, deadline, on_event=both, **kw)
    return events, list(exporter.get_finished_spans())


def _by_id(spans: list[ReadableSpan]) -> dict[int, ReadableSpan]:
    return {s.context.span_id: s for s in spans if s.context is not None}


def attrs(span: ReadableSpan) -> Mapping[str, Any]:
    return span.attributes or {}


def times(span: ReadableSpan) -> tuple[int, int]:
    assert span.start_time is not None and span.end_time is not None
    return span.start_time, span.end_time


def _parent(span: ReadableSpan, by_id: dict[int, ReadableSpan]) -> ReadableSpan | None:
    return None if span.parent is None else by_id[span.parent.span_id]


def _within(child: ReadableSpan, parent: ReadableSpan) -> bool:
    (start, end), (parent_start, parent_end) = times(child), times(parent)
    return parent_start <= start <= end <= parent_end


def check_tree(events: list[runtime.Event], spans: list[ReadableSpan]) -> None:
    """Every span where the events put it, with their numbers: the test of the issue's done-when."""
    by_id = _by_id(spans)
    (run,) = [s for s in spans if s.name == "ontime.run"]
    assert run.parent is None and len({s.context.trace_id for s in spans if s.context}) == 1
    samples = {(attrs(s)["ontime.batch.id"], attrs(s)["ontime.sample.index"]): s for s in spans
               if s.name.startswith("chat ")}  # fmt: skip
    finished = of(events, runtime.SampleFinished)
    assert len(samples) == len(finished) == len([s for s in spans if s.name.startswith("chat ")])
    settled = {(e.batch, e.sample): e.pusd for e in of(events, runtime.BudgetSettled)}
    reserved = {e.batch: e for e in of(events, runtime.BudgetReserved)}
    launched = {e.batch: e for e in of(events, runtime.BatchLaunched)}
    completed = {e.subtask: e.model for e in of(events, runtime.SubtaskCompleted)}
    for e in finished:
        span = samples[e.batch, e.sample]
        a = attrs(span)
        assert span.name == f"chat {e.model}" and span.kind is SpanKind.CLIENT
        assert a["gen_ai.operation.name"] == "chat" and a["gen_ai.request.model"] == e.model
        assert (a["gen_ai.usage.input_tokens"], a["gen_ai.usage.output_tokens"]) == (e.input_tokens, e.output_tokens)
        assert a["ontime.sample.status"] == e.status.value and a["ontime.subtask"] == e.subtask
        assert a["ontime.cost_pusd"] == settled[e.batch, e.sample]
        assert a["ontime.cost_usd"] == settled[e.batch, e.sample] / PUSD_PER_USD
        failed = e.status in (SampleStatus.FAILED, SampleStatus.ERROR)
        assert (span.status.status_code is StatusCode.ERROR) == failed and ("error.type" in a) == failed
        assert times(span)[1] == times(run)[0] + round(e.t * 1e9)
        batch = _parent(span, by_id)
        assert batch is not None and batch.name == "ontime.batch" and _within(span, batch)
        b = attrs(batch)
        assert b["ontime.batch.id"] == e.batch and b["ontime.batch.k"] == launched[e.batch].k
        assert b["ontime.reservation.pusd"] == reserved[e.batch].pusd
        assert b["ontime.reservation.id"] == reserved[e.batch].reservation
        subtask = _parent(batch, by_id)
        assert subtask is not None and subtask.name == f"ontime.subtask {e.subtask}" and _within(batch, subtask)
        assert attrs(subtask)["ontime.subtask.completed"] == (e.subtask in completed)
        assert _parent(subtask, by_id) is run and _within(subtask, run)
    assert len([s for s in spans if s.name == "ontime.batch"]) == len(launched)
    (end,) = of(events, runtime.RunFinished)
    start = of(events, runtime.RunStarted)[0]
    r = attrs(run)
    assert r["ontime.run.id"] == start.run_id and r["ontime.workflow"] == start.workflow
    assert r["ontime.planner"] == start.planner and r["ontime.budget_pusd"] == start.budget_pusd
    assert r["ontime.deadline_s"] == start.deadline_s and r["ontime.run.success"] == end.success
    assert r["ontime.run.spent_pusd"] == end.spent_pusd and r.get("ontime.run.reason") == (end.reason or None)
    assert (run.status.status_code is StatusCode.ERROR) == (not end.success)
    assert times(run)[1] - times(run)[0] == round(end.t * 1e9)
    assert start.started_at is None or times(run)[0] == round(start.started_at * 1e9)  # the run's wall start


@pytest.mark.parametrize(
    ("seed", "deadline", "cancel_siblings"),
    [(1, 600.0, True), (3, 600.0, False), (2, 12.0, True)],
    ids=["siblings-cancelled", "siblings-left-to-finish", "deadline-hit"],
)
def test_one_span_per_sample_under_its_batch_subtask_and_run(seed: int, deadline: float, cancel_siblings: bool) -> None:
    events, spans = traced(runtime.load_workflow(DIAMOND), 1.0, deadline, planner="retry:small:3", seed=seed,
                           cancel_siblings=cancel_siblings)  # fmt: skip
    statuses = {e.status for e in of(events, runtime.SampleFinished)}
    assert SampleStatus.FAILED in statuses  # the cases the trace must show are there
    assert (SampleStatus.CANCELLED in statuses) == cancel_siblings
    check_tree(events, spans)
    (run,) = [s for s in spans if s.name == "ontime.run"]
    if deadline < 600:
        assert of(events, runtime.DeadlineHit) and [ev.name for ev in run.events] == ["ontime.deadline_hit"]
        assert run.status.status_code is StatusCode.ERROR and attrs(run)["ontime.run.reason"] == "deadline"


def test_a_failed_batch_is_an_error_and_its_subtask_runs_on_under_one_span() -> None:
    events, spans = traced(runtime.load_workflow(DIAMOND), 1.0, 600, planner="retry:small:1", seed=0)
    assert of(events, runtime.BatchFailed)
    check_tree(events, spans)
    failed = {e.batch for e in of(events, runtime.BatchFailed)}
    retried = {e.subtask for e in of(events, runtime.BatchFailed)}
    for span in spans:
        if span.name == "ontime.batch":
            assert (span.status.status_code is StatusCode.ERROR) == (attrs(span)["ontime.batch.id"] in failed)
        if span.name.startswith("ontime.subtask "):
            assert (attrs(span)["ontime.subtask.batches"] > 1) == (attrs(span)["ontime.subtask"] in retried)


def _every_text(spans: list[ReadableSpan]) -> list[str]:
    """Every string a trace exports: names, attribute values, event attributes, status texts, the resource."""
    out: list[str] = []
    for s in spans:
        out += [s.name, s.status.description or ""]
        for attributes in [s.attributes, s.resource.attributes, *(e.attributes for e in s.events)]:
            out += [str(v) for v in (attributes or {}).values()]
    return out


def test_no_api_key_reaches_any_span(monkeypatch: pytest.MonkeyPatch) -> None:
    """Runs on serve-sim with a key, faults of every kind that are not retried (samples end in errors), then with a
    wrong key that the server quotes back in its refusal; nothing key-like in either trace."""
    good, bad = "sk-ontime-test-OTELKEY-1234567890", "sk-ontime-test-WRONGKEY-0987654321"
    data = example_spec("mixed")
    for m in data["models"].values():
        m["api_key_env"], m["retries"] = "ONTIME_TEST_KEY", 1
    monkeypatch.setenv("ONTIME_TEST_KEY", good)
    with server(data, seed=1, speed=20.0, api_key=good, faults=Faults.every_kind(0.5, 0.02)) as (_, wf):
        events, spans = traced(wf, 0.05, 60, planner="retry:mini:2")
        monkeypatch.setenv("ONTIME_TEST_KEY", bad)
        provider, exporter = in_memory()
        with pytest.raises(runtime.ProviderRejectedError):
            runtime.run(wf, 0.05, 60, on_event=runtime.OTelSink(provider))
    assert SampleStatus.ERROR in {e.status for e in of(events, runtime.SampleFinished)}
    check_tree(events, spans)
    refused = list(exporter.get_finished_spans())
    assert [s.name for s in refused if s.name.startswith("chat ")] and "ontime.run" in [s.name for s in refused]
    texts = _every_text(spans + refused)
    assert not [t for t in texts if good in t or bad in t or "sk-" in t]
    errors = [attrs(s)["error.type"] for s in spans + refused if "error.type" in attrs(s)]
    assert "ProviderRejectedError" in errors and all(str(t).isidentifier() for t in errors)  # a class, no message


def test_a_run_that_never_finishes_is_ended_by_close() -> None:
    provider, exporter = in_memory()
    sink = runtime.OTelSink(provider)
    sink(runtime.RunStarted(t=0.0, run_id="r", workflow="w", subtasks=1, models=("m",), budget_pusd=10**12,
                            deadline_s=60.0, planner="p", seed=0, clock="RealClock", cancel_siblings=True,
                            started_at=1.7e9, resumed_from="crashed"))  # fmt: skip
    sink(runtime.BatchLaunched(t=1.0, batch=1, subtask="s", model="m", k=2, max_tokens=10))
    sink(runtime.SampleFinished(t=2.0, batch=1, sample=0, subtask="s", model="m", status=SampleStatus.SUCCEEDED,
                                input_tokens=1, output_tokens=2, latency_s=1.0))  # fmt: skip
    sink.close()
    sink.close()
    spans = {s.name: s for s in exporter.get_finished_spans()}
    assert set(spans) == {"ontime.run", "ontime.subtask s", "ontime.batch", "chat m"}
    assert spans["ontime.run"].status.status_code is StatusCode.ERROR
    assert times(spans["ontime.run"]) == (1_700_000_000 * 10**9, 1_700_000_002 * 10**9)  # to its last event
    assert attrs(spans["ontime.run"])["ontime.run.resumed_from"] == "crashed"
    assert all(_within(s, spans["ontime.run"]) for s in spans.values())
    assert "ontime.cost_usd" not in attrs(spans["chat m"])  # never settled: no cost is made up


def test_without_the_sdk_the_sink_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry.exporter.otlp.proto.http.trace_exporter", None)
    with pytest.raises(runtime.UsageError, match=r"pip install 'ontime\[otel\]'"):
        runtime.OTelSink()


def test_ontime_run_otel_without_the_sdk_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry.exporter.otlp.proto.http.trace_exporter", None)
    result = CliRunner().invoke(app, ["run", str(DIAMOND), "-b", "1", "-d", "600", "--otel"])
    assert result.exit_code == 2 and "pip install 'ontime[otel]'" in result.stderr
    assert "Traceback" not in result.output


def test_without_opentelemetry_runtime_imports_and_runs() -> None:
    probe = (
        "import sys\nsys.modules['opentelemetry'] = None\nimport runtime\n"
        "wf = runtime.load_workflow('examples/diamond.json')\n"
        "assert runtime.run(wf, 1.0, 600, planner='retry:small:3').success\n"
        "try:\n    runtime.OTelSink()\nexcept runtime.UsageError as exc:\n    print(exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True)
    assert "pip install 'ontime[otel]'" in out.stdout


class Receiver:
    """What an OTLP/HTTP collector on loopback was sent: the spans and resources, and each request's headers."""

    def __init__(self) -> None:
        self.requests: list[ExportTraceServiceRequest] = []
        self.headers: list[dict[str, str]] = []
        self.got = threading.Event()

    def spans(self) -> list[tuple[dict[str, Any], Any]]:
        """(resource attributes, span) for every span received."""
        out = []
        for request in self.requests:
            for rs in request.resource_spans:
                resource = {a.key: a.value.string_value for a in rs.resource.attributes}
                out += [(resource, span) for ss in rs.scope_spans for span in ss.spans]
        return out


@contextmanager
def otlp_receiver() -> Iterator[tuple[str, Receiver]]:
    received = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            if self.path == "/v1/traces":
                received.requests.append(ExportTraceServiceRequest.FromString(body))
                received.headers.append(dict(self.headers.items()))
                received.got.set()
            reply = ExportTraceServiceResponse().SerializeToString()
            self.send_response(200 if self.path == "/v1/traces" else 404)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, format: str, *args: Any) -> None:
            return None

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", received
    finally:
        httpd.shutdown()
        httpd.server_close()


SECRET_HEADER = "Bearer sk-otel-collector-SECRET-42"


@pytest.fixture
def collector(monkeypatch: pytest.MonkeyPatch) -> Iterator[Receiver]:
    """A receiver the standard environment variables point the sink at, with a secret header to send it."""
    with otlp_receiver() as (url, received):
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", f"{url}/v1/traces")
        monkeypatch.setenv("OTEL_SERVICE_NAME", "ontime-otel-test")
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_HEADERS", f"authorization={SECRET_HEADER.replace(' ', '%20')}")
        yield received


def _check_received(received: Receiver, samples: int, runs: int = 1) -> None:
    spans = received.spans()
    assert {r["service.name"] for r, _ in spans} == {"ontime-otel-test"}
    assert {h.get("Authorization", h.get("authorization")) for h in received.headers} == {SECRET_HEADER}
    names = [s.name for _, s in spans]
    assert len([n for n in names if n.startswith("chat ")]) == samples and names.count("ontime.run") == runs
    assert len({s.trace_id for _, s in spans}) == runs
    ids = {s.span_id for _, s in spans}
    assert all(s.parent_span_id in ids for _, s in spans if s.name != "ontime.run")
    values = [str(a.value) for _, s in spans for a in s.attributes] + [str(v) for r, _ in spans for v in r.values()]
    assert not [v for v in values if "sk-" in v or "Bearer" in v]


def test_spans_reach_an_otlp_http_collector_configured_by_the_environment(collector: Receiver) -> None:
    """Two runs, one after the other, on one sink: each run's end exports it at once, in the background."""
    sink = runtime.OTelSink()
    events: list[runtime.Event] = []

    def both(event: runtime.Event) -> None:
        events.append(event)
        sink(event)

    wf = runtime.load_workflow(DIAMOND)
    runtime.run(wf, 1.0, 600, planner="retry:small:3", seed=1, on_event=both)
    assert collector.got.wait(10.0)  # without close()
    runtime.run(wf, 1.0, 600, planner="retry:small:3", seed=2, on_event=both)
    sink.close()  # waits until everything is exported
    _check_received(collector, len(of(events, runtime.SampleFinished)), runs=2)


def test_a_process_that_never_closes_its_sink_exports_before_it_exits(collector: Receiver) -> None:
    probe = (
        "import runtime\nwf = runtime.load_workflow('examples/diamond.json')\n"
        "r = runtime.run(wf, 1.0, 600, planner='retry:small:3', seed=1, on_event=runtime.OTelSink())\n"
        "print(sum(o.samples for o in r.subtasks.values()))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True)
    _check_received(collector, int(out.stdout))


def test_ontime_run_otel_sends_the_runs_spans(collector: Receiver) -> None:
    result = CliRunner().invoke(app, ["run", str(DIAMOND), "-b", "1", "-d", "600", "--seed", "1", "--json", "--otel"])
    assert result.exit_code in (0, 1), result.output
    assert collector.requests  # the command waited for its export before it returned
    samples = sum(o["samples"] for o in json.loads(result.stdout)["subtasks"].values())
    _check_received(collector, samples)


def test_ontime_run_otel_traces_a_program_too(collector: Receiver, tmp_path: Path) -> None:
    """A workflow as code: its call_llm batches under its tag's span, on serve-sim through the sandbox."""
    entry = "async def workflow(problem):\n    return (await call_llm(problem, n=2, tag='ask'))[0]\n"
    with ask_program(tmp_path, entry) as path:
        result = CliRunner().invoke(app, ["run", str(path), "-b", "0.01", "-d", "30", "--json", "--otel"])
    assert result.exit_code == 0, result.stderr
    _check_received(collector, 2)
    names = [s.name for _, s in collector.spans()]
    assert names.count("ontime.subtask ask") == names.count("ontime.batch") == 1
