"""Runs inside the sandbox's child process (``python -I -S``, standard library only): limits itself, then
runs the program and reports to the parent. See :mod:`tools.sandbox` for what it guards against and what
it does not.

argv: cpu_s memory_bytes file_bytes result_fd. stdin: the report's nonce line, then JSON
``{"solution": str, "tests": [str, ...]}``.

The tests fail closed: a failing subtest, a skipped test and an unexpected success fail, and so does a run
in which no check ran at all (no assert statement executed, no unittest test or ``test*()`` function ran).
"""

import ast
import ctypes
import io
import json
import linecache
import os
import resource
import signal
import sys
import traceback
import types
import unittest
from typing import Any

PROGRAM = "<program>"
_CHECKS = "__ontime_checks__"  # a one-item list in the program's namespace: assert statements executed
_CLONE_NEWUSER, _CLONE_NEWNET = 0x10000000, 0x40000000
_BLOCKED = (
    "socket.__new__", "socket.connect", "socket.bind", "socket.getaddrinfo", "socket.sendto", "socket.sendmsg",
    "os.fork", "os.forkpty", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.kill", "os.killpg",
    "subprocess.Popen", "pty.spawn", "ctypes.dlopen", "ctypes.dlsym", "ctypes.cdata", "ctypes.call_function",
    "ctypes.addressof", "ctypes.string_at", "ctypes.wstring_at", "ctypes.create_string_buffer",
    "os.chroot", "os.setuid", "os.setgid", "os.putenv", "os.unsetenv", "sys._current_frames",
    "resource.setrlimit", "resource.prlimit", "signal.pthread_kill", "mmap.__new__",
)  # fmt: skip
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
_LISTING = ("os.listdir", "os.scandir")  # the import system lists the standard library's folders
_CHANGES = ("os.remove", "os.rename", "os.rmdir", "os.mkdir", "os.chmod", "os.chown", "os.link", "os.symlink",
            "os.truncate", "os.utime", "shutil.rmtree", "os.chdir")  # fmt: skip


def _limit(cpu_s: int, memory: int, file_size: int) -> None:
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s + 1))
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    resource.setrlimit(resource.RLIMIT_FSIZE, (file_size, file_size))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # an oversized write raises OSError instead of killing us


def _unshare_network() -> None:
    """A private network namespace with no interfaces, where the kernel allows it (best effort: the audit
    hook below refuses sockets anyway)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.unshare(_CLONE_NEWNET) != 0:
            libc.unshare(_CLONE_NEWUSER | _CLONE_NEWNET)
    except (OSError, AttributeError):
        pass


def _guard(workdir: str, readable: tuple[str, ...]) -> None:
    """Refuse sockets, new processes, raw memory, and files outside ``workdir`` (the standard library stays
    readable, or imports would fail)."""

    def inside(path: object, roots: tuple[str, ...]) -> bool:
        if isinstance(path, int):
            return True  # an fd the process already holds
        if isinstance(path, bytes):
            path = os.fsdecode(path)
        if not isinstance(path, str):
            return False
        real = os.path.realpath(path)
        return any(real == r or real.startswith(r.rstrip(os.sep) + os.sep) for r in roots)

    def hook(event: str, args: tuple[Any, ...]) -> None:
        if event in _BLOCKED:
            raise PermissionError(f"sandbox: {event} is not allowed")
        if event == "open":
            path, mode, flags = args
            writes = (mode is not None and any(c in str(mode) for c in "wax+")) or (flags or 0) & _WRITE_FLAGS
        elif event in _LISTING or event in _CHANGES:
            path = args[0] if args else None
            writes = event in _CHANGES
        else:
            return
        if path is not None and not inside(path, (workdir,) if writes else (workdir, *readable)):
            raise PermissionError(f"sandbox: no access to {path!r} outside the working directory")

    sys.addaudithook(hook)


MAX_CASES, MAX_FRAMES, MAX_TEXT = 50, 30, 2000  # keep the report small whatever the program does


def _frames(exc: BaseException) -> list[str]:
    return [line[:MAX_TEXT] for line in traceback.format_exception(type(exc), exc, exc.__traceback__)[-MAX_FRAMES:]]


def _case(exc: BaseException, test_id: str = "") -> dict[str, Any]:
    """A failing test in exec_code's shape: the test and the program's line where ``exc`` was raised (the
    failing assertion), the error's type and message, the traceback."""
    line = next((f.line or "" for f in reversed(traceback.extract_tb(exc.__traceback__)) if f.filename == PROGRAM), "")
    return {
        "test_case": ": ".join(x for x in (test_id, line.strip()) if x),
        "error_type": type(exc).__name__,
        "error_message": str(exc)[:MAX_TEXT],
        "traceback": _frames(exc),
    }


def _exited(exc: SystemExit) -> dict[str, Any]:
    return {"exec_fail_case": f"the program exited (SystemExit: {exc.code!r}) before its tests finished"}


