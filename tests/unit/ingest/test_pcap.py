"""The packet engine on captures built byte by byte: containers, link types, tunnels, flows."""

from __future__ import annotations

import contextlib
import gzip
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from hopguard.ingest.pipeline import FileResult
from hopguard.store import Store
from tests.unit.ingest.pcapbuild import (
    MAC_A,
    MAC_B,
    ether,
    ipv4,
    ipv6,
    pcap,
    pcapng,
    tcp,
    tcp_session,
    udp,
)

Ingest = Callable[..., FileResult]
REQ = b"GET /x HTTP/1.1\r\nHost: example.com\r\nUser-Agent: t/1\r\n\r\n"
RESP = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


def write(tmp_path: Path, data: bytes, name: str = "c.pcap") -> Path:
    path = tmp_path / name
    path.write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
    return path


def flows(store: Store) -> list[dict[str, Any]]:
    return store.query("SELECT * FROM flow ORDER BY ts, src_port").to_pylist()


@pytest.mark.parametrize("variant", ["us", "ns", "big", "gz", "pcapng", "pcapng-ns", "spb"])
def test_containers_give_the_same_flow(tmp_path: Path, ingest: Ingest, store: Store,
                                       variant: str) -> None:
    pk = tcp_session("10.0.0.1", "10.0.0.2", 40000, 80, REQ, RESP)
    if variant in ("us", "gz"):
        data = pcap(pk)
    elif variant == "ns":
        data = pcap(pk, nanos=True)
    elif variant == "big":
        data = pcap(pk, big=True)
    elif variant == "pcapng":
        data = pcapng([(0, ts, f) for ts, f in pk])
    elif variant == "pcapng-ns":
        data = pcapng([(0, ts, f) for ts, f in pk], tsresol=9)
    else:
        data = pcapng([(0, ts, f) for ts, f in pk], simple=True)
    result = ingest(write(tmp_path, data, "c.pcap.gz" if variant == "gz" else "c.pcap"))
    assert result.failure is None and result.format == "pcap"
    [f] = flows(store)
    assert (f["src_ip"], f["src_port"], f["dst_ip"], f["dst_port"], f["proto"]) == \
        ("10.0.0.1", 40000, "10.0.0.2", 80, "tcp")
    assert (f["src_bytes"], f["dst_bytes"], f["src_pkts"], f["dst_pkts"]) == \
        (len(REQ), len(RESP), 5, 3)
    assert f["state"] == "SF" and f["service"] == "http"
    assert f["history"] == "ShADdFf"  # Zeek: A only for a pure ACK
    if variant != "spb":  # simple packet blocks carry no time
        assert f["duration"] == pytest.approx(0.013, abs=1e-6)
        assert f["ts"].timestamp() == pytest.approx(1_700_000_000.0, abs=1e-6)
    [h] = store.query("SELECT * FROM http").to_pylist()
    assert (h["uid"], h["method"], h["host"], h["uri"], h["user_agent"], h["status"]) == \
        (f["uid"], "GET", "example.com", "/x", "t/1", 200)


def test_pcapng_interfaces_with_different_link_types(tmp_path: Path, ingest: Ingest,
                                                     store: Store) -> None:
    eth = tcp_session("10.0.0.1", "10.0.0.2", 40000, 80, REQ, RESP)
    raw = tcp_session("10.0.0.3", "10.0.0.4", 40001, 80, REQ, RESP,
                      wrap=lambda l3: l3)
    data = pcapng([(0, ts, f) for ts, f in eth] + [(1, ts, f) for ts, f in raw], (1, 101))
    assert ingest(write(tmp_path, data)).failure is None
    assert [(f["src_ip"], f["state"]) for f in flows(store)] == \
        [("10.0.0.1", "SF"), ("10.0.0.3", "SF")]


def sll(l3: bytes) -> bytes:
    return b"\x00\x00\x00\x01\x00\x06" + MAC_A + b"\x00\x00\x08\x00" + l3


def sll2(l3: bytes) -> bytes:
    return b"\x08\x00\x00\x00\x00\x00\x00\x02\x00\x01\x00\x06" + MAC_A + b"\x00\x00" + l3


