"""The standing adversarial suite (issue 16): fuzzed specs and options, kill signals at seeded points, faults.

Every run is a real ``ontime`` subprocess; the models are served over HTTP by serve-sim on loopback, and the
server's own record of what it served is the bill a run's journal must cover. What is asserted is the
contract: a signal that lets the process act (SIGINT, SIGTERM) ends it settled, with exit status 128 + the
signal and a journal that ends ``run_finished(reason="interrupted")`` and replays to what the process
printed and to no less than the server billed; SIGKILL leaves a journal whose every line but a torn last one
parses, which replays within the budget and covers the bill with what it had reserved; faults never push a
run past its budget or its deadline.
"""

from __future__ import annotations

import json
import random
import re
import signal
import subprocess
import sys
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

import runtime
from adapters.sim_server import Faults, SimServer, serve_in_thread
from benchmarks import fuzz
from runtime.types import PUSD_PER_USD, price_per_token_pusd, to_pusd
from tests.conftest import EXAMPLES
from tests.helpers import example_spec, settled_open_requests

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals and process groups")

CLI = [sys.executable, "-m", "runtime.cli"]
EXIT_BOUND_S = 15.0  # how long a signalled run may take to settle and exit (it needs well under a second)


def test_fuzzed_specs_and_options_never_crash_hang_overspend_or_run_late() -> None:
    """Cases 0-19 of seed 16 of ``benchmarks.fuzz`` (the benchmark runs many more for a bounded time)."""
    report = fuzz.run(120.0, 16, max_cases=20, timeout=60.0)
    failures = [f"case {o.case.index}: {o.verdict}: {o.case.argv[:300]}: {o.detail}" for o in report.failures]
    assert {k: v for k, v in report.counts().items() if k in fuzz.BAD} == dict.fromkeys(fuzz.BAD, 0), failures
    assert len(report.outcomes) == 20, "the fuzzer ran out of time"


# -- runs against serve-sim ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Served:
    """serve-sim on loopback and a spec file whose every model it serves."""

    server: SimServer
    workflow: runtime.Workflow
    spec: Path

    def bill_pusd(self) -> int:
        """What the server's record says it served, at the spec's prices (a request is billed once it has
        produced output; serve-sim records input 0 for one that had not)."""
        prices = {}
        for m in self.workflow.models.values():
            assert m.endpoint is not None
            prices[m.endpoint.model] = (price_per_token_pusd(m.input_price_per_mtok),
                                        price_per_token_pusd(m.output_price_per_mtok))  # fmt: skip
        return sum(r.input_tokens * prices[r.model][0] + r.total_output_tokens * prices[r.model][1]
                   for r in self.server.record)  # fmt: skip

    def served_output_tokens(self) -> int:
        return sum(r.total_output_tokens for r in self.server.record)

    def settle(self, within_s: float = 5.0) -> int:
        """Wait until the server has no request open (a client's hang-up reaches it a moment later); return
        how many are still open."""
        return settled_open_requests(self.server, within_s)


@contextmanager
def served(tmp_path: Path, *, tokens_per_s: float | None = None, timeout_s: float = 30.0, speed: float = 1.0,
           faults: Faults | None = None, seed: int = 0) -> Iterator[Served]:  # fmt: skip
    data = example_spec("mixed", timeout_s=timeout_s)
    if tokens_per_s is not None:
        for m in data["models"].values():
            m["tokens_per_s"] = tokens_per_s
    wf = runtime.parse_workflow(data)
    srv = SimServer(wf, seed=seed, speed=speed, faults=faults or Faults())
    with serve_in_thread(srv) as url:
        for m in data["models"].values():
            m["base_url"] = url + "/v1" if m["provider"] == "openai" else url
        spec = tmp_path / "spec.json"
        spec.write_text(json.dumps(data))
        yield Served(srv, runtime.load_workflow(spec), spec)


def start(tmp_path: Path, *args: str) -> subprocess.Popen[str]:
    env = fuzz.child_env(tmp_path)
    return subprocess.Popen([*CLI, *args], cwd=tmp_path, env=env, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True)  # fmt: skip


