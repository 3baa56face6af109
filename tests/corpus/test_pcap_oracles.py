"""The packet engine against the outputs of established tools, capture by capture.

Every capture of the public corpus that an oracle describes is ingested (once, into one
in-memory store shared by this module) and compared field by field, connection by connection:

* FoxIO JA4 reference (Rust snapshots and Python JSON): every client JA4, TCP and QUIC.
* tshark 4.0.17: JA3 (hash and string), JA3S, SNI and ALPN per hello; HTTP request method,
  Host and URI (CONNECT included); the first SOCKS request/reply of each SOCKS connection.
* Zeek baselines: socks.log (version, target, port, user, status), tunnel.log SOCKS/HTTP
  discoveries, http.log (method, Host, URI, CONNECT targets), ssl.log (SNI, version, cipher,
  ALPN), conn.log (payload bytes, packets, IP bytes, state, history).
* Arkime sessions: socks host/ip/port/user, tls ja3/ja3s/ja4, payload bytes and packets.
* nDPI (default configuration): every TCP/UDP 5-tuple's packets and captured frame bytes per
  endpoint (src_frame_bytes/dst_frame_bytes), and for TLS/QUIC/DTLS flows SNI, JA3C, JA4 and
  JA3S.

JA3/JA3S *strings* are compared where the tls table keeps them (a ja3_full/ja3s_full column);
until then only the MD5s are, and the table says so.

Each test prints an agreement table (run with ``-s`` to see it; set HOPGUARD_ORACLE_DUMP to a
file name to collect every disagreement line there) and fails on any disagreement that neither
:data:`EXCEPTIONS` (capture-specific oracle-side differences, with the reason), :data:`SCOPE`
(what the oracle decodes and the engine, by its documentation, does not) nor :data:`DEVIATIONS`
(an oracle's systematic departure from the spec, recognised by recomputing its value) explains,
and on any entry of these that no longer occurs (so the lists stay exact). Engine bugs are never
listed: they fail the test until the engine is fixed. A last test ingests every capture in the
corpus: none may raise anything but a HopguardError.
"""

from __future__ import annotations

import fnmatch
import hashlib
import ipaddress
import os
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest

from hopguard.errors import HopguardError
from hopguard.ingest.pipeline import FileResult, ingest_file
from hopguard.store import Store
from tests.conftest import PUBLIC_CORPUS
from tests.corpus import oracles as o
from tests.corpus.oracles import Conn, norm_ip

pytestmark = pytest.mark.corpus

TSHARK = "derived/wireshark-4.0.17"

# --------------------------------------------------------------------------------------------
# Listed disagreements: (oracle, capture glob, connection glob, field glob) -> the reason.
# The capture is the path relative to the corpus root, the connection as Conn.__str__ prints
# it ("tcp 10.0.0.1:50606 -> 10.0.0.2:9901"), the field as the agreement table names it.
# Two kinds, kept apart: EXCEPTIONS are oracle-side differences (the oracle misparses, counts
# or normalises differently, or decodes with information that is not in the packets); SCOPE
# lists what the oracle decodes and the engine, by its documentation (docs/formats.md, "Packet
# captures"), does not. Every entry names a specific reason in the oracle or the capture, never
# "hopguard is wrong": an engine bug is never listed. An entry that no longer matches any
# disagreement fails the test that owns it.
# --------------------------------------------------------------------------------------------
_PDU = "ndpi/tests/cfgs/default/pcap"  # nDPI's default-configuration captures

# ndpiReader's packet filter, shared by the entries below that count packets and frame bytes.
_NDPI_DROPS_LONG_IP = (
    "ndpiReader drops a packet whose IPv4 total length exceeds the bytes captured and counts "
    "neither its packet nor its frame bytes; hopguard counts every packet whose headers were "
    "captured, reading what is there (packet.py: a short snaplen only shortens the payload). "
    "Zeek would drop these too (weird truncated_IP_len): the pcap record's wire length is the "
    "captured length, so this is not a snaplen cut but a damaged or fuzzed header")

