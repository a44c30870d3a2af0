"""The code sandbox: results in BayesFlow's exec_code shape, and containment of what model-written code does
wrong (each test would pass the program if the guard were missing)."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import anyio
import pytest

import runtime
from tools.sandbox import Limits, arun_tests, run_tests

FAST = Limits(wall_s=5, cpu_s=1, memory_mb=256, file_mb=1)


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


@pytest.mark.parametrize(
    "code",
    [
        "import os\nwhile True:\n    os.fork()\n",
        "import subprocess\nsubprocess.run(['true'])\n",
        "import os\nos.system('true')\n",
        "import multiprocessing\nmultiprocessing.Process(target=print).start()\n",
    ],
)
def test_no_new_processes(code: str) -> None:
    r = run_tests(code, "assert True\n", limits=FAST)
    assert not r.passed and "not allowed" in (r.exec_fail or ""), r.exec_fail


@pytest.mark.parametrize("code", ["x = bytearray(2 * 1024**3)\n", "x = []\nwhile True:\n    x.append(' ' * 10**6)\n"])
def test_memory_hog_hits_the_memory_limit(code: str) -> None:
    r = run_tests(code, limits=FAST)
    assert not r.passed and "MemoryError" in (r.exec_fail or "")


def test_huge_file_write_hits_the_file_size_limit() -> None:
    r = run_tests("with open('big', 'wb') as f:\n    while True:\n        f.write(b'x' * 65536)\n", limits=FAST)
    assert not r.passed and "File too large" in (r.exec_fail or "")


def test_no_network_even_to_loopback() -> None:
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
            r = run_tests(code, "assert True\n", limits=FAST)
            assert not r.passed and "not allowed" in (r.exec_fail or ""), r.exec_fail
        with pytest.raises(TimeoutError):
            server.accept()  # nothing ever connected


def test_files_outside_the_working_directory_are_out_of_reach(tmp_path: Path) -> None:
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
        r = run_tests(code, "assert True\n", limits=FAST)
        assert not r.passed and "outside the working directory" in (r.exec_fail or ""), (code, r.exec_fail)
        assert "hunter2" not in r.stdout
    assert secret.read_text() == "hunter2"


def test_its_own_directory_is_writable_and_starts_empty() -> None:
    code = (
        "import os\nassert os.listdir('.') == []\nopen('a.txt', 'w').write('hi')\nassert open('a.txt').read() == 'hi'\n"
    )
    assert run_tests(code, limits=FAST).passed


def test_environment_is_scrubbed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-for-the-sandbox")
    r = run_tests("import os\nprint(sorted(os.environ))\nassert 'OPENAI_API_KEY' not in os.environ\n", limits=FAST)
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
def test_exiting_early_or_forging_the_report_does_not_pass(code: str) -> None:
    r = run_tests(code, "assert False, 'the tests must run'\n", limits=FAST)
    assert not r.passed and r.exec_fail is not None


def test_bad_limits_raise() -> None:
    with pytest.raises(runtime.LimitError):
        Limits(wall_s=0)
    with pytest.raises(runtime.LimitError):
        Limits(memory_mb=1)


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
async def test_cancelling_a_check_kills_the_program_at_once() -> None:
    """Issue 16: a run ended at its deadline, but the process lived on until the sandbox's wall limit
    (123.8 s for a 120 s limit): the worker thread waited for the child nobody waited for any more."""
    start = time.monotonic()
    with anyio.move_on_after(1.0):
        await arun_tests("import time\ntime.sleep(120)\n", "assert True\n", limits=Limits(wall_s=120))
    assert time.monotonic() - start < 5
    for _ in range(50):  # the worker thread reaps the killed child
        if not _harness_children():
            break
        await anyio.sleep(0.1)
    assert _harness_children() == []
