"""The code sandbox: results in BayesFlow's exec_code shape, and containment of what model-written code does
wrong (each test would pass the program if the guard were missing). Containment tests run in both isolation
modes: bubblewrap (skipped where it does not work) and the audit hook alone."""

from __future__ import annotations

import os
import socket
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import pytest

import runtime
from tools import sandbox
from tools.sandbox import Limits, arun_tests, run_tests

if TYPE_CHECKING:
    from collections.abc import Iterator

    from tools.sandbox import Isolation

FAST = Limits(wall_s=5, cpu_s=1, memory_mb=256, file_mb=1)
_NO_BWRAP = sandbox._bwrap_problem()
MODES = [
    pytest.param("bubblewrap", marks=pytest.mark.skipif(_NO_BWRAP is not None, reason=str(_NO_BWRAP))),
    "audit-hook",
]


@pytest.fixture(params=MODES)
def isolated(request: pytest.FixtureRequest) -> Limits:
    """``FAST`` limits in each isolation mode."""
    mode: Isolation = request.param
    return replace(FAST, isolation=mode)


def test_passing_program() -> None:
    r = run_tests("def inc(x):\n    return x + 1\n", "assert inc(1) == 2\n", limits=FAST)
    assert r.passed and r.exec_fail is None and r.to_exec_code() == "no error"


def test_failing_assertion_is_reported_with_its_line_and_traceback() -> None:
    r = run_tests("def inc(x):\n    return x\n", ["assert inc(0) == 0\n", "assert inc(1) == 2, 'off by one'\n"])
    assert not r.passed and r.exec_fail is None
    cases = r.to_exec_code()
    assert isinstance(cases, list)
    [case] = cases
    assert case["test_case"] == "assert inc(1) == 2, 'off by one'"
    assert (case["error_type"], case["error_message"]) == ("AssertionError", "off by one")
    assert any("<program>" in line for line in case["traceback"])


def test_unittest_cases_run_and_each_failure_is_listed() -> None:
    tests = """
import unittest
class T(unittest.TestCase):
    def test_ok(self):
        self.assertEqual(inc(1), 1)
    def test_bad(self):
        self.assertEqual(inc(1), 2)
    def test_error(self):
        inc(None) + 1
"""
    r = run_tests("def inc(x):\n    return x\n", tests, limits=FAST)
    assert not r.passed and r.tests_run == 3
    assert sorted((f.test_case.split(": ")[0].rsplit(".", 1)[1], f.error_type) for f in r.failures) == [
        ("test_bad", "AssertionError"),
        ("test_error", "TypeError"),
    ]


_WRONG, _RIGHT = "def add(a, b):\n    return a - b\n", "def add(a, b):\n    return a + b\n"
_UNITTEST = "import unittest\nclass T(unittest.TestCase):\n    def test_add(self):\n"


@pytest.mark.parametrize(
    ("wrong", "tests"),
    [
        (
            _WRONG,
            _UNITTEST + "        for a in (1, 2):\n            with self.subTest(a=a):\n"
            "                self.assertEqual(add(a, 1), a + 1)\n",
        ),
        (_WRONG, "def test_add():\n    assert add(1, 2) == 3\n"),  # pytest's plain style
        ("import unittest\ndef add(a, b):\n    raise unittest.SkipTest('later')\n", _UNITTEST + "        add(1, 2)\n"),
        (
            _WRONG,
            _UNITTEST.replace("    def", "    @unittest.expectedFailure\n    def") + "        assert add(1, 2) == -1\n",
        ),
        (_WRONG, "if __name__ == '__main__':\n    assert add(1, 2) == 3\n"),
        (_WRONG, _UNITTEST + "        assert add(1, 2) == 3\nif __name__ == '__main__':\n    unittest.main()\n"),
    ],
    ids=["subtest", "pytest-style", "skip", "unexpected-success", "main-guard", "unittest-main"],
)
def test_wrong_code_fails_however_the_tests_are_written(wrong: str, tests: str) -> None:
    """Issue 16: each of these passed ``a - b`` for ``add`` (failing subtests, skips and unexpected successes
    did not count; plain test functions and __main__ blocks never ran). The right code still passes."""
    assert not run_tests(wrong, tests, limits=FAST).passed
    right = run_tests(_RIGHT, tests, limits=FAST)
    assert right.passed, right


def test_a_program_that_checks_nothing_does_not_pass() -> None:
    r = run_tests(_RIGHT, "x = add(1, 2)\n", limits=FAST)
    assert not r.passed and r.exec_fail is not None and r.exec_fail.startswith("no test ran")


