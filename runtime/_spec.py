"""Reading workflow spec files (JSON or YAML) and checking them before any money is spent.

The format is documented in README.md ("Workflow spec format"). Every error names the file, the subtask
and the field, so a user can fix a spec without reading our code.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from os import PathLike
from pathlib import Path
from typing import Any

from adapters.pricing import list_price
from planners.baselines import MAX_BATCH
from runtime._prompts import placeholders
from runtime._spec_history import HISTORY_KEYS, check_history, parse_history
from runtime.types import (
    CycleError,
    Endpoint,
    FixedTokens,
    LogNormalTokens,
    ModelSpec,
    ParametricProfile,
    PoolProfile,
    Profile,
    SpecError,
    Subtask,
    UnknownDependencyError,
    UnknownModelError,
    UsageError,
    VerifierSpec,
    Workflow,
)
from runtime.types._errors import unreadable

__all__ = ["MAX_PRICE_PER_MTOK", "MAX_SECONDS", "MAX_TOKENS", "load_workflow", "never_succeeds", "parse_workflow",
           "validate_workflow"]  # fmt: skip

# The largest values a spec may hold (README "Workflow spec format"): far above any real model, and small
# enough that a batch's worst case in pico-dollars, and every latency, fits the planners' 64-bit arithmetic.
MAX_TOKENS = 10**8  # input tokens, output tokens (max, fixed, pool rows, lognormal mean and std)
MAX_PRICE_PER_MTOK = 10**4  # dollars per million tokens
MAX_SECONDS = 10**7  # time to first token, pool latencies, timeouts (about 116 days)
_TOKENS_PER_S = (1e-3, 1e9)

_PRICES = {"input_price_per_mtok", "output_price_per_mtok"}
_MODEL_KEYS = {"provider", "tokens_per_s", "ttft_s", "max_output_tokens"} | _PRICES
_ENDPOINT_KEYS = {
    "model",
    "base_url",
    "api_key_env",
    "api_key",
    "timeout_s",
    "retries",
    "concurrency",
    "requests_per_s",
    "max_batch",
    "temperature",
}
PROVIDERS = ("sim", "openai", "anthropic")
_SUBTASK_KEYS = {
    "id", "deps", "input_tokens", "profiles", "prompt", "system", "verifier", "reference", "wrong", "answer",
    "measured",  # what ``ontime profile`` measured (intervals, counts, samples): documentation, ignored by runs
} | HISTORY_KEYS  # fmt: skip
_VERIFIER_KINDS = ("exact", "regex", "json_schema", "python_tests", "judge", "sql")
_TOP_KEYS = {"name", "models", "subtasks"}


def load_workflow(path: str | PathLike[str]) -> Workflow:
    """Load and validate a workflow spec from a ``.json``, ``.yaml`` or ``.yml`` file.

    Raises:
        SpecError: the file is missing, unreadable, malformed or inconsistent (cycles, unknown
            dependencies or models, probabilities outside [0, 1], ...).
    """
    if not isinstance(path, str | PathLike):
        raise UsageError(f"a workflow spec's path must be a string or a path, not {path!r}")
    p = Path(path)
    source = str(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, ValueError) as exc:
        raise SpecError(f"cannot read the file ({unreadable(exc)})", source=source) from None
    if p.suffix.lower() in {".yaml", ".yml"}:
        import yaml

        try:
            data = _load_yaml(text)
        except (yaml.YAMLError, RecursionError) as exc:
            raise SpecError(f"not valid YAML ({_one_line(exc)})", source=source) from None
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise SpecError(
                f"not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})", source=source
            ) from exc
        except (ValueError, RecursionError) as exc:  # a number of more than 4300 digits; nesting too deep
            raise SpecError(f"not valid JSON ({exc})", source=source) from None
    return parse_workflow(data, source=source)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def _load_yaml(text: str) -> Any:
    """yaml's safe loader without aliases: nine levels of nine aliases expand to 387 million strings (a
    "billion laughs" file), and a spec has no use for them."""
    import yaml

    class NoAliasLoader(yaml.SafeLoader):
        def compose_node(self, parent: Any, index: Any) -> Any:
            if self.check_event(yaml.AliasEvent):
                mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
                raise yaml.composer.ComposerError(None, None, "aliases (*name) are not allowed", mark)
            return super().compose_node(parent, index)

    return yaml.load(text, Loader=NoAliasLoader)  # the safe loader, without aliases


def parse_workflow(data: Any, *, source: str | None = None) -> Workflow:
    """Build and validate a :class:`Workflow` from already-decoded spec data (a dict)."""
    _check_mapping(data, "the top level", source=source)
    try:  # every string must be text that can be written out (a lone surrogate cannot)
        json.dumps(data, ensure_ascii=False, default=str).encode("utf-8")
    except (UnicodeEncodeError, ValueError, RecursionError) as exc:
        raise SpecError(f"holds something that is not plain data or text ({exc})", source=source) from None
    _check_keys(data, _TOP_KEYS, required={"models", "subtasks"}, source=source, where="top level")
    name = data.get("name", Path(source).stem if source else "workflow")
    if not isinstance(name, str) or not name:
        raise SpecError("must be a non-empty string", source=source, field="name")

    models_raw = data["models"]
    _check_mapping(models_raw, "'models'", source=source, field="models")
    if not models_raw:
        raise SpecError("declares no models", source=source, field="models")
    models = {str(m): _parse_model(str(m), spec, source) for m, spec in models_raw.items()}

    subtasks_raw = data["subtasks"]
    if not isinstance(subtasks_raw, list) or not subtasks_raw:
        raise SpecError("must be a non-empty list", source=source, field="subtasks")
    subtasks = [_parse_subtask(i, s, models, source) for i, s in enumerate(subtasks_raw)]
    return validate_workflow(Workflow(name=name, models=models, subtasks=tuple(subtasks), source=source))


def validate_workflow(wf: Workflow) -> Workflow:
    """Check a workflow's semantics and return it with subtasks in topological order."""
    src = wf.source
    if not wf.models:
        raise SpecError("declares no models", source=src, field="models")
    for m in wf.models.values():
        _check_model(m, src)
    seen: set[str] = set()
    for s in wf.subtasks:
        if s.id in seen:
            raise SpecError("appears twice", source=src, subtask=s.id, field="id")
        seen.add(s.id)
    for s in wf.subtasks:
        _check_subtask(s, wf.models, seen, src)
    answers = [s.id for s in wf.subtasks if s.answer]
    if len(answers) > 1:
        raise SpecError(f"only one subtask may give the run's answer, not {answers}", source=src, field="answer")
    order = _topological_order(wf.subtasks, src)
    return Workflow(name=wf.name, models=dict(wf.models), subtasks=order, source=src)


