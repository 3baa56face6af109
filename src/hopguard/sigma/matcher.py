"""The reference evaluator: the same parsed rules, matched in plain Python over dict events.

It exists to check the SQL backend (the semantics table runs every case through both) and to
give the benchmark a baseline. Events are dicts keyed by our column names (``command_line``,
``image``, ``platform`` ...); a missing key is an absent (NULL) field. Each rule's condition
trees are compiled once into nested closures over :mod:`hopguard.sigma.semantics` leaves, so
case, wildcard, type and NULL rules are the very ones the SQL backend writes out.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from sigma.conditions import (
    ConditionAND,
    ConditionFieldEqualsValueExpression,
    ConditionNOT,
    ConditionOR,
    ConditionValueExpression,
)
from sigma.types import SigmaExpansion

from hopguard.sigma.fields import KEYWORD_COLUMNS, field_spec
from hopguard.sigma.loader import Rule
from hopguard.sigma.semantics import Leaf, field_leaf, keyword_leaf

Event = Mapping[str, Any]
Test = Callable[[Event], bool]


def _never(event: Event) -> bool:
    return False


def compile_tree(node: Any, table: str) -> Test:
    """A parsed Sigma condition node as a Python predicate over one event."""
    if isinstance(node, ConditionAND):
        parts = [compile_tree(a, table) for a in node.args]
        return lambda e: all(p(e) for p in parts)
    if isinstance(node, ConditionOR):
        parts = [compile_tree(a, table) for a in node.args]
        return lambda e: any(p(e) for p in parts)
    if isinstance(node, ConditionNOT):
        inner = compile_tree(node.args[0], table)
        return lambda e: not inner(e)
    if isinstance(node, ConditionFieldEqualsValueExpression):
        values = node.value.values if isinstance(node.value, SigmaExpansion) else [node.value]
        leaves: list[Leaf] = [field_leaf(field_spec(table, node.field), v,
                                         lambda f: field_spec(table, f)) for v in values]
        if len(leaves) == 1:
            return leaves[0].test
        return lambda e: any(leaf.test(e) for leaf in leaves)
    if isinstance(node, ConditionValueExpression):
        specs = tuple(s for c in KEYWORD_COLUMNS[table] if (s := field_spec(table, c)))
        return keyword_leaf(specs, node.value).test
    if node is None:
        return _never
    raise TypeError(f"unexpected condition node {type(node).__name__}")


class PyMatcher:
    """Match events against rules one at a time (``match(table, event) -> [rule ids]``)."""

    def __init__(self, rules: Iterable[Rule]) -> None:
        self.tests: dict[str, list[tuple[str, Test]]] = {}
        self.unsupported: dict[str, str] = {}  # rule id -> why Python cannot run it
        for rule in rules:
            try:
                parts = [compile_tree(t, rule.table) for t in rule.trees]
            except (re.error, TypeError, ValueError) as exc:
                self.unsupported[rule.id] = str(exc)
                continue
            where = rule.where
            self.tests.setdefault(rule.table, []).append((rule.id, _rule_test(where, parts)))

    def match(self, table: str, event: Event) -> list[str]:
        return [rid for rid, test in self.tests.get(table, ()) if _safe(test, event)]


def _rule_test(where: tuple[tuple[str, str], ...], parts: list[Test]) -> Test:
    def test(e: Event) -> bool:
        return all(e.get(c) == v for c, v in where) and any(p(e) for p in parts)
    return test


def _safe(test: Test, event: Event) -> bool:
    try:
        return test(event)
    except re.error:  # a pattern Python's re rejects (RE2-only syntax): no match
        return False
