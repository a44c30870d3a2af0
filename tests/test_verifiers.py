"""Verifiers, prompts, endpoint specs and vendor error mapping: the pieces between a spec and a real endpoint."""

from __future__ import annotations

import json
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import anyio
import httpx
import openai
import pytest

import runtime
from adapters.chat import ChatBackend, ChatRequest, ChatStream, Delta, input_token_bound
from adapters.errors import redact, retry_after_s, vendor_error, vendor_stream
from adapters.openai import ERRORS
from runtime import Message
from runtime._prompts import render
from runtime.types import VerifierSpec
from tools.verifiers import build_verifier, extract_block

if TYPE_CHECKING:
    from collections.abc import AsyncIterator


def check(kind: str, arg: Any, output: str, **kw: Any) -> bool:
    v = build_verifier(VerifierSpec(kind, arg, **kw), {}, {})
    return anyio.run(v.check, output).ok


def test_exact_and_regex() -> None:
    assert check("exact", "42", "  42\n")
    assert not check("exact", "42", "42.0")
    assert check("regex", r"\"[a-z]+\"", 'Top word: "the"')
    assert not check("regex", r"^\d+$", "about 12")


def test_json_schema_reads_fenced_json_and_names_the_problem() -> None:
    schema = {"type": "object", "required": ["n"], "properties": {"n": {"type": "integer"}}}
    assert check("json_schema", schema, '```json\n{"n": 3}\n```')
    v = build_verifier(VerifierSpec("json_schema", schema), {}, {})
    bad = anyio.run(v.check, '{"n": "three"}')
    assert not bad.ok and "schema" in bad.detail
    assert "not JSON" in anyio.run(v.check, "n = 3").detail
    with pytest.raises(runtime.UsageError, match="not a valid JSON schema"):
        build_verifier(VerifierSpec("json_schema", {"type": 12}), {}, {})


def test_python_tests_run_in_the_sandbox() -> None:
    tests = "assert add(2, 3) == 5\nassert add(-1, 1) == 0\n"
    assert check("python_tests", tests, "```python\ndef add(a, b):\n    return a + b\n```")
    v = build_verifier(VerifierSpec("python_tests", tests, timeout_s=5), {}, {})
    wrong = anyio.run(v.check, "def add(a, b):\n    return a - b\n")
    assert not wrong.ok and "AssertionError" in wrong.detail
    looping = anyio.run(v.check, "while True:\n    pass\n")
    assert not looping.ok


def test_extract_block_takes_the_first_fence_or_everything() -> None:
    assert extract_block("text\n```py\nx = 1\n```\nmore\n```\ny\n```") == "x = 1\n"
    assert extract_block("x = 1") == "x = 1"


class _Scripted(ChatBackend):
    """A backend that replies with fixed text: lets the judge be tested without a server."""

    provider = "openai"

    def __init__(self, reply: str) -> None:
        self.reply = reply
        self.requests: list[ChatRequest] = []

    @asynccontextmanager
    async def stream(self, request: ChatRequest) -> AsyncIterator[ChatStream]:
        self.requests.append(request)
        s = ChatStream(1)
        s.input_tokens = 50

        async def deltas() -> AsyncIterator[Delta]:
            s.output_tokens[0] = 1
            yield Delta(0, self.reply, "stop")

        s.deltas = deltas()
        yield s


def _judge_spec() -> runtime.Workflow:
    data = json.loads(json.dumps(_SPEC))
    data["models"]["j"] = {
        "provider": "openai",
        "base_url": "http://127.0.0.1:9/v1",
        "tokens_per_s": 50,
        "ttft_s": 0.1,
        "max_output_tokens": 100,
        "input_price_per_mtok": 1.0,
        "output_price_per_mtok": 2.0,
    }
    return runtime.parse_workflow(data)


def test_the_judge_charges_its_call_and_stays_within_its_allowance() -> None:
    wf = _judge_spec()
    backend = _Scripted("PASS, it answers the question.")
    v = build_verifier(VerifierSpec("judge", "j", rubric="Does it name a colour?"), dict(wf.models), {"j": backend})
    allowance = v.worst_pusd(100)
    verdict = anyio.run(v.check, "Blue.", allowance)
    assert verdict.ok and verdict.cost_pusd == 50 * 1_000_000 + 1 * 2_000_000  # 50 in at $1/M, 1 out at $2/M
    assert "Does it name a colour?" in backend.requests[0].messages[-1].content
    assert not anyio.run(_judge_saying_fail, wf).ok
    too_long = anyio.run(v.check, "x" * 5000, allowance)  # more bytes than the reservation assumed
    assert not too_long.ok and too_long.cost_pusd == 0 and len(backend.requests) == 1