def _topological_order(subtasks: tuple[Subtask, ...], src: str | None) -> tuple[Subtask, ...]:
    # Kahn's algorithm, stable in file order so runs are reproducible.
    by_id = {s.id: s for s in subtasks}
    indegree = {s.id: len(set(s.deps)) for s in subtasks}
    children: dict[str, list[str]] = {s.id: [] for s in subtasks}
    for s in subtasks:
        for d in set(s.deps):
            children[d].append(s.id)
    queue = [s.id for s in subtasks if indegree[s.id] == 0]
    order: list[Subtask] = []
    while queue:
        sid = queue.pop(0)
        order.append(by_id[sid])
        for c in children[sid]:
            indegree[c] -= 1
            if indegree[c] == 0:
                queue.append(c)
    if len(order) < len(subtasks):
        stuck = sorted(sid for sid, n in indegree.items() if n > 0)
        raise CycleError(
            f"the dependency graph has a cycle through {', '.join(map(repr, stuck))}",
            source=src,
            subtask=stuck[0],
            field="deps",
        )
    return tuple(order)


def _check_subtask(s: Subtask, models: Mapping[str, ModelSpec], ids: set[str], src: str | None) -> None:
    if not s.id:
        raise SpecError("must be a non-empty string", source=src, field="id")
    at = {"source": src, "subtask": s.id}
    for d in s.deps:
        if d == s.id:
            raise CycleError("depends on itself", **at, field="deps")
        if d not in ids:
            raise UnknownDependencyError(f"unknown dependency {d!r}", **at, field="deps")
    for ref in placeholders(s.prompt or ""):
        if ref not in s.deps:
            raise SpecError(f"{{{{{ref}}}}} names no dependency of this subtask", **at, field="prompt")
    if not _is_int(s.input_tokens) or s.input_tokens < 0:
        raise SpecError("must be a non-negative integer", **at, field="input_tokens")
    _at_most(s.input_tokens, MAX_TOKENS, at, "input_tokens")
    if not s.profiles:
        raise SpecError("no model can run this subtask", **at, field="profiles")
    for m, prof in s.profiles.items():
        where = f"profiles.{m}"
        if m not in models:
            raise UnknownModelError(f"unknown model {m!r}", **at, field=where)
        if isinstance(prof, ParametricProfile):
            if not _finite(prof.p) or not 0.0 <= prof.p <= 1.0:
                raise SpecError(f"p={prof.p!r} is not in [0, 1]", **at, field=f"{where}.p")
            dist = prof.output_tokens
            if isinstance(dist, FixedTokens):
                if not _is_int(dist.tokens) or dist.tokens < 1:
                    raise SpecError("fixed must be a positive integer", **at, field=f"{where}.output_tokens.fixed")
                _at_most(dist.tokens, MAX_TOKENS, at, f"{where}.output_tokens.fixed")
            elif not (_finite(dist.mean) and dist.mean >= 1 and _finite(dist.std) and dist.std >= 0):
                raise SpecError("mean must be >= 1 and std >= 0, both finite", **at, field=f"{where}.output_tokens")
            else:
                _at_most(max(dist.mean, dist.std), MAX_TOKENS, at, f"{where}.output_tokens")
        elif isinstance(prof, PoolProfile):
            if not prof.samples:
                raise SpecError("the pool is empty", **at, field=f"{where}.samples")
            for r, (ok, tokens, latency) in enumerate(prof.samples):
                row = f"{where}.samples[{r}]"
                if not isinstance(ok, bool) or not _is_int(tokens) or tokens < 1:
                    raise SpecError("rows are [success 0/1, output_tokens >= 1, latency_s or null]", **at, field=row)
                if latency is not None and not (_finite(latency) and latency > 0):
                    raise SpecError("latency_s must be positive and finite, or null", **at, field=row)
                _at_most(tokens, MAX_TOKENS, at, row)
                _at_most(latency or 0, MAX_SECONDS, at, row)
        else:
            raise SpecError("unknown profile type", **at, field=where)
    check_history(s, at)


