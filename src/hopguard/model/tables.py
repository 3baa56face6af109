"""Declared columns of every stored table.

Each column has a name, an Arrow type, the DuckDB type derived from it, its ECS field name for
exports (empty when ECS has none) and a one-line description used by docs and ``hopguard sql``
users. Every row of every table carries ``ts`` (UTC, microseconds), ``sensor`` and the provenance
pair ``file_id`` + ``record`` (the line number, record id or byte offset the row came from), so
evidence can always be traced back to the raw input.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

TS = pa.timestamp("us")  # naive, always UTC (no time-zone extension needed)
STR = pa.string()
I64 = pa.int64()
I32 = pa.int32()
F64 = pa.float64()
BOOL = pa.bool_()
STRS = pa.list_(pa.string())
F64S = pa.list_(pa.float64())
TSS = pa.list_(TS)


@dataclass(frozen=True, slots=True, kw_only=True)
class Column:
    name: str
    type: pa.DataType
    ecs: str = ""
    doc: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Table:
    name: str
    doc: str
    columns: tuple[Column, ...]

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    def column(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(name)


def _c(name: str, typ: pa.DataType, ecs: str = "", doc: str = "") -> Column:
    return Column(name=name, type=typ, ecs=ecs, doc=doc)


_COMMON = (
    _c("ts", TS, "@timestamp", "when the event happened (UTC)"),
    _c("sensor", STR, "observer.name", "where it was observed"),
    _c("file_id", I64, "", "source_file.id of the input the row came from"),
    _c("record", I64, "log.offset", "line number, record id or byte offset within that input"),
)
_CONN = (
    _c("uid", STR, "zeek.session_id", "one id per connection, shared by all its rows"),
    _c("src_ip", STR, "source.ip"),
    _c("src_port", I32, "source.port"),
    _c("dst_ip", STR, "destination.ip"),
    _c("dst_port", I32, "destination.port"),
)
_HOST = (
    _c("host", STR, "host.name", "the endpoint that logged the event"),
    _c("platform", STR, "host.os.type", "windows, linux, macos or esxi"),
)

TABLES: dict[str, Table] = {}


def _table(name: str, doc: str, *cols: Column) -> None:
    TABLES[name] = Table(name=name, doc=doc, columns=(*_COMMON, *cols))


_table(
    "flow", "one row per connection (Zeek conn, EVE flow, packet engine, NetFlow)",
    *_CONN,
    _c("proto", STR, "network.transport", "tcp, udp, icmp ..."),
    _c("service", STR, "network.protocol", "application protocol(s) detected"),
    _c("duration", F64, "event.duration", "seconds"),
    _c("src_bytes", I64, "source.bytes",
       "bytes sent by the originator: payload (Zeek) or whole packets (Suricata EVE)"),
    _c("dst_bytes", I64, "destination.bytes",
       "bytes sent by the responder: payload (Zeek) or whole packets (Suricata EVE)"),
    _c("src_pkts", I64, "source.packets"),
    _c("dst_pkts", I64, "destination.packets"),
    _c("src_ip_bytes", I64, "", "IP-level bytes sent by the originator (Zeek orig_ip_bytes)"),
    _c("dst_ip_bytes", I64, "", "IP-level bytes sent by the responder (Zeek resp_ip_bytes)"),
    _c("src_frame_bytes", I64, "",
       "captured bytes of the originator's whole frames, link and tunnel headers included "
       "(packet engine; what nDPI counts)"),
    _c("dst_frame_bytes", I64, "", "the same for the responder"),
    _c("state", STR, "zeek.connection.state", "Zeek conn_state vocabulary (S0, SF, REJ ...)"),
    _c("history", STR, "zeek.connection.history"),
    _c("local_orig", BOOL, ""),
    _c("local_resp", BOOL, ""),
    _c("community_id", STR, "network.community_id"),
    _c("tunnel_parents", STRS, "", "uids of enclosing tunnels"),
    _c("tunnel", STR, "",
       "encapsulation the packets came in (packet engine; the innermost when nested): GRE, "
       "VXLAN, Geneve, GTPv1, Teredo, AYIYA, IP"),
    _c("src_bursts", TSS, "", "activity sketch: burst start times after idle gaps, originator"),
    _c("dst_bursts", TSS, "", "activity sketch: burst start times after idle gaps, responder"),
)
_table(
    "tls", "one row per TLS handshake",
    *_CONN,
    _c("version", STR, "tls.version"),
    _c("cipher", STR, "tls.cipher"),
    _c("sni", STR, "tls.client.server_name"),
    _c("alpn", STRS, "tls.next_protocol", "negotiated (Zeek) or offered (hello) ALPN values"),
    _c("ja3", STR, "tls.client.ja3"),
    _c("ja3s", STR, "tls.server.ja3s"),
    _c("ja4", STR, "tls.client.ja4"),
    _c("ja4s", STR, "tls.server.ja4s", "only where a sensor log already carries it"),
    _c("resumed", BOOL, "tls.resumed"),
    _c("established", BOOL, "tls.established"),
    _c("cert_subject", STR, "tls.server.subject"),
    _c("cert_issuer", STR, "tls.server.issuer"),
    _c("cert_sha256", STR, "tls.server.hash.sha256"),
    _c("cert_fuids", STRS, "", "Zeek file ids / fingerprints of the server chain"),
    _c("cert_not_before", TS, "tls.server.not_before"),
    _c("cert_not_after", TS, "tls.server.not_after"),
    _c("validation_status", STR, ""),
)
_table(
    "x509", "one row per certificate seen (Zeek x509.log, packet engine)",
    _c("fingerprint", STR, "x509.hash.sha256", "fingerprint or Zeek file id"),
    _c("version", I32, "x509.version_number"),
    _c("serial", STR, "x509.serial_number"),
    _c("subject", STR, "x509.subject.distinguished_name"),
    _c("issuer", STR, "x509.issuer.distinguished_name"),
    _c("not_before", TS, "x509.not_before"),
    _c("not_after", TS, "x509.not_after"),
    _c("key_alg", STR, "x509.public_key_algorithm"),
    _c("key_length", I32, "x509.public_key_size"),
    _c("sig_alg", STR, "x509.signature_algorithm"),
    _c("san_dns", STRS, "x509.alternative_names"),
    _c("san_ip", STRS, ""),
    _c("is_ca", BOOL, ""),
    _c("host_cert", BOOL, ""),
    _c("client_cert", BOOL, ""),
)
_table(
    "http", "one row per HTTP request",
    *_CONN,
    _c("trans_depth", I32, ""),
    _c("method", STR, "http.request.method"),
    _c("host", STR, "url.domain"),
    _c("uri", STR, "url.original"),
    _c("version", STR, "http.version"),
    _c("user_agent", STR, "user_agent.original"),
    _c("referrer", STR, "http.request.referrer"),
    _c("status", I32, "http.response.status_code"),
    _c("status_msg", STR, ""),
    _c("request_body_len", I64, "http.request.body.bytes"),
    _c("response_body_len", I64, "http.response.body.bytes"),
    _c("content_type", STR, "http.response.mime_type"),
    _c("is_proxy_request", BOOL, "", "CONNECT or an absolute-URI request"),
    _c("via", STR, ""),
    _c("forwarded", STR, ""),
    _c("x_forwarded_for", STR, ""),
    _c("proxied", STRS, "", "proxy-related headers as Zeek's http.log lists them"),
)
_table(
    "proxy", "one row per proxy handshake seen on the wire",
    *_CONN,
    _c("protocol", STR, "", "socks4, socks4a, socks5, http-connect, http-forward"),
    _c("target_host", STR, "", "the inner destination as a name"),
    _c("target_ip", STR, "", "the inner destination as an address"),
    _c("target_port", I32, ""),
    _c("auth_method", STR, ""),
    _c("user", STR, "user.name"),
    _c("outcome", STR, "event.outcome", "the proxy's reply (succeeded, or the refusal)"),
    _c("bound_host", STR, ""),
    _c("bound_port", I32, ""),
)
_table(
    "dns", "one row per DNS query (network) or per process DNS lookup (Sysmon EID 22)",
    *_CONN,
    _c("proto", STR, "network.transport"),
    _c("trans_id", I32, "dns.id"),
    _c("query", STR, "dns.question.name"),
    _c("qclass", STR, "dns.question.class"),
    _c("qtype", STR, "dns.question.type"),
    _c("rcode", STR, "dns.response_code"),
    _c("answers", STRS, "dns.answers.data"),
    _c("ttls", F64S, "dns.answers.ttl"),
    _c("rtt", F64, ""),
    *_HOST,
    _c("pid", I64, "process.pid"),
    _c("image", STR, "process.executable"),
)
_table(
    "ssh", "one row per SSH connection (Zeek ssh.log)",
    *_CONN,
    _c("version", I32, ""),
    _c("auth_success", BOOL, ""),
    _c("auth_attempts", I32, ""),
    _c("direction", STR, "network.direction"),
    _c("client", STR, "", "client identification string"),
    _c("server", STR, "", "server identification string"),
    _c("cipher_alg", STR, ""),
    _c("kex_alg", STR, ""),
    _c("host_key_alg", STR, ""),
    _c("host_key", STR, ""),
    _c("hassh", STR, ""),
    _c("hassh_server", STR, ""),
)
_table(
    "tunnel", "one row per tunnel event (Zeek tunnel.log)",
    *_CONN,
    _c("tunnel_type", STR, "", "Tunnel::SOCKS, Tunnel::HTTP, Tunnel::IP, Tunnel::GRE ..."),
    _c("action", STR, "event.action", "Tunnel::DISCOVER, Tunnel::CLOSE ..."),
)
_table(
    "alert", "one row per IDS alert (Suricata EVE alert, hopguard IPS)",
    *_CONN,
    _c("proto", STR, "network.transport"),
    _c("app_proto", STR, "network.protocol"),
    _c("action", STR, "event.action", "allowed or blocked"),
    _c("gid", I64, ""),
    _c("signature_id", I64, "rule.id"),
    _c("rev", I64, "rule.version"),
    _c("signature", STR, "rule.name"),
    _c("category", STR, "rule.category"),
    _c("severity", I32, "event.severity"),
)
_table(
    "process", "one row per process start",
    *_HOST,
    _c("pid", I64, "process.pid"),
    _c("ppid", I64, "process.parent.pid"),
    _c("image", STR, "process.executable"),
    _c("command_line", STR, "process.command_line"),
    _c("user", STR, "user.name"),
    _c("parent_image", STR, "process.parent.executable"),
    _c("parent_command_line", STR, "process.parent.command_line"),
    _c("cwd", STR, "process.working_directory"),
    _c("process_guid", STR, "process.entity_id"),
    _c("parent_guid", STR, "process.parent.entity_id"),
    _c("source", STR, "event.module", "sysmon, security, auditd, macos, esxi"),
    _c("event_code", STR, "event.code", "the source's event id (1, 4688, EXECVE ...)"),
)
_table(
    "netconn", "one row per endpoint connection event",
    *_HOST,
    _c("pid", I64, "process.pid"),
    _c("ppid", I64, "process.parent.pid", "the parent's pid where the source logs it (auditd)"),
    _c("image", STR, "process.executable"),
    _c("user", STR, "user.name"),
    _c("direction", STR, "network.direction", "inbound, outbound or listen"),
    _c("proto", STR, "network.transport"),
    _c("src_ip", STR, "source.ip"),
    _c("src_port", I32, "source.port"),
    _c("dst_ip", STR, "destination.ip"),
    _c("dst_port", I32, "destination.port"),
    _c("dst_host", STR, "destination.domain"),
    _c("process_guid", STR, "process.entity_id"),
    _c("source", STR, "event.module"),
    _c("event_code", STR, "event.code"),
)
_table(
    "config_change", "one row per change to proxy, forwarding or firewall configuration",
    *_HOST,
    _c("source", STR, "event.module",
       "registry, netsh, nft, iptables, sysctl, sshd_config, device cli, firewall log ..."),
    _c("action", STR, "event.action", "add, delete, set, snapshot ..."),
    _c("object", STR, "", "what was changed (registry key, nft chain, sysctl name ...)"),
    _c("detail", STR, "", "the new value or the rule text"),
    _c("user", STR, "user.name"),
    _c("pid", I64, "process.pid"),
    _c("image", STR, "process.executable"),
    _c("event_code", STR, "event.code"),
)
_table(
    "indicator", "one threat-intel indicator per (feed, kind, value, match) (intel/; re-importing "
    "a feed updates its rows); ts is when the row was last imported, record the feed line",
    _c("id", STR, "threat.indicator.id", "stable hash of feed, kind, value and match"),
    _c("feed", STR, "threat.feed.name", "the feed it came from (hopguard intel import --name)"),
    _c("kind", STR, "threat.indicator.type", "ip, domain, url, ja3, ja3s or ja4"),
    _c("value", STR, "", "canonical value: an address or network (a.b.c.d/n), a lower-case "
       "domain, a URL, or a lower-case fingerprint"),
    _c("prefix", I32, "", "network prefix length of an ip indicator (32 or 128: one address)"),
    _c("match", STR, "", "domains: exact, suffix (the name and below) or subdomains (*.name, "
       "below only); everything else exact"),
    _c("category", STR, "threat.indicator.description", "tor_relay, tor_exit, vpn, proxy, "
       "tunnel, cdn, c2 or ioc"),
    _c("label", STR, "threat.indicator.name", "what the feed calls it (relay nickname, service, "
       "malware family, tool)"),
    _c("confidence", F64, "threat.indicator.confidence", "0.0-1.0, from the feed or the import"),
    _c("source", STR, "threat.indicator.provider", "who published it: a URL, a publisher or a "
       "file"),
    _c("first_seen", TS, "threat.indicator.first_seen"),
    _c("last_seen", TS, "threat.indicator.last_seen"),
    _c("expires", TS, "", "after this the indicator no longer matches newer events (NULL: never)"),
    _c("detail", STR, "", "feed-specific facts (Tor flags and ports, STIX id, MISP event)"),
)
_table(
    "finding", "detector output (the findings contract in ARCHITECTURE.md)",
    _c("id", STR, "event.id"),
    _c("detector", STR, "rule.ruleset"),
    _c("title", STR, "rule.name"),
    _c("technique", STR, "threat.technique.id"),
    _c("strategy", STR, ""),
    _c("severity", STR, "event.severity"),
    _c("confidence", F64, ""),
    _c("first_seen", TS, "event.start"),
    _c("last_seen", TS, "event.end"),
    _c("entities", STR, "", "JSON object"),
    _c("evidence", STR, "", "JSON list of {table, uid or event id, summary}"),
    _c("explanation", STR, "message"),
    _c("mitigation", STR, "", "JSON object: M-ids and concrete actions"),
    _c("sanctioned", BOOL, ""),
    _c("hosts", STRS, "related.ip", "every address the finding involves"),
    _c("incident", STR, "", "incident.id this finding belongs to (correlate/)"),
)
_table(
    "incident", "findings grouped per host or per chain, with a risk score (correlate/)",
    _c("id", STR, "event.id"),
    _c("title", STR, "message"),
    _c("kind", STR, "", "host (findings about one host) or chain (findings along one path)"),
    _c("key", STR, "", "the host address, or the chain as 'a > b > c'"),
    _c("risk", F64, "event.risk_score", "0-100: the strongest finding, raised by corroboration"),
    _c("severity", STR, "event.severity"),
    _c("first_seen", TS, "event.start"),
    _c("last_seen", TS, "event.end"),
    _c("hosts", STRS, "related.ip"),
    _c("techniques", STRS, "threat.technique.id"),
    _c("findings", STRS, "", "finding ids, strongest first"),
    _c("sanctioned", BOOL, "", "every finding in it is about declared infrastructure"),
    _c("host_names", STRS, "related.hosts", "endpoint names involved (from endpoint findings)"),
    _c("tools", STRS, "", "proxy and tunnel tools named by endpoint findings"),
    _c("processes", STRS, "", "the processes: image, pid and user"),
    _c("users", STRS, "related.user"),
    _c("changes", STRS, "", "configuration changes (port forwards, NAT, proxy settings)"),
    _c("legs", STRS, "", "network legs: client > relay:port > upstream:port"),
)


def table(name: str) -> Table:
    try:
        return TABLES[name]
    except KeyError:
        raise KeyError(f"unknown table {name!r}; tables: {', '.join(TABLES)}") from None


def arrow_schema(name: str) -> pa.Schema:
    return pa.schema([pa.field(c.name, c.type) for c in table(name).columns])


def markdown() -> str:
    """Every table and column as Markdown (docs/formats.md embeds this; a test keeps it equal)."""
    from hopguard.store.db import duck_type

    parts = []
    for t in TABLES.values():
        parts.append(f"### `{t.name}`: {t.doc}\n\n| column | type | ECS | meaning |\n"
                     "|---|---|---|---|\n")
        parts.append("".join(f"| {c.name} | {duck_type(c.type)} | {c.ecs} | {c.doc} |\n"
                             for c in t.columns))
        parts.append("\n")
    return "".join(parts).rstrip() + "\n"