def test_syntax_and_runtime_errors_are_exec_failures() -> None:
    failed = run_tests("def f(x)\n    return x\n", limits=FAST).to_exec_code()
    assert isinstance(failed, dict) and "SyntaxError" in failed["exec_fail_case"]
    r = run_tests("1 / 0\n", "assert True\n", limits=FAST)
    assert not r.passed and r.exec_fail == "ZeroDivisionError: division by zero"


def test_infinite_loop_is_stopped_by_the_cpu_limit() -> None:
    r = run_tests("while True:\n    pass\n", limits=FAST)
    assert not r.passed and "CPU limit" in (r.exec_fail or "")


def test_sleeping_forever_is_stopped_by_the_wall_clock() -> None:
    r = run_tests("import time\ntime.sleep(60)\n", limits=Limits(wall_s=1, cpu_s=1))
    assert not r.passed and "timed out" in (r.exec_fail or "") and r.duration_s < 10


# _posixsubprocess.fork_exec in Python 3.11: ``sleep`` in a new session, as issue 16's reproduction did.
_FORK_EXEC = (
    "{fork_exec}([b'/usr/bin/sleep', b'{seconds}'], [b'/usr/bin/sleep'], True, (), None, None, -1, -1, -1, -1, -1, -1,"
    " r, w, True, True, -1, None, None, None, -1, None, False)\n"
)
_DIRECT_FORK_EXEC = "import _posixsubprocess, os\nr, w = os.pipe()\n" + _FORK_EXEC.format(
    fork_exec="_posixsubprocess.fork_exec", seconds=60
)


@pytest.mark.parametrize(
    "code",
    [
        "import os\nwhile True:\n    os.fork()\n",
        "import subprocess\nsubprocess.run(['true'])\n",
        "import os\nos.system('true')\n",
        "import multiprocessing\nmultiprocessing.Process(target=print).start()\n",
        # issue 16: spawn and forkserver start a fresh interpreter (no audit hook) through _posixsubprocess
        "import multiprocessing, os\nctx = multiprocessing.get_context('spawn')\n"
        "p = ctx.Process(target=os.system, args=('touch /tmp/ontime-escaped',))\np.start()\np.join()\n",
        "import multiprocessing\nmultiprocessing.get_context('forkserver').Process(target=print).start()\n",
        _DIRECT_FORK_EXEC,
        "import sys, _posixsubprocess\ndel sys.modules['_posixsubprocess']\n" + _DIRECT_FORK_EXEC,
    ],
    ids=["fork-bomb", "subprocess", "system", "multiprocessing", "spawn", "forkserver", "fork_exec", "re-import"],
)
def test_no_new_processes(code: str, isolated: Limits) -> None:
    r = run_tests(code, "assert True\n", limits=isolated)
    assert r.isolation == isolated.isolation
    assert not r.passed and "not allowed" in (r.exec_fail or ""), r.exec_fail


@pytest.mark.parametrize("code", ["x = bytearray(2 * 1024**3)\n", "x = []\nwhile True:\n    x.append(' ' * 10**6)\n"])
def test_memory_hog_hits_the_memory_limit(code: str) -> None:
    r = run_tests(code, limits=FAST)
    assert not r.passed and "MemoryError" in (r.exec_fail or "")


def test_huge_file_write_hits_the_file_size_limit() -> None:
    r = run_tests("with open('big', 'wb') as f:\n    while True:\n        f.write(b'x' * 65536)\n", limits=FAST)
    assert not r.passed and "File too large" in (r.exec_fail or "")


def test_no_network_even_to_loopback(isolated: Limits) -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        server.settimeout(0.5)
        port = server.getsockname()[1]
        for code in (
            f"import socket\nsocket.create_connection(('127.0.0.1', {port}))\n",
            f"import socket\ns = socket.socket()\ns.connect(('127.0.0.1', {port}))\n",
            f"import urllib.request\nurllib.request.urlopen('http://127.0.0.1:{port}/')\n",
        ):
            r = run_tests(code, "assert True\n", limits=isolated)
            assert not r.passed and "not allowed" in (r.exec_fail or ""), r.exec_fail
        with pytest.raises(TimeoutError):
            server.accept()  # nothing ever connected