EXCEPTIONS: dict[tuple[str, str, str, str], str] = {
    # --- FoxIO JA4 -----------------------------------------------------------------------------
    ("ja4", "ja4/pcap/tls-non-ascii-alpn.pcapng", "*", "ja4 tcp"):
        "the first ALPN value is 0xBA 0xAD: the FoxIO reference tools at the corpus commit "
        "replace each non-ASCII character by '9' ('99'); the JA4 spec (technical_details/JA4.md, "
        "'ALPN Extension Value') takes the first and last hex digits of a value whose first or "
        "last byte is not alphanumeric ('bd'), which hopguard does",
    ("ja4", "ja4/pcap/tls-sni.pcapng", "*", "ja4 tcp (2nd+ ClientHello)"):
        "the capture keeps only the client's hello frames: the second ClientHello follows the "
        "client's ChangeCipherSpec, and the server's HelloRetryRequest that makes it a "
        "plaintext TLS 1.3 flight (RFC 8446 §4.1.4, §D.4) is not in the file, so hopguard "
        "takes the CCS as the start of encryption (tls-handshake.pcapng, the full capture of "
        "the same streams, agrees)",
    # --- tshark 4.0.17 ---------------------------------------------------------------------------
    ("tshark", "ja4/pcap/tls-non-ascii-alpn.pcapng", "*", "alpn"):
        "the first ALPN value is the two bytes 0xBA 0xAD; tshark 4.0 prints ALPN as UTF-8 and "
        "shows them as two U+FFFD, hopguard keeps the bytes (as latin-1 text)",
    ("tshark", "ja4/pcap/tls-sni.pcapng", "*", "ja3 (2nd+ ClientHello)"):
        "the capture keeps only the client's hello frames: the second ClientHello follows the "
        "client's ChangeCipherSpec without the server's HelloRetryRequest in the file, so "
        "hopguard takes the CCS as the start of encryption (tls-handshake.pcapng agrees)",
    ("tshark", f"{_PDU}/fuzz-2006-09-29-28586.pcap", "*", "http host"):
        "the fuzzed Host header holds a NUL byte ('%s\\x002.20.3.5'): tshark's string field "
        "ends at the NUL, hopguard keeps the whole value",
    ("tshark", f"{_PDU}/http-manipulated.pcap", "*", "http uri"):
        "the request line is 'GET' + 18 spaces + '/aaa..._very_long_uri HTTP/1.1': tshark 4.0 "
        "takes the empty text between the first two spaces as the URI, hopguard (like Zeek's "
        "HTTP analyzer) skips the run of spaces",
    ("tshark", "*/gre-erspan-vxlan.pcap", "tcp 10.16.27.12:65174 -> 10.16.27.131:80",
     "http uri"):
        "the request line is 'GET /Hello Arkime HTTP/1.0' (a space inside the target, against "
        "RFC 9112 §3): tshark 4.0 ends the URI at the first space ('/Hello', Arkime's http.uri "
        "too); hopguard takes everything between the method and the version ('/Hello Arkime', "
        "parsers/http.py _REQUEST_LINE), as Zeek's HTTP analyzer does",
    ("tshark", f"{_PDU}/tls_cipher_lens.pcap", "tcp 192.168.11.11:515[89][09] -> *", "tls row"):
        "tshark marks these ClientHellos Malformed and prints no JA3 for them (nDPI prints "
        "none either): frame 2's cipher_suites length 134 runs past the 170-byte hello, frame "
        "3's 133 bytes of suites leave no room for compression_methods; hopguard rejects such "
        "a hello as malformed and writes no tls row (the framing errors of its tls.py "
        "docstring, 'Leniency'). Ports 51590 (frame 2) and 51589 (frame 3)",
    ("tshark", f"{_PDU}/tls_cipher_lens.pcap", "tcp 192.168.11.11:51591 -> *", "tls row"):
        "frame 5's ClientHello has empty cipher_suites and compression_methods and then an "
        "extensions length of 65472 in a 170-byte hello: tshark marks it Malformed and hashes "
        "the cut-off JA3 string '769,,' (the missing fields dropped); hopguard rejects the "
        "hello as malformed and writes no tls row; nDPI prints no JA3 for it",
    ("tshark", f"{_PDU}/tls_invalid_reads.pcap", "tcp 192.168.10.101:3967 -> *", "ja3"):
        "frame 4's ClientHello ends with one stray byte after an empty compression_methods "
        "(no room for an extensions block): tshark hashes the cut-off string "
        "'769,4-5-10-9-100-98-3-6-19-18-37,' (3 fields), hopguard the five fields the JA3 "
        "definition always has, empty ones kept: '769,4-5-10-9-100-98-3-6-19-18-37,,,'",
    ("tshark", f"{_PDU}/tls_invalid_reads.pcap", "tcp 10.191.139.17:58552 -> *", "tls row"):
        "frame 12's ClientHello (inside GTP) has a corrupt extensions block: the ALPN "
        "extension (11 bytes) declares a 47241-byte list and random bytes follow it; tshark "
        "marks the frame Malformed and prints no JA3, hopguard rejects the hello as malformed",
    ("tshark", "suricata-verify/tests/tls/tls13-draft14/tls13_draft14.pcap", "*", "ja3s"):
        "the ServerHello is TLS 1.3 draft 14, which has no legacy_session_id (the cipher "
        "0xc02b follows the random): tshark 4.0 reads it with the final RFC 8446 layout, takes "
        "the cipher's first byte 0xc0 as a 192-byte session id and hashes '772,44205,' "
        "(a cipher 0xacad read from inside the key share); hopguard reads draft-14's layout "
        "and hashes '772,49195,40' (cipher 0xc02b, the draft's key_share extension 40)",
    ("tshark", f"{_PDU}/quic-33.pcapng", "*", "alpn"):
        "the negotiated ALPN h3-33 is in the server's EncryptedExtensions, in QUIC Handshake "
        "packets: tshark decrypts them with the TLS secrets stored in the pcapng's Decryption "
        "Secrets Block; the packets alone give only the client's offered list, which hopguard "
        "reports",
    # --- Zeek ----------------------------------------------------------------------------------
    # --- Arkime --------------------------------------------------------------------------------
    ("arkime", "arkime/tests/pcap/single-packets.pcap", "*", "flow p*"):
        "every session of this capture is one SYN-less packet: Arkime's TCP reassembly "
        "(capture/parsers/tcp.c) adds to client/server.bytes only segments it delivers after a "
        "SYN set the sequence base, so these sessions report 0 data bytes (their HTTP is still "
        "parsed, at session end); and for the one packet sent from port 80 Arkime swaps the "
        "session so that source is the client but keeps the counters of the first packet's "
        "sender under source",
    ("arkime", "arkime/tests/pcap/CVE-2018-6794.pcap", "*", "flow packets (source)"):
        "on both connections both sides have sent FIN early, and the client's final RST (frame "
        "30, 9.6 s after its last retransmission; frame 33, 9.6 s too) ends a long silence: "
        "Arkime keeps it in the session, "
        "hopguard, like Zeek (tcp_close_delay, 5 s), writes a closed connection after 5 s of "
        "silence and starts a new flow for the straggler (docs/formats.md)",
    # --- nDPI ----------------------------------------------------------------------------------
    ("ndpi", f"{_PDU}/telnet.pcap", "tcp 192.168.0.2:1550 -> 192.168.0.1:23", "* a->b, b->a"):
        "5 client frames (18, 32, 52, 70, 78: 66 bytes each, IPv4 total lengths 137, 58, 78, "
        "57, 56) are shorter than their IPv4 total length; " + _NDPI_DROPS_LONG_IP
        + " (48 - 5 = 43 packets, 3465 - 330 = 3135 frame bytes)",
    ("ndpi", f"{_PDU}/ndpi_match_string_subprotocol__error.pcapng",
     "tcp 10.3.9.19:40632 -> 10.68.137.118:8091", "* a->b, b->a"):
        "client frame 10 (576 bytes) has IPv4 total length 2610; " + _NDPI_DROPS_LONG_IP
        + " (8 - 1 = 7 packets, 2122 - 576 = 1546 frame bytes)",
    ("ndpi", f"{_PDU}/tls_invalid_reads.pcap", "tcp 192.168.10.101:3967 -> 206.33.61.113:443",
     "* a->b, b->a"):
        "the server's SYN-ACK (frame 2, 66 bytes) has IPv4 total length 4148; "
        + _NDPI_DROPS_LONG_IP + " (4 - 1 = 3 packets, 1563 - 66 = 1497 frame bytes)",
    ("ndpi", f"{_PDU}/fuzz-2006-09-29-28586.pcap", "tcp 172.20.3.5:2605 -> 172.20.3.13:80",
     "* a->b, b->a"):
        "a fuzzer's output: frame 72 (1514 bytes) has IPv4 total length 9587; "
        + _NDPI_DROPS_LONG_IP + " (5 - 1 = 4 packets, 1754 - 1514 = 240 frame bytes)",
    ("ndpi", f"{_PDU}/reasm_crash_anon.pcapng", "tcp 192.168.145.147:51218 -> *",
     "* a->b, b->a"):
        "8 client frames (15, 45, 68, 81, 87, 108, 130, 190: 571 bytes) and 1 server frame "
        "(17: 122 bytes) are shorter than their IPv4 total length; " + _NDPI_DROPS_LONG_IP
        + ". And client frame 95 has TCP data offset 0 (a header shorter than 20 bytes): "
        "hopguard skips it as Zeek does (bad_TCP_header_len), ndpiReader counts it. Client "
        "195 - 1 = 194 vs 195 - 8 = 187 packets, 14234 vs 14234 + 113 - 571 = 13776 bytes; "
        "server 14 vs 13 packets, 6413 vs 6291 bytes",
    ("ndpi", f"{_PDU}/tls_invalid_reads.pcap", "tcp 10.191.139.17:58552 -> *", "tls row"):
        "frame 12's ClientHello (inside GTP) has a corrupt extensions block: the 11-byte ALPN "
        "extension declares a 47241-byte protocol list and random bytes follow it (tshark: "
        "Malformed Packet); nDPI fingerprints the hello anyway (ALPN taken as empty), hopguard "
        "rejects it as malformed, as tshark does",
    ("ndpi", f"{_PDU}/heuristic_tcp_ack_payload.pcap", "tcp * -> *:443", "tls row"):
        "in every connection of this capture the first segment of each side is 2 or 6 zero "
        "bytes (Ethernet padding that the IPv4/TCP lengths wrongly count as payload) and the "
        "real data (the ClientHello, the ServerHello) is sent again at the same sequence "
        "number: ndpiReader enables nDPI's non-standard 'TCP ACK payload' heuristic "
        "(ndpi_enable_tcp_ack_payload_heuristic, ntop/nDPI#1948) that drops such segments; "
        "hopguard follows the headers, and its reassembly keeps the first copy of overlapping "
        "bytes (docs/formats.md, as Zeek does), so the stream does not start with a TLS record",
}

