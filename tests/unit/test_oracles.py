"""The corpus oracle readers (tests/corpus/oracles.py) on small samples of each format."""

from __future__ import annotations

import json
from pathlib import Path

from tests.corpus import oracles as o
from tests.corpus.oracles import Conn


def test_conn_normalises_addresses() -> None:
    c = Conn.of("TCP", "2001:0db8:0000::0001", "443", "[2001:db8::2]", 80)
    assert c == Conn("tcp", "2001:db8::1", 443, "2001:db8::2", 80)
    assert c.reversed().key == ("2001:db8::2", 80, "2001:db8::1", 443)
    assert str(c) == "tcp [2001:db8::1]:443 -> [2001:db8::2]:80"
    assert o.norm_ip("not-an-ip") == "not-an-ip"
    # ndpiReader's rendering of 2600:1901:0:7a0b:: and 2600:1900:4160:5999:0:19::
    assert o.norm_ip("[2600:1901::7a0b::]") == "2600:1901:0:7a0b::"
    assert o.norm_ip("2600:1900:4160:5999::19::") == "2600:1900:4160:5999:0:19::"


SNAP = """---
source: ja4/src/lib.rs
expression: output
---
- stream: 0
  transport: tcp
  src: 192.168.1.168
  dst: 13.107.237.40
  src_port: 50159
  dst_port: 443
  tls_server_name: mem.gfx.ms
  ja4: t13d1516h2_8daaf6152771_e5627efa2ab1
  ja4s: t130200_1302_a56c5b993250
- stream: 1
  transport: udp
  src: 192.168.1.168
  dst: 142.251.163.147
  src_port: 59102
  dst_port: 443
  ja4: q13d0310h3_55b375c5d22e_cd85d2d88918
  ja4ssh:
  - c36s36_c76s124_c0s0
  ssh_extras:
    hassh: 06046964c022c6407d15a27b12a6a4fb
- stream: 2
  transport: tcp
  src: 10.0.0.1
  dst: 10.0.0.2
  src_port: 1
  dst_port: 2
  ja4t: 8192_2-1-3-1-1-4_1360_2
"""

PY = [
    {"stream": 0, "src": "192.168.1.168", "dst": "13.107.237.40", "srcport": "50159",
     "dstport": "443", "domain": "mem.gfx.ms",
     "JA4.1": "t13d1516h2_8daaf6152771_e5627efa2ab1",
     "JA4.2": "t13d1515h2_8daaf6152771_f37e75b10bcc"},
]


def _ja4_tree(tmp_path: Path, py: list[dict[str, object]]) -> Path:
    root = tmp_path / "ja4"
    (root / "pcap").mkdir(parents=True)
    (root / "pcap/x.pcapng").write_bytes(b"\x0a\x0d\x0d\x0a")
    snaps = root / "rust/ja4/src/snapshots"
    snaps.mkdir(parents=True)
    (snaps / "ja4__insta@x.pcapng.snap").write_text(SNAP)
    data = root / "python/test/testdata"
    data.mkdir(parents=True)
    (data / "x.pcapng.json").write_text(json.dumps(py))
    return root


def test_insta_snapshot_top_level_keys_only(tmp_path: Path) -> None:
    p = tmp_path / "s.snap"
    p.write_text(SNAP)
    items = o.read_insta_snapshot(p)
    assert len(items) == 3
    assert items[0]["ja4"] == "t13d1516h2_8daaf6152771_e5627efa2ab1"
    assert items[1]["transport"] == "udp" and "hassh" not in items[1]
    assert "ja4" not in items[2]


def test_ja4_expectations_merge_both_tools(tmp_path: Path) -> None:
    got = o.ja4_expectations(_ja4_tree(tmp_path, PY))["x.pcapng"]
    assert [(e.stream, e.ordinal, e.conn.proto, e.sources) for e in got] == [
        (0, 1, "tcp", ("rust", "python")), (0, 2, "tcp", ("python",)), (1, 1, "udp", ("rust",))]
    assert got[0].sni == "mem.gfx.ms"
    assert got[1].ja4 == "t13d1515h2_8daaf6152771_f37e75b10bcc"