def loop_bsd(l3: bytes) -> bytes:
    return (2).to_bytes(4, "little") + l3


def gre(l3: bytes) -> bytes:
    inner = b"\x00\x00\x08\x00" + l3
    return ether(ipv4("192.0.2.1", "192.0.2.2", 47, inner))


def gre_teb(l3: bytes) -> bytes:
    inner = b"\x00\x00\x65\x58" + ether(l3)
    return ether(ipv4("192.0.2.1", "192.0.2.2", 47, inner))


def vxlan(l3: bytes) -> bytes:
    return ether(ipv4("192.0.2.1", "192.0.2.2", 17,
                      udp(55555, 4789, b"\x08\x00\x00\x00\x00\x00\x64\x00" + ether(l3))))


def ipip(l3: bytes) -> bytes:
    return ether(ipv4("192.0.2.1", "192.0.2.2", 4, l3))


@pytest.mark.parametrize(("linktype", "wrap", "tunnel"), [
    (1, lambda l3: ether(l3, vlans=[100]), None),
    (1, lambda l3: ether(l3, vlans=[100, 200]), None),
    (113, sll, None),
    (276, sll2, None),
    (101, lambda l3: l3, None),
    (228, lambda l3: l3, None),
    (0, loop_bsd, None),
    (1, gre, "GRE"),
    (1, gre_teb, "GRE"),
    (1, vxlan, "VXLAN"),
    (1, ipip, "IP"),
], ids=["802.1Q", "QinQ", "SLL", "SLL2", "raw", "ipv4", "null", "GRE", "GRE-TEB", "VXLAN",
        "IPIP"])
def test_link_types_and_tunnels(tmp_path: Path, ingest: Ingest, store: Store, linktype: int,
                                wrap: Callable[[bytes], bytes], tunnel: str | None) -> None:
    pk = tcp_session("10.0.0.1", "10.0.0.2", 40000, 80, REQ, RESP, wrap=wrap)
    assert ingest(write(tmp_path, pcap(pk, linktype=linktype))).failure is None
    [f] = [f for f in flows(store) if f["proto"] == "tcp"]
    assert (f["src_ip"], f["dst_ip"], f["state"], f["src_bytes"], f["tunnel"]) == \
        ("10.0.0.1", "10.0.0.2", "SF", len(REQ), tunnel)
    assert f["src_frame_bytes"] + f["dst_frame_bytes"] == sum(len(frame) for _, frame in pk)
    outer = [f for f in flows(store) if f["proto"] != "tcp"]
    if tunnel == "VXLAN":  # the carrying UDP flow is a flow of its own, as in Zeek
        assert [(o["dst_port"], o["service"], o["src_pkts"]) for o in outer] == \
            [(4789, "vxlan", len(pk))]
    else:
        assert outer == []


def test_ipv6_and_udp_dns(tmp_path: Path, ingest: Ingest, store: Store) -> None:
    query = bytes.fromhex("abcd01000001000000000000") + b"\x07example\x03com\x00\x00\x01\x00\x01"
    answer = bytes.fromhex("abcd81800001000100000000") + b"\x07example\x03com\x00\x00\x01\x00\x01" \
        + b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x00\x3c\x00\x04\xc0\x00\x02\x01"
    pk = [(1.0, ether(ipv6("2001:db8::1", "2001:db8::53", 17, udp(5000, 53, query)),
                      ethertype=0x86DD)),
          (1.02, ether(ipv6("2001:db8::53", "2001:db8::1", 17, udp(53, 5000, answer)),
                       ethertype=0x86DD))]
    assert ingest(write(tmp_path, pcap(pk))).failure is None
    [f] = flows(store)
    assert (f["src_ip"], f["dst_ip"], f["proto"], f["service"], f["state"]) == \
        ("2001:db8::1", "2001:db8::53", "udp", "dns", "SF")
    [d] = store.query("SELECT * FROM dns").to_pylist()
    assert (d["uid"], d["query"], d["qtype"], d["rcode"], d["answers"], d["trans_id"]) == \
        (f["uid"], "example.com", "A", "NOERROR", ["192.0.2.1"], 0xABCD)
    assert d["rtt"] == pytest.approx(0.02)


