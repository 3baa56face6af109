"""Readers for what established tools output for the captures of the public corpus.

Each reader turns one oracle's files into plain records keyed by connection, independently of
hopguard's own code, so that the corpus tests can compare field by field:

* FoxIO JA4 (``ja4/``): the Rust tool's insta snapshots (YAML lists, one item per stream, with
  ``ja4`` the first ClientHello's fingerprint, TCP and QUIC) and the Python tool's JSON lists
  (``JA4.1``, ``JA4.2`` ... one per ClientHello of the stream, TCP only).
* tshark 4.0.17 (``derived/wireshark-4.0.17/<capture>.{tls,http,socks}.tsv``): one row per frame
  that carries the protocol, the columns named by the header line. A field that occurs more than
  once in a frame (the IP addresses of a tunnelled packet, two handshake messages) holds all
  occurrences joined by ``,``.
* Zeek (``zeek/testing/btest/Baseline/<test>/*.log``): Zeek TSV logs (``#fields`` header) or
  ``zeek-cut -m`` extracts (``*.cut``: the first non-comment line names the columns); the
  timestamps and uids are canonicalised by btest. Which trace each test read is not in the
  corpus: :data:`ZEEK_BASELINE_TRACES` records it from the test scripts.
* Arkime (``arkime/tests/pcap/<name>.test``): JSON ``{"sessions3": [{"body": {...}}]}``, one
  body per session, ``source`` = the SYN sender (or first packet's sender).
* nDPI (``ndpi/tests/cfgs/default/result/<pcap>.out``): ndpiReader's report. Each flow is one
  line ``<n>\t<PROTO> <a>:<port> <-> <b>:<port> [field: value][...]``, ``a`` being the sender
  of the flow's first packet and ``->`` marking a flow seen in one direction only. Its
  ``[N pkts/B bytes <-> M pkts/C bytes]`` counts, per direction, packets and *captured frame
  bytes*: ndpiReader adds ``pcap_pkthdr.caplen`` for every packet (link-layer header, outer
  tunnel headers and all), not IP or payload bytes (``example/reader_util.c``: ``rawsize`` is
  ``header->caplen``).
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CAPTURE_SUFFIXES = (".pcap", ".pcapng", ".trace", ".cap", ".pcap.gz", ".pcapng.gz", ".cap.gz",
                    ".trace.gz")


def authority(uri: str | None) -> tuple[str | None, int | None]:
    """host and port of a CONNECT request's authority ("host:port", "[v6]:port")."""
    if not uri:
        return None, None
    host, _, port = uri.rpartition(":")
    if not host or not port.isdigit():
        return uri, None
    return host.strip("[]"), int(port)


def norm_ip(text: str) -> str:
    """An address in canonical form (IPv6 compressed, brackets and zone dropped).

    ndpiReader prints every run of zero groups of an IPv6 address as ``::``
    ("2600:1901::7a0b::" for 2600:1901:0:7a0b::); such a text is read with each ``::`` but
    the last standing for one zero group, when that yields a valid address.
    """
    s = text.strip().strip("[]").split("%", 1)[0]
    try:
        return ipaddress.ip_address(s).compressed
    except ValueError:
        pass
    if s.count("::") > 1:
        head, _, tail = s.rpartition("::")
        try:
            return ipaddress.ip_address(head.replace("::", ":0:") + "::" + tail).compressed
        except ValueError:
            pass
    return s


