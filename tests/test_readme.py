"""README.md's Python snippets run as written, in order, in one namespace (as a reader would paste them into
``python -m asyncio`` or a notebook); and the README names no path outside the repository."""

from __future__ import annotations

import ast
import inspect
import re
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio

if TYPE_CHECKING:
    import pytest

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
SNIPPETS = re.findall(r"^```python\n(.*?)^```", README, flags=re.DOTALL | re.MULTILINE)


def test_there_are_snippets_to_run() -> None:
    assert len(SNIPPETS) >= 4


def test_every_python_snippet_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "examples").symlink_to(ROOT / "examples")  # the snippets' paths are relative to the repository
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, Any] = {}
    for k, source in enumerate(SNIPPETS, 1):
        code = compile(source, f"README.md snippet {k}", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
        if code.co_flags & inspect.CO_COROUTINE:  # it awaits at the top level, like a notebook cell
            anyio.run(partial(eval, code, namespace))
        else:
            exec(code, namespace)
    assert namespace["result"].success and (tmp_path / "run.jsonl").exists()


def test_the_readme_names_no_path_outside_the_repository() -> None:
    assert not re.search(r"\.\./|/work/|/home/|/root/|/tmp/|[A-Z]:\\\\", README)
