"""``ontime serve-sim``: an HTTP server speaking the OpenAI and Anthropic APIs, answering from a workflow's profiles.

It makes the real adapters testable offline. ``POST /v1/chat/completions`` (OpenAI) and ``POST
/v1/messages`` (Anthropic) are answered in real time, each sample drawn from the (subtask, model) profile
exactly as the in-process simulator draws it (:func:`adapters.sim.draw_sample`), latencies divided by
``speed``. The subtask comes from the ``x-ontime-subtask`` header, else from the subtask whose prompt
starts the last user message. Where the subtask's success depends on its history (a loop subtask's ``difficulty``,
``cascade`` or ``replay``), the ``x-ontime-history`` header (the models of its failed batches, in order) picks the
rate: a repair's, or the cascade's entry after that history; the hidden class is drawn once per run (the
``x-ontime-run`` header) and subtask, from the server's seed, as the in-process simulator draws it once per run.
Without either header a request is drawn as it always was (a first attempt). A success returns the subtask's
``reference``, a failure a ``wrong`` output (default: a refusal), cut into as many stream pieces as the drawn token
count; past ``max_tokens`` it is cut off (``length``).

Models given an adapter of their own (``answers``: e.g. :class:`adapters.recorded_answers.RecordedAnswers`, whose
replies are real models' recorded answers to exam questions, or :class:`adapters.sim_solver.SimSolver`, a simulated
executor on the paper's data sets) are answered by it instead, in real time (on its own clock), with the usage it
reports; such a server needs no workflow.

Faults are injected per request at configurable rates: 429 with ``Retry-After``, 500, a dropped stream, a
hung response, malformed JSON. ``GET /ontime/record`` returns the server's record of every request.
"""

from __future__ import annotations

import json
import math
import random
import time
import uuid
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field
from functools import partial
from itertools import pairwise
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import unquote

import anyio
from aiohttp import web

from adapters.chat import HISTORY_HEADER, RUN_HEADER, SUBTASK_HEADER
from adapters.chat_agent import QA_TAG, read_turn
from adapters.sim import draw_sample
from runtime.types import Batch, Finish, Message, ProfileTable, UsageError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping

    from runtime.types import Adapter, AgentModel, SampleEnd, Workflow

__all__ = ["Faults", "Served", "SimServer", "serve_in_thread"]

FAULT_KINDS = ("rate_limit", "server_error", "drop", "hang", "malformed")
REFUSAL = "I am not sure how to do this."


@dataclass(frozen=True, slots=True)
class Faults:
    """Per-request probabilities of each fault (they must sum to at most 1)."""

    rate_limit: float = 0.0
    server_error: float = 0.0
    drop: float = 0.0
    hang: float = 0.0
    malformed: float = 0.0
    retry_after_s: float = 0.2  # what a 429 asks the client to wait

    def __post_init__(self) -> None:
        rates = [getattr(self, k) for k in FAULT_KINDS]
        if any(not (0.0 <= r <= 1.0) for r in rates) or sum(rates) > 1.0 + 1e-9 or self.retry_after_s < 0:
            raise UsageError(f"fault rates must be in [0, 1] and sum to at most 1: {self}")

    @classmethod
    def every_kind(cls, total: float, retry_after_s: float = 0.2) -> Faults:
        """``total`` split evenly over the five kinds."""
        return cls(**dict.fromkeys(FAULT_KINDS, total / len(FAULT_KINDS)), retry_after_s=retry_after_s)

    def draw(self, rng: random.Random) -> str | None:
        u = rng.random()
        for kind in FAULT_KINDS:
            u -= getattr(self, kind)
            if u < 0:
                return kind
        return None


@dataclass(slots=True)
class Served:
    """The server's record of one request."""

    id: str
    api: str  # "openai" or "anthropic"
    model: str
    subtask: str | None
    n: int
    stream: bool
    input_tokens: int = 0
    output_tokens: list[int] = field(default_factory=list)
    status: str = "open"  # complete, cancelled, or the fault injected
    seq: int = 0  # its arrival number, which seeds its draws
    run: str | None = None  # the x-ontime-run header
    history: tuple[str, ...] = ()  # the x-ontime-history header: the subtask's failed models, in order

    @property
    def total_output_tokens(self) -> int:
        return sum(self.output_tokens)


@dataclass(frozen=True, slots=True)
class _Sample:
    text_pieces: tuple[str, ...]
    finish: str  # "stop" or "length"
    ttft: float
    latency: float