def test_ja4_expectations_refuse_disagreeing_tools(tmp_path: Path) -> None:
    bad = [dict(PY[0], **{"JA4.1": "t13d0000h2_000000000000_000000000000"})]
    try:
        o.ja4_expectations(_ja4_tree(tmp_path, bad))
    except ValueError as exc:
        assert "rust" in str(exc)
    else:
        raise AssertionError("disagreement not reported")


TLS_TSV = (
    "frame.number\tframe.time_epoch\tip.src\tipv6.src\ttcp.srcport\tudp.srcport\tip.dst\t"
    "ipv6.dst\ttcp.dstport\tudp.dstport\ttls.handshake.type\ttls.handshake.version\t"
    "tls.handshake.extensions_server_name\ttls.handshake.extensions_alpn_str\t"
    "tls.handshake.ja3_full\ttls.handshake.ja3\ttls.handshake.ja3s_full\ttls.handshake.ja3s\n"
    "4\t1.0\t192.168.0.253\t\t49584\t\t151.101.36.133\t\t443\t\t1\t0x0303\tgithub.com\t"
    "h2,http/1.1\t771,49196,0-11,29,0\t316193effb467e51d0301cabd36b69e0\t\t\n"
    "6\t1.1\t151.101.36.133\t\t443\t\t192.168.0.253\t\t49584\t\t2,11,14\t0x0303\t\th2\t\t\t"
    "771,49199,65281-0\t098e26e2609212ac1bfac552fbe04127\n"
    "8\t1.2\t192.168.0.253\t\t49584\t\t151.101.36.133\t\t443\t\t16\t\t\t\t\t\t\t\n"
    # VXLAN: outer UDP, inner TCP; outer and inner IPv4 addresses
    "9\t1.3\t10.0.0.1,192.168.22.4\t\t45228\t4789\t10.0.0.2,10.10.20.4\t\t443\t4789\t1\t"
    "0x0303\t\t\t771,1,0,,\tabc\t\t\n"
    # 6in4: outer IPv4, inner IPv6
    "10\t1.4\t174.3.73.24\t2001:470::1\t60205\t\t184.105.255.26\t2604:a880::1\t443\t\t1\t"
    "0x0303\t\t\t771,1,0,,\tdef\t\t\n"
)


def test_tshark_tls(tmp_path: Path) -> None:
    p = tmp_path / "c.pcap.tls.tsv"
    p.write_text(TLS_TSV)
    rows = o.tshark_tls(p)
    assert [r.frame for r in rows] == [4, 6, 9, 10]
    ch, sh, vx, six = rows
    assert ch.client_hello and not ch.server_hello
    assert ch.conn == Conn.of("tcp", "192.168.0.253", 49584, "151.101.36.133", 443)
    assert ch.sni == "github.com" and ch.alpn == ("h2", "http/1.1")
    assert ch.ja3 == "316193effb467e51d0301cabd36b69e0" and ch.ja3s is None
    assert sh.server_hello and sh.types == (2, 11, 14) and sh.alpn == ("h2",)
    assert sh.ja3s_full == "771,49199,65281-0"
    assert vx.conn == Conn.of("tcp", "192.168.22.4", 45228, "10.10.20.4", 443)
    assert six.conns == (Conn.of("tcp", "2001:470::1", 60205, "2604:a880::1", 443),
                         Conn.of("tcp", "174.3.73.24", 60205, "184.105.255.26", 443))


