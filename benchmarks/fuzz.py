"""Fuzz the ``ontime`` command line for a bounded time: mutated workflow specs and options, each case run as
``ontime validate | run | predict | eval`` in a subprocess with a timeout, and its outcome audited.

    python -m benchmarks.fuzz [--seconds 60] [--seed 0] [--workers N] [--timeout 60] [--cases N]
    python -m benchmarks.fuzz --seed 0 --case 17 --keep DIR      # replay one case, keep its files in DIR

Case i of seed s is built from ``random.Random(f"{s}:{i}")`` alone, so any case can be replayed. Specs are
the shipped examples on the built-in simulated backend, and ``codegen.json`` on a ``serve-sim`` server this
script starts on loopback (20% injected faults); every endpoint a mutated spec names is forced onto
loopback, and the children get a dead loopback proxy, no API keys and 2 GiB of address space. Outcomes:

    ok, run-failed (``run`` exit 1), refused (exit 2, one ``error:`` line), usage (exit 2 from the option
    parser's own usage box) are fine. traceback, hang (no exit within the timeout, or children left behind),
    overspend (spend above the budget in the result, journal, log, eval or predict), late (work past the
    deadline), journal (a journal that does not replay to the result, or an old one changed) and bad-exit
    (any other status or stderr) are bugs: the script exits 1 if any occurred.

Prints a table of counts per command and writes every bug's reproducer (argv, mutations, spec) to
benchmarks/results/fuzz.csv.
"""

from __future__ import annotations

import csv
import json
import math
import os
import random
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import yaml
from rich.table import Table

from adapters.sim_server import Faults, SimServer, serve_in_thread
from benchmarks._report import EXAMPLES, RESULTS, ROOT, console, machine, parser
from runtime import read_journal, replay_ledger
from runtime._spec import load_workflow
from runtime.types import OntimeError, to_pusd

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

__all__ = ["BAD", "FINE", "Case", "Outcome", "Report", "child_env", "make_case", "run", "run_case"]

FINE = ("ok", "run-failed", "refused", "usage")
BAD = ("traceback", "hang", "overspend", "late", "journal", "bad-exit")
COMMANDS = ("validate", "run", "predict", "eval")
MEMORY_LIMIT = 2 * 2**30  # bytes of address space per child: a spec that explodes fails, not the machine
WALL_SLACK_S = 20.0  # a real-clock run's process may outlive its deadline by this much (start-up, shutting down)
_LOOPBACK = {"127.0.0.1", "localhost", "::1"}
_DEAD = "http://127.0.0.1:9"  # where a child's non-loopback traffic would go: nothing listens there

# The child: cap its memory, then run the CLI as `python -m runtime.cli` would.
_BOOT = (
    "import resource, runpy, sys\n"
    "resource.setrlimit(resource.RLIMIT_AS, (int(sys.argv[1]), int(sys.argv[1])))\n"
    "sys.argv = ['ontime', *sys.argv[2:]]\n"
    "runpy.run_module('runtime.cli', run_name='__main__', alter_sys=True)\n"
)

