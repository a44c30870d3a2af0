"""Small helpers shared by the tests: collecting a run's events, and serve-sim with a workflow pointed at it."""

from __future__ import annotations

import json
import random
import time
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import runtime
from adapters.sim_server import SimServer, serve_in_thread
from runtime.types import AgentModel, ModelTurn
from tests.conftest import model

if TYPE_CHECKING:
    from collections.abc import Iterator

    from runtime.types import Directive, QABudget, Trace


def run_collect(wf: Any, budget: float, deadline: float, **kw: Any) -> tuple[runtime.RunResult, list[runtime.Event]]:
    """Run once in virtual time and return the result with every event it emitted."""
    events: list[runtime.Event] = []
    result = runtime.run(wf, budget, deadline, on_event=events.append, **kw)
    return result, events


def of(events: list[runtime.Event], cls: type) -> list[Any]:
    return [e for e in events if isinstance(e, cls)]


def comparable(events: list[runtime.Event]) -> list[dict[str, Any]]:
    """Events without the fields that legitimately differ between two runs of one seed."""
    out = []
    for e in events:
        d = e.to_dict()
        d.pop("run_id", None)
        d.pop("started_at", None)  # wall time
        d.pop("planner_ms", None)
        out.append(d)
    return out


EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "codegen.json"
MODEL_IDS = {
    "openai": {"mini": "gpt-4o-mini", "haiku": "gpt-4.1-nano"},
    "anthropic": {"mini": "claude-haiku-4-5", "haiku": "claude-sonnet-4-6"},
}


def example_spec(provider: str = "mixed", *, timeout_s: float = 1.0) -> dict[str, Any]:
    """examples/codegen.json with every model on ``provider`` (mixed: as shipped, one of each)."""
    data: dict[str, Any] = json.loads(EXAMPLE.read_text())
    for name, m in data["models"].items():
        if provider != "mixed":
            m["provider"] = provider
            m["model"] = MODEL_IDS[provider][name]
        m["timeout_s"] = timeout_s
    return data


def pointed_at(data: dict[str, Any], url: str) -> runtime.Workflow:
    """The spec with every model's base_url on the server at ``url``."""
    data = json.loads(json.dumps(data))
    for m in data["models"].values():
        m["base_url"] = url + "/v1" if m["provider"] == "openai" else url
    return runtime.parse_workflow(data)


@contextmanager
def server(data: dict[str, Any], **kw: Any) -> Iterator[tuple[SimServer, runtime.Workflow]]:
    srv = SimServer(runtime.parse_workflow(data), **kw)
    with serve_in_thread(srv) as url:
        yield srv, pointed_at(data, url)


@contextmanager
def ask_program(directory: Path, entry: str) -> Iterator[Path]:
    """A program file (``MODELS``, ``EXAMPLE`` and ``entry``, its ``workflow``) in ``directory`` whose one model
    is an OpenAI endpoint on serve-sim, served here while the block runs; its subtask ``ask`` answers
    "Answer: B"."""
    served = runtime.parse_workflow({
        "models": {"gpt-sim": model(tps=2000.0, ttft=0.01, max_tokens=200)},
        "subtasks": [{"id": "ask", "input_tokens": 30, "reference": "Answer: B",
                      "profiles": {"gpt-sim": {"p": 1.0, "output_tokens": {"fixed": 5}}}}],
    })  # fmt: skip
    with serve_in_thread(SimServer(served, speed=10.0)) as url:
        models = {"gpt-sim": {"provider": "openai", "base_url": url + "/v1", "input_price_per_mtok": 1,
                              "output_price_per_mtok": 2, "tokens_per_s": 2000, "ttft_s": 0.01,
                              "max_output_tokens": 200}}  # fmt: skip
        path = directory / "wf.py"
        path.write_text(f"MODELS = {models!r}\nEXAMPLE = 'Which letter?'\n\n{entry}")
        yield path


def settled_open_requests(srv: SimServer, within_s: float = 5.0) -> int:
    """The requests ``srv`` still has open once it has settled: a client's hang-up reaches the server a moment after
    the client returns (later on a loaded machine), so wait up to ``within_s`` for the count to reach 0."""
    end = time.monotonic() + within_s
    while srv.open_requests and time.monotonic() < end:
        time.sleep(0.01)
    return srv.open_requests


class FuzzAgentModel(AgentModel):
    """A search-agent model that ignores its instructions but not its endpoint's ``max_tokens``: random turns
    (searches, answers, both at once, unclosed tags, verdicts, notes, stated confidences), random lengths up to the
    allowance it is sent. If the agent sent the controller's wish instead of what is left of the cap, this model
    would run over the cap."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)

    async def turn(self, trace: Trace, directive: Directive, budget: QABudget) -> ModelTurn:
        r = self.rng
        conf = f"Confidence: {r.random():.2f}. Candidate: Kell"
        text = r.choice([
            f"<thought>{conf}</thought><tool_call>q{r.randint(0, 3)}</tool_call>", "<answer>Kell</answer>",
            "<tool_call>Velmora opera</tool_call>", "<thought>", "<tool_call>Kell</tool_call><answer>x</answer>",
            f"<thought>Verdict: {r.choice(['supported', 'unsupported'])}. {conf}</thought>",
            f"<thought>Notes: Kell. {conf}</thought><tool_call>x</tool_call>",
        ])  # fmt: skip
        return ModelTurn(text, r.randint(0, directive.max_tokens))