def test_tshark_tables_map_to_captures(tmp_path: Path) -> None:
    derived = tmp_path / "derived/wireshark-4.0.17"
    (derived / "zeek/Traces").mkdir(parents=True)
    for kind in ("tls", "http", "socks"):
        (derived / f"zeek/Traces/a.b.pcap.{kind}.tsv").write_text("frame.number\n")
    (derived / "zeek/Traces/notes.tsv").write_text("x\n")
    got = o.tshark_tables(derived, tmp_path / "corpus")
    assert list(got) == [tmp_path / "corpus/zeek/Traces/a.b.pcap"]
    assert sorted(got[tmp_path / "corpus/zeek/Traces/a.b.pcap"]) == ["http", "socks", "tls"]


HTTP_TSV = (
    "frame.number\tip.src\tipv6.src\ttcp.srcport\tip.dst\tipv6.dst\ttcp.dstport\t"
    "http.request.method\thttp.host\thttp.request.uri\thttp.response.code\thttp.user_agent\n"
    "5\t\t::1\t52522\t\t::1\t80\tCONNECT\tsecure.newegg.com:443\tsecure.newegg.com:443\t\tFx\n"
    "7\t\t::1\t80\t\t::1\t52522\t\t\t\t200\t\n"
)


def test_tshark_http(tmp_path: Path) -> None:
    p = tmp_path / "c.pcap.http.tsv"
    p.write_text(HTTP_TSV)
    req, resp = o.tshark_http(p)
    assert req.conn == Conn.of("tcp", "::1", 52522, "::1", 80)
    assert (req.method, req.host, req.uri, req.user_agent) == (
        "CONNECT", "secure.newegg.com:443", "secure.newegg.com:443", "Fx")
    assert resp.method is None and resp.status == 200


SOCKS_TSV = (
    "frame.number\tip.src\tipv6.src\ttcp.srcport\tip.dst\tipv6.dst\ttcp.dstport\t"
    "socks.version\tsocks.command\tsocks.results\tsocks.dst\tsocks.v4a_dns_name\t"
    "socks.remote_name\tsocks.dstport\tsocks.port\tsocks.username\n"
    "4\t192.168.0.2\t\t55951\t192.168.0.1\t\t1080\t5\t\t\t\t\t\t\t\t\n"
    "8\t192.168.0.2\t\t55951\t192.168.0.1\t\t1080\t5\t\t\t\t\t\t\t\tbob\n"
    "11\t192.168.0.2\t\t55951\t192.168.0.1\t\t1080\t5\t1\t\t192.168.0.2\t\t\t\t22\t\n"
    "15\t192.168.0.1\t\t1080\t192.168.0.2\t\t55951\t5\t\t0\t192.168.0.1\t\t\t\t55951\t\n"
    # tshark keeps decoding the tunnel as SOCKS: a bogus later "request"
    "18\t192.168.0.2\t\t55951\t192.168.0.1\t\t1080\t5\t1\t\t\t\t\t443\t\t\n"
    "5\t127.0.0.1\t\t62270\t127.0.0.1\t\t1080\t4\t1\t\t192.150.187.12\t\t\t80\t\t\n"
    "7\t127.0.0.1\t\t1080\t127.0.0.1\t\t62270\t0\t\t90\t0.0.0.0\t\t\t0\t\t\n"
    "20\t10.0.0.50\t\t59580\t85.1.1.1\t\t1080\t5\t1\t\t\t\twww.google.com\t\t443\t\n"
)


def test_socks_handshakes_keep_first_request_and_reply(tmp_path: Path) -> None:
    p = tmp_path / "c.pcap.socks.tsv"
    p.write_text(SOCKS_TSV)
    hs = {h.conn.src_port: h for h in o.socks_handshakes(o.tshark_socks(p))}
    v5 = hs[55951]
    assert v5.conn == Conn.of("tcp", "192.168.0.2", 55951, "192.168.0.1", 1080)
    assert (v5.version, v5.target_ip, v5.target_port, v5.user, v5.reply) == (
        5, "192.168.0.2", 22, "bob", 0)
    v4 = hs[62270]
    assert (v4.version, v4.target_ip, v4.target_port, v4.reply) == (4, "192.150.187.12", 80, 90)
    name = hs[59580]
    assert (name.target_host, name.target_port, name.reply) == ("www.google.com", 443, None)


