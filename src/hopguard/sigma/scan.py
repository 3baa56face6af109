"""The one-scan compiler: many rules over one table in a single pass.

Theory of operation: every rule of a table becomes one boolean over the table's columns plus
columns lower-cased once per row (``__lc_<col>``, computed in an inner SELECT so that a hundred
rules testing ``CommandLine`` lower it once, not a hundred times). The outer query keeps a row
when any rule's condition holds (the WHERE is an OR, which DuckDB evaluates vector-at-a-time on
the rows still undecided) and, for the rows kept, lists which rules matched:

    SELECT <key columns>,
           list_filter([CASE WHEN c0 THEN 0 END, CASE WHEN c1 THEN 1 END, ...],
                       lambda x: x IS NOT NULL) AS hits
    FROM (SELECT *, lower(command_line) AS __lc_command_line, ... FROM process) AS t
    WHERE (c0) OR (c1) OR ...

``hits`` holds positions in ``ScanQuery.rules``. Matches are rare, so the per-rule CASE list is
only evaluated on the few rows the WHERE keeps.

Endpoint events repeat: the same service starts with the same command line thousands of times.
:func:`compile_distinct_scan` therefore runs the rules once per distinct combination of the
columns they read (a hash aggregate, counting the rows behind each) and :func:`rows_of` joins
the matched combinations back to their rows, NULL-safe, on those columns; the result is the
same (row, rule) pairs as the row-by-row scan (the benchmark and tests compare them), at a cost
that follows the number of distinct events rather than the number of events.

:func:`check_rules` runs each rule alone once (``LIMIT 0``: DuckDB binds the functions and
compiles constant regexes) so a user rule whose SQL DuckDB rejects is dropped with a message
instead of failing the whole scan.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import duckdb

from hopguard.model import TABLES
from hopguard.sigma.fields import KEY_COLUMNS, quote_ident
from hopguard.sigma.loader import Rule, scan_column
from hopguard.sigma.prefilter import BASENAME, Req, requirement
from hopguard.sigma.semantics import re2_literal, sql_str


@functools.lru_cache(maxsize=4096)
def rule_requirement(rule: Rule) -> Req:
    """The literal prefilter of a rule (None: it must see every row). Cached: the compiler asks
    for it per rule in the WHERE, the gates and the columns to compute."""
    out: set[tuple[str, str]] = set()
    for tree in rule.trees:
        req = requirement(tree, rule.table)
        if req is None:
            return None
        out |= req
    return frozenset(out)


@dataclass(frozen=True, slots=True)
class ScanQuery:
    table: str
    sql: str
    rules: tuple[Rule, ...]
    keys: tuple[str, ...]


def _col(req_col: str) -> str:
    """The scan column a requirement names: ``__lc_<col>``, or ``__name_<col>`` for a file
    name (prefilter.BASENAME)."""
    if req_col.endswith(BASENAME):
        return quote_ident("__name_" + req_col[:-len(BASENAME)])
    return quote_ident(scan_column(req_col))


def _source(table: str, rules: Iterable[Rule], relation: str | None,
            extra: Iterable[str] = ()) -> str:
    extra = set(extra)
    cols = sorted({c for r in rules for c in r.lowered} | {c for c in extra if "#" not in c})
    lowered = "".join(f", lower({quote_ident(c)}) AS {quote_ident(scan_column(c))}" for c in cols)
    # a path's file name, lower-cased: what follows the last / or \\ (the whole text if none)
    names = "".join(f", regexp_extract(lower({quote_ident(c[:-len(BASENAME)])}), "
                    f"'[^/\\\\]*$') AS {_col(c)}"
                    for c in sorted(c for c in extra if c.endswith(BASENAME)))
    return f"(SELECT *{lowered}{names} FROM {relation or quote_ident(table)}) AS t"


def _literal_test(col: str, lits: Iterable[str]) -> str:
    """One column's literals as one test: a set lookup for file names, else one RE2
    alternation of substrings."""
    lits = sorted(lits)
    if col.endswith(BASENAME):
        return f"{_col(col)} IN ({', '.join(sql_str(x) for x in lits)})"
    if len(lits) == 1:
        return f"contains({_col(col)}, {sql_str(lits[0])})"
    return f"regexp_matches({_col(col)}, {sql_str('|'.join(re2_literal(x) for x in lits))})"


def _where(rules: Sequence[Rule]) -> str:
    """(literal prefilter AND (rules that have one)) OR (rules that have none)."""
    filtered: list[Rule] = []
    open_: list[Rule] = []
    literals: dict[str, set[str]] = {}
    for r in rules:
        req = rule_requirement(r)
        if req is None:
            open_.append(r)
            continue
        if not req:  # can never match (every branch needs a field we do not store)
            continue
        filtered.append(r)
        for col, lit in req:
            literals.setdefault(col, set()).add(lit)
    parts: list[str] = []
    if filtered:
        pf = " OR ".join(_literal_test(col, lits) for col, lits in sorted(literals.items()))
        parts.append(f"(({pf}) AND ({' OR '.join(_gated(r) for r in filtered)}))")
    parts.extend(f"({r.scan_condition})" for r in open_)
    return " OR ".join(parts) or "false"


def _gate(rule: Rule) -> str | None:
    """The rule's own literal test (its prefilter literals), or None."""
    req = rule_requirement(rule)
    if not req:
        return None
    by_col: dict[str, set[str]] = {}
    for col, lit in req:
        by_col.setdefault(col, set()).add(lit)
    return " OR ".join(_literal_test(col, lits) for col, lits in sorted(by_col.items()))


