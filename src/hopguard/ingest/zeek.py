"""Zeek logs: conn, ssl, http, dns, socks, x509, tunnel and ssh, as TSV or JSON lines.

Theory of operation. Every supported log kind has a *mapping*: for each Zeek field we use, the
Zeek type it has (``#types`` in TSV wins over ours) and a SQL expression that turns the staged
field into one of our columns. A file is read in two steps:

1. *Staging*: a relation with one column per Zeek field, in a normal form (time and interval as
   DOUBLE seconds, count/int/port as BIGINT, bool as BOOLEAN, sets and vectors as VARCHAR[],
   everything else VARCHAR with Zeek's escapes undone and the empty marker turned into '').
2. *Mapping*: one ``INSERT INTO <table> SELECT <mapping> FROM staging`` per batch. Since the
   mapping SQL is the same whichever way staging was built, both readers store identical rows.

Staging is built in one of two ways. The *fast path* (clean TSV, plain or gzip) hands the whole
file to DuckDB's CSV reader with the header's types; it is several times faster than Python. If
DuckDB rejects any data line (a cast error, a short line, bad UTF-8) or fails (damaged gzip), the
file's rows are deleted inside the still-open transaction and the *line path* reads it again in
Python: it locates every damaged line, keeps records whose fields only have bad values (those
fields become NULL and are reported), and skips structurally broken lines. JSON logs always use
the line path. The ASCII writer's format: zeek/src/logging/writers/ascii/Ascii.cc; escapes are
``\\xHH`` for unprintable bytes and for separators inside values.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import duckdb
import orjson
import pyarrow as pa

from hopguard.errors import SourceLocation
from hopguard.ingest.base import (
    Format,
    IngestContext,
    RetryWithoutFastPath,
    RowSink,
    iter_lines,
    parse_json_object,
    register,
)
from hopguard.ingest.values import iso_to_us

logger = logging.getLogger(__name__)


# -- mappings -----------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class LogKind:
    path: str  # Zeek's #path
    table: str
    fields: dict[str, str]  # zeek field -> zeek type we expect (TSV headers may say otherwise)
    columns: dict[str, str]  # our column -> SQL over staged fields (quoted as "field")


def _q(field: str) -> str:
    return '"' + field.replace('"', '""') + '"'


_CONN_FIELDS = {"ts": "time", "uid": "string", "id.orig_h": "addr", "id.orig_p": "port",
                "id.resp_h": "addr", "id.resp_p": "port"}
_CONN_COLS = {
    "ts": "make_timestamp(CAST(round(\"ts\" * 1000000) AS BIGINT))",
    "uid": '"uid"',
    "src_ip": '"id.orig_h"', "src_port": '"id.orig_p"',
    "dst_ip": '"id.resp_h"', "dst_port": '"id.resp_p"',
}


def _first_proxied(header: str) -> str:
    # Zeek's http.log "proxied" set holds entries "HEADER-NAME -> value".
    prefix = header.upper() + " -> "
    return (f"list_extract(list_transform(list_filter(\"proxied\", lambda x: starts_with(upper(x), "
            f"'{prefix}')), lambda x: x[{len(prefix) + 1}:]), 1)")


KINDS: dict[str, LogKind] = {k.path: k for k in (
    LogKind("conn", "flow", {
        **_CONN_FIELDS, "proto": "enum", "service": "string", "duration": "interval",
        "orig_bytes": "count", "resp_bytes": "count", "conn_state": "string",
        "local_orig": "bool", "local_resp": "bool", "history": "string", "orig_pkts": "count",
        "resp_pkts": "count", "tunnel_parents": "set[string]", "community_id": "string"}, {
        **_CONN_COLS, "proto": '"proto"', "service": '"service"', "duration": '"duration"',
        "src_bytes": '"orig_bytes"', "dst_bytes": '"resp_bytes"', "src_pkts": '"orig_pkts"',
        "dst_pkts": '"resp_pkts"', "state": '"conn_state"', "history": '"history"',
        "local_orig": '"local_orig"', "local_resp": '"local_resp"',
        "community_id": '"community_id"', "tunnel_parents": '"tunnel_parents"'}),
    LogKind("ssl", "tls", {
        **_CONN_FIELDS, "version": "string", "cipher": "string", "server_name": "string",
        "resumed": "bool", "next_protocol": "string", "established": "bool",
        "curve": "string", "last_alert": "string", "subject": "string", "issuer": "string",
        "cert_chain_fuids": "vector[string]",
        "cert_chain_fps": "vector[string]", "validation_status": "string", "ja3": "string",
        "ja3s": "string", "ja4": "string", "ja4s": "string"}, {
        **_CONN_COLS, "version": '"version"', "cipher": '"cipher"', "sni": '"server_name"',
        "alpn": "CASE WHEN \"next_protocol\" IS NULL THEN NULL ELSE [\"next_protocol\"] END",
        "resumed": '"resumed"', "established": '"established"', "cert_subject": '"subject"',
        "cert_issuer": '"issuer"', "cert_fuids": 'coalesce("cert_chain_fps", "cert_chain_fuids")',
        "validation_status": '"validation_status"', "ja3": '"ja3"', "ja3s": '"ja3s"',
        "ja4": '"ja4"', "ja4s": '"ja4s"'}),
    LogKind("http", "http", {
        **_CONN_FIELDS, "trans_depth": "count", "method": "string", "host": "string",
        "uri": "string", "referrer": "string", "version": "string", "user_agent": "string",
        "request_body_len": "count", "response_body_len": "count", "status_code": "count",
        "status_msg": "string", "resp_mime_types": "vector[string]", "proxied": "set[string]"}, {
        **_CONN_COLS, "trans_depth": '"trans_depth"', "method": '"method"', "host": '"host"',
        "uri": '"uri"', "version": '"version"', "user_agent": '"user_agent"',
        "referrer": '"referrer"', "status": '"status_code"', "status_msg": '"status_msg"',
        "request_body_len": '"request_body_len"', "response_body_len": '"response_body_len"',
        "content_type": 'list_extract("resp_mime_types", 1)',
        "is_proxy_request": "coalesce(\"method\" = 'CONNECT' OR "
                            "regexp_matches(\"uri\", '^[A-Za-z][A-Za-z0-9+.-]*://'), false)",
        "via": _first_proxied("VIA"), "forwarded": _first_proxied("FORWARDED"),
        "x_forwarded_for": _first_proxied("X-FORWARDED-FOR"), "proxied": '"proxied"'}),
    LogKind("dns", "dns", {
        **_CONN_FIELDS, "proto": "enum", "trans_id": "count", "rtt": "interval",
        "query": "string", "qclass_name": "string", "qtype_name": "string",
        "rcode_name": "string", "answers": "vector[string]", "TTLs": "vector[interval]"}, {
        **_CONN_COLS, "proto": '"proto"', "trans_id": '"trans_id"', "rtt": '"rtt"',
        "query": '"query"', "qclass": '"qclass_name"', "qtype": '"qtype_name"',
        "rcode": '"rcode_name"', "answers": '"answers"',
        "ttls": 'list_transform("TTLs", lambda x: TRY_CAST(x AS DOUBLE))'}),
    LogKind("socks", "proxy", {
        **_CONN_FIELDS, "version": "count", "user": "string", "password": "string",
        "status": "string", "request.host": "addr", "request.name": "string",
        "request_p": "port", "bound.host": "addr", "bound.name": "string", "bound_p": "port"}, {
        **_CONN_COLS,
        "protocol": "CASE WHEN \"version\" = 4 AND \"request.name\" IS NOT NULL THEN 'socks4a' "
                    "WHEN \"version\" IN (4, 5) THEN 'socks' || \"version\" END",
        "target_host": '"request.name"', "target_ip": '"request.host"',
        "target_port": '"request_p"',
        "auth_method": "CASE WHEN \"version\" = 5 AND (\"user\" IS NOT NULL OR \"password\" IS "
                       "NOT NULL) THEN 'username/password' END",
        "user": '"user"', "outcome": '"status"',
        "bound_host": 'coalesce("bound.name", "bound.host")', "bound_port": '"bound_p"'}),
    LogKind("x509", "x509", {
        "ts": "time", "fingerprint": "string", "id": "string",
        "certificate.version": "count", "certificate.serial": "string",
        "certificate.subject": "string", "certificate.issuer": "string",
        "certificate.not_valid_before": "time", "certificate.not_valid_after": "time",
        "certificate.key_alg": "string", "certificate.sig_alg": "string",
        "certificate.key_length": "count", "san.dns": "vector[string]",
        "san.ip": "vector[addr]", "basic_constraints.ca": "bool", "host_cert": "bool",
        "client_cert": "bool"}, {
        "ts": _CONN_COLS["ts"], "fingerprint": 'coalesce("fingerprint", "id")',
        "version": '"certificate.version"', "serial": '"certificate.serial"',
        "subject": '"certificate.subject"', "issuer": '"certificate.issuer"',
        "not_before": "make_timestamp(CAST(round(\"certificate.not_valid_before\" * 1000000) AS"
                      " BIGINT))",
        "not_after": "make_timestamp(CAST(round(\"certificate.not_valid_after\" * 1000000) AS"
                     " BIGINT))",
        "key_alg": '"certificate.key_alg"', "key_length": '"certificate.key_length"',
        "sig_alg": '"certificate.sig_alg"', "san_dns": '"san.dns"', "san_ip": '"san.ip"',
        "is_ca": '"basic_constraints.ca"', "host_cert": '"host_cert"',
        "client_cert": '"client_cert"'}),
    LogKind("tunnel", "tunnel", {
        **_CONN_FIELDS, "tunnel_type": "enum", "action": "enum"}, {
        **_CONN_COLS, "tunnel_type": '"tunnel_type"', "action": '"action"'}),
    LogKind("ssh", "ssh", {
        **_CONN_FIELDS, "version": "count", "auth_success": "bool", "auth_attempts": "count",
        "direction": "enum", "client": "string", "server": "string", "cipher_alg": "string",
        "mac_alg": "string", "compression_alg": "string", "kex_alg": "string",
        "host_key_alg": "string", "host_key": "string", "hassh": "string",
        "hasshServer": "string"}, {
        **_CONN_COLS, "version": '"version"', "auth_success": '"auth_success"',
        "auth_attempts": '"auth_attempts"', "direction": '"direction"', "client": '"client"',
        "server": '"server"', "cipher_alg": '"cipher_alg"', "kex_alg": '"kex_alg"',
        "host_key_alg": '"host_key_alg"', "host_key": '"host_key"', "hassh": '"hassh"',
        "hassh_server": '"hasshServer"'}),
)}

# Key sets that identify a log kind in JSON logs without a "_path" field.
_JSON_HINTS: tuple[tuple[str, frozenset[str]], ...] = (
    ("x509", frozenset({"certificate.subject", "certificate.serial"})),
    ("socks", frozenset({"request_p", "request.host", "request.name", "bound_p"})),
    ("tunnel", frozenset({"tunnel_type"})),
    ("ssh", frozenset({"auth_attempts", "kex_alg", "host_key", "hassh", "auth_success"})),
    ("ssl", frozenset({"server_name", "cipher", "established", "resumed", "cert_chain_fps",
                       "cert_chain_fuids"})),
    ("http", frozenset({"method", "status_code", "trans_depth", "user_agent", "uri"})),
    ("dns", frozenset({"query", "qtype", "qtype_name", "rcode", "trans_id"})),
    ("conn", frozenset({"conn_state", "history", "orig_bytes", "orig_pkts", "duration"})),
)


def kind_of_keys(keys: Iterable[str]) -> str | None:
    keyset = set(keys)
    for name, hints in _JSON_HINTS:
        if keyset & hints:
            return name
    return None


# -- staging normal form ------------------------------------------------------------------

def stage_type(zeek_type: str) -> pa.DataType:
    if zeek_type in ("time", "interval", "double"):
        return pa.float64()
    if zeek_type in ("count", "int", "port"):
        return pa.int64()
    if zeek_type == "bool":
        return pa.bool_()
    if zeek_type.startswith(("set[", "vector[", "table[")):
        return pa.list_(pa.string())
    return pa.string()


def _csv_type(zeek_type: str) -> str:
    t = stage_type(zeek_type)
    if pa.types.is_float64(t):
        return "DOUBLE"
    if pa.types.is_int64(t):
        return "BIGINT"
    if pa.types.is_boolean(t):
        return "BOOLEAN"
    return "VARCHAR"


_ESC = re.compile(rb"\\x([0-9a-fA-F]{2})|\\\\")


def unescape(raw: bytes) -> str:
    """Undo the ASCII writer's escaping (``\\xHH`` and ``\\\\``) and decode UTF-8."""
    if b"\\" in raw:
        raw = _ESC.sub(lambda m: bytes([int(m.group(1), 16)]) if m.group(1) else b"\\", raw)
    return raw.decode("utf-8", errors="backslashreplace")


