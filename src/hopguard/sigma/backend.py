"""hopguard's pySigma backend: a Sigma rule's detection as one DuckDB boolean expression.

Theory of operation: :class:`DuckDBBackend` is a pySigma ``TextQueryBackend``. pySigma's
condition walker does the structure (``and``/``or``/``not``, ``1 of``/``all of`` expansion,
parentheses by precedence, ``|windash`` expansions OR-linked); the ClassVars below declare that
syntax. Every *leaf* is handed to :mod:`hopguard.sigma.semantics`, which decides case,
wildcards, types and NULLs once for both this backend and the Python reference matcher. Field
names are mapped per table by :mod:`hopguard.sigma.fields` here, at the leaf, rather than by a
pySigma ``ProcessingPipeline``: pipelines rewrite the rule in place (a second conversion would
inherit the first mapping), and some of our fields are expressions (``Initiated``), not names.
Because nothing mutates the parsed rule, one parse serves every conversion.

Negation is Sigma's two-valued ``not``: ``NOT coalesce(x, false)``, so a leaf over a NULL column
(an absent field) is false and its negation true, as in the Python evaluator.

Lists: ``Image|endswith: [a, b, c ...]`` is an OR of leaves over one column, and DuckDB runs
each ``suffix``/``contains``/``=`` over every undecided row, which made a 40-name tool list the
costliest part of the pack. An OR with :data:`MERGE_MIN` or more plain string leaves over the
same (lower-cased or cased) column is written as one anchored RE2 alternation instead
(``regexp_matches(col, '^(?s:.*/socat|.*/ncat|ncat)$')``): one DFA pass, the same truth table
(each alternative is exactly its leaf: ``eq`` t, ``prefix`` t.*, ``suffix`` .*t, ``contains``
.*t.*, wildcards . and .*), and NULL stays NULL.

The backend converts one condition tree to SQL; :mod:`hopguard.sigma.loader` calls it twice per
rule: once with ``lower(col)`` (the standalone ``Rule.condition``) and once with per-row
lower-cased columns (``Rule.scan_condition``, for the one-scan compiler).
"""

from __future__ import annotations

from typing import Any, ClassVar

from sigma.conditions import (
    ConditionAND,
    ConditionFieldEqualsValueExpression,
    ConditionItem,
    ConditionNOT,
    ConditionOR,
    ConditionValueExpression,
)
from sigma.conversion.base import TextQueryBackend
from sigma.conversion.state import ConversionState
from sigma.exceptions import SigmaError
from sigma.types import SigmaExpansion

from hopguard.sigma.fields import KEYWORD_COLUMNS, FieldSpec, field_spec
from hopguard.sigma.semantics import (
    Leaf,
    Lowered,
    StrLeaf,
    default_lowered,
    field_leaf,
    keyword_leaf,
    re2_literal,
    sql_str,
)

# an OR of at least this many plain string leaves over one column becomes one RE2 alternation
MERGE_MIN = 3
_MERGEABLE = ("eq", "prefix", "suffix", "contains", "like")


def _flat_or(cond: ConditionOR) -> list[Any]:
    """The operands of nested ORs as one list (OR is associative: ``Image|endswith`` and
    ``Image`` lists of one selection become one group)."""
    out: list[Any] = []
    for arg in cond.args:
        out.extend(_flat_or(arg) if isinstance(arg, ConditionOR) else [arg])
    return out


def _alternative(leaf: StrLeaf) -> str:
    """The regex twin of one string leaf (matched against the whole text)."""
    p = leaf.pattern
    if p.op == "like":  # LIKE: % -> .*, _ -> ., backslash escapes the next character
        out, i, t = [], 0, p.text
        while i < len(t):
            c = t[i]
            if c == "\\" and i + 1 < len(t):
                out.append(re2_literal(t[i + 1]))
                i += 2
                continue
            out.append(".*" if c == "%" else "." if c == "_" else re2_literal(c))
            i += 1
        return "".join(out)
    lit = re2_literal(p.text)
    return {"eq": lit, "prefix": lit + ".*", "suffix": ".*" + lit,
            "contains": ".*" + lit + ".*"}[p.op]

ConditionNode = ConditionItem | ConditionFieldEqualsValueExpression | ConditionValueExpression


