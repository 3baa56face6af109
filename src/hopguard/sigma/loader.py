"""Loading Sigma rule files: YAML documents -> parsed, mapped, SQL-ready :class:`Rule` values.

Theory of operation: :func:`load_rules` walks the given files and directories (``*.yml``,
``*.yaml``, sorted), splits each file into YAML documents itself (so every document knows the
line it starts on), applies Sigma collection actions (``action: global`` merged into the
documents that follow until ``action: reset``; ``action: repeat`` merged with the previous one),
and parses each rule with pySigma in collect-errors mode. A rule that cannot run - YAML syntax,
an unknown modifier, a bad condition, a logsource we do not keep, a value we cannot evaluate - is
reported as a :class:`hopguard.errors.RuleError` located at ``file:line`` (the YAML mark, or the
line of the offending key found in the document's text) and the others still load. Problems that
do not stop a rule (a field we do not store, a non-UUID id, a bad date) become notes.

Each loaded rule is converted twice by :class:`~hopguard.sigma.backend.DuckDBBackend`: once
over ``lower(col)`` (``Rule.condition``, a standalone boolean over the table's columns) and once
over columns lower-cased once per row by the one-scan compiler (``Rule.scan_condition``). The
parsed condition trees stay with the rule (``Rule.trees``) for the Python reference matcher.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from sigma.exceptions import (
    SigmaAuthorError,
    SigmaDateError,
    SigmaDescriptionError,
    SigmaError,
    SigmaFalsePositivesError,
    SigmaFieldsError,
    SigmaIdentifierError,
    SigmaLevelError,
    SigmaLicenseError,
    SigmaModifiedError,
    SigmaModifierError,
    SigmaReferencesError,
    SigmaRelatedError,
    SigmaStatusError,
    SigmaTagError,
    SigmaTitleError,
)
from sigma.rule import SigmaRule

from hopguard.errors import RuleError, SourceLocation
from hopguard.sigma.backend import ConditionNode, DuckDBBackend
from hopguard.sigma.fields import FieldSpec, LogsourceError, quote_ident, resolve_logsource, sql_col
from hopguard.sigma.semantics import sql_str, text_sql

logger = logging.getLogger(__name__)

LEVELS = ("informational", "low", "medium", "high", "critical")
LEVEL_RANK = {name: i for i, name in enumerate(LEVELS)}

# pySigma errors about metadata: the rule still runs, the user gets a note.
_META_ERRORS = (SigmaAuthorError, SigmaDateError, SigmaDescriptionError, SigmaFalsePositivesError,
                SigmaFieldsError, SigmaIdentifierError, SigmaLevelError, SigmaLicenseError,
                SigmaModifiedError, SigmaReferencesError, SigmaRelatedError, SigmaStatusError,
                SigmaTagError, SigmaTitleError)

_TECHNIQUE = re.compile(r"t\d{4}(\.\d{3})?", re.IGNORECASE)


def pack_dir() -> Path:
    """The Sigma pack shipped inside the package (``<platform>/*.yml``)."""
    return Path(__file__).resolve().parent.parent / "rules" / "sigma"


def scan_column(col: str) -> str:
    """The name of ``col`` lower-cased once per row in the one-scan query."""
    return f"__lc_{col}"


def _scan_lowered(spec: FieldSpec) -> str:
    if spec.derive is None and spec.kind == "str" and spec.name != "<absent>":
        return quote_ident(scan_column(spec.name))
    return f"lower({text_sql(spec)})"


@dataclass(frozen=True, slots=True, kw_only=True)
class Rule:
    """One loaded Sigma rule, ready to run over ``table``."""

    id: str
    title: str
    level: str  # informational | low | medium | high | critical
    status: str
    description: str
    tags: tuple[str, ...]
    techniques: tuple[str, ...]  # ("T1090.001", ...) from attack.t* tags
    analytics: tuple[str, ...]  # custom key: ("DET0445/AN1229", ...)
    tool: str  # custom key
    table: str  # process | netconn | config_change | dns
    condition: str  # DuckDB boolean over the table's columns
    path: str
    line: int
    falsepositives: tuple[str, ...] = ()
    references: tuple[str, ...] = ()
    scan_condition: str = ""  # the same over the one-scan query's lower-cased columns
    lowered: tuple[str, ...] = ()  # columns scan_condition reads lower-cased
    where: tuple[tuple[str, str], ...] = ()  # the logsource's row filter (column, value)
    absent: tuple[str, ...] = ()  # Sigma fields the rule names that we do not store
    trees: tuple[Any, ...] = field(default=(), compare=False, hash=False, repr=False)

    @property
    def location(self) -> str:
        return f"{self.path}:{self.line}"


@dataclass(slots=True)
class RuleSet:
    rules: list[Rule] = field(default_factory=list)
    errors: list[RuleError] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def by_table(self) -> dict[str, list[Rule]]:
        out: dict[str, list[Rule]] = {}
        for r in self.rules:
            out.setdefault(r.table, []).append(r)
        return out


# -- files and documents --------------------------------------------------------------------


@dataclass(slots=True)
class _Doc:
    path: str
    start: int  # 1-based line of the document's first line
    text: str

    def line_of(self, *patterns: str) -> int:
        """The file line of the first document line matching any pattern (regex), else the
        document's first line."""
        lines = self.text.splitlines()
        for pattern in patterns:
            rx = re.compile(pattern)
            for i, line in enumerate(lines):
                if rx.search(line):
                    return self.start + i
        first = next((i for i, line in enumerate(lines)
                      if line.strip() and not line.lstrip().startswith("#")), 0)
        return self.start + first


_DOC_SEP = re.compile(r"^---\s*(#.*)?$")


def _documents(path: str, text: str) -> list[_Doc]:
    docs: list[_Doc] = []
    start, buf = 1, list[str]()
    for i, line in enumerate(text.splitlines(), start=1):
        if _DOC_SEP.match(line):
            docs.append(_Doc(path, start, "\n".join(buf)))
            start, buf = i + 1, []
        else:
            buf.append(line)
    docs.append(_Doc(path, start, "\n".join(buf)))
    return [d for d in docs if d.text.strip() and any(
        ln.strip() and not ln.lstrip().startswith("#") for ln in d.text.splitlines())]


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _rule_files(paths: Sequence[Path], errors: list[RuleError]) -> list[Path]:
    files: list[Path] = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            files.extend(sorted(f for f in p.rglob("*") if f.is_file()
                                and f.suffix.lower() in (".yml", ".yaml")))
        elif p.is_file():
            files.append(p)
        else:
            errors.append(RuleError("no such Sigma rule file or directory",
                                    SourceLocation(path=str(p))))
    return files


def rule_paths(pack: bool, paths: Iterable[str | Path]) -> list[Path]:
    """Where rules are read from: the shipped pack (when on), then the given files and
    directories (``~`` expanded), in that order."""
    return ([pack_dir()] if pack else []) + [Path(p).expanduser() for p in paths]


def load_rules(paths: Sequence[Path], *, disabled: Collection[str] = (),
               min_level: str = "informational") -> RuleSet:
    """Load every rule under ``paths``; broken rules are reported with file:line."""
    out = RuleSet()
    floor = LEVEL_RANK.get(min_level.lower(), 0)
    off = {d.strip().lower() for d in disabled}
    seen: dict[str, str] = {}
    skipped = 0
    for f in _rule_files(paths, out.errors):
        try:
            text = f.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            out.errors.append(RuleError(f"cannot read rule file: {exc}",
                                        SourceLocation(path=str(f))))
            continue
        glob: dict[str, Any] = {}
        previous: dict[str, Any] | None = None
        for doc in _documents(str(f), text):
            try:
                data = yaml.safe_load(doc.text)
            except yaml.YAMLError as exc:
                mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
                line = doc.start + mark.line if mark is not None else doc.start
                problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
                out.errors.append(RuleError(f"YAML syntax error: {problem}",
                                            SourceLocation(path=str(f), line=line)))
                continue
            if not isinstance(data, dict):
                out.errors.append(RuleError("a Sigma rule document must be a mapping",
                                            SourceLocation(path=str(f), line=doc.start)))
                continue
            action = str(data.pop("action", "") or "").lower()
            if action == "global":
                glob = _merge(glob, data)
                continue
            if action == "reset":
                glob = {}
                continue
            if action == "repeat" and previous is not None:
                data = _merge(previous, data)
            elif glob:
                data = _merge(glob, data)
            previous = data
            rule = _load_one(data, doc, out)
            if rule is None:
                continue
            if rule.id.lower() in off or rule.title.strip().lower() in off \
                    or LEVEL_RANK[rule.level] < floor:
                skipped += 1
                continue
            if rule.id in seen:
                out.notes.append(f"sigma: rule {rule.id} at {rule.location} has the id of the "
                                 f"rule at {seen[rule.id]}; the second one is skipped")
                continue
            seen[rule.id] = rule.location
            out.rules.append(rule)
    if skipped:
        out.notes.append(f"sigma: {skipped} rules left out (disabled or below level "
                         f"{min_level})")
    return out


def _error_line(exc: Exception, doc: _Doc) -> int:
    msg = str(exc)
    if isinstance(exc, SigmaModifierError):
        m = re.search(r"modifier '([^']+)'", msg)
        if m:
            return doc.line_of(r"\|" + re.escape(m.group(1)) + r"\b")
        return doc.line_of(r"\|")
    if isinstance(exc, LogsourceError):
        key = msg.split()[0] if msg.split()[0] in ("service", "product") else "category"
        return doc.line_of(rf"^\s+{key}\s*:", r"^logsource\s*:")
    if "condition" in type(exc).__name__.lower():
        return doc.line_of(r"^\s+condition\s*:")
    m = re.search(r"'([^']+)'", msg)
    if m:
        return doc.line_of(re.escape(m.group(1)), r"^detection\s*:")
    return doc.line_of(r"^detection\s*:")


def _strs(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, (list, tuple)):
        return tuple(str(v) for v in value if v is not None)
    return (str(value),)


def _load_one(data: dict[str, Any], doc: _Doc, out: RuleSet) -> Rule | None:
    line = doc.line_of(r"^title\s*:")
    where = f"{doc.path}:{line}"

    def fail(msg: str, at: int) -> None:
        out.errors.append(RuleError(msg, SourceLocation(path=doc.path, line=at)))

    if "correlation" in data:
        fail("Sigma correlation rules are not supported", doc.line_of(r"^correlation\s*:"))
        return None
    if "filter" in data and "detection" not in data:
        fail("Sigma filter (meta) rules are not supported", doc.line_of(r"^filter\s*:"))
        return None
    try:
        rule = SigmaRule.from_dict(data, collect_errors=True)
    except (SigmaError, ValueError, TypeError, AttributeError, KeyError) as exc:
        fail(f"not a Sigma rule: {exc}", _error_line(exc, doc))
        return None
    meta = [e for e in rule.errors if isinstance(e, _META_ERRORS)]
    fatal = [e for e in rule.errors if not isinstance(e, _META_ERRORS)]
    if fatal:
        for err in fatal:
            fail(str(err), _error_line(err, doc))
        return None
    for err in meta:
        out.notes.append(f"sigma: {where}: {err} (the rule still runs)")
    ls = rule.logsource
    try:
        source = resolve_logsource(ls.category, ls.product, ls.service)
    except LogsourceError as exc:
        fail(f"unsupported logsource: {exc}", _error_line(exc, doc))
        return None
    try:
        trees = tuple(t for c in rule.detection.parsed_condition if (t := c.parsed) is not None)
    except (SigmaError, AttributeError) as exc:
        fail(f"bad condition: {exc}", _error_line(exc, doc) if isinstance(exc, SigmaError)
             else doc.line_of(r"^detection\s*:"))
        return None
    if not trees:
        fail("the rule has no condition", doc.line_of(r"^detection\s*:"))
        return None
    try:
        plain = DuckDBBackend(source.table)
        cond = _join([plain.condition_sql(t) for t in trees])
        lowered: set[str] = set()

        def scan_lowered(spec: FieldSpec) -> str:
            text = _scan_lowered(spec)
            if text.startswith('"'):
                lowered.add(spec.name)
            return text

        scan = DuckDBBackend(source.table, lowered=scan_lowered)
        scan_cond = _join([scan.condition_sql(t) for t in trees])
    except (SigmaError, ValueError, TypeError, NotImplementedError) as exc:
        fail(f"cannot convert: {exc}", _error_line(exc, doc))
        return None
    filt = " AND ".join(f"{sql_col(c)} = {sql_str(v)}" for c, v in source.where)
    if filt:
        cond, scan_cond = f"{filt} AND ({cond})", f"{filt} AND ({scan_cond})"
    absent = tuple(sorted(plain.absent))
    if absent:
        out.notes.append(f"sigma: {where} ({rule.title}): fields not stored by hopguard compare "
                         f"as absent: {', '.join(absent)}")
    rid = str(rule.id) if rule.id else str(data.get("id") or f"{Path(doc.path).name}:{line}")
    level = rule.level.name.lower() if rule.level is not None else "medium"
    if level not in LEVEL_RANK:
        level = "medium"
    custom = rule.custom_attributes or {}
    tags = tuple(f"{t.namespace}.{t.name}" for t in rule.tags)
    techniques = tuple(dict.fromkeys(
        t.name.upper() for t in rule.tags
        if t.namespace == "attack" and _TECHNIQUE.fullmatch(t.name)))
    return Rule(
        id=rid, title=str(rule.title or rid), level=level,
        status=rule.status.name.lower() if rule.status is not None else "",
        description=str(rule.description or ""), tags=tags, techniques=techniques,
        analytics=_strs(custom.get("analytics")), tool=str(custom.get("tool") or ""),
        table=source.table, condition=cond, path=doc.path, line=line,
        falsepositives=_strs(rule.falsepositives), references=_strs(rule.references),
        scan_condition=scan_cond, lowered=tuple(sorted(lowered)), where=source.where,
        absent=absent, trees=trees)


def _join(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else " OR ".join(f"({p})" for p in parts)


__all__ = ["LEVELS", "LEVEL_RANK", "ConditionNode", "Rule", "RuleSet", "load_rules", "pack_dir"]