def _unescape_sql(s: str | None) -> str | None:
    return None if s is None else unescape(s.encode("utf-8", errors="surrogateescape"))


_UDF_CONNECTIONS: set[int] = set()


def _ensure_udf(con: duckdb.DuckDBPyConnection) -> None:
    """Register the unescape function once per connection (DuckDB refuses a second one)."""
    if id(con) in _UDF_CONNECTIONS:
        return
    with contextlib.suppress(duckdb.NotImplementedException):  # registered already
        con.create_function(  # type: ignore[call-overload]  # the stubs want enum members
            "hg_zeek_unescape", _unescape_sql, ["VARCHAR"], "VARCHAR",
            null_handling="special", side_effects=False)
    _UDF_CONNECTIONS.add(id(con))


# -- headers ------------------------------------------------------------------------------

@dataclass(slots=True)
class TsvHeader:
    separator: bytes = b"\t"
    set_separator: bytes = b","
    empty: bytes = b"(empty)"
    unset: bytes = b"-"
    path: str = ""
    fields: list[str] | None = None
    types: list[str] | None = None
    lines: int = 0  # header lines before the first data line
    at: dict[str, int] = field(default_factory=dict)  # directive -> its line number


def _decode_sep(value: bytes) -> bytes:
    return re.sub(rb"\\x([0-9a-fA-F]{2})", lambda m: bytes([int(m.group(1), 16)]), value)


