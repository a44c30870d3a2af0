"""What every benchmark does with its rows: a rich table on the terminal, the machine, and a CSV file."""

from __future__ import annotations

import argparse
import csv
import os
import platform
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

__all__ = ["EXAMPLES", "RESULTS", "ROOT", "console", "data_dir", "machine", "parser", "rows_table", "write_csv"]

ROOT = Path(__file__).resolve().parent.parent  # the project folder
EXAMPLES = ROOT / "examples"
RESULTS = ROOT / "benchmarks" / "results"
console = Console(width=150)


def parser(doc: str | None) -> argparse.ArgumentParser:
    """A script's argument parser, with its docstring shown as written in --help."""
    return argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)


def rows_table(rows: list[dict[str, Any]], title: str) -> Table:
    table = Table(title=title)
    for key in rows[0] if rows else ("(none)",):
        table.add_column(key, justify="right")
    for r in rows:
        table.add_row(*(str(v) for v in r.values()))
    return table


def data_dir(sub: str) -> Path | None:
    """``$ONTIME_DATA_DIR/sub`` if it exists: benchmarks find the shared data only there, or by --data."""
    base = os.environ.get("ONTIME_DATA_DIR")
    return Path(base) / sub if base and (Path(base) / sub).exists() else None


def machine() -> str:
    return f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"


def write_csv(rows: list[dict[str, Any]], path: str | Path) -> Path:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return out
