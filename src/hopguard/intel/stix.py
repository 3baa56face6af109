"""STIX 2.1 indicators: a bundle (or one indicator object, or a JSON list of objects) in,
ip, domain and url indicators out.

Theory of operation. Only ``indicator`` objects with ``pattern_type`` stix (the default in
STIX 2.0) are read; every other object is ignored, except ``identity`` objects, whose ``name``
becomes the ``source`` of the indicators that point at them with ``created_by_ref`` (else the
bundle's id, else the file). Revoked indicators and those whose ``indicator_types`` say benign
are skipped with a note, not an error.

A pattern is parsed by the reference grammar (``stix2patterns``, STIX 2.1 part 9) and its
comparison expressions are read through ``Pattern.inspect()``, which lists, per object type,
the ``(property path, operator, literal)`` triples. We take:

* ``ipv4-addr:value`` and ``ipv6-addr:value`` with ``=``, ``IN (...)`` or ``ISSUBSET`` (an
  address or a CIDR network) -> kind ip;
* ``domain-name:value`` with ``=`` or ``IN`` -> kind domain, match exact (or
  ``FeedOptions.domain_match``);
* ``url:value`` with ``=`` or ``IN`` -> kind url holding the URL (scheme and host
  lower-cased), *and* an indicator for its host (domain exact, or ip for an address
  literal), so that matchers that only see host names (TLS SNI, DNS, proxy CONNECT) match.

Every value a pattern names becomes its own indicator: ``[a] OR [b]`` and ``[a AND b]`` both
yield a and b. For AND that over-approximates (an indicator that needed both observables now
fires on either), which is the useful reading for network matching, where the other half is
usually a file hash we cannot see. Comparisons on other objects or with other operators (LIKE,
MATCHES, NOT, ...) are ignored; a pattern that leaves nothing is skipped with a note. STIX has
no standard object for JA3/JA4 fingerprints, so none are read.

Field mapping: ``valid_from`` -> first_seen, ``modified`` (else ``created``) -> last_seen,
``valid_until`` -> expires, ``confidence`` (0-100) -> 0-1 (default 0.5), ``name`` (else the
first of ``labels``) -> label, the STIX id -> detail. Category: keywords in ``labels`` or
``name`` (:func:`feeds.category_from_words`: tor, vpn, proxy, c2 ...), else
``indicator_types`` (anonymization -> proxy, anything else -> ioc). Locations are
``record`` = the object's position in the bundle, counting from 1.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pyarrow as pa
from stix2patterns.v21.pattern import Pattern

from hopguard.intel.feeds import (
    LIST_CONFIDENCE,
    ReadContext,
    address_value,
    batches,
    category_from_words,
    parse_time,
    read_json,
    url_indicators,
)
from hopguard.intel.model import Indicator, domain_value

_STRING = re.compile(r"'((?:[^'\\]|\\.)*)'")
# One equality on an object's value, nothing else (see _pattern_values).
_SIMPLE = re.compile(r"^\[(ipv4-addr|ipv6-addr|domain-name|url):value ?= ?"
                     r"'((?:[^'\\]|\\['\\])*)'\]$")
_TYPE_CATEGORY = {"anonymization": "proxy"}
_IP_OPS = ("=", "IN", "ISSUBSET")
_NAME_OPS = ("=", "IN")


def read_stix(ctx: ReadContext) -> Iterator[pa.Table]:
    """Indicators of a STIX 2.x bundle, a single indicator object or a list of objects."""
    yield from batches(_stix(ctx))


def _objects(ctx: ReadContext) -> tuple[list[Any], str] | None:
    ok, doc = read_json(ctx)
    if not ok:
        return None
    if isinstance(doc, dict) and doc.get("type") == "bundle":
        objects = doc.get("objects", [])
        if not isinstance(objects, list):
            ctx.error(ctx.whole(), "the bundle's objects is not a list")
            return None
        bundle_id = doc.get("id")
        return objects, bundle_id if isinstance(bundle_id, str) else str(ctx.path)
    if isinstance(doc, dict) and isinstance(doc.get("type"), str) and "id" in doc:
        return [doc], str(ctx.path)
    if isinstance(doc, list):
        return doc, str(ctx.path)
    ctx.error(ctx.whole(), "not a STIX bundle, object or list of objects")
    return None


def _stix(ctx: ReadContext) -> Iterator[Indicator]:
    got = _objects(ctx)
    if got is None:
        return
    objects, default_source = got
    identities = {o["id"]: o["name"] for o in objects
                  if isinstance(o, dict) and o.get("type") == "identity"
                  and isinstance(o.get("id"), str) and isinstance(o.get("name"), str)}
    for i, obj in enumerate(objects, start=1):
        if not isinstance(obj, dict):
            ctx.error(ctx.at_record(i), "not a JSON object")
            continue
        if obj.get("type") != "indicator":
            continue
        try:
            yield from _indicator(ctx, obj, i, identities, default_source)
        except ValueError as exc:
            ctx.error(ctx.at_record(i), f"{_sid(obj)}: {exc}")


def _sid(obj: dict[str, Any]) -> str:
    v = obj.get("id")
    return v[:80] if isinstance(v, str) else "indicator"


def _time(obj: dict[str, Any], key: str) -> datetime | None:
    v = obj.get(key)
    if v is None:
        return None
    if not isinstance(v, str):
        raise ValueError(f"{key} is not a timestamp string")
    return parse_time(v)


def _strings(obj: dict[str, Any], key: str) -> list[str]:
    v = obj.get(key)
    if v is None:
        return []
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise ValueError(f"{key} is not a list of strings")
    return [str(x) for x in v]


def _indicator(ctx: ReadContext, obj: dict[str, Any], i: int, identities: dict[str, str],
               default_source: str) -> Iterator[Indicator]:
    sid = _sid(obj)
    if obj.get("revoked") is True:
        ctx.note(ctx.at_record(i), f"{sid}: revoked")
        return
    types = [t.lower() for t in _strings(obj, "indicator_types")]
    if "benign" in types:
        ctx.note(ctx.at_record(i), f"{sid}: indicator_types says benign")
        return
    pattern_type = obj.get("pattern_type", "stix")
    if pattern_type != "stix":
        ctx.note(ctx.at_record(i), f"{sid}: pattern_type {str(pattern_type)[:40]!r} is not read")
        return
    pattern = obj.get("pattern")
    if not isinstance(pattern, str):
        raise ValueError("no pattern")
    values, ignored = _pattern_values(pattern)
    if not values:
        what = ", ".join(sorted(ignored)) or "nothing"
        ctx.note(ctx.at_record(i), f"{sid}: pattern names no address, domain or URL we can "
                 f"match ({what[:200]})")
        return
    labels = _strings(obj, "labels")
    name = obj.get("name") if isinstance(obj.get("name"), str) else ""
    category = (category_from_words(labels) or category_from_words([str(name)])
                or next((_TYPE_CATEGORY[t] for t in types if t in _TYPE_CATEGORY), "ioc"))
    conf = obj.get("confidence")
    if conf is None:
        confidence = LIST_CONFIDENCE
    elif isinstance(conf, int | float) and not isinstance(conf, bool) and 0 <= conf <= 100:
        confidence = conf / 100
    else:
        raise ValueError(f"confidence is not 0-100: {str(conf)[:20]}")
    creator = obj.get("created_by_ref")
    source = identities.get(creator, default_source) if isinstance(creator, str) \
        else default_source
    first = _time(obj, "valid_from")
    last = _time(obj, "modified") or _time(obj, "created")
    expires = _time(obj, "valid_until")
    label = str(name) or (labels[0] if labels else "")
    default_match = ctx.options.domain_match or "exact"
    emitted: set[tuple[str, str]] = set()
    for kind, value, prefix in values:
        if (kind, value) in emitted:
            continue
        emitted.add((kind, value))
        yield ctx.make(kind=kind, value=value, prefix=prefix,
                       match=default_match if kind == "domain" else "exact",
                       category=category, label=label, confidence=confidence, source=source,
                       first_seen=first, last_seen=last, expires=expires, detail=sid, line=i)


def _literals(text: str, op: str) -> list[str]:
    """The string values of a comparison's right-hand side (one, or an IN list)."""
    if op == "IN":
        return [_unescape(m) for m in _STRING.findall(text)]
    m = _STRING.fullmatch(text.strip())
    if m is None:
        raise ValueError(f"not a string literal: {text[:60]!r}")
    return [_unescape(m.group(1))]