@dataclass(frozen=True, slots=True, order=True)
class Conn:
    """A directed connection: ``src`` is the client (originator) where the oracle says so."""

    proto: str  # "tcp", "udp" or "" when the oracle does not say
    src_ip: str
    src_port: int
    dst_ip: str
    dst_port: int

    @classmethod
    def of(cls, proto: str, src_ip: str, src_port: int | str, dst_ip: str,
           dst_port: int | str) -> Conn:
        return cls(proto.lower(), norm_ip(src_ip), int(src_port), norm_ip(dst_ip), int(dst_port))

    @property
    def key(self) -> tuple[str, int, str, int]:
        return (self.src_ip, self.src_port, self.dst_ip, self.dst_port)

    @property
    def endpoints(self) -> frozenset[tuple[str, int]]:
        return frozenset({(self.src_ip, self.src_port), (self.dst_ip, self.dst_port)})

    def reversed(self) -> Conn:
        return Conn(self.proto, self.dst_ip, self.dst_port, self.src_ip, self.src_port)

    def __str__(self) -> str:
        def ep(ip: str, port: int) -> str:
            return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"
        return (f"{self.proto or '?'} {ep(self.src_ip, self.src_port)} -> "
                f"{ep(self.dst_ip, self.dst_port)}")


def is_capture(path: Path) -> bool:
    name = path.name.lower()
    return path.is_file() and name.endswith(CAPTURE_SUFFIXES)


def captures_under(root: Path) -> list[Path]:
    """Every capture file below ``root`` (by name: pcap, pcapng, trace, cap, and their .gz)."""
    return sorted(p for p in root.rglob("*") if is_capture(p))


# --------------------------------------------------------------------------------------------
# FoxIO JA4
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Ja4Expected:
    capture: str  # file name in ja4/pcap
    stream: int  # the reference tool's stream number
    conn: Conn
    ordinal: int  # 1 = the stream's first ClientHello, 2 = the second (HelloRetryRequest) ...
    ja4: str
    sources: tuple[str, ...]  # "rust" and/or "python"
    sni: str | None = None


_SNAP_KEY = re.compile(r"^  ([A-Za-z0-9_]+):(?: (.*))?$")


def read_insta_snapshot(path: Path) -> list[dict[str, str]]:
    """The top-level scalar keys of each item of an insta YAML snapshot (a list of mappings).

    Nested values (``ja4ssh`` lists, ``ssh_extras``, ``http``, ``tls_certs``) are skipped: only
    the lines indented by exactly two spaces and not starting a list item are read.
    """
    items: list[dict[str, str]] = []
    cur: dict[str, str] | None = None
    for raw in path.read_text(encoding="utf-8").splitlines():
        if raw.startswith("- "):
            cur = {}
            items.append(cur)
            raw = "  " + raw[2:]
        if cur is None:
            continue
        m = _SNAP_KEY.match(raw)
        if m and m.group(2) is not None:
            value = m.group(2)
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
                value = value[1:-1]
            cur[m.group(1)] = value
    return items


def ja4_expectations(ja4_root: Path) -> dict[str, list[Ja4Expected]]:
    """Per capture name in ``ja4/pcap``: every client JA4 the reference tools give.

    The Rust snapshot holds the first ClientHello of each stream (TCP and QUIC); the Python JSON
    holds every ClientHello of each TCP stream (``JA4.1``, ``JA4.2``). Where both give the same
    (stream, ordinal) they must agree, else ``ValueError``.
    """
    out: dict[str, list[Ja4Expected]] = {}
    for cap in sorted((ja4_root / "pcap").iterdir()):
        if not is_capture(cap):
            continue
        found: dict[tuple[Conn, int], dict[str, Any]] = {}
        snap = ja4_root / "rust/ja4/src/snapshots" / f"ja4__insta@{cap.name}.snap"
        if snap.is_file():
            for it in read_insta_snapshot(snap):
                if not it.get("ja4"):
                    continue
                conn = Conn.of(it.get("transport", ""), it["src"], it["src_port"], it["dst"],
                               it["dst_port"])
                found[(conn, 1)] = {"ja4": it["ja4"], "stream": int(it["stream"]),
                                    "sources": ["rust"], "sni": it.get("tls_server_name")}
        pyj = ja4_root / "python/test/testdata" / f"{cap.name}.json"
        if pyj.is_file():
            for it in json.loads(pyj.read_text(encoding="utf-8")):
                for k, v in it.items():
                    m = re.fullmatch(r"JA4\.(\d+)", k)
                    if not m:
                        continue
                    ordinal = int(m.group(1))
                    # the Python tool reads TCP only
                    conn = Conn.of("tcp", it["src"], it["srcport"], it["dst"], it["dstport"])
                    prev = found.get((conn, ordinal))
                    if prev is None:
                        found[(conn, ordinal)] = {"ja4": v, "stream": int(it["stream"]),
                                                  "sources": ["python"],
                                                  "sni": it.get("domain")}
                    elif prev["ja4"] != v:
                        raise ValueError(f"{cap.name} {conn}: rust {prev['ja4']} != python {v}")
                    else:
                        prev["sources"].append("python")
        if found:
            out[cap.name] = [
                Ja4Expected(capture=cap.name, stream=d["stream"], conn=c, ordinal=o, ja4=d["ja4"],
                            sources=tuple(d["sources"]), sni=d["sni"])
                for (c, o), d in sorted(found.items(), key=lambda kv: (kv[1]["stream"], kv[0][1]))
            ]
    return out


