"""Workflow specs: the documented format loads, and every kind of bad input gets a typed error that names
the file, the subtask and the field."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import runtime
from tests.conftest import EXAMPLES, chain_spec, model

if TYPE_CHECKING:
    from pathlib import Path

ISSUE_EXAMPLE = {
    "name": "demo",
    "models": {
        "small": {
            "provider": "sim",
            "input_price_per_mtok": 0.10,
            "output_price_per_mtok": 0.40,
            "tokens_per_s": 120,
            "ttft_s": 0.4,
            "max_output_tokens": 4096,
        }
    },
    "subtasks": [
        {
            "id": "a",
            "deps": [],
            "input_tokens": 600,
            "profiles": {"small": {"p": 0.3, "output_tokens": {"mean": 1500, "std": 400}}},
        },
        {
            "id": "b",
            "deps": ["a"],
            "input_tokens": 900,
            "profiles": {"small": {"samples": [[1, 1200, 9.5], [0, 2100, None]]}},
        },
    ],
}


def write(tmp_path: Path, data: Any, name: str = "wf.json") -> Path:
    p = tmp_path / name
    p.write_text(data if isinstance(data, str) else json.dumps(data))
    return p


def test_documented_format_loads(tmp_path: Path) -> None:
    wf = runtime.load_workflow(write(tmp_path, ISSUE_EXAMPLE))
    assert wf.name == "demo"
    assert wf.subtask_ids == ("a", "b")
    a, b = wf.subtasks
    assert isinstance(a.profiles["small"], runtime.ParametricProfile)
    assert a.profiles["small"].output_tokens == runtime.LogNormalTokens(1500, 400)
    pool = b.profiles["small"]
    assert isinstance(pool, runtime.PoolProfile)
    assert pool.samples == ((True, 1200, 9.5), (False, 2100, None))


def test_yaml_loads_the_same(tmp_path: Path) -> None:
    yaml = pytest.importorskip("yaml")
    p = tmp_path / "wf.yaml"
    p.write_text(yaml.safe_dump(ISSUE_EXAMPLE))
    assert runtime.load_workflow(p) == runtime.load_workflow(write(tmp_path, ISSUE_EXAMPLE))


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.json")), ids=lambda p: p.name)
def test_shipped_examples_load(path: Path) -> None:
    wf = runtime.load_workflow(path)
    assert wf.subtasks


def test_examples_cover_chain_diamond_and_twenty_subtasks() -> None:
    sizes = {p.stem: runtime.load_workflow(p) for p in EXAMPLES.glob("*.json")}
    assert len(sizes["chain"].subtasks) >= 2
    diamond = sizes["diamond"]
    assert any(len(s.deps) >= 2 for s in diamond.subtasks)
    big = sizes["release20"]
    assert len(big.subtasks) == 20 and len(big.models) == 3


def test_topological_order_is_stable() -> None:
    spec = chain_spec(3)
    spec["subtasks"].reverse()
    wf = runtime.parse_workflow(spec)
    assert wf.subtask_ids == ("s0", "s1", "s2")


def _mutated(fn: Any) -> dict[str, Any]:
    spec: dict[str, Any] = json.loads(json.dumps(ISSUE_EXAMPLE))
    fn(spec)
    return spec


def _set(path: list[Any], value: Any) -> Any:
    def apply(spec: dict[str, Any]) -> None:
        node = spec
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value

    return apply


BAD = {
    "cycle": (_set(["subtasks", 0, "deps"], ["b"]), runtime.CycleError, "a", "deps"),
    "self_dependency": (_set(["subtasks", 1, "deps"], ["b"]), runtime.CycleError, "b", "deps"),
    "unknown_dependency": (_set(["subtasks", 1, "deps"], ["zzz"]), runtime.UnknownDependencyError, "b", "deps"),
    "unknown_model": (
        _set(["subtasks", 0, "profiles"], {"huge": {"p": 0.5, "output_tokens": {"fixed": 3}}}),
        runtime.UnknownModelError,
        "a",
        "profiles.huge",
    ),
    "p_above_one": (_set(["subtasks", 0, "profiles", "small", "p"], 1.5), runtime.SpecError, "a", "profiles.small.p"),
    "p_negative": (_set(["subtasks", 0, "profiles", "small", "p"], -0.1), runtime.SpecError, "a", "profiles.small.p"),
    "p_nan": (
        _set(["subtasks", 0, "profiles", "small", "p"], float("nan")),
        runtime.SpecError,
        "a",
        "profiles.small.p",
    ),
    "p_string": (_set(["subtasks", 0, "profiles", "small", "p"], "high"), runtime.SpecError, "a", "profiles.small.p"),
    "negative_input_tokens": (_set(["subtasks", 0, "input_tokens"], -5), runtime.SpecError, "a", "input_tokens"),
    "pool_bad_success": (
        _set(["subtasks", 1, "profiles", "small", "samples"], [[2, 100, None]]),
        runtime.SpecError,
        "b",
        "profiles.small.samples[0]",
    ),
    "pool_empty": (
        _set(["subtasks", 1, "profiles", "small", "samples"], []),
        runtime.SpecError,
        "b",
        "profiles.small.samples",
    ),
    "no_profiles": (_set(["subtasks", 0, "profiles"], {}), runtime.SpecError, "a", "profiles"),
    "duplicate_id": (_set(["subtasks", 1, "id"], "a"), runtime.SpecError, "a", "id"),
    "unknown_key": (_set(["subtasks", 0, "inputs"], 3), runtime.SpecError, None, None),
    "negative_price": (
        _set(["models", "small", "input_price_per_mtok"], -1),
        runtime.SpecError,
        None,
        "models.small.input_price_per_mtok",
    ),
    "zero_speed": (_set(["models", "small", "tokens_per_s"], 0), runtime.SpecError, None, "models.small.tokens_per_s"),
    "negative_std": (
        _set(["subtasks", 0, "profiles", "small", "output_tokens"], {"mean": 10, "std": -1}),
        runtime.SpecError,
        "a",
        "profiles.small.output_tokens",
    ),
    # Issue 16: values past what the code can hold passed validation, then crashed the run with OverflowError.
    "huge_max_tokens": (
        _set(["models", "small", "max_output_tokens"], 2**63),
        runtime.SpecError,
        None,
        "models.small.max_output_tokens",
    ),
    "huge_input_tokens": (_set(["subtasks", 0, "input_tokens"], 2**63), runtime.SpecError, "a", "input_tokens"),
    "huge_price": (
        _set(["models", "small", "output_price_per_mtok"], 1e13),
        runtime.SpecError,
        None,
        "models.small.output_price_per_mtok",
    ),
    "400_digit_price": (
        _set(["models", "small", "input_price_per_mtok"], 10**400),
        runtime.SpecError,
        None,
        "models.small.input_price_per_mtok",
    ),
    "huge_std": (
        _set(["subtasks", 0, "profiles", "small", "output_tokens"], {"mean": 1, "std": 1e200}),
        runtime.SpecError,
        "a",
        "profiles.small.output_tokens",
    ),
    "huge_fixed": (
        _set(["subtasks", 0, "profiles", "small", "output_tokens"], {"fixed": 2**70}),
        runtime.SpecError,
        "a",
        "profiles.small.output_tokens.fixed",
    ),
    "huge_pool_latency": (
        _set(["subtasks", 1, "profiles", "small", "samples"], [[1, 10, 1e12]]),
        runtime.SpecError,
        "b",
        "profiles.small.samples[0]",
    ),
    "crawling_speed": (
        _set(["models", "small", "tokens_per_s"], 1e-300),
        runtime.SpecError,
        None,
        "models.small.tokens_per_s",
    ),
    "lone_surrogate": (_set(["name"], "\ud800"), runtime.SpecError, None, None),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_specs_raise_typed_errors_naming_file_subtask_field(tmp_path: Path, case: str) -> None:
    mutate, exc_type, subtask, field = BAD[case]
    path = write(tmp_path, _mutated(mutate))
    with pytest.raises(exc_type) as info:
        runtime.load_workflow(path)
    err = info.value
    assert isinstance(err, runtime.UsageError) and isinstance(err, runtime.OntimeError)
    assert str(path) in str(err)
    if subtask is not None:
        assert err.subtask == subtask and f"'{subtask}'" in str(err)
    if field is not None:
        assert err.field == field and field in str(err)


@pytest.mark.parametrize(
    "text",
    ["{not json", "[]", '{"models": {}, "subtasks": []}', '{"models": {"m": 3}, "subtasks": [{}]}', ""],
)
def test_malformed_files_raise_spec_error(tmp_path: Path, text: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(runtime.SpecError, match=str(path).replace("/", ".")):
        runtime.load_workflow(path)


def test_missing_file_raises_spec_error(tmp_path: Path) -> None:
    with pytest.raises(runtime.SpecError, match="cannot read"):
        runtime.load_workflow(tmp_path / "nope.json")


def test_model_missing_from_a_profile_is_allowed() -> None:
    spec = chain_spec(2)
    spec["models"]["other"] = model()
    spec["subtasks"][1]["profiles"]["other"] = {"p": 1.0, "output_tokens": {"fixed": 5}}
    wf = runtime.parse_workflow(spec)
    table = runtime.ProfileTable.from_workflow(wf)
    assert table.usable.tolist() == [[True, False], [True, True]]


@pytest.mark.parametrize(
    "content",
    [b'{"name": "\xff\xfe"}', b"[" * 100_000, b'{"a": 1' + b"0" * 5000 + b"}"],
    ids=["not-utf8", "nested-100k", "5000-digits"],
)
def test_unreadable_spec_files_raise_spec_errors(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "wf.json"
    path.write_bytes(content)
    with pytest.raises(runtime.SpecError, match=r"wf\.json"):
        runtime.load_workflow(path)


@pytest.mark.parametrize("path", [None, 5, "a\x00b"])
def test_a_path_that_is_no_path_raises_a_usage_error(path: Any) -> None:
    with pytest.raises(runtime.UsageError):
        runtime.load_workflow(path)


_NUMBERS = st.one_of(
    st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, 1, 10**8, 10**8 + 1, 10**4, 1e-3, 1e9, 1e300, 10**400]),
)
_FIELDS: list[list[Any]] = [
    ["models", "small", "input_price_per_mtok"],
    ["models", "small", "output_price_per_mtok"],
    ["models", "small", "tokens_per_s"],
    ["models", "small", "ttft_s"],
    ["models", "small", "max_output_tokens"],
    ["subtasks", 0, "input_tokens"],
    ["subtasks", 0, "profiles", "small", "output_tokens", "mean"],
    ["subtasks", 0, "profiles", "small", "output_tokens", "std"],
    ["subtasks", 1, "profiles", "small", "samples", 0, 1],
    ["subtasks", 1, "profiles", "small", "samples", 0, 2],
]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(range(len(_FIELDS))), _NUMBERS), min_size=1, max_size=3))
def test_any_number_in_a_spec_is_refused_or_runs_without_overflow(changes: list[tuple[int, Any]]) -> None:
    """A spec either fails validation with a SpecError or runs, predicts and evaluates: nothing in between."""
    spec = _mutated(lambda s: None)
    for field, value in changes:
        _set(_FIELDS[field], value)(spec)
    try:
        wf = runtime.parse_workflow(spec)
    except runtime.SpecError:
        return
    event("ran")
    result = runtime.run(wf, 1.0, 3600, planner="mcp:n=16")
    assert result.cost <= 1.0
    runtime.predict(wf, 1.0, 3600, runs=8, workers=1)