def test_ethernet_padding_is_not_payload(tmp_path: Path, ingest: Ingest, store: Store) -> None:
    pk = [(1.0, ether(ipv4("10.0.0.1", "10.0.0.2", 6, tcp(1, 2, 0, 0, "S"))) + b"\0" * 6)]
    assert ingest(write(tmp_path, pcap(pk))).failure is None
    [f] = flows(store)
    assert (f["src_bytes"], f["state"], f["src_ip_bytes"]) == (0, "S0", 40)


@pytest.mark.parametrize(("flags", "state"), [
    (["S", "<RA"], "REJ"), (["S"], "S0"), (["S", "<SA", "A"], "S1"),
    (["S", "<SA", "A", "R"], "RSTO"), (["S", "<SA", "A", "<R"], "RSTR"),
    (["S", "<SA", "A", "FA"], "S2"), (["S", "<SA", "A", "<FA"], "S3"),
    (["A", "<A"], "OTH"), (["<SA", "A"], "OTH"),
])
def test_conn_state(tmp_path: Path, ingest: Ingest, store: Store, flags: list[str],
                    state: str) -> None:
    pk = []
    for i, fl in enumerate(flags):
        back = fl.startswith("<")
        src, dst, sp, dp = ("10.0.0.2", "10.0.0.1", 80, 40000) if back else \
            ("10.0.0.1", "10.0.0.2", 40000, 80)
        pk.append((1.0 + i / 100, ether(ipv4(src, dst, 6, tcp(sp, dp, 1, 1, fl.lstrip("<"))))))
    assert ingest(write(tmp_path, pcap(pk))).failure is None
    [f] = flows(store)
    assert f["state"] == state
    # A capture that starts with the SYN-ACK still names the client as the originator.
    assert f["src_ip"] == "10.0.0.1"


def test_out_of_order_and_retransmitted_segments_reassemble(tmp_path: Path, ingest: Ingest,
                                                            store: Store) -> None:
    c, s = "10.0.0.1", "10.0.0.2"

    def seg(dt: float, seq: int, data: bytes, fl: str = "PA") -> tuple[float, bytes]:
        return (1.0 + dt, ether(ipv4(c, s, 6, tcp(40000, 80, seq, 1, fl, data))))

    a, b, cc = REQ[:10], REQ[10:30], REQ[30:]
    pk = [seg(0, 100, b"", "S"), (1.001, ether(ipv4(s, c, 6, tcp(80, 40000, 500, 101, "SA")))),
          seg(0.002, 101 + 10, b),  # out of order
          seg(0.003, 101, a),
          seg(0.004, 101, a),  # retransmission
          seg(0.005, 101 + 25, REQ[25:]),  # overlapping the end of b
          (1.01, ether(ipv4(s, c, 6, tcp(80, 40000, 501, 101 + len(REQ), "PA", RESP))))]
    del cc
    assert ingest(write(tmp_path, pcap(pk))).failure is None
    [h] = store.query("SELECT method, uri, host, status FROM http").to_pylist()
    assert h == {"method": "GET", "uri": "/x", "host": "example.com", "status": 200}


def test_idle_timeout_splits_and_sketch_records_bursts(tmp_path: Path, ingest: Ingest,
                                                       store: Store) -> None:
    def p(ts: float, back: bool = False) -> tuple[float, bytes]:
        src, dst, sp, dp = ("10.0.0.2", "10.0.0.1", 53, 5000) if back else \
            ("10.0.0.1", "10.0.0.2", 5000, 53)
        return (ts, ether(ipv4(src, dst, 17, udp(sp, dp, b"x" * 4))))

    pk = [p(1.0), p(1.1), p(2.0), p(2.05, True), p(5.0), p(100.0)]
    assert ingest(write(tmp_path, pcap(pk))).failure is None
    first, second = flows(store)
    assert (first["src_pkts"], first["dst_pkts"], second["src_pkts"]) == (4, 1, 1)
    assert [t.timestamp() for t in first["src_bursts"]] == pytest.approx([1.0, 2.0, 5.0])
    assert [t.timestamp() for t in first["dst_bursts"]] == pytest.approx([2.05])
    assert first["uid"] != second["uid"]


