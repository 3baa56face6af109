"""MISP event exports (hopguard.intel.misp)."""

from __future__ import annotations

import json
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

from tests.conftest import DATA
from tests.unit.intel import reading
from tests.unit.intel.reading import Read

EVENT = DATA / "intel" / "misp-event.json"
SOURCE = "Sample ISAC MISP event 5f0c1a2b-3c4d-4e5f-8a9b-0c1d2e3f4a5b"
INFO = "Sample intrusion set: relay and proxy infrastructure"


def read(path: Path, **options: Any) -> Read:
    return reading.read(path, "misp", **options)


def test_event_counts_errors_and_notes() -> None:
    r = read(EVENT)
    assert Counter(x["kind"] for x in r.rows) == {"ip": 4, "domain": 3, "url": 1, "ja3": 1}
    assert [(loc.record, msg) for loc, msg in r.errors] == [
        (9, "attribute a1000000-0000-4000-8000-000000000009: '192.0.2.300' does not appear "
            "to be an IPv4 or IPv6 address")]
    notes = {loc.record: msg for loc, msg in r.notes}
    assert sorted(notes) == [1, 4, 10, 15]
    assert notes[4].endswith("(hostname): to_ids is false")
    assert notes[10].endswith("(ip-dst): deleted")
    assert notes[15].endswith("(domain): deleted")  # its object is deleted
    assert "4 attributes of types we do not match (text x2, md5 x1, sha256 x1)" in notes[1]


def test_attribute_fields() -> None:
    r = read(EVENT)
    assert r.by_value("198.51.100.23") == {
        "kind": "ip", "value": "198.51.100.23", "prefix": 32, "match": "exact",
        "category": "c2", "label": "C2 callback", "confidence": 0.7, "source": SOURCE,
        "first_seen": datetime(2025, 3, 1), "last_seen": datetime(2025, 3, 1),
        "expires": None, "detail": "attribute=a1000000-0000-4000-8000-000000000001 event=1234",
        "record": 1}
    port = r.by_value("203.0.113.44")  # ip-src|port, with ISO first/last seen
    assert (port["category"], port["label"], port["first_seen"], port["last_seen"]) == (
        "proxy", INFO, datetime(2025, 2, 20, 10), datetime(2025, 2, 28, 18, 30))
    assert r.by_value("c2.bad.example")["category"] == "ioc"  # lower-cased, no tag
    assert r.by_value("c2.bad.example")["first_seen"] == datetime(2025, 2, 28)


def test_composite_url_ja3_and_object_attributes() -> None:
    r = read(EVENT)
    assert {(x["kind"], x["category"]) for x in r.rows if x["record"] == 5} == {
        ("domain", "tor_relay"), ("ip", "tor_relay")}
    assert {x["value"] for x in r.rows if x["record"] == 6} == {
        "http://dl.bad.example/payload.bin", "dl.bad.example"}
    assert r.by_value("9b25b2f9e2d25e683fce65f5b6d3fbe0")["kind"] == "ja3"
    node = r.by_value("203.0.113.60")  # from the tor-node object
    assert (node["category"], node["record"]) == ("tor_relay", 12)


def test_to_ids_false_can_be_included() -> None:
    r = read(EVENT, require_to_ids=False)
    assert r.by_value("vpn-gw.bad.example")["label"] == "sandbox resolver"
    assert len(r.rows) == 10


def test_threat_level_and_option_confidence(tmp_path: Path) -> None:
    doc = json.loads(EVENT.read_text())
    doc["Event"]["threat_level_id"] = "1"
    path = tmp_path / "e.json"
    path.write_text(json.dumps(doc))
    assert {x["confidence"] for x in read(path).rows} == {0.9}
    assert {x["confidence"] for x in read(path, confidence=0.2).rows} == {0.2}


def test_response_and_list_wrappers(tmp_path: Path) -> None:
    doc = json.loads(EVENT.read_text())
    second = json.loads(json.dumps(doc))
    second["Event"]["uuid"] = "second"
    second["Event"].pop("Orgc")
    for name, wrapped in (("resp.json", {"response": [doc, second]}),
                          ("list.json", [doc, second])):
        path = tmp_path / name
        path.write_text(json.dumps(wrapped))
        r = read(path)
        assert len(r.rows) == 18
        assert {x["source"] for x in r.rows} == {SOURCE, "Local Org MISP event second"}
        assert sorted({loc.record for loc, _ in r.errors}) == [9, 24]  # 15 attributes each


def test_not_misp(tmp_path: Path) -> None:
    for text in ("[1, 2", '{"type": "bundle", "objects": []}', "[]", '{"response": []}'):
        path = tmp_path / "x.json"
        path.write_text(text)
        r = read(path)
        assert r.rows == [] and len(r.errors) == 1, text