WEIRD_NUMBERS: tuple[Any, ...] = (
    0, -1, -0.0, 0.5, 1.5, 5e-324, 1e-300, 2**31, 2**53 + 1, 2**63, 2**64, 10**30, 1e300, 1.7e308,
    math.nan, math.inf, -math.inf, True, False, None, "1", "", [], {}, "@@BIGINT:400@@", "@@BIGINT:5000@@",
)  # fmt: skip
WEIRD_STRINGS = (
    "", " ", "[/]", "[bold red]x[/]", "[link=http://x]y", ":smile:", "\x00", "\x1b[31mred", "\u202edir",
    "\ud800", "a\nb", "\t", "{{nope}}", "%s%n", "../../etc/passwd", "é" * 3, "☃" * 50, "x" * 100_000, "0",
)  # fmt: skip
WEIRD_PLANNERS = (
    "retry:m:0", "retry:m:1000000", "retry:small:-1", "retry:small:1.5", "retry:small:1:x", "retry::",
    "uniform:", "uniform:nope", "exact", "exact:k=0", "exact:k=1,99999", "best-retry", "best-uniform", "mcp:",
    "mcp:n=0", "mcp:n=1", "mcp:n=100001", "mcp:k=", "mcp:k=0", "mcp:k=1,4,100000", "mcp:models=nope",
    "mcp:seed=-1", "mcp:ms=-1", "mcp:z=nan", "mcp:top=0", "mcp:mixed=2", "mcp:n=1e9", "mcp:bogus=1", "[/]",
    ":smile:", "", "\x01", "mcp:n=8:n=9", "☃",
)  # fmt: skip
WEIRD_NUMBER_OPTIONS = (
    "0", "-1", "-0", "nan", "inf", "-inf", "1e300", "1e-300", "1e6", "1000001", "abc", "", "0x10", "1_000",
    " 1", "\u0661", "1e", "9" * 400, "1e-12", "+5",
)  # fmt: skip
SPEC_NAMES = (
    "spec.json", "sp[/]ec.json", "[bold]x.json", ":smile:.json", "spéc ☃.json", "a\nb.json", "-spec.json",
    "x" * 300 + ".json", "spec.JSON", "spec", "spec.yml",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Case:
    """One command line and the files it needs, rebuilt from ``(seed, index)`` alone."""

    seed: int
    index: int
    command: str
    args: tuple[str, ...]  # after ``ontime``; paths are relative to the case's folder
    files: tuple[tuple[str, bytes], ...]  # written before it runs (the spec, an old journal)
    dirs: tuple[str, ...]  # folders made before it runs
    mutations: tuple[str, ...]
    budget: float | None = None  # the options' numbers, where they parse, for the audit
    deadline: float | None = None
    speed: float | None = None  # the run's clock speed when it is on a real clock
    journal: str | None = None
    log: str | None = None
    json_out: bool = False

    @property
    def argv(self) -> str:
        return shlex.join(["ontime", *self.args])


@dataclass(frozen=True, slots=True)
class Outcome:
    case: Case
    verdict: str
    detail: str
    status: int | None
    wall_s: float


@dataclass(frozen=True, slots=True)
class Report:
    seed: int
    outcomes: tuple[Outcome, ...]
    wall_s: float

    def counts(self, command: str | None = None) -> dict[str, int]:
        """How many cases (of ``command``, or all) ended in each verdict, zeros included."""
        out = dict.fromkeys(FINE + BAD, 0)
        for o in self.outcomes:
            if command is None or o.case.command == command:
                out[o.verdict] += 1
        return out

    @property
    def failures(self) -> list[Outcome]:
        return sorted((o for o in self.outcomes if o.verdict in BAD), key=lambda o: o.case.index)


# -- building a case --------------------------------------------------------------------------------------


def _examples(url: str | None) -> dict[str, dict[str, Any]]:
    names = ["chain", "diamond", "mixed_diamond", "release20"] + (["codegen"] if url else [])
    return {n: json.loads((EXAMPLES / f"{n}.json").read_text()) for n in names}


def _paths(node: Any, at: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...], Any]]:
    yield at, node
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for k, v in items:
        yield from _paths(v, (*at, k))


def _set(root: Any, at: tuple[Any, ...], value: Any) -> None:
    for k in at[:-1]:
        root = root[k]
    root[at[-1]] = value


def _loopback(url: str | None, spec: Any) -> None:
    """Point every endpoint of the spec at the fuzzer's server, unless it names a loopback address already."""
    if not isinstance(spec, dict) or not isinstance(spec.get("models"), dict):
        return
    for m in spec["models"].values():
        if not isinstance(m, dict) or m.get("provider") not in ("openai", "anthropic"):
            continue
        base = m.get("base_url")
        if isinstance(base, str):
            try:
                host = urlsplit(base).hostname
            except ValueError:
                host = None
            if host in _LOOPBACK:
                continue
        elif base is not None:
            continue  # not a string: the spec is refused before any request
        server = url or _DEAD
        m["base_url"] = server + "/v1" if m["provider"] == "openai" else server


def _models(spec: Any) -> list[dict[str, Any]]:
    models = spec.get("models") if isinstance(spec, dict) else None
    return [m for m in models.values() if isinstance(m, dict)] if isinstance(models, dict) else []


def _subtasks(spec: Any) -> list[dict[str, Any]]:
    subtasks = spec.get("subtasks") if isinstance(spec, dict) else None
    return [s for s in subtasks if isinstance(s, dict)] if isinstance(subtasks, list) else []


