"""Verifiers (:class:`runtime.types.Verifier`): whether a real model's output solves its subtask.

A subtask's ``verifier`` in the spec picks one: exact match (whitespace at the ends ignored), a regular
expression found in the output, a JSON schema the output must satisfy, Python tests run against the
output in :mod:`tools.sandbox`, an LLM judge, or the result of an SQL query on a SQLite database
(:class:`tools.sql.SqlVerifier`). Code and JSON may come wrapped in a Markdown fence; the
first fenced block is what gets checked. A judge is a paid call: its worst case is reserved with the sample
(:meth:`Verifier.worst_pusd`) and what it cost is charged with the sample.

Regular expressions (the regex verifier's, and a schema's ``pattern`` keywords) run in a worker thread on the
``regex`` engine, which lets go of the GIL and gives up after the verifier's ``timeout_s``: no output can
hold the event loop, and one that takes too long to decide fails.
"""

from __future__ import annotations

import json
import re
from functools import partial
from typing import TYPE_CHECKING, Any

import anyio.to_thread
import regex

from adapters.chat import ChatRequest, input_token_bound
from runtime.types import Message, ProviderError, UsageError, Verdict, Verifier, price_per_token_pusd
from tools.sandbox import Limits, arun_tests
from tools.sql import SqlVerifier

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping

    from adapters.chat import ChatBackend
    from runtime.types import ModelSpec, VerifierSpec

__all__ = ["build_verifier", "extract_block"]

_FENCE = re.compile(r"```[A-Za-z0-9_+-]*[ \t]*\n(.*?)```", re.DOTALL)


def extract_block(text: str) -> str:
    """The first Markdown-fenced block of ``text``, or all of it if it has none."""
    m = _FENCE.search(text)
    return m.group(1) if m else text


class _Exact(Verifier):
    def __init__(self, expected: str) -> None:
        self.expected = expected.strip()

    async def check(self, output: str, allowance_pusd: int = 0) -> Verdict:
        ok = output.strip() == self.expected
        return Verdict(ok, "" if ok else "output differs from the expected text")


async def _off_the_loop(check: Callable[[], Verdict], timeout_s: float) -> Verdict:
    """Run a check that matches regular expressions in a worker thread; fail it if they take too long."""
    try:
        return await anyio.to_thread.run_sync(check, abandon_on_cancel=True)
    except TimeoutError:
        return Verdict(False, f"undecided after {timeout_s:g} s (a regular expression that backtracks too much)")


class _Regex(Verifier):
    def __init__(self, pattern: str, timeout_s: float) -> None:
        self.pattern = regex.compile(pattern)
        self.timeout_s = timeout_s

    def _check(self, output: str) -> Verdict:
        ok = self.pattern.search(output, concurrent=True, timeout=self.timeout_s) is not None
        return Verdict(ok, "" if ok else f"no match for /{self.pattern.pattern}/")

    async def check(self, output: str, allowance_pusd: int = 0) -> Verdict:
        return await _off_the_loop(partial(self._check, output), self.timeout_s)


class _JsonSchema(Verifier):
    def __init__(self, schema: dict[str, Any], timeout_s: float) -> None:
        import jsonschema

        try:
            cls = jsonschema.validators.validator_for(schema)
            cls.check_schema(schema)
        except jsonschema.SchemaError as exc:
            raise UsageError(f"not a valid JSON schema: {exc.message}") from None

        def pattern(validator: Any, patrn: str, instance: Any, schema: Any) -> Iterator[Any]:
            if isinstance(instance, str) and not regex.search(patrn, instance, concurrent=True, timeout=timeout_s):
                yield jsonschema.ValidationError(f"{instance!r} does not match {patrn!r}")

        self.validator = jsonschema.validators.extend(cls, {"pattern": pattern})(schema)
        self.timeout_s = timeout_s

    def _check(self, output: str) -> Verdict:
        try:
            value = json.loads(extract_block(output))
        except (ValueError, RecursionError) as exc:
            return Verdict(False, f"not JSON: {getattr(exc, 'msg', exc)}")
        error = next(iter(self.validator.iter_errors(value)), None)
        return Verdict(error is None, "" if error is None else f"schema: {error.message}")

    async def check(self, output: str, allowance_pusd: int = 0) -> Verdict:
        return await _off_the_loop(partial(self._check, output), self.timeout_s)


