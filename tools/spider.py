"""Spider-format NL2SQL data: questions, schemas, Spider's hardness levels, and wrong variants of a gold query.

:func:`hardness` is a simplified port of Spider's ``eval_hardness`` (``evaluation.py`` of taoyds/spider) onto a
sqlglot AST. Like the original it looks at the top-level SELECT (the left part of a set operation) and counts

- component 1: WHERE, GROUP BY, ORDER BY and LIMIT present (1 each), joined tables beyond the first, ``OR``s and
  ``LIKE``s in WHERE and HAVING;
- component 2: nested queries in WHERE and HAVING conditions, plus 1 for a top-level UNION/INTERSECT/EXCEPT;
- others: more than one aggregate (in SELECT, WHERE, GROUP BY, ORDER BY, HAVING), more than one selected column,
  more than one WHERE condition, more than one GROUP BY column (1 each);

and maps them with Spider's thresholds to easy, medium, hard or extra. Where it simplifies: conditions are the
leaves of the WHERE's AND/OR tree (Spider's parser flattens the same way, but a parenthesized OR inside an AND is one
condition to Spider's ``or`` count and one OR here: the same); aggregates are counted as function nodes, not Spider's
per-value-unit flags (``count(*) + 1`` counts one either way); a subquery in FROM counts as a joined table.

:func:`mutations` makes wrong variants of a gold query by editing its AST; :func:`wrong_variants` keeps those whose
result on the database really differs (or that fail), by the verifier's own comparison.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import sqlglot
from sqlglot import TokenType, exp
from sqlglot.errors import SqlglotError

from runtime.types import UsageError
from tools.sql import SqlVerifier

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping
    from pathlib import Path

__all__ = [
    "HARDNESS",
    "MUTATIONS",
    "Question",
    "Schema",
    "Variant",
    "hardness",
    "load_questions",
    "load_schemas",
    "mutations",
    "parse",
    "quote_keywords",
    "sql_tokens",
    "wrong_variants",
]

Hardness = Literal["easy", "medium", "hard", "extra"]
HARDNESS: tuple[Hardness, ...] = ("easy", "medium", "hard", "extra")
MUTATIONS = (
    "wrong_column",
    "dropped_predicate",
    "wrong_join",
    "wrong_aggregate",
    "flipped_comparison",
    "missing_distinct",
    "missing_order",
    "missing_limit",
    "syntax_error",
)
_STRING = re.compile(r"('(?:[^']|'')*'|\"[^\"]*\"|`[^`]*`)")
_AGGS: tuple[type[exp.Expr], ...] = (exp.Count, exp.Sum, exp.Avg, exp.Max, exp.Min)
_FLIP: dict[type[exp.Expr], type[exp.Expr]] = {
    exp.GT: exp.LT, exp.LT: exp.GT, exp.GTE: exp.LTE, exp.LTE: exp.GTE, exp.EQ: exp.NEQ, exp.NEQ: exp.EQ,
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Question:
    """One NL2SQL question: its database, the question in English and German, and the gold query."""

    id: str
    db_id: str
    question_en: str
    question_de: str
    gold_sql: str


@dataclass(frozen=True, slots=True)
class Schema:
    """A database's tables and their columns (lower-case names, as the SQL uses them); build it with :meth:`of`.

    ``keywords`` are its names that sqlglot reads as something other than a plain name (German ``alter``, age, is
    SQL's ALTER).
    """

    db_id: str
    tables: Mapping[str, tuple[str, ...]]
    keywords: frozenset[str] = frozenset()

    @classmethod
    def of(cls, db_id: str, tables: Mapping[str, tuple[str, ...]]) -> Schema:
        names = {n for t, cols in tables.items() for n in (t, *cols)}
        plain = [TokenType.VAR]
        odd = frozenset(n for n in names if [t.token_type for t in sqlglot.tokenize(n, read="sqlite")] != plain)
        return cls(db_id, dict(tables), odd)

    def text(self) -> str:
        """The schema as a prompt shows it: one ``table(column, ...)`` line per table."""
        return "\n".join(f"{t}({', '.join(cols)})" for t, cols in self.tables.items())


@dataclass(frozen=True, slots=True)
class Variant:
    """A wrong variant of a gold query: which mutation made it, and its SQL."""

    kind: str
    sql: str


def load_questions(path: Path) -> list[Question]:
    """Questions from a JSON-lines file (fields id, db_id, question_en, question_de, gold_sql).

    Raises:
        UsageError: the file is unreadable or a line lacks a field.
    """
    try:
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        return [Question(r["id"], r["db_id"], r["question_en"], r["question_de"], r["gold_sql"]) for r in rows]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UsageError(f"cannot read questions from {path}: {exc}") from None


def load_schemas(path: Path) -> dict[str, Schema]:
    """Schemas from a Spider ``tables.json``, by database id.

    Raises:
        UsageError: the file is unreadable or not in Spider's format.
    """
    try:
        out = {}
        for db in json.loads(path.read_text(encoding="utf-8")):
            names = [t.lower() for t in db["table_names_original"]]
            cols: dict[str, list[str]] = {t: [] for t in names}
            for t, c in db["column_names_original"]:
                if t >= 0:
                    cols[names[t]].append(c.lower())
            out[db["db_id"]] = Schema.of(db["db_id"], {t: tuple(c) for t, c in cols.items()})
        return out
    except (OSError, ValueError, KeyError, TypeError, IndexError) as exc:
        raise UsageError(f"cannot read schemas from {path}: {exc}") from None


def quote_keywords(sql: str, schema: Schema) -> str:
    """``sql`` with the schema's keyword-like names double-quoted outside string literals.

    The German translation named columns ``alter`` (age), which SQLite and sqlglot read as ALTER: 33 gold queries of
    the Spider dev translation fail as given and run once quoted.
    """
    words = schema.keywords
    if not words:
        return sql
    pattern = re.compile(r"(?<![\w\"])(" + "|".join(map(re.escape, sorted(words))) + r")(?![\w\"])", re.IGNORECASE)
    parts = _STRING.split(sql)
    return "".join(p if i % 2 else pattern.sub(r'"\1"', p) for i, p in enumerate(parts))


def parse(sql: str, schema: Schema | None = None) -> exp.Expr:
    """The sqlglot AST of ``sql`` (SQLite dialect), with the schema's keyword-like names quoted first.

    Raises:
        UsageError: sqlglot cannot parse it.
    """
    if schema is not None:
        sql = quote_keywords(sql, schema)
    try:
        tree = sqlglot.parse_one(sql, read="sqlite")
    except SqlglotError as exc:
        raise UsageError(f"cannot parse {sql!r}: {str(exc).splitlines()[0]}") from None
    return tree


def sql_tokens(sql: str) -> int:
    """How many sqlglot tokens ``sql`` has (a proxy of its length; 0 if it does not tokenize)."""
    try:
        return len(sqlglot.tokenize(sql, read="sqlite"))
    except SqlglotError:
        return 0


# -- hardness -------------------------------------------------------------------------------------------------------


def hardness(sql: str | exp.Expr, schema: Schema | None = None) -> Hardness:
    """Spider's hardness level of a query (see the module docstring for the port)."""
    tree = parse(sql, schema) if isinstance(sql, str) else sql
    comp2 = 0
    while isinstance(tree, exp.SetOperation):
        comp2, tree = 1, tree.this
    while isinstance(tree, exp.Subquery):
        tree = tree.this
    if not isinstance(tree, exp.Select):
        return "extra"
    where, having = tree.args.get("where"), tree.args.get("having")
    conds = _conditions(where.this) if where else []
    hconds = _conditions(having.this) if having else []
    group = tree.args.get("group")
    order = tree.args.get("order")
    n_group = len(group.expressions) if group else 0
    n_tables = len(_from(tree)) + len(tree.args.get("joins") or [])
    comp1 = sum(x is not None for x in (where, group, order, tree.args.get("limit")))
    comp1 += max(0, n_tables - 1)
    comp1 += sum(_count(c, exp.Or) for c in (where, having) if c is not None)
    comp1 += sum(1 for c in conds + hconds if isinstance(c, exp.Like))
    comp2 += sum(1 for c in conds + hconds for _ in _nested(c))
    aggs = sum(_count(x, exp.AggFunc) for x in [*tree.expressions, *conds, *hconds, group, order] if x is not None)
    others = sum((aggs > 1, len(tree.expressions) > 1, len(conds) > 1, n_group > 1))
    if comp1 <= 1 and others == 0 and comp2 == 0:
        return "easy"
    if (others <= 2 and comp1 <= 1 and comp2 == 0) or (comp1 <= 2 and others < 2 and comp2 == 0):
        return "medium"
    if (
        (others > 2 and comp1 <= 2 and comp2 == 0)
        or (2 < comp1 <= 3 and others <= 2 and comp2 == 0)
        or (comp1 <= 1 and others == 0 and comp2 <= 1)
    ):
        return "hard"
    return "extra"


def _from(select: exp.Select) -> list[exp.Expr]:
    f = select.args.get("from_") or select.args.get("from")  # sqlglot renamed the key in v26
    return [] if f is None else [f.this, *f.expressions]


def _shallow(node: exp.Expr) -> Iterator[exp.Expr]:
    """``node`` and its descendants, not entering nested queries."""
    for n in node.walk(prune=lambda n: n is not node and isinstance(n, exp.Query | exp.Subquery)):
        if n is node or not isinstance(n, exp.Query | exp.Subquery):
            yield n


def _count(node: exp.Expr, kind: type[exp.Expr]) -> int:
    return sum(isinstance(n, kind) for n in _shallow(node))


def _conditions(node: exp.Expr) -> list[exp.Expr]:
    while isinstance(node, exp.Paren):
        node = node.this
    if isinstance(node, exp.And | exp.Or):
        return _conditions(node.this) + _conditions(node.expression)
    return [node]


def _nested(cond: exp.Expr) -> Iterator[exp.Expr]:
    for n in cond.walk(prune=lambda n: n is not cond and isinstance(n, exp.Query | exp.Subquery)):
        if n is not cond and isinstance(n, exp.Query | exp.Subquery):
            yield n


# -- wrong variants -------------------------------------------------------------------------------------------------


def mutations(gold_sql: str, schema: Schema, rng: random.Random) -> list[Variant]:
    """Candidate wrong variants of ``gold_sql``, at most one per kind of :data:`MUTATIONS` (those that apply).

    They are only candidates: a mutation may leave the result unchanged (see :func:`wrong_variants`).
    """
    try:
        tree = parse(gold_sql, schema)
    except UsageError:
        return [_syntax_error(gold_sql, rng)]
    makers: dict[str, Callable[[exp.Expr], bool]] = {
        "wrong_column": lambda t: _wrong_column(t, schema, rng),
        "dropped_predicate": lambda t: _drop_predicate(t, rng),
        "wrong_join": lambda t: _wrong_join(t, schema, rng),
        "wrong_aggregate": lambda t: _wrong_aggregate(t, schema, rng),
        "flipped_comparison": lambda t: _flip(t, rng),
        "missing_distinct": lambda t: _drop_arg(t, "distinct"),
        "missing_order": lambda t: _drop_arg(t, "order"),
        "missing_limit": lambda t: _drop_arg(t, "limit"),
    }
    out = []
    for kind, make in makers.items():
        copy = tree.copy()
        if make(copy):
            out.append(Variant(kind, copy.sql(dialect="sqlite")))
    out.append(_syntax_error(gold_sql, rng))
    return out


def wrong_variants(
    database: Path, gold_sql: str, schema: Schema, *, seed: int = 0, timeout_s: float = 2.0
) -> list[Variant]:
    """The variants of :func:`mutations` that really are wrong: executed, their result differs from the gold's (or
    they fail), by :class:`tools.sql.SqlVerifier`'s comparison.

    Raises:
        UsageError: the gold query fails on the database.
    """
    verifier = SqlVerifier(database, gold_sql, timeout_s=timeout_s)
    rng = random.Random(f"{seed}:{gold_sql}")
    return [v for v in mutations(gold_sql, schema, rng) if not verifier.check_sync(v.sql).ok]


def _selects(tree: exp.Expr) -> list[exp.Select]:
    return list(tree.find_all(exp.Select))


def _aliases(select: exp.Select) -> dict[str, str]:
    """Each table name or alias in the SELECT's FROM and JOINs -> its table."""
    out = {}
    for t in [*_from(select), *(j.this for j in select.args.get("joins") or [])]:
        if isinstance(t, exp.Table):
            out[t.name.lower()] = t.name.lower()
            if t.alias:
                out[t.alias.lower()] = t.name.lower()
    return out


def _wrong_column(tree: exp.Expr, schema: Schema, rng: random.Random) -> bool:
    choices = []
    for select in _selects(tree):
        aliases = _aliases(select)
        for col in select.find_all(exp.Column):
            if col.find_ancestor(exp.Select) is not select or col.name in ("", "*"):
                continue
            table = aliases.get(col.table.lower()) if col.table else next(iter(aliases.values()), None)
            others = [c for c in schema.tables.get(table or "", ()) if c != col.name.lower()]
            if others:
                choices.append((col, others))
    if not choices:
        return False
    col, others = rng.choice(choices)
    col.set("this", exp.to_identifier(rng.choice(others), quoted=True))
    return True


def _drop_predicate(tree: exp.Expr, rng: random.Random) -> bool:
    conds = [c for s in _selects(tree) for w in [s.args.get("where")] if w for c in _conditions(w.this)]
    if not conds:
        return False
    victim = rng.choice(conds)
    parent = victim.parent
    while isinstance(parent, exp.Paren):
        victim, parent = parent, parent.parent
    if isinstance(parent, exp.Where):
        parent.pop()
    elif isinstance(parent, exp.And | exp.Or):
        keep = parent.expression if victim is parent.this else parent.this
        parent.replace(keep)
    else:
        return False
    return True


def _wrong_join(tree: exp.Expr, schema: Schema, rng: random.Random) -> bool:
    joins = [j for s in _selects(tree) for j in s.args.get("joins") or []]
    if joins:
        j = rng.choice(joins)
        if j.args.get("on") is not None and rng.random() < 0.5:
            j.set("on", None)  # a cross join
            return True
        if isinstance(j.this, exp.Table):
            others = [t for t in schema.tables if t != j.this.name.lower()]
            if others:
                j.this.set("this", exp.to_identifier(rng.choice(others), quoted=True))
                return True
        return False
    tables = [t for s in _selects(tree) for t in _from(s) if isinstance(t, exp.Table)]
    others = [t for t in schema.tables if tables and t != tables[0].name.lower()]
    if not others:
        return False
    tables[0].set("this", exp.to_identifier(rng.choice(others), quoted=True))  # a swapped table
    return True


def _wrong_aggregate(tree: exp.Expr, schema: Schema, rng: random.Random) -> bool:
    aggs = list(tree.find_all(*_AGGS))
    if not aggs:
        return False
    agg = rng.choice(aggs)
    arg = agg.this
    if isinstance(arg, exp.Star):  # COUNT(*): SUM, AVG, MAX or MIN of one of its table's columns instead
        select = agg.find_ancestor(exp.Select)
        tables = [t for t in (_from(select) if select else []) if isinstance(t, exp.Table)]
        columns = schema.tables.get(tables[0].name.lower(), ()) if tables else ()
        if not columns:
            return False
        arg = exp.column(rng.choice(columns), quoted=True)
    kind = rng.choice([k for k in _AGGS if k is not type(agg) and not (k is exp.Count and arg is not agg.this)])
    agg.replace(kind(this=arg.copy()))
    return True


def _flip(tree: exp.Expr, rng: random.Random) -> bool:
    comps = list(tree.find_all(*_FLIP))
    if not comps:
        return False
    c = rng.choice(comps)
    c.replace(_FLIP[type(c)](this=c.this.copy(), expression=c.expression.copy()))
    return True


def _drop_arg(tree: exp.Expr, arg: str) -> bool:
    for s in _selects(tree):
        if s.args.get(arg) is not None:
            s.set(arg, None)
            return True
    return False


def _syntax_error(sql: str, rng: random.Random) -> Variant:
    """A typo in a keyword, or the query cut short."""
    m = [m for m in re.finditer(r"\b(SELECT|FROM|WHERE|GROUP BY|ORDER BY|JOIN)\b", sql, re.IGNORECASE)]
    if m and rng.random() < 0.7:
        hit = rng.choice(m)
        word = hit.group(0)
        typo = word[0] + word[2] + word[1] + word[3:]  # FROM -> FORM, SELECT -> SLEECT
        return Variant("syntax_error", sql[: hit.start()] + typo + sql[hit.end() :])
    return Variant("syntax_error", sql[: max(1, len(sql) * 2 // 3)].rstrip() + " (")
