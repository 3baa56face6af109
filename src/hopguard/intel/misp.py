"""MISP events: JSON exports in, ip, domain, url and ja3 indicators out.

Theory of operation. A document is ``{"Event": {...}}``, ``{"response": [{"Event": ...},
...]}`` (the REST search result) or a JSON list of either (MISP core format,
draft-dulaunoy-misp-core-format). Each event's attributes are read from ``Event.Attribute``
and from ``Event.Object[].Attribute``, in file order; ``record`` N in a location is the Nth
attribute of the document, counting from 1 and counting skipped ones, so the numbers are
positions.

Attribute types used (the value of a composite ``a|b`` type is split on ``|``):

* ``ip-src``, ``ip-dst`` (an address or CIDR network), ``ip-src|port``, ``ip-dst|port`` (the
  address part) -> ip;
* ``domain``, ``hostname``, ``hostname|port`` (the name) -> domain, match exact (or
  ``FeedOptions.domain_match``); ``domain|ip`` -> a domain *and* an ip;
* ``url`` -> url, plus its host as a domain (or ip), as in stix.py;
* ``ja3-fingerprint-md5`` -> ja3; ``ja4-fingerprint`` (not in MISP's standard type list, read
  if present) -> ja4.

Other types (hashes, e-mail addresses, ...) are counted in one note per event. Skipped with a
note each: deleted attributes (and all attributes of a deleted object), and - unless
``FeedOptions.require_to_ids`` is false - attributes whose ``to_ids`` flag is false, since
MISP marks with it the attributes meant for detection (context such as a sandbox's resolver
address carries ``to_ids: false``).

Field mapping: first_seen / last_seen from the attribute's ISO ``first_seen`` / ``last_seen``
(MISP 2.4.125+), each else the attribute's ``timestamp`` (epoch seconds); confidence from the
event's ``threat_level_id`` (1 high 0.9, 2 medium 0.7, 3 low 0.5, 4 undefined 0.5); category
from keywords (:func:`feeds.category_from_words`) in the attribute's tags, its object's name
(``tor-node``) or the event's tags, else ioc; label = the attribute's comment, else the
event's ``info``; source = "<Orgc.name (else Org.name)> MISP event <uuid>"; detail =
``attribute=<uuid> event=<id>``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pyarrow as pa

from hopguard.intel.feeds import (
    ReadContext,
    address_value,
    batches,
    category_from_words,
    parse_time,
    read_json,
    url_indicators,
)
from hopguard.intel.model import Indicator, domain_value, hash_value

THREAT_CONFIDENCE = {"1": 0.9, "2": 0.7, "3": 0.5, "4": 0.5}
_DEFAULT_CONFIDENCE = 0.5
_IP_TYPES = frozenset({"ip-src", "ip-dst", "ip-src|port", "ip-dst|port"})
_NAME_TYPES = frozenset({"domain", "hostname", "hostname|port", "domain|port"})
USED_TYPES = _IP_TYPES | _NAME_TYPES | {"domain|ip", "url", "ja3-fingerprint-md5",
                                       "ja4-fingerprint"}


@dataclass(frozen=True, slots=True, kw_only=True)
class _EventFacts:
    """What every attribute of one event shares."""

    id: str
    source: str
    info: str
    confidence: float
    tags: list[str]


def read_misp(ctx: ReadContext) -> Iterator[pa.Table]:
    """Indicators of a MISP event export (see the module docstring)."""
    yield from batches(_misp(ctx))


def _events(ctx: ReadContext) -> list[Any] | None:
    ok, doc = read_json(ctx)
    if not ok:
        return None
    if isinstance(doc, dict) and isinstance(doc.get("response"), list):
        doc = doc["response"]
    items = doc if isinstance(doc, list) else [doc]
    events: list[Any] = []
    for item in items:
        if isinstance(item, dict) and "Event" in item:
            events.append(item["Event"])
        elif isinstance(item, dict) and ("Attribute" in item or "Object" in item):
            events.append(item)  # a bare event object
        else:
            events.append(None)
    if not any(isinstance(e, dict) for e in events):
        ctx.error(ctx.whole(), "not a MISP event export (no Event object)")
        return None
    return events


def _text(v: object) -> str:
    return v if isinstance(v, str) else str(v) if isinstance(v, int) else ""


def _tags(obj: dict[str, Any]) -> list[str]:
    out: list[str] = []
    for key in ("Tag", "EventTag", "AttributeTag"):
        tags = obj.get(key)
        if not isinstance(tags, list):
            continue
        for t in tags:
            if isinstance(t, dict) and isinstance(t.get("Tag"), dict):
                t = t["Tag"]
            if isinstance(t, dict) and isinstance(t.get("name"), str):
                out.append(t["name"])
    return out


def _facts(event: dict[str, Any]) -> _EventFacts:
    org = ""
    for key in ("Orgc", "Org"):
        o = event.get(key)
        if isinstance(o, dict) and isinstance(o.get("name"), str) and o["name"]:
            org = o["name"]
            break
    info = _text(event.get("info"))
    ident = _text(event.get("uuid")) or info or _text(event.get("id"))
    source = f"{org} MISP event {ident}" if org else f"MISP event {ident}"
    level = _text(event.get("threat_level_id"))
    return _EventFacts(id=_text(event.get("id")), source=source, info=info,
                       confidence=THREAT_CONFIDENCE.get(level, _DEFAULT_CONFIDENCE),
                       tags=_tags(event))


def _misp(ctx: ReadContext) -> Iterator[Indicator]:
    events = _events(ctx)
    if events is None:
        return
    record = 0
    for e, event in enumerate(events, start=1):
        if not isinstance(event, dict):
            ctx.error(ctx.whole(), f"item {e} of the document is not a MISP event")
            continue
        facts = _facts(event)
        unused: Counter[str] = Counter()
        first_record = record + 1
        for attr, obj_name, obj_deleted in _attributes(event):
            record += 1
            try:
                yield from _attribute(ctx, facts, attr, obj_name, obj_deleted, record, unused)
            except ValueError as exc:
                uuid = _text(attr.get("uuid")) if isinstance(attr, dict) else ""
                ctx.error(ctx.at_record(record), f"attribute {uuid or record}: {exc}")
        if unused:
            kinds = ", ".join(f"{t} x{c}" for t, c in unused.most_common())
            ctx.note(ctx.at_record(first_record),
                     f"{facts.source}: {sum(unused.values())} attributes of types we do "
                     f"not match ({kinds[:300]})")


def _attributes(event: dict[str, Any]) -> Iterator[tuple[Any, str, bool]]:
    """``(attribute, object name or "", object deleted)`` in file order."""
    attrs = event.get("Attribute")
    if isinstance(attrs, list):
        for a in attrs:
            yield a, "", False
    objects = event.get("Object")
    if isinstance(objects, list):
        for o in objects:
            if not isinstance(o, dict) or not isinstance(o.get("Attribute"), list):
                continue
            name = _text(o.get("name"))
            deleted = _flag(o.get("deleted"))
            for a in o["Attribute"]:
                yield a, name, deleted


def _flag(v: object) -> bool:
    """A MISP boolean: JSON true/false, or "1"/"0" and 1/0 from older exports."""
    if isinstance(v, str):
        return v.strip().lower() in ("1", "true")
    return bool(v) if isinstance(v, bool | int) else False


def _time(attr: dict[str, Any], key: str) -> datetime | None:
    v = attr.get(key)
    if v is None or v == "":
        return None
    if not isinstance(v, str | int | float):
        raise ValueError(f"{key} is not a time")
    return parse_time(v)


def _attribute(ctx: ReadContext, facts: _EventFacts, attr: object, obj_name: str,
               obj_deleted: bool, record: int, unused: Counter[str]) -> Iterator[Indicator]:
    if not isinstance(attr, dict):
        raise ValueError("not a JSON object")
    atype = attr.get("type")
    value = attr.get("value")
    if not isinstance(atype, str) or not isinstance(value, str):
        raise ValueError("type or value missing")
    uuid = _text(attr.get("uuid"))
    where = ctx.at_record(record)
    if _flag(attr.get("deleted")) or obj_deleted:
        ctx.note(where, f"attribute {uuid or record} ({atype}): deleted")
        return
    if atype not in USED_TYPES:
        unused[atype] += 1
        return
    if ctx.options.require_to_ids and not _flag(attr.get("to_ids")):
        ctx.note(where, f"attribute {uuid or record} ({atype}): to_ids is false")
        return
    stamp = _time(attr, "timestamp")
    first = _time(attr, "first_seen") or stamp
    last = _time(attr, "last_seen") or stamp
    category = (category_from_words(_tags(attr)) or category_from_words([obj_name])
                or category_from_words(facts.tags) or "ioc")
    comment = _text(attr.get("comment")).strip()
    detail = f"attribute={uuid} event={facts.id}"
    default_match = ctx.options.domain_match or "exact"
    for kind, canonical, prefix in _values(atype, value):
        yield ctx.make(kind=kind, value=canonical, prefix=prefix,
                       match=default_match if kind == "domain" else "exact",
                       category=category, label=comment or facts.info,
                       confidence=facts.confidence, source=facts.source, first_seen=first,
                       last_seen=last, detail=detail, line=record)


def _values(atype: str, value: str) -> list[tuple[str, str, int | None]]:
    """``[(kind, canonical value, prefix)]`` of one attribute value. Raises ValueError."""
    v = value.strip()
    if atype in _IP_TYPES:
        address = v.split("|", 1)[0] if "|" in atype else v
        canonical, prefix = address_value(address)
        return [("ip", canonical, prefix)]
    if atype in _NAME_TYPES:
        name = v.split("|", 1)[0] if "|" in atype else v
        return [("domain", domain_value(name)[0], None)]
    if atype == "domain|ip":
        name, sep, address = v.partition("|")
        if not sep:
            raise ValueError(f"domain|ip value without '|': {v[:80]!r}")
        canonical, prefix = address_value(address)
        return [("domain", domain_value(name)[0], None), ("ip", canonical, prefix)]
    if atype == "url":
        url, host = url_indicators(v)
        return [("url", url, None), host]
    if atype == "ja3-fingerprint-md5":
        return [("ja3", hash_value("ja3", v), None)]
    return [("ja4", hash_value("ja4", v), None)]  # ja4-fingerprint