class DuckDBBackend(TextQueryBackend):
    """Sigma condition trees -> DuckDB SQL booleans over one hopguard table."""

    name: ClassVar[str] = "hopguard DuckDB"
    formats: ClassVar[dict[str, str]] = {"default": "DuckDB boolean expression"}
    requires_pipeline: ClassVar[bool] = False

    precedence: ClassVar[tuple[type[ConditionItem], type[ConditionItem], type[ConditionItem]]] = (
        ConditionNOT, ConditionAND, ConditionOR)
    group_expression: ClassVar[str] = "({expr})"
    token_separator: str = " "
    or_token: ClassVar[str] = "OR"
    and_token: ClassVar[str] = "AND"
    not_token: ClassVar[str] = "NOT"
    eq_token: ClassVar[str] = " = "
    str_quote: ClassVar[str] = "'"
    escape_char: ClassVar[str] = "\\"
    wildcard_multi: ClassVar[str] = "%"
    wildcard_single: ClassVar[str] = "_"
    field_quote: ClassVar[str] = '"'
    # Leaves are written by hopguard.sigma.semantics; these declare what they look like.
    startswith_expression: ClassVar[str] = "starts_with({field}, {value})"
    endswith_expression: ClassVar[str] = "suffix({field}, {value})"
    contains_expression: ClassVar[str] = "contains({field}, {value})"
    wildcard_match_expression: ClassVar[str] = "{field} LIKE {value} ESCAPE '\\'"
    re_expression: ClassVar[str] = "regexp_matches({field}, '{regex}')"
    field_null_expression: ClassVar[str] = "{field} IS NULL"
    field_exists_expression: ClassVar[str] = "{field} IS NOT NULL"
    field_not_exists_expression: ClassVar[str] = "{field} IS NULL"

    def __init__(self, table: str, *, lowered: Lowered = default_lowered) -> None:
        super().__init__(processing_pipeline=None, collect_errors=False)
        self.table = table
        self.lowered = lowered
        self.absent: set[str] = set()  # Sigma fields the rule names that we do not store

    # -- fields ------------------------------------------------------------------------------

    def resolve(self, sigma_field: str) -> FieldSpec | None:
        spec = field_spec(self.table, sigma_field)
        if spec is None:
            self.absent.add(sigma_field)
        return spec

    def leaf(self, cond: ConditionFieldEqualsValueExpression) -> Leaf:
        return field_leaf(self.resolve(cond.field), cond.value, self.resolve)

    def keyword(self, cond: ConditionValueExpression) -> Leaf:
        specs = tuple(s for c in KEYWORD_COLUMNS[self.table]
                      if (s := field_spec(self.table, c)) is not None)
        return keyword_leaf(specs, cond.value)

    # -- the walker's hooks ----------------------------------------------------------------------

    def convert_condition_field_eq_val(
            self, cond: ConditionFieldEqualsValueExpression, state: ConversionState) -> Any:
        if isinstance(cond.value, SigmaExpansion):  # |windash etc.: OR of the variants
            return f"({self.convert_condition_field_eq_expansion(cond, state)})"
        return self.leaf(cond).sql(self.lowered)

    def convert_condition_val(self, cond: ConditionValueExpression,
                              state: ConversionState) -> Any:
        return self.keyword(cond).sql(self.lowered)

    def convert_condition_or(self, cond: ConditionOR, state: ConversionState) -> Any:
        """OR, with runs of plain string leaves over one column merged (see the module doc)."""
        groups: dict[tuple[str, bool], list[StrLeaf]] = {}
        others: list[str] = []
        for arg in _flat_or(cond):
            leaf = self._mergeable(arg)
            if leaf is not None:
                col = leaf.spec.sql if leaf.cased else self.lowered(leaf.spec)
                groups.setdefault((col, leaf.cased), []).append(leaf)
            else:
                others.append(f"({self.convert_condition(arg, state)})")
        parts: list[str] = []
        for (col, _), leaves in groups.items():
            if len(leaves) >= MERGE_MIN:
                alts = "|".join(_alternative(x) for x in leaves)
                parts.append(f"regexp_matches({col}, {sql_str('^(?s:' + alts + ')$')})")
            else:
                parts.extend(x.sql(self.lowered) for x in leaves)
        return "(" + " OR ".join(parts + others) + ")"

    def _mergeable(self, arg: Any) -> StrLeaf | None:
        if not isinstance(arg, ConditionFieldEqualsValueExpression) or \
                isinstance(arg.value, SigmaExpansion):
            return None
        try:
            leaf = field_leaf(field_spec(self.table, arg.field), arg.value, self.resolve)
        except (ValueError, SigmaError):  # the regular path reports the problem
            return None
        if isinstance(leaf, StrLeaf) and leaf.pattern.op in _MERGEABLE and \
                leaf.spec.derive is None:
            return leaf
        return None

    def convert_condition_not(self, cond: ConditionNOT, state: ConversionState) -> Any:
        inner = self.convert_condition(cond.args[0], state)
        return f"NOT coalesce({inner}, false)"

    def condition_sql(self, tree: ConditionNode) -> str:
        """One parsed condition as SQL (no pipeline, no finalisation: just the boolean)."""
        result = self.convert_condition(tree, ConversionState())
        return str(result)