def _check_model(m: ModelSpec, src: str | None) -> None:
    f = f"models.{m.name}"
    if m.provider not in PROVIDERS:
        raise SpecError(f"{m.provider!r} is not one of {', '.join(PROVIDERS)}", source=src, field=f"{f}.provider")
    if (m.endpoint is not None) != (m.provider != "sim"):
        raise SpecError("an endpoint goes with provider openai or anthropic only", source=src, field=f)
    at = {"source": src}
    for attr, top in (("input_price_per_mtok", MAX_PRICE_PER_MTOK), ("output_price_per_mtok", MAX_PRICE_PER_MTOK),
                      ("ttft_s", MAX_SECONDS)):  # fmt: skip
        v = getattr(m, attr)
        if not _finite(v) or v < 0:
            raise SpecError(f"{v!r} must be finite and >= 0", source=src, field=f"{f}.{attr}")
        _at_most(v, top, at, f"{f}.{attr}")
    low, high = _TOKENS_PER_S
    if not _finite(m.tokens_per_s) or not low <= m.tokens_per_s <= high:
        raise SpecError(f"{m.tokens_per_s!r} must be in [{low:g}, {high:g}]", source=src, field=f"{f}.tokens_per_s")
    if not _is_int(m.max_output_tokens) or m.max_output_tokens < 1:
        raise SpecError("must be a positive integer", source=src, field=f"{f}.max_output_tokens")
    _at_most(m.max_output_tokens, MAX_TOKENS, at, f"{f}.max_output_tokens")