class _PythonTests(Verifier):
    def __init__(self, tests: str, timeout_s: float, setup: str = "") -> None:
        self.tests = tests
        self.timeout_s = timeout_s
        self.setup = setup

    async def check(self, output: str, allowance_pusd: int = 0) -> Verdict:
        program = "\n".join(p for p in (self.setup, extract_block(output)) if p)
        result = await arun_tests(program, self.tests, limits=Limits(wall_s=self.timeout_s))  # killed if cancelled
        if result.passed:
            return Verdict(True)
        if result.exec_fail is not None:
            return Verdict(False, result.exec_fail)
        first = result.failures[0] if result.failures else None
        detail = f"{first.test_case}: {first.error_type}: {first.error_message}" if first else "tests failed"
        return Verdict(False, f"{len(result.failures)} failing; {detail}")


class _Judge(Verifier):
    """Asks ``model`` whether the output meets ``rubric``; passes on a reply that starts with PASS."""

    _MAX_TOKENS = 8
    _BYTES_PER_TOKEN = 8  # outputs are budgeted at up to this many bytes a token; longer ones fail unjudged

    def __init__(self, rubric: str, model: ModelSpec, backend: ChatBackend) -> None:
        if model.endpoint is None:
            raise UsageError(f"the judge model {model.name!r} must be a real model (provider openai or anthropic)")
        self.rubric = rubric
        self.model = model
        self.backend = backend
        self._in = price_per_token_pusd(model.input_price_per_mtok)
        self._out = price_per_token_pusd(model.output_price_per_mtok)

    def _messages(self, output: str) -> tuple[Message, ...]:
        return (
            Message("system", "You grade answers. Reply with PASS or FAIL only."),
            Message("user", f"Question for the grader: {self.rubric}\n\nAnswer to grade:\n{output}"),
        )

    def worst_pusd(self, max_output_tokens: int) -> int:
        worst_in = input_token_bound(self._messages("")) + self._BYTES_PER_TOKEN * max_output_tokens
        return worst_in * self._in + self._MAX_TOKENS * self._out

    async def check(self, output: str, allowance_pusd: int = 0) -> Verdict:
        messages = self._messages(output)
        if input_token_bound(messages) * self._in + self._MAX_TOKENS * self._out > allowance_pusd:
            return Verdict(False, "output too long to judge within what was reserved for judging it")
        assert self.model.endpoint is not None
        try:
            reply = await self.backend.complete(ChatRequest(self.model.endpoint.model, messages, self._MAX_TOKENS))
        except ProviderError as exc:
            return Verdict(False, f"judge failed: {exc}", cost_pusd=input_token_bound(messages) * self._in)
        cost = reply.input_tokens * self._in + reply.output_tokens * self._out
        ok = reply.choices[0].text.strip().upper().startswith("PASS")
        return Verdict(ok, "" if ok else "the judge said FAIL", cost_pusd=cost)


def build_verifier(
    spec: VerifierSpec, models: Mapping[str, ModelSpec], backends: Mapping[str, ChatBackend]
) -> Verifier:
    """The verifier a spec describes (the judge's model must be one of the workflow's real models)."""
    if spec.kind == "exact":
        return _Exact(spec.arg)
    if spec.kind == "regex":
        return _Regex(spec.arg, spec.timeout_s)
    if spec.kind == "json_schema":
        return _JsonSchema(spec.arg, spec.timeout_s)
    if spec.kind == "python_tests":
        return _PythonTests(spec.arg, spec.timeout_s, spec.setup)
    if spec.kind == "sql":
        arg = spec.arg
        return SqlVerifier(arg["database"], arg["gold"], timeout_s=spec.timeout_s, max_rows=arg.get("max_rows", 10_000))
    if spec.kind == "judge":
        if spec.arg not in models or spec.arg not in backends:
            raise UsageError(f"the judge model {spec.arg!r} is not a real model of this workflow")
        return _Judge(spec.rubric or "", models[spec.arg], backends[spec.arg])
    raise UsageError(f"unknown verifier kind {spec.kind!r}")
