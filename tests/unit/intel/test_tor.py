"""Tor feeds: consensus, microdesc consensus, TorDNSEL and Onionoo (hopguard.intel.tor)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from tests.conftest import DATA
from tests.unit.intel.reading import read

INTEL = DATA / "intel"


def write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


# -- consensus -----------------------------------------------------------------------------

def test_consensus_sample_counts_and_errors() -> None:
    r = read(INTEL / "tor-consensus.txt", "tor-consensus")
    assert len(r.rows) == 13  # 9 good routers: 9 r-line addresses and 4 "a" addresses
    assert r.categories() == {"tor_exit": 7, "tor_relay": 6}
    assert [(loc.line, msg.split(":")[0]) for loc, msg in r.errors] == [
        (61, "r line"), (67, "a line")]
    assert "identity is not base64" in r.errors[0][1]
    assert {r["kind"] for r in r.rows} == {"ip"}
    assert "192.0.2.90" not in {x["value"] for x in r.rows}  # the broken router's entry
    assert "2001:db8:90::9" not in {x["value"] for x in r.rows}


def test_consensus_router_fields() -> None:
    r = read(INTEL / "tor-consensus.txt", "tor-consensus")
    alpha = r.by_value("192.0.2.10")
    assert alpha == {
        "kind": "ip", "value": "192.0.2.10", "prefix": 32, "match": "exact",
        "category": "tor_relay", "label": "Alpha", "confidence": 0.9,
        "source": "tor consensus 2025-03-01 12:00:00",
        "first_seen": datetime(2025, 3, 1, 12), "last_seen": datetime(2025, 3, 1, 12),
        "expires": datetime(2025, 3, 1, 15),
        "detail": "or_port=9001 dir_port=9030 flags=Fast,Guard,Running,Stable,V2Dir,Valid "
                  "fingerprint=58061AA544398A798E33181A443B15B7746FAB16",
        "record": 16}
    assert r.by_value("2001:db8::10")["record"] == 17
    assert r.by_value("2001:db8::10")["prefix"] == 128
    golf_v6 = r.by_value("2001:db8:70::8")
    assert golf_v6["category"] == "tor_exit"
    assert golf_v6["detail"].startswith("or_port=443 dir_port=0 flags=Exit,Running,Valid ")
    assert r.by_value("198.51.100.30")["category"] == "tor_relay"  # BadExit
    assert r.by_value("198.51.100.100")["category"] == "tor_exit"  # its bad "a" line aside


def test_microdesc_consensus() -> None:
    r = read(INTEL / "tor-microdesc.txt", "tor-microdesc")
    assert len(r.rows) == 10
    assert r.errors == []
    assert r.categories() == {"tor_exit": 4, "tor_relay": 6}
    bravo = r.by_value("192.0.2.20")
    assert bravo["source"] == "tor microdesc consensus 2025-03-02 00:00:00"
    assert (bravo["first_seen"], bravo["expires"]) == (datetime(2025, 3, 2),
                                                      datetime(2025, 3, 2, 3))
    assert bravo["detail"].endswith("fingerprint=F8B83DDE53D52771DDA7582ED1B5F5928DEC9B2F")


def test_the_document_decides_the_flavour() -> None:
    r = read(INTEL / "tor-microdesc.txt", "tor-consensus")
    assert len(r.rows) == 10 and r.errors == []


def test_microdesc_r_line_in_a_full_consensus_is_an_error(tmp_path: Path) -> None:
    text = (INTEL / "tor-microdesc.txt").read_text().replace(
        "network-status-version 3 microdesc", "network-status-version 3")
    r = read(write(tmp_path, "c.txt", text), "tor-consensus")
    assert r.rows == []
    assert len(r.errors) == 8
    assert "7 fields, expected 8" in r.errors[0][1]


def test_not_a_consensus_is_one_error(tmp_path: Path) -> None:
    for text in ("hello\nr a b c d e f g h\n", "", "network-status-version 2\n"):
        r = read(write(tmp_path, "n.txt", text), "tor-consensus")
        assert r.rows == [] and len(r.errors) == 1
        assert r.errors[0][0].line == 1


def test_options_override_the_consensus() -> None:
    when = datetime(2030, 1, 1)
    r = read(INTEL / "tor-consensus.txt", "tor-consensus", category="tor_relay",
             expires=when, source="mirror")
    assert {(x["category"], x["expires"], x["source"]) for x in r.rows} == {
        ("tor_relay", when, "mirror")}
    assert r.by_value("192.0.2.10")["label"] == "Alpha"


# -- TorDNSEL ------------------------------------------------------------------------------

def test_tordnsel_sample() -> None:
    r = read(INTEL / "tordnsel-exit-addresses.txt", "tordnsel")
    assert sorted((x["value"], x["record"]) for x in r.rows) == [
        ("192.0.2.20", 6), ("198.51.100.100", 24), ("198.51.100.30", 28),
        ("198.51.100.41", 10), ("198.51.100.42", 11), ("203.0.113.70", 15)]
    assert r.categories() == {"tor_exit": 6}
    assert [loc.line for loc, _ in r.errors] == [16, 19, 23]
    row = r.by_value("198.51.100.42")
    assert (row["first_seen"], row["last_seen"], row["expires"]) == (
        datetime(2025, 3, 1, 11, 41, 42), datetime(2025, 3, 1, 11, 41, 42),
        datetime(2025, 3, 3, 11, 41, 42))
    assert row["detail"] == ("fingerprint=A4CBD21F4A3D17E82AD5CBCF3190E84DC97E8D7B "
                             "published=2025-03-01T08:40:44 last_status=2025-03-01T11:00:00")
    assert row["confidence"] == 0.9


def test_tordnsel_expiry_option() -> None:
    when = datetime(2025, 3, 1, 18)
    r = read(INTEL / "tordnsel-exit-addresses.txt", "tordnsel", expires=when)
    assert {x["expires"] for x in r.rows} == {when}


def test_not_an_exit_list(tmp_path: Path) -> None:
    r = read(write(tmp_path, "x.txt", "192.0.2.1\n192.0.2.2\n"), "tordnsel")
    assert r.rows == [] and [loc.line for loc, _ in r.errors] == [1]


# -- Onionoo -------------------------------------------------------------------------------

def test_onionoo_sample() -> None:
    r = read(INTEL / "onionoo-details.json", "onionoo")
    assert sorted(x["value"] for x in r.rows) == sorted([
        "192.0.2.20", "2001:db8:20::2", "192.0.2.21", "192.0.2.10", "198.51.100.30",
        "198.51.100.40", "2001:db8:40::1", "198.51.100.41", "203.0.113.120"])
    assert r.categories() == {"tor_exit": 6, "tor_relay": 3}
    assert [(loc.record, msg) for loc, msg in r.errors] == [
        (5, "'not-an-address' does not appear to be an IPv4 or IPv6 address")]
    assert len(r.notes) == 1 and r.notes[0][1].startswith("2 bridges skipped")
    bravo_exit = r.by_value("192.0.2.21")  # seen exiting from an address it does not listen on
    assert bravo_exit["category"] == "tor_exit" and bravo_exit["record"] == 1
    alpha = r.by_value("192.0.2.10")
    assert alpha["detail"] == ("or_port=9001 dir_port=9030 flags=Fast,Guard,Running,Stable,"
                               "V2Dir,Valid fingerprint=58061AA544398A798E33181A443B15B7746FAB16")
    assert (alpha["first_seen"], alpha["last_seen"], alpha["expires"]) == (
        datetime(2023, 5, 1), datetime(2025, 3, 1, 12), datetime(2025, 3, 3, 12))
    assert alpha["source"] == "onionoo 2025-03-01 12:00:00"
    assert r.by_value("198.51.100.30")["category"] == "tor_relay"  # BadExit


def test_onionoo_not_json_or_not_details(tmp_path: Path) -> None:
    r = read(write(tmp_path, "a.json", '{"relays": [1, '), "onionoo")
    assert r.rows == [] and len(r.errors) == 1 and r.errors[0][1].startswith("not JSON")
    r = read(write(tmp_path, "b.json", '{"summary": true}'), "onionoo")
    assert r.rows == [] and len(r.errors) == 1
