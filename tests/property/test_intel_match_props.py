"""IntelIndex, the DuckDB matcher and a brute-force reference (ipaddress, endswith) agree on
random indicators and queries: nested and overlapping networks from two feeds, network and
broadcast addresses, IPv4-mapped forms, several IPv6 spellings, domain match modes."""

from __future__ import annotations

import ipaddress
import socket
from functools import cache

import pyarrow as pa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hopguard.intel import sql
from hopguard.intel.match import IntelIndex
from hopguard.intel.model import Indicator, batch_of, domain_value, indicator_id, ip_value
from hopguard.store import Store

FAST = settings(max_examples=60, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

Net = ipaddress.IPv4Network | ipaddress.IPv6Network
Addr = ipaddress.IPv4Address | ipaddress.IPv6Address


@cache
def _store() -> Store:
    """One in-memory store for every example (emptied each time): opening one costs 0.1 s."""
    store = Store.open(":memory:")
    sql.prepare(store.con)
    return store


def _table(rows: list[tuple[str, Indicator]]) -> pa.Table:
    return batch_of([it for _, it in rows]).append_column(
        "feed", pa.array([f for f, _ in rows], pa.string())).append_column(
        "id", pa.array([indicator_id(f, it.kind, it.value, it.match) for f, it in rows],
                       pa.string()))


def _load(rows: list[tuple[str, Indicator]]) -> tuple[IntelIndex, Store]:
    tbl = _table(rows)
    store = _store()
    store.con.execute("DELETE FROM indicator")
    store.write("indicator", tbl)
    return IntelIndex.from_table(tbl), store


def _sql_pairs(store: Store, select: str, column: str, items: list[str]) -> set[tuple[str, str]]:
    store.con.execute(f"CREATE OR REPLACE TEMP TABLE hg_q ({column} VARCHAR)")
    if items:
        store.con.executemany("INSERT INTO hg_q VALUES (?)", [[v] for v in items])
    return {(k, i) for k, i in store.con.execute(select).fetchall()}


# -- addresses ---------------------------------------------------------------------------------

# Small regions so that networks nest, overlap and contain the queries.
V4_BASE = int(ipaddress.IPv4Address("198.18.0.0"))
V6_BASE = int(ipaddress.IPv6Address("2001:db8::"))

v4_addr = st.integers(0, 0xFFFF).map(lambda o: ipaddress.IPv4Address(V4_BASE + o))
v6_addr = st.integers(0, 0xFFFF).map(lambda o: ipaddress.IPv6Address(V6_BASE + o))
v4_net = st.tuples(v4_addr, st.sampled_from([0, 8, 15, 16, 20, 24, 28, 30, 31, 32])).map(
    lambda a: ipaddress.ip_network((a[0], a[1]), strict=False))
v6_net = st.tuples(v6_addr, st.sampled_from([0, 32, 64, 96, 112, 120, 126, 127, 128])).map(
    lambda a: ipaddress.ip_network((a[0], a[1]), strict=False))
# An IPv4 address or network written as IPv4-mapped IPv6 (::ffff:a.b.c.d/96+n).
mapped_net = v4_net.map(lambda n: f"::ffff:{n.network_address}/{96 + n.prefixlen}")
ip_text = st.one_of(v4_net.map(str), v6_net.map(str), mapped_net)
# (feed, network, also the adjacent block of the same size: where one interval ends and the
# next begins at the same address)
ip_rows = st.lists(st.tuples(st.sampled_from(["a", "b"]), ip_text, st.booleans()), max_size=25)


def _next_block(text: str) -> str | None:
    net = ipaddress.ip_network(text)
    after = int(net.broadcast_address) + 1
    if after >> net.max_prefixlen:
        return None
    return str(ipaddress.ip_network((after, net.prefixlen)))


def _canonical_net(value: str) -> Net:
    net = ipaddress.ip_network(value)
    mapped = net.network_address.ipv4_mapped if net.version == 6 else None
    if mapped is not None and net.prefixlen >= 96:
        return ipaddress.IPv4Network((int(mapped), net.prefixlen - 96))
    return net


def _spellings(addr: Addr) -> list[str]:
    if addr.version == 4:
        hi, lo = int(addr) >> 16, int(addr) & 0xFFFF
        return [str(addr), f"::ffff:{addr}", f"::FFFF:{hi:X}:{lo:X}"]
    return [str(addr), addr.exploded, str(addr).upper()]


def _ip_reference(query: str, nets: list[tuple[str, Net]]) -> set[str]:
    addr: Addr = ipaddress.ip_address(query)
    if addr.version == 6 and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return {iid for iid, net in nets if net.version == addr.version and addr in net}


@FAST
@given(rows=ip_rows, data=st.data())
def test_ip_matchers_agree_with_brute_force(rows: list[tuple[str, str, bool]],
                                            data: st.DataObject) -> None:
    texts = [(feed, text) for feed, text, _ in rows]
    texts += [(feed, after) for feed, text, sibling in rows
              if sibling and (after := _next_block(text)) is not None]
    indicators: list[tuple[str, Indicator]] = []
    for feed, text in texts:
        value, prefix = ip_value(text)
        indicators.append((feed, Indicator(kind="ip", value=value, prefix=prefix,
                                           category="ioc")))
    nets = [(indicator_id(f, "ip", it.value, "exact"), _canonical_net(it.value))
            for f, it in indicators]
    # Queries: random addresses plus the first and last address of every indicator network.
    addrs: list[Addr] = data.draw(st.lists(st.one_of(v4_addr, v6_addr), max_size=15))
    for _, net in nets:
        addrs += [net.network_address, net.broadcast_address]
    queries = sorted({text for a in addrs for text in _spellings(a)})
    idx, store = _load(indicators)

    expected = {(q, iid) for q in queries for iid in _ip_reference(q, nets)}
    from_index = {(q, h.id) for q in queries for h in idx.ip(q)}
    from_sql = _sql_pairs(store, sql.ip_matches_sql("hg_q"), "ip", queries)
    assert from_index == expected
    assert from_sql == expected


# -- domains -----------------------------------------------------------------------------------

label = st.sampled_from(["a", "b", "ab", "x-y", "c_d"])
domain = st.tuples(st.lists(label, min_size=0, max_size=2), st.sampled_from(["ex", "test"])).map(
    lambda t: ".".join([*t[0], t[1]]))
domain_rows = st.lists(st.tuples(st.sampled_from(["a", "b"]), domain,
                                 st.sampled_from(["exact", "suffix", "subdomains"])), max_size=20)
query_name = st.tuples(st.lists(label, max_size=4), st.sampled_from(["ex", "test", "a"]),
                       st.booleans(), st.sampled_from(["", ".", ".."])).map(
    lambda t: (".".join([*t[0], t[1]]).upper() if t[2] else ".".join([*t[0], t[1]])) + t[3])


def _domain_reference(query: str, rows: list[tuple[str, str, str]]) -> set[str]:
    name = query.lower().rstrip(".")
    out = set()
    for iid, value, match in rows:
        below = name.endswith("." + value)
        if (match == "exact" and name == value) or (match == "suffix" and (
                name == value or below)) or (match == "subdomains" and below):
            out.add(iid)
    return out


@FAST
@given(rows=domain_rows, queries=st.lists(query_name, max_size=20))
def test_domain_matchers_agree_with_brute_force(rows: list[tuple[str, str, str]],
                                                queries: list[str]) -> None:
    indicators: list[tuple[str, Indicator]] = []
    for feed, text, match in rows:
        value, _ = domain_value(text)
        indicators.append((feed, Indicator(kind="domain", value=value, match=match,
                                           category="c2")))
    ref_rows = [(indicator_id(f, "domain", it.value, it.match), it.value, it.match)
                for f, it in indicators]
    queries = sorted(set(queries))
    idx, store = _load(indicators)

    expected = {(q, iid) for q in queries for iid in _domain_reference(q, ref_rows)}
    from_index = {(q, h.id) for q in queries for h in idx.domain(q)}
    from_sql = _sql_pairs(store, sql.domain_matches_sql("hg_q"), "name", queries)
    assert from_index == expected
    assert from_sql == expected


# -- address text: the SQL parser against the C one ---------------------------------------------

address_like = st.one_of(
    st.text(alphabet="0123456789abcdefABCDEF:.", max_size=45),
    st.lists(st.sampled_from(["0", "1", "ffff", "FFFF", "00001", "12345", "", "::", ":",
                              "1.2.3.4", "01.2.3.4", "255.255.255.255", "256.1.1.1", "a:b"]),
             max_size=10).map(":".join),
    st.text(max_size=12))


def _pton(text: str) -> tuple[int | None, int | None]:
    out: list[int | None] = []
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            out.append(int.from_bytes(socket.inet_pton(family, text), "big"))
        except (OSError, ValueError):
            out.append(None)
    return out[0], out[1]


@FAST
@given(texts=st.lists(address_like, min_size=1, max_size=40))
def test_sql_address_parser_is_inet_pton(texts: list[str]) -> None:
    con = _store().con
    for text in texts:
        v4, v6 = _pton(text)
        got = con.execute("SELECT hg_ip4(?), hg_ip6(?)", [text, text]).fetchone()
        assert got == ((v4, None) if ":" not in text else (None, v6)), text