# --------------------------------------------------------------------------------------------
# tshark 4.0.17
# --------------------------------------------------------------------------------------------

def read_tsv(path: Path) -> list[dict[str, str]]:
    """A header-line TSV as dicts (tshark -T fields -E header=y)."""
    lines = path.read_bytes().decode("utf-8", errors="replace").split("\n")
    if not lines or not lines[0]:
        return []
    head = lines[0].rstrip("\r").split("\t")
    rows = []
    for ln in lines[1:]:
        ln = ln.rstrip("\r")
        if not ln:
            continue
        cells = ln.split("\t")
        cells += [""] * (len(head) - len(cells))
        rows.append(dict(zip(head, cells, strict=False)))
    return rows


def _last(value: str) -> str:
    return value.rsplit(",", 1)[-1] if value else ""


def _tshark_conns(row: dict[str, str], proto: str) -> tuple[Conn, ...]:
    """The frame's connection, innermost headers first.

    tshark lists every occurrence of a field, outer first, so the last address and port are the
    innermost. A frame with both IPv4 and IPv6 headers (6in4, 4in6, Teredo, AYIYA) does not say
    which is inner: both readings are returned, the IPv6 one first (tunnels carry IPv6 in IPv4
    far more often).
    """
    sp = _last(row.get(f"{proto}.srcport", ""))
    dp = _last(row.get(f"{proto}.dstport", ""))
    if not sp or not dp:
        return ()
    out = []
    for fam in ("ipv6", "ip"):
        s, d = _last(row.get(f"{fam}.src", "")), _last(row.get(f"{fam}.dst", ""))
        if s and d:
            out.append(Conn.of(proto, s, sp, d, dp))
    return tuple(out)


@dataclass(frozen=True, slots=True)
class TsharkTls:
    frame: int
    conns: tuple[Conn, ...]  # first = preferred reading, see _tshark_conns
    types: tuple[int, ...]  # handshake message types in the frame (1 ClientHello, 2 ServerHello)
    version: str  # legacy_version of the hello, e.g. 0x0303
    sni: str | None
    alpn: tuple[str, ...] | None  # offered (ClientHello) or selected (ServerHello)
    ja3_full: str | None
    ja3: str | None
    ja3s_full: str | None
    ja3s: str | None

    @property
    def conn(self) -> Conn:
        return self.conns[0]

    @property
    def client_hello(self) -> bool:
        return 1 in self.types

    @property
    def server_hello(self) -> bool:
        return 2 in self.types


def tshark_tls(path: Path) -> list[TsharkTls]:
    """Rows of a ``.tls.tsv`` that carry a ClientHello or ServerHello."""
    out = []
    for r in read_tsv(path):
        types = tuple(int(t) for t in r.get("tls.handshake.type", "").split(",") if t.isdigit())
        if 1 not in types and 2 not in types:
            continue
        proto = "tcp" if r.get("tcp.srcport") else "udp"
        conns = _tshark_conns(r, proto)
        if not conns:
            continue
        alpn = r.get("tls.handshake.extensions_alpn_str", "")
        out.append(TsharkTls(
            frame=int(r["frame.number"]), conns=conns, types=types,
            version=r.get("tls.handshake.version", ""),
            sni=r.get("tls.handshake.extensions_server_name") or None,
            alpn=tuple(alpn.split(",")) if alpn else None,
            ja3_full=r.get("tls.handshake.ja3_full") or None,
            ja3=r.get("tls.handshake.ja3") or None,
            ja3s_full=r.get("tls.handshake.ja3s_full") or None,
            ja3s=r.get("tls.handshake.ja3s") or None))
    return out


