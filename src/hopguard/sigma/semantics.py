"""Sigma value semantics, once, for both evaluators.

Theory of operation: pySigma parses a rule's detection into a condition tree whose leaves are
"field matches value" (``ConditionFieldEqualsValueExpression``) or "some text matches value"
(``ConditionValueExpression``, Sigma keywords). :func:`field_leaf` and :func:`keyword_leaf` turn a
leaf into a :class:`Leaf`, a small value that knows both how to write itself as a DuckDB boolean
(:meth:`Leaf.sql`) and how to test a Python event (:meth:`Leaf.test`). The SQL backend and the
reference matcher therefore share every decision about case, wildcards, types and NULLs, and the
semantics table (tests/unit/sigma/test_semantics.py) checks that the two renderings agree.

The rules implemented (Sigma specification 2.0, "Value modifiers" and "Wildcards"):

* strings compare case-insensitively: the column is lower-cased (``lower(col)``, or a column
  lower-cased once per row by the one-scan compiler) and compared with a lower-cased literal;
  ``|cased`` keeps case. ``*`` and ``?`` are wildcards; a leading/trailing ``*`` alone becomes
  ``contains``/``starts_with``/``suffix`` (cheaper than LIKE), anything else a LIKE pattern whose
  own metacharacters ``%``, ``_`` and ``\\`` are escaped, so they match literally.
* ``|re`` is case-sensitive unless the pattern says ``(?i)`` or the rule adds ``|i``; the i/m/s
  flags become an inline ``(?ims)`` prefix, understood by RE2 (DuckDB) and by Python's ``re``.
  Both search (unanchored). RE2 has no look-around or back-references: such a rule fails the
  load-time SQL check and is dropped with a note.
* ``|cidr`` tests the address text: IPv4 in dotted quad without leading zeros; IPv6 in any text
  form without an embedded IPv4 tail. Anything else (names, bad text) does not match.
* ``|gt`` ``|gte`` ``|lt`` ``|lte`` compare numbers; a text column counts when it parses as a
  number. ``null`` means the field is absent (NULL); ``|exists`` tests presence.
* a field we do not store is absent: it is NULL in SQL and None in Python.
* NULL never matches a value; ``not`` sees a leaf that did not match as false (the backend wraps
  what it negates in ``coalesce(x, false)``), exactly as the Python evaluator does.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sigma.exceptions import SigmaValueError
from sigma.types import (
    CompareOperators,
    Placeholder,
    SigmaBool,
    SigmaCasedString,
    SigmaCIDRExpression,
    SigmaCompareExpression,
    SigmaExists,
    SigmaFieldReference,
    SigmaNull,
    SigmaNumber,
    SigmaRegularExpression,
    SigmaRegularExpressionFlag,
    SigmaString,
    SigmaType,
    SpecialChars,
)

from hopguard.sigma.fields import FieldSpec

# How a leaf names a column in SQL: raw (original case) or lower-cased. The one-scan compiler
# swaps in a renderer that reads a column lower-cased once per row.
Lowered = Callable[[FieldSpec], str]

ABSENT = FieldSpec("<absent>", "str", "CAST(NULL AS VARCHAR)", lambda e: None)


def default_lowered(spec: FieldSpec) -> str:
    return f"lower({text_sql(spec)})"


def text_sql(spec: FieldSpec) -> str:
    """The field as text in SQL (numbers as their decimal text)."""
    return spec.sql if spec.kind == "str" else f"CAST({spec.sql} AS VARCHAR)"


def text_py(value: Any) -> str | None:
    """The field as text in Python, the way DuckDB casts it."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def sql_num(number: float) -> str:
    """A DuckDB numeric literal (infinities spelt as DuckDB reads them)."""
    if number != number or number in (float("inf"), float("-inf")):
        return f"CAST('{number}' AS DOUBLE)"
    return repr(number)


def sql_str(text: str) -> str:
    """A DuckDB string literal (standard strings: only the quote needs doubling)."""
    return "'" + text.replace("'", "''") + "'"