def _mutate_tree(rng: random.Random, spec: dict[str, Any]) -> str:
    """Apply one structural mutation to ``spec`` in place; return what it did."""
    op = rng.choice(
        ["number", "number", "string", "rename", "drop", "extra", "deps", "nest", "scale", "provider", "verifier"]
    )
    nodes = list(_paths(spec))[1:]
    models, subtasks = _models(spec), _subtasks(spec)
    if op in ("number", "string"):
        leaf = int | float if op == "number" else str
        at, _ = rng.choice([(a, v) for a, v in nodes if isinstance(v, leaf)] or nodes)
        value = rng.choice(WEIRD_NUMBERS if op == "number" else WEIRD_STRINGS)
        _set(spec, at, value)
        return f"{op} {at}={str(value)[:20]!r}"
    if op == "rename" and models and subtasks:  # consistently: the spec stays valid, only a name is odd
        new = rng.choice([s for s in WEIRD_STRINGS if 0 < len(s) < 1000]) + rng.choice(["", "2"])
        if rng.random() < 0.5:
            old = rng.choice(list(spec["models"]))
            spec["models"] = {new if k == old else k: v for k, v in spec["models"].items()}
            for s in subtasks:
                if isinstance(s.get("profiles"), dict):
                    s["profiles"] = {new if k == old else k: v for k, v in s["profiles"].items()}
            return f"rename model {old!r} -> {new[:20]!r}"
        old = rng.choice(subtasks).get("id")
        for s in subtasks:
            s["id"] = new if s.get("id") == old else s.get("id")
            if isinstance(s.get("deps"), list):
                s["deps"] = [new if d == old else d for d in s["deps"]]
        if rng.random() < 0.5:
            spec["name"] = new
        return f"rename subtask {old!r} (and maybe the workflow) -> {new[:20]!r}"
    if op == "drop" or op == "extra":
        at, d = rng.choice([(a, v) for a, v in [((), spec), *nodes] if isinstance(v, dict) and v])
        if op == "drop":
            key = rng.choice(list(d))
            del d[key]
            return f"drop {(*at, key)}"
        key = rng.choice(["zzz", "p", "deps", "models", "", "[/]", "samples", "fixed", "mean"])
        d[key] = rng.choice([1, "x", None, [], {}])
        return f"extra {(*at, key)}={d[key]!r}"
    if op == "deps" and subtasks:
        s = rng.choice(subtasks)
        kind = rng.choice(["self", "cycle", "unknown", "duplicate", "chain"])
        if kind == "self":
            s["deps"] = [s.get("id")]
        elif kind == "cycle":
            subtasks[0]["deps"] = [subtasks[-1].get("id")]
        elif kind == "unknown":
            s["deps"] = ["nope"]
        elif kind == "duplicate":
            spec["subtasks"].append(json.loads(json.dumps(s)))
        else:  # a long chain of copies of one subtask: valid, and bigger
            n = rng.choice([30, 100, 300])
            spec["subtasks"] = [s | {"id": f"c{i}", "deps": [f"c{i - 1}"] if i else []} for i in range(n)]
            kind = f"chain of {n}"
        return f"deps {kind}"
    if op == "nest":
        at, _ = rng.choice(nodes)
        depth = rng.choice([50, 1000, 100_000])
        _set(spec, at, f"@@NEST:{depth}@@")
        return f"nest {at} depth {depth}"
    if op == "scale" and models:  # valid but extreme numbers
        key, value = rng.choice(
            [
                ("tokens_per_s", 0.001), ("tokens_per_s", 1e9), ("ttft_s", 1e7), ("ttft_s", 0),
                ("max_output_tokens", 1), ("max_output_tokens", 10**8), ("input_price_per_mtok", 10**4),
                ("output_price_per_mtok", 0), ("output_price_per_mtok", 10**4),
            ]
        )  # fmt: skip
        for m in models:
            m[key] = value
        return f"scale every model's {key}={value!r}"
    if op == "provider" and models:
        m = rng.choice(models)
        m["provider"] = rng.choice(["openai", "anthropic", "OpenAI", "", "sim"])
        if rng.random() < 0.5:
            m["base_url"] = rng.choice(["http://127.0.0.1:1", "not a url", "http://[::1", "ftp://127.0.0.1/"])
        if rng.random() < 0.5:
            m["api_key"] = rng.choice(["k", "k\nx", "", "\u2603"])
        return f"provider {m['provider']!r} base_url {m.get('base_url')!r} api_key {m.get('api_key')!r}"
    if op == "verifier" and subtasks:
        s = rng.choice(subtasks)
        kind = rng.choice(["regex", "python_tests", "json_schema", "exact", "judge"])
        s["verifier"] = {
            "regex": {"regex": "^(a+)+$"},
            "python_tests": {
                "python_tests": "import time\ntime.sleep(1000)\n",
                "timeout_s": rng.choice([0.01, 5, 1e7]),
            },
            "json_schema": {"json_schema": {"type": "object", "properties": {"a": {"pattern": "^(a+)+$"}}}},
            "exact": {"exact": ""},
            "judge": {"judge": rng.choice(list(spec["models"])), "rubric": "[/]"},
        }[kind]
        s["reference"] = rng.choice(["a" * 29 + "!", '{"a": "' + "a" * 29 + '!"}', "", "x" * 100_000])
        return f"verifier {kind} on {s.get('id')!r}, reference {s['reference'][:20]!r}"
    return f"{op}: nothing to mutate"


