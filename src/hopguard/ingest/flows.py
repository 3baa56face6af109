"""The flow table: packets in, connection rows and application rows out.

Theory of operation: ``FlowTable.packet`` is called once per decoded packet, in capture order.
Each flow is stored under both of its oriented 5-tuples, so one dictionary lookup finds the flow
and the packet's direction (``ORIG`` is the side that sent the first packet, or the SYN sender
when the first packet seen is a SYN-ACK). Per packet the table only adds counters, notes new TCP
history letters and extends the activity sketch; that is the whole cost for a flow whose start
has been parsed.

The first ``reassembly_bytes`` of each TCP direction are reassembled (retransmissions dropped,
overlaps trimmed to the first copy, out-of-order segments held in a bounded map) and fed in
order to a sans-IO session chosen from the first bytes (TLS, HTTP, SOCKS, SSH, DNS over TCP).
A proxy handshake that succeeds hands the tunnelled bytes to a fresh session, so the TLS inside
a SOCKS or CONNECT tunnel is recorded on the same uid. UDP flows on DNS ports go through the DNS
parser, datagram by datagram; UDP flows that open with a QUIC Initial go through the QUIC
parser until it yields the ClientHello.

Flows end on the idle timeout of their protocol (Zeek's defaults: TCP 5 min, UDP and ICMP
1 min), on an optional active timeout, on a new SYN after the connection closed (port reuse),
and at the end of the input. A sweep every ``SWEEP_EVERY`` seconds of capture time writes idle
flows out, so memory holds only live flows and their pending rows.

The activity sketch (``src_bursts``/``dst_bursts``) lists, per direction, the times of packets
that follow at least ``burst_gap`` seconds of silence in that direction (the first packet
counts), capped at ``max_bursts``: the relay detector correlates these between connections.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from hopguard.errors import ProtocolError
from hopguard.ingest.packet import ICMP, ICMP6, TCP, UDP, Decoded, Outer
from hopguard.ingest.values import zeek_tcp_state
from hopguard.parsers import dns as dnsp
from hopguard.parsers import dtls as dtlsp
from hopguard.parsers import http as httpp
from hopguard.parsers import quic as quicp
from hopguard.parsers import socks as socksp
from hopguard.parsers import ssh as sshp
from hopguard.parsers import tls as tlsp
from hopguard.parsers.base import ORIG, RESP, Malformed, TunnelOpened
from hopguard.parsers.ciphers import cipher_name

logger = logging.getLogger(__name__)

FIN: Final = 0x01
SYN: Final = 0x02
RST: Final = 0x04
ACK: Final = 0x10
SEQ_MASK: Final = 0xFFFFFFFF
SWEEP_EVERY: Final = 10_000_000  # µs of capture time between idle sweeps
CLOSE_DELAY: Final = 5_000_000  # µs a closed TCP flow waits for stragglers (Zeek's default)
DNS_PORTS: Final = frozenset({53, 5353, 5355})
MAX_PENDING_SEGMENTS: Final = 64
MAX_QUIC_DATAGRAMS: Final = 16
FINGERPRINT_CACHE: Final = 4096
PROBE_BYTES: Final = 8192  # how far into an unparsed stream a late TLS start is looked for
PROBE: Final = "probe"  # Flow.session while watching an unparsed stream for a late TLS start
PROTO_NAMES: Final = {TCP: "tcp", UDP: "udp", ICMP: "icmp", ICMP6: "icmp", 2: "igmp", 47: "gre",
                      50: "esp", 51: "ah", 89: "ospf", 103: "pim", 112: "vrrp", 132: "sctp"}

# Zeek history letters: bit -> (orig letter; the responder's is the lower case).
_S, _H, _A, _D, _F, _R = 1, 2, 4, 8, 16, 32
_LETTERS: Final = ((_S, "S"), (_H, "H"), (_A, "A"), (_D, "D"), (_F, "F"), (_R, "R"))

FLOW_LAYOUT: Final = (
    "ts", "record", "uid", "src_ip", "src_port", "dst_ip", "dst_port", "proto", "service",
    "duration", "src_bytes", "dst_bytes", "src_pkts", "dst_pkts", "src_ip_bytes",
    "dst_ip_bytes", "src_frame_bytes", "dst_frame_bytes", "state", "history", "community_id",
    "tunnel", "src_bursts", "dst_bursts",
)

TLS_VERSIONS: Final = {0x0300: "SSLv3", 0x0301: "TLSv10", 0x0302: "TLSv11", 0x0303: "TLSv12",
                       0x0304: "TLSv13", 0xFEFF: "DTLSv10", 0xFEFD: "DTLSv12",
                       0xFEFC: "DTLSv13", 0x0100: "DTLSv10"}

def tls_version_name(v: int) -> str | None:
    """Zeek's names: TLSv12, TLSv13, and TLSv13-draftNN for the drafts (0x7fNN)."""
    if v >> 8 == 0x7F:
        return f"TLSv13-draft{v & 0xFF}"
    return TLS_VERSIONS.get(v)