def re2_literal(text: str) -> str:
    """``text`` as a literal inside an RE2 pattern: letters, digits, spaces and non-ASCII as
    they are, other printable characters backslashed (RE2 accepts a backslash before any ASCII
    punctuation), control characters as ``\\xNN``."""
    out = []
    for ch in text:
        if ch.isalnum() or ord(ch) > 127 or ch == " ":
            out.append(ch)
        elif ch.isprintable():
            out.append("\\" + ch)
        else:
            out.append(f"\\x{ord(ch):02x}")
    return "".join(out)


# -- string patterns ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Pattern:
    """A Sigma string reduced to the cheapest test: eq, prefix, suffix, contains, like, any."""

    op: str
    text: str  # the literal (lower-cased unless cased); for ``like`` the LIKE pattern
    regex: re.Pattern[str] | None = None  # Python twin of a LIKE pattern

    @staticmethod
    def of(value: SigmaString, *, cased: bool = False, implicit_contains: bool = False) -> Pattern:
        parts: list[str | SpecialChars] = []
        for p in value.s:
            if isinstance(p, Placeholder):
                raise SigmaValueError(f"placeholder %{p.name}% (|expand) is not supported")
            parts.append(p if isinstance(p, SpecialChars) or cased else p.lower())
        if implicit_contains:  # keywords: anywhere in the text
            if not parts or parts[0] is not SpecialChars.WILDCARD_MULTI:
                parts.insert(0, SpecialChars.WILDCARD_MULTI)
            if parts[-1] is not SpecialChars.WILDCARD_MULTI:
                parts.append(SpecialChars.WILDCARD_MULTI)
        # collapse runs of '*' (they mean the same as one)
        merged: list[str | SpecialChars] = []
        for p in parts:
            if p is SpecialChars.WILDCARD_MULTI and merged and merged[-1] is p:
                continue
            if isinstance(p, str) and merged and isinstance(merged[-1], str):
                merged[-1] = merged[-1] + p
                continue
            merged.append(p)
        star = SpecialChars.WILDCARD_MULTI
        inner = merged[1 if merged[:1] == [star] else 0:]
        lead = len(inner) != len(merged)
        trail = bool(inner) and inner[-1] is star
        if trail:
            inner = inner[:-1]
        if not inner:
            return Pattern("any" if lead or trail else "eq", "")
        if len(inner) == 1 and isinstance(inner[0], str):
            text = inner[0]
            op = ("contains" if lead and trail else "suffix" if lead
                  else "prefix" if trail else "eq")
            return Pattern(op, text)
        like, rx = [], []
        for p in merged:
            if p is star:
                like.append("%")
                rx.append(".*")
            elif p is SpecialChars.WILDCARD_SINGLE:
                like.append("_")
                rx.append(".")
            else:
                assert isinstance(p, str)
                like.append(p.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_"))
                rx.append(re.escape(p))
        return Pattern("like", "".join(like), re.compile("".join(rx), re.DOTALL))

    def sql(self, col: str, raw: str) -> str:
        """``col`` is the (lower-cased unless cased) text; ``raw`` the NULL-carrying original."""
        lit = sql_str(self.text)
        if self.op == "eq":
            return f"{col} = {lit}"
        if self.op == "prefix":
            return f"starts_with({col}, {lit})"
        if self.op == "suffix":
            return f"suffix({col}, {lit})"
        if self.op == "contains":
            return f"contains({col}, {lit})"
        if self.op == "like":
            return f"{col} LIKE {lit} ESCAPE '\\'"
        return f"({raw} IS NOT NULL)"

    def test(self, text: str) -> bool:
        if self.op == "eq":
            return text == self.text
        if self.op == "prefix":
            return text.startswith(self.text)
        if self.op == "suffix":
            return text.endswith(self.text)
        if self.op == "contains":
            return self.text in text
        if self.op == "like":
            assert self.regex is not None
            return self.regex.fullmatch(text) is not None
        return True


# -- leaves -----------------------------------------------------------------------------------


class Leaf:
    """One test of one field (or of the keyword columns)."""

    def sql(self, lowered: Lowered) -> str:
        raise NotImplementedError

    def test(self, event: Mapping[str, Any]) -> bool:
        raise NotImplementedError


@dataclass(frozen=True, slots=True)
class StrLeaf(Leaf):
    spec: FieldSpec
    pattern: Pattern
    cased: bool

    def sql(self, lowered: Lowered) -> str:
        col = text_sql(self.spec) if self.cased else lowered(self.spec)
        return self.pattern.sql(col, self.spec.sql)

    def test(self, event: Mapping[str, Any]) -> bool:
        text = text_py(self.spec.value(event))
        if text is None:
            return False
        return self.pattern.test(text if self.cased else text.lower())


@dataclass(frozen=True, slots=True)
class NumEqLeaf(Leaf):
    spec: FieldSpec  # a numeric column
    number: int | float

    def sql(self, lowered: Lowered) -> str:
        return f"{self.spec.sql} = {sql_num(self.number)}"

    def test(self, event: Mapping[str, Any]) -> bool:
        v = self.spec.value(event)
        return v is not None and not isinstance(v, bool) and v == self.number


@dataclass(frozen=True, slots=True)
class RegexLeaf(Leaf):
    spec: FieldSpec
    pattern: str  # with its inline flags

    def sql(self, lowered: Lowered) -> str:
        return f"regexp_matches({text_sql(self.spec)}, {sql_str(self.pattern)})"

    def test(self, event: Mapping[str, Any]) -> bool:
        text = text_py(self.spec.value(event))
        return text is not None and _compiled(self.pattern).search(text) is not None


_RX_CACHE: dict[str, re.Pattern[str]] = {}


def _compiled(pattern: str) -> re.Pattern[str]:
    rx = _RX_CACHE.get(pattern)
    if rx is None:
        rx = _RX_CACHE[pattern] = re.compile(pattern)
    return rx


_V4_OCTET = r"(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_V4_RE = rf"^{_V4_OCTET}(\.{_V4_OCTET}){{3}}$"
_V4_PY = re.compile(_V4_RE.replace("^", "").replace("$", ""))


@dataclass(frozen=True, slots=True)
class CidrLeaf(Leaf):
    spec: FieldSpec
    network: ipaddress.IPv4Network | ipaddress.IPv6Network

    def sql(self, lowered: Lowered) -> str:
        t = f"trim({text_sql(self.spec)})"
        if self.network.version == 4:
            lo, hi = int(self.network.network_address), int(self.network.broadcast_address)
            num = " + ".join(f"CAST(split_part({t}, '.', {i + 1}) AS BIGINT) * {256 ** (3 - i)}"
                             for i in range(4))
            # CASE keeps the casts from running on text that is not an address
            return (f"(CASE WHEN regexp_full_match({t}, {sql_str(_V4_RE[1:-1])}) "
                    f"THEN ({num}) BETWEEN {lo} AND {hi} ELSE false END)")
        return _v6_in_sql(f"lower({t})", self.network)

    def test(self, event: Mapping[str, Any]) -> bool:
        text = text_py(self.spec.value(event))
        if text is None:
            return False
        text = text.strip()
        if self.network.version == 4:
            if _V4_PY.fullmatch(text) is None:
                return False
            return ipaddress.IPv4Address(text) in self.network
        if "." in text or "%" in text or not _V6_PY.fullmatch(text.lower()):
            return False
        try:
            return ipaddress.IPv6Address(text) in self.network
        except ValueError:
            return False


_V6_PY = re.compile(r"[0-9a-f:]+")


def _v6_in_sql(t: str, net: ipaddress.IPv6Network) -> str:
    """IPv6 text in ``net``: expand '::', pad each group to four hex digits, compare the first
    prefixlen bits of the 32-nibble string."""
    left, right = f"split_part({t}, '::', 1)", f"split_part({t}, '::', 2)"
    lparts = f"(CASE WHEN {left} = '' THEN []::VARCHAR[] ELSE string_split({left}, ':') END)"
    rparts = f"(CASE WHEN {right} = '' THEN []::VARCHAR[] ELSE string_split({right}, ':') END)"
    groups = (f"(CASE WHEN contains({t}, '::') THEN list_concat({lparts}, "
              f"list_transform(range(greatest(0, 8 - len({lparts}) - len({rparts}))), "
              f"lambda x: '0'), {rparts}) ELSE string_split({t}, ':') END)")
    valid = (f"regexp_full_match({t}, '[0-9a-f:]+') AND len({groups}) = 8 AND "
             f"len(list_filter({groups}, lambda g: length(g) BETWEEN 1 AND 4)) = 8 AND "
             f"(length({t}) - length(replace({t}, '::', ''))) <= 2")
    hexs = f"list_aggregate(list_transform({groups}, lambda g: lpad(g, 4, '0')), 'string_agg', '')"
    full = net.network_address.exploded.replace(":", "")
    nibbles, bits = divmod(net.prefixlen, 4)
    conds = [f"starts_with({hexs}, {sql_str(full[:nibbles])})"] if nibbles else []
    if bits:
        mask = (0xF << (4 - bits)) & 0xF
        conds.append(f"(CAST(('0x' || substr({hexs}, {nibbles + 1}, 1)) AS INTEGER) & {mask})"
                     f" = {int(full[nibbles], 16) & mask}")
    test = " AND ".join(conds) or "true"
    return f"(CASE WHEN {valid} THEN {test} ELSE false END)"


_OPS: dict[CompareOperators, tuple[str, Callable[[float, float], bool]]] = {
    CompareOperators.LT: ("<", lambda a, b: a < b),
    CompareOperators.LTE: ("<=", lambda a, b: a <= b),
    CompareOperators.GT: (">", lambda a, b: a > b),
    CompareOperators.GTE: (">=", lambda a, b: a >= b),
    CompareOperators.NEQ: ("<>", lambda a, b: a != b),
}
_NUM_PY = re.compile(r"\s*[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?\s*")


@dataclass(frozen=True, slots=True)
class CompareLeaf(Leaf):
    spec: FieldSpec
    op: CompareOperators
    number: int | float

    def sql(self, lowered: Lowered) -> str:
        sym = _OPS[self.op][0]
        if self.spec.kind in ("int", "float"):
            return f"{self.spec.sql} {sym} {sql_num(self.number)}"
        t = text_sql(self.spec)
        return (f"(CASE WHEN regexp_full_match({t}, {sql_str(_NUM_PY.pattern)}) THEN "
                f"TRY_CAST(trim({t}) AS DOUBLE) {sym} {sql_num(self.number)} END)")

    def test(self, event: Mapping[str, Any]) -> bool:
        v = self.spec.value(event)
        if v is None or isinstance(v, bool):
            return False
        if isinstance(v, str):
            if _NUM_PY.fullmatch(v) is None:
                return False
            v = float(v)
        return bool(_OPS[self.op][1](v, self.number))


@dataclass(frozen=True, slots=True)
class NullLeaf(Leaf):
    spec: FieldSpec
    present: bool  # |exists: true  -> present; null / |exists: false -> absent

    def sql(self, lowered: Lowered) -> str:
        return f"({self.spec.sql} IS {'NOT ' if self.present else ''}NULL)"

    def test(self, event: Mapping[str, Any]) -> bool:
        return (self.spec.value(event) is not None) == self.present


@dataclass(frozen=True, slots=True)
class FieldRefLeaf(Leaf):
    spec: FieldSpec
    other: FieldSpec
    op: str  # eq, prefix, suffix

    def sql(self, lowered: Lowered) -> str:
        a, b = lowered(self.spec), lowered(self.other)
        return {"eq": f"{a} = {b}", "prefix": f"starts_with({a}, {b})",
                "suffix": f"suffix({a}, {b})"}[self.op]

    def test(self, event: Mapping[str, Any]) -> bool:
        a, b = text_py(self.spec.value(event)), text_py(self.other.value(event))
        if a is None or b is None:
            return False
        a, b = a.lower(), b.lower()
        return a == b if self.op == "eq" else a.startswith(b) if self.op == "prefix" \
            else a.endswith(b)


@dataclass(frozen=True, slots=True)
class AnyLeaf(Leaf):
    """OR of leaves (keywords over several columns)."""

    leaves: tuple[Leaf, ...]

    def sql(self, lowered: Lowered) -> str:
        return "(" + " OR ".join(leaf.sql(lowered) for leaf in self.leaves) + ")" \
            if self.leaves else "false"

    def test(self, event: Mapping[str, Any]) -> bool:
        return any(leaf.test(event) for leaf in self.leaves)


def regex_pattern(value: SigmaRegularExpression) -> str:
    flags = "".join(sorted(SigmaRegularExpression.sigma_to_re_flag[f] for f in value.flags
                           if isinstance(f, SigmaRegularExpressionFlag)))
    text = value.regexp.to_plain() if isinstance(value.regexp, SigmaString) \
        else str(value.regexp)
    lead = re.match(r"\(\?([ims]+)\)", text)  # merge the pattern's own leading flags
    if lead:
        flags = "".join(sorted(set(flags) | set(lead.group(1))))
        text = text[lead.end():]
    return (f"(?{flags})" if flags else "") + text


def field_leaf(spec: FieldSpec | None, value: SigmaType,
               resolve: Callable[[str], FieldSpec | None]) -> Leaf:
    """The leaf for ``field: value`` (``spec`` None: a field we do not store)."""
    spec = spec or ABSENT
    if isinstance(value, SigmaString):
        return StrLeaf(spec, Pattern.of(value, cased=isinstance(value, SigmaCasedString)),
                       isinstance(value, SigmaCasedString))
    if isinstance(value, SigmaBool):
        if spec.kind == "bool":
            return StrLeaf(spec, Pattern("eq", "true" if value.boolean else "false"), False)
        return StrLeaf(spec, Pattern("eq", "true" if value.boolean else "false"), False)
    if isinstance(value, SigmaNumber):
        if spec.kind in ("int", "float"):
            return NumEqLeaf(spec, value.number)
        return StrLeaf(spec, Pattern("eq", str(value.number).lower()), False)
    if isinstance(value, SigmaRegularExpression):
        return RegexLeaf(spec, regex_pattern(value))
    if isinstance(value, SigmaCIDRExpression):
        return CidrLeaf(spec, value.network)
    if isinstance(value, SigmaCompareExpression):
        return CompareLeaf(spec, value.op, value.number.number)
    if isinstance(value, SigmaNull):
        return NullLeaf(spec, False)
    if isinstance(value, SigmaExists):
        return NullLeaf(spec, bool(value.exists))
    if isinstance(value, SigmaFieldReference):
        op = ("eq" if value.starts_with == value.ends_with else
              "prefix" if value.starts_with else "suffix")
        if value.starts_with and value.ends_with:
            raise SigmaValueError("|fieldref with both startswith and endswith is not supported")
        return FieldRefLeaf(spec, resolve(value.field) or ABSENT, op)
    raise SigmaValueError(f"values of type {type(value).__name__} are not supported")


def keyword_leaf(specs: tuple[FieldSpec, ...], value: SigmaType) -> Leaf:
    """An unnamed value: true when any keyword column contains it."""
    if isinstance(value, SigmaNumber):
        value = SigmaString(str(value.number))
    if isinstance(value, SigmaString):
        pat = Pattern.of(value, cased=isinstance(value, SigmaCasedString), implicit_contains=True)
        return AnyLeaf(tuple(StrLeaf(s, pat, isinstance(value, SigmaCasedString))
                             for s in specs))
    if isinstance(value, SigmaRegularExpression):
        return AnyLeaf(tuple(RegexLeaf(s, regex_pattern(value)) for s in specs))
    raise SigmaValueError(f"keyword values of type {type(value).__name__} are not supported")