_MARKER = re.compile(r"""["']@@(NEST|BIGINT):(\d+)@@["']""")


def _unmark(m: re.Match[str]) -> str:
    """Text json cannot write: deep nesting, integers of hundreds of digits."""
    n = int(m.group(2))
    return "[" * n + "]" * n if m.group(1) == "NEST" else "9" * n


def _encode(rng: random.Random, spec: Any, yaml_file: bool, odd: bool) -> tuple[bytes, list[str]]:
    """The spec as a file's bytes; ``odd``: a hostile YAML document or damaged bytes."""
    if yaml_file and odd and rng.random() < 0.5:
        kind = rng.choice(["bomb", "tag", "scalar"])
        if kind == "bomb":  # nine levels of nine aliases: 387 million strings when expanded
            lines = ['l0: &l0 ["x", "x", "x", "x", "x", "x", "x", "x", "x"]']
            lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, 9)]
            text = "\n".join([*lines, "models: *l8", "subtasks: *l8", ""])
        else:
            text = "!!python/object/apply:os.system ['true']\n" if kind == "tag" else "just a string\n"
        return text.encode(), [f"yaml {kind}"]
    done = ["yaml"] if yaml_file else []
    try:
        text = yaml.safe_dump(spec, allow_unicode=True, width=10**9) if yaml_file else ""
    except yaml.YAMLError:  # what YAML cannot write (a lone surrogate) goes out as JSON
        text = ""
    text = _MARKER.sub(_unmark, text or json.dumps(spec, ensure_ascii=rng.random() < 0.5))
    data = text.encode("utf-8", errors="surrogatepass")
    if odd and not yaml_file:
        kind = rng.choice(["invalid-utf8", "truncate", "bom", "nul", "empty", "surrogate-bytes"])
        done.append(f"bytes {kind}")
        cut = rng.randrange(len(data) + 1)
        data = {
            "invalid-utf8": data[:cut] + b"\xff\xc3\x28" + data[cut:],
            "truncate": data[:cut],
            "bom": b"\xef\xbb\xbf" + data,
            "nul": data[:cut] + b"\x00" + data[cut:],
            "empty": b"",
            "surrogate-bytes": data[:cut] + b"\xed\xa0\x80" + data[cut:],
        }[kind]
    return data, done