def test_files_outside_the_working_directory_are_out_of_reach(tmp_path: Path, isolated: Limits) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("hunter2")
    for code in (
        f"print(open({str(secret)!r}).read())\n",
        "print(open('/etc/passwd').read())\n",
        "print(open('../secret.txt').read())\n",
        "import os\nprint(os.listdir('/'))\n",
        f"import os\nos.remove({str(secret)!r})\n",
        "open('/tmp/escaped.txt', 'w').write('x')\n",
    ):
        r = run_tests(code, "assert True\n", limits=isolated)
        assert not r.passed and "outside the working directory" in (r.exec_fail or ""), (code, r.exec_fail)
        assert "hunter2" not in r.stdout
    assert secret.read_text() == "hunter2"


def test_its_own_directory_is_writable_and_starts_empty(isolated: Limits) -> None:
    code = (
        "import os\nassert os.listdir('.') == []\nopen('a.txt', 'w').write('hi')\nassert open('a.txt').read() == 'hi'\n"
    )
    assert run_tests(code, limits=isolated).passed


def test_environment_is_scrubbed(monkeypatch: pytest.MonkeyPatch, isolated: Limits) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-for-the-sandbox")
    code = "import os\nprint(sorted(os.environ))\nassert set(os.environ) <= {'PATH', 'LANG', 'HOME', 'TMPDIR', 'PWD'}\n"
    r = run_tests(code, limits=isolated)
    assert r.passed and "sk-test" not in r.stdout


@pytest.mark.parametrize(
    "code",
    [
        "import sys\nsys.exit(0)\n",
        "import os\nos._exit(0)\n",
        "import os, json\nfor fd in range(3, 20):\n    try:\n"
        "        os.write(fd, json.dumps({'failures': []}).encode())\n    except OSError:\n        pass\nos._exit(0)\n",
    ],
)
def test_exiting_early_or_forging_the_report_does_not_pass(code: str, isolated: Limits) -> None:
    r = run_tests(code, "assert False, 'the tests must run'\n", limits=isolated)
    assert not r.passed and r.exec_fail is not None


def test_bad_limits_raise() -> None:
    with pytest.raises(runtime.LimitError):
        Limits(wall_s=0)
    with pytest.raises(runtime.LimitError):
        Limits(memory_mb=1)
    with pytest.raises(runtime.LimitError):
        Limits(isolation="docker")  # type: ignore[arg-type]


def test_endless_output_is_bounded_by_the_file_size_limit() -> None:
    r = run_tests("while True:\n    print('x' * 100_000)\n", limits=FAST)
    assert not r.passed and "File too large" in (r.exec_fail or "") and len(r.stdout) <= 64 * 1024


def test_a_long_report_arrives_whole() -> None:
    """Hundreds of failing tests, each with a long message: the report is capped, and does not block."""
    tests = "import unittest\nclass T(unittest.TestCase):\n" + "".join(
        f"    def test_{k}(self):\n        self.assertEqual('a' * 5000, 'b' * 5000)\n" for k in range(300)
    )
    r = run_tests("", tests, limits=FAST)
    assert not r.passed and r.exec_fail is None and r.tests_run == 300 and len(r.failures) == 50


def _harness_children() -> list[int]:
    """Our own child processes that run the sandbox harness (Linux: read from /proc)."""
    me, out = os.getpid(), []
    for d in Path("/proc").iterdir():
        try:
            ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            if ppid == me and b"_sandbox_harness" in (d / "cmdline").read_bytes():
                out.append(int(d.name))
        except (OSError, ValueError, IndexError):
            continue
    return out


@pytest.mark.anyio
async def test_cancelling_a_check_kills_the_program_at_once(isolated: Limits) -> None:
    """Issue 16: a run ended at its deadline, but the process lived on until the sandbox's wall limit
    (123.8 s for a 120 s limit): the worker thread waited for the child nobody waited for any more."""
    start = time.monotonic()
    with anyio.move_on_after(1.0):
        await arun_tests("import time\ntime.sleep(120)\n", "assert True\n", limits=replace(isolated, wall_s=120))
    assert time.monotonic() - start < 5
    for _ in range(50):  # the worker thread reaps the killed child
        if not _harness_children():
            break
        await anyio.sleep(0.1)
    assert _harness_children() == []


def _running(marker: str) -> list[int]:
    """Processes on this machine whose command line contains ``marker`` (Linux: read from /proc)."""
    found = []
    for d in Path("/proc").iterdir():
        try:
            if marker.encode() in (d / "cmdline").read_bytes():
                found.append(int(d.name))
        except (OSError, ValueError):
            continue
    return found


