"""``ontime profile`` (issue 18, item 5): it recovers serve-sim's known profiles within the intervals it reports,
never spends past its budget or works past its deadline, and refuses bad input with typed errors."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import runtime
from runtime._profile import profile
from runtime.cli import app
from runtime.types import CascadeTable, LimitError, ParametricProfile, UsageError
from tests.helpers import server
from tools.reflection_data import Outcomes, load_attempts

ATTEMPTS = Path(__file__).resolve().parent.parent / "examples" / "reflection" / "attempts_sample.csv"
# The truth: first-attempt rates of a plain subtask, and a cascade over a two-invocation loop.
PLAIN = {"a": 0.4, "b": 0.8}
CASCADE = {"a": 0.7, "b": 0.5, "a>a": 0.2, "a>b": 0.6, "b>a": 0.3, "b>b": 0.1}


def known(provider: str = "openai") -> dict[str, Any]:
    def model(name: str, price_in: float, price_out: float) -> dict[str, Any]:
        m: dict[str, Any] = {"input_price_per_mtok": price_in, "output_price_per_mtok": price_out,
                             "tokens_per_s": 1000, "ttft_s": 0.01, "max_output_tokens": 40}  # fmt: skip
        if provider != "sim":
            m.update(provider=provider, model=f"model-{name}")
        return m

    return {
        "name": "known",
        "models": {"a": model("a", 1.0, 4.0), "b": model("b", 3.0, 12.0)},
        "subtasks": [
            {"id": "plain", "prompt": "Answer.", "reference": "RIGHT", "wrong": ["nope"],
             "verifier": {"exact": "RIGHT"},
             "profiles": {"a": {"p": PLAIN["a"], "output_tokens": {"mean": 10, "std": 3}},
                          "b": {"p": PLAIN["b"], "output_tokens": {"fixed": 6}}}},
            {"id": "loop", "deps": ["plain"], "prompt": "Fix {{plain}}.", "reference": "DONE", "wrong": ["bad"],
             "verifier": {"exact": "DONE"}, "loop": {"horizon": 2}, "cascade": CASCADE,
             "profiles": {"a": {"p": 0.7, "output_tokens": {"fixed": 5}},
                          "b": {"p": 0.5, "output_tokens": {"fixed": 8}}}},
        ],
    }  # fmt: skip


def test_profile_recovers_serve_sims_known_profiles_within_its_intervals(tmp_path: Path) -> None:
    """The issue's bar. serve-sim (seed 11) serves the known spec on loopback; ``profile`` measures it through the
    OpenAI SDK with $0.05 and 60 s. Every reported 95% interval (8 entries) covers the true rate; the spend, by the
    report and by the server's own record of tokens, is within the budget."""
    budget = 0.05
    with server(known(), seed=11, speed=100.0) as (srv, wf):
        spec = tmp_path / "known.json"
        spec.write_text(json.dumps(_data_of(wf, known())))
        report = profile(spec, budget=budget, deadline=60, seed=3)
        billed = sum(
            r.input_tokens * wf.models[_name(r.model)].input_price_per_mtok
            + r.total_output_tokens * wf.models[_name(r.model)].output_price_per_mtok
            for r in srv.record
        )
    assert report.stopped == "budget" and report.spent <= budget
    assert billed / 1e6 <= report.spent + 1e-12  # the ledger charged at least what the server billed
    rates = {m.id: m.rates_dict() for m in report.subtasks}
    truth = {"plain": PLAIN, "loop": CASCADE}
    for sid, entries in truth.items():
        for path, true in entries.items():
            r = rates[sid][path]
            assert r["low"] <= true <= r["high"], (sid, path, true, r)
            assert r["count"] >= 10
    # The written spec loads, and says what was measured.
    measured = runtime.parse_workflow(report.spec)
    loop = measured.subtasks[1]
    assert isinstance(loop.history, CascadeTable) and set(loop.history.rates) == {tuple(k.split(">")) for k in CASCADE}
    assert loop.history.rates[("a", "b")] == rates["loop"]["a>b"]["rate"]
    plain = measured.subtasks[0].profiles["b"]
    assert isinstance(plain, ParametricProfile) and plain.p == rates["plain"]["b"]["rate"]
    assert report.spec["subtasks"][0]["measured"]["output_tokens"]["b"]["mean"] == 6.0


def _data_of(wf: runtime.Workflow, data: dict[str, Any]) -> dict[str, Any]:
    """``data`` with the base_urls of ``wf`` (the helper's pointed spec)."""
    out: dict[str, Any] = json.loads(json.dumps(data))
    for name, m in out["models"].items():
        ep = wf.models[name].endpoint
        assert ep is not None
        m["base_url"] = ep.base_url
    return out


