"""The NL2SQL repair workload (issue 18, item 6b): the SQL verifier decides everything and fails closed, never writes,
wrong variants are really wrong, hardness follows Spider, simulated outcomes are seeded, the workload builds from the
shipped slice, and the example spec runs against serve-sim with the verifier executing the SQL."""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import runtime
import tools.sql
from benchmarks.nl2sql_workload import (
    MODELS,
    SLICE,
    VARIANTS,
    accuracy_by_hardness,
    example_spec,
    nl2sql,
    nl2sql_variant,
    simulate,
)
from runtime.types import LatentClasses, UsageError, Verdict
from tests.helpers import server
from tools.spider import Schema, hardness, load_questions, load_schemas, mutations, quote_keywords, wrong_variants
from tools.sql import SqlVerifier, check_sql, execute, ordered

DB = SLICE / "databases" / "pets_1.sqlite"
COUNT = "SELECT count(*) FROM haustiere WHERE gewicht > 10"
DATA = os.environ.get("ONTIME_DATA_DIR")
FULL = Path(DATA) / "nl2sql" if DATA and (Path(DATA) / "nl2sql").is_dir() else None


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """A private copy of pets_1 (so a test that tries to write cannot touch the shipped one)."""
    return Path(shutil.copy(DB, tmp_path / "pets_1.sqlite"))


# -- the verifier ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("candidate", "gold", "ok", "detail"),
    [
        ("select COUNT(*) from haustiere as h where h.gewicht > 10", COUNT, True, ""),
        ("```sql\nSELECT count(*) FROM haustiere WHERE gewicht > 10;\n```", COUNT, True, ""),
        ("SELECT count(*) FROM haustiere", COUNT, False, "but different ones; e.g. expected row"),
        ("SELECT gewicht FROM haustiere", COUNT, False, "returned 3 rows, expected 1"),
        ("SELECT count(*), 1 FROM haustiere", COUNT, False, "returned 2 columns, expected 1"),
        ("SELECT count(*) FROM nirgends", COUNT, False, "SQLite error: no such table: nirgends"),
        ("SELEC count(*) FROM haustiere", COUNT, False, "SQLite error: near"),
        # order matters only when the gold query orders its top level; columns may come in another order
        ("SELECT haustier_id FROM haustiere", "SELECT haustier_id FROM haustiere ORDER BY haustier_id DESC", False,
         "the right 3 rows in the wrong order"),
        ("SELECT haustier_id FROM haustiere ORDER BY haustier_id", "SELECT haustier_id FROM haustiere", True, ""),
        ("SELECT gewicht, haustier_id FROM haustiere", "SELECT haustier_id, gewicht FROM haustiere", True, ""),
        ("SELECT avg(gewicht) * 1.0 FROM haustiere", "SELECT sum(gewicht) / count(*) FROM haustiere", True, ""),
        ("SELECT 3.0", "SELECT 3", True, ""),
    ],
)  # fmt: skip
def test_the_verifier_decides_right_and_wrong_answers_with_a_reason(
    candidate: str, gold: str, ok: bool, detail: str
) -> None:
    verdict = check_sql(DB, candidate, gold)
    assert verdict.ok is ok and detail in verdict.detail, verdict


@pytest.mark.parametrize(
    ("candidate", "detail"),
    [
        ("UPDATE haustiere SET gewicht = 0", "only a read-only SELECT may run"),
        ("DELETE FROM haustiere", "only a read-only SELECT may run"),
        ("DROP TABLE haustiere", "only a read-only SELECT may run"),
        ("INSERT INTO haustiere VALUES (9, 'cat', 1, 1)", "only a read-only SELECT may run"),
        ("CREATE TABLE x (a)", "only a read-only SELECT may run"),
        ("ATTACH DATABASE ':memory:' AS other", "only a read-only SELECT may run"),
        ("PRAGMA query_only = OFF", "only a read-only SELECT may run"),
        ("PRAGMA writable_schema = ON", "only a read-only SELECT may run"),
        ("VACUUM", "only a read-only SELECT may run"),
        ("SELECT 1; DROP TABLE haustiere", "only one statement may run"),
        ("SELECT 1; SELECT 2", "only one statement may run"),
        ("", "not a query"),
        ("-- nothing", "not a query"),
        ("SELECT zeroblob(100000000)", "too big"),
    ],
)
def test_anything_but_one_select_fails_closed_and_the_database_is_never_modified(
    db: Path, candidate: str, detail: str
) -> None:
    before = _digest(db)
    verdict = check_sql(db, candidate, COUNT)
    assert not verdict.ok and detail in verdict.detail, verdict
    assert _digest(db) == before
    assert {p.name for p in db.parent.iterdir()} == {db.name}  # no journal or WAL file left behind