def _parse_model(name: str, spec: Any, src: str | None) -> ModelSpec:
    f = f"models.{name}"
    _check_mapping(spec, f"'{f}'", source=src, field=f)
    provider = spec.get("provider", "sim")
    if provider not in PROVIDERS:
        raise SpecError(f"{provider!r} is not one of {', '.join(PROVIDERS)}", source=src, field=f"{f}.provider")
    real = provider != "sim"
    # A real model's prices default to the list price (genai-prices); a simulated one must state them.
    required = _MODEL_KEYS - {"provider"} - (_PRICES if real else set())
    _check_keys(spec, _MODEL_KEYS | (_ENDPOINT_KEYS if real else set()), required=required, source=src, where=f)
    endpoint = _parse_endpoint(name, spec, src) if real else None
    if real and not spec.keys() >= _PRICES:
        try:
            listed = list_price(provider, endpoint.model if endpoint else name)
        except LookupError as exc:
            raise SpecError(
                f"{exc}; give input_price_per_mtok and output_price_per_mtok", source=src, field=f
            ) from None
        spec = {"input_price_per_mtok": listed[0], "output_price_per_mtok": listed[1], **spec}
    keys = ("input_price_per_mtok", "output_price_per_mtok", "tokens_per_s", "ttft_s")
    numbers = {k: _number(spec[k], src, None, f"{f}.{k}") for k in keys}
    cap = _integer(spec["max_output_tokens"], src, None, f"{f}.max_output_tokens")
    return ModelSpec(name=name, provider=provider, **numbers, max_output_tokens=cap, endpoint=endpoint)


def _parse_endpoint(name: str, spec: Mapping[str, Any], src: str | None) -> Endpoint:
    f = f"models.{name}"

    def text(key: str) -> str | None:
        v = spec.get(key)
        if v is not None and (not isinstance(v, str) or not v):
            raise SpecError("must be a non-empty string", source=src, field=f"{f}.{key}")
        return v

    def positive(key: str, v: float | None, top: float) -> float | None:
        if v is not None and not v > 0:
            raise SpecError(f"must be > 0, not {v!r}", source=src, field=f"{f}.{key}")
        if v is not None:
            _at_most(v, top, {"source": src}, f"{f}.{key}")
        return v

    def opt_int(key: str) -> int | None:
        return None if spec.get(key) is None else _integer(spec[key], src, None, f"{f}.{key}")

    def opt_num(key: str) -> float | None:
        return None if spec.get(key) is None else _number(spec[key], src, None, f"{f}.{key}")

    retries = opt_int("retries")
    if retries is not None and not 1 <= retries <= 100:
        raise SpecError("must be in 1..100 (1: no retry)", source=src, field=f"{f}.retries")
    given: dict[str, Any] = {
        "timeout_s": positive("timeout_s", opt_num("timeout_s"), MAX_SECONDS),
        "retries": retries,
        "concurrency": positive("concurrency", opt_int("concurrency"), 10**5),
        "requests_per_s": positive("requests_per_s", opt_num("requests_per_s"), 10**6),
        "max_batch": positive("max_batch", opt_int("max_batch"), MAX_BATCH),
        "temperature": opt_num("temperature"),
    }
    return Endpoint(
        model=text("model") or name,
        base_url=text("base_url"),
        api_key_env=text("api_key_env"),
        api_key=text("api_key"),
        **{k: v for k, v in given.items() if v is not None},  # the rest: Endpoint's defaults
    )