@dataclass(frozen=True, slots=True)
class _Request:
    """A request that passed the checks every request needs."""

    body: dict[str, Any]
    messages: list[dict[str, Any]]
    system: str | None  # Anthropic's top-level system prompt
    n: int
    max_tokens: int
    prompt_tokens: int


class SimServer:
    """The server for one workflow. Start it with :meth:`start` (or :func:`serve_in_thread`).

    Args:
        workflow: the workflow whose profiles and reference outputs it serves.
        seed: seeds every draw (request by request, in arrival order).
        speed: latencies are divided by this (2: twice as fast as the profiles say).
        faults: fault rates.
        api_key: if given, requests without this key are refused with 401.
        on_served: called with each request's record when it ends.
        agent: a search-agent model (usually :class:`adapters.sim_agent.SimAgentModel`) answering the requests
            :class:`adapters.chat_agent.ChatAgentModel` sends (subtask header ``qa-agent``), read back from the prompt.
        ignore_max_tokens: answer agent turns as an endpoint that ignores ``max_tokens`` (up to 4 times it, and
            reported as such): what the search agent's cap audit must catch.
        answers: models (by the name requests give) answered by an adapter of their own rather than from the
            workflow's profiles; each reply is its samples' outputs and usage. Their adapters sleep on clocks
            of their own (a :class:`runtime.RealClock` at this ``speed``). With answers the workflow may be None.
    """

    def __init__(
        self,
        workflow: Workflow | None,
        *,
        seed: int = 0,
        speed: float = 1.0,
        faults: Faults = Faults(),
        api_key: str | None = None,
        on_served: Callable[[Served], None] | None = None,
        agent: AgentModel | None = None,
        ignore_max_tokens: bool = False,
        answers: Mapping[str, Adapter] | None = None,
    ) -> None:
        if not (math.isfinite(speed) and speed > 0):
            raise UsageError(f"speed must be positive and finite, not {speed!r}")
        if workflow is None and not answers:
            raise UsageError("serve-sim needs a workflow or models with answers of their own")
        self.workflow = workflow
        self.table = None if workflow is None else ProfileTable.from_workflow(workflow)
        self.answers = dict(answers or {})
        self.seed = seed
        self.speed = speed
        self.faults = faults
        self._api_key = api_key
        self._on_served = on_served
        self.agent = agent
        self.ignore_max_tokens = ignore_max_tokens
        self.record: list[Served] = []
        self.peak_open = 0  # the most requests it was answering at once
        self._open = 0
        self._count = 0
        self._models: dict[str, int] = {}
        for j, name in enumerate(() if workflow is None else workflow.models):
            ep = workflow.models[name].endpoint if workflow is not None else None
            self._models.update(dict.fromkeys([name] if ep is None else [name, ep.model], j))
        self._subtasks = {} if workflow is None else {s.id: i for i, s in enumerate(workflow.subtasks)}
        self._runner: web.AppRunner | None = None
        self.url: str | None = None

    # -- lifecycle ------------------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", partial(self._serve, api="openai"))
        app.router.add_post("/v1/messages", partial(self._serve, api="anthropic"))
        app.router.add_get("/v1/models", self._list_models)
        app.router.add_get("/ontime/record", self._record)
        return app

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Listen on ``host:port`` (0: any free port); return the base URL."""
        # handler_cancellation: a client that hangs up cancels its handler, so hung requests end too
        # shutdown_timeout: on stop, give requests in flight (a hung one never ends) a second, then cancel them
        self._runner = web.AppRunner(self.app(), handler_cancellation=True, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        sockets = getattr(site._server, "sockets", None) or ()  # aiohttp does not expose the bound port
        bound = sockets[0].getsockname()[1] if sockets else port
        self.url = f"http://{host}:{bound}"
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def open_requests(self) -> int:
        return sum(1 for r in self.record if r.status == "open")

    # -- shared ---------------------------------------------------------------------------------------

    async def _record(self, request: web.Request) -> web.Response:
        return web.json_response({"requests": [asdict(r) for r in self.record], "open": self.open_requests})

    async def _list_models(self, request: web.Request) -> web.Response:
        names = [*self._models, *self.answers]
        return web.json_response({"object": "list", "data": [{"id": m, "object": "model"} for m in names]})

    @property
    def _profiles(self) -> tuple[Workflow, ProfileTable]:
        """The workflow and its table: only requests for a model of the workflow use them."""
        assert self.workflow is not None and self.table is not None
        return self.workflow, self.table

    def _which_subtask(self, request: web.Request, messages: list[dict[str, Any]]) -> int | None:
        tag = request.headers.get(SUBTASK_HEADER)
        if tag is not None:
            return self._subtasks.get(tag)
        last = _last_user(messages)
        for i, s in enumerate(self._profiles[0].subtasks):
            head = (s.prompt or "").split("{{")[0]
            if head and last.startswith(head):
                return i
        return None

    def _history(self, request: web.Request) -> tuple[str | None, tuple[str, ...]] | str:
        """The request's run id and history (model names), or what is wrong with them."""
        run = request.headers.get(RUN_HEADER)
        raw = request.headers.get(HISTORY_HEADER, "")
        names = tuple(unquote(part) for part in raw.split(",")) if raw else ()
        unknown = [m for m in names if m not in self._models]
        if unknown:
            return f"{HISTORY_HEADER}: unknown model {unknown[0][:80]!r}"
        return (None if run is None else unquote(run)), names

    def _rate(self, i: int, j: int, run: str | None, history: tuple[str, ...], rng: random.Random) -> float | None:
        """The success rate of model j on subtask i after ``history`` (None: the profile's own draw)."""
        t = self._profiles[1]
        failed = [self._models[m] for m in history]
        if t.has_classes(i):
            u = rng.random() if run is None else random.Random(f"{self.seed}:class:{run}:{i}").random()
            return t.success_rate(i, j, failed, t.draw_class(i, u))
        return t.success_rate(i, j, failed) if t.cas_root[i] >= 0 else None

    def _draw(self, i: int, j: int, max_tokens: int, rng: random.Random, rate: float | None = None) -> _Sample:
        wf, table = self._profiles
        ok, tokens, latency = draw_sample(table, i, j, rng, rate)
        s = wf.subtasks[i]
        finish = "stop"
        if tokens > max_tokens:
            ok, tokens, finish = False, max_tokens, "length"
            latency = table.latency_of(j, tokens)
        if ok:
            text = s.reference if s.reference is not None else f"[sim] {s.id}: done"
        else:
            text = rng.choice(s.wrong) if s.wrong else REFUSAL
        ttft = min(float(table.ttft_s[j]), latency)
        return _Sample(_pieces(text, tokens), finish, ttft / self.speed, latency / self.speed)

    def _parse(self, request: web.Request, body: Any, api: str) -> _Request | web.Response:
        """Check what every request needs (shape, key, n, max_tokens), or return the error response."""
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list) or "model" not in body:
            return _error(api, 400, "invalid_request_error", "the body needs 'model' and 'messages'")
        if self._api_key is not None and _given_key(request) != self._api_key:
            # Like some real servers, echo the key: clients must keep it out of their logs themselves.
            return _error(api, 401, "authentication_error", f"invalid API key {_given_key(request)!r}")
        n = body.get("n") or 1
        max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
        if not isinstance(n, int) or n < 1 or n > 128 or (api == "anthropic" and n != 1):
            return _error(api, 400, "invalid_request_error", "n must be an integer in [1, 128] (Anthropic: no n)")
        if not isinstance(max_tokens, int) or max_tokens < 1:
            return _error(api, 400, "invalid_request_error", "max_tokens must be a positive integer")
        messages = body["messages"]
        system = _text(body.get("system")) if api == "anthropic" else None  # OpenAI's are among the messages
        return _Request(body, messages, system, n, max_tokens, _prompt_tokens(messages, system))

    def _prepare(
        self, request: web.Request, r: _Request, api: str
    ) -> tuple[Served, list[_Sample], str | None] | web.Response:
        """Draw a subtask request's samples, or return the error response."""
        j = self._models.get(str(r.body["model"]))
        if j is None:
            return _error(api, 404, "not_found_error", f"unknown model {str(r.body['model'])[:80]!r}")
        i = self._which_subtask(request, r.messages)
        if i is None:
            return _error(api, 400, "invalid_request_error", f"cannot tell the subtask; send {SUBTASK_HEADER}")
        wf, table = self._profiles
        if table.kind[i, j] < 0:
            return _error(api, 400, "invalid_request_error", "this model cannot run this subtask")
        history = self._history(request)
        if isinstance(history, str):
            return _error(api, 400, "invalid_request_error", history)
        served, rng, fault = self._record_request(api, r, wf.subtasks[i].id, r.n)
        served.run, served.history = history
        rate = None
        if RUN_HEADER in request.headers or HISTORY_HEADER in request.headers:  # else drawn as before them
            rate = self._rate(i, j, *history, rng)
        return served, [self._draw(i, j, r.max_tokens, rng, rate) for _ in range(r.n)], fault

    def _record_request(self, api: str, r: _Request, subtask: str, n: int) -> tuple[Served, random.Random, str | None]:
        """Record a new request; its generator (seeded by arrival order) and the fault it draws."""
        self._count += 1
        rng = random.Random(f"{self.seed}:{self._count}")
        fault = self.faults.draw(rng)
        served = Served(uuid.uuid4().hex[:16], api, str(r.body.get("model")), subtask, n, bool(r.body.get("stream")),
                        r.prompt_tokens, [0] * n, seq=self._count)  # fmt: skip
        self.record.append(served)
        return served, rng, fault

    async def _agent_turn(self, r: _Request, api: str) -> tuple[Served, list[_Sample], str | None]:
        """One search-agent turn: rebuild the trace from the prompt, let the agent model answer it."""
        system = r.system or "".join(_text(m.get("content")) for m in r.messages if m.get("role") == "system")
        assert self.agent is not None
        limit = 4 * r.max_tokens if self.ignore_max_tokens else r.max_tokens
        trace, directive, budget = read_turn(system, _last_user(r.messages), limit)
        turn = await self.agent.turn(trace, directive, budget)
        tokens = max(1, min(turn.output_tokens, limit))
        served, _, fault = self._record_request(api, r, QA_TAG, 1)
        finish = "length" if turn.output_tokens >= limit and "</" not in turn.text[-20:] else "stop"
        latency = (0.05 + tokens / 500.0) / self.speed
        return served, [_Sample(_pieces(turn.text, tokens), finish, 0.05 / self.speed, latency)], fault

    async def _answer(self, adapter: Adapter, served: Served, r: _Request) -> list[_Sample]:
        """Run the request's samples on ``adapter`` (it takes their time); a cancelled one records its usage."""
        messages = tuple(
            Message(m["role"], _text(m.get("content")))
            for m in r.messages
            if isinstance(m, dict) and m.get("role") in ("system", "user", "assistant")
        )
        if r.system:
            messages = (Message("system", r.system), *messages)
        ends: dict[int, SampleEnd] = {}

        def report(end: SampleEnd) -> None:
            ends[end.index] = end
            served.input_tokens = end.input_tokens  # the prompt is billed once per request
            if end.finish is Finish.CANCELLED:  # else the reply's pieces count its output
                served.output_tokens[end.index] = end.output_tokens

        batch = Batch(id=served.seq, subtask=0, tag=served.subtask or "", model=0, k=r.n, max_tokens=r.max_tokens,
                      input_tokens=adapter.input_tokens(r.prompt_tokens, messages), messages=messages)  # fmt: skip
        await adapter.run(batch, report)
        return [
            _Sample(_pieces(e.output or "", e.output_tokens), "stop" if e.finish is Finish.COMPLETE else "length", 0, 0)
            for e in (ends[c] for c in range(r.n))
        ]

    async def _fault_before_reply(self, api: str, served: Served, fault: str | None) -> web.Response | None:
        """Faults that happen before any output: they consume nothing."""
        if fault in (None, "drop") or (fault == "malformed" and served.stream):
            return None
        served.status = fault
        if fault == "rate_limit":
            wait = self.faults.retry_after_s
            headers = {"retry-after-ms": str(round(wait * 1000)), "retry-after": str(math.ceil(wait))}
            return _error(api, 429, "rate_limit_error", "rate limit reached (simulated)", headers)
        if fault == "server_error":
            return _error(api, 500, "api_error", "internal error (simulated)")
        if fault == "hang":
            await anyio.sleep_forever()
        return web.Response(status=200, text='{"id": "broken", "choices": [', content_type="application/json")

    async def _stream(
        self, request: web.Request, served: Served, samples: list[_Sample], fault: str | None, encode: Any
    ) -> web.StreamResponse:
        """Write the pieces of every sample at their times; ``encode`` turns events into SSE text."""
        events = [(s.latency, c, -1) for c, s in enumerate(samples)]  # piece -1: the sample's finish
        for c, s in enumerate(samples):
            k = len(s.text_pieces)
            events += [(s.ttft + (s.latency - s.ttft) * (p + 1) / k, c, p) for p in range(k)]
        events.sort(key=lambda e: (e[0], e[2] < 0, e[1]))
        cut = len(events)
        if fault == "drop":
            cut = random.Random(f"{self.seed}:drop:{served.seq}").randrange(0, max(1, len(events) // 2))
        resp = web.StreamResponse(headers={"content-type": "text/event-stream", "cache-control": "no-cache"})
        await resp.prepare(request)
        start = time.monotonic()
        await resp.write(encode.start(served).encode())
        if fault == "malformed":
            served.status = "malformed"
            await resp.write(b'data: {"choices": [{"index": 0, "delta": \n\n')
            return resp
        done = 0
        while done < cut:
            await anyio.sleep(max(0.0, events[done][0] - (time.monotonic() - start)))
            now = time.monotonic() - start
            batch = []
            while done < cut and events[done][0] <= now:
                batch.append(events[done])
                done += 1
            text = "".join(
                encode.piece(c, samples[c].text_pieces[p]) if p >= 0 else encode.finish(c, samples[c])
                for _, c, p in batch
            )
            for _, c, p in batch:  # counted before the write: a disconnect can cancel it after the bytes left
                if p >= 0:
                    served.output_tokens[c] += 1
            await resp.write(text.encode())
        if cut < len(events):
            served.status = "drop"
            assert request.transport is not None
            request.transport.close()
            return resp
        await resp.write(encode.end(served).encode())
        served.status = "complete"
        await resp.write_eof()
        return resp

    async def _serve(self, request: web.Request, api: str) -> web.StreamResponse:
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            return _error(api, 400, "invalid_request_error", "the body is not JSON")
        parsed = self._parse(request, body, api)
        if isinstance(parsed, web.Response):
            return parsed
        adapter = self.answers.get(str(body["model"]))
        if self.agent is not None and request.headers.get(SUBTASK_HEADER) == QA_TAG:
            prepared: tuple[Served, list[_Sample], str | None] | web.Response = await self._agent_turn(parsed, api)
        elif adapter is not None:  # its samples are drawn below, once the request is counted open
            tag = request.headers.get(SUBTASK_HEADER, "answers")
            served, _, fault = self._record_request(api, parsed, tag, parsed.n)
            prepared = served, [], fault
        else:
            prepared = self._prepare(request, parsed, api)
        if isinstance(prepared, web.StreamResponse):
            return prepared
        served, samples, fault = prepared
        self._open += 1
        self.peak_open = max(self.peak_open, self._open)
        try:
            early = await self._fault_before_reply(api, served, fault)
            if early is not None:
                return early
            if adapter is not None:
                samples = await self._answer(adapter, served, parsed)
            encoder: Any = _OpenAIEncoder(body) if api == "openai" else _AnthropicEncoder(body)
            if served.stream:
                return await self._stream(request, served, samples, fault, encoder)
            await anyio.sleep(max(s.latency for s in samples))
            served.output_tokens = [len(s.text_pieces) for s in samples]
            served.status = "complete"
            return web.json_response(encoder.whole(samples, served))
        finally:
            self._open -= 1
            if served.status == "open":  # the client hung up (or the server is stopping)
                served.status = "cancelled"
            if served.status != "complete" and served.total_output_tokens == 0:
                served.input_tokens = 0  # billing rule: a request is billed once it has produced output
            if self._on_served is not None:
                self._on_served(served)


class _OpenAIEncoder:
    def __init__(self, body: dict[str, Any]) -> None:
        self.id = f"chatcmpl-{uuid.uuid4().hex[:12]}"
        self.model = body["model"]
        self.created = int(time.time())
        self.include_usage = bool((body.get("stream_options") or {}).get("include_usage"))

    def _body(self, kind: str, choices: list[dict[str, Any]], usage: dict[str, int] | None) -> dict[str, Any]:
        body = {"id": self.id, "object": kind, "created": self.created, "model": self.model, "choices": choices}
        return body if usage is None else {**body, "usage": usage}

    def _chunk(self, choices: list[dict[str, Any]], usage: dict[str, int] | None = None) -> str:
        return f"data: {json.dumps(self._body('chat.completion.chunk', choices, usage))}\n\n"

    def start(self, served: Served) -> str:
        return ""

    def piece(self, c: int, text: str) -> str:
        return self._chunk([{"index": c, "delta": {"role": "assistant", "content": text}, "finish_reason": None}])

    def finish(self, c: int, sample: _Sample) -> str:
        return self._chunk([{"index": c, "delta": {}, "finish_reason": sample.finish}])

    def _usage(self, served: Served) -> dict[str, int]:
        i, o = served.input_tokens, served.total_output_tokens
        return {"prompt_tokens": i, "completion_tokens": o, "total_tokens": i + o}

    def end(self, served: Served) -> str:
        return (self._chunk([], self._usage(served)) if self.include_usage else "") + "data: [DONE]\n\n"

    def whole(self, samples: list[_Sample], served: Served) -> dict[str, Any]:
        choices = [
            {"index": c, "message": {"role": "assistant", "content": "".join(s.text_pieces)}, "finish_reason": s.finish}
            for c, s in enumerate(samples)
        ]
        return self._body("chat.completion", choices, self._usage(served))


class _AnthropicEncoder:
    _STOP: ClassVar[dict[str, str]] = {"stop": "end_turn", "length": "max_tokens"}

    def __init__(self, body: dict[str, Any]) -> None:
        self.id = f"msg_{uuid.uuid4().hex[:20]}"
        self.model = body["model"]

    @staticmethod
    def _event(kind: str, data: dict[str, Any]) -> str:
        return f"event: {kind}\ndata: {json.dumps({'type': kind, **data})}\n\n"

    def _message(self, served: Served, content: list[dict[str, Any]], stop: str | None) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": content,
            "stop_reason": stop,
            "stop_sequence": None,
            "usage": {"input_tokens": served.input_tokens, "output_tokens": served.total_output_tokens},
        }

    def start(self, served: Served) -> str:
        return self._event("message_start", {"message": self._message(served, [], None)}) + self._event(
            "content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}}
        )

    def piece(self, c: int, text: str) -> str:
        return self._event("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": text}})

    def finish(self, c: int, sample: _Sample) -> str:
        delta = {"stop_reason": self._STOP[sample.finish], "stop_sequence": None}
        usage = {"output_tokens": len(sample.text_pieces)}
        return self._event("content_block_stop", {"index": 0}) + self._event(
            "message_delta", {"delta": delta, "usage": usage}
        )

    def end(self, served: Served) -> str:
        return self._event("message_stop", {})

    def whole(self, samples: list[_Sample], served: Served) -> dict[str, Any]:
        s = samples[0]
        return self._message(served, [{"type": "text", "text": "".join(s.text_pieces)}], self._STOP[s.finish])