def _gated(rule: Rule) -> str:
    """``(gate AND condition)``: on a row the shared prefilter let through, a rule whose own
    literals are absent costs a set lookup or one ``contains`` instead of its regexes (DuckDB
    evaluates the condition only on the rows the gate keeps)."""
    gate = _gate(rule)
    return f"(({gate}) AND ({rule.scan_condition}))" if gate else f"({rule.scan_condition})"


def compile_scan(table: str, rules: Sequence[Rule], *, keys: Sequence[str] | None = None,
                 relation: str | None = None, prefilter: bool = True) -> ScanQuery:
    """One query running every rule of ``table`` (``relation``: read another relation with the
    table's columns instead, e.g. a sample)."""
    rules = tuple(r for r in rules if r.table == table)
    keys = tuple(keys if keys is not None else KEY_COLUMNS[table])
    key_sql = ", ".join(quote_ident(k) for k in keys)
    if not rules:
        sql = (f"SELECT {key_sql}, []::INTEGER[] AS hits FROM {relation or quote_ident(table)} "
               "WHERE false")
        return ScanQuery(table, sql, rules, keys)
    cases = ", ".join(f"CASE WHEN {_gated(r) if prefilter else r.scan_condition} THEN {i} END"
                      for i, r in enumerate(rules))
    where = _where(rules) if prefilter else " OR ".join(f"({r.scan_condition})" for r in rules)
    extra = sorted({c for r in rules for c, _ in (rule_requirement(r) or ())} if prefilter
                   else set())
    sql = (f"SELECT {key_sql}, list_filter([{cases}], lambda x: x IS NOT NULL) AS hits "
           f"FROM {_source(table, rules, relation, extra)} WHERE {where}")
    return ScanQuery(table, sql, rules, keys)


def read_columns(table: str, rules: Iterable[Rule]) -> tuple[str, ...]:
    """The table columns the rules' conditions read (raw or lower-cased), in table order.
    Conditions always quote identifiers (``quote_ident``), so a quoted name is a reference; a
    rule value that happens to contain one only adds a column, which costs dedup, not results."""
    text = " ".join(f"{r.condition} {r.scan_condition}" for r in rules)
    return tuple(c for c in TABLES[table].names
                 if quote_ident(c) in text or quote_ident(scan_column(c)) in text)


def compile_distinct_scan(table: str, rules: Sequence[Rule], *,
                          relation: str | None = None) -> ScanQuery:
    """The rules of ``table`` once per distinct combination of the columns they read. Rows of
    the result: those columns, ``__hg_n`` (how many events share them) and ``hits``."""
    rules = tuple(r for r in rules if r.table == table)
    cols = read_columns(table, rules)
    col_sql = ", ".join(quote_ident(c) for c in cols)
    distinct = (f"(SELECT {col_sql}{', ' if cols else ''}count(*) AS __hg_n "
                f"FROM {relation or quote_ident(table)} GROUP BY ALL) AS d")
    return compile_scan(table, rules, keys=(*cols, "__hg_n"), relation=distinct)


def rows_of(scan: ScanQuery, columns: Sequence[str], *, relation: str | None = None) -> str:
    """SQL for the events behind a distinct scan's matches: ``columns`` of each matching row of
    the table plus its ``hits``, joined NULL-safe on the columns the rules read."""
    cols = [k for k in scan.keys if k != "__hg_n"]
    on = " AND ".join(f"p.{quote_ident(c)} IS NOT DISTINCT FROM m.{quote_ident(c)}"
                      for c in cols) or "true"
    out = ", ".join(f"p.{quote_ident(c)}" for c in columns)
    return (f"WITH m AS ({scan.sql}) SELECT {out}, m.hits FROM "
            f"{relation or quote_ident(scan.table)} AS p JOIN m ON {on}")


def check_rules(con: duckdb.DuckDBPyConnection,
                rules: Sequence[Rule]) -> tuple[list[Rule], list[tuple[Rule, str]]]:
    """The rules DuckDB accepts, and the others with DuckDB's message."""
    good: list[Rule] = []
    bad: list[tuple[Rule, str]] = []
    for r in rules:
        try:
            con.execute(f"SELECT 1 FROM {quote_ident(r.table)} WHERE {r.condition} LIMIT 0")
            con.execute(f"SELECT 1 FROM {_source(r.table, [r], None)} "
                        f"WHERE {r.scan_condition} LIMIT 0")
        except duckdb.Error as exc:
            bad.append((r, str(exc).splitlines()[0]))
            continue
        good.append(r)
    return good, bad
