"""How long a first use on a fresh install waits for numba to compile the planner's kernels.

    python -m benchmarks.cold_start [--repeats 1] [--runs 20] [--out benchmarks/results/cold_start.csv]

Each measurement runs in a fresh process with a numba cache of its own (``NUMBA_CACHE_DIR``), empty for the
cold ones, filled by the cold one for the warm ones:

1. ``ontime run examples/release20.json -b 2 -d 1200 --json`` with the default planner: wall time to finish
   (target: 10 s cold), and whether the compile notice reached stderr (it must, cold; never, warm);
2. ``runtime.predict`` of release20 ($2, 1200 s, default planner, ``--runs`` closed-loop runs, one thread):
   the first call's time minus the same call's again in the same process, i.e. what compiling (cold) or
   loading the kernels from the cache (warm) adds to a first predict (target: 20 s for a whole first
   predict, once predict itself is fast); and "after a run": in the cache a first ``ontime run`` filled
   (predict's closed loop reuses the run's decision kernel).

Quote medians: the machine is shared and noisy.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

from benchmarks._report import EXAMPLES, RESULTS, ROOT, console, machine, parser, rows_table, write_csv

RUN_TARGET_S = 10.0
PREDICT_TARGET_S = 20.0
NOTICE = "compiling the planner's kernels"
_PREDICT = (
    "import sys, time, runtime; wf = runtime.load_workflow(sys.argv[1]); t = []\n"
    "for _ in range(2):\n"
    "    t0 = time.perf_counter(); runtime.predict(wf, 2.0, 1200.0, runs=int(sys.argv[2]), workers=1)\n"
    "    t.append(time.perf_counter() - t0)\n"
    "print(t[0] - t[1])"
)


def _env(cache: str) -> dict[str, str]:
    return {**os.environ, "NUMBA_CACHE_DIR": cache, "PYTHONWARNINGS": "always"}


def first_run(cache: str) -> tuple[float, bool]:
    """Wall seconds of ``ontime run`` on release20 in a fresh process, and whether it said it was compiling."""
    cmd = [sys.executable, "-m", "runtime.cli", "run", str(EXAMPLES / "release20.json"), "-b", "2", "-d", "1200"]
    t0 = time.perf_counter()
    out = subprocess.run([*cmd, "--json"], cwd=ROOT, env=_env(cache), capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    if out.returncode not in (0, 1):
        raise RuntimeError(f"ontime run failed: {out.stderr}")
    return wall, NOTICE in out.stderr


def predict_overhead(cache: str, runs: int) -> tuple[float, bool]:
    """Seconds a first predict takes beyond the same predict again, in a fresh process; and the notice."""
    cmd = [sys.executable, "-c", _PREDICT, str(EXAMPLES / "release20.json"), str(runs)]
    out = subprocess.run(cmd, cwd=ROOT, env=_env(cache), capture_output=True, text=True, check=True)
    return float(out.stdout.strip()), NOTICE in out.stderr


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--repeats", type=int, default=1, help="fresh caches per measurement (medians are reported)")
    ap.add_argument("--runs", type=int, default=20, help="closed-loop runs of the predict measured")
    ap.add_argument("--out", default=str(RESULTS / "cold_start.csv"))
    args = ap.parse_args()
    got: dict[tuple[str, str], list[tuple[float, bool]]] = {}
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory() as runs_cache, tempfile.TemporaryDirectory() as predict_cache:
            predict = f"first predict's overhead ({args.runs} runs)"
            for cache_state in ("cold", "warm"):
                got.setdefault(("first ontime run, release20", cache_state), []).append(first_run(runs_cache))
                got.setdefault((predict, cache_state), []).append(predict_overhead(predict_cache, args.runs))
                if cache_state == "cold":  # a predict where only a first run has compiled: it shares decide
                    got.setdefault((predict, "after a run"), []).append(predict_overhead(runs_cache, args.runs))
    rows: list[dict[str, Any]] = []
    for (what, cache_state), results in got.items():
        target = RUN_TARGET_S if what.startswith("first ontime run") else None
        rows.append(
            {
                "measurement": what,
                "cache": cache_state,
                "seconds": round(statistics.median(s for s, _ in results), 2),
                "repeats": len(results),
                "target_s": target if cache_state == "cold" else None,
                "notice": "yes" if all(n for _, n in results) else "no" if not any(n for _, n in results) else "mixed",
            }
        )
    console.print(rows_table(rows, f"cold start: numba cache empty (cold) or filled (warm); {machine()}"))
    console.print(
        f"targets: a first run within {RUN_TARGET_S:g} s; a first predict within {PREDICT_TARGET_S:g} s in all "
        "(its overhead above plus the predict itself)"
    )
    console.print(f"wrote {write_csv(rows, args.out)}")


if __name__ == "__main__":
    main()