SCOPE: dict[tuple[str, str, str, str], str] = {
    # --- tshark 4.0.17 ---------------------------------------------------------------------------
    ("tshark", f"{_PDU}/443-opvn.pcap", "tcp * -> *:1194", "tls row"):
        "the TLS handshake runs inside OpenVPN's control channel (P_CONTROL packets over TCP "
        "1194): tshark's OpenVPN dissector reassembles it; the engine does not decode OpenVPN",
    ("tshark", f"{_PDU}/openvpn*", "* -> *:1194", "tls row*"):
        "the TLS handshakes run inside OpenVPN's control channel (P_CONTROL packets, over UDP "
        "and TCP 1194): tshark's OpenVPN dissector reassembles them; the engine does not decode "
        "OpenVPN",
    ("tshark", f"{_PDU}/capwap_data.pcapng", "*", "tls row"):
        "the TCP connection is inside CAPWAP data packets (UDP 5247, RFC 5415, carrying 802.11 "
        "frames); tshark decodes CAPWAP, the engine's tunnels do not include it",
    ("tshark", f"{_PDU}/haproxy.pcap", "*", "tls row"):
        "the client's stream starts with a PROXY protocol v1 header ('PROXY TCP4 "
        "11.111.11.111 222.222.222.22 52176 443\\r\\n', HAProxy's proxy-protocol.txt) before "
        "the ClientHello: tshark skips it, hopguard chooses a parser from the first bytes of "
        "the stream and the PROXY protocol is not among the ones it recognises (docs/formats.md "
        "'Application rows': TLS, HTTP/1.x, SOCKS, SSH, DNS)",
    # --- Arkime --------------------------------------------------------------------------------
    ("arkime", "arkime/tests/pcap/openvpn_synthetic.pcap", "*", "tls.ja*"):
        "the TLS handshakes run inside OpenVPN's control channel (P_CONTROL packets, UDP and "
        "TCP, IPv4 and IPv6): Arkime's OpenVPN parser hands them to its TLS parser; the engine "
        "does not decode OpenVPN",
    # --- nDPI ----------------------------------------------------------------------------------
    ("ndpi", f"{_PDU}/stun_dtls_unidirectional_server.pcap", "*", "tls row"):
        "only the server's side of a WebRTC call is in the capture (STUN, then the DTLS 1.0 "
        "ServerHello flight, no ClientHello): nDPI reports its JA3S; the engine opens a DTLS "
        "session only on a ClientHello in the originator's first datagrams (docs/formats.md: "
        "'UDP that carries a DTLS ClientHello within its first datagrams')",
    ("ndpi", f"{_PDU}/capwap.pcap", "udp 192.168.10.10:12380 -> 192.168.10.9:5247",
     "* a->b, b->a"):
        "nDPI decapsulates CAPWAP data packets (UDP 5247, RFC 5415/5416, carrying 802.11 "
        "frames): the 11 client frames carrying IP (DHCP, ICMPv6, IGMP) go to inner flows and "
        "the non-IP ones (1 ARP, 2 + 2 WLCCP) to none, so nDPI's outer flow keeps 156 + 1 "
        "frames; the engine does not decode CAPWAP and counts all 170 + 3 in the outer flow",
    ("ndpi", f"{_PDU}/capwap.pcap", "udp 0.0.0.0:68 -> 255.255.255.255:67", "flow row"):
        "a DHCP flow inside CAPWAP data packets (UDP 5247, 802.11 frames): nDPI decapsulates "
        "CAPWAP, the engine does not",
    ("ndpi", f"{_PDU}/capwap_data.pcapng", "tcp 10.1.3.68:47025 -> 74.125.130.188:443",
     "*row"):
        "the TCP connection (three VLANs) is inside CAPWAP data packets (UDP 5247, 802.11 "
        "frames): nDPI decapsulates CAPWAP, the engine does not (it has the outer UDP flow)",
    ("ndpi", f"{_PDU}/someip_sd_sample.pcap", "*", "flow row"):
        "the capture's link type is 192, PPI (Per-Packet Information header): not one of the "
        "link types the engine decodes (docs/formats.md), so the file is refused as holding "
        "nothing usable",
    ("ndpi", f"{_PDU}/ip_fragmented_garbage.pcap", "tcp 10.0.0.2:0 -> 10.128.0.2:0",
     "flow row"):
        "IPv4 fragments of a TCP packet, the first one carrying 16 bytes (less than a TCP "
        "header) and the rest at later offsets: nDPI puts fragments in a flow with ports 0; "
        "the engine does not reassemble IP fragments (docs/formats.md), so no frame has a "
        "TCP header to decode",
    ("ndpi", f"{_PDU}/fuzz-2006-09-29-28586.pcap", "tcp 172.20.3.13:0 -> 172.20.3.5:0",
     "flow row"):
        "frame 130 is a non-first IPv4 fragment (offset 1208, protocol TCP): nDPI puts it in a "
        "flow with ports 0; the engine does not reassemble IP fragments and skips later "
        "fragments (docs/formats.md)",
}

# Systematic deviations of an oracle from the specification, each recognised by recomputing
# the oracle's value from hopguard's with the oracle's own rule (see the _explain_* helpers):
# a disagreement is listed only when that recomputation reproduces the oracle's value exactly.
DEVIATIONS: dict[str, tuple[str, str]] = {
    "ndpi-ja4-sni-letter": (
        "ndpi",
        "nDPI sets JA4's SNI letter from the SNI value: 'i' when it is an IP literal, else 'd', "
        "also when the ClientHello has no SNI extension (nDPI flags the same flow 'Missing SNI "
        "TLS Extn'); the JA4 spec: 'd' if the SNI extension is present, 'i' if not"),
    "ndpi-ja4-empty-hash": (
        "ndpi",
        "with no extension left to hash nDPI writes sha256('')[:12] = e3b0c44298fc as JA4's "
        "third part; the JA4 spec writes 000000000000"),
    "ndpi-ja4-h0": (
        "ndpi",
        "in these flows nDPI writes 'h0' for a first ALPN value h2 or h3 (its own '(Advertised) "
        "ALPNs' and tshark show h2/h3 first), although it writes 'h2'/'h3' for the same value in "
        "the other captures; the JA4 spec and hopguard write 'h2'/'h3'"),
    "ndpi-ja4-alpn-chars": (
        "ndpi",
        "nDPI puts the first two characters of the first ALPN value in JA4 ('ht' for "
        "http/1.1, 'h3' for h3-29, 'do' for doq-i00); the JA4 spec takes the first and the "
        "last ('h1', 'h9', 'd0')"),
    "ndpi-ja4-dtls13-version": (
        "ndpi",
        "for a DTLS 1.3 ClientHello (legacy_version 0xfefd, supported_versions 0xfefc only; "
        "nDPI itself prints 'DTLSv1.3') nDPI writes JA4 version 'd2'; the JA4 spec takes the "
        "highest supported_versions value, 0xfefc = DTLS 1.3 = 'd3'"),
    "ndpi-ja4-dtls-bad-version": (
        "ndpi",
        "for OpenSSL's pre-RFC DTLS version 0x0100 (DTLS1_BAD_VER, Cisco AnyConnect) nDPI "
        "writes JA4 version 's3'; the JA4 spec has no code for it and writes '00'"),
    "zeek-uri-unescaped": (
        "zeek",
        "Zeek's http.log writes the URI percent-decoded (base/protocols/http/main.zeek logs "
        "http_request's unescaped_URI: '%21' becomes '!'); hopguard keeps the request-target "
        "as sent"),
}


# --------------------------------------------------------------------------------------------
# The shared store
# --------------------------------------------------------------------------------------------

Index = dict[tuple[str, int, str, int], list[dict[str, Any]]]


@dataclass
class Ingested:
    path: Path
    result: FileResult | None
    file_id: int | None
    error: BaseException | None  # anything that escaped ingest_file
    seconds: float