def test_truncated_capture_keeps_packets_before_the_damage(tmp_path: Path, ingest: Ingest,
                                                           store: Store) -> None:
    pk = tcp_session("10.0.0.1", "10.0.0.2", 40000, 80, REQ, RESP)
    data = pcap(pk)
    cut = len(data) - 20
    result = ingest(write(tmp_path, data[:cut]))
    assert result.failure is None and result.stats.errors == 1
    err = result.stats.shown[0]
    assert err.message == "truncated packet data"
    assert err.location.offset == len(pcap(pk[:-1]))
    [f] = flows(store)
    assert f["src_pkts"] + f["dst_pkts"] == 7


def test_garbage_after_header_is_a_located_error(tmp_path: Path, ingest: Ingest) -> None:
    data = pcap([]) + b"\xff" * 40
    result = ingest(write(tmp_path, data))
    assert result.failure is not None
    assert "implausible packet length" in str(result.failure)
    assert "@offset 24" in str(result.failure)


def test_non_ip_frames_are_counted_not_errors(tmp_path: Path, ingest: Ingest,
                                              store: Store) -> None:
    arp = MAC_B + MAC_A + b"\x08\x06" + b"\0" * 28
    pk = [(1.0, arp), *tcp_session("10.0.0.1", "10.0.0.2", 40000, 80, REQ, RESP)]
    result = ingest(write(tmp_path, pcap(pk)))
    assert result.stats.errors == 0
    assert result.stats.skipped["packets without an IP transport header"] == 1
    assert len(flows(store)) == 1


def client_hello(sni: str) -> bytes:
    """A real ClientHello from Python's ssl module (memory BIOs, no network)."""
    import ssl
    ctx = ssl.create_default_context()
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    conn = ctx.wrap_bio(incoming, outgoing, server_hostname=sni)
    with contextlib.suppress(ssl.SSLWantReadError):
        conn.do_handshake()
    return outgoing.read()


def test_starttls_is_followed(tmp_path: Path, ingest: Ingest, store: Store) -> None:
    c, s = "10.0.0.1", "10.0.0.2"
    hello = client_hello("mail.example.org")

    def p(dt: float, back: bool, seq: int, data: bytes, fl: str = "PA") -> tuple[float, bytes]:
        if back:
            return (1.0 + dt, ether(ipv4(s, c, 6, tcp(25, 40000, seq, 1, fl, data))))
        return (1.0 + dt, ether(ipv4(c, s, 6, tcp(40000, 25, seq, 1, fl, data))))

    banner, ehlo, go = b"220 mx ESMTP\r\n", b"STARTTLS\r\n", b"220 2.0.0 Ready to start TLS\r\n"
    pk = [p(0, False, 99, b"", "S"), p(0.001, True, 499, b"", "SA"),
          p(0.01, True, 500, banner), p(0.02, False, 100, ehlo),
          p(0.03, True, 500 + len(banner), go), p(0.04, False, 100 + len(ehlo), hello)]
    assert ingest(write(tmp_path, pcap(pk))).failure is None
    [t] = store.query("SELECT sni, ja3 FROM tls").to_pylist()
    assert t["sni"] == "mail.example.org" and len(t["ja3"]) == 32
    [f] = flows(store)
    assert f["service"] == "ssl"


def test_payload_bytes_count_retransmissions_once(tmp_path: Path, ingest: Ingest,
                                                  store: Store) -> None:
    pk = tcp_session("10.0.0.1", "10.0.0.2", 40000, 80, REQ, RESP)
    pk.insert(4, pk[3])  # the request again, as a retransmission
    assert ingest(write(tmp_path, pcap(pk))).failure is None
    [f] = flows(store)
    assert (f["src_bytes"], f["src_pkts"]) == (len(REQ), 6)