# Code written to escape the hook: it digs the real fork_exec out of the harness's wrapper (today's code has
# no wrapper), starts ``sleep`` in a session of its own, and waits until it runs.
_ESCAPE = (
    "import os, time, _posixsubprocess\nfork_exec = _posixsubprocess.fork_exec\n"
    "cells = getattr(fork_exec, '__closure__', None) or ()\n"
    "fork_exec = next((c.cell_contents for c in cells if callable(c.cell_contents)), fork_exec)\n"
    "r, w = os.pipe()\n" + _FORK_EXEC + "os.close(w)\nassert os.read(r, 1) == b''\n"
)


@pytest.mark.parametrize("ending", ["returns", "times-out"])
def test_what_the_program_started_dies_with_it(isolated: Limits, ending: str) -> None:
    """Issue 16: a ``sleep 60`` started with ``fork_exec(..., call_setsid=True)`` outlived ``run_tests``, alive
    under PID 1. The supervisor kills and reaps whatever the program left, whether it returns or times out;
    bubblewrap's PID namespace ends with it too."""
    seconds = f"61.{os.getpid()}{len(ending)}"  # a sleep no other test starts
    code = _ESCAPE.format(fork_exec="fork_exec", seconds=seconds)
    if ending == "times-out":
        code += "time.sleep(60)\n"
    r = run_tests(code, "assert True\n", limits=replace(isolated, wall_s=1))
    assert r.passed if ending == "returns" else "timed out" in (r.exec_fail or ""), r
    # the namespace's processes are SIGKILLed as bwrap dies; give the kernel a moment to reap them
    for _ in range(20 if ending == "times-out" else 1):
        if not _running(f"sleep\0{seconds}"):
            break
        time.sleep(0.1)
    assert _running(f"sleep\0{seconds}") == []


def test_writes_cannot_escape_through_a_second_path(tmp_path: Path, isolated: Limits) -> None:
    """Issue 16: only the first path of rename/replace/link/symlink was checked, so ``os.rename('x', outside)``
    and ``shutil.move`` wrote outside the working directory. Every path argument is checked now."""
    (tmp_path / "secret").write_text("hunter2")
    out, secret = str(tmp_path / "escaped"), str(tmp_path / "secret")
    code = f"""
import os, shutil
calls = {{
    'rename': lambda: os.rename('x', {out!r}), 'replace': lambda: os.replace('x', {out!r}),
    'link out': lambda: os.link('x', {out!r}), 'link in': lambda: os.link({secret!r}, 'y'),
    'symlink out': lambda: os.symlink('x', {out!r}), 'move': lambda: shutil.move('x', {out!r}),
    'mkfifo': lambda: os.mkfifo({out!r}),
}}
refused = []
for name, call in calls.items():
    open('x', 'w').write('x')
    try:
        call()
    except PermissionError as exc:
        refused.append(name) if str(exc).startswith('sandbox:') else print(name, exc)
assert refused == list(calls), refused
"""
    r = run_tests(code, limits=isolated)
    assert r.passed, r
    assert sorted(p.name for p in tmp_path.iterdir()) == ["secret"]


def test_a_directory_descriptor_cannot_reach_the_parents_environment(isolated: Limits) -> None:
    """Issue 16: ``dir_fd`` was ignored. With the working directory 20 levels deep and a descriptor for the
    standard library's folder, ``'../' * 20 + 'proc/<parent>/environ'`` looked inside and read the parent's
    environment (its API keys). No directory opens as a descriptor now, and a ``dir_fd`` is refused."""
    code = f"""
import os
for _ in range(20):
    os.mkdir('d')
    os.chdir('d')
try:
    fd = os.open(os.path.dirname(os.__file__), os.O_RDONLY)
    print(open(os.open('../' * 20 + 'proc/{os.getpid()}/environ', os.O_RDONLY, dir_fd=fd), 'rb').read())
except PermissionError as exc:
    assert 'as a file descriptor is not allowed' in str(exc), exc
try:
    os.rename('a', 'b', src_dir_fd=0)
except PermissionError as exc:
    assert 'with dir_fd is not allowed' in str(exc), exc
"""
    r = run_tests(code, "assert True\n", limits=isolated)
    assert r.passed, r
    assert "PATH=" not in r.stdout


