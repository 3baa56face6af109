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
from sigma.types import SigmaExpansion

from hopguard.sigma.fields import KEYWORD_COLUMNS, FieldSpec, field_spec
from hopguard.sigma.semantics import Leaf, Lowered, default_lowered, field_leaf, keyword_leaf

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

    def convert_condition_not(self, cond: ConditionNOT, state: ConversionState) -> Any:
        inner = self.convert_condition(cond.args[0], state)
        return f"NOT coalesce({inner}, false)"

    def condition_sql(self, tree: ConditionNode) -> str:
        """One parsed condition as SQL (no pipeline, no finalisation: just the boolean)."""
        result = self.convert_condition(tree, ConversionState())
        return str(result)