UDP_TUNNEL_TYPES: Final = {"VXLAN": "Tunnel::VXLAN", "Geneve": "Tunnel::GENEVE",
                           "GTPv1": "Tunnel::GTPv1", "Teredo": "Tunnel::TEREDO",
                           "AYIYA": "Tunnel::AYIYA"}

Emit = Callable[[str, dict[str, Any]], None]
EmitFlow = Callable[[tuple[Any, ...]], None]


@dataclass(frozen=True, slots=True, kw_only=True)
class FlowSettings:
    reassembly_bytes: int = 32 * 1024
    workers: int = 0  # capture readers in parallel; 0: one per CPU for large captures
    http_bytes: int = 1024 * 1024  # HTTP connections: later requests matter (keep-alive proxies)
    tcp_timeout: float = 300.0
    udp_timeout: float = 60.0
    icmp_timeout: float = 60.0
    active_timeout: float = 0.0  # 0: off
    burst_gap: float = 0.5
    max_bursts: int = 256


def ip_text(raw: bytes) -> str:
    return socket.inet_ntop(socket.AF_INET if len(raw) == 4 else socket.AF_INET6, raw)


def community_id(proto: int, a: bytes, ap: int, b: bytes, bp: int, seed: int = 0) -> str:
    """Community ID v1 (https://github.com/corelight/community-id-spec)."""
    if (a, ap) > (b, bp):
        a, ap, b, bp = b, bp, a, ap
    data = seed.to_bytes(2, "big") + a + b + bytes((proto, 0)) + ap.to_bytes(2, "big") + \
        bp.to_bytes(2, "big")
    return "1:" + base64.b64encode(hashlib.sha1(data).digest()).decode()


class StreamState:
    """One TCP direction's reassembly: relative offsets from the first byte after the SYN."""

    __slots__ = ("base", "delivered", "limit", "pending")

    def __init__(self, limit: int) -> None:
        self.base: int | None = None  # sequence number of stream offset 0
        self.delivered = 0  # bytes handed on, i.e. the next expected offset
        self.limit = limit
        self.pending: dict[int, bytes] = {}

    def rebase(self, base: int) -> None:
        """A new ISN before any payload: start the stream again from it."""
        if not self.delivered:
            self.base = base
            self.pending.clear()

    def segment(self, seq: int, data: memoryview) -> bytes:
        """Take one segment; return the bytes that became contiguous (possibly b"")."""
        if self.base is None:
            self.base = seq
        rel = (seq - self.base) & SEQ_MASK
        if rel >= 0x80000000:  # before the start: a retransmission of the handshake era
            back = 0x100000000 - rel
            if back >= len(data):
                return b""
            data = data[back:]
            rel = 0
        end = rel + len(data)
        nxt = self.delivered
        if end <= nxt or rel >= self.limit:
            return b""  # retransmission, or beyond what we reassemble
        if rel > nxt:
            if len(self.pending) < MAX_PENDING_SEGMENTS and rel not in self.pending:
                self.pending[rel] = bytes(data[:self.limit - rel])
            return b""
        out = [bytes(data[nxt - rel:self.limit - rel])]
        nxt = min(end, self.limit)
        while self.pending:
            later = [k for k in self.pending if k <= nxt]
            if not later:
                break
            for k in sorted(later):
                chunk = self.pending.pop(k)
                if k + len(chunk) > nxt:
                    out.append(chunk[nxt - k:])
                    nxt = k + len(chunk)
        self.delivered = nxt
        return b"".join(out)