def _parse_subtask(i: int, spec: Any, models: Mapping[str, ModelSpec], src: str | None) -> Subtask:
    _check_mapping(spec, f"subtasks[{i}]", source=src, field=f"subtasks[{i}]")
    sid = spec.get("id")
    if not isinstance(sid, str) or not sid:
        raise SpecError("must be a non-empty string", source=src, field=f"subtasks[{i}].id")
    _check_keys(spec, _SUBTASK_KEYS, required={"id", "profiles"}, source=src, where=f"subtask {sid!r}")
    at = {"source": src, "subtask": sid}
    deps = spec.get("deps", [])
    if not isinstance(deps, list) or not all(isinstance(d, str) for d in deps):
        raise SpecError("must be a list of subtask ids", **at, field="deps")
    input_tokens = _integer(spec.get("input_tokens", 0), src, sid, "input_tokens")
    texts = {}
    for key in ("prompt", "system", "reference"):
        v = spec.get(key)
        if v is not None and not isinstance(v, str):
            raise SpecError("must be a string", **at, field=key)
        texts[key] = v
    wrong = spec.get("wrong", [])
    if isinstance(wrong, str):
        wrong = [wrong]
    if not isinstance(wrong, list) or not all(isinstance(w, str) for w in wrong):
        raise SpecError("must be a string or a list of strings", **at, field="wrong")
    verifier = None if spec.get("verifier") is None else _parse_verifier(spec["verifier"], src, sid)
    is_answer = spec.get("answer", False)
    if not isinstance(is_answer, bool):
        raise SpecError("must be true or false", **at, field="answer")
    if spec.get("measured") is not None:
        _check_mapping(spec["measured"], "'measured'", **at, field="measured")
    profiles_raw = spec["profiles"]
    _check_mapping(profiles_raw, "'profiles'", **at, field="profiles")
    loop, history, profiles_raw = parse_history(spec, profiles_raw, src, sid)
    profiles: dict[str, Profile] = {}
    for m, prof in profiles_raw.items():
        if m not in models:
            raise UnknownModelError(f"unknown model {m!r}", **at, field=f"profiles.{m}")
        profiles[str(m)] = _parse_profile(prof, src, sid, f"profiles.{m}")
    return Subtask(
        id=sid,
        deps=tuple(deps),
        input_tokens=input_tokens,
        profiles=profiles,
        verifier=verifier,
        wrong=tuple(wrong),
        answer=is_answer,
        loop=loop,
        history=history,
        **texts,  # prompt, system, reference
    )


def _parse_sql_verifier(arg: Any, src: str | None, sid: str) -> dict[str, Any]:
    """The SQL verifier's database (a SQLite file, relative to the spec's folder), gold query and row limit."""
    at = {"source": src, "subtask": sid}
    _check_mapping(arg, "'verifier.sql'", **at, field="verifier.sql")
    _check_keys(arg, {"database", "gold", "max_rows"}, required={"database", "gold"}, source=src,
                where=f"subtask {sid!r} verifier.sql")  # fmt: skip
    database, gold, max_rows = arg["database"], arg["gold"], arg.get("max_rows", 10_000)
    if not isinstance(gold, str) or not gold.strip():
        raise SpecError("must be a non-empty string (the gold query)", **at, field="verifier.sql.gold")
    if not isinstance(max_rows, int) or isinstance(max_rows, bool) or not 1 <= max_rows <= 1_000_000:
        raise SpecError("must be an integer in [1, 1000000]", **at, field="verifier.sql.max_rows")
    if not isinstance(database, str) or not database:
        raise SpecError("must be a path (a string)", **at, field="verifier.sql.database")
    path = Path(database)
    if not path.is_absolute() and src is not None:
        path = Path(src).parent / path
    if not path.is_file():
        raise SpecError(f"no SQLite database at {path}", **at, field="verifier.sql.database")
    return {"database": str(path), "gold": gold, "max_rows": max_rows}


