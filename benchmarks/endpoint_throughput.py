"""Completions per second through ``serve-sim``: a plain httpx loop, the bare OpenAI SDK, and ontime's executor.

    python -m benchmarks.endpoint_throughput [--concurrency 1,64,512] [--requests 2000] [--tokens 16]

The server runs as its own process (``ontime serve-sim``, as a user would start it) with a workflow whose
answers are ``--tokens`` tokens long and take no time (``--speed`` 1e6), so what is measured is the client
and the HTTP path, not the profile's latency. Each client streams every request (``stream=True`` with usage)
and keeps ``concurrency`` requests in flight until ``--requests`` are done:

- ``httpx``: one ``httpx.AsyncClient`` posting the JSON and reading the server-sent events by hand;
- ``sdk``: ``AsyncOpenAI.chat.completions.create`` from ``concurrency`` workers;
- ``ontime``: ``runtime.run`` of a workflow with one subtask per completion (no dependencies, no verifier),
  each launched as one batch of k = 1 by ``retry:m:1``, through the whole runtime: executor, ledger, events,
  the chat adapter, retries, and the model's ``concurrency`` limit, which keeps that many requests open.
  Its latency column is left out: a sample's latency there includes the wait for a free connection.

All have a 1000-connection pool. The clients and the server share the machine's cores: read the ratios, not
the absolute numbers.
"""

from __future__ import annotations

import json
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
import httpx
import openai

import runtime
from benchmarks._report import RESULTS, ROOT, console, machine, parser, rows_table, write_csv

MODEL = "gpt-4o-mini"


def _spec(tokens: int, subtasks: int, base_url: str = "http://127.0.0.1:1/v1", concurrency: int = 1) -> dict[str, Any]:
    """``subtasks`` independent one-prompt subtasks on one model; prices are nominal, so no budget binds."""
    return {
        "name": "throughput",
        "models": {"m": {"provider": "openai", "model": MODEL, "base_url": base_url, "concurrency": concurrency,
                         "input_price_per_mtok": 0.01, "output_price_per_mtok": 0.01, "tokens_per_s": 1000,
                         "ttft_s": 0.0, "max_output_tokens": 4 * tokens}},
        "subtasks": [{"id": f"say{i}", "prompt": "Say something short.", "reference": "ok " * tokens,
                      "profiles": {"m": {"p": 1.0, "output_tokens": {"fixed": tokens}}}} for i in range(subtasks)],
    }  # fmt: skip


def _start_server(spec_path: Path, port: int) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-m", "runtime.cli", "serve-sim", str(spec_path), "--port", str(port),
            "--speed", "1e6", "--quiet"]  # fmt: skip
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=1.0)
            return proc
        except httpx.TransportError:
            if proc.poll() is not None:
                raise RuntimeError(f"serve-sim exited: {proc.stderr.read().decode() if proc.stderr else ''}") from None
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("serve-sim did not start within 60 s")


async def _sdk_one(client: openai.AsyncOpenAI, tokens: int) -> int:
    stream = await client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Say something short."}],
        max_tokens=4 * tokens,
        stream=True,
        stream_options={"include_usage": True},
        extra_headers={"x-ontime-subtask": "say0"},
    )
    pieces = 0
    async for chunk in stream:
        pieces += sum(1 for c in chunk.choices if c.delta is not None and c.delta.content)
    return pieces


async def _httpx_one(client: httpx.AsyncClient, url: str, tokens: int) -> int:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Say something short."}],
            "max_tokens": 4 * tokens, "stream": True, "stream_options": {"include_usage": True}}  # fmt: skip
    pieces = 0
    async with client.stream("POST", url, json=body, headers={"x-ontime-subtask": "say0"}) as resp:
        resp.raise_for_status()
        async for line in resp.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            pieces += sum(1 for c in chunk["choices"] if c.get("delta", {}).get("content"))
    return pieces