def _name(model_id: str) -> str:
    return model_id.removeprefix("model-")


def test_ontime_profile_against_serve_sim_from_a_shell(tmp_path: Path) -> None:
    spec = tmp_path / "sim.json"
    spec.write_text(json.dumps(known("sim")))
    out = tmp_path / "measured.json"
    result = CliRunner().invoke(app, ["profile", str(spec), "-b", "0.004", "-d", "60", "--against", "serve-sim",
                                      "--speed", "100", "--questions", "40", "--out", str(out), "--json"])  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["spent"] <= 0.004 and summary["out"] == str(out)
    assert summary["stopped"] in ("budget", "questions")
    assert set(summary["subtasks"]["loop"]["rates"]) >= {"a", "b"}
    written = runtime.load_workflow(out)  # the written spec keeps the simulated models and loads
    assert written.models["a"].provider == "sim" and written.subtasks[1].loop is not None
    assert "no-key" not in result.output


def test_profile_stops_at_its_deadline(tmp_path: Path) -> None:
    spec = tmp_path / "sim.json"
    spec.write_text(json.dumps(known("sim")))
    start = time.monotonic()
    report = profile(spec, budget=100.0, deadline=1.0, against="serve-sim", speed=1.0)
    assert report.stopped == "deadline" and report.spent < 100.0
    # The last run is cut at the deadline; serve-sim then gets at most 1 s to close (slack for a loaded machine).
    assert time.monotonic() - start < 1.0 + 3.0


def test_profile_from_a_recorded_attempts_file(tmp_path: Path) -> None:
    """With budget for every reachable path, the first-attempt rates are the file's, exactly."""
    models = ["gpt-35-turbo", "gpt-4"]
    data = {
        "name": "reflection",
        "models": {m: {"input_price_per_mtok": 1.0, "output_price_per_mtok": 2.0, "tokens_per_s": 50, "ttft_s": 0.5,
                       "max_output_tokens": 1000} for m in models},
        "subtasks": [{"id": "exam", "loop": {"horizon": 3}, "difficulty": {"spread": 1.0},
                      "profiles": {m: {"p": 0.5, "output_tokens": {"mean": 100, "std": 20}} for m in models}}],
    }  # fmt: skip
    spec = tmp_path / "reflection.json"
    spec.write_text(json.dumps(data))
    report = profile(spec, budget=10.0, deadline=60, against="recorded", recorded=ATTEMPTS, depth=2)
    outcomes = Outcomes(load_attempts(ATTEMPTS))
    rates = report.subtasks[0].rates_dict()
    for m in models:
        assert rates[m]["rate"] == pytest.approx(outcomes.first(m).mean, abs=1e-6)
        assert rates[m]["count"] == outcomes.first(m).trials
        assert rates[f"{m}>{m}"]["rate"] == pytest.approx(outcomes.repair(m).mean, abs=1e-6)
    assert report.stopped == "done" and report.spent <= 10.0
    assert "difficulty" not in report.spec["subtasks"][0] and "cascade" in report.spec["subtasks"][0]
    small = profile(spec, budget=0.001, deadline=60, against="recorded", recorded=ATTEMPTS, depth=2)
    assert small.spent <= 0.001 and small.stopped == "budget"


@pytest.mark.parametrize(
    ("kw", "error"),
    [
        ({"against": "nowhere"}, UsageError),
        ({"estimator": "latent_class"}, UsageError),
        ({"budget": -1.0}, LimitError),
        ({"deadline": float("nan")}, LimitError),
        ({"questions": 0}, UsageError),
        ({"depth": 99}, UsageError),
        ({"against": "recorded"}, UsageError),  # no file
        ({"against": "recorded", "recorded": "/nonexistent.csv"}, UsageError),
        ({"against": "endpoints"}, UsageError),  # a simulated model has no endpoint
    ],
)
def test_bad_input_is_refused_with_a_typed_error_before_any_call(
    tmp_path: Path, kw: dict[str, Any], error: type[Exception]
) -> None:
    spec = tmp_path / "sim.json"
    spec.write_text(json.dumps(known("sim")))
    args: dict[str, Any] = {"budget": 1.0, "deadline": 10.0, **kw}
    with pytest.raises(error):
        profile(spec, **args)


def test_the_cli_reports_bad_input_in_one_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["profile", str(tmp_path / "missing.json"), "-b", "1", "-d", "10"])
    assert result.exit_code == 2 and "error:" in result.output
    spec = tmp_path / "sim.json"
    spec.write_text(json.dumps(known("sim")))
    bad = CliRunner().invoke(app, ["profile", str(spec), "-b", "1", "-d", "10", "--against", "serve-sim:x"])
    assert bad.exit_code == 2 and "recorded:FILE" in bad.output