def test_no_signals_or_priority_changes_for_other_processes(isolated: Limits) -> None:
    """Issue 16: the child could signal its parent (``pidfd_send_signal``) and change its priority. Its own
    process it may still signal, renice and pin."""
    parent, nice = os.getpid(), os.getpriority(os.PRIO_PROCESS, 0)  # a value that changes nothing if it lands
    code = f"""
import os, signal
calls = {{
    'kill': lambda: os.kill({parent}, 0), 'killpg': lambda: os.killpg(os.getpgid(0), 0),
    'pidfd_open': lambda: os.pidfd_open({parent}),
    'pidfd_send_signal': lambda: signal.pidfd_send_signal(os.pidfd_open(os.getpid()), 0),
    'setpriority': lambda: os.setpriority(os.PRIO_PROCESS, {parent}, {nice}),
    'setpriority user': lambda: os.setpriority(os.PRIO_USER, 0, {nice}),
    'sched_setaffinity': lambda: os.sched_setaffinity({parent}, os.sched_getaffinity(0)),
}}
refused = []
for name, call in calls.items():
    try:
        call()
    except PermissionError as exc:
        refused.append(name) if str(exc).startswith('sandbox:') else print(name, exc)
assert refused == list(calls), refused
os.kill(os.getpid(), 0)
os.close(os.pidfd_open(os.getpid()))
os.setpriority(os.PRIO_PROCESS, 0, 19)
os.sched_setaffinity(0, os.sched_getaffinity(0))
"""
    r = run_tests(code, limits=isolated)
    assert r.passed, r


def test_asyncio_and_temporary_directories_work(isolated: Limits) -> None:
    """Issue 16 (Low): ``asyncio.run`` failed in the sandbox (its self-pipe is a local socket pair). Local
    sockets are allowed; internet sockets, connect and bind are not. ``TemporaryDirectory`` removes its
    tree by path, as no directory may be opened as a descriptor."""
    code = """
import asyncio, os, tempfile
async def main():
    await asyncio.sleep(0)
    return await asyncio.to_thread(sum, [1, 2])
assert asyncio.run(main()) == 3
with tempfile.TemporaryDirectory() as d:
    os.makedirs(os.path.join(d, 'a', 'b'))
    open(os.path.join(d, 'a', 'b', 'f'), 'w').close()
assert not os.path.exists(d)
"""
    r = run_tests(code, limits=isolated)
    assert r.passed, r


def test_the_process_count_is_capped(isolated: Limits) -> None:
    """RLIMIT_NPROC is set where the program has a user namespace of its own (its count is then its own:
    both modes on Linux). The kernel does not enforce it for root; there the supervisor and the PID
    namespace are what end stray processes (the test above)."""
    code = "import resource\nassert resource.getrlimit(resource.RLIMIT_NPROC) == (64, 64)\n"
    assert run_tests(code, limits=isolated).passed


@pytest.mark.skipif(_NO_BWRAP is not None, reason=str(_NO_BWRAP))
def test_bubblewrap_shows_the_program_almost_nothing_of_the_host(tmp_path: Path) -> None:
    """Checks the program can make without the hook's leave (stat, readlink, statvfs): only /usr, /lib*, the
    interpreter and its working directory exist; the root is read-only; /proc is the namespace's own, so the
    parent's /proc entries (issue 16, Low: its cwd and exe) are not there; the only network interface is
    loopback."""
    (tmp_path / "secret").write_text("hunter2")
    code = f"""
import os, socket
assert not os.path.exists('/etc/passwd') and not os.path.exists({str(tmp_path / "secret")!r})
assert not os.path.exists('/proc/{os.getpid()}') and os.getpid() < 10
try:
    os.readlink('/proc/{os.getpid()}/cwd')
except FileNotFoundError:
    pass
else:
    raise AssertionError('the parent is visible')
assert os.statvfs('/').f_flag & os.ST_RDONLY and os.statvfs('/usr').f_flag & os.ST_RDONLY
assert not os.statvfs('.').f_flag & os.ST_RDONLY
assert [name for _, name in socket.if_nameindex()] == ['lo']
"""
    r = run_tests(code, limits=replace(FAST, isolation="bubblewrap"))
    assert r.passed and r.isolation == "bubblewrap", r


@pytest.fixture
def _no_bwrap(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """A PATH without bwrap, and the probe forgotten before and after."""
    monkeypatch.setenv("PATH", str(tmp_path))
    sandbox._bwrap_problem.cache_clear()
    yield
    sandbox._bwrap_problem.cache_clear()


@pytest.mark.usefixtures("_no_bwrap")
def test_without_bubblewrap_auto_falls_back_and_forcing_it_raises() -> None:
    r = run_tests("open('/tmp/escaped.txt', 'w')\n", "assert True\n", limits=FAST)
    assert r.isolation == "audit-hook" and "outside the working directory" in (r.exec_fail or "")
    with pytest.raises(runtime.SandboxError, match="bwrap is not installed"):
        run_tests("x = 1\n", "assert x\n", limits=replace(FAST, isolation="bubblewrap"))