def test_conversation_joined_at_a_server_packet_keeps_the_client_as_originator(
        tmp_path: Path, ingest: Ingest, store: Store) -> None:
    pk = tcp_session("10.0.0.1", "10.0.0.2", 40000, 443, REQ, RESP)[4:]  # from the response on
    assert ingest(write(tmp_path, pcap(pk))).failure is None
    [f] = flows(store)
    assert (f["src_ip"], f["src_port"], f["dst_port"]) == ("10.0.0.1", 40000, 443)
    assert f["history"].startswith("^")


def gtp(l3: bytes) -> bytes:
    return ether(ipv4("192.0.2.1", "192.0.2.2", 17,
                      udp(2152, 2152, bytes([0x30, 0xFF]) + len(l3).to_bytes(2, "big")
                          + b"\0\0\0\x01" + l3)))


def teredo(l3: bytes) -> bytes:
    return ether(ipv4("192.0.2.1", "192.0.2.2", 17, udp(3544, 40000, l3)))


def test_gtp_and_teredo_inner_flows(tmp_path: Path, ingest: Ingest, store: Store) -> None:
    pk = tcp_session("10.0.0.1", "10.0.0.2", 40000, 80, REQ, RESP, wrap=gtp)
    v6 = [(ts, teredo(ipv6("2001::1", "2001::2", 6, tcp(40001, 80, 1, 1, "S"))))
          for ts, _ in pk[:1]]
    assert ingest(write(tmp_path, pcap(pk + v6))).failure is None
    got = {(f["src_ip"], f["dst_port"], f["tunnel"], f["service"]) for f in flows(store)}
    assert got == {("10.0.0.1", 80, "GTPv1", "http"), ("2001::1", 80, "Teredo", None),
                   ("192.0.2.1", 2152, None, "gtpv1"), ("192.0.2.2", 3544, None, "teredo")}


def test_a_failing_parser_costs_only_its_flow(tmp_path: Path, ingest: Ingest, store: Store,
                                              monkeypatch: pytest.MonkeyPatch,
                                              caplog: pytest.LogCaptureFixture) -> None:
    from hopguard.parsers import http

    def broken(self: object, direction: int, data: bytes) -> list[object]:
        raise RuntimeError("parser bug")

    monkeypatch.setattr(http.HttpSession, "feed", broken)
    pk = tcp_session("10.0.0.1", "10.0.0.2", 40000, 80, REQ, RESP) + \
        tcp_session("10.0.0.1", "10.0.0.2", 40001, 80, REQ, RESP)
    result = ingest(write(tmp_path, pcap(pk)))
    assert result.failure is None and result.stats.errors == 0
    assert result.stats.skipped["internal parser error (HttpSession)"] == 2
    assert len(flows(store)) == 2
    assert sum("HttpSession failed" in r.message for r in caplog.records) == 1  # logged once


def test_parallel_readers_store_the_same_rows(tmp_path: Path) -> None:
    from hopguard.ingest.flows import FlowSettings
    from hopguard.ingest.pipeline import ingest_file
    from tests.conftest import ROOT
    capture = ROOT / "examples" / "lab" / "socks-servers" / "capture.pcap.gz"
    got = []
    for workers in (1, 3):
        store = Store.open(":memory:")
        result = ingest_file(store, capture, sensor="t", flow=FlowSettings(workers=workers))
        assert result.failure is None and result.stats.errors == 0
        rows = {}
        for name in ("flow", "tls", "http", "proxy", "dns", "ssh", "tunnel"):
            # uids differ by worker: compare everything else
            rows[name] = sorted(
                tuple(str(v) for k, v in r.items() if k not in ("uid", "file_id"))
                for r in store.query(f"SELECT * FROM {name}").to_pylist())
        got.append((rows, result.stats.records, result.stats.added))
        store.close()
    assert got[0] == got[1]
    assert got[0][0]["proxy"] and got[0][0]["tls"]


