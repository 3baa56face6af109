"""STIX 2.1 bundles (hopguard.intel.stix)."""

from __future__ import annotations

import json
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from hopguard.intel.stix import _pattern_values
from tests.conftest import DATA
from tests.unit.intel import reading
from tests.unit.intel.reading import Read

BUNDLE = DATA / "intel" / "stix-bundle.json"
CERT = "Sample CERT"


def read(path: Path, **options: Any) -> Read:
    return reading.read(path, "stix", **options)


def test_bundle_counts() -> None:
    r = read(BUNDLE)
    assert Counter(x["kind"] for x in r.rows) == {"ip": 6, "domain": 3, "url": 1}
    assert [(loc.record, msg.split(": ")[1]) for loc, msg in r.errors] == [
        (11, "pattern does not parse")]
    assert [loc.record for loc, _ in r.notes] == [5, 6, 8, 12]
    assert r.notes[0][1].endswith(": revoked")
    assert "file:hashes.SHA-256" in r.notes[1][1]
    assert "'snort'" in r.notes[2][1]
    assert "benign" in r.notes[3][1]
    assert "192.0.2.66" not in {x["value"] for x in r.rows}  # revoked
    assert "updates.example" not in {x["value"] for x in r.rows}  # benign


def test_simple_indicator_fields() -> None:
    row = read(BUNDLE).by_value("198.51.100.7")
    assert row == {
        "kind": "ip", "value": "198.51.100.7", "prefix": 32, "match": "exact",
        "category": "c2", "label": "C2 server of Sample RAT", "confidence": 0.85,
        "source": CERT, "first_seen": datetime(2025, 2, 1, 10),
        "last_seen": datetime(2025, 2, 3, 11, 30), "expires": None,
        "detail": "indicator--a0d1b2c3-0000-4000-8000-000000000002", "record": 2}


def test_or_pattern_and_indicator_types_category() -> None:
    r = read(BUNDLE)
    dom, v6 = r.by_value("anon-gateway.example"), r.by_value("2001:db8::bad")
    assert (dom["kind"], v6["kind"], v6["prefix"]) == ("domain", "ip", 128)
    assert dom["category"] == v6["category"] == "proxy"  # indicator_types anonymization
    assert dom["record"] == v6["record"] == 3


def test_and_pattern_url_host_and_valid_until() -> None:
    r = read(BUNDLE)
    url = r.by_value("https://login.example.net/Portal?id=1")
    host = r.by_value("login.example.net")
    ip = r.by_value("203.0.113.40")
    assert (url["kind"], host["kind"], host["match"]) == ("url", "domain", "exact")
    for row in (url, host, ip):
        assert row["expires"] == datetime(2025, 4, 4, 9)
        assert row["detail"] == "indicator--a0d1b2c3-0000-4000-8000-000000000004"


def test_in_list_issubset_and_labels() -> None:
    r = read(BUNDLE)
    rows = [x for x in r.rows if x["record"] == 7]
    assert sorted((x["value"], x["prefix"]) for x in rows) == [
        ("192.0.2.101", 32), ("192.0.2.102", 32), ("203.0.113.128/25", 25)]
    assert {(x["category"], x["label"], x["confidence"]) for x in rows} == {
        ("tor_exit", "tor-exit", 0.95)}


def test_source_without_creator_is_the_bundle_and_created_is_last_seen() -> None:
    row = read(BUNDLE).by_value("paypal-login.example.org")
    assert row["source"] == "bundle--5d0092c5-5f74-4287-9642-33f4c354e56d"
    assert (row["label"], row["category"], row["confidence"]) == ("phishing", "ioc", 0.5)
    assert row["last_seen"] == datetime(2025, 2, 13)


def test_options_override() -> None:
    r = read(BUNDLE, confidence=0.3, domain_match="suffix", category="ioc")
    assert {x["confidence"] for x in r.rows} == {0.3}
    assert {x["category"] for x in r.rows} == {"ioc"}
    assert {x["match"] for x in r.rows if x["kind"] == "domain"} == {"suffix"}
    assert {x["match"] for x in r.rows if x["kind"] != "domain"} == {"exact"}


def test_single_object_and_plain_list(tmp_path: Path) -> None:
    doc = json.loads(BUNDLE.read_text())
    one = tmp_path / "one.json"
    one.write_text(json.dumps(doc["objects"][1]))
    r = read(one)
    assert [(x["value"], x["record"], x["source"]) for x in r.rows] == [
        ("198.51.100.7", 1, str(one))]  # the identity object is not in this file
    many = tmp_path / "many.json"
    many.write_text(json.dumps(doc["objects"]))
    r = read(many)
    assert len(r.rows) == 10 and {x["source"] for x in r.rows} == {
        CERT, str(many)}


def test_bad_values_are_located_errors(tmp_path: Path) -> None:
    objs = [
        {"type": "indicator", "id": "indicator--1", "pattern_type": "stix",
         "pattern": "[ipv4-addr:value = '192.0.2.999']", "valid_from": "2025-01-01T00:00:00Z"},
        {"type": "indicator", "id": "indicator--2", "pattern": "[domain-name:value = 'a.example']",
         "valid_from": "yesterday"},
        {"type": "indicator", "id": "indicator--3", "pattern": "[domain-name:value = 'b.example']",
         "valid_from": "2025-01-01T00:00:00Z", "confidence": 300},
        "not an object",
        {"type": "indicator", "id": "indicator--5", "pattern": "[domain-name:value = 'c.example']",
         "valid_from": "2025-01-01T00:00:00Z"},
    ]
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"type": "bundle", "id": "bundle--x", "objects": objs}))
    r = read(path)
    assert [x["value"] for x in r.rows] == ["c.example"]
    assert [loc.record for loc, _ in r.errors] == [1, 2, 3, 4]


def test_not_stix(tmp_path: Path) -> None:
    for text in ("{not json", '{"Event": {}}', "42"):
        path = tmp_path / "x.json"
        path.write_text(text)
        r = read(path)
        assert r.rows == [] and len(r.errors) == 1, text


@pytest.mark.parametrize("pattern", [
    "[ipv4-addr:value = '198.51.100.7']", "[ipv6-addr:value='2001:DB8::1']",
    "[domain-name:value = 'Example.COM']", "[url:value = 'http://a.example/it\\'s']",
    "[url:value = 'http://a.example/back\\\\slash']", "[domain-name:value = 'bad..example']",
    "[url:value = 'http://a.example/\\n']", "[ipv4-addr:value = '192.0.2.1'",
    "[ipv4-addr:value = '10.0.0.0/8']"])
def test_simple_pattern_shortcut_equals_the_grammar(pattern: str) -> None:
    def run(grammar: bool) -> object:
        try:
            return _pattern_values(pattern, grammar=grammar)
        except ValueError as exc:
            return type(exc)
    assert run(False) == run(True)