class CorpusStore:
    """One in-memory store for the module; each capture ingested once, on first use."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.store = Store.open(":memory:")
        self.done: dict[Path, Ingested] = {}
        self._index: dict[tuple[int, str], Index] = {}

    def rel(self, path: Path) -> str:
        try:
            return str(path.relative_to(self.root))
        except ValueError:
            return str(path)

    def ingest(self, path: Path) -> Ingested:
        got = self.done.get(path)
        if got is not None:
            return got
        t0 = time.perf_counter()
        result: FileResult | None = None
        error: BaseException | None = None
        try:
            result = ingest_file(self.store, path, sensor="corpus")
        except Exception as exc:  # recorded; the robustness test fails on it
            error = exc
        file_id = None
        if result is not None and result.failure is None:
            where = result.duplicate_of if result.duplicate_of is not None else str(path)
            ids = self.store.query("SELECT id FROM source_file WHERE path = ?",
                                   [where]).to_pylist()
            file_id = ids[0]["id"] if ids else None
        got = self.done[path] = Ingested(path, result, file_id, error,
                                         time.perf_counter() - t0)
        return got

    def index(self, path: Path, table: str) -> Index:
        """The table's rows of one capture, by directed (src ip, port, dst ip, port)."""
        ing = self.ingest(path)
        if ing.file_id is None:
            return {}
        key = (ing.file_id, table)
        idx = self._index.get(key)
        if idx is None:
            idx = defaultdict(list)
            order = "ts, record" if table != "http" else "ts, record, trans_depth"
            for r in self.store.query(f"SELECT * FROM {table} WHERE file_id = ? ORDER BY {order}",
                                      [ing.file_id]).to_pylist():
                if r.get("src_ip") is None:
                    continue
                idx[(norm_ip(r["src_ip"]), r["src_port"], norm_ip(r["dst_ip"]),
                     r["dst_port"])].append(r)
            self._index[key] = idx = dict(idx)
        return idx

    def find(self, path: Path, table: str, conns: Sequence[Conn]
             ) -> tuple[Conn, list[dict[str, Any]]]:
        """The first reading of the connection that has rows (else the first, with none)."""
        idx = self.index(path, table)
        for c in conns:
            rows = idx.get(c.key)
            if rows:
                return c, rows
        return conns[0], []


@pytest.fixture(scope="module")
def corpus() -> Iterator[CorpusStore]:
    if not PUBLIC_CORPUS.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"public corpus missing at {PUBLIC_CORPUS} (CI must have ../shared)")
        pytest.skip(f"public corpus not found at {PUBLIC_CORPUS} (set HOPGUARD_CORPUS)")
    c = CorpusStore(PUBLIC_CORPUS)
    yield c
    c.store.close()


# --------------------------------------------------------------------------------------------
# Agreement bookkeeping
# --------------------------------------------------------------------------------------------

def _norm(v: Any) -> Any:
    if v is None or v == "" or v == []:
        return None
    if isinstance(v, list | tuple):
        return tuple(_norm(x) for x in v)
    return v


@dataclass
class Tally:
    oracle: str
    title: str
    counts: dict[str, list[int]] = field(default_factory=dict)  # compared, agreed, excused
    bad: list[str] = field(default_factory=list)
    excused: list[str] = field(default_factory=list)
    used: set[tuple[str, str, str, str]] = field(default_factory=set)
    used_deviations: set[str] = field(default_factory=set)
    notes: list[str] = field(default_factory=list)

    def _exception(self, capture: str, conn: Conn | None, fld: str
                   ) -> tuple[str, str, str, str] | None:
        cs = str(conn) if conn is not None else "-"
        for key in (*EXCEPTIONS, *SCOPE):
            orc, cap_glob, conn_glob, field_glob = key
            if orc == self.oracle and fnmatch.fnmatchcase(capture, cap_glob) and \
                    fnmatch.fnmatchcase(cs, conn_glob) and fnmatch.fnmatchcase(fld, field_glob):
                return key
        return None

    def check(self, fld: str, capture: str, conn: Conn | None, expected: Any, got: Any, *,
              member: bool = False, note: str = "",
              explain: Callable[[], Sequence[str]] | None = None) -> bool:
        """expected == got, or (member) expected equals one of the values in got.

        A disagreement is listed (not failed) when EXCEPTIONS or SCOPE names it, or when
        ``explain``
        returns the DEVIATIONS keys that reproduce the oracle's value.
        """
        c = self.counts.setdefault(fld, [0, 0, 0])
        c[0] += 1
        e = _norm(expected)
        ok = any(_norm(g) == e for g in got) if member else e == _norm(got)
        if ok:
            c[1] += 1
            return True
        line = (f"{capture}  {conn if conn is not None else '-'}  {fld}: oracle {expected!r}, "
                f"hopguard {got!r}{'  ' + note if note else ''}")
        key = self._exception(capture, conn, fld)
        devs = tuple(explain()) if key is None and explain is not None else ()
        if key is not None or devs:
            c[2] += 1
            if key is not None:
                self.used.add(key)
            self.used_deviations.update(devs)
            self.excused.append(line + (f"  [{', '.join(devs)}]" if devs else ""))
        else:
            self.bad.append(line)
        return False

    def table(self) -> str:
        w = max([len(k) for k in self.counts] + [5])
        out = [f"\n== {self.title}",
               f"{'field':<{w}}  {'compared':>8}  {'agree':>6}  {'listed':>6}  {'disagree':>8}"
               f"  {'agree %':>7}"]
        for k, (n, a, x) in self.counts.items():
            pct = f"{100.0 * a / n:.1f}" if n else "-"
            out.append(f"{k:<{w}}  {n:>8}  {a:>6}  {x:>6}  {n - a - x:>8}  {pct:>7}")
        out.extend(self.notes)
        return "\n".join(out)

    def finish(self) -> None:
        print(self.table())
        if self.excused:
            oracle_side = sorted((k for k in self.used if k in EXCEPTIONS), key=str)
            scope = sorted((k for k in self.used if k in SCOPE), key=str)
            print(f"-- {len(self.excused)} listed disagreements, by reason: "
                  f"{len(oracle_side)} oracle-side entries, {len(self.used_deviations)} "
                  f"oracle deviations, {len(scope)} out-of-scope entries")
            for k in oracle_side:
                print(f"   [oracle] {k[1]} {k[2]} {k[3]}: {EXCEPTIONS[k]}")
            for d in sorted(self.used_deviations):
                print(f"   [oracle: {d}] {DEVIATIONS[d][1]}")
            for k in scope:
                print(f"   [scope] {k[1]} {k[2]} {k[3]}: {SCOPE[k]}")
        dump = os.environ.get("HOPGUARD_ORACLE_DUMP")  # a file to get every line, not 60
        if dump:
            with open(dump, "a", encoding="utf-8") as fh:
                fh.write(self.table() + "\n")
                fh.writelines(f"{self.oracle} DISAGREE {b}\n" for b in self.bad)
                fh.writelines(f"{self.oracle} LISTED {b}\n" for b in self.excused)
        stale: list[object] = [k for k in (*EXCEPTIONS, *SCOPE)
                               if k[0] == self.oracle and k not in self.used]
        stale += [k for k, (orc, _) in DEVIATIONS.items()
                  if orc == self.oracle and k not in self.used_deviations]
        msg = []
        if self.bad:
            msg.append(f"{len(self.bad)} disagreements with {self.oracle} not listed in "
                       "EXCEPTIONS, SCOPE or DEVIATIONS:")
            msg.extend("  " + b for b in self.bad[:60])
            if len(self.bad) > 60:
                msg.append(f"  ... and {len(self.bad) - 60} more")
        if stale:
            msg.append("EXCEPTIONS/SCOPE/DEVIATIONS entries that no longer match a disagreement "
                       "(remove them):")
            msg.extend(f"  {k}" for k in stale)
        if msg:
            print("\n".join(msg))
            pytest.fail("\n".join(msg), pytrace=False)