class _Collect(unittest.TestResult):
    """Every way a test can fall short of passing is a failing case: failures, errors, failing subtests,
    skips and unexpected successes (an expected failure is the test's own business)."""

    def __init__(self) -> None:
        super().__init__()
        self.cases: list[dict[str, Any]] = []

    def addFailure(self, test: unittest.TestCase, err: Any) -> None:
        self._add(_case(err[1], test.id()))

    addError = addFailure

    def addSubTest(self, test: unittest.TestCase, subtest: unittest.TestCase, err: Any) -> None:
        if err is not None:
            self._add(_case(err[1], subtest.id()))

    def addSkip(self, test: unittest.TestCase, reason: str) -> None:
        self._add({"test_case": test.id(), "error_type": "Skipped", "error_message": reason[:MAX_TEXT]})

    def addUnexpectedSuccess(self, test: unittest.TestCase) -> None:
        message = "passed, but is marked as an expected failure"
        self._add({"test_case": test.id(), "error_type": "UnexpectedSuccess", "error_message": message})

    def _add(self, case: dict[str, Any]) -> None:
        if len(self.cases) < MAX_CASES:
            self.cases.append({"traceback": [], **case})


class _CountAsserts(ast.NodeTransformer):
    def visit_Assert(self, node: ast.Assert) -> list[ast.stmt]:
        count = ast.parse(f"{_CHECKS}[0] += 1").body[0]
        return [ast.copy_location(count, node), node]


def _compiled(source: str, first_line: int) -> types.CodeType:
    """``source`` (lines ``first_line`` on of the program) with every executed assert statement counted."""
    try:
        tree = ast.parse(source, PROGRAM)
    except SyntaxError as exc:
        exc.lineno = None if exc.lineno is None else exc.lineno + first_line - 1
        raise
    ast.increment_lineno(tree, first_line - 1)
    return compile(ast.fix_missing_locations(_CountAsserts().visit(tree)), PROGRAM, "exec")


def _no_main(*args: Any, **kwargs: Any) -> None:
    """``unittest.main()`` in the tests: their cases are collected and run after the tests' code."""


def _tests(namespace: dict[str, Any]) -> unittest.TestSuite:
    """The unittest cases defined by the solution or the tests, and the tests' ``test*()`` functions that
    take no arguments (pytest's plain style)."""
    suite = unittest.TestSuite()
    for v in list(namespace.values()):
        if isinstance(v, type) and issubclass(v, unittest.TestCase) and v.__module__ in ("__sandbox__", "__main__"):
            suite.addTests(unittest.defaultTestLoader.loadTestsFromTestCase(v))
        elif isinstance(v, types.FunctionType) and v.__name__.startswith("test") and v.__module__ == "__main__":
            code = v.__code__
            if code.co_argcount == len(v.__defaults__ or ()) and not code.co_kwonlyargcount:  # no fixtures
                suite.addTest(unittest.FunctionTestCase(v, description=v.__name__))
    return suite


def _run(solution: str, tests: list[str]) -> dict[str, Any]:
    """Run the solution, then the tests as the main script (their ``if __name__ == "__main__":`` blocks
    run), then the unittest cases and test functions they define."""
    source = "\n\n".join(p for p in (solution, *tests) if p)
    linecache.cache[PROGRAM] = (len(source), None, source.splitlines(True), PROGRAM)
    namespace: dict[str, Any] = {"__builtins__": __builtins__, _CHECKS: [0]}
    unittest.main = _no_main  # type: ignore[assignment]
    line = 1
    try:
        for part, name in [(solution, "__sandbox__"), *((t, "__main__") for t in tests)]:
            if part:
                namespace["__name__"] = name
                exec(_compiled(part, line), namespace)
                line += part.count("\n") + 2
    except AssertionError as exc:
        return {"failures": [_case(exc)]}
    except SystemExit as exc:
        return _exited(exc)
    except BaseException as exc:
        return {"exec_fail_case": "".join(traceback.format_exception_only(type(exc), exc)).strip(),
                "traceback": _frames(exc)}  # fmt: skip
    result = _Collect()
    try:
        _tests(namespace).run(result)
    except SystemExit as exc:
        return _exited(exc)
    if result.testsRun == 0 and namespace[_CHECKS][0] == 0:
        why = "no test ran: no assert was executed and no unittest case or test*() function ran"
        return {"exec_fail_case": why}
    return {"failures": result.cases, "tests_run": result.testsRun}


def main() -> None:
    cpu_s, memory, file_size, result_fd = (int(x) for x in sys.argv[1:5])
    nonce = sys.stdin.readline().strip()
    job = json.loads(sys.stdin.read())
    report = os.fdopen(result_fd, "w", encoding="utf-8")
    workdir = os.path.realpath(os.getcwd())
    stdlib = tuple(os.path.realpath(p) for p in sys.path if p)  # with -I -S: the standard library alone
    readable = (*stdlib, "/dev/null", "/dev/urandom", "/dev/zero")
    _unshare_network()
    _limit(cpu_s, memory, file_size)
    _guard(workdir, readable)
    sys.stdout = io.TextIOWrapper(sys.stdout.buffer, encoding="utf-8", errors="replace", line_buffering=True)
    try:
        out = _run(job["solution"], job["tests"])
    except MemoryError:
        out = {"exec_fail_case": "MemoryError: the program ran out of its memory limit"}
    report.write(json.dumps({"nonce": nonce, **out}))
    report.flush()
    os._exit(0)  # no interpreter teardown: the program's atexit handlers and finalizers do not run


if __name__ == "__main__":
    main()
