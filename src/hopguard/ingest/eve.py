"""Suricata EVE JSON lines: flow, tls, http, dns and alert events.

Theory of operation. EVE is one JSON object per line; ``event_type`` says what the object is and
a sub-object of the same name carries the protocol fields (``{"event_type": "tls", "tls": {...}}``).
Every line is decoded with orjson and dispatched through a dict keyed by ``event_type`` to one
small handler per stored event type; every other type (stats, anomaly, fileinfo, netflow, quic
...) is counted with ``sink.skip("eve <type>")``. A line that is not JSON, not an object, lacks
``event_type`` / ``timestamp`` or the keys its type needs is reported with its line number and
the reader goes on. A field that is present but has the wrong JSON type (a port that is a
string, a list where a name belongs) is stored as NULL and reported once per record.

Ties between rows. Suricata gives every flow a ``flow_id`` that all events of that flow share;
``uid`` is ``"F" + str(flow_id)`` so that flow, tls, http, dns and alert rows of one connection
join on ``uid`` the way Zeek's conn uid does. Top-level ``host`` (set by ``sensor-name`` in
suricata.yaml) becomes the row's ``sensor``.

Orientation. EVE addresses flows by the *first packet seen* (``src_ip`` sent it), which for
a capture that starts mid-connection may be the responder; we store them as logged. Alerts are
logged in the direction of the packet that fired; we re-orient them to the flow (the alert's
``flow.src_ip`` ... when Suricata 7+ logs them, else by ``direction: to_client``).

DNS. EVE has had three layouts. v1 (Suricata < 5): one ``type: query`` event per question and
one ``type: answer`` event per answer record (rrname/rrtype/ttl/rdata at top level). v2
(Suricata 5-7, ``version: 2``): queries as in v1; one answer event per response with
``answers[]`` (detailed) and/or ``grouped`` ({rrtype: [rdata]}). v3 (Suricata 8, ``version: 3``):
``type: request`` / ``response``, questions in ``queries[]`` in both. We store one row per
question, like Zeek's dns.log: a question waits (bounded: ``MAX_PENDING_DNS``) keyed by
(uid, dns id) until its response fills rcode, answers, TTLs and rtt. v2/v3 responses complete
the row at once; v1 answer records are accumulated and the row is written when the
transaction is superseded, evicted or the file ends. Responses whose question was not logged
become rows of their own.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

import orjson

from hopguard.errors import SourceLocation
from hopguard.ingest.base import Format, IngestContext, Row, RowSink, iter_lines, register
from hopguard.ingest.values import iso_to_us, zeek_tcp_state

logger = logging.getLogger(__name__)

MAX_PENDING_DNS = 10_000  # DNS transactions waiting for their response (oldest written first)
MAX_SKIP_KINDS = 64  # distinct "eve <type>" skip counters; more become "eve other"

_I32 = (-(1 << 31), (1 << 31) - 1)
_I64 = (-(1 << 63), (1 << 63) - 1)
_PORT = (0, 65535)
_DNS_PORTS = frozenset({53, 853, 5353, 5355})

# TCP flag bits as Suricata prints them in hex (tcp.tcp_flags_ts / tcp_flags_tc), RFC 9293 3.1.
_FIN, _SYN, _RST = 0x01, 0x02, 0x04

# "http://...", "ftp://..." and the like: an absolute-form request target, RFC 9112 3.2.2,
# which only a forward proxy is sent.
_ABSOLUTE_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")

# The request headers Zeek lists in http.log's "proxied" (HTTP::proxy_headers), upper-cased.
_PROXY_HEADERS = frozenset({"FORWARDED", "X-FORWARDED-FOR", "X-FORWARDED-FROM", "CLIENT-IP",
                            "VIA", "XROXY-CONNECTION", "PROXY-CONNECTION"})

# Suricata's placeholders for "no application protocol identified".
_NO_SERVICE = frozenset({"failed", "unknown", ""})


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def eve_time(text: str) -> int:
    """Microseconds since the epoch from an EVE time (``2026-11-20T09:15:10.204000+0000``).

    Python 3.11's ``fromisoformat`` reads Suricata's layout as is, in C; this skips the
    general converter's string work, which was the largest single cost per line. Anything it
    does not read as a zoned time goes to ``iso_to_us`` (naive means UTC; its errors)."""
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        return iso_to_us(text)
    if dt.tzinfo is None:
        return iso_to_us(text)
    d = dt - _EPOCH
    return (d.days * 86_400 + d.seconds) * 1_000_000 + d.microseconds


class _BadRecord(Exception):
    """A record this reader cannot use; the message names what is missing."""


# -- typed field access ----------------------------------------------------------------------
# Each getter returns the value when it has the JSON type the column needs, None when it is
# absent or null, and otherwise records the field's name in ``bad`` and returns None.

def _str(d: dict[str, Any], key: str, bad: list[str], prefix: str = "") -> str | None:
    v = d.get(key)
    if v is None or isinstance(v, str):
        return v
    bad.append(prefix + key)
    return None


def _int(d: dict[str, Any], key: str, bad: list[str], prefix: str = "",
         bounds: tuple[int, int] = _I64) -> int | None:
    v = d.get(key)
    if v is None:
        return None
    if isinstance(v, int) and not isinstance(v, bool) and bounds[0] <= v <= bounds[1]:
        return v
    # Suricata < 4 wrote some numbers as text. isascii: "²".isdigit() holds, int("²") fails.
    if isinstance(v, str) and v.isascii() and v.isdigit():
        n = int(v)
        if bounds[0] <= n <= bounds[1]:
            return n
    bad.append(prefix + key)
    return None


def _strs(d: dict[str, Any], key: str, bad: list[str], prefix: str = "") -> list[str] | None:
    v = d.get(key)
    if v is None:
        return None
    if isinstance(v, list) and all(isinstance(x, str) for x in v):
        return v
    bad.append(prefix + key)
    return None


def _obj(d: dict[str, Any], key: str) -> dict[str, Any] | None:
    v = d.get(key)
    return v if isinstance(v, dict) else None


def _time(d: dict[str, Any], key: str, bad: list[str], prefix: str = "") -> int | None:
    v = d.get(key)
    if v is None:
        return None
    if isinstance(v, str):
        try:
            return eve_time(v)
        except (ValueError, OverflowError):
            pass
    bad.append(prefix + key)
    return None


def _hash(d: dict[str, Any], key: str, bad: list[str]) -> str | None:
    """``ja3`` / ``ja3s`` are objects {hash, string}; tolerate a bare hash string."""
    v = d.get(key)
    if v is None or isinstance(v, str):
        return v
    if isinstance(v, dict):
        return _str(v, "hash", bad, f"tls.{key}.")
    bad.append("tls." + key)
    return None


def _hexflags(v: object) -> int | None:
    if not isinstance(v, str):
        return None
    try:
        return int(v, 16)
    except ValueError:
        return None


# -- the row parts every event type shares ---------------------------------------------------

def _uid(obj: dict[str, Any]) -> str | None:
    fid = obj.get("flow_id")
    if isinstance(fid, int) and not isinstance(fid, bool):
        return f"F{fid}"
    if isinstance(fid, str) and fid:
        return "F" + fid
    return None


def _conn(obj: dict[str, Any], ts: int, lineno: int, bad: list[str]) -> Row:
    row: Row = {
        "ts": ts, "record": lineno, "uid": _uid(obj),
        "src_ip": _str(obj, "src_ip", bad), "src_port": _int(obj, "src_port", bad, "", _PORT),
        "dst_ip": _str(obj, "dest_ip", bad), "dst_port": _int(obj, "dest_port", bad, "", _PORT),
    }
    host = obj.get("host")
    if isinstance(host, str) and host:
        row["sensor"] = host  # the sink keeps a sensor the row already has
    return row


def _swap(row: Row) -> None:
    row["src_ip"], row["dst_ip"] = row["dst_ip"], row["src_ip"]
    row["src_port"], row["dst_port"] = row["dst_port"], row["src_port"]


def _proto(obj: dict[str, Any], bad: list[str]) -> str | None:
    p = _str(obj, "proto", bad)
    return p.lower() if p else None


# -- flow state ------------------------------------------------------------------------------

def conn_state(proto: str | None, flow: dict[str, Any], tcp: dict[str, Any] | None,
               pkts_toclient: int | None) -> str:
    """Zeek's conn_state (base/protocols/conn/main.zeek) from what an EVE flow record says.

    TCP, when ``tcp.tcp_flags_ts`` / ``tcp_flags_tc`` (flags seen per direction) are logged:

    - no SYN from the originator: RSTRH / SHR when the responder's SYN-ACK was followed by
      its RST / FIN, otherwise OTH (picked up mid-stream);
    - SYN but no SYN-ACK: REJ if the responder sent RST, RSTOS0 if the originator did, SH if the
      originator sent FIN, S0 if the responder sent nothing, otherwise OTH;
    - handshake seen: RSTO / RSTR if the originator / responder sent RST (originator first
      when both did), SF if both sent FIN, S2 / S3 if only the originator / responder did, S1
      otherwise (established, not closed when the flow was logged).

    TCP without flags falls back on ``flow.state``: ``new`` with nothing back -> S0,
    ``established`` -> S1, ``closed`` -> SF, else OTH. UDP: S0 with nothing back, SF with a
    reply (what Zeek writes for request/response UDP). Everything else: OTH. A bypassed flow
    (``flow.state`` bypassed / local_bypass / capture_bypass) is judged on the flags seen
    before the bypass; its ``flow.state`` says nothing about the end, so without flags: OTH.
    """
    state = flow.get("state")
    if not isinstance(state, str) or state in ("bypassed", "local_bypass", "capture_bypass"):
        state = ""  # bypassed: Suricata stopped counting; unknown: nothing to go on
    if proto == "tcp":
        ts = _hexflags(tcp.get("tcp_flags_ts")) if tcp is not None else None
        tc = _hexflags(tcp.get("tcp_flags_tc")) if tcp is not None else None
        if ts is None or tc is None:
            if state == "new" and pkts_toclient == 0:
                return "S0"
            return {"established": "S1", "closed": "SF"}.get(state, "OTH")
        return zeek_tcp_state(
            syn=bool(ts & _SYN), synack=bool(tc & _SYN), orig_fin=bool(ts & _FIN),
            orig_rst=bool(ts & _RST), resp_fin=bool(tc & _FIN), resp_rst=bool(tc & _RST),
            resp_silent=not tc and not pkts_toclient)
    if proto == "udp":
        if pkts_toclient == 0:
            return "S0"
        if pkts_toclient:
            return "SF"
    return "OTH"


# -- DNS pairing -----------------------------------------------------------------------------

@dataclass(slots=True)
class _DnsTx:
    rows: list[Row]
    query_ts: int | None  # None: built from a response, the question was not logged
    answered: bool = False


@dataclass(slots=True)
class _DnsPairingState:
    """Questions waiting for their response, keyed by (uid or endpoints, dns id), oldest first."""

    emit: Callable[[Row], None]
    pending: dict[tuple[str, int | None], _DnsTx] = field(default_factory=dict)

    def put(self, key: tuple[str, int | None], tx: _DnsTx) -> None:
        old = self.pending.pop(key, None)
        if old is not None:  # a retransmission, or v1 answers of an earlier transaction
            self.write(old)
        self.pending[key] = tx
        if len(self.pending) > MAX_PENDING_DNS:
            self.write(self.pending.pop(next(iter(self.pending))))

    def write(self, tx: _DnsTx) -> None:
        for row in tx.rows:
            self.emit(row)

    def flush(self) -> None:
        for tx in self.pending.values():
            self.write(tx)
        self.pending.clear()


def _dns_questions(d: dict[str, Any], bad: list[str]) -> list[tuple[str | None, str | None]]:
    queries = d.get("queries")
    if isinstance(queries, list):
        out = [(_str(q, "rrname", bad, "dns.queries[]."), _str(q, "rrtype", bad, "dns.queries[]."))
               for q in queries if isinstance(q, dict)]
        if out:
            return out
    if "rrname" in d or "rrtype" in d:
        return [(_str(d, "rrname", bad, "dns."), _str(d, "rrtype", bad, "dns."))]
    return []


def _dns_answers(d: dict[str, Any], bad: list[str]) -> tuple[list[str], list[float | None]]:
    """Answer data and TTLs: detailed ``answers[]`` first (it has TTLs), else ``grouped``,
    else a v1 answer record's own ``rdata``. Records without text rdata (SOA, SRV ... logged
    as objects) are left out."""
    answers: list[str] = []
    ttls: list[float | None] = []
    detailed = d.get("answers")
    if isinstance(detailed, list):
        for a in detailed:
            if isinstance(a, dict) and isinstance(a.get("rdata"), str):
                answers.append(a["rdata"])
                ttl = a.get("ttl")
                ttls.append(float(ttl) if isinstance(ttl, int) and not isinstance(ttl, bool)
                            else None)
        return answers, ttls
    grouped = d.get("grouped")
    if isinstance(grouped, dict):
        for values in grouped.values():
            if isinstance(values, list):
                for v in values:
                    if isinstance(v, str):
                        answers.append(v)
                        ttls.append(None)
        return answers, ttls
    rdata = d.get("rdata")
    if isinstance(rdata, str):
        answers.append(rdata)
        ttl = d.get("ttl")
        ttls.append(float(ttl) if isinstance(ttl, int) and not isinstance(ttl, bool) else None)
    elif rdata is not None:
        bad.append("dns.rdata")
    return answers, ttls


# -- the reader ------------------------------------------------------------------------------

Handler = Callable[[dict[str, Any], int, int, list[str]], None]


class _EveReaderState:
    """One pass over one EVE file."""

    def __init__(self, ctx: IngestContext, sink: RowSink) -> None:
        self.ctx, self.sink = ctx, sink
        self.path = str(ctx.path)
        self.dns = _DnsPairingState(emit=self._add_dns)
        self.handlers: dict[str, Handler] = {
            "flow": self._flow, "tls": self._tls, "http": self._http, "dns": self._dns,
            "alert": self._alert,
        }
        self._crash_logged = False

    def _add_dns(self, row: Row) -> None:
        self.sink.add("dns", row)

    def _where(self, lineno: int) -> SourceLocation:
        return SourceLocation(path=self.path, line=lineno)

    def run(self) -> None:
        sink, handlers, loads = self.sink, self.handlers, orjson.loads
        for lineno, line in iter_lines(self.ctx, sink):
            if not line or line.isspace():
                continue
            sink.record_seen()
            try:
                obj = loads(line)
            except orjson.JSONDecodeError as exc:
                sink.error(self._where(lineno), f"invalid JSON: {exc}")
                continue
            if not isinstance(obj, dict):
                sink.error(self._where(lineno), "expected a JSON object")
                continue
            et = obj.get("event_type")
            if not isinstance(et, str):
                sink.error(self._where(lineno), "missing event_type")
                continue
            handler = handlers.get(et)
            if handler is None:
                self._skip(et)
                continue
            stamp = obj.get("timestamp")
            try:
                if not isinstance(stamp, str):
                    raise _BadRecord("missing timestamp")
                try:
                    ts = eve_time(stamp)
                except (ValueError, OverflowError):
                    raise _BadRecord(f"bad timestamp {stamp[:40]!r}") from None
                bad: list[str] = []
                handler(obj, ts, lineno, bad)
            except _BadRecord as exc:
                sink.error(self._where(lineno), f"eve {et}: {exc}")
                continue
            except (TypeError, ValueError, KeyError, AttributeError, OverflowError) as exc:
                # A shape of record this reader did not foresee: report it like bad input and
                # go on (house rule: parsers do not raise for records), but log it for a fix.
                if not self._crash_logged:
                    logger.warning("eve reader failed on %s:%d", self.path, lineno,
                                   exc_info=True)
                    self._crash_logged = True
                sink.error(self._where(lineno), f"eve {et}: unusable record ({exc})")
                continue
            if bad:
                sink.error(self._where(lineno),
                           f"eve {et}: wrong type for {', '.join(bad)} (stored as NULL)")
        self.dns.flush()

    def _skip(self, et: str) -> None:
        what = f"eve {et[:40]}"
        skipped = self.sink.stats.skipped
        if what not in skipped and len(skipped) >= MAX_SKIP_KINDS:
            what = "eve other"
        self.sink.skip(what)

    # -- flow: one row per flow record -------------------------------------------------------

    def _flow(self, obj: dict[str, Any], ts: int, lineno: int, bad: list[str]) -> None:
        f = _obj(obj, "flow")
        if f is None:
            raise _BadRecord("missing flow object")
        start = _time(f, "start", bad, "flow.")
        if start is None:
            raise _BadRecord("missing or bad flow.start")
        end = _time(f, "end", bad, "flow.")
        row = _conn(obj, start, lineno, bad)
        if row["src_ip"] is None or row["dst_ip"] is None:
            raise _BadRecord("missing src_ip or dest_ip")
        proto = _proto(obj, bad)
        app = _str(obj, "app_proto", bad)
        orig = _str(obj, "app_proto_orig", bad)  # e.g. http, before CONNECT turned into tls
        services = [s for s in (orig, app) if s is not None and s not in _NO_SERVICE]
        pkts_tc = _int(f, "pkts_toclient", bad, "flow.")
        row["proto"] = proto
        row["service"] = ",".join(dict.fromkeys(services)) or None
        row["duration"] = (end - start) / 1e6 if end is not None and end >= start else None
        # EVE counts whole packets (IP and transport headers included), not payload as Zeek's
        # orig_bytes does: see docs/formats/eve.md.
        row["src_bytes"] = _int(f, "bytes_toserver", bad, "flow.")
        row["dst_bytes"] = _int(f, "bytes_toclient", bad, "flow.")
        row["src_pkts"] = _int(f, "pkts_toserver", bad, "flow.")
        row["dst_pkts"] = pkts_tc
        row["state"] = conn_state(proto, f, _obj(obj, "tcp"), pkts_tc)
        row["community_id"] = _str(obj, "community_id", bad)
        self.sink.add("flow", row)

    # -- tls: one row per handshake ----------------------------------------------------------

    def _tls(self, obj: dict[str, Any], ts: int, lineno: int, bad: list[str]) -> None:
        t = _obj(obj, "tls")
        if t is None:
            raise _BadRecord("missing tls object")
        row = _conn(obj, ts, lineno, bad)
        row["version"] = _str(t, "version", bad, "tls.")
        row["sni"] = _str(t, "sni", bad, "tls.")
        row["ja3"] = _hash(t, "ja3", bad)
        row["ja3s"] = _hash(t, "ja3s", bad)
        row["ja4"] = _str(t, "ja4", bad, "tls.")
        row["ja4s"] = _str(t, "ja4s", bad, "tls.")  # Suricata does not compute it; pass through
        # Zeek's column holds the negotiated protocol: prefer the server's choice, else what
        # the client offered.
        row["alpn"] = (_strs(t, "server_alpns", bad, "tls.")
                       or _strs(t, "client_alpns", bad, "tls."))
        if t.get("session_resumed") is True:
            row["resumed"] = True
        row["cert_subject"] = _str(t, "subject", bad, "tls.")
        row["cert_issuer"] = _str(t, "issuerdn", bad, "tls.")
        # tls.fingerprint is the SHA-1 of the server certificate: kept, labelled, in
        # cert_fuids; cert_sha256 only from the certificate itself when it is logged.
        sha1 = _str(t, "fingerprint", bad, "tls.")
        if sha1:
            row["cert_fuids"] = ["sha1:" + sha1]
        pem = t.get("certificate")
        if isinstance(pem, str) and pem:
            try:
                row["cert_sha256"] = hashlib.sha256(base64.b64decode(pem, validate=True)) \
                    .hexdigest()
            except (binascii.Error, ValueError):
                bad.append("tls.certificate")
        row["cert_not_before"] = _time(t, "notbefore", bad, "tls.")
        row["cert_not_after"] = _time(t, "notafter", bad, "tls.")
        self.sink.add("tls", row)

    # -- http: one row per request -----------------------------------------------------------

    def _http(self, obj: dict[str, Any], ts: int, lineno: int, bad: list[str]) -> None:
        h = _obj(obj, "http")
        if h is None:
            raise _BadRecord("missing http object")
        row = _conn(obj, ts, lineno, bad)
        method = _str(h, "http_method", bad, "http.")
        url = _str(h, "url", bad, "http.")
        tx_id = _int(obj, "tx_id", bad, "", (0, _I32[1] - 1))
        row["trans_depth"] = tx_id + 1 if tx_id is not None else None  # Zeek counts from 1
        row["method"] = method
        row["host"] = _str(h, "hostname", bad, "http.")
        row["uri"] = url
        row["version"] = _str(h, "protocol", bad, "http.")
        row["user_agent"] = _str(h, "http_user_agent", bad, "http.")
        row["referrer"] = _str(h, "http_refer", bad, "http.")
        row["status"] = _int(h, "status", bad, "http.", _I32)
        row["response_body_len"] = _int(h, "length", bad, "http.")
        row["content_type"] = _str(h, "http_content_type", bad, "http.")
        row["is_proxy_request"] = method == "CONNECT" or bool(url and _ABSOLUTE_URI.match(url))
        proxied: list[str] = []
        headers = h.get("request_headers")  # only with dump-all-headers / custom headers
        if isinstance(headers, list):
            for hd in headers:
                if not isinstance(hd, dict):
                    continue
                name, value = hd.get("name"), hd.get("value")
                if not isinstance(name, str) or not isinstance(value, str):
                    continue
                upper = name.upper()
                if upper in _PROXY_HEADERS:
                    proxied.append(f"{upper} -> {value}")
                    col = {"VIA": "via", "FORWARDED": "forwarded",
                           "X-FORWARDED-FOR": "x_forwarded_for"}.get(upper)
                    if col is not None and row.get(col) is None:
                        row[col] = value
        xff = _str(h, "xff", bad, "http.")  # the xff option's extra-data mode
        if xff and row.get("x_forwarded_for") is None:
            row["x_forwarded_for"] = xff
        row["proxied"] = proxied or None
        self.sink.add("http", row)

    # -- dns: one row per question, answers attached ------------------------------------------

    def _dns(self, obj: dict[str, Any], ts: int, lineno: int, bad: list[str]) -> None:
        d = _obj(obj, "dns")
        if d is None:
            raise _BadRecord("missing dns object")
        kind = d.get("type")
        if kind in ("query", "request"):
            is_query = True
        elif kind in ("answer", "response"):
            is_query = False
        else:
            raise _BadRecord(f"dns.type is {str(kind)[:20]!r}, not query/request/answer/response")
        trans_id = _int(d, "id", bad, "dns.", _PORT)
        conn = _conn(obj, ts, lineno, bad)
        uid = conn["uid"]
        if uid is None:
            # No flow_id: pair on the endpoints instead, in a direction-free order.
            uid = "|".join(sorted((f"{conn['src_ip']}:{conn['src_port']}",
                                   f"{conn['dst_ip']}:{conn['dst_port']}")))
        key = (uid, trans_id)
        questions = _dns_questions(d, bad)
        proto = _proto(obj, bad)

        def rows() -> list[Row]:
            out = []
            for qname, qtype in questions or [(None, None)]:
                r = dict(conn)
                r.update(proto=proto, trans_id=trans_id, query=qname, qtype=qtype)
                out.append(r)
            return out

        if is_query:
            if not questions:
                raise _BadRecord("query without rrname or queries[]")
            self.dns.put(key, _DnsTx(rows(), ts))
            return

        rcode = _str(d, "rcode", bad, "dns.")
        answers, ttls = _dns_answers(d, bad)
        # v1 writes one event per answer record: keep gathering until the transaction ends.
        v1 = "version" not in d and "answers" not in d and "grouped" not in d \
            and "queries" not in d
        tx = self.dns.pending.get(key)
        if tx is None or (tx.answered and not v1):
            if conn["src_port"] in _DNS_PORTS and conn["dst_port"] not in _DNS_PORTS:
                _swap(conn)  # logged in the response's direction: orient to the client
            tx = _DnsTx(rows(), None)
            self.dns.put(key, tx)
        for r in tx.rows:
            if rcode is not None:
                r["rcode"] = rcode
            if answers:
                r["answers"] = [*(r.get("answers") or ()), *answers]
                r["ttls"] = [*(r.get("ttls") or ()), *ttls]
            if tx.query_ts is not None and r.get("rtt") is None:
                r["rtt"] = max(0.0, (ts - tx.query_ts) / 1e6)
        tx.answered = True
        if not v1:
            del self.dns.pending[key]
            self.dns.write(tx)

    # -- alert: one row per alert ------------------------------------------------------------

    def _alert(self, obj: dict[str, Any], ts: int, lineno: int, bad: list[str]) -> None:
        a = _obj(obj, "alert")
        if a is None:
            raise _BadRecord("missing alert object")
        sid = _int(a, "signature_id", bad, "alert.")
        if sid is None:
            raise _BadRecord("missing alert.signature_id")
        row = _conn(obj, ts, lineno, bad)
        f = _obj(obj, "flow")
        if f is not None and isinstance(f.get("src_ip"), str) and isinstance(f.get("dest_ip"), str):
            # Suricata 7+: the flow's own orientation, so alert and flow rows agree.
            row["src_ip"], row["dst_ip"] = f["src_ip"], f["dest_ip"]
            row["src_port"] = _int(f, "src_port", bad, "flow.", _PORT)
            row["dst_port"] = _int(f, "dest_port", bad, "flow.", _PORT)
        elif obj.get("direction") == "to_client":
            _swap(row)
        row["proto"] = _proto(obj, bad)
        row["app_proto"] = _str(obj, "app_proto", bad)
        row["action"] = _str(a, "action", bad, "alert.")
        row["gid"] = _int(a, "gid", bad, "alert.")
        row["signature_id"] = sid
        row["rev"] = _int(a, "rev", bad, "alert.")
        row["signature"] = _str(a, "signature", bad, "alert.")
        row["category"] = _str(a, "category", bad, "alert.")
        row["severity"] = _int(a, "severity", bad, "alert.", _I32)
        self.sink.add("alert", row)


def _first_object(head: bytes) -> dict[str, Any] | None:
    """The first line of ``head`` that decodes to a JSON object (looking at up to 5 lines)."""
    for line in head.split(b"\n", 5)[:5]:
        if not line.strip():
            continue
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if isinstance(obj, dict):
            return obj
    return None


@register
class EveFormat(Format):
    name: ClassVar[str] = "eve"
    description: ClassVar[str] = "Suricata EVE JSON lines (flow, tls, http, dns, alert)"
    tables: ClassVar[tuple[str, ...]] = ("flow", "tls", "http", "dns", "alert")

    @classmethod
    def sniff(cls, head: bytes, path: Path) -> bool:
        if not head.lstrip().startswith(b"{"):
            return False
        obj = _first_object(head)
        if obj is None:
            # A first record longer than the sniffed head: look for the two keys in its text.
            first = head.lstrip().split(b"\n", 1)[0]
            return b'"event_type"' in first and b'"timestamp"' in first
        return isinstance(obj.get("event_type"), str) and isinstance(obj.get("timestamp"), str)

    def read(self, ctx: IngestContext, sink: RowSink) -> None:
        _EveReaderState(ctx, sink).run()