def _parse_verifier(spec: Any, src: str | None, sid: str) -> VerifierSpec:
    """``{"exact": TEXT}``, ``{"regex": PATTERN}``, ``{"json_schema": SCHEMA}``,
    ``{"python_tests": CODE, "timeout_s": S, "setup": CODE}``, ``{"judge": MODEL, "rubric": QUESTION}`` or
    ``{"sql": {"database": PATH, "gold": QUERY, "max_rows": N}, "timeout_s": S}``."""
    at = {"source": src, "subtask": sid}
    _check_mapping(spec, "'verifier'", **at, field="verifier")
    kinds = [k for k in _VERIFIER_KINDS if k in spec]
    if len(kinds) != 1:
        raise SpecError(f"give exactly one of {', '.join(_VERIFIER_KINDS)}", **at, field="verifier")
    kind = kinds[0]
    _check_keys(
        spec, {kind, "rubric", "timeout_s", "setup"}, required={kind}, source=src, where=f"subtask {sid!r} verifier"
    )
    setup = spec.get("setup", "")
    if not isinstance(setup, str) or (setup and kind != "python_tests"):
        raise SpecError("setup is code (a string) for python_tests", **at, field="verifier.setup")
    arg = spec[kind]
    f = f"verifier.{kind}"
    if kind == "json_schema":
        _check_mapping(arg, f"'{f}'", **at, field=f)
    elif kind == "sql":
        arg = _parse_sql_verifier(arg, src, sid)
    elif not isinstance(arg, str) or (kind != "exact" and not arg):
        raise SpecError("must be a non-empty string", **at, field=f)
    if kind == "regex":
        import regex

        try:
            regex.compile(arg)
        except regex.error as exc:
            raise SpecError(f"not a valid regular expression ({exc})", **at, field=f) from None
    rubric = spec.get("rubric")
    if (rubric is not None) != (kind == "judge") or (rubric is not None and not isinstance(rubric, str)):
        raise SpecError("a judge needs a rubric (a string); other verifiers take none", **at, field="verifier.rubric")
    given = {}
    if "timeout_s" in spec:
        given["timeout_s"] = _number(spec["timeout_s"], src, sid, "verifier.timeout_s")
        if given["timeout_s"] <= 0:
            raise SpecError("must be > 0", **at, field="verifier.timeout_s")
        _at_most(given["timeout_s"], MAX_SECONDS, at, "verifier.timeout_s")
    return VerifierSpec(kind=kind, arg=arg, rubric=rubric, setup=setup, **given)  # else its default timeout