ZEEK_LOG = (
    "#separator \\x09\n#set_separator\t,\n#empty_field\t(empty)\n#unset_field\t-\n#path\tsocks\n"
    "#fields\tts\tuid\tid.orig_h\tid.orig_p\tid.resp_h\tid.resp_p\tversion\tuser\t"
    "request.host\trequest.name\trequest_p\ttags\n"
    "#types\ttime\tstring\taddr\tport\taddr\tport\tcount\tstring\taddr\tstring\tport\tset\n"
    "XXXXXXXXXX.XXXXXX\tC1\t10.0.0.55\t53994\t60.190.189.214\t8124\t5\t-\t-\twww.osnews.com\t80"
    "\t(empty)\n#close XXXX\n"
)
ZEEK_CUT = (
    "### BTest baseline data generated by btest-diff. Do not edit.\n"
    "id.orig_h\tid.orig_p\tid.resp_h\tid.resp_p\tversion\tstatus\n"
    "192.168.0.2\t55951\t192.168.0.1\t10080\t5\tsucceeded\n"
)


def test_zeek_logs_and_cuts(tmp_path: Path) -> None:
    p = tmp_path / "socks.log"
    p.write_text(ZEEK_LOG)
    (row,) = o.read_zeek_log(p)
    assert row["user"] is None and row["request.name"] == "www.osnews.com" and row["tags"] == ""
    assert o.zeek_conn(row, "tcp") == Conn.of("tcp", "10.0.0.55", 53994, "60.190.189.214", 8124)
    c = tmp_path / "socks.log.cut"
    c.write_text(ZEEK_CUT)
    (cut,) = o.read_zeek_log(c)
    assert cut["id.resp_p"] == "10080" and cut["status"] == "succeeded"


def test_zeek_baselines_need_dir_and_trace(tmp_path: Path) -> None:
    btest = tmp_path / "btest"
    d = btest / "Baseline/scripts.base.protocols.socks.trace1"
    d.mkdir(parents=True)
    (d / "socks.log").write_text(ZEEK_LOG)
    (d / "tunnel.log").write_text(ZEEK_LOG)
    (d / "output").write_text("x")
    (btest / "Traces").mkdir()
    assert o.zeek_baselines(btest) == []  # the trace is missing
    (btest / "Traces/socks.pcap").write_bytes(b"\xd4\xc3\xb2\xa1")
    (b,) = o.zeek_baselines(btest)
    assert b.trace == btest / "Traces/socks.pcap" and sorted(b.logs) == ["socks", "tunnel"]


def test_arkime_sessions(tmp_path: Path) -> None:
    body = {"source": {"ip": "10.0.0.1", "port": 50606, "packets": 6, "bytes": 404},
            "destination": {"ip": "10.0.0.2", "port": 9901, "packets": 10, "bytes": 7348},
            "client": {"bytes": 38}, "server": {"bytes": 6784}, "ipProtocol": 6,
            "protocol": ["socks", "tcp", "tls"],
            "socks": {"host": "login.live.com", "port": 443, "user": "fd7bcf7b5c9e1d"},
            "tls": {"ja3s": ["45c746ac8e66bbaef4f2ebd6e6cd82db"]}}
    icmp = {"source": {"ip": "10.0.0.1", "packets": 1}, "destination": {"ip": "10.0.0.2"},
            "ipProtocol": 1}
    p = tmp_path / "x.test"
    p.write_text(json.dumps({"sessions3": [{"body": body}, {"body": icmp}]}))
    s, i = o.arkime_sessions(p)
    assert s.conn == Conn.of("tcp", "10.0.0.1", 50606, "10.0.0.2", 9901)
    assert (s.src_packets, s.dst_packets, s.client_bytes, s.server_bytes) == (6, 10, 38, 6784)
    assert s.socks["user"] == "fd7bcf7b5c9e1d" and s.tls["ja3s"]
    assert i.conn.proto == "1" and i.conn.src_port == 0 and i.client_bytes is None