async def _through_ontime(base: str, concurrency: int, requests: int, tokens: int) -> dict[str, Any]:
    wf = runtime.parse_workflow(_spec(tokens, requests, base + "/v1", concurrency))
    start = time.perf_counter()
    result = await runtime.arun(wf, 1000.0, 600.0, planner="retry:m:1")
    wall = time.perf_counter() - start
    if not result.success or any(o.output is None or len(o.output.split()) != tokens for o in result.subtasks.values()):
        raise RuntimeError(f"ontime: {result.completed}/{requests} completions ({result.reason})")
    return {"client": "ontime", "concurrency": concurrency, "requests": requests,
            "completions_per_s": round(requests / wall, 1), "p50_ms": None, "p95_ms": None,
            "wall_s": round(wall, 2)}  # fmt: skip


async def _measure(kind: str, base: str, concurrency: int, requests: int, tokens: int) -> dict[str, Any]:
    if kind == "ontime":
        return await _through_ontime(base, concurrency, requests, tokens)
    latencies: list[float] = []
    sent = 0
    if kind == "sdk":
        sdk = openai.AsyncOpenAI(api_key="none", base_url=base + "/v1", max_retries=0, timeout=60.0)
        one: Any = lambda: _sdk_one(sdk, tokens)  # noqa: E731
        close: Any = sdk.close
    else:
        limits = httpx.Limits(max_connections=1000, max_keepalive_connections=100)
        hx = httpx.AsyncClient(limits=limits, timeout=60.0)
        one = lambda: _httpx_one(hx, base + "/v1/chat/completions", tokens)  # noqa: E731
        close = hx.aclose

    async def worker() -> None:
        nonlocal sent
        while sent < requests:
            sent += 1
            t = time.perf_counter()
            got = await one()
            if got != tokens:
                raise RuntimeError(f"{kind}: expected {tokens} pieces, got {got}")
            latencies.append(time.perf_counter() - t)

    start = time.perf_counter()
    try:
        async with anyio.create_task_group() as tg:
            for _ in range(concurrency):
                tg.start_soon(worker)
    finally:
        await close()
    wall = time.perf_counter() - start
    latencies.sort()
    return {
        "client": kind,
        "concurrency": concurrency,
        "requests": len(latencies),
        "completions_per_s": round(len(latencies) / wall, 1),
        "p50_ms": round(1000 * statistics.median(latencies), 2),
        "p95_ms": round(1000 * latencies[int(0.95 * (len(latencies) - 1))], 2),
        "wall_s": round(wall, 2),
    }


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--concurrency", default="1,64,512", help="comma-separated levels")
    ap.add_argument("--requests", type=int, default=2000, help="requests per level and client (1: a tenth)")
    ap.add_argument("--tokens", type=int, default=16, help="output tokens (stream pieces) per completion")
    ap.add_argument("--out", type=Path, default=RESULTS / "endpoints")
    args = ap.parse_args()
    levels = [int(x) for x in args.concurrency.split(",") if x.strip()]
    console.print(f"[bold]serve-sim throughput[/] on {machine()}, {args.tokens} tokens per completion")
    with tempfile.TemporaryDirectory() as tmp:
        spec_path = Path(tmp) / "throughput.json"
        spec_path.write_text(json.dumps(_spec(args.tokens, max(args.requests, *levels))))
        with socket.socket() as s:  # a free port
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        proc = _start_server(spec_path, port)
        try:
            rows = []
            base = f"http://127.0.0.1:{port}"
            for c in levels:
                n = max(c, args.requests // 10 if c == 1 else args.requests)
                for kind in ("httpx", "sdk", "ontime"):
                    anyio.run(_measure, kind, base, min(c, 8), min(n, 200), args.tokens)  # warm up
                    row = anyio.run(_measure, kind, base, c, n, args.tokens)
                    rows.append(row)
                    console.print(f"  {kind:6} x{c:<4} {row['completions_per_s']:>8} /s  p50 {row['p50_ms']} ms")
        finally:
            proc.terminate()
            proc.wait(timeout=10)
    by = {(r["client"], r["concurrency"]): r for r in rows}
    for r in rows:
        for other in ("httpx", "sdk"):
            base_rate = by[(other, r["concurrency"])]["completions_per_s"]
            r[f"vs_{other}"] = round(r["completions_per_s"] / base_rate, 2) if base_rate else None
    console.print(rows_table(rows, "completions per second through serve-sim (streamed, usage on)"))
    console.print(f"wrote {write_csv(rows, args.out / 'throughput.csv')}")


if __name__ == "__main__":
    main()