def _as_float(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


# What a hostile case may get wrong; it gets one to three of them, so most bugs show on an otherwise sane command.
ODDITIES = (
    "spec", "spec", "spec", "encoding", "yaml", "name", "path", "budget", "deadline", "missing", "planner", "seed",
    "option", "speed", "journal", "log", "log", "runs", "workers", "precision",
)  # fmt: skip


def make_case(seed: int, index: int, url: str | None) -> Case:
    """Case ``index`` of ``seed``, with ``url`` the fuzzer's serve-sim. Two cases in five are clean (a shipped
    spec, sane options: what the audits of spend, time and journal need); the rest are hostile."""
    rng = random.Random(f"{seed}:{index}")
    chosen = set(rng.sample(ODDITIES, rng.choice([1, 1, 2, 3]))) if rng.random() < 0.6 else set()

    def odd(kind: str) -> bool:
        return kind in chosen

    def number(kind: str, low: float, high: float) -> str:
        if odd(kind):
            return rng.choice(WEIRD_NUMBER_OPTIONS)
        return f"{math.exp(rng.uniform(math.log(low), math.log(high))):.6g}"

    examples = _examples(url)
    base = rng.choice(list(examples))
    spec: Any = examples[base]
    mutations = [f"base {base}"]
    for _ in range(rng.choice([1, 1, 2, 3]) if odd("spec") else 0):
        mutations.append(_mutate_tree(rng, spec))
    _loopback(url, spec)
    endpoints = any(m.get("provider") != "sim" for m in _models(spec))
    name = rng.choice(SPEC_NAMES) if odd("name") else "spec.yaml" if odd("yaml") else "spec.json"
    data, how = _encode(rng, spec, name.endswith((".yml", ".yaml")), odd("encoding") or odd("yaml"))
    mutations += how
    files: list[tuple[str, bytes]] = []
    dirs: list[str] = []
    spec_path = name
    if len(name.encode()) > 255:  # no file system holds the name: the command must say so
        pass
    elif odd("path") and rng.random() < 0.6:
        spec_path = "missing/dir/" + name
    elif odd("path"):
        dirs.append(name)  # the spec path is a folder
    else:
        files.append((name, data))
    if spec_path != name or not files:
        mutations.append(f"spec path {spec_path!r} ({'a folder' if dirs else 'no file'})")

    command = rng.choices(COMMANDS, weights=[15, 60, 12, 13])[0]
    args: list[str] = [command, spec_path]
    if command == "validate":
        return Case(seed, index, command, tuple(args), tuple(files), tuple(dirs), tuple(mutations))
    if endpoints:  # real time: keep the run short
        budget, deadline = number("budget", 1e-4, 0.1), number("deadline", 0.3, 4.0)
    else:
        budget, deadline = number("budget", 1e-5, 20.0), number("deadline", 1.0, 3000.0)
    missing = rng.choice(["--budget", "--deadline"]) if odd("missing") else None
    for flag, value in (("--budget", budget), ("--deadline", deadline)):
        if flag != missing:
            args += [flag, value]
    if odd("planner"):
        args += ["--planner", rng.choice(WEIRD_PLANNERS)]
    elif rng.random() < 0.6:
        m = rng.choice([str(k) for k in spec["models"]] if _models(spec) else ["small"])
        args += ["--planner", rng.choice([f"retry:{m}:{rng.choice([1, 2, 4, 16, 64])}", f"uniform:{m}", "best-retry"])]
    if odd("seed"):
        args += ["--seed", rng.choice(["-1", str(2**62), str(2**64), "x"])]
    elif rng.random() < 0.5:
        args += ["--seed", str(rng.randrange(4))]
    json_out = rng.random() < 0.7
    if json_out:
        args.append("--json")
    if rng.random() < 0.15:
        args.append("--rounds")
    if odd("option"):
        args.append(rng.choice(["--no-such-option", "--json=2", "--", "-x"]))
    b, d = _as_float(budget), _as_float(deadline)
    journal = log = None
    speed = 1.0 if endpoints else None
    if command == "run":
        if rng.random() < 0.15:
            args.append("--keep-siblings")
        if odd("speed") or (not endpoints and rng.random() < 0.15):
            if odd("speed") or d is None or not 0 < d < math.inf:
                speed_text = rng.choice(["0", "-1", "nan", "inf", "1e300", "x", "1e-300"])
            else:  # fast enough that the whole run takes at most two seconds of wall time
                speed_text = f"{d / rng.uniform(0.3, 2.0):.6g}"
            args += ["--speed", speed_text]
            speed = _as_float(speed_text)
        journal = "run.jsonl" if rng.random() < 0.8 else None
        if odd("journal"):
            journal, made = rng.choice(
                [("old.jsonl", ""), ("missing/run.jsonl", ""), ("j[/]ournal.jsonl", "j["), ("jdir", "jdir")]
            )
            if journal == "old.jsonl":
                files.append((journal, b'{"event": "run_started", "t": 0.0}\n'))
            if made:
                dirs.append(made)
        if journal is not None:
            args += ["--journal", journal]
        if odd("log") or rng.random() < 0.2:
            log = rng.choice(["missing/run.log", "/dev/full", "."]) if odd("log") else rng.choice(["run.log", "-"])
            args += ["--log", log]
    else:
        runs = rng.choice(["1", "2", "3", "4"] if command == "eval" else ["1", "5", "20"])
        if odd("runs"):
            runs = rng.choice(["0", "-1", "100000000", "x"])
        args += ["--runs", runs, "--workers", "0" if odd("workers") else rng.choice(["1", "2"])]
        if command == "predict" and (odd("precision") or rng.random() < 0.2):
            args += ["--precision", rng.choice(["0", "1", "nan", "-0.5"]) if odd("precision") else "0.1"]
    args = [a.replace("\x00", "\\x00") for a in args]  # no command line can hold a NUL (a model named "\x00")
    return Case(seed, index, command, tuple(args), tuple(files), tuple(dirs), tuple(mutations), budget=b,
                deadline=d, speed=speed, journal=journal, log=log, json_out=json_out)  # fmt: skip


# -- running and judging a case ---------------------------------------------------------------------------


def child_env(tmp: Path) -> dict[str, str]:
    """The environment of a fuzzed (or killed) ``ontime``: this checkout first on the path, no API keys,
    and every connection outside loopback sent to a dead loopback proxy."""
    env = {k: v for k, v in os.environ.items() if not k.upper().endswith(("_API_KEY", "_TOKEN", "_SECRET"))}
    path = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    for proxy in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        env[proxy] = env[proxy.lower()] = _DEAD
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost,::1"
    return env | {"PYTHONPATH": path, "ONTIME_CACHE_DIR": str(tmp / "cache"), "COLUMNS": "120"}


def run_case(case: Case, folder: Path, env: dict[str, str], timeout: float) -> Outcome:
    """Run one case in ``folder`` (made fresh) and judge it."""
    folder.mkdir(parents=True)
    for d in case.dirs:
        (folder / d).mkdir(parents=True, exist_ok=True)
    for name, data in case.files:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)  # a name may hold a slash: "sp[/]ec.json"
        (folder / name).write_bytes(data)
    old = {name: data for name, data in case.files if name == case.journal}
    argv = [sys.executable, "-c", _BOOT, str(MEMORY_LIMIT), *case.args]
    start = time.monotonic()
    proc = subprocess.Popen(argv, cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)  # fmt: skip
    try:
        raw_out, raw_err = proc.communicate(timeout=timeout)
        hung = False
    except subprocess.TimeoutExpired:
        _kill_group(proc.pid, grace=0.0)
        raw_out, raw_err = proc.communicate()
        hung = True
    wall = time.monotonic() - start
    left = _kill_group(proc.pid, grace=2.0)  # anything of the run still alive once it exited
    out, err = raw_out.decode("utf-8", "replace"), raw_err.decode("utf-8", "replace")
    problems = _judge(case, folder, proc.returncode, out, err, old)
    if case.command == "run" and case.speed and case.deadline and proc.returncode in (0, 1):  # it ran on a real clock
        wall_deadline = case.deadline / case.speed
        if wall > wall_deadline + WALL_SLACK_S:
            problems.append(("late", f"the process ran {wall:.1f} s for a deadline of {wall_deadline:.1f} s"))
    if hung:
        problems.insert(0, ("hang", f"no exit within {timeout:g} s"))
    elif left:
        problems.insert(0, ("hang", "exited with processes of its own still running"))
    bad = sorted(problems, key=lambda p: BAD.index(p[0]))
    if bad:
        verdict, detail = bad[0][0], "; ".join(f"{k}: {d}" for k, d in bad)
    else:
        verdict = _fine(case, proc.returncode, err)
        detail = "" if verdict == "ok" else next((line for line in err.splitlines() if "rror" in line), "")
    return Outcome(case, verdict, detail[:500], proc.returncode, round(wall, 2))