class Flow:
    __slots__ = (
        "active",
        "bursts",
        "bytes",
        "dns_pending",
        "first",
        "flags",
        "frames",
        "head",
        "history",
        "http_pending",
        "ipbytes",
        "isn",
        "key",
        "last",
        "lastdir",
        "offset",
        "parsing",
        "pkts",
        "proto",
        "proxy_pending",
        "quic",
        "seq0",
        "serial",
        "services",
        "session",
        "ssh",
        "streams",
        "syn_ts",
        "timeout",
        "tls",
        "tunnel",
        "tunnel_kind",
        "uid",
    )

    def __init__(self, uid: str, proto: int, key: tuple[bytes, int, bytes, int], ts: int,
                 offset: int, tunnel: str | None) -> None:
        self.uid = uid
        self.proto = proto
        self.key = key  # (orig ip, orig port, resp ip, resp port)
        self.first = ts
        self.last = ts
        self.offset = offset
        self.tunnel = tunnel
        self.bytes = [0, 0]
        self.pkts = [0, 0]
        self.ipbytes = [0, 0]
        self.frames = [0, 0]  # captured bytes of whole frames (link and tunnel headers too)
        self.seq0: list[int | None] = [None, None]  # TCP: sequence number of payload byte 0
        self.syn_ts = [0, 0]  # TCP: when each side last sent a SYN
        self.flags = [0, 0]  # history bits seen per direction
        self.history: list[str] = []
        self.lastdir = [-(1 << 62), -(1 << 62)]
        self.bursts: list[list[int]] = [[], []]
        self.isn: int | None = None
        self.parsing = True
        self.session: Any = None
        self.streams: list[StreamState] | None = None
        self.head: list[bytes] = [b"", b""]  # bytes held until a parser is chosen
        self.services: list[str] = []
        self.tls: dict[str, Any] | None = None
        self.http_pending: list[dict[str, Any]] = []
        self.proxy_pending: dict[str, Any] | None = None
        self.dns_pending: dict[int, dict[str, Any]] = {}
        self.ssh: dict[str, Any] | None = None
        self.quic: Any = None
        self.active = True
        self.timeout = 0
        self.serial = 0
        self.tunnel_kind: str | None = None  # a carrying UDP flow's Zeek tunnel type