NDPI_OUT = (
    "DPI Packets (TCP):\t7\t(7.00 pkts/flow)\n\nJA3 Host Stats: \n"
    "\t\t IP Address                  \t # JA3C     \n\t1\t 192.168.1.13             \t 1      \n"
    "\n\n\t1\tTCP 192.168.1.13:55523 <-> 178.62.197.130:443 [proto: 91.26/TLS.ntop]"
    "[IP: 26/ntop][Encrypted][DPI packets: 7][cat: Network/14]"
    "[51 pkts/4260 bytes <-> 58 pkts/69722 bytes][Goodput ratio: 22/94][1.10 sec]"
    "[Hostname/SNI: www.ntop.org][(Advertised) ALPNs: h2;http/1.1][(Negotiated) ALPN: h2]"
    "[TLSv1.2][JA3C: 2a26b1a62e40d25d4de3babc9d532f30][JA4: t12d6707h2_2955a3196ffa_c83f907a73d3]"
    "[ServerNames: www.ntop.org][JA3S: ae53107a2e47ea20c72ac44821a728bf (WEAK)][Firefox]\n"
    "\t2\tICMPV6 [2a03:2880::2]:0 -> [2001:470::4dec]:0 [proto: 102/ICMPV6]"
    "[1 pkts/1314 bytes -> 0 pkts/0 bytes][Goodput ratio: 94/0]\n\n"
    "Undetected flows:\n"
    "\t1\tUDP 10.10.100.25:62367 -> 10.10.101.2:17000 [VLAN: 505][proto: 0/Unknown]"
    "[5 pkts/850 bytes -> 0 pkts/0 bytes][Goodput ratio: 59/0]\n"
)


def test_ndpi_flows(tmp_path: Path) -> None:
    p = tmp_path / "x.pcap.out"
    p.write_text(NDPI_OUT)
    tls, icmp, udp = o.ndpi_flows(p)
    assert tls.conn == Conn.of("tcp", "192.168.1.13", 55523, "178.62.197.130", 443)
    assert tls.bidirectional and not tls.undetected and tls.l7 == "91.26/TLS.ntop"
    assert (tls.a_pkts, tls.a_bytes, tls.b_pkts, tls.b_bytes) == (51, 4260, 58, 69722)
    assert tls.goodput_ratio == (22, 94) and tls.tls_version == "TLSv1.2"
    assert (tls.sni, tls.ja3c, tls.ja3s) == (
        "www.ntop.org", "2a26b1a62e40d25d4de3babc9d532f30", "ae53107a2e47ea20c72ac44821a728bf")
    assert tls.ja4 == "t12d6707h2_2955a3196ffa_c83f907a73d3"
    assert tls.alpn_advertised == ("h2", "http/1.1") and tls.alpn_negotiated == "h2"
    assert icmp.conn.proto == "icmpv6" and icmp.conn.src_ip == "2a03:2880::2"
    assert not icmp.bidirectional
    assert udp.undetected and udp.vlan == 505 and (udp.a_pkts, udp.a_bytes) == (5, 850)


def test_captures_under(tmp_path: Path) -> None:
    for name in ("a.pcap", "b.pcapng", "c.trace", "d.cap", "e.pcap.gz", "f.pcap.out", "g.json"):
        (tmp_path / name).write_bytes(b"x")
    assert [p.name for p in o.captures_under(tmp_path)] == [
        "a.pcap", "b.pcapng", "c.trace", "d.cap", "e.pcap.gz"]