def _ja3_hash(value: str | None) -> str | None:
    """hopguard's ja3/ja3s as the MD5 tshark prints (accepts the string or the hash)."""
    if value is None:
        return None
    if len(value) == 32 and all(ch in "0123456789abcdef" for ch in value):
        return value
    return hashlib.md5(value.encode()).hexdigest()


JA3_STRING_COLUMNS = ("{}_full", "{}_string")


def _has_ja3_string(rows: Sequence[dict[str, Any]], base: str) -> bool:
    """Whether hopguard's tls table keeps the full JA3/JA3S string (it always keeps the MD5)."""
    return any(c.format(base) in r for c in JA3_STRING_COLUMNS for r in rows)


def _ja3_string(row: dict[str, Any], base: str) -> str | None:
    for col in JA3_STRING_COLUMNS:
        v = row.get(col.format(base))
        if v:
            return str(v)
    return None


# --------------------------------------------------------------------------------------------
# a. FoxIO JA4 reference
# --------------------------------------------------------------------------------------------

def test_ja4_reference(corpus: CorpusStore) -> None:
    expectations = o.ja4_expectations(corpus.root / "ja4")
    t = Tally("ja4", "FoxIO JA4 reference (rust snapshots + python JSON) vs hopguard tls.ja4")
    n = 0
    for cap, exps in expectations.items():
        path = corpus.root / "ja4/pcap" / cap
        rel = corpus.rel(path)
        for e in exps:
            n += 1
            _, rows = corpus.find(path, "tls", [e.conn])
            kind = "quic" if e.conn.proto == "udp" else "tcp"
            later = " (2nd+ ClientHello)" if e.ordinal > 1 else ""
            t.check(f"ja4 {kind}{later}", rel, e.conn, e.ja4, [r["ja4"] for r in rows],
                    member=True, note=f"stream {e.stream}, from {'+'.join(e.sources)}")
            if e.sni and e.ordinal == 1:
                t.check("sni", rel, e.conn, e.sni, [r["sni"] for r in rows], member=True)
    t.notes.append(f"{len(expectations)} captures, {n} expected client JA4s")
    t.finish()
    assert n >= 150


# --------------------------------------------------------------------------------------------
# b. tshark 4.0.17
# --------------------------------------------------------------------------------------------

def _tls_expectations(rows: list[o.TsharkTls]) -> list[tuple[o.TsharkTls, o.TsharkTls | None]]:
    """Each ClientHello with the ServerHello that answers it (the next one on the connection)."""
    out = []
    rows = sorted(rows, key=lambda r: r.frame)
    for i, ch in enumerate(rows):
        if not ch.client_hello:
            continue
        sh = None
        for r in rows[i + 1:]:
            if r.client_hello and set(r.conns) & set(ch.conns):
                break
            if r.server_hello and {c.reversed() for c in r.conns} & set(ch.conns):
                sh = r
                break
        out.append((ch, sh))
    return out


def test_tshark(corpus: CorpusStore) -> None:
    tables = o.tshark_tables(corpus.root / TSHARK, corpus.root)
    t = Tally("tshark", "tshark 4.0.17 vs hopguard (tls, http, proxy)")
    caps = hellos = requests = socks = 0
    strings = False
    for cap, kinds in tables.items():
        rel = corpus.rel(cap)
        caps += 1
        if "tls" in kinds:
            seen: dict[Conn, int] = defaultdict(int)
            for ch, sh in _tls_expectations(o.tshark_tls(kinds["tls"])):
                hellos += 1
                conn, rows = corpus.find(cap, "tls", ch.conns)
                seen[conn] += 1
                later = " (2nd+ ClientHello)" if seen[conn] > 1 else ""
                if not t.check(f"tls row{later}", rel, conn, True, bool(rows),
                               note=f"frame {ch.frame}"):
                    continue
                if ch.ja3:
                    t.check(f"ja3{later}", rel, conn, ch.ja3,
                            [_ja3_hash(r["ja3"]) for r in rows], member=True)
                strings = strings or _has_ja3_string(rows, "ja3")
                if ch.ja3_full and _has_ja3_string(rows, "ja3"):
                    t.check(f"ja3 string{later}", rel, conn, ch.ja3_full,
                            [_ja3_string(r, "ja3") for r in rows], member=True)
                t.check(f"sni{later}", rel, conn, ch.sni, [r["sni"] for r in rows], member=True)
                alpn = (sh.alpn if sh is not None and sh.alpn else ch.alpn)
                t.check(f"alpn{later}", rel, conn, list(alpn) if alpn else None,
                        [r["alpn"] for r in rows], member=True,
                        note="(negotiated)" if sh is not None and sh.alpn else "(offered)")
                if sh is not None and sh.ja3s:
                    t.check(f"ja3s{later}", rel, conn, sh.ja3s,
                            [_ja3_hash(r["ja3s"]) for r in rows], member=True)
                    if sh.ja3s_full and _has_ja3_string(rows, "ja3s"):
                        t.check(f"ja3s string{later}", rel, conn, sh.ja3s_full,
                                [_ja3_string(r, "ja3s") for r in rows], member=True)
        if "http" in kinds:
            reqs = [r for r in o.tshark_http(kinds["http"]) if r.method]
            used: dict[Conn, set[int]] = defaultdict(set)
            for rq in sorted(reqs, key=lambda r: r.frame):
                requests += 1
                conn, rows = corpus.find(cap, "http", rq.conns)
                if not t.check("http row", rel, conn, True, bool(rows),
                               note=f"frame {rq.frame} {rq.method} {rq.uri}"):
                    continue
                free = [i for i in range(len(rows)) if i not in used[conn]]
                pick = next((i for i in free if rows[i]["method"] == rq.method
                             and rows[i]["uri"] == rq.uri), free[0] if free else None)
                if pick is None:
                    t.check("http row", rel, conn, f"request in frame {rq.frame}",
                            f"only {len(rows)} requests")
                    continue
                used[conn].add(pick)
                r = rows[pick]
                t.check("http method", rel, conn, rq.method, r["method"])
                t.check("http host", rel, conn, rq.host, r["host"])
                t.check("http uri", rel, conn, rq.uri, r["uri"])
                if rq.method == "CONNECT":
                    host, port = o.authority(rq.uri)
                    _, prow = corpus.find(cap, "proxy", [conn])
                    prow = [p for p in prow if p["protocol"] == "http-connect"]
                    t.check("CONNECT proxy row", rel, conn, True, bool(prow))
                    if prow:
                        t.check("CONNECT target", rel, conn, (host, port),
                                [(p["target_host"] or p["target_ip"], p["target_port"])
                                 for p in prow], member=True)
        if "socks" in kinds:
            for hs in o.socks_handshakes(o.tshark_socks(kinds["socks"])):
                socks += 1
                _check_socks_handshake(t, corpus, cap, hs)
    if not strings:
        t.notes.append("JA3/JA3S strings not compared: hopguard's tls table keeps only the MD5 "
                       f"(no {'/'.join(c.format('ja3') for c in JA3_STRING_COLUMNS)} column)")
    t.notes.append(f"{caps} captures with tshark tables: {hellos} ClientHellos, "
                   f"{requests} HTTP requests, {socks} SOCKS handshakes")
    t.finish()
    assert hellos > 500 and requests > 200 and socks >= 5