_KNOWN_FIELDS = frozenset(f for k in KINDS.values() for f in k.fields)


def _cut_header(line: bytes) -> list[str] | None:
    """Field names of a ``zeek-cut -c`` style header line (names only, no directives)."""
    names = line.split(b"\t")
    if (b"ts" not in names and b"uid" not in names) or len(names) < 2:
        return None
    decoded = [n.decode("utf-8", "replace") for n in names]
    known = sum(n in _KNOWN_FIELDS for n in decoded)
    return decoded if known >= max(2, (len(decoded) * 3 + 3) // 4) else None


def parse_header(lines: Iterable[bytes]) -> TsvHeader:
    """Read the '#' directives at the top of a TSV log (stops at the first data line).

    Output of ``zeek-cut -c`` has one line of field names instead of directives; it is taken
    as ``#fields`` with our declared types.
    """
    h = TsvHeader()
    for line in lines:
        if not line.startswith(b"#"):
            if h.fields is None and (cut := _cut_header(line)) is not None:
                h.fields = cut
                h.lines += 1
            break
        h.lines += 1
        if line.startswith(b"#separator "):
            h.separator = _decode_sep(line[len(b"#separator "):].strip())
            continue
        key, _, value = line[1:].partition(h.separator)
        h.at[key.decode("utf-8", "replace")] = h.lines
        if key == b"set_separator":
            h.set_separator = _decode_sep(value)
        elif key == b"empty_field":
            h.empty = value
        elif key == b"unset_field":
            h.unset = value
        elif key == b"path":
            h.path = value.decode("utf-8", "replace")
        elif key == b"fields":
            names = [f.decode("utf-8", "replace") for f in value.split(h.separator)]
            seen: set[str] = set()
            for i in range(len(names)):  # a repeated name is kept apart (and not mapped)
                while names[i] in seen:
                    names[i] += "~"
                seen.add(names[i])
            h.fields = names
        elif key == b"types":
            h.types = [t.decode("utf-8", "replace") for t in value.split(h.separator)]
    return h


# -- the format ---------------------------------------------------------------------------

@register
class ZeekFormat(Format):
    name: ClassVar[str] = "zeek"
    description: ClassVar[str] = (
        "Zeek conn/ssl/http/dns/socks/x509/tunnel/ssh logs, TSV or JSON lines")
    tables: ClassVar[tuple[str, ...]] = ("flow", "tls", "http", "dns", "proxy", "x509", "tunnel",
                                         "ssh")

    @classmethod
    def sniff(cls, head: bytes, path: Path) -> bool:
        for line in head.splitlines()[:20]:
            if line.startswith(b"#separator "):
                return True
            if _cut_header(line) is not None:
                return _kind_from_name(path) is not None or kind_of_keys(
                    line.decode("utf-8", "replace").split("\t")) is not None
            if line.startswith(b"{"):
                try:
                    obj = orjson.loads(line)
                except orjson.JSONDecodeError:
                    return False
                if not isinstance(obj, dict) or "event_type" in obj:
                    return False
                return "ts" in obj and ("_path" in obj or kind_of_keys(obj) is not None) and (
                    "uid" in obj or "certificate.subject" in obj)
            if line.strip() and not line.startswith(b"#"):
                return False
        return False

    def read(self, ctx: IngestContext, sink: RowSink) -> None:
        if ctx.head.lstrip().startswith(b"{"):
            _JsonReader(ctx, sink).run()
            return
        header = parse_header(ctx.head.splitlines())
        if header.fields is None:
            sink.error(SourceLocation(path=str(ctx.path), line=1),
                       "Zeek TSV log without a #fields header")
            return
        kind = KINDS.get(header.path) or KINDS.get(_kind_from_name(ctx.path) or "") or \
            KINDS.get(kind_of_keys(header.fields) or "")
        if kind is None:
            sink.skip(f"zeek {header.path or '?'} log")
            sink.error(SourceLocation(path=str(ctx.path), line=header.at.get("path", 1)),
                       f"Zeek log '{header.path}' is not one hopguard stores "
                       f"(it stores {', '.join(KINDS)})")
            return
        if header.types is not None and len(header.types) != len(header.fields):
            sink.error(SourceLocation(path=str(ctx.path), line=header.at.get("types", 1)),
                       "#types and #fields differ in length; using hopguard's own types")
        # Fields we map are read as the type the mapping expects (a damaged or unusual #types
        # line must not change the SQL's input types); other fields are only carried as text.
        types = [kind.fields.get(f, "string") for f in header.fields]
        if ctx.fast_zeek_tsv and ctx.store is not None and header.separator and \
                len(header.separator) == 1 and _fast_tsv(ctx, sink, kind, header, types):
            return
        _TsvLineReader(ctx, sink, kind, header, types).run()


def _kind_from_name(path: Path) -> str | None:
    stem = path.name.split(".")[0]
    return stem if stem in KINDS else None


def _insert_sql(kind: LogKind, staged_fields: Iterable[str], source: str,
                record: str = "NULL") -> str:
    """INSERT ... SELECT mapping over a staged relation (missing fields read as NULL)."""
    present = set(staged_fields)
    exprs = []
    for col, expr in kind.columns.items():
        missing = [f for f in re.findall(r'"((?:[^"]|"")+)"', expr) if f not in present]
        for f in missing:
            typ = _null_cast(kind.fields.get(f, "string"))
            expr = expr.replace(_q(f), f"CAST(NULL AS {typ})")
        exprs.append(f"{expr} AS {_q(col)}")
    cols = ", ".join([*(_q(c) for c in kind.columns), "sensor", "file_id", "record"])
    return (f'INSERT INTO "{kind.table}" ({cols}) SELECT {", ".join(exprs)}, '
            f"$sensor, $file_id, {record} FROM {source}")


def _null_cast(zeek_type: str) -> str:
    t = _csv_type(zeek_type)
    return "VARCHAR[]" if pa.types.is_list(stage_type(zeek_type)) else t


# -- fast path: DuckDB's CSV reader -------------------------------------------------------

_CSV_MAX_LINE = 2 << 20  # DuckDB's default max_line_size
_CSV_BUFFER = 32 << 20  # DuckDB's default buffer_size


def _fast_tsv(ctx: IngestContext, sink: RowSink, kind: LogKind, header: TsvHeader,
              types: list[str]) -> bool:
    """Load a clean TSV with read_csv; raises RetryWithoutFastPath when the file needs the
    line path (the caller rolls the file's transaction back and reads it again)."""
    con: duckdb.DuckDBPyConnection = ctx.store.con
    assert header.fields is not None
    _ensure_udf(con)
    columns = ", ".join(f"'{_sql_lit(f)}': '{_csv_type(t)}'"
                        for f, t in zip(header.fields, types, strict=True))
    empty = _sql_lit(header.empty.decode("utf-8", "replace"))
    setsep = _sql_lit(header.set_separator.decode("utf-8", "replace"))
    staged = []
    for f, t in zip(header.fields, types, strict=True):
        st = stage_type(t)
        q = _q(f)
        if pa.types.is_list(st):
            staged.append(
                f"CASE WHEN {q} IS NULL THEN NULL WHEN {q} = '{empty}' THEN []::VARCHAR[] ELSE "
                f"list_transform(string_split({q}, '{setsep}'), "
                f"lambda x: CASE WHEN contains(x, '\\') "
                f"THEN hg_zeek_unescape(x) ELSE x END) END AS {q}")
        elif pa.types.is_string(st):
            staged.append(f"CASE WHEN {q} = '{empty}' THEN '' WHEN contains({q}, '\\') THEN "
                          f"hg_zeek_unescape({q}) ELSE {q} END AS {q}")
        else:
            staged.append(q)
    # buffer_size: with a max_line_size above its 2 MiB default and no buffer_size, the rows
    # DuckDB writes take twice the space and the next checkpoint rewrites them (measured on 5M
    # conn lines, bench/hunt.py: 12-20 s more at close, 470 MB store instead of 240 MB, same
    # rows). The buffer must hold the longest line; 32 MiB is DuckDB's default.
    max_line = max(ctx.max_record_bytes, _CSV_MAX_LINE)
    reader = (f"read_csv('{_sql_lit(str(ctx.path))}', delim='{_sql_lit(header.separator.decode())}'"
              f", header=false, skip={header.lines}, columns={{{columns}}}, quote='', escape=''"
              f", nullstr='{_sql_lit(header.unset.decode('utf-8', 'replace'))}', auto_detect=false"
              f", store_rejects=true, rejects_table='hg_rejects', rejects_scan='hg_reject_scans'"
              f", compression='{'gzip' if ctx.gzipped else 'none'}', strict_mode=true"
              f", max_line_size={max_line}, buffer_size={max(_CSV_BUFFER, 2 * max_line)})")
    source = f"(SELECT {', '.join(staged)} FROM {reader})"
    sql = _insert_sql(kind, header.fields, source)
    try:
        con.execute("DROP TABLE IF EXISTS hg_rejects; DROP TABLE IF EXISTS hg_reject_scans")
        cur = con.execute(sql, {"sensor": sink.sensor, "file_id": sink.file_id})
        rows = cur.fetchall()
        inserted = int(rows[0][0]) if rows else 0
        bad = con.execute(
            "SELECT count(DISTINCT line) FROM hg_rejects WHERE NOT starts_with(csv_line, '#')"
        ).fetchall()[0]
    except duckdb.Error as exc:
        # DuckDB aborts the transaction on an error: the pipeline rolls back and reads again.
        logger.info("fast path declined %s: %s", ctx.path, str(exc).splitlines()[0])
        raise RetryWithoutFastPath(str(exc)) from None
    if bad and bad[0]:
        logger.info("fast path found %d damaged lines in %s; reading line by line",
                    bad[0], ctx.path)
        raise RetryWithoutFastPath(f"{bad[0]} damaged lines")
    sink.added_externally(kind.table, inserted)
    sink.record_seen(inserted)
    if ctx.progress is not None:
        ctx.progress(ctx.path.stat().st_size)
    return True


def _sql_lit(s: str) -> str:
    return s.replace("'", "''")


# -- line path ----------------------------------------------------------------------------

class _Staging:
    """Buffers staged rows for one log kind and inserts them through the mapping SQL."""

    def __init__(self, ctx: IngestContext, sink: RowSink, kind: LogKind,
                 fields: list[str], types: list[str], batch_rows: int) -> None:
        self.ctx, self.sink, self.kind = ctx, sink, kind
        self.fields = fields
        self.schema = pa.schema([pa.field(f, stage_type(t)) for f, t in zip(fields, types,
                                                                             strict=True)]
                                + [pa.field("__record", pa.int64())])
        self.columns: list[list[Any]] = [[] for _ in self.schema]
        self.batch_rows = batch_rows
        self.n = 0
        self.sql = _insert_sql(kind, fields, "_hg_zeek_stage", record='"__record"')

    def add(self, values: list[Any], record: int) -> None:
        for col, v in zip(self.columns, values, strict=False):
            col.append(v)
        self.columns[-1].append(record)
        self.n += 1
        if self.n >= self.batch_rows:
            self.flush()

    def flush(self) -> None:
        if not self.n:
            return
        batch = pa.Table.from_arrays([pa.array(c, type=f.type) for c, f in
                                      zip(self.columns, self.schema, strict=True)],
                                     schema=self.schema)
        con: duckdb.DuckDBPyConnection = self.ctx.store.con
        _ensure_udf(con)
        con.register("_hg_zeek_stage", batch)
        try:
            con.execute(self.sql, {"sensor": self.sink.sensor, "file_id": self.sink.file_id})
        finally:
            con.unregister("_hg_zeek_stage")
        self.sink.added_externally(self.kind.table, self.n)
        self.columns = [[] for _ in self.schema]
        self.n = 0


def _converter(zeek_type: str, h: TsvHeader) -> Callable[[bytes], Any]:
    st = stage_type(zeek_type)
    if pa.types.is_float64(st):
        return float
    if pa.types.is_int64(st):
        return int
    if pa.types.is_boolean(st):
        def conv_bool(raw: bytes) -> bool:
            if raw == b"T":
                return True
            if raw == b"F":
                return False
            raise ValueError(f"not T or F: {raw[:20]!r}")
        return conv_bool
    if pa.types.is_list(st):
        sep, empty = h.set_separator, h.empty

        def conv_list(raw: bytes) -> list[str]:
            if raw == empty:
                return []
            return [unescape(x) for x in raw.split(sep)]
        return conv_list

    def conv_str(raw: bytes) -> str:
        if raw == h.empty:
            return ""
        return unescape(raw)
    return conv_str


class _TsvLineReader:
    def __init__(self, ctx: IngestContext, sink: RowSink, kind: LogKind, header: TsvHeader,
                 types: list[str]) -> None:
        assert header.fields is not None
        self.ctx, self.sink, self.kind, self.h = ctx, sink, kind, header
        self.fields = header.fields
        self.types = types
        self.convs = [_converter(t, header) for t in types]
        self.stage = _Staging(ctx, sink, kind, header.fields, types, sink.batch_rows)

    def run(self) -> None:
        sep, unset = self.h.separator, self.h.unset
        nf = len(self.fields)
        path = str(self.ctx.path)
        convs, fields, types = self.convs, self.fields, self.types
        skip = self.h.lines
        for lineno, line in iter_lines(self.ctx, self.sink):
            if lineno <= skip or not line or line.startswith(b"#"):
                continue
            self.sink.record_seen()
            parts = line.split(sep)
            if len(parts) != nf:
                self.sink.error(SourceLocation(path=path, line=lineno),
                                f"expected {nf} fields, found {len(parts)}")
                continue
            values: list[Any] = []
            for i, raw in enumerate(parts):
                if raw == unset:
                    values.append(None)
                    continue
                try:
                    values.append(convs[i](raw))
                except (ValueError, OverflowError):
                    self.sink.error(
                        SourceLocation(path=path, line=lineno),
                        f"field {fields[i]}: {raw[:40]!r} is not a valid {types[i]} (stored as"
                        " unset)")
                    values.append(None)
            self.stage.add(values, lineno)
        self.stage.flush()


class _JsonReader:
    """Zeek JSON lines (LogAscii::use_json); ts as epoch seconds or ISO 8601."""

    def __init__(self, ctx: IngestContext, sink: RowSink) -> None:
        self.ctx, self.sink = ctx, sink
        self.stages: dict[str, _Staging] = {}
        self.file_kind = _kind_from_name(ctx.path)

    def _stage(self, kind: LogKind) -> _Staging:
        st = self.stages.get(kind.path)
        if st is None:
            fields = list(kind.fields)
            st = _Staging(self.ctx, self.sink, kind, fields, [kind.fields[f] for f in fields],
                          self.sink.batch_rows)
            self.stages[kind.path] = st
        return st

    def run(self) -> None:
        path = str(self.ctx.path)
        for lineno, line in iter_lines(self.ctx, self.sink):
            if not line.strip():
                continue
            self.sink.record_seen()
            where = SourceLocation(path=path, line=lineno)
            obj = parse_json_object(line, where, self.sink)
            if obj is None:
                continue
            name = obj.get("_path") or self.file_kind or kind_of_keys(obj)
            kind = KINDS.get(name) if isinstance(name, str) else None
            if kind is None:
                self.sink.skip(f"zeek {name} log")
                continue
            stage = self._stage(kind)
            values = [self._value(obj, f, kind.fields[f], where) for f in stage.fields]
            stage.add(values, lineno)
        for st in self.stages.values():
            st.flush()

    def _value(self, obj: dict[str, Any], field: str, zeek_type: str,
               where: SourceLocation) -> Any:
        v = obj.get(field)
        if v is None:
            return None
        st = stage_type(zeek_type)
        try:
            if pa.types.is_float64(st):
                if isinstance(v, str) and zeek_type == "time":
                    return iso_to_us(v) / 1_000_000
                if isinstance(v, bool) or not isinstance(v, (int, float)):
                    raise ValueError(v)
                return float(v)
            if pa.types.is_int64(st):
                if isinstance(v, bool) or not isinstance(v, int):
                    raise ValueError(v)
                return v
            if pa.types.is_boolean(st):
                if not isinstance(v, bool):
                    raise ValueError(v)
                return v
            if pa.types.is_list(st):
                if not isinstance(v, list):
                    raise ValueError(v)
                return [x if isinstance(x, str) else orjson.dumps(x).decode() for x in v]
            return v if isinstance(v, str) else orjson.dumps(v).decode()
        except (ValueError, TypeError, OverflowError):
            self.sink.error(where, f"field {field}: {str(v)[:40]!r} is not a valid {zeek_type} "
                                   "(stored as unset)")
            return None