async def _judge_saying_fail(wf: runtime.Workflow) -> Any:
    v = build_verifier(VerifierSpec("judge", "j", rubric="?"), dict(wf.models), {"j": _Scripted("FAIL")})
    return await v.check("Blue.", v.worst_pusd(100))


def test_prompts_fill_in_dependency_outputs_and_keep_single_braces() -> None:
    wf = runtime.parse_workflow(_SPEC)
    b = wf.subtasks[1]
    (system, user) = render(b, {"a": "def f(): return {1: 2}"}) or ()
    assert system == Message("system", "Be brief.")
    assert user.content == "Use this: def f(): return {1: 2} and {x}"
    assert render(wf.subtasks[0], {}) == (Message("user", "Say hi"),)


_SPEC: dict[str, Any] = {
    "models": {"m": {"input_price_per_mtok": 1, "output_price_per_mtok": 1, "tokens_per_s": 10, "ttft_s": 0.1,
                     "max_output_tokens": 100}},
    "subtasks": [
        {"id": "a", "prompt": "Say hi", "profiles": {"m": {"p": 0.5, "output_tokens": {"fixed": 5}}}},
        {"id": "b", "deps": ["a"], "prompt": "Use this: {{a}} and {x}", "system": "Be brief.",
         "verifier": {"regex": "hi"}, "reference": "hi", "wrong": "bye",
         "profiles": {"m": {"p": 0.5, "output_tokens": {"fixed": 5}}}},
    ],
}  # fmt: skip


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"subtasks": {1: {"prompt": "{{zzz}}"}}}, "names no dependency"),
        ({"subtasks": {1: {"verifier": {"regex": "("}}}}, "not a valid regular expression"),
        ({"subtasks": {1: {"verifier": {"exact": "a", "regex": "b"}}}}, "exactly one of"),
        ({"subtasks": {1: {"verifier": {"judge": "m"}}}}, "needs a rubric"),
        ({"subtasks": {1: {"verifier": {"python_tests": "assert 1", "timeout_s": 0}}}}, "must be > 0"),
        ({"subtasks": {1: {"wrong": [1]}}}, "list of strings"),
        ({"models": {"m": {"provider": "openai", "retries": 0}}}, "must be in 1..100"),
        ({"models": {"m": {"provider": "openai", "concurrency": 0}}}, "must be > 0"),
        ({"models": {"m": {"provider": "sim", "base_url": "http://x"}}}, "unknown key 'base_url'"),
        ({"models": {"m": {"provider": "openai", "input_price_per_mtok": None}}}, "must be a number"),
    ],
)
def test_bad_endpoint_and_verifier_specs_are_rejected_by_field(patch: dict[str, Any], message: str) -> None:
    data = json.loads(json.dumps(_SPEC))
    for i, fields in patch.get("subtasks", {}).items():
        data["subtasks"][i].update(fields)
    for name, fields in patch.get("models", {}).items():
        data["models"][name].update(fields)
    with pytest.raises(runtime.SpecError, match=message):
        runtime.parse_workflow(data)


def test_real_models_default_to_their_list_price() -> None:
    data = json.loads(json.dumps(_SPEC))
    m = data["models"]["m"]
    del m["input_price_per_mtok"], m["output_price_per_mtok"]
    m.update(provider="openai", model="gpt-4o-mini")
    wf = runtime.parse_workflow(data)
    spec = wf.models["m"]
    assert (spec.input_price_per_mtok, spec.output_price_per_mtok) == (0.15, 0.6)
    assert spec.endpoint is not None and spec.endpoint.model == "gpt-4o-mini"
    m["model"] = "no-such-model-anywhere"
    with pytest.raises(runtime.SpecError, match="give input_price_per_mtok"):
        runtime.parse_workflow(data)


def test_a_key_in_the_spec_is_kept_out_of_reprs() -> None:
    data = json.loads(json.dumps(_SPEC))
    data["models"]["m"].update(provider="openai", api_key="sk-secret-in-spec-123456")
    wf = runtime.parse_workflow(data)
    assert "sk-secret" not in repr(wf) and "sk-secret" not in str(wf.models["m"])