def _kill_group(pid: int, grace: float) -> bool:
    """Kill what is left of a child's process group after ``grace`` seconds; say whether anything was."""
    end = time.monotonic() + grace
    while True:
        try:
            os.killpg(pid, 0)
        except (ProcessLookupError, PermissionError):
            return False
        if time.monotonic() >= end:
            break
        time.sleep(0.05)
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    return True


def _fine(case: Case, status: int, err: str) -> str:
    if status == 0:
        return "ok"
    if status == 1:
        return "run-failed"
    return "usage" if _parser_error(err) else "refused"


def _parser_error(err: str) -> bool:
    """The option parser's own report (click's usage line or its boxed error), not one of ontime's."""
    return "Usage:" in err or "─ Error ─" in err


def _judge(case: Case, folder: Path, status: int, out: str, err: str, old: dict[str, bytes]) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    for text in (out, err):
        for marker in ("Traceback (most recent call last)", "Exception ignored in"):
            if marker in text:
                tail = text[text.index(marker) :].strip().splitlines()
                problems.append(("traceback", tail[-1][:300] if tail else marker))
    lines = [line for line in err.splitlines() if line.strip()]
    if status == 2 and not _parser_error(err):
        if len(lines) != 1 or not lines[0].startswith("error: "):
            problems.append(("bad-exit", f"exit 2 with {len(lines)} stderr lines: {err[:200]!r}"))
    elif status == 1 and case.command != "run":
        problems.append(("bad-exit", f"{case.command} exit 1: {err[-200:]!r}"))
    elif status not in (0, 1, 2):
        problems.append(("bad-exit", f"exit status {status}: {err[-200:]!r}"))
    for name, data in old.items():
        if (folder / name).read_bytes() != data:
            problems.append(("journal", f"the existing journal {name!r} was changed"))
    if status in (0, 1) and case.json_out and case.command != "validate":
        problems += _audit_json(case, out)
    if case.command == "run" and status in (0, 1):
        for path in (case.journal, case.log):
            if path is not None and path not in old and path not in ("-", "/dev/full"):
                problems += _audit_events(case, folder / path, is_journal=path == case.journal)
    return problems


def _slack(case: Case) -> float:
    """How far past the deadline (in run seconds) an event may be stamped: none beyond rounding in virtual time,
    a second of wall time on a real clock."""
    if case.speed is None:
        return 1e-6 * (case.deadline or 0) + 1e-3
    return 1.0 * case.speed + 0.5