class FlowTable:
    """See the module docstring."""

    def __init__(self, settings: FlowSettings, *, emit: Emit, emit_flow: EmitFlow,
                 uid_prefix: str, anomaly: Callable[[str], None] | None = None) -> None:
        self.s = settings
        self.emit = emit
        self.emit_flow = emit_flow
        self.anomaly = anomaly or (lambda what: None)
        self.flows: dict[tuple[int, bytes, int, bytes, int], tuple[Flow, int]] = {}
        self.live: dict[int, Flow] = {}  # the same flows once each, in opening order
        self.count = 0
        self.uid_prefix = uid_prefix
        self.next_sweep = 0
        self.timeouts = {TCP: int(settings.tcp_timeout * 1e6), UDP: int(settings.udp_timeout * 1e6),
                         ICMP: int(settings.icmp_timeout * 1e6),
                         ICMP6: int(settings.icmp_timeout * 1e6)}
        self.active_us = int(settings.active_timeout * 1e6)
        self.gap = int(settings.burst_gap * 1e6)
        self.max_bursts = settings.max_bursts
        self.failed_parsers: set[str] = set()
        self._fp_cache: dict[tuple[Any, ...], tuple[str, str]] = {}

    # -- per packet ---------------------------------------------------------------------

    def packet(self, ts: int, offset: int, d: Decoded, caplen: int) -> None:
        proto, src, dst, sport, dport, tflags, seq, payload, iplen, tunnel, outer = d
        entry = self.flows.get((proto, src, sport, dst, dport))
        if entry is not None:
            fl, dr = entry
            if ts - fl.last > fl.timeout or (
                    self.active_us and ts - fl.first > self.active_us):
                self._close(fl)
                entry = None
            elif proto == TCP and tflags & (SYN | ACK) == SYN and dr == ORIG and \
                    fl.flags[ORIG] & _S and fl.isn != seq and (
                        (fl.flags[ORIG] | fl.flags[RESP]) & _R
                        or (fl.flags[ORIG] & _F and fl.flags[RESP] & _F)):
                self._close(fl)  # a new connection on the same ports
                entry = None
        if entry is None:
            fl, dr = self._open(ts, offset, proto, src, dst, sport, dport, tflags, tunnel)
        plen = len(payload)
        fl.last = ts
        fl.pkts[dr] += 1
        fl.ipbytes[dr] += iplen
        fl.frames[dr] += caplen
        lastdir = fl.lastdir
        if ts - lastdir[dr] >= self.gap:
            b = fl.bursts[dr]
            if len(b) < self.max_bursts:
                b.append(ts)
        lastdir[dr] = ts
        if proto == TCP:
            # History letters as Zeek defines them: A is a *pure* ACK (no payload, no other
            # flag), D any payload, F and R the flags.
            if tflags & SYN:
                bits = _H if tflags & ACK else _S
                # A SYN fixes its side's sequence base. Another one with a new ISN moves it
                # only while the peer has sent nothing since the previous one (a server
                # retrying its SYN-ACK); once the peer answered, it is spurious.
                if fl.seq0[dr] is None or lastdir[1 - dr] < fl.syn_ts[dr]:
                    fl.seq0[dr] = (seq + 1) & SEQ_MASK
                    if fl.streams is not None:
                        fl.streams[dr].rebase((seq + 1) & SEQ_MASK)
                fl.syn_ts[dr] = ts
                if bits == _S and dr == ORIG and fl.isn is None:
                    fl.isn = seq
            elif plen:
                bits = _D
                # Payload bytes by sequence range, as Zeek counts them: retransmissions and
                # overlaps count once, a capture gap counts as sent.
                base = fl.seq0[dr]
                if base is None:
                    base = fl.seq0[dr] = seq
                rel = (seq - base) & SEQ_MASK
                if rel < 0x80000000 and rel + plen > fl.bytes[dr]:
                    fl.bytes[dr] = rel + plen
            else:
                bits = _A if tflags & (ACK | FIN | RST) == ACK else 0
            if tflags & FIN:
                bits |= _F
            if tflags & RST:
                bits |= _R
            seen = fl.flags[dr]
            if bits & ~seen:
                self._history(fl, dr, bits & ~seen)
                fl.flags[dr] = seen | bits
                both = fl.flags[ORIG] | fl.flags[RESP]
                if both & _R or (fl.flags[ORIG] & fl.flags[RESP] & _F):
                    # Closed: stragglers within Zeek's tcp_close_delay still count, then the
                    # flow is written (rather than held for the idle timeout).
                    fl.timeout = min(fl.timeout, CLOSE_DELAY)
            if fl.parsing:
                self._tcp(fl, dr, tflags, seq, payload, ts)
        else:
            fl.bytes[dr] += plen
            if proto == UDP and fl.parsing and plen:
                self._udp(fl, dr, payload, ts)
        if outer is not None:
            self._outer(ts, offset, outer, caplen, tunnel)
        if ts >= self.next_sweep:
            self.sweep(ts)

    def _outer(self, ts: int, offset: int, outer: Outer, caplen: int,
               tunnel: str | None) -> None:
        """Count the packet on the UDP flow that carries a tunnel (Zeek logs it too)."""
        src, dst, sport, dport, iplen, plen = outer
        entry = self.flows.get((UDP, src, sport, dst, dport))
        if entry is None or ts - entry[0].last > entry[0].timeout:
            if entry is not None:
                self._close(entry[0])
            fl, dr = self._open(ts, offset, UDP, src, dst, sport, dport, 0, None)
            fl.parsing = False
            fl.services.append((tunnel or "tunnel").lower())
            # As Zeek's tunnel.log: DISCOVER now, CLOSE when the carrying flow ends.
            fl.tunnel_kind = UDP_TUNNEL_TYPES.get(tunnel or "", "Tunnel::UNKNOWN")
            self.emit("tunnel", {**self._conn(fl, ts), "tunnel_type": fl.tunnel_kind,
                                 "action": "Tunnel::DISCOVER"})
        else:
            fl, dr = entry
        fl.last = ts
        fl.pkts[dr] += 1
        fl.bytes[dr] += plen
        fl.ipbytes[dr] += iplen
        fl.frames[dr] += caplen

    def _open(self, ts: int, offset: int, proto: int, src: bytes, dst: bytes, sport: int,
              dport: int, tflags: int, tunnel: str | None) -> tuple[Flow, int]:
        self.count += 1
        uid = f"{self.uid_prefix}{self.count:x}"
        flipped = False
        if proto == TCP and tflags & (SYN | ACK) == (SYN | ACK):
            key = (dst, dport, src, sport)  # we missed the SYN: the SYN-ACK's receiver opened
            dr = RESP
        elif (proto == UDP or (proto == TCP and not tflags & SYN)) and \
                _server_port(sport) and not _server_port(dport):
            # Joined mid-conversation at a server's packet: the other side is the client
            # (Zeek's likely_server_ports heuristic; its history marks this with ^).
            key = (dst, dport, src, sport)
            dr = RESP
            flipped = True
        else:
            key = (src, sport, dst, dport)
            dr = ORIG
        fl = Flow(uid, proto, key, ts, offset, tunnel)
        fl.serial = self.count
        fl.timeout = self.timeouts.get(proto, 60_000_000)
        if flipped and proto == TCP:
            fl.history.append("^")
        o, op, r, rp = key
        self.flows[(proto, o, op, r, rp)] = (fl, ORIG)
        self.flows[(proto, r, rp, o, op)] = (fl, RESP)
        self.live[self.count] = fl
        if proto == UDP and (op in DNS_PORTS or rp in DNS_PORTS):
            fl.session = "dns"
            # QUIC is recognised on the first datagram (see _udp); anything else is not parsed.
        return fl, dr

    @staticmethod
    def _history(fl: Flow, dr: int, new: int) -> None:
        """Zeek's history: each letter once per side, in the order first seen."""
        for bit, letter in _LETTERS:
            if new & bit:
                fl.history.append(letter if dr == ORIG else letter.lower())

    # -- TCP reassembly and parsers -------------------------------------------------------

    def _tcp(self, fl: Flow, dr: int, tflags: int, seq: int, payload: memoryview,
             ts: int) -> None:
        streams = fl.streams
        if streams is None:
            streams = fl.streams = [StreamState(self.s.reassembly_bytes),
                                    StreamState(self.s.reassembly_bytes)]
        st = streams[dr]
        if tflags & SYN:
            if st.base is None:
                st.base = (seq + 1) & SEQ_MASK
            return
        if not payload:
            return
        data = st.segment(seq, payload)
        if data:
            self._stream(fl, dr, data, ts)
        if streams[0].delivered >= streams[0].limit and \
                streams[1].delivered >= streams[1].limit:
            fl.parsing = False

    def _stream(self, fl: Flow, dr: int, data: bytes, ts: int) -> None:
        session = fl.session
        if session is PROBE:
            if dr == ORIG and len(data) > 5 and data[0] == 0x16 and data[5] == 1 and \
                    tlsp.looks_like_tls(data):
                session = fl.session = self._service(fl, "ssl", tlsp.TlsSession())
                self._feed(fl, session, dr, data, ts)
            return
        if session is None:
            fl.head[dr] += data
            session = self._choose(fl)
            if session is None:
                return
            fl.session = session
            held, fl.head = fl.head, [b"", b""]
            for direction in (ORIG, RESP):
                if held[direction] and fl.session is session and session is not PROBE:
                    self._feed(fl, session, direction, held[direction], ts)
            return
        self._feed(fl, session, dr, data, ts)

    def _choose(self, fl: Flow) -> Any:
        """A session for the connection's protocol, or None to wait for more bytes."""
        o, r = fl.head
        if o:
            if tlsp.looks_like_tls(o):
                return self._service(fl, "ssl", tlsp.TlsSession())
            if o.startswith(b"SSH-") or r.startswith(b"SSH-"):
                return self._service(fl, "ssh", sshp.SshSession())
            if httpp.looks_like_http_request(o):
                self._widen(fl, self.s.http_bytes)
                return self._service(fl, "http", httpp.HttpSession())
            if socksp.looks_like_socks(o):
                return self._service(fl, "socks", socksp.SocksSession())
            if fl.key[3] in DNS_PORTS or fl.key[1] in DNS_PORTS:
                return self._service(fl, "dns", dnsp.DnsTcpSession())
            if len(o.lstrip(b"\r\n")) < 8:
                return None  # too few bytes to tell yet
            return self._probe(fl)
        if r.startswith(b"SSH-"):
            return self._service(fl, "ssh", sshp.SshSession())
        if len(r) > 5 and r[5] == 2 and tlsp.looks_like_tls(r):
            # The capture missed the ClientHello: the ServerHello still gives JA3S and the
            # certificate.
            return self._service(fl, "ssl", tlsp.TlsSession())
        if r.startswith(b"HTTP/") and len(r) <= 4096:
            return None  # an answer before its request (CVE-2018-6794): wait for the request
        if len(r) >= 4 and not b"SSH-".startswith(r[:4]):
            return self._probe(fl)  # a server that talks first (SMTP, FTP, IMAP, POP3 ...)
        return None

    def _probe(self, fl: Flow) -> Any:
        """A protocol we do not parse: watch for TLS starting later in it (STARTTLS, the SSL
        requests of MySQL and PostgreSQL, RDP's X.224 negotiation), which begins a client
        segment with a ClientHello record."""
        fl.head = [b"", b""]
        if fl.streams is not None:  # upgrades happen in the first exchanges: look no further
            for st in fl.streams:
                st.limit = min(st.limit, max(st.delivered, PROBE_BYTES))
        return PROBE

    def _widen(self, fl: Flow, limit: int) -> None:
        if fl.streams is not None:
            for st in fl.streams:
                st.limit = max(st.limit, limit)

    @staticmethod
    def _service(fl: Flow, name: str, session: Any) -> Any:
        if name not in fl.services:
            fl.services.append(name)
        return session

    def _feed(self, fl: Flow, session: Any, dr: int, data: bytes, ts: int) -> None:
        try:
            for ev in session.feed(dr, data):
                self._event(fl, ev, ts)
                if fl.session is not session:
                    return  # a tunnel opened: the rest went to the inner session
        except Exception:  # a parser bug must not cost the capture: isolate it
            self._parser_failed(fl, type(session).__name__)
            return
        if session.done and fl.session is session:
            fl.parsing = False

    def _parser_failed(self, fl: Flow, parser: str) -> None:
        """Stop parsing the flow, count the failure, log it once per parser."""
        fl.parsing = False
        self.anomaly(f"internal parser error ({parser})")
        if parser not in self.failed_parsers:
            self.failed_parsers.add(parser)
            logger.exception("%s failed on flow %s; its rows may be incomplete", parser, fl.uid)

    # -- UDP ------------------------------------------------------------------------------

    def _udp(self, fl: Flow, dr: int, payload: memoryview, ts: int) -> None:
        if fl.session == "dns":
            try:
                msg = dnsp.parse_dns(bytes(payload))
            except ProtocolError:
                self.anomaly("malformed DNS message")
                return
            except Exception:
                self._parser_failed(fl, "parse_dns")
                return
            self._dns(fl, msg, ts)
            if "dns" not in fl.services:
                fl.services.append("dns")
            return
        if fl.quic is None and dr == ORIG and fl.pkts[ORIG] <= 8 and \
                dtlsp.looks_like_dtls_client_hello(bytes(payload[:26])):
            # DTLS (WebRTC, VPN clients), possibly after STUN on the same ports.
            fl.quic = dtlsp.DtlsSession()
            fl.services.append("dtls")
        if fl.quic is None:
            # A client opens QUIC with a padded long-header datagram: an Initial, or 0-RTT
            # ahead of it, or an Initial of a version the server will refuse (the session
            # follows version negotiation). Give the first three client datagrams a chance.
            if dr != ORIG:
                return
            if not ((len(payload) >= quicp.MIN_INITIAL_DATAGRAM and payload[0] & 0xC0 == 0xC0)
                    or quicp.looks_like_quic_initial(bytes(payload))):
                if fl.pkts[ORIG] >= 8:
                    fl.parsing = False
                return
            fl.quic = quicp.QuicSession()
        try:
            for ev in fl.quic.feed(dr, bytes(payload)):
                hello = isinstance(ev, tlsp.ClientHello | tlsp.ServerHello)
                if hello and "quic" not in fl.services:
                    fl.services.append("quic")
                self._event(fl, ev, ts)
        except Exception:
            self._parser_failed(fl, "QuicSession")
            return
        if fl.quic.done or fl.pkts[ORIG] + fl.pkts[RESP] >= MAX_QUIC_DATAGRAMS + 8:
            fl.parsing = False

    # -- events to rows -------------------------------------------------------------------

    def _conn(self, fl: Flow, ts: int) -> dict[str, Any]:
        o, op, r, rp = fl.key
        return {"ts": ts, "record": fl.offset, "uid": fl.uid, "src_ip": ip_text(o),
                "src_port": op, "dst_ip": ip_text(r), "dst_port": rp}

    def _event(self, fl: Flow, ev: object, ts: int) -> None:
        if isinstance(ev, tlsp.ClientHello):
            self._flush_tls(fl)
            row = fl.tls = self._conn(fl, ts)
            row["sni"] = ev.sni
            row["alpn"] = list(ev.alpn) or None
            transport = "t" if fl.proto != UDP else "d" if "dtls" in fl.services else "q"
            row["ja3"], row["ja4"] = self._fingerprints(ev, transport)
            row["version"] = tls_version_name(ev.tls_version())
            row["established"] = False
        elif isinstance(ev, tlsp.ServerHello):
            row = fl.tls if fl.tls is not None else self._conn(fl, ts)
            fl.tls = row
            row["ja3s"] = ev.ja3s()
            row["version"] = tls_version_name(ev.tls_version())
            row["cipher"] = cipher_name(ev.cipher)
            if ev.alpn:
                row["alpn"] = [ev.alpn]
            row["established"] = True
        elif isinstance(ev, tlsp.Certificates):
            row = fl.tls if fl.tls is not None else self._conn(fl, ts)
            fl.tls = row
            chain = ev.chain
            row["cert_fuids"] = [c.sha256 for c in chain]
            if chain:
                leaf = chain[0]
                row["cert_subject"] = leaf.subject
                row["cert_issuer"] = leaf.issuer
                row["cert_sha256"] = leaf.sha256
                row["cert_not_before"] = leaf.not_before
                row["cert_not_after"] = leaf.not_after
            for i, c in enumerate(chain):
                self.emit("x509", {
                    "ts": ts, "record": fl.offset, "fingerprint": c.sha256,
                    "version": c.version, "serial": c.serial, "subject": c.subject,
                    "issuer": c.issuer, "not_before": c.not_before, "not_after": c.not_after,
                    "key_alg": c.key_alg, "key_length": c.key_length, "sig_alg": c.sig_alg,
                    "san_dns": list(c.san_dns) or None, "san_ip": list(c.san_ip) or None,
                    "is_ca": c.is_ca, "host_cert": i == 0, "client_cert": False})
        elif isinstance(ev, httpp.HttpRequest):
            self._http_request(fl, ev, ts)
        elif isinstance(ev, httpp.HttpResponse):
            self._http_response(fl, ev)
        elif isinstance(ev, httpp.HttpBodyEnded):
            self._http_body(fl, ev)
        elif isinstance(ev, socksp.SocksAuthResult):
            if not ev.succeeded:  # the request never comes: the refusal is the row
                self._flush_proxy(fl)
                self.emit("proxy", {**self._conn(fl, ts), "protocol": "socks5",
                                    "auth_method": "username/password", "user": ev.user,
                                    "outcome": "authentication failed"})
        elif isinstance(ev, socksp.SocksRequest):
            self._flush_proxy(fl)
            row = fl.proxy_pending = self._conn(fl, ts)
            row.update(protocol=ev.protocol, target_host=ev.target_host,
                       target_ip=ev.target_ip, target_port=ev.target_port,
                       auth_method=ev.auth_method, user=ev.user)
        elif isinstance(ev, socksp.SocksReply):
            pending = fl.proxy_pending
            if pending is not None:
                pending.update(outcome=ev.outcome, bound_host=ev.bound_host or ev.bound_ip,
                               bound_port=ev.bound_port)
                self._flush_proxy(fl)
        elif isinstance(ev, sshp.SshIdent):
            row = fl.ssh if fl.ssh is not None else self._conn(fl, ts)
            fl.ssh = row
            row["client" if ev.direction == ORIG else "server"] = ev.text
            row["version"] = 2 if ev.proto_version.startswith("2") or \
                ev.proto_version == "1.99" else 1
        elif isinstance(ev, dnsp.DnsMessage):
            self._dns(fl, ev, ts)
        elif isinstance(ev, TunnelOpened):
            self._tunnel(fl, ev, ts)
        elif isinstance(ev, Malformed):
            self.anomaly(f"malformed {fl.services[-1] if fl.services else 'stream'}")

    def _fingerprints(self, ev: Any, transport: str) -> tuple[str, str]:
        """JA3 and JA4 of a ClientHello, memoised: a network's clients send few distinct
        hellos, and everything both hashes depend on is in the key (not SNI's value)."""
        key = (transport, ev.legacy_version, ev.supported_versions, ev.ciphers, ev.extensions,
               ev.groups, ev.point_formats, ev.sig_algs, ev.alpn)
        got = self._fp_cache.get(key)
        if got is None:
            if len(self._fp_cache) >= FINGERPRINT_CACHE:
                self._fp_cache.clear()
            got = self._fp_cache[key] = (ev.ja3(), ev.ja4(transport))
        return got

    def _tunnel(self, fl: Flow, ev: TunnelOpened, ts: int) -> None:
        kind = "Tunnel::SOCKS" if isinstance(fl.session, socksp.SocksSession) else "Tunnel::HTTP"
        self.emit("tunnel", {**self._conn(fl, ts), "tunnel_type": kind,
                             "action": "Tunnel::DISCOVER"})
        fl.session = None
        fl.head = [b"", b""]
        if ev.orig_rest:
            self._stream(fl, ORIG, ev.orig_rest, ts)
        if ev.resp_rest and fl.parsing:
            self._stream(fl, RESP, ev.resp_rest, ts)

    def _http_request(self, fl: Flow, ev: Any, ts: int) -> None:
        row = self._conn(fl, ts)
        row.update(trans_depth=len(fl.http_pending) + 1, method=ev.method, host=ev.host, uri=ev.uri,
                   version=ev.version, user_agent=ev.user_agent, referrer=ev.referrer,
                   is_proxy_request=ev.is_proxy_request, via=ev.via, forwarded=ev.forwarded,
                   x_forwarded_for=ev.x_forwarded_for, proxied=list(ev.proxied) or None,
                   request_body_len=ev.content_length)
        fl.http_pending.append(row)
        if ev.is_proxy_request:
            self._flush_proxy(fl)
            prow = fl.proxy_pending = self._conn(fl, ts)
            host, port = ev.target_host, ev.target_port
            prow.update(protocol="http-connect" if ev.method == "CONNECT" else "http-forward",
                        target_port=port, user=ev.proxy_authorization_user,
                        auth_method="basic" if ev.proxy_authorization_user else None)
            if host and _is_ip(host):
                prow["target_ip"] = host.strip("[]")
            else:
                prow["target_host"] = host

    def _http_body(self, fl: Flow, ev: Any) -> None:
        """The body length of the latest request (ORIG) or answered request (RESP)."""
        key, done = ("request_body_len", "method") if ev.direction == ORIG else \
            ("response_body_len", "status")
        for row in reversed(fl.http_pending):
            if row.get(done) is not None:
                row[key] = ev.body_len
                return

    def _http_response(self, fl: Flow, ev: Any) -> None:
        if 100 <= ev.status < 200 and ev.status != 101:
            return  # an interim answer (100 Continue): the final one is still to come
        for row in fl.http_pending:
            if row.get("status") is None:
                row["status"] = ev.status
                row["status_msg"] = ev.reason
                row["content_type"] = ev.content_type
                row["response_body_len"] = ev.body_len
                if fl.proxy_pending is not None and row["is_proxy_request"]:
                    fl.proxy_pending["outcome"] = f"{ev.status} {ev.reason}".strip()
                    self._flush_proxy(fl)
                break

    def _dns(self, fl: Flow, msg: Any, ts: int) -> None:
        if not msg.is_response:
            row = self._conn(fl, ts)
            self._question(fl, row, msg)
            old = fl.dns_pending.pop(msg.id, None)
            if old is not None:
                self.emit("dns", old)
            fl.dns_pending[msg.id] = row
            return
        found = fl.dns_pending.pop(msg.id, None)
        if found is None:  # a response whose query we did not see
            row = self._conn(fl, ts)
            self._question(fl, row, msg)
        else:
            row = found
            row["rtt"] = (ts - row["ts"]) / 1e6
        row["rcode"] = msg.rcode_name
        answers = [a for a in msg.answers if a.data]
        if answers:
            row["answers"] = [a.data for a in answers]
            row["ttls"] = [float(a.ttl) for a in answers]
        self.emit("dns", row)

    @staticmethod
    def _question(fl: Flow, row: dict[str, Any], msg: Any) -> None:
        q = msg.questions[0] if msg.questions else None
        row.update(proto=PROTO_NAMES.get(fl.proto), trans_id=msg.id,
                   query=q.name if q else None, qtype=q.qtype_name if q else None,
                   qclass=q.qclass_name if q else None)

    # -- closing --------------------------------------------------------------------------

    def _flush_tls(self, fl: Flow) -> None:
        if fl.tls is not None:
            self.emit("tls", fl.tls)
            fl.tls = None

    def _flush_proxy(self, fl: Flow) -> None:
        if fl.proxy_pending is not None:
            self.emit("proxy", fl.proxy_pending)
            fl.proxy_pending = None

    def _close(self, fl: Flow) -> None:
        if not fl.active:
            return
        fl.active = False
        o, op, r, rp = fl.key
        p = fl.proto
        self.flows.pop((p, o, op, r, rp), None)
        self.flows.pop((p, r, rp, o, op), None)
        self.live.pop(fl.serial, None)
        self._flush_tls(fl)
        self._flush_proxy(fl)
        for row in fl.http_pending:
            self.emit("http", row)
        for row in fl.dns_pending.values():
            self.emit("dns", row)
        if fl.ssh is not None:
            self.emit("ssh", fl.ssh)
        if fl.tunnel_kind is not None:
            self.emit("tunnel", {**self._conn(fl, fl.last), "tunnel_type": fl.tunnel_kind,
                                 "action": "Tunnel::CLOSE"})
        self.emit_flow((
            fl.first, fl.offset, fl.uid, ip_text(o), op, ip_text(r), rp,
            PROTO_NAMES.get(p, str(p)), ",".join(fl.services) or None,
            (fl.last - fl.first) / 1e6, fl.bytes[0], fl.bytes[1], fl.pkts[0], fl.pkts[1],
            fl.ipbytes[0], fl.ipbytes[1], fl.frames[0], fl.frames[1], _state(fl),
            "".join(fl.history) if p == TCP else None,
            community_id(p, o, op, r, rp), fl.tunnel, fl.bursts[0], fl.bursts[1]))

    def sweep(self, now: int) -> None:
        """Close every flow idle for longer than its timeout."""
        self.next_sweep = now + SWEEP_EVERY
        for fl in [f for f in self.live.values() if now - f.last > f.timeout]:
            self._close(fl)

    def finish(self) -> None:
        for fl in list(self.live.values()):
            self._close(fl)


