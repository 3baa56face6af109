"""intel.sql: the DuckDB matchers on a real in-memory store (and the macros against inet_pton)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from hopguard.intel import sql
from hopguard.store import Store
from tests.unit.intel.test_match import JA3, JA4, Row, dom, fp, ip, table


def load(store: Store, *rows: Row) -> None:
    store.write("indicator", table(*rows))
    sql.prepare(store.con)


def run(store: Store, select: str, column: str, items: list[str | None]
        ) -> dict[str, list[tuple[str, str]]]:
    """input value -> sorted (feed, indicator value) of its matches."""
    store.con.execute(f"CREATE OR REPLACE TEMP TABLE hg_t ({column} VARCHAR)")
    if items:
        store.con.executemany("INSERT INTO hg_t VALUES (?)", [[v] for v in items])
    out: dict[str, list[tuple[str, str]]] = {}
    for key, feed, value in store.con.execute(
            f"SELECT m.{column}, i.feed, i.value FROM ({select}) AS m JOIN indicator AS i "
            "USING (id) ORDER BY ALL").fetchall():
        out.setdefault(key, []).append((feed, value))
    return out


def ips(store: Store, items: list[str | None]) -> dict[str, list[tuple[str, str]]]:
    return run(store, sql.ip_matches_sql("hg_t"), "ip", items)


def names(store: Store, items: list[str | None]) -> dict[str, list[tuple[str, str]]]:
    return run(store, sql.domain_matches_sql("hg_t"), "name", items)


# -- addresses ---------------------------------------------------------------------------------

def test_ipv4_exact_cidr_edges_and_overlaps(store: Store) -> None:
    load(store, ip("198.51.100.7"), ip("192.0.2.0/24"), ip("10.0.0.0/8", "a"),
         ip("10.0.0.0/8", "b"), ip("10.1.0.0/16", "a"), ip("10.1.2.3", "b"),
         ip("255.255.255.254/31"))
    got = ips(store, ["198.51.100.7", "198.51.100.8", "192.0.2.0", "192.0.2.255", "192.0.1.255",
                      "192.0.3.0", "10.1.2.3", "10.2.0.0", "255.255.255.255", "0.0.0.0"])
    assert got == {
        "198.51.100.7": [("f1", "198.51.100.7")],
        "192.0.2.0": [("f1", "192.0.2.0/24")],
        "192.0.2.255": [("f1", "192.0.2.0/24")],
        "10.1.2.3": [("a", "10.0.0.0/8"), ("a", "10.1.0.0/16"), ("b", "10.0.0.0/8"),
                     ("b", "10.1.2.3")],
        "10.2.0.0": [("a", "10.0.0.0/8"), ("b", "10.0.0.0/8")],
        "255.255.255.255": [("f1", "255.255.255.254/31")],
    }


def test_slash_zero_each_family_only(store: Store) -> None:
    load(store, ip("0.0.0.0/0", "v4"), ip("::/0", "v6"))
    got = ips(store, ["0.0.0.0", "255.255.255.255", "::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
                      "::ffff:192.0.2.1"])
    assert got == {"0.0.0.0": [("v4", "0.0.0.0/0")], "255.255.255.255": [("v4", "0.0.0.0/0")],
                   "::": [("v6", "::/0")],
                   "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff": [("v6", "::/0")],
                   "::ffff:192.0.2.1": [("v4", "0.0.0.0/0")]}  # mapped: IPv4 only


def test_ipv6_forms_and_the_input_text_comes_back(store: Store) -> None:
    last = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"
    load(store, ip("2001:db8::/32"), ip("2001:db8::5"), ip(last), ip("2001:db8:1::/127"))
    top = "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff"
    got = ips(store, ["2001:db8::5", "2001:DB8:0:0:0:0:0:5", top, "2001:db9::", last,
                      "2001:db8:1::1", "2001:db8:1::2", "2001:db8::0.0.0.5"])
    both = [("f1", "2001:db8::/32"), ("f1", "2001:db8::5")]
    assert got == {
        "2001:db8::5": both, "2001:DB8:0:0:0:0:0:5": both, "2001:db8::0.0.0.5": both,
        top: [("f1", "2001:db8::/32")],
        last: [("f1", last)],
        "2001:db8:1::1": [("f1", "2001:db8:1::/127"), ("f1", "2001:db8::/32")],
        "2001:db8:1::2": [("f1", "2001:db8::/32")],
    }


def test_mapped_addresses_and_mapped_indicators(store: Store) -> None:
    load(store, ip("192.0.2.0/24", "net"), ip("198.51.100.7", "one"),
         ip("::ffff:203.0.113.9", "m1"), ip("::ffff:203.0.113.0/120", "m2"))
    got = ips(store, ["::ffff:192.0.2.9", "::FFFF:198.51.100.7", "::ffff:c633:6407",
                      "203.0.113.9", "203.0.113.200", "::ffff:203.0.113.9"])
    m12 = [("m1", "::ffff:cb00:7109"), ("m2", "::ffff:cb00:7100/120")]
    assert got == {"::ffff:192.0.2.9": [("net", "192.0.2.0/24")],
                   "::FFFF:198.51.100.7": [("one", "198.51.100.7")],
                   "::ffff:c633:6407": [("one", "198.51.100.7")],
                   "203.0.113.9": m12, "::ffff:203.0.113.9": m12,
                   "203.0.113.200": [("m2", "::ffff:cb00:7100/120")]}


def test_garbage_and_null_match_nothing(store: Store) -> None:
    load(store, ip("0.0.0.0/0"), ip("::/0"), ip("192.0.2.1"))
    junk: list[str | None] = [
        None, "", " ", "1.2.3", "01.2.3.4", "192.0.2.1 ", "192.0.2.1/32", "256.1.1.1",
        "fe80::1%eth0", "::ffff:999.1.1.1", "1::2::3", ":::", "1:2:3:4:5:6:7:8:9",
        "1:2:3:4::5:6:7:8", "12345::", "g::1", "::1.2.3", "1.2.3.4::", "\x00", "😀", "a" * 300]
    assert ips(store, junk) == {}


def test_subquery_over_flows_and_a_feed_subset(store: Store) -> None:
    load(store, ip("192.0.2.0/24", "a"), ip("192.0.2.7", "b"))
    store.con.execute("CREATE TEMP TABLE fl AS SELECT * FROM (VALUES "
                      "('10.0.0.1', '192.0.2.7'), ('10.0.0.1', '192.0.2.7'), ('192.0.2.9', NULL))"
                      " t(src_ip, dst_ip)")
    text = sql.ip_matches_sql("(SELECT src_ip AS ip FROM fl UNION ALL SELECT dst_ip FROM fl)",
                              "(SELECT * FROM indicator WHERE feed = 'b')")
    assert store.con.execute(f"SELECT ip, count(*) FROM ({text}) GROUP BY ip").fetchall() == [
        ("192.0.2.7", 1)]  # distinct addresses: one row although the flow repeats


# -- the macros against the C parser -----------------------------------------------------------

PARSE = ["0.0.0.0", "255.255.255.255", "1.2.3.4", "01.2.3.4", "1.2.3.04", "1.2.3", "1.2.3.4.5",
         "256.0.0.0", "1..2.3", "", "::", "::1", "1::", "1:2:3:4:5:6:7:8", "1:2:3:4:5:6:7::",
         "::2:3:4:5:6:7:8", "1:2:3:4::5:6:7:8", "1::2::3", ":1::", "1::2:", "::ffff:1.2.3.4",
         "::1.2.3.4", "1:2:3:4:5:6:1.2.3.4", "1:2:3:4:5:6:7:1.2.3.4", "::ffff:01.2.3.4",
         "ABCD:EF01::", "abcde::", "0000:0000::0001", "::0:0:0:0:0:0:0", "::0:0:0:0:0:0",
         ":", ":::", "1.2.3.4::", "fe80::1%1", "::g", "1:2:3:4:5:6:7:8:9", "x"]


def _pton(family: socket.AddressFamily, text: str) -> int | None:
    try:
        return int.from_bytes(socket.inet_pton(family, text), "big")
    except OSError:
        return None


def test_macros_parse_like_inet_pton(store: Store) -> None:
    sql.prepare(store.con)
    sql.prepare(store.con)  # idempotent
    for text in PARSE:
        v4, v6 = store.con.execute("SELECT hg_ip4(?), hg_ip6(?)", [text, text]).fetchone() or ()
        assert v4 == (None if ":" in text else _pton(socket.AF_INET, text)), text
        assert v6 == (_pton(socket.AF_INET6, text) if ":" in text else None), text


def test_prepare_on_a_read_only_store(tmp_path: Path) -> None:
    path = tmp_path / "s.duckdb"
    with Store.open(path) as store:
        store.write("indicator", table(ip("192.0.2.0/24")))
    with Store.open(path, read_only=True) as store:
        sql.prepare(store.con)
        got = store.con.execute(sql.ip_matches_sql("(SELECT '192.0.2.1' AS ip)")).fetchall()
        assert [ip for ip, _ in got] == ["192.0.2.1"]


# -- domains and fingerprints ------------------------------------------------------------------

def test_domain_exact_suffix_subdomains(store: Store) -> None:
    load(store, dom("evil.example"), dom(".tunnel.example"), dom("*.c2.example"),
         dom("evil.example", "f2", match="suffix"))
    got = names(store, ["evil.example", "EVIL.Example.", "www.evil.example", "notevil.example",
                        "tunnel.example", "a.b.tunnel.example", "xtunnel.example",
                        "beacon.c2.example", "c2.example", "example", None, "", ".", ".."])
    both = [("f1", "evil.example"), ("f2", "evil.example")]
    assert got == {"evil.example": both, "EVIL.Example.": both,
                   "www.evil.example": [("f2", "evil.example")],
                   "tunnel.example": [("f1", "tunnel.example")],
                   "a.b.tunnel.example": [("f1", "tunnel.example")],
                   "beacon.c2.example": [("f1", "c2.example")]}


def test_fingerprints(store: Store) -> None:
    load(store, fp("ja3", JA3), fp("ja3s", JA3, "f2"), fp("ja4", JA4))
    store.con.execute("CREATE TEMP TABLE h AS SELECT * FROM (VALUES (?), (?), ('x'), (NULL)) "
                      "t(value)", [JA3.upper(), " " + JA4])
    text = sql.hash_matches_sql("h", ("ja3", "ja4"))
    got = sorted(store.con.execute(
        f"SELECT m.value, i.kind FROM ({text}) m JOIN indicator i USING (id)").fetchall())
    assert got == [(" " + JA4, "ja4"), (JA3.upper(), "ja3")]
    with pytest.raises(ValueError, match="kinds must be"):
        sql.hash_matches_sql("h", ("ja3", "ip"))
    with pytest.raises(ValueError, match="kinds must be"):
        sql.hash_matches_sql("h", ())