def _unescape(s: str) -> str:
    return s.replace("\\'", "'").replace("\\\\", "\\")


def _pattern_values(pattern: str, *, grammar: bool = False
                    ) -> tuple[list[tuple[str, str, int | None]], set[str]]:
    """``([(kind, canonical value, prefix)], {ignored comparisons})`` of a STIX pattern.
    Raises ValueError for a pattern the grammar rejects or a value that is not canonical.

    Most feeds write one comparison per indicator (``[ipv4-addr:value = '192.0.2.1']``).
    The ANTLR parser takes ~0.4 ms a pattern (40 s for a bundle of 100,000), so that shape is
    read by a regex that accepts exactly the grammar's string literal (only ``\\'`` and
    ``\\\\`` escapes); ``grammar=True`` forces the parser (the tests compare the two)."""
    simple = None if grammar else _SIMPLE.match(pattern)
    if simple is not None:
        comparisons = {simple.group(1): [(["value"], "=", f"'{simple.group(2)}'")]}
    else:
        try:
            comparisons = Pattern(pattern).inspect().comparisons
        except Exception as exc:  # the ANTLR runtime raises assorted errors, not one class
            raise ValueError(f"pattern does not parse: {str(exc)[:200]}") from None
    out: list[tuple[str, str, int | None]] = []
    ignored: set[str] = set()
    for otype, comparisons_of in comparisons.items():
        for path, op, literal in comparisons_of:
            where = f"{otype}:{'.'.join(str(p) for p in path)} {op}"
            prop = path == ["value"]
            if otype in ("ipv4-addr", "ipv6-addr") and prop and op in _IP_OPS:
                for v in _literals(literal, op):
                    value, prefix = address_value(v)
                    out.append(("ip", value, prefix))
            elif otype == "domain-name" and prop and op in _NAME_OPS:
                for v in _literals(literal, op):
                    out.append(("domain", domain_value(v)[0], None))
            elif otype == "url" and prop and op in _NAME_OPS:
                for v in _literals(literal, op):
                    url, host = url_indicators(v)
                    out.append(("url", url, None))
                    out.append(host)
            else:
                ignored.add(where)
    return out, ignored