@dataclass(frozen=True, slots=True)
class TsharkHttp:
    frame: int
    conns: tuple[Conn, ...]
    method: str | None
    host: str | None
    uri: str | None
    status: int | None
    user_agent: str | None

    @property
    def conn(self) -> Conn:
        return self.conns[0]


def tshark_http(path: Path) -> list[TsharkHttp]:
    """Rows of an ``.http.tsv``: requests (method set) and responses (status set)."""
    out = []
    for r in read_tsv(path):
        conns = _tshark_conns(r, "tcp")
        if not conns:
            continue
        code = _last(r.get("http.response.code", ""))
        out.append(TsharkHttp(
            frame=int(r["frame.number"]), conns=conns,
            method=r.get("http.request.method") or None, host=r.get("http.host") or None,
            uri=r.get("http.request.uri") or None, status=int(code) if code.isdigit() else None,
            user_agent=r.get("http.user_agent") or None))
    return out


@dataclass(frozen=True, slots=True)
class TsharkSocks:
    frame: int
    conn: Conn  # as the frame flows (client -> server or server -> client)
    version: int | None
    command: int | None
    result: int | None
    dst_ip: str | None
    dst_name: str | None  # SOCKS4a name or SOCKS5 domain
    port: int | None
    username: str | None


def tshark_socks(path: Path) -> list[TsharkSocks]:
    """Rows of a ``.socks.tsv``. tshark 4.0 keeps decoding a SOCKS connection after the
    handshake (the tunnelled payload shows as further "requests"), so only a connection's first
    request/reply rows mean anything; see :func:`socks_handshakes`."""
    out = []
    for r in read_tsv(path):
        conns = _tshark_conns(r, "tcp")
        if not conns:
            continue

        def num(k: str, row: dict[str, str] = r) -> int | None:
            v = _last(row.get(k, ""))
            return int(v) if v.isdigit() else None

        port = num("socks.dstport")
        if port is None:
            port = num("socks.port")
        out.append(TsharkSocks(
            frame=int(r["frame.number"]), conn=conns[0], version=num("socks.version"),
            command=num("socks.command"), result=num("socks.results"),
            dst_ip=r.get("socks.dst") or None,
            dst_name=r.get("socks.v4a_dns_name") or r.get("socks.remote_name") or None,
            port=port, username=r.get("socks.username") or None))
    return out


@dataclass(frozen=True, slots=True)
class SocksHandshake:
    conn: Conn  # client -> proxy
    version: int
    target_ip: str | None
    target_host: str | None
    target_port: int | None
    user: str | None
    reply: int | None  # SOCKS4: 90.., SOCKS5: 0..


def socks_handshakes(rows: Iterable[TsharkSocks], proxy_ports: Iterable[int] = (1080,)
                     ) -> list[SocksHandshake]:
    """The first request and reply of each SOCKS connection, from tshark rows.

    The client side is the one whose port is not a proxy port. The request is the client's first
    row with a command; the reply the proxy's first row with a result after it; the user the
    client's first row with a user name (SOCKS4 user id or SOCKS5 username/password
    sub-negotiation) before the request (SOCKS4) or before the reply (SOCKS5).
    """
    ports = set(proxy_ports)
    by_conn: dict[Conn, list[TsharkSocks]] = {}
    for r in sorted(rows, key=lambda r: r.frame):
        c = r.conn if r.conn.dst_port in ports else r.conn.reversed()
        by_conn.setdefault(c, []).append(r)
    out = []
    for c, rs in by_conn.items():
        req = next((r for r in rs if r.conn == c and r.command is not None), None)
        if req is None:
            continue
        rep = next((r for r in rs if r.conn != c and r.frame > req.frame
                    and r.result is not None), None)
        user = next((r.username for r in rs if r.conn == c and r.username
                     and r.frame <= req.frame), None)
        out.append(SocksHandshake(
            conn=c, version=req.version or 0, target_ip=req.dst_ip, target_host=req.dst_name,
            target_port=req.port, user=user, reply=rep.result if rep else None))
    return out