def test_vendor_errors_map_to_typed_errors_without_secrets() -> None:
    def status_error(code: int, headers: dict[str, str] | None = None) -> openai.APIStatusError:
        import httpx2

        req = httpx2.Request("POST", "http://127.0.0.1/v1/chat/completions")
        resp = httpx2.Response(code, headers=headers or {}, request=req)
        return openai.APIStatusError("Incorrect API key provided: sk-live-abcdef123456", response=resp, body=None)

    limited = vendor_error(status_error(429, {"retry-after": "3"}), "openai", ERRORS)
    assert isinstance(limited, runtime.RateLimitedError) and limited.retry_after == 3.0
    assert isinstance(vendor_error(status_error(503), "openai", ERRORS), runtime.ProviderUnavailableError)
    rejected = vendor_error(status_error(401), "openai", ERRORS, ["sk-live-abcdef123456"])
    assert isinstance(rejected, runtime.ProviderRejectedError) and rejected.status == 401
    assert "sk-live" not in str(rejected) and "***" in str(rejected)
    assert isinstance(vendor_error(httpx.ReadTimeout("slow"), "openai", ERRORS), runtime.ProviderUnavailableError)
    malformed = json.JSONDecodeError("x", "{", 0)
    assert isinstance(vendor_error(malformed, "openai", ERRORS), runtime.ProviderUnavailableError)
    assert redact("Bearer abcdef123456 and sk-ant-xyz98765", []) == "*** and ***"
    # Anything else is not an endpoint's failure but a bug: it is not mapped.
    assert vendor_error(KeyError("choices"), "openai", ERRORS) is None


async def _open(create: Any) -> None:
    async with vendor_stream(create, 1, _no_deltas, "openai", ERRORS, ["sk-live-abcdef123456"]):
        pass


async def _no_deltas(raw: Any, s: ChatStream) -> AsyncIterator[Delta]:
    return
    yield


def test_the_boundary_keeps_the_vendors_error_as_a_redacted_cause_and_lets_bugs_through() -> None:
    import httpx2

    async def refused() -> None:
        req = httpx2.Request("POST", "http://127.0.0.1/v1/chat/completions")
        resp = httpx2.Response(401, request=req)
        raise openai.AuthenticationError("Incorrect API key provided: sk-live-abcdef123456", response=resp, body=None)

    with pytest.raises(runtime.ProviderRejectedError) as caught:
        anyio.run(_open, refused())
    cause = caught.value.__cause__
    assert cause is not None and "openai.AuthenticationError" in str(cause)
    assert "sk-live" not in str(cause) and "sk-live" not in str(caught.value)

    async def buggy() -> None:
        raise KeyError("a bug in our code")

    with pytest.raises(KeyError, match="a bug in our code"):
        anyio.run(_open, buggy())


def test_retry_after_accepts_seconds_milliseconds_and_dates() -> None:
    assert retry_after_s({"retry-after": "2"}) == 2.0
    assert retry_after_s({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert retry_after_s({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) == 0.0  # in the past
    assert retry_after_s({"retry-after": "soon"}) is None
    assert retry_after_s({}) is None


def test_the_input_bound_covers_every_byte() -> None:
    msgs = (Message("system", "é" * 10), Message("user", "abc"))
    assert input_token_bound(msgs) >= 20 + 3


@pytest.mark.anyio
@pytest.mark.parametrize(
    "spec",
    [
        VerifierSpec("regex", "(a|aa)+$", timeout_s=0.5),
        VerifierSpec("json_schema", {"type": "string", "pattern": "(a|aa)+$"}, timeout_s=0.5),
    ],
    ids=["regex", "json-schema-pattern"],
)
async def test_a_backtracking_pattern_neither_holds_the_loop_nor_passes(spec: VerifierSpec) -> None:
    """Issue 16: a catastrophic pattern ran on the event loop for seconds (past the run's deadline); it now
    runs off the loop, gives up after the verifier's timeout_s, and says no."""
    output = "a" * 60 + "b" if spec.kind == "regex" else json.dumps("a" * 60 + "b")
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await anyio.sleep(0.05)
            ticks += 1

    async with anyio.create_task_group() as tg:
        tg.start_soon(tick)
        with anyio.fail_after(5):
            verdict = await build_verifier(spec, {}, {}).check(output)
        tg.cancel_scope.cancel()
    assert not verdict.ok and "undecided after 0.5 s" in verdict.detail
    assert ticks >= 5  # the loop went on while the pattern ran
    assert (await build_verifier(spec, {}, {}).check(output.replace("b", ""))).ok
