"""IntelIndex: addresses (exact, CIDR edges, v4/v6, mapped), domains, fingerprints, expiry."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pyarrow as pa
import pytest

from hopguard.intel.match import Hit, IntelIndex
from hopguard.intel.model import Indicator, batch_of, domain_value, indicator_id, ip_value

Row = tuple[str, Indicator]


def ip(text: str, feed: str = "f1", **kw: object) -> Row:
    value, prefix = ip_value(text)
    return feed, Indicator(kind="ip", value=value, prefix=prefix, category="ioc", **kw)  # type: ignore[arg-type]


def dom(text: str, feed: str = "f1", **kw: object) -> Row:
    value, match = domain_value(text)
    return feed, Indicator(kind="domain", value=value, match=str(kw.pop("match", match)),
                           category="c2", **kw)  # type: ignore[arg-type]


def fp(kind: str, value: str, feed: str = "f1") -> Row:
    return feed, Indicator(kind=kind, value=value, category="ioc", label="tool")


def table(*rows: Row, ids: bool = True) -> pa.Table:
    """Rows as the ``indicator`` table holds them (feed and id added to a reader batch)."""
    tbl = batch_of([it for _, it in rows]).append_column(
        "feed", pa.array([feed for feed, _ in rows], pa.string()))
    if ids:
        tbl = tbl.append_column("id", pa.array(
            [indicator_id(f, it.kind, it.value, it.match) for f, it in rows], pa.string()))
    return tbl


def index(*rows: Row) -> IntelIndex:
    return IntelIndex.from_table(table(*rows))


def values(hits: list[Hit]) -> list[tuple[str, str]]:
    return [(h.feed, h.value) for h in hits]


# -- addresses ---------------------------------------------------------------------------------

def test_exact_ipv4_hit_carries_the_row() -> None:
    idx = index(ip("198.51.100.7", label="relay1", source="consensus", confidence=0.9))
    (hit,) = idx.ip("198.51.100.7")
    assert hit == Hit(id=indicator_id("f1", "ip", "198.51.100.7", "exact"), feed="f1", kind="ip",
                      value="198.51.100.7", prefix=32, match="exact", category="ioc",
                      label="relay1", confidence=0.9, source="consensus", first_seen=None,
                      last_seen=None, expires=None)
    assert idx.ip("198.51.100.8") == []
    assert len(idx) == 1 and idx.skipped == 0


def test_cidr_edges_network_and_broadcast() -> None:
    idx = index(ip("192.0.2.0/24"), ip("203.0.113.128/25"))
    for inside in ("192.0.2.0", "192.0.2.1", "192.0.2.255", "203.0.113.128", "203.0.113.255"):
        assert len(idx.ip(inside)) == 1, inside
    for outside in ("192.0.1.255", "192.0.3.0", "203.0.113.127", "203.0.114.0", "0.0.0.0",
                    "255.255.255.255"):
        assert idx.ip(outside) == [], outside


def test_slash_zero_and_slash_32_and_31() -> None:
    idx = index(ip("0.0.0.0/0"), ip("255.255.255.254/31"), ip("1.2.3.4/32"))
    assert values(idx.ip("255.255.255.255")) == [("f1", "255.255.255.254/31"), ("f1", "0.0.0.0/0")]
    assert values(idx.ip("0.0.0.0")) == [("f1", "0.0.0.0/0")]
    assert values(idx.ip("1.2.3.4")) == [("f1", "1.2.3.4"), ("f1", "0.0.0.0/0")]
    assert idx.ip("2001:db8::1") == []  # an IPv4 /0 says nothing about IPv6


def test_ipv6_exact_cidr_and_slash_zero() -> None:
    idx = index(ip("2001:db8::/32"), ip("2001:db8::5"), ip("::/0", feed="f2"))
    assert values(idx.ip("2001:db8::5")) == [("f1", "2001:db8::5"), ("f1", "2001:db8::/32"),
                                             ("f2", "::/0")]
    assert len(idx.ip("2001:db8:ffff:ffff:ffff:ffff:ffff:ffff")) == 2
    assert values(idx.ip("2001:db9::")) == [("f2", "::/0")]
    # Any textual form inet_pton accepts is the same address.
    assert len(idx.ip("2001:DB8:0:0:0:0:0:5")) == 3
    assert idx.ip("192.0.2.1") == []  # an IPv6 /0 says nothing about IPv4


def test_ipv6_slash_128_and_last_address() -> None:
    last = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"
    pair = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe/127"
    idx = index(ip(last + "/128"), ip(pair))
    assert values(idx.ip(last)) == [("f1", last), ("f1", pair)]
    assert idx.ip("ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffd") == []


def test_mapped_addresses_are_ipv4() -> None:
    idx = index(ip("192.0.2.0/24"), ip("198.51.100.7"))
    assert values(idx.ip("::ffff:192.0.2.9")) == [("f1", "192.0.2.0/24")]
    assert values(idx.ip("::FFFF:198.51.100.7")) == [("f1", "198.51.100.7")]
    assert values(idx.ip("::ffff:c633:6407")) == [("f1", "198.51.100.7")]  # hex form
    # Indicators written as mapped IPv6 match the IPv4 address.
    idx = index(ip("::ffff:198.51.100.7"), ip("::ffff:192.0.2.0/120"))
    assert [h.value for h in idx.ip("198.51.100.7")] == ["::ffff:c633:6407"]
    assert [h.value for h in idx.ip("192.0.2.200")] == ["::ffff:c000:200/120"]


def test_overlapping_and_nested_networks_from_two_feeds_all_reported() -> None:
    idx = index(ip("10.0.0.0/8", "a"), ip("10.0.0.0/8", "b"), ip("10.1.0.0/16", "a"),
                ip("10.1.2.3", "b"), ip("10.1.2.3", "a"), ip("10.255.0.0/16", "b"))
    assert values(idx.ip("10.1.2.3")) == [("b", "10.1.2.3"), ("a", "10.1.2.3"),
                                          ("a", "10.1.0.0/16"), ("a", "10.0.0.0/8"),
                                          ("b", "10.0.0.0/8")]
    assert values(idx.ip("10.1.255.255")) == [("a", "10.1.0.0/16"), ("a", "10.0.0.0/8"),
                                              ("b", "10.0.0.0/8")]
    assert values(idx.ip("10.2.0.0")) == [("a", "10.0.0.0/8"), ("b", "10.0.0.0/8")]
    # A nested block that ends where its parent ends.
    assert len(idx.ip("10.255.255.255")) == 3
    assert idx.ip("11.0.0.0") == [] and idx.ip("9.255.255.255") == []


def test_many_networks_in_one_slash_16_and_across_buckets() -> None:
    rows = [ip(f"172.16.{i}.0/24") for i in range(0, 256, 2)] + [ip("172.16.0.0/15", "w")]
    idx = index(*rows)
    assert values(idx.ip("172.16.4.9")) == [("f1", "172.16.4.0/24"), ("w", "172.16.0.0/15")]
    assert values(idx.ip("172.16.5.9")) == [("w", "172.16.0.0/15")]
    assert values(idx.ip("172.17.200.1")) == [("w", "172.16.0.0/15")]
    assert idx.ip("172.18.0.0") == []


def test_adjacent_networks_do_not_cover_each_other() -> None:
    idx = index(ip("192.0.2.0/25"), ip("192.0.2.128/25"), ip("192.0.3.0/24"),
                ip("2001:db8::/33"), ip("2001:db8:8000::/33"))
    assert values(idx.ip("192.0.2.127")) == [("f1", "192.0.2.0/25")]
    assert values(idx.ip("192.0.2.128")) == [("f1", "192.0.2.128/25")]
    assert values(idx.ip("192.0.3.0")) == [("f1", "192.0.3.0/24")]
    assert values(idx.ip("2001:db8:8000::")) == [("f1", "2001:db8:8000::/33")]
    assert idx.ip("192.0.4.0") == [] and idx.ip("2001:db9::") == []


def test_expiry() -> None:
    end = datetime(2026, 1, 1)
    idx = index(ip("192.0.2.1", expires=end), ip("192.0.2.0/24", "f2"))
    assert len(idx.ip("192.0.2.1")) == 2
    assert len(idx.ip("192.0.2.1", end - timedelta(days=1))) == 2
    assert len(idx.ip("192.0.2.1", end)) == 2  # expires at `at`: still in force
    assert values(idx.ip("192.0.2.1", end + timedelta(seconds=1))) == [("f2", "192.0.2.0/24")]
    # An aware time is compared in UTC (the store keeps naive UTC).
    later = datetime(2026, 1, 1, 0, 30, tzinfo=timezone(timedelta(hours=1)))  # 23:30 UTC
    assert len(idx.ip("192.0.2.1", later)) == 2
    assert len(idx.ip("192.0.2.1", datetime(2026, 1, 1, 1, tzinfo=UTC))) == 1


# -- domains -----------------------------------------------------------------------------------

def test_domain_exact_suffix_subdomains() -> None:
    idx = index(dom("evil.example"), dom(".tunnel.example"), dom("*.c2.example"))
    assert values(idx.domain("evil.example")) == [("f1", "evil.example")]
    assert idx.domain("www.evil.example") == [] and idx.domain("notevil.example") == []
    assert values(idx.domain("tunnel.example")) == [("f1", "tunnel.example")]
    assert values(idx.domain("a.b.tunnel.example")) == [("f1", "tunnel.example")]
    assert idx.domain("xtunnel.example") == []
    assert values(idx.domain("beacon.c2.example")) == [("f1", "c2.example")]
    assert idx.domain("c2.example") == []  # subdomains: the bare name is not below itself
    assert idx.domain("example") == []
    (hit,) = idx.domain("x.c2.example")
    assert hit.match == "subdomains" and hit.category == "c2"


def test_domain_case_trailing_dot_and_two_feeds() -> None:
    idx = index(dom("evil.example"), dom("evil.example", "f2"),
                dom("evil.example", "f3", match="suffix"))
    assert values(idx.domain("EVIL.Example.")) == [("f1", "evil.example"), ("f2", "evil.example"),
                                                   ("f3", "evil.example")]
    assert values(idx.domain("Www.Evil.Example.")) == [("f3", "evil.example")]


def test_domain_idna() -> None:
    idx = index(dom("bücher.example"))
    assert [h.value for h in idx.domain("BÜCHER.example")] == ["xn--bcher-kva.example"]
    assert len(idx.domain("xn--bcher-kva.example")) == 1


def test_suffix_on_a_top_level_label() -> None:
    idx = index(dom(".onion"))
    assert len(idx.domain("abcdef.onion")) == 1 and len(idx.domain("onion")) == 1
    assert idx.domain("onion.example") == []


# -- fingerprints, URLs, lookup ------------------------------------------------------------------

JA3 = "e7d705a3286e19ea42f587b344ee6865"
JA4 = "t13d1516h2_8daaf6152771_02713d6af862"


def test_fingerprints_and_kind_filter() -> None:
    idx = index(fp("ja3", JA3), fp("ja3s", JA3, "f2"), fp("ja4", JA4))
    assert values(idx.fingerprint(JA3.upper())) == [("f1", JA3), ("f2", JA3)]
    assert [h.kind for h in idx.fingerprint(JA3, kind="ja3s")] == ["ja3s"]
    assert [h.label for h in idx.fingerprint(" " + JA4 + " ")] == ["tool"]
    assert idx.fingerprint("0" * 32) == []


def test_lookup_guesses_the_kind() -> None:
    idx = index(ip("192.0.2.0/24"), ip("2001:db8::/32"), dom("evil.example"), fp("ja3", JA3),
                fp("ja4", JA4), ("f1", Indicator(kind="url", value="http://evil.example/x",
                                                 category="ioc")))
    assert [h.kind for h in idx.lookup("192.0.2.5")] == ["ip"]
    assert [h.kind for h in idx.lookup("2001:db8::1")] == ["ip"]
    assert [h.kind for h in idx.lookup(" Evil.Example ")] == ["domain"]
    assert [h.kind for h in idx.lookup(JA3.upper())] == ["ja3"]
    assert [h.kind for h in idx.lookup(JA4)] == ["ja4"]
    assert [h.kind for h in idx.lookup("http://evil.example/x")] == ["url"]
    assert idx.lookup("") == [] and idx.lookup("1.2.3") == []


@pytest.mark.parametrize("junk", [
    "", " ", "1.2.3", "01.2.3.4", "1.2.3.4 ", " 1.2.3.4", "1.2.3.4/24", "256.1.1.1",
    "fe80::1%eth0", "::ffff:999.1.1.1", "1::2::3", "\x00", "1.2.3.4\x00", "a" * 1000, "😀",
    "..", ".", "*.", "::ffff:01.2.3.4"])
def test_garbage_matches_nothing_and_never_raises(junk: str) -> None:
    idx = index(ip("0.0.0.0/0"), ip("::/0"), dom(".example"), fp("ja3", JA3))
    assert idx.ip(junk) == []
    assert idx.fingerprint(junk) == []
    idx.domain(junk)
    idx.lookup(junk)


# -- construction ------------------------------------------------------------------------------

def test_from_indicators_and_computed_ids() -> None:
    idx = IntelIndex.from_indicators("tor", [ip("192.0.2.1")[1], dom(".example")[1]])
    (hit,) = idx.ip("192.0.2.1")
    assert hit.feed == "tor" and hit.id == indicator_id("tor", "ip", "192.0.2.1", "exact")
    (hit,) = idx.domain("a.example")
    assert hit.id == indicator_id("tor", "domain", "example", "suffix")
    no_ids = IntelIndex.from_table(table(ip("192.0.2.1", "x"), ids=False))
    assert no_ids.ip("192.0.2.1")[0].id == indicator_id("x", "ip", "192.0.2.1", "exact")


def test_minimal_table_chunked_and_bad_rows_skipped() -> None:
    part1 = pa.table({"kind": ["ip", "ip", "ip", None],
                      "value": ["192.0.2.1", "junk", "10.0.0.0/33", "x"]})
    part2 = pa.table({"kind": ["domain", "domain"], "value": ["evil.example", None]})
    idx = IntelIndex.from_table(pa.concat_tables([part1, part2]), feed="lst")
    assert idx.skipped == 2  # junk, /33
    (hit,) = idx.ip("192.0.2.1")
    assert (hit.feed, hit.match, hit.confidence, hit.category, hit.prefix) == (
        "lst", "exact", 0.5, "", None)
    assert [h.value for h in idx.domain("evil.example")] == ["evil.example"]
    with pytest.raises(ValueError, match="needs the columns"):
        IntelIndex.from_table(pa.table({"value": ["x"]}))


def test_hits_are_cached_objects() -> None:
    idx = index(ip("192.0.2.0/24"))
    assert idx.ip("192.0.2.1")[0] is idx.ip("192.0.2.2")[0]