def tshark_tables(derived_root: Path, corpus: Path) -> dict[Path, dict[str, Path]]:
    """Capture path -> {"tls": tsv, "http": tsv, "socks": tsv} for the tables present."""
    out: dict[Path, dict[str, Path]] = {}
    for tsv in sorted(derived_root.rglob("*.tsv")):
        m = re.fullmatch(r"(.*)\.(tls|http|socks)\.tsv", tsv.name)
        if not m:
            continue
        rel = tsv.parent.relative_to(derived_root) / m.group(1)
        out.setdefault(corpus / rel, {})[m.group(2)] = tsv
    return out


# --------------------------------------------------------------------------------------------
# Zeek baselines
# --------------------------------------------------------------------------------------------

# Baseline test directory -> the trace its test script reads (``zeek -r $TRACES/...`` in
# zeek/testing/btest/<dir with dots as slashes>.{test,zeek}; older scripts name the same traces
# ``*.trace``, the corpus holds them as ``*.pcap``).
ZEEK_BASELINE_TRACES: dict[str, str] = {
    "scripts.base.protocols.socks.trace1": "socks.pcap",
    "scripts.base.protocols.socks.trace2": "socks-with-ssl.pcap",
    "scripts.base.protocols.socks.trace3": "tunnels/socks.pcap",
    "scripts.base.protocols.socks.socks-auth": "socks-auth.pcap",
    "scripts.base.protocols.socks.socks-auth-2": "socks-auth.pcap",  # TEST-START-NEXT variant
    "scripts.base.protocols.socks.socks-auth-10080": "socks-auth-10080.pcap",
    "scripts.base.protocols.http.http-connect-with-header": "http/connect-with-header.pcap",
    "scripts.base.protocols.http.101-switching-protocols": "http/websocket.pcap",
    "scripts.base.protocols.ssl.basic": "tls/tls-conn-with-extensions.pcap",
    "scripts.base.protocols.ssl.dhe": "tls/dhe.pcap",
    "scripts.base.protocols.ssl.ecdhe": "tls/ecdhe.pcap",
    "scripts.base.protocols.ssl.tls-1.2": "tls/tls1.2.pcap",
    "scripts.base.protocols.ssl.tls1_1": "tls/tls1_1.pcap",
    "scripts.base.protocols.ssl.tls13-version": "tls/tls13draft23-chrome67.0.3368.0-canary.pcap",
    "scripts.base.protocols.ssl.tls13_encrypted_handshake_events": "tls/tls13_wolfssl.pcap",
    "scripts.base.protocols.quic.chromium": "quic/chromium-115.0.5790.110-api-cirrus-com.pcap",
    "scripts.base.protocols.quic.curl-http3": "quic/curl-8.1.2-dev-http3-www-google-de.pcap",
    "scripts.base.protocols.quic.firefox": "quic/firefox-102.13.0esr-blog-cloudflare-com.pcap",
    "scripts.base.protocols.quic.quicv2-http3-443": "quic/quicv2-http3-443.pcap",
    "core.tunnels.gre": "tunnels/gre-sample.pcap",
    "core.tunnels.teredo": "tunnels/Teredo.pcap",
    "core.tunnels.vxlan": "tunnels/vxlan.pcap",
    "core.tunnels.geneve": "tunnels/geneve.pcap",
    "core.tunnels.ayiya": "tunnels/ayiya3.pcap",
}