def _state(fl: Flow) -> str:
    """Zeek's conn_state from the history bits of each side."""
    if fl.proto != TCP:
        if fl.proto == UDP:  # Zeek: both sides active SF, only the originator S0, else SHR
            if fl.pkts[ORIG]:
                return "SF" if fl.pkts[RESP] else "S0"
            return "SHR"
        return "OTH"
    o, r = fl.flags
    return zeek_tcp_state(syn=bool(o & _S), synack=bool(r & _H), orig_fin=bool(o & _F),
                          orig_rst=bool(o & _R), resp_fin=bool(r & _F), resp_rst=bool(r & _R),
                          resp_silent=not fl.pkts[RESP])


# Service ports above 1023 that count as a server's side of a conversation (with every port
# below 1024) when the capture joins a conversation after its start.
_HIGH_SERVICE_PORTS: Final = frozenset({
    1080, 1194, 1433, 1521, 1723, 2152, 3128, 3306, 3389, 3544, 4789, 5060, 5061, 5072, 5222,
    5353, 5355, 5432, 5900, 6081, 6379, 8000, 8008, 8080, 8443, 8888, 9001, 9030, 9050, 9150,
    27017})


def _server_port(port: int) -> bool:
    return port < 1024 or port in _HIGH_SERVICE_PORTS


def _is_ip(host: str) -> bool:
    h = host.strip("[]")
    for fam in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(fam, h)
            return True
        except OSError:
            continue
    return False