def _parse_profile(spec: Any, src: str | None, sid: str, f: str) -> Profile:
    at = {"source": src, "subtask": sid}
    _check_mapping(spec, f"'{f}'", **at, field=f)
    if "samples" in spec:
        _check_keys(spec, {"samples"}, required={"samples"}, source=src, where=f"subtask {sid!r} {f}")
        rows = spec["samples"]
        if not isinstance(rows, list) or not rows:
            raise SpecError("must be a non-empty list", **at, field=f"{f}.samples")
        parsed = []
        for r, row in enumerate(rows):
            rf = f"{f}.samples[{r}]"
            if not isinstance(row, list | tuple) or len(row) != 3:
                raise SpecError("rows are [success 0/1, output_tokens, latency_s or null]", **at, field=rf)
            ok, tokens, latency = row
            if ok not in (0, 1) or isinstance(ok, float):
                raise SpecError("success must be 0 or 1", **at, field=rf)
            n = _integer(tokens, src, sid, rf)
            parsed.append((bool(ok), n, None if latency is None else _number(latency, src, sid, rf)))
        return PoolProfile(samples=tuple(parsed))
    _check_keys(spec, {"p", "output_tokens"}, required={"p", "output_tokens"}, source=src, where=f"subtask {sid!r} {f}")
    p = _number(spec["p"], src, sid, f"{f}.p")
    dist = spec["output_tokens"]
    df = f"{f}.output_tokens"
    _check_mapping(dist, f"'{df}'", **at, field=df)
    if "fixed" in dist:
        _check_keys(dist, {"fixed"}, required={"fixed"}, source=src, where=f"subtask {sid!r} {df}")
        return ParametricProfile(p=p, output_tokens=FixedTokens(_integer(dist["fixed"], src, sid, f"{df}.fixed")))
    _check_keys(dist, {"mean", "std"}, required={"mean", "std"}, source=src, where=f"subtask {sid!r} {df}")
    mean = _number(dist["mean"], src, sid, f"{df}.mean")
    std = _number(dist["std"], src, sid, f"{df}.std")
    return ParametricProfile(p=p, output_tokens=LogNormalTokens(mean=mean, std=std))


def _check_mapping(
    v: Any, what: str, *, source: str | None, subtask: str | None = None, field: str | None = None
) -> None:
    if not isinstance(v, Mapping):
        raise SpecError(
            f"{what} must be an object, not {type(v).__name__}", source=source, subtask=subtask, field=field
        )


def _check_keys(d: Mapping[str, Any], allowed: set[str], *, required: set[str], source: str | None, where: str) -> None:
    missing = sorted(required - d.keys())
    if missing:
        raise SpecError(f"{where}: missing {', '.join(map(repr, missing))}", source=source)
    unknown = sorted(set(map(str, d.keys())) - allowed)
    if unknown:
        raise SpecError(
            f"{where}: unknown key {', '.join(map(repr, unknown))} (allowed: {', '.join(sorted(allowed))})",
            source=source,
        )


def _number(v: Any, src: str | None, sid: str | None, f: str) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise SpecError(f"must be a number, not {v!r}", source=src, subtask=sid, field=f)
    if not _finite(v):
        raise SpecError(f"must be a finite number below 1e300, not {str(v)[:40]}", source=src, subtask=sid, field=f)
    return float(v)


def _integer(v: Any, src: str | None, sid: str | None, f: str) -> int:
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    if not _is_int(v):
        raise SpecError(f"must be an integer, not {v!r}", source=src, subtask=sid, field=f)
    return int(v)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _finite(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and -1e300 < v < 1e300 and math.isfinite(v)


def _at_most(v: float, top: float, at: Mapping[str, Any], field: str) -> None:
    if v > top:
        raise SpecError(f"{str(v)[:40]} is above the largest value a spec may hold ({top:,})", **at, field=field)


def never_succeeds(wf: Workflow) -> list[str]:
    """Why each subtask that no model can ever complete cannot (its chance, truncation included, is 0 on every
    model that may run it); a valid spec, but one no budget or deadline can make succeed."""
    out = []
    for s in wf.subtasks:
        if s.history is not None:  # its rates are the history's, not the profiles'
            continue
        why = []
        for name, prof in s.profiles.items():
            cap = wf.models[name].max_output_tokens
            if isinstance(prof, PoolProfile):
                if not any(ok and tokens <= cap for ok, tokens, _ in prof.samples):
                    why.append(f"{name}: no successful sample in its pool fits in max_output_tokens ({cap})")
            elif prof.p == 0:
                why.append(f"{name}: p = 0")
            elif isinstance(prof.output_tokens, FixedTokens) and prof.output_tokens.tokens > cap:
                why.append(f"{name}: its {prof.output_tokens.tokens} output tokens exceed max_output_tokens ({cap})")
        if len(why) == len(s.profiles):
            out.append(f"subtask {s.id!r} can never succeed: {'; '.join(why)}")
    return out