def read_zeek_log(path: Path) -> list[dict[str, str | None]]:
    """A Zeek TSV log or a ``zeek-cut -m`` extract as dicts; ``-`` (unset) becomes None."""
    fields: list[str] | None = None
    sep = "\t"
    unset, empty = "-", "(empty)"
    rows: list[dict[str, str | None]] = []
    for raw in path.read_bytes().decode("utf-8", errors="replace").splitlines():
        if raw.startswith("#"):
            if raw.startswith("#separator"):
                sep = raw.split(" ", 1)[1].encode().decode("unicode_escape")
            elif raw.startswith("#fields"):
                fields = raw.split(sep)[1:]
            elif raw.startswith("#unset_field"):
                unset = raw.split(sep, 1)[1]
            elif raw.startswith("#empty_field"):
                empty = raw.split(sep, 1)[1]
            continue
        if not raw:
            continue
        cells = raw.split(sep)
        if fields is None:  # zeek-cut -m: the first line names the columns
            fields = cells
            continue
        rows.append({f: (None if v == unset else "" if v == empty else v)
                     for f, v in zip(fields, cells, strict=False)})
    return rows


def zeek_conn(row: dict[str, str | None], proto: str = "") -> Conn:
    return Conn.of(proto or (row.get("proto") or ""), row["id.orig_h"] or "",
                   row["id.orig_p"] or 0, row["id.resp_h"] or "", row["id.resp_p"] or 0)


@dataclass(frozen=True, slots=True)
class ZeekBaseline:
    test: str
    trace: Path
    logs: dict[str, Path]  # "socks" -> socks.log (or socks.log.cut), ...


def zeek_baselines(zeek_btest: Path) -> list[ZeekBaseline]:
    """The baselines whose trace is in the corpus, with their logs by kind."""
    out = []
    for test, trace in sorted(ZEEK_BASELINE_TRACES.items()):
        d = zeek_btest / "Baseline" / test
        t = zeek_btest / "Traces" / trace
        if not d.is_dir() or not t.is_file():
            continue
        logs = {}
        for f in sorted(d.iterdir()):
            m = re.fullmatch(r"([a-z0-9_]+)\.log(\.cut)?", f.name)
            if m:
                logs[m.group(1)] = f
        out.append(ZeekBaseline(test=test, trace=t, logs=logs))
    return out


# --------------------------------------------------------------------------------------------
# Arkime
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class ArkimeSession:
    conn: Conn  # source -> destination as Arkime oriented the session
    ip_protocol: int
    protocols: tuple[str, ...]
    src_packets: int
    dst_packets: int
    client_bytes: int | None  # payload bytes (Arkime "client.bytes" / "server.bytes")
    server_bytes: int | None
    socks: dict[str, Any] = field(default_factory=dict)
    tls: dict[str, list[Any]] = field(default_factory=dict)
    http: dict[str, Any] = field(default_factory=dict)


_IP_PROTO = {6: "tcp", 17: "udp"}


def arkime_sessions(path: Path) -> list[ArkimeSession]:
    out = []
    for s in json.loads(path.read_text(encoding="utf-8"))["sessions3"]:
        b = s["body"]
        src, dst = b["source"], b["destination"]
        proto = _IP_PROTO.get(int(b.get("ipProtocol", 0)), str(b.get("ipProtocol", "")))
        out.append(ArkimeSession(
            conn=Conn.of(proto, src["ip"], src.get("port", 0), dst["ip"], dst.get("port", 0)),
            ip_protocol=int(b.get("ipProtocol", 0)), protocols=tuple(b.get("protocol", ())),
            src_packets=int(src.get("packets", 0)), dst_packets=int(dst.get("packets", 0)),
            client_bytes=(b.get("client") or {}).get("bytes"),
            server_bytes=(b.get("server") or {}).get("bytes"),
            socks=dict(b.get("socks") or {}), tls=dict(b.get("tls") or {}),
            http=dict(b.get("http") or {})))
    return out