def _audit_json(case: Case, out: str) -> list[tuple[str, str]]:
    try:
        d = json.loads(out)
    except ValueError:
        return [("bad-exit", f"--json printed no JSON: {out[:200]!r}")]
    if not isinstance(d, dict) or case.budget is None or case.deadline is None:
        return []
    budget, late = to_pusd(case.budget), case.deadline + _slack(case)
    if case.command == "run":
        problems = []
        if d["cost_pusd"] > budget:
            problems.append(("overspend", f"cost {d['cost_pusd']} pusd > budget {budget}"))
        if d["elapsed"] > late:
            problems.append(("late", f"elapsed {d['elapsed']} > deadline {case.deadline}"))
        return problems
    if case.command == "eval":
        problems = [(k, f"{d[f]} {f}") for k, f in (("overspend", "overspend_runs"), ("late", "late_runs")) if d[f]]
        if d["max_cost"] > case.budget * (1 + 1e-9):
            problems.append(("overspend", f"max_cost {d['max_cost']} > budget {case.budget}"))
        return problems
    problems = []
    if d["expected_cost"] > case.budget * (1 + 1e-9):
        problems.append(("overspend", f"expected_cost {d['expected_cost']} > budget {case.budget}"))
    if d["expected_elapsed"] > late:
        problems.append(("late", f"expected_elapsed {d['expected_elapsed']} > deadline {case.deadline}"))
    return problems


def _audit_events(case: Case, path: Path, *, is_journal: bool) -> list[tuple[str, str]]:
    """Replay a journal (or a JSON-lines log) of a run that exited by itself: it must end settled, within budget
    and deadline."""
    if not path.is_file():
        return [("journal", f"{path.name}: no file after the run")] if is_journal else []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            events = read_journal(path)
        except OntimeError as exc:
            return [("journal", f"{path.name}: {exc}")]
    if caught or not events:
        return [("journal", f"{path.name}: torn or empty after a normal exit")] if is_journal else []
    ledger = replay_ledger(events)
    problems: list[tuple[str, str]] = []
    if max(ledger.spent_pusd, ledger.peak_committed_pusd) > ledger.budget_pusd:
        spent = f"spent {ledger.spent_pusd}, peak {ledger.peak_committed_pusd}"
        problems.append(("overspend", f"{path.name}: {spent} > budget {ledger.budget_pusd} pusd"))
    last = events[-1].get("event")
    if last != "run_finished" or ledger.reserved_pusd or ledger.reported_spent_pusd != ledger.spent_pusd:
        held = f"{ledger.reserved_pusd} pusd still reserved"
        said = f"reported {ledger.reported_spent_pusd} vs replayed {ledger.spent_pusd}"
        problems.append(("journal", f"{path.name}: last event {last}, {held}, {said}"))
    limit = ledger.deadline_s + _slack(case)
    work = [e["t"] for e in events if e.get("event") in ("batch_launched", "sample_finished", "budget_settled")]
    if work and max(work) > limit:
        problems.append(("late", f"{path.name}: work at t={max(work):.3f} after the deadline {ledger.deadline_s:g}"))
    return problems


# -- the run ----------------------------------------------------------------------------------------------


@contextmanager
def _server(seed: int) -> Iterator[str]:
    """serve-sim on loopback for the endpoint specs: codegen's profiles 20 times faster, 20% faults."""
    wf = load_workflow(EXAMPLES / "codegen.json")
    srv = SimServer(wf, seed=seed, speed=20.0, faults=Faults.every_kind(0.2, retry_after_s=0.05))
    with serve_in_thread(srv) as url:
        yield url


def _warm_up(env: dict[str, str], folder: Path) -> None:
    """Compile the planners' numba kernels into their cache once, so the first cases do not time out on it."""
    argv = [sys.executable, "-m", "runtime.cli", "predict", str(EXAMPLES / "chain.json"), "-b", "0.05", "-d", "60",
            "--runs", "2", "--workers", "1"]  # fmt: skip
    subprocess.run(argv, cwd=folder, env=env, capture_output=True, timeout=600, check=False)


