"""How the risk-controlled finalizer treats answer-form errors it was not written against.

    python -m benchmarks.finalizer_precision [--data DIR] [--out benchmarks/results/qa]

For the example set and (with ``--data`` or ``ONTIME_DATA_DIR``) HotpotQA, MuSiQue and 2WikiMultihopQA: per
corruption family of ``benchmarks/form_errors.py`` (written from how LLM answers go wrong, none from the finalizer's
rules or the simulated model's slips), on a trace whose evidence is the question's own BM25 top 5, how many answers
the finalizer changed, repaired (F1 up) and harmed (F1 down); ``correct`` is the gold answer itself. The bounds the
test asserts are set from these numbers. Writes ``finalizer_precision.csv``.
"""

from __future__ import annotations

from pathlib import Path

from benchmarks._report import EXAMPLES, RESULTS, console, data_dir, parser, rows_table, write_csv
from benchmarks.form_errors import measure
from benchmarks.qa_ladder import DATASETS
from tools.qa_data import load_qa


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--data", type=Path, default=data_dir("qa"), help="folder with the JSONL files")
    ap.add_argument("--out", type=Path, default=RESULTS / "qa")
    args = ap.parse_args()
    sets = {"examples": EXAMPLES / "qa" / "questions.jsonl"}
    if args.data is not None:
        sets |= {name: args.data / file for name, file in DATASETS.items()}
    rows = []
    for name, path in sets.items():
        tallies, _ = measure(load_qa(path))
        for family, t in tallies.items():
            rows.append({"dataset": name, "family": family, "n": t.n, "changed": t.changed, "repaired": t.repaired,
                         "harmed": t.harmed})  # fmt: skip
        corrupted = [t for f, t in tallies.items() if f != "correct"]
        rows.append({"dataset": name, "family": "all corruptions", "n": sum(t.n for t in corrupted),
                     "changed": sum(t.changed for t in corrupted), "repaired": sum(t.repaired for t in corrupted),
                     "harmed": sum(t.harmed for t in corrupted)})  # fmt: skip
    console.print(rows_table(rows, "The finalizer on unseen answer-form errors (retrieved evidence, no gold)"))
    console.print(f"wrote {write_csv(rows, args.out / 'finalizer_precision.csv')}")


if __name__ == "__main__":
    main()