def _socks_protocol(version: int, host: str | None) -> str:
    if version == 4:
        return "socks4a" if host else "socks4"
    return f"socks{version}"


# SOCKS reply codes in Zeek's wording (base/protocols/socks/consts.zeek), the proxy.outcome
# vocabulary.
SOCKS_REPLY = {
    4: {90: "succeeded", 91: "general SOCKS server failure",
        92: "request failed because client is not running identd",
        93: "request failed because client's identd could not confirm the user ID string in "
            "the request"},
    5: {0: "succeeded", 1: "general SOCKS server failure", 2: "connection not allowed by ruleset",
        3: "Network unreachable", 4: "Host unreachable", 5: "Connection refused",
        6: "TTL expired", 7: "Command not supported", 8: "Address type not supported"},
}


def _check_socks_handshake(t: Tally, corpus: CorpusStore, cap: Path,
                           hs: o.SocksHandshake) -> None:
    rel = corpus.rel(cap)
    _, rows = corpus.find(cap, "proxy", [hs.conn])
    rows = [r for r in rows if str(r["protocol"]).startswith("socks")]
    if not t.check("socks proxy row", rel, hs.conn, True, bool(rows)):
        return
    r = rows[0]
    t.check("socks protocol", rel, hs.conn, _socks_protocol(hs.version, hs.target_host),
            r["protocol"])
    if hs.target_host:
        t.check("socks target_host", rel, hs.conn, hs.target_host, r["target_host"])
    if hs.target_ip and hs.target_ip not in ("0.0.0.1",) and not hs.target_host:
        t.check("socks target_ip", rel, hs.conn, hs.target_ip, r["target_ip"])
    t.check("socks target_port", rel, hs.conn, hs.target_port, r["target_port"])
    t.check("socks user", rel, hs.conn, hs.user, r["user"])
    if hs.reply is not None:
        t.check("socks outcome", rel, hs.conn,
                SOCKS_REPLY.get(hs.version, {}).get(hs.reply, f"reply {hs.reply}"), r["outcome"])


# --------------------------------------------------------------------------------------------
# c. Zeek baselines
# --------------------------------------------------------------------------------------------

ZEEK_SOCKS_STATUS_OK = "succeeded"


def _zint(v: str | None) -> int | None:
    return int(v) if v not in (None, "") and str(v).isdigit() else None


ZEEK_CONN_COUNTERS = (("orig_bytes", "src_bytes"), ("resp_bytes", "dst_bytes"),
                      ("orig_pkts", "src_pkts"), ("resp_pkts", "dst_pkts"),
                      ("orig_ip_bytes", "src_ip_bytes"), ("resp_ip_bytes", "dst_ip_bytes"))


def _check_zeek_conn(t: Tally, corpus: CorpusStore, cap: Path, rel: str,
                     log: list[dict[str, str | None]]) -> None:
    """conn.log against the flow table, per 5-tuple: Zeek and hopguard may each split one
    5-tuple into several connections (idle timeout, a packet after the close), so counters
    are compared as totals; state and history only where both have one connection."""
    groups: dict[Conn, list[dict[str, str | None]]] = {}
    for z in log:
        if "id.orig_h" not in z or z.get("proto") not in ("tcp", "udp", "icmp", None):
            continue
        groups.setdefault(o.zeek_conn(z, z.get("proto") or ""), []).append(z)
    for conn, zs in groups.items():
        found, rows = corpus.find(cap, "flow", [conn, conn.reversed()])
        if conn.proto:
            rows = [r for r in rows if r["proto"] == conn.proto]
        if not t.check("flow row", rel, conn, True, bool(rows),
                       note=f"zeek service {zs[0].get('service')}"):
            continue
        # Zeek flips a connection whose first packet comes from a likely server port ('^' in
        # its history); hopguard's originator is the first packet's sender (or the SYN's)
        flipped = found != conn
        t.check("flow orientation", rel, conn, f"{conn.src_ip}:{conn.src_port} originates",
                f"{found.src_ip}:{found.src_port} originates",
                note=f"zeek history {zs[0].get('history')}")
        note = f"{len(zs)} Zeek / {len(rows)} hopguard connections" \
            if len(zs) > 1 or len(rows) > 1 else ""
        for zf, hf in ZEEK_CONN_COUNTERS:
            # '-' (unset): Zeek did not measure it, e.g. the payload of a VXLAN datagram whose
            # inner frame is not IP (no UDP analyzer ran on it)
            if any(z.get(zf) is None for z in zs):
                continue
            if flipped:
                hf = hf.replace("src_", "x_").replace("dst_", "src_").replace("x_", "dst_")
            t.check(f"flow {hf}", rel, conn, sum(_zint(z[zf]) or 0 for z in zs),
                    sum(r.get(hf) or 0 for r in rows), note=note)
        if len(zs) == 1 and len(rows) == 1 and not flipped:
            if zs[0].get("conn_state"):
                t.check("flow state", rel, conn, zs[0]["conn_state"], rows[0].get("state"))
            if zs[0].get("history") and rows[0].get("history"):
                t.check("flow history", rel, conn, zs[0]["history"], rows[0]["history"])


def _explain_zeek_uri(zeek_uri: str | None, ours: str | None) -> Callable[[], list[str]]:
    """Zeek's URI recomputed from hopguard's by percent-decoding it, as Zeek logs it."""

    def explain() -> list[str]:
        if zeek_uri and ours and "%" in ours and unquote(ours) == zeek_uri:
            return ["zeek-uri-unescaped"]
        return []

    return explain