def test_a_query_past_its_time_or_row_limit_fails_and_says_which() -> None:
    forever = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c"
    slow = check_sql(DB, forever, COUNT, timeout_s=0.2)
    assert not slow.ok and slow.detail == "timed out after 0.2 s"
    many = check_sql(DB, "SELECT * FROM haustiere, haustiere AS b, haustiere AS c", COUNT, max_rows=10)
    assert not many.ok and many.detail.startswith("returned more than 10 rows (the limit)")


def test_a_gold_query_that_fails_or_a_missing_database_is_a_typed_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="the gold query fails"):
        check_sql(DB, "SELECT 1", "SELECT * FROM nirgends")
    with pytest.raises(UsageError, match="no SQLite database"):
        SqlVerifier(tmp_path / "missing.sqlite", COUNT)
    assert execute(tmp_path, "SELECT 1").error is not None  # a folder is no database: an error, not a raise


def test_order_is_read_from_the_top_level_of_the_gold_query() -> None:
    assert ordered("SELECT a FROM t ORDER BY a")
    assert not ordered("SELECT a FROM t WHERE a IN (SELECT b FROM u ORDER BY b LIMIT 3)")
    assert not ordered("SELECT a FROM t WHERE a = 'order by'")


def test_the_async_verifier_checks_off_the_event_loop() -> None:
    verifier = SqlVerifier(DB, COUNT)
    assert anyio.run(verifier.check, "SELECT count(*) FROM haustiere WHERE gewicht > 10") == Verdict(True)
    assert not anyio.run(verifier.check, "SELECT 1").ok


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.one_of(st.text(max_size=200), st.sampled_from(["SELECT ", "FROM haustiere", "'", ";", "(", "--"]).map(str)))
def test_any_string_gets_a_verdict_and_the_database_stays_as_it_was(db: Path, text: str) -> None:
    before = _digest(db)
    verdict = SqlVerifier(db, COUNT, timeout_s=0.5).check_sync(text)
    assert isinstance(verdict, Verdict) and (verdict.ok or verdict.detail)
    assert _digest(db) == before


# -- hardness and wrong variants -------------------------------------------------------------------------------------

SINGER = Schema.of("concert_singer", {"sänger": ("sänger_id", "name", "land", "alter"), "konzert": ("konzert_id",)})


@pytest.mark.parametrize(
    ("sql", "level"),
    [  # Spider dev's own labels for these queries (concert_singer), in the German schema
        ("SELECT count(*) FROM sänger", "easy"),
        ("SELECT name , land , alter FROM sänger ORDER BY alter DESC", "medium"),
        ("SELECT avg(alter) , min(alter) , max(alter) FROM sänger WHERE land = 'France'", "medium"),
        ("SELECT DISTINCT land FROM sänger WHERE alter > 20", "easy"),
        ("SELECT land , count(*) FROM sänger GROUP BY land", "medium"),
        ("SELECT name FROM sänger WHERE alter > (SELECT avg(alter) FROM sänger)", "hard"),
        ("SELECT name FROM a WHERE x = 1 INTERSECT SELECT name FROM a WHERE x = 2", "hard"),
        ("SELECT T2.name , count(*) FROM a AS T1 JOIN b AS T2 ON T1.id = T2.id GROUP BY T1.id", "medium"),
        ("SELECT T2.name , T2.x FROM a AS T1 JOIN b AS T2 ON T1.id = T2.id WHERE T1.y > 1 GROUP BY T1.id "
         "ORDER BY count(*) DESC LIMIT 1", "extra"),
        ("SELECT name FROM a WHERE x NOT IN (SELECT x FROM b) AND y LIKE '%a%' OR z = 1", "extra"),
    ],
)  # fmt: skip
def test_hardness_follows_spiders_levels(sql: str, level: str) -> None:
    assert hardness(sql, SINGER) == level