def _pieces(text: str, tokens: int) -> tuple[str, ...]:
    """``text`` cut into exactly ``tokens`` non-empty pieces (padded with spaces if it is shorter)."""
    tokens = max(1, tokens)
    text = text.ljust(tokens)
    size, extra = divmod(len(text), tokens)
    ends = [p * size + min(p, extra) for p in range(tokens + 1)]
    return tuple(text[a:b] for a, b in pairwise(ends))


def _given_key(request: web.Request) -> str:
    return request.headers.get("x-api-key") or request.headers.get("authorization", "").removeprefix("Bearer ")


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content blocks
        return "".join(str(b.get("text", "")) for b in content if isinstance(b, dict))
    return ""


def _last_user(messages: list[dict[str, Any]]) -> str:
    return next((_text(m.get("content")) for m in reversed(messages) if m.get("role") == "user"), "")


def _prompt_tokens(messages: list[dict[str, Any]], system: str | None) -> int:
    """About a quarter of the prompt's bytes, plus a few per message (below any client's byte bound)."""
    texts = [_text(m.get("content")) for m in messages if isinstance(m, dict)] + ([system] if system else [])
    return 3 + sum(4 + math.ceil(len(t.encode("utf-8")) / 4) for t in texts)


def _error(api: str, status: int, kind: str, message: str, headers: dict[str, str] | None = None) -> web.Response:
    if api == "anthropic":
        body: dict[str, Any] = {"type": "error", "error": {"type": kind, "message": message}}
    else:
        body = {"error": {"message": message, "type": kind, "param": None, "code": None}}
    return web.json_response(body, status=status, headers=headers)


@contextmanager
def serve_in_thread(server: SimServer, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Run ``server`` on its own event loop in a background thread; yield its base URL."""
    from anyio.from_thread import start_blocking_portal

    with start_blocking_portal(backend="asyncio") as portal:
        url = portal.call(server.start, host, port)
        try:
            yield url
        finally:
            with suppress(Exception):
                portal.call(server.stop)