# --------------------------------------------------------------------------------------------
# nDPI
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class NdpiFlow:
    undetected: bool  # listed under "Undetected flows:" (nDPI found no L7 protocol)
    index: int
    conn: Conn  # first packet's sender -> the other end
    bidirectional: bool
    vlan: int | None
    l7: str  # e.g. "91.26/TLS.ntop"
    a_pkts: int  # sent by conn.src (nDPI's src2dst)
    a_bytes: int  # captured frame bytes (caplen) sent by conn.src
    b_pkts: int
    b_bytes: int
    goodput_ratio: tuple[int, int] | None  # 100 * payload / (frame bytes + 1), per direction
    sni: str | None = None
    ja3c: str | None = None
    ja4: str | None = None
    ja3s: str | None = None
    alpn_advertised: tuple[str, ...] | None = None
    alpn_negotiated: str | None = None
    tls_version: str | None = None
    raw: str = ""


_NDPI_FLOW = re.compile(
    r"^\t(\d+)\t(\S+) (\[[^\]]+\]|[^\s:]+):(\d+) (<->|->) (\[[^\]]+\]|[^\s:]+):(\d+) (.*)$")
_NDPI_COUNTS = re.compile(r"\[(\d+) pkts/(\d+) bytes (?:<->|->) (\d+) pkts/(\d+) bytes\]")


def _bracket(rest: str, name: str) -> str | None:
    m = re.search(r"\[" + re.escape(name) + r": ([^\]]*)\]", rest)
    return m.group(1) if m else None


def _first_word(value: str | None) -> str | None:
    """A fingerprint without nDPI's cipher verdict ("<md5> (WEAK)", "<md5> (INSECURE)")."""
    return value.split(" ", 1)[0] if value else None


def ndpi_flows(path: Path) -> list[NdpiFlow]:
    """Every flow line of an ndpiReader report, main list and "Undetected flows" alike."""
    out = []
    undetected = False
    text = path.read_bytes().decode("utf-8", errors="replace")
    for line in text.split("\n"):
        if line.startswith("Undetected flows:"):
            undetected = True
            continue
        m = _NDPI_FLOW.match(line)
        if not m:
            continue
        idx, proto, a, ap, arrow, b, bp, rest = m.groups()
        counts = _NDPI_COUNTS.search(rest)
        if counts is None:
            continue
        gp = _bracket(rest, "Goodput ratio")
        gpr = None
        if gp and re.fullmatch(r"\d+/\d+", gp):
            x, y = gp.split("/")
            gpr = (int(x), int(y))
        vlan = _bracket(rest, "VLAN")
        alpns = _bracket(rest, "(Advertised) ALPNs")
        version = re.search(r"\]\[((?:TLS|DTLS)v1(?:\.\d)?(?: \([^)]*\))?|SSLv[23])\]", rest)
        out.append(NdpiFlow(
            undetected=undetected, index=int(idx),
            conn=Conn.of(proto, a, ap, b, bp),
            bidirectional=arrow == "<->", vlan=int(vlan) if vlan and vlan.isdigit() else None,
            l7=_bracket(rest, "proto") or "",
            a_pkts=int(counts.group(1)), a_bytes=int(counts.group(2)),
            b_pkts=int(counts.group(3)), b_bytes=int(counts.group(4)),
            goodput_ratio=gpr, sni=_bracket(rest, "Hostname/SNI"),
            ja3c=_first_word(_bracket(rest, "JA3C")), ja4=_bracket(rest, "JA4"),
            ja3s=_first_word(_bracket(rest, "JA3S")),
            alpn_advertised=tuple(alpns.split(";")) if alpns else None,
            alpn_negotiated=_bracket(rest, "(Negotiated) ALPN"),
            tls_version=version.group(1) if version else None, raw=line.strip()))
    return out


def ndpi_results(ndpi_root: Path, cfg: str = "default") -> Iterator[tuple[Path, Path]]:
    """(capture, report) pairs of one nDPI test configuration."""
    base = ndpi_root / "tests/cfgs" / cfg
    for cap in sorted((base / "pcap").iterdir()):
        out = base / "result" / f"{cap.name}.out"
        if is_capture(cap) and out.is_file():
            yield cap, out