def test_names_that_are_keywords_are_quoted_so_the_gold_query_runs() -> None:
    gold = "SELECT vorname , alter FROM schüler WHERE alter > 20"
    assert execute(DB, gold).error is not None  # SQLite reads alter as ALTER
    schema = load_schemas(SLICE / "tables.json")["pets_1"]
    assert quote_keywords(gold + " AND nachname = 'alter'", schema).count('"alter"') == 2  # not in the literal
    assert execute(DB, quote_keywords(gold, schema)).error is None


def test_every_kind_of_mutation_occurs_and_each_kept_variant_really_changes_the_result() -> None:
    questions = load_questions(SLICE / "spider_dev_de.jsonl")
    schemas = load_schemas(SLICE / "tables.json")
    seen = set()
    for q in questions:
        schema = schemas[q.db_id]
        gold = quote_keywords(q.gold_sql, schema)
        database = SLICE / "databases" / f"{q.db_id}.sqlite"
        variants = wrong_variants(database, gold, schema)
        assert variants, q.id
        for v in variants:
            assert not check_sql(database, v.sql, gold).ok, (q.id, v)
        seen |= {v.kind for v in variants}
    assert seen == {
        "wrong_column", "dropped_predicate", "wrong_join", "wrong_aggregate", "flipped_comparison",
        "missing_distinct", "missing_order", "missing_limit", "syntax_error",
    }  # fmt: skip


def test_a_mutation_that_leaves_the_result_unchanged_is_not_kept() -> None:
    schema = load_schemas(SLICE / "tables.json")["pets_1"]
    gold = "SELECT max(gewicht) FROM haustiere ORDER BY 1"  # one row: dropping ORDER BY changes nothing
    candidates = {v.kind for v in mutations(gold, schema, random.Random(0))}
    kept = {v.kind for v in wrong_variants(DB, gold, schema)}
    assert "missing_order" in candidates and "missing_order" not in kept


# -- the simulated models and the workload --------------------------------------------------------------------------


def test_simulated_outcomes_are_fixed_by_the_seed() -> None:
    questions = load_questions(SLICE / "spider_dev_de.jsonl")
    schemas = load_schemas(SLICE / "tables.json")
    a, b = simulate(questions, schemas, list(MODELS), 0), simulate(questions, schemas, list(MODELS), 0)
    assert a == b
    assert simulate(questions, schemas, list(MODELS), 1).first != a.first
    # one question's outcomes do not depend on which other questions are simulated with it
    assert simulate(questions[:5], schemas, ["gemma-3-27b"], 0).first["gemma-3-27b"] == a.first["gemma-3-27b"][:5]
    with pytest.raises(UsageError, match="unknown models"):
        simulate(questions, schemas, ["gpt-7"], 0)


def test_the_workload_builds_from_the_shipped_slice_with_disjoint_splits() -> None:
    w = nl2sql(None)
    assert (w.name, w.test_questions + w.profile_questions) == ("nl2sql", 58)
    for wf, n in ((w.truth, w.test_questions), (w.planned, w.profile_questions)):
        (loop,) = wf.subtasks
        assert loop.loop is not None and loop.loop.horizon == 3
        assert isinstance(loop.history, LatentClasses) and loop.history.repairs == "any"
        assert loop.history.n_classes == n
        assert set(wf.models) == set(VARIANTS["nl2sql"][0])
    prices = [w.truth.models[m].output_price_per_mtok for m in VARIANTS["nl2sql"][0]]
    assert prices == sorted(prices) and prices[0] < 1 < 10 < prices[-1]
    two = nl2sql_variant("nl2sql-2")
    assert two.name == "nl2sql-2" and two.truth.subtasks[0].loop == runtime.Loop(4)
    with pytest.raises(UsageError, match="unknown NL2SQL variant"):
        nl2sql_variant("nl2sql-3")
    with pytest.raises(UsageError, match="horizon"):
        nl2sql(None, horizon=0)