def run(
    seconds: float,
    seed: int,
    *,
    max_cases: int | None = None,
    workers: int | None = None,
    timeout: float = 60.0,
    keep: Path | None = None,
    on_outcome: Callable[[Outcome], None] | None = None,
) -> Report:
    """Run cases 0, 1, 2, ... of ``seed`` in ``workers`` parallel subprocesses until ``seconds`` have passed (or
    ``max_cases`` are done); each case is killed after ``timeout`` seconds."""
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="ontime-fuzz-") as tmp, _server(seed) as url:
        root = keep or Path(tmp)
        env = child_env(Path(tmp))
        _warm_up(env, Path(tmp))
        stop = time.monotonic() + seconds
        outcomes: list[Outcome] = []
        errors: list[BaseException] = []
        lock = threading.Lock()
        counter = iter(range(max_cases if max_cases is not None else sys.maxsize))

        def worker() -> None:
            while time.monotonic() < stop and not errors:
                with lock:
                    index = next(counter, None)
                if index is None:
                    return
                try:
                    outcome = run_case(make_case(seed, index, url), root / f"case-{seed}-{index}", env, timeout)
                except BaseException as exc:  # a bug of the fuzzer's own: stop every worker and raise it
                    errors.append(exc)
                    return
                with lock:
                    outcomes.append(outcome)
                    if on_outcome is not None:
                        on_outcome(outcome)

        threads = [threading.Thread(target=worker) for _ in range(workers or os.cpu_count() or 1)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise errors[0]
    ordered = tuple(sorted(outcomes, key=lambda o: o.case.index))
    return Report(seed=seed, outcomes=ordered, wall_s=time.monotonic() - start)


def replay(seed: int, index: int, keep: Path, timeout: float) -> Outcome:
    """Run one case again, its files left in ``keep``."""
    with tempfile.TemporaryDirectory(prefix="ontime-fuzz-") as tmp, _server(seed) as url:
        case = make_case(seed, index, url)
        return run_case(case, keep / f"case-{seed}-{index}", child_env(Path(tmp)), timeout)


def counts_table(report: Report) -> Table:
    table = Table(title=f"ontime fuzz: seed {report.seed}, {len(report.outcomes)} cases in {report.wall_s:.0f} s")
    table.add_column("outcome")
    for command in (*COMMANDS, "all"):
        table.add_column(command, justify="right")
    per = {c: report.counts(c) for c in COMMANDS} | {"all": report.counts()}
    for verdict in FINE + BAD:
        style = "red" if verdict in BAD and per["all"][verdict] else None
        table.add_row(verdict + (" (bug)" if verdict in BAD else ""), *(str(per[c][verdict]) for c in per), style=style)
    return table


def write_failures(report: Report, path: Path) -> Path:
    """One row per bug: enough to run it again (argv, the spec as written, or ``--case`` to rebuild it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fields = ["seed", "case", "verdict", "exit", "wall_s", "argv", "mutations", "detail", "spec", "replay"]
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        for o in report.failures:
            spec = dict(o.case.files).get(o.case.args[1], b"")
            text = spec.decode("utf-8", "backslashreplace").replace("\x00", "\\x00")
            w.writerow(
                {
                    "seed": o.case.seed,
                    "case": o.case.index,
                    "verdict": o.verdict,
                    "exit": o.status,
                    "wall_s": o.wall_s,
                    "argv": o.case.argv,
                    "mutations": " | ".join(o.case.mutations),
                    "detail": o.detail,
                    "spec": text if len(text) <= 4000 else f"{text[:4000]}... ({len(spec)} bytes; replay to see it)",
                    "replay": f"python -m benchmarks.fuzz --seed {o.case.seed} --case {o.case.index} --keep DIR",
                }
            )
    return path


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cases", type=int, default=None, help="stop after this many cases")
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds before a case counts as a hang")
    ap.add_argument("--case", type=int, default=None, help="replay this one case")
    ap.add_argument("--keep", type=Path, default=None, help="keep the cases' files in this folder")
    ap.add_argument("--out", type=Path, default=RESULTS / "fuzz.csv")
    args = ap.parse_args()
    if args.case is not None:
        keep = args.keep or Path(tempfile.mkdtemp(prefix="ontime-fuzz-case-"))
        o = replay(args.seed, args.case, keep, args.timeout)
        console.print(f"{o.case.argv}\n  in {keep / f'case-{args.seed}-{args.case}'}", markup=False)
        console.print(f"  mutations: {' | '.join(o.case.mutations)}", markup=False)
        console.print(f"  -> {o.verdict} (exit {o.status}, {o.wall_s} s) {o.detail}", markup=False)
        raise SystemExit(1 if o.verdict in BAD else 0)

    def show(o: Outcome) -> None:
        if o.verdict in BAD:
            console.print(f"case {o.case.index}: {o.verdict}: {o.case.argv[:300]}: {o.detail[:300]}", markup=False)

    report = run(args.seconds, args.seed, max_cases=args.cases, workers=args.workers, timeout=args.timeout,
                 keep=args.keep, on_outcome=show)  # fmt: skip
    console.print(counts_table(report))
    console.print(machine())
    console.print(f"wrote {write_failures(report, args.out)}")
    raise SystemExit(1 if report.failures else 0)


if __name__ == "__main__":
    main()