def test_zeek(corpus: CorpusStore) -> None:
    t = Tally("zeek", "Zeek baselines vs hopguard (proxy, http, tls, flow)")
    baselines = o.zeek_baselines(corpus.root / "zeek/testing/btest")
    for b in baselines:
        cap = b.trace
        rel = f"{corpus.rel(cap)} [{b.test}]"
        if "socks" in b.logs:
            for z in o.read_zeek_log(b.logs["socks"]):
                conn = o.zeek_conn(z, "tcp")
                _, rows = corpus.find(cap, "proxy", [conn])
                rows = [r for r in rows if str(r["protocol"]).startswith("socks")]
                if not t.check("socks proxy row", rel, conn, True, bool(rows)):
                    continue
                r = rows[0]
                if z.get("version"):
                    t.check("socks version", rel, conn, f"socks{z['version']}",
                            str(r["protocol"]).removesuffix("a"))
                if "user" in z:
                    t.check("socks user", rel, conn, z["user"], r["user"])
                if "request.host" in z or "request.name" in z:
                    t.check("socks target_ip", rel, conn, z.get("request.host"), r["target_ip"])
                    t.check("socks target_host", rel, conn, z.get("request.name"),
                            r["target_host"])
                if "request_p" in z:
                    t.check("socks target_port", rel, conn, _zint(z["request_p"]),
                            r["target_port"])
                if z.get("status"):
                    t.check("socks outcome", rel, conn, z["status"], r["outcome"])
                if "bound.host" in z:
                    t.check("socks bound", rel, conn,
                            (z.get("bound.host") or z.get("bound.name"), _zint(z["bound_p"])),
                            (r["bound_host"], r["bound_port"]))
        if "tunnel" in b.logs:
            for z in o.read_zeek_log(b.logs["tunnel"]):
                kind = z.get("tunnel_type")
                if kind not in ("Tunnel::SOCKS", "Tunnel::HTTP") or \
                        z.get("action") != "Tunnel::DISCOVER":
                    continue
                dst = (norm_ip(z["id.resp_h"] or ""), _zint(z["id.resp_p"]))
                idx = corpus.index(cap, "proxy")
                want = "socks" if kind == "Tunnel::SOCKS" else "http-connect"
                hit = [r for k, rs in idx.items() if (k[2], k[3]) == dst for r in rs
                       if str(r["protocol"]).startswith(want)]
                t.check(f"{kind} discovered", rel, None, f"{want} to {dst[0]}:{dst[1]}",
                        f"{want} to {dst[0]}:{dst[1]}" if hit else "no proxy row")
        if "http" in b.logs:
            for z in o.read_zeek_log(b.logs["http"]):
                if "id.orig_h" not in z:
                    continue
                conn = o.zeek_conn(z, "tcp")
                _, rows = corpus.find(cap, "http", [conn])
                if not t.check("http row", rel, conn, True, bool(rows)):
                    continue
                # the same request (method and URI), else the one at Zeek's trans_depth
                depth = _zint(z.get("trans_depth"))
                r = next((r for r in rows if r["method"] == z.get("method")
                          and r["uri"] == z.get("uri")),
                         next((r for r in rows if r.get("trans_depth") == depth), rows[0]))
                t.check("http method", rel, conn, z.get("method"), r["method"])
                t.check("http host", rel, conn, z.get("host"), r["host"])
                t.check("http uri", rel, conn, z.get("uri"), r["uri"],
                        explain=_explain_zeek_uri(z.get("uri"), r["uri"]))
                if z.get("method") == "CONNECT":
                    host, port = o.authority(z.get("uri"))
                    _, prow = corpus.find(cap, "proxy", [conn])
                    t.check("CONNECT target", rel, conn, (host, port),
                            [(p["target_host"] or p["target_ip"], p["target_port"])
                             for p in prow if p["protocol"] == "http-connect"], member=True)
                    t.check("CONNECT outcome", rel, conn,
                            f"{z.get('status_code')} {z.get('status_msg')}",
                            [p["outcome"] for p in prow], member=True)
        if "ssl" in b.logs:
            for z in o.read_zeek_log(b.logs["ssl"]):
                proto = "udp" if "quic" in b.test else "tcp"
                conn = o.zeek_conn(z, proto)
                _, rows = corpus.find(cap, "tls", [conn])
                if not t.check("tls row", rel, conn, True, bool(rows)):
                    continue
                t.check("tls sni", rel, conn, z.get("server_name"), [r["sni"] for r in rows],
                        member=True)
                t.check("tls version", rel, conn, z.get("version"),
                        [r["version"] for r in rows], member=True)
                if z.get("cipher"):
                    t.check("tls cipher", rel, conn, z.get("cipher"),
                            [r["cipher"] for r in rows], member=True)
                if z.get("next_protocol"):
                    t.check("tls alpn (negotiated)", rel, conn, [z["next_protocol"]],
                            [r["alpn"] for r in rows], member=True)
        if "conn" in b.logs:
            _check_zeek_conn(t, corpus, cap, rel, o.read_zeek_log(b.logs["conn"]))
    t.notes.append(f"{len(baselines)} baseline tests over "
                   f"{len({b.trace for b in baselines})} traces")
    t.finish()


# --------------------------------------------------------------------------------------------
# d. Arkime
# --------------------------------------------------------------------------------------------

def test_arkime(corpus: CorpusStore) -> None:
    t = Tally("arkime", "Arkime sessions vs hopguard (proxy, tls, flow)")
    tests = sorted((corpus.root / "arkime/tests/pcap").glob("*.test"))
    sessions = 0
    for test in tests:
        cap = test.with_suffix(".pcap")
        if not cap.is_file():
            continue
        rel = corpus.rel(cap)
        for s in o.arkime_sessions(test):
            # Arkime also keeps non-IP "sessions" (ARP inside VXLAN: ipProtocol 17, ports 0)
            if s.conn.proto not in ("tcp", "udp") or "arp" in s.protocols:
                continue
            sessions += 1
            conn, flows = corpus.find(cap, "flow", [s.conn, s.conn.reversed()])
            flows = [f for f in flows if f["proto"] == s.conn.proto]
            if not t.check("flow row", rel, s.conn, True, bool(flows)):
                continue
            f = flows[0]
            fwd = conn == s.conn  # hopguard's originator is Arkime's source
            src, dst = ("src", "dst") if fwd else ("dst", "src")
            t.check("flow packets (source)", rel, s.conn, s.src_packets, f[f"{src}_pkts"])
            t.check("flow packets (destination)", rel, s.conn, s.dst_packets, f[f"{dst}_pkts"])
            if s.client_bytes is not None:
                t.check("flow payload bytes (client)", rel, s.conn, s.client_bytes,
                        f[f"{src}_bytes"])
                t.check("flow payload bytes (server)", rel, s.conn, s.server_bytes,
                        f[f"{dst}_bytes"])
            if s.socks:
                _, prow = corpus.find(cap, "proxy", [conn])
                prow = [p for p in prow if str(p["protocol"]).startswith("socks")]
                if t.check("socks proxy row", rel, s.conn, True, bool(prow)):
                    p = prow[0]
                    if "host" in s.socks:
                        t.check("socks.host", rel, s.conn, s.socks["host"], p["target_host"])
                    if "ip" in s.socks:
                        t.check("socks.ip", rel, s.conn, s.socks["ip"], p["target_ip"])
                    t.check("socks.port", rel, s.conn, s.socks.get("port"), p["target_port"])
                    t.check("socks.user", rel, s.conn, s.socks.get("user"), p["user"])
            if s.tls:
                _, trows = corpus.find(cap, "tls", [conn])
                for key, col in (("ja3", "ja3"), ("ja3s", "ja3s"), ("ja4", "ja4")):
                    for v in s.tls.get(key, ()):
                        got = [_ja3_hash(r[col]) if col != "ja4" else r[col] for r in trows]
                        t.check(f"tls.{key}", rel, s.conn, v, got, member=True)
                for key, col in (("ja3string", "ja3"), ("ja3sstring", "ja3s")):
                    if not _has_ja3_string(trows, col):
                        continue
                    for v in s.tls.get(key, ()):
                        t.check(f"tls.{key}", rel, s.conn, v,
                                [_ja3_string(r, col) for r in trows], member=True)
    t.notes.append(f"{len(tests)} Arkime tests, {sessions} TCP/UDP sessions")
    t.finish()


# --------------------------------------------------------------------------------------------
# e. nDPI
# --------------------------------------------------------------------------------------------

# hopguard flow columns that hold nDPI's quantity (captured frame bytes per direction), if any.
FRAME_BYTES = ("src_frame_bytes", "dst_frame_bytes")


def _ndpi_subset(ndpi_root: Path) -> list[tuple[Path, Path]]:
    """All default-configuration captures (HOPGUARD_NDPI_ALL=0 keeps only the proxy, Tor and
    TLS/QUIC ones, for a quick run)."""
    pairs = list(o.ndpi_results(ndpi_root))
    if os.environ.get("HOPGUARD_NDPI_ALL", "1") != "0":
        return pairs
    keep = ("socks", "proxy", "tor", "tls", "ssl", "quic", "443", "ja3", "ja4", "http", "vpn",
            "shadowsocks", "vmess", "connect")
    return [(c, r) for c, r in pairs if any(k in c.name.lower() for k in keep)]


def _is_ip(text: str | None) -> bool:
    if not text:
        return False
    try:
        ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return False
    return True