def test_a_replay_takes_the_repair_rule_it_is_given() -> None:
    assert LatentClasses.replay({"m": [True]}, {"m": [False]}).repairs == "own"
    assert LatentClasses.replay({"m": [True]}, {"m": [False]}, repairs="any").repairs == "any"
    with pytest.raises(runtime.SpecError, match="repairs"):
        LatentClasses.replay({"m": [True]}, {"m": [False]}, repairs="some")  # type: ignore[arg-type]


@pytest.mark.skipif(FULL is None, reason="set ONTIME_DATA_DIR to a folder with nl2sql/ for the full Spider dev data")
def test_on_the_full_data_stronger_models_are_right_more_often_and_repairs_less_often_than_first_tries() -> None:
    assert FULL is not None
    questions = load_questions(FULL / "spider_dev_de.jsonl")
    table = accuracy_by_hardness(simulate(questions, load_schemas(FULL / "tables.json"), list(MODELS), 0))
    for m, row in table.items():
        firsts = [row[h][0] for h in ("easy", "medium", "hard", "extra")]
        assert firsts == sorted(firsts, reverse=True), m
        assert 0.10 < row["all"][1] < 0.35 < row["all"][0], m
    assert table["gemma-3-27b"]["all"][0] < table["claude-sonnet-4.6"]["all"][0]
    assert len(questions) == 814 and nl2sql(FULL).test_questions > 550


# -- the example against serve-sim ------------------------------------------------------------------------------------


def test_the_example_spec_is_what_its_builder_makes() -> None:
    shipped = json.loads((SLICE / "pets.json").read_text(encoding="utf-8"))
    assert shipped == json.loads(json.dumps(example_spec()))
    wf = runtime.load_workflow(SLICE / "pets.json")
    (s,) = wf.subtasks
    assert s.verifier is not None and s.verifier.kind == "sql" and Path(s.verifier.arg["database"]).is_file()


def test_bad_sql_verifier_specs_are_refused_before_anything_runs() -> None:
    data = example_spec()
    for arg, field in (
        ({"database": "nowhere.sqlite", "gold": COUNT}, "verifier.sql.database"),
        ({"database": str(DB), "gold": ""}, "verifier.sql.gold"),
        ({"database": str(DB), "gold": COUNT, "max_rows": 0}, "verifier.sql.max_rows"),
        ({"database": str(DB)}, "gold"),
    ):
        data["subtasks"][0]["verifier"] = {"sql": arg}
        with pytest.raises(runtime.SpecError, match=field):
            runtime.parse_workflow(data)


def test_the_loop_runs_against_serve_sim_and_the_verifier_executes_the_sql(monkeypatch: pytest.MonkeyPatch) -> None:
    data: dict[str, Any] = example_spec()
    data["subtasks"][0]["verifier"]["sql"]["database"] = str(DB)  # parsed from a dict: no spec folder to resolve in
    ran: list[str] = []
    real = tools.sql.execute

    def spy(database: Path | str, sql: str, **kw: Any) -> tools.sql.Outcome:
        ran.append(sql)
        return real(database, sql, **kw)

    monkeypatch.setattr(tools.sql, "execute", spy)
    reference, wrong = data["subtasks"][0]["reference"], data["subtasks"][0]["wrong"]
    outcomes = []
    with server(data, seed=3, speed=50.0) as (_srv, wf):
        for seed in range(4):
            events: list[runtime.Event] = []
            result = runtime.run(wf, 0.05, 60, planner="retry:small:1", seed=seed, on_event=events.append)
            statuses = [e.status for e in events if isinstance(e, runtime.SampleFinished)]
            outcomes.append((result.success, statuses))
            assert result.success == (runtime.SampleStatus.SUCCEEDED in statuses)
            if result.success:
                assert result.outputs["sql"] == reference  # not the gold text: only executing it shows it right
    checked = [sql for sql in ran if sql != data["subtasks"][0]["verifier"]["sql"]["gold"]]
    assert checked and set(checked) <= {tools.sql.extract_sql(t) for t in [reference, *wrong]}
    assert any(ok for ok, _ in outcomes)
    assert any(runtime.SampleStatus.FAILED in s for _, s in outcomes)  # a wrong variant was run and refused
