"""Literal prefilter for the one-scan compiler (compile once, run many: the Suricata habit).

Theory of operation: most rules cannot match a row unless some literal occurs in some column
(``netsh ... portproxy`` needs 'portproxy' in the command line, ``Image|endswith: '/socat'``
needs '/socat' in the image). :func:`requirement` walks a rule's condition tree and returns a
*necessary* condition as a set of ``(column, literal)`` pairs - the rule can only match a row
whose lower-cased column contains at least one of them - or None when no such set exists
(``not``, numbers, CIDR, a regex without a fixed literal ...). AND takes the most selective child
requirement, OR the union of its children's (None if any child has none), a leaf its longest
fixed literal; a regex contributes the longest literal run that every match must contain (an
upper-case literal in a case-sensitive regex still implies its lower-case form in the lowered
column, so the test is sound). The compiler then ORs, per column, one RE2 alternation of all the
literals - one DFA pass per row instead of one ``contains`` per rule leaf - and evaluates the
rules only on rows that pass. Rules without a requirement run on every row.

The prefilter never changes results (it only skips rows that cannot match); the semantics table
and the benchmark's Python comparison check that.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
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
from hopguard.sigma.semantics import (
    AnyLeaf,
    Leaf,
    RegexLeaf,
    StrLeaf,
    field_leaf,
    keyword_leaf,
)

Req = frozenset[tuple[str, str]] | None
MIN_LITERAL = 3  # shorter literals select too little to be worth a prefilter
# A path column's file name, computed once per row: ``image#name`` in a requirement means
# "the lower-cased file name of image is this" (a set lookup), not "contains".
BASENAME = "#name"
BASENAME_COLUMNS = ("image", "parent_image")
# Relative cost of scanning a column (short paths are cheaper than command lines).
COLUMN_COST = {"image#name": 0, "parent_image#name": 0, "image": 1, "parent_image": 2,
               "user": 2, "query": 2, "object": 3, "command_line": 5,
               "parent_command_line": 6, "detail": 5}


def _lowerable(spec_name: str, derive: Any, kind: str) -> bool:
    return derive is None and kind == "str" and spec_name != "<absent>"


def _leaf_req(leaf: Leaf) -> Req:
    if isinstance(leaf, AnyLeaf):
        return _union(_leaf_req(x) for x in leaf.leaves)
    if isinstance(leaf, StrLeaf):
        spec = leaf.spec
        if spec.name == "<absent>":
            return frozenset()  # never matches
        if not _lowerable(spec.name, spec.derive, spec.kind):
            return None
        if spec.name in BASENAME_COLUMNS and not leaf.cased:
            name = _basename(leaf.pattern.op, leaf.pattern.text)
            if name is not None:
                return frozenset({(spec.name + BASENAME, name)})
        lit = _pattern_literal(leaf.pattern.op, leaf.pattern.text)
        if lit is None:
            return None
        return frozenset({(spec.name, lit if not leaf.cased else lit.lower())}) \
            if lit.isascii() or not leaf.cased else None
    if isinstance(leaf, RegexLeaf):
        spec = leaf.spec
        if not _lowerable(spec.name, spec.derive, spec.kind):
            return None
        lits = regex_literals(leaf.pattern)
        return frozenset((spec.name, x.lower()) for x in lits) if lits else None
    return None


def _basename(op: str, text: str) -> str | None:
    """The exact file name a path test implies: ``endswith '/socat'`` or ``'\\socat.exe'``
    (a separator, then no other) and ``= 'socat'`` (no separator: ESXi's typed first word)
    both mean the file name is that text; anything else implies no single name."""
    seps = ("/", "\\")
    if op == "suffix" and len(text) > 1 and text[0] in seps and \
            not any(c in text[1:] for c in seps):
        return text[1:]
    if op == "eq" and text and not any(c in text for c in seps):
        return text
    return None


def _pattern_literal(op: str, text: str) -> str | None:
    if op in ("eq", "prefix", "suffix", "contains"):
        lit = text
    elif op == "like":  # the longest run between unescaped % and _
        runs, cur, i = [], [], 0
        while i < len(text):
            c = text[i]
            if c == "\\" and i + 1 < len(text):
                cur.append(text[i + 1])
                i += 2
                continue
            if c in "%_":
                runs.append("".join(cur))
                cur = []
            else:
                cur.append(c)
            i += 1
        runs.append("".join(cur))
        lit = max(runs, key=len)
    else:
        return None
    return lit if len(lit) >= MIN_LITERAL else None


def _union(reqs: Iterable[Req]) -> Req:
    out: set[tuple[str, str]] = set()
    for r in reqs:
        if r is None:
            return None
        out |= r
    return frozenset(out)


def _best(reqs: list[Req]) -> Req:
    known = [r for r in reqs if r is not None]
    if not known:
        return None
    if any(not r for r in known):
        return frozenset()  # a child that never matches: the AND never matches
    # prefer short columns (cheaper to scan), then longer literals, then fewer of them
    return max(known, key=lambda r: (-max(COLUMN_COST.get(c, 9) for c, _ in r),
                                     min(len(lit) for _, lit in r), -len(r)))


def requirement(node: Any, table: str) -> Req:
    """A necessary literal condition of a parsed condition node (see the module docstring)."""
    if isinstance(node, ConditionAND):
        return _best([requirement(a, table) for a in node.args])
    if isinstance(node, ConditionOR):
        return _union(requirement(a, table) for a in node.args)
    if isinstance(node, ConditionNOT):
        return None
    if isinstance(node, ConditionFieldEqualsValueExpression):
        values = node.value.values if isinstance(node.value, SigmaExpansion) else [node.value]
        try:
            leaves = [field_leaf(field_spec(table, node.field), v,
                                 lambda f: field_spec(table, f)) for v in values]
        except ValueError:
            return None
        return _union(_leaf_req(x) for x in leaves)
    if isinstance(node, ConditionValueExpression):
        specs = tuple(s for c in KEYWORD_COLUMNS[table] if (s := field_spec(table, c)))
        try:
            return _leaf_req(keyword_leaf(specs, node.value))
        except ValueError:
            return None
    return None


# -- literals every match of a regex contains --------------------------------------------------

def regex_literals(pattern: str) -> frozenset[str] | None:
    """A set of ASCII literals one of which every match contains, or None."""
    try:
        import re._parser as sre_parse  # type: ignore[import-not-found]
        parsed = sre_parse.parse(pattern)
    except (re.error, ImportError, RecursionError):
        return None
    found = _seq_literals(list(parsed))
    if found is None or any(len(x) < MIN_LITERAL or not x.isascii() for x in found):
        return None
    return frozenset(found)


def _seq_literals(items: list[tuple[Any, Any]]) -> frozenset[str] | None:
    import re._constants as c  # type: ignore[import-not-found]
    best: frozenset[str] | None = None
    run: list[str] = []

    def close() -> None:
        nonlocal best, run
        if run:
            cand = frozenset({"".join(run)})
            best = _better(best, cand)
            run = []

    for op, av in items:
        if op is c.LITERAL:
            run.append(chr(av))
            continue
        close()
        sub: frozenset[str] | None = None
        if op is c.SUBPATTERN:
            sub = _seq_literals(list(av[-1]))
        elif op is c.BRANCH:
            alts = [_seq_literals(list(b)) for b in av[1]]
            sub = None if any(a is None for a in alts) else frozenset().union(*alts)  # type: ignore[arg-type]
        elif op in (c.MAX_REPEAT, c.MIN_REPEAT, getattr(c, "POSSESSIVE_REPEAT", None)) \
                and av[0] >= 1:
            sub = _seq_literals(list(av[2]))
        if sub is not None:
            best = _better(best, sub)
    close()
    return best


def _better(a: frozenset[str] | None, b: frozenset[str]) -> frozenset[str]:
    if a is None:
        return b
    return max((a, b), key=lambda s: (min(len(x) for x in s) if s else 0, -len(s)))