def wait_for(journal: Path, kind: str, proc: subprocess.Popen[str], within_s: float = 60.0) -> float:
    """Poll the journal until it holds an event of ``kind``; return when (``time.monotonic()``)."""
    end = time.monotonic() + within_s
    while time.monotonic() < end:
        if journal.exists() and f'"event":"{kind}"' in journal.read_text(errors="replace"):
            return time.monotonic()
        if proc.poll() is not None:
            _, err = proc.communicate()
            pytest.fail(f"the run exited ({proc.returncode}) before its journal had {kind}: {err[-2000:]}")
        time.sleep(0.01)
    proc.kill()
    pytest.fail(f"no {kind} in the journal within {within_s} s")


def finish(proc: subprocess.Popen[str], within_s: float) -> tuple[str, str]:
    """Wait for the process to exit (fail the test unless it does within ``within_s``); return its output."""
    try:
        out, err = proc.communicate(timeout=within_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"no exit within {within_s} s: {err[-2000:]}")
    return out, err


def journal_of(path: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """A journal's events and the categories of the warnings reading it gave."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        events = runtime.read_journal(path)
    return events, [w.category.__name__ for w in caught]


def journal_output_tokens(events: list[dict[str, Any]]) -> int:
    return sum(e["output_tokens"] for e in events if e["event"] == "sample_finished")


class Clauses:
    """The clauses of the contract a run broke. Every clause is checked and the test fails naming them all, so
    one run tells everything that is wrong with it, with the numbers."""

    __slots__ = ("broken",)

    def __init__(self) -> None:
        self.broken: list[str] = []

    def __call__(self, holds: bool, clause: str) -> None:
        if not holds:
            self.broken.append(clause)

    def verify(self) -> None:
        assert not self.broken, "broken: " + " | ".join(self.broken)


# -- SIGINT and SIGTERM: the run stops settled and says so ---------------------------------------------------


@pytest.mark.parametrize(
    ("name", "planner", "seed"),
    [("SIGINT", "retry:mini:2", 0), ("SIGINT", "retry:haiku:2", 1), ("SIGTERM", "retry:mini:2", 2),
     ("SIGTERM", "retry:haiku:2", 3)],
)  # fmt: skip
def test_a_signal_mid_run_ends_it_settled_interrupted_and_journaled(
    name: str, planner: str, seed: int, tmp_path: Path
) -> None:
    """Issue 16 item 4: the signal comes 0.3-2 s (seeded) after the first reservation, streams in flight."""
    sig, delay = signal.Signals[name], random.Random(seed).uniform(0.3, 2.0)
    journal = tmp_path / "run.jsonl"
    with served(tmp_path, tokens_per_s=10) as s:  # a 100-token answer streams for 10 s: always in flight
        proc = start(tmp_path, "run", str(s.spec), "-b", "0.05", "-d", "60", "-p", planner, "--json",
                     "--journal", str(journal))  # fmt: skip
        wait_for(journal, "budget_reserved", proc)
        time.sleep(delay)
        proc.send_signal(sig)
        out, err = finish(proc, EXIT_BOUND_S)
        open_left = s.settle()
        bill, served_out = s.bill_pusd(), s.served_output_tokens()
    check = Clauses()
    check(proc.returncode == 128 + sig, f"exit status {proc.returncode}, not {128 + sig}")
    check("Traceback" not in err, f"a traceback: {err[-600:]!r}")
    events, warned = journal_of(journal)
    check(warned == [], f"reading the journal warned {warned}")
    ledger, last = runtime.replay_ledger(events), events[-1]
    printed_result = json.loads(out) if out.strip() else {}
    check(printed_result.get("reason") == "interrupted" and printed_result.get("cost_pusd") == ledger.spent_pusd,
          f"printed {out[:200]!r}; the journal replays to {ledger.spent_pusd} pusd")  # fmt: skip
    ended = (last["event"], last.get("reason"))
    check(ended == ("run_finished", "interrupted"), f"the journal ends with {ended}, not run_finished(interrupted)")
    check(ledger.reserved_pusd == 0, f"{ledger.reserved_pusd} pusd still reserved on replay")
    check(ledger.spent_pusd == ledger.reported_spent_pusd,
          f"replayed spend {ledger.spent_pusd} != run_finished's {ledger.reported_spent_pusd}")  # fmt: skip
    check(ledger.peak_committed_pusd <= ledger.budget_pusd, f"peak {ledger.peak_committed_pusd} > budget")
    printed = re.search(r"spent \$(\d+\.\d+) of \$[\d.]+, \$(\d+\.\d+) still held", " ".join(err.split()))
    said = printed.groups() if printed else None
    want = (f"{ledger.spent_pusd / PUSD_PER_USD:.4f}", "0.0000")
    check(said == want, f"printed spent/held {said}, the journal replays to {want}")
    check(open_left == 0, f"{open_left} streams still open on the server")
    # A cancelled stream is charged the bound of what it may have produced: never less than was served.
    check(bill <= ledger.spent_pusd, f"the server billed {bill} pusd, the journal spent {ledger.spent_pusd}")
    journal_out = journal_output_tokens(events)
    check(served_out <= journal_out, f"the server streamed {served_out} output tokens, the journal has {journal_out}")
    check.verify()


def ready(proc: subprocess.Popen[str], within_s: float = 60.0) -> None:
    """Wait until ``ontime run`` handles SIGTERM (Linux: the process's caught-signals mask): Python's imports are
    done. A SIGINT during the imports themselves still prints Python's KeyboardInterrupt traceback (README)."""
    end = time.monotonic() + within_s
    while time.monotonic() < end and proc.poll() is None:
        status = Path(f"/proc/{proc.pid}/status").read_text()
        caught = int(next(line.split()[1] for line in status.splitlines() if line.startswith("SigCgt:")), 16)
        if caught >> (signal.SIGTERM - 1) & 1:
            return
        time.sleep(0.005)
    pytest.fail("ontime run never got ready")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("name", ["SIGINT", "SIGTERM"])
def test_a_signal_while_starting_up_exits_cleanly_and_leaves_no_partial_journal(name: str, tmp_path: Path) -> None:
    """Signals at seeded points 0-0.6 s after the command is ready (its imports done): as the planner is built,
    the journal opens and the run starts. Whatever the point: no traceback, the signal's exit status (as a
    shell reports it), and either no journal or a whole one."""
    sig, rng, check = signal.Signals[name], random.Random(name), Clauses()
    for k, (low, high) in enumerate([(0.0, 0.2), (0.2, 0.4), (0.4, 0.6)]):
        delay = rng.uniform(low, high)
        journal = tmp_path / f"run{k}.jsonl"
        proc = start(tmp_path, "run", str(EXAMPLES / "chain.json"), "-b", "1", "-d", "60", "--speed", "1",
                     "--json", "--journal", str(journal))  # fmt: skip
        ready(proc)
        time.sleep(delay)
        proc.send_signal(sig)
        _, err = finish(proc, EXIT_BOUND_S)
        at = f"{name} {delay:.2f} s after ready"
        check("Traceback" not in err, f"{at}: a traceback ending {err.strip().splitlines()[-1:]}")
        check(proc.returncode in (128 + sig, -sig), f"{at}: exit status {proc.returncode}")
        if journal.exists():
            events, warned = journal_of(journal)
            kinds = [e["event"] for e in events]
            whole = kinds[:1] == ["run_started"] and kinds[-1:] == ["run_finished"] and not warned
            check(whole, f"{at}: a partial journal ({len(events)} events: {kinds[:1]}...{kinds[-1:]}, {warned})")
            if whole:
                check(events[-1]["reason"] == "interrupted", f"{at}: the journal ends {events[-1]['reason']!r}")
                check(runtime.replay_ledger(events).reserved_pusd == 0, f"{at}: money left reserved")
    check.verify()


# -- SIGKILL: nothing to act on, so the journal must already hold what matters ---------------------------------


@pytest.mark.parametrize("seed", [0, 1])
def test_sigkill_mid_run_leaves_a_journal_that_covers_the_bill_with_its_reservations(seed: int, tmp_path: Path) -> None:
    """Every reservation is on file before its request goes out, so what the server served for a killed run
    is within what the journal spent plus what it still held."""
    delay = random.Random(100 + seed).uniform(0.3, 2.0)
    journal = tmp_path / "run.jsonl"
    with served(tmp_path, tokens_per_s=10) as s:
        proc = start(tmp_path, "run", str(s.spec), "-b", "0.05", "-d", "60", "-p", "retry:mini:4", "--json",
                     "--journal", str(journal))  # fmt: skip
        wait_for(journal, "budget_reserved", proc)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        finish(proc, EXIT_BOUND_S)
        open_left = s.settle()
        bill = s.bill_pusd()
    check = Clauses()
    check(proc.returncode == -signal.SIGKILL, f"exit status {proc.returncode}")
    check(open_left == 0, f"{open_left} requests still open on the server after the client died")
    events, warned = journal_of(journal)
    check(set(warned) <= {"TornJournalWarning"}, f"reading the journal warned {warned}")
    kinds = [e["event"] for e in events]
    check(kinds[:1] == ["run_started"] and "run_finished" not in kinds, f"the journal holds {kinds[:1]}...{kinds[-1:]}")
    ledger = runtime.replay_ledger(events)
    held = ledger.spent_pusd + ledger.reserved_pusd
    check(held <= ledger.budget_pusd, f"spent + reserved {held} > budget {ledger.budget_pusd}")
    check(ledger.peak_committed_pusd <= ledger.budget_pusd, f"peak {ledger.peak_committed_pusd} > budget")
    check(bill <= held, f"the server billed {bill} pusd, the journal spent {ledger.spent_pusd} + held "
                        f"{ledger.reserved_pusd}")  # fmt: skip
    check.verify()


# -- faults: never past the budget, never past the deadline ---------------------------------------------------


@pytest.mark.parametrize(
    ("budget", "deadline", "planner", "seed"),
    [(0.0005, 2.0, "retry:mini:4", 0), (0.002, 2.5, "mcp", 2), (0.003, 2.0, "retry:mini:16", 4),
     (0.01, 3.0, "retry:haiku:8", 11)],
)  # fmt: skip
def test_faulted_runs_at_tiny_budgets_never_overspend_nor_work_past_the_deadline(
    budget: float, deadline: float, planner: str, seed: int, tmp_path: Path
) -> None:
    """30% of requests fail (429, 500, dropped and hung streams, malformed JSON); the models answer 20 times
    faster than the profiles say, so a run makes many attempts before its deadline."""
    journal = tmp_path / "run.jsonl"
    faults = Faults.every_kind(0.3, retry_after_s=0.05)
    with served(tmp_path, timeout_s=0.5, speed=20.0, faults=faults, seed=seed) as s:
        proc = start(tmp_path, "run", str(s.spec), "-b", str(budget), "-d", str(deadline), "-p", planner,
                     "--seed", str(seed), "--json", "--journal", str(journal))  # fmt: skip
        started = wait_for(journal, "run_started", proc)
        out, err = finish(proc, 60.0)
        ran = time.monotonic() - started
        open_left = s.settle()
        bill = s.bill_pusd()
    check = Clauses()
    check(proc.returncode in (0, 1) and "Traceback" not in err, f"exit status {proc.returncode}: {err[-600:]!r}")
    check(open_left == 0, f"{open_left} requests still open on the server")
    events, warned = journal_of(journal)
    check(warned == [], f"reading the journal warned {warned}")
    ledger, budget_pusd = runtime.replay_ledger(events), to_pusd(budget)
    cost = json.loads(out)["cost_pusd"] if proc.returncode in (0, 1) else None
    check(cost == ledger.spent_pusd == ledger.reported_spent_pusd,
          f"result {cost}, replay {ledger.spent_pusd}, run_finished {ledger.reported_spent_pusd} pusd")  # fmt: skip
    check(ledger.peak_committed_pusd <= budget_pusd, f"peak {ledger.peak_committed_pusd} > budget {budget_pusd}")
    check(ledger.reserved_pusd == 0, f"{ledger.reserved_pusd} pusd left reserved")
    check(bill <= ledger.spent_pusd, f"the server billed {bill} pusd, the journal spent {ledger.spent_pusd}")
    work = [e["t"] for e in events if e["event"] in ("batch_launched", "sample_finished", "budget_settled")]
    last_work = max(work, default=0.0)
    check(last_work <= deadline + 0.5, f"work at t={last_work:.2f} s, deadline {deadline} s")
    check(ran <= deadline + 5.0, f"the process exited {ran:.1f} s after its run started (deadline {deadline} s)")
    check.verify()