def _explain_ndpi_ja4(ndpi_ja4: str, ours: Sequence[str | None], nf: o.NdpiFlow
                      ) -> Callable[[], list[str]]:
    """nDPI's JA4 recomputed from hopguard's with nDPI's SNI-letter and ALPN-character rules."""

    def explain() -> list[str]:
        for ja4 in ours:
            if not ja4 or len(ja4) != len(ndpi_ja4) or len(ja4) < 10:
                continue
            v = list(ja4)
            used = []
            if v[1:3] == ["d", "3"] and ndpi_ja4[1:3] == "d2":
                v[1:3] = "d2"
                used.append("ndpi-ja4-dtls13-version")
            if v[0] == "d" and v[1:3] == ["0", "0"] and ndpi_ja4[1:3] == "s3":
                v[1:3] = "s3"
                used.append("ndpi-ja4-dtls-bad-version")
            letter = "i" if _is_ip(nf.sni) else "d"
            if v[3] != letter:
                v[3] = letter
                used.append("ndpi-ja4-sni-letter")
            first = nf.alpn_advertised[0] if nf.alpn_advertised else ""
            if first in ("h2", "h3") and ndpi_ja4[8:10] == "h0":
                v[8:10] = "h0"
                used.append("ndpi-ja4-h0")
            elif len(first) >= 2 and "".join(v[8:10]) != first[:2]:
                v[8:10] = first[:2]
                used.append("ndpi-ja4-alpn-chars")
            if ja4.endswith("_000000000000") and ndpi_ja4.endswith("_e3b0c44298fc"):
                v[-12:] = "e3b0c44298fc"
                used.append("ndpi-ja4-empty-hash")
            if used and "".join(v) == ndpi_ja4:
                return used
        return []

    return explain


def _sent(rows: Sequence[dict[str, Any]], ep: tuple[str, int], what: str) -> int:
    """What hopguard counts as sent by endpoint ``ep`` (``what``: "pkts", "frame_bytes")."""
    total = 0
    for r in rows:
        side = "src" if (norm_ip(r["src_ip"]), r["src_port"]) == ep else "dst"
        total += r[f"{side}_{what}"] or 0
    return total


def test_ndpi(corpus: CorpusStore) -> None:
    t = Tally("ndpi", "nDPI (default cfg) vs hopguard (flow, tls)")
    pairs = _ndpi_subset(corpus.root / "ndpi")
    flows_n = groups_n = tls_n = 0
    frame_cols = None
    for cap, report in pairs:
        rel = corpus.rel(cap)
        flows = [f for f in o.ndpi_flows(report) if f.conn.proto in ("tcp", "udp")]
        # nDPI may list one connection as several flows (it starts a new flow after its idle
        # timeout or a closed TCP session); hopguard may split differently (port reuse):
        # compare the totals per connection 5-tuple, each endpoint's packets and bytes.
        groups: dict[tuple[str, frozenset[tuple[str, int]]], list[o.NdpiFlow]] = {}
        for nf in flows:
            groups.setdefault((nf.conn.proto, nf.conn.endpoints), []).append(nf)
        for (proto, _), nfs in groups.items():
            flows_n += len(nfs)
            groups_n += 1
            c = nfs[0].conn
            idx = corpus.index(cap, "flow")
            # both directions' keys, once each (a connection from an endpoint to itself has
            # one key: 170.170.170.170:43690 -> itself in a fuzzed capture)
            rows = [r for k in dict.fromkeys((c.key, c.reversed().key)) for r in idx.get(k, ())
                    if r["proto"] == proto]
            if not t.check("flow row", rel, c, True, bool(rows), note=nfs[0].l7):
                continue
            if frame_cols is None:
                frame_cols = all(col in rows[0] for col in FRAME_BYTES)
            a, b = (c.src_ip, c.src_port), (c.dst_ip, c.dst_port)

            def ndpi_sent(ep: tuple[str, int], what: str, nfs: list[o.NdpiFlow] = nfs) -> int:
                return sum((f.a_pkts if what == "pkts" else f.a_bytes)
                           if (f.conn.src_ip, f.conn.src_port) == ep else
                           (f.b_pkts if what == "pkts" else f.b_bytes) for f in nfs)

            note = f"{len(nfs)} nDPI flows, {len(rows)} hopguard flows"
            t.check("packets a->b, b->a", rel, c, (ndpi_sent(a, "pkts"), ndpi_sent(b, "pkts")),
                    (_sent(rows, a, "pkts"), _sent(rows, b, "pkts")), note=note)
            if frame_cols:
                t.check("frame bytes a->b, b->a", rel, c,
                        (ndpi_sent(a, "bytes"), ndpi_sent(b, "bytes")),
                        (_sent(rows, a, "frame_bytes"), _sent(rows, b, "frame_bytes")),
                        note=note)
        for nf in flows:
            l7 = nf.l7.upper()
            if not (("TLS" in l7 or "QUIC" in l7) and (nf.ja3c or nf.ja4 or nf.ja3s)):
                continue
            tls_n += 1
            _, trows = corpus.find(cap, "tls", [nf.conn, nf.conn.reversed()])
            if not t.check("tls row", rel, nf.conn, True, bool(trows), note=nf.l7):
                continue
            if nf.sni:
                t.check("sni", rel, nf.conn, nf.sni, [r["sni"] for r in trows], member=True)
            if nf.ja3c:
                t.check("ja3c", rel, nf.conn, nf.ja3c,
                        [_ja3_hash(r["ja3"]) for r in trows], member=True)
            if nf.ja4:
                ours = [r["ja4"] for r in trows]
                t.check("ja4", rel, nf.conn, nf.ja4, ours, member=True,
                        explain=_explain_ndpi_ja4(nf.ja4, ours, nf))
            if nf.ja3s:
                t.check("ja3s", rel, nf.conn, nf.ja3s,
                        [_ja3_hash(r["ja3s"]) for r in trows], member=True)
    t.notes.append(f"{len(pairs)} captures, {flows_n} TCP/UDP flows in {groups_n} 5-tuples, "
                   f"{tls_n} TLS/QUIC/DTLS flows")
    if not frame_cols:
        t.notes.append("frame bytes not compared: hopguard's flow table has no "
                       f"{'/'.join(FRAME_BYTES)} (nDPI counts pcap caplen per packet)")
    t.finish()


# --------------------------------------------------------------------------------------------
# Robustness: every capture in the corpus
# --------------------------------------------------------------------------------------------

def test_every_capture_ingests(corpus: CorpusStore) -> None:
    caps = o.captures_under(corpus.root)
    assert len(caps) > 400
    crashed = []
    bad_failure = []
    stored = failed = dup = 0
    for cap in caps:
        ing = corpus.ingest(cap)
        if ing.error is not None:
            crashed.append(f"{corpus.rel(cap)}: {type(ing.error).__name__}: {ing.error}")
            continue
        res = ing.result
        assert res is not None
        if res.failure is not None:
            failed += 1
            if not isinstance(res.failure, HopguardError) or \
                    cap.name not in str(res.failure):
                bad_failure.append(f"{corpus.rel(cap)}: {res.failure!r}")
        elif res.duplicate_of is not None:
            dup += 1
        else:
            stored += 1
    slow = sorted(corpus.done.values(), key=lambda i: -i.seconds)[:5]
    total = sum(i.seconds for i in corpus.done.values())
    print(f"\n== every capture: {len(caps)} files, {stored} stored, {dup} duplicates, "
          f"{failed} refused with a located HopguardError, {len(crashed)} crashed; "
          f"{total:.1f} s ingest in all; slowest: "
          + ", ".join(f"{corpus.rel(i.path)} {i.seconds:.2f} s" for i in slow))
    for i in corpus.done.values():
        if i.result is not None and i.result.failure is not None:
            print(f"   refused: {corpus.rel(i.path)}: {i.result.failure}")
    assert not crashed, "\n".join(crashed)
    assert not bad_failure, "\n".join(bad_failure)