def test_parallel_readers_report_damage_once(tmp_path: Path) -> None:
    from hopguard.ingest.flows import FlowSettings
    from hopguard.ingest.pipeline import ingest_file
    data = pcap(tcp_session("10.0.0.1", "10.0.0.2", 40000, 80, REQ, RESP) +
                tcp_session("10.0.0.3", "10.0.0.4", 40001, 80, REQ, RESP))
    path = write(tmp_path, data[:-10])
    store = Store.open(":memory:")
    result = ingest_file(store, path, sensor="t", flow=FlowSettings(workers=2))
    assert result.failure is None and result.stats.errors == 1
    assert len(store.query("SELECT * FROM flow").to_pylist()) == 2


def test_a_failing_reader_process_stores_nothing(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from hopguard.errors import HopguardError
    from hopguard.ingest.flows import FlowSettings, FlowTable
    from hopguard.ingest.pipeline import ingest_file

    def broken(self: FlowTable) -> None:
        raise RuntimeError("reader bug")

    monkeypatch.setattr(FlowTable, "finish", broken)  # inherited by the forked readers
    path = write(tmp_path, pcap(tcp_session("10.0.0.1", "10.0.0.2", 40000, 80, REQ, RESP)))
    store = Store.open(":memory:")
    with pytest.raises(HopguardError, match="a capture reader failed: RuntimeError: reader bug"):
        ingest_file(store, path, sensor="t", flow=FlowSettings(workers=2))
    assert sum(store.counts().values()) == 0
    assert store.query("SELECT count(*) AS n FROM source_file").to_pylist() == [{"n": 0}]


def test_tunnel_rows_as_zeek_writes_them(tmp_path: Path, ingest: Ingest, store: Store) -> None:
    from tests.conftest import ROOT
    assert ingest(ROOT / "examples" / "lab" / "socks-servers" / "capture.pcap.gz").failure is None
    rows = store.query("SELECT uid, tunnel_type, action FROM tunnel").to_pylist()
    proxied = store.query(
        "SELECT uid, protocol FROM proxy WHERE outcome = 'succeeded' OR outcome LIKE '2%'"
    ).to_pylist()
    assert rows and sorted((r["uid"], r["tunnel_type"]) for r in rows) == sorted(
        (p["uid"], "Tunnel::SOCKS" if p["protocol"].startswith("socks") else "Tunnel::HTTP")
        for p in proxied)
    assert {r["action"] for r in rows} == {"Tunnel::DISCOVER"}
    # a UDP encapsulation: DISCOVER when it starts, CLOSE when the carrying flow ends
    pk = tcp_session("10.0.0.1", "10.0.0.2", 40000, 80, REQ, RESP, wrap=vxlan)
    ingest(write(tmp_path, pcap(pk)))
    outer = store.query("SELECT uid FROM flow WHERE dst_port = 4789").to_pylist()
    got = store.query("SELECT uid, tunnel_type, action FROM tunnel WHERE tunnel_type = "
                      "'Tunnel::VXLAN' ORDER BY ts, action DESC").to_pylist()
    assert [(g["uid"], g["action"]) for g in got] == \
        [(outer[0]["uid"], "Tunnel::DISCOVER"), (outer[0]["uid"], "Tunnel::CLOSE")]


def test_large_files_are_hashed_while_read_and_still_stored_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import hashlib

    from hopguard.ingest import pipeline
    monkeypatch.setattr(pipeline, "HASH_ALONGSIDE_BYTES", 0)  # every file counts as large
    data = pcap(tcp_session("10.0.0.1", "10.0.0.2", 40000, 80, REQ, RESP))
    first, copy = write(tmp_path, data, "a.pcap"), write(tmp_path, data, "b.pcap")
    store = Store.open(str(tmp_path / "s.duckdb"))
    assert pipeline.ingest_file(store, first, sensor="t").failure is None
    again = pipeline.ingest_file(store, copy, sensor="t")
    assert again.duplicate_of == str(first) and again.stats.rows == 0
    assert store.query("SELECT sha256 FROM source_file").to_pylist() == \
        [{"sha256": hashlib.sha256(data).hexdigest()}]
    assert len(store.query("SELECT * FROM flow").to_pylist()) == 1
    store.close()
