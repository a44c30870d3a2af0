"""The packages import one way (README "Layout"): the leaf of shared types, then the plug-ins, then the engine.

    runtime.types         imports nothing of the project but itself
    planners, adapters,   import runtime.types and each other, never the engine (runtime.*) or benchmarks
    tools
    runtime (the engine)  imports the leaf and the plug-ins at module top, never benchmarks
    benchmarks            anything

Every import statement counts, those inside functions and ``if TYPE_CHECKING:`` blocks included; a second
test imports each plug-in module in a fresh interpreter and checks that no engine module was loaded.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PLUGINS = ("planners", "adapters", "tools")
PROJECT = ("runtime", *PLUGINS, "benchmarks", "tests")


def _imports(source: str, package: tuple[str, ...]) -> list[tuple[int, str]]:
    """Every project module a file of ``package`` imports (absolute names), with the line of the statement."""
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else ()
            module = ".".join([*base, *([node.module] if node.module else [])])
            out += [(node.lineno, module)] + [(node.lineno, f"{module}.{a.name}") for a in node.names]
    return [(line, name) for line, name in out if name.split(".")[0] in PROJECT]


def _allowed(layer: str, name: str) -> bool:
    top = name.split(".")[0]
    if layer == "leaf":
        return name == "runtime.types" or name.startswith("runtime.types.")
    if layer == "plugin":
        return top in PLUGINS or name == "runtime.types" or name.startswith("runtime.types.")
    if layer == "engine":
        return top in ("runtime", *PLUGINS)
    return top != "tests"  # benchmarks


def _layer(path: Path) -> str:
    parts = path.relative_to(ROOT).parts
    if parts[:2] == ("runtime", "types"):
        return "leaf"
    return {"runtime": "engine", "benchmarks": "benchmarks"}.get(parts[0], "plugin")


def test_every_import_points_down_the_layers() -> None:
    files = [p for d in ("runtime", *PLUGINS, "benchmarks") for p in (ROOT / d).rglob("*.py")]
    assert len(files) > 50
    wrong = [
        f"{p.relative_to(ROOT)}:{line}: a {_layer(p)} module imports {name}"
        for p in files
        for line, name in _imports(p.read_text(encoding="utf-8"), p.relative_to(ROOT).parent.parts)
        if not _allowed(_layer(p), name)
    ]
    assert wrong == []


def test_the_check_catches_the_imports_it_forbids() -> None:
    """Not vacuous: the imports that once made a circle are refused, wherever they hide."""
    hidden = "def f():\n    from runtime._errors import UsageError\nif TYPE_CHECKING:\n    from .. import _api\n"
    found = [name for _, name in _imports(hidden, ("runtime", "types"))]
    assert "runtime._errors" in found and "runtime._api" in found
    assert not any(_allowed("plugin", n) for n in ("runtime._errors", "runtime", "runtime._executor"))
    assert not _allowed("leaf", "planners") and not _allowed("leaf", "runtime._api")
    assert not _allowed("engine", "benchmarks.mcp_paper")
    assert _allowed("engine", "planners") and _allowed("plugin", "runtime.types.answers")


def _loaded_after(code: str) -> list[str]:
    """The modules of the project and of heavy dependencies a fresh interpreter holds after ``code``."""
    probe = (
        f"import sys\n{code}\nimport json\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('runtime', 'planners', 'adapters', 'tools', 'benchmarks', 'numba', 'openai', 'anthropic', 'aiohttp'))))"
    )
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True)
    loaded: list[str] = json.loads(out.stdout)
    return loaded


@pytest.mark.parametrize("package", PLUGINS)
def test_a_plugin_loads_no_engine_module(package: str) -> None:
    modules = sorted(
        f"{package}.{p.stem}" for p in (ROOT / package).glob("*.py") if p.stem not in ("__init__", "_sandbox_harness")
    )
    loaded = _loaded_after("\n".join(f"import {m}" for m in [package, *modules]))
    engine = [
        m for m in loaded if m.split(".")[0] == "runtime" and m != "runtime" and not m.startswith("runtime.types")
    ]
    assert engine == [], engine
    assert not any(m.startswith("benchmarks") for m in loaded)


def test_import_runtime_is_light() -> None:
    assert _loaded_after("import runtime") == ["runtime"]
    # The engine itself loads the plug-ins it runs, but no vendor SDK, server or numba until they are used.
    loaded = _loaded_after("import runtime\nruntime.run\nruntime.stream\nruntime.predict\nruntime.answer")
    assert {"runtime._api", "runtime._executor", "planners", "adapters.sim"} <= set(loaded)
    assert not {m.split(".")[0] for m in loaded} & {"numba", "openai", "anthropic", "aiohttp"}, loaded
