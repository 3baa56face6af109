"""Elastic Common Schema documents: Elastic Endpoint / Elastic Agent / Elastic Security exports.

Theory of operation. Reading happens in three steps: the *container* is split into JSON texts,
each text is parsed (strictly, then tolerantly) and *expanded* into ECS documents, and each
document is *mapped* on its ``event.category`` to one row of ``process``, ``netconn``,
``config_change`` or ``dns``, or counted as skipped.

Containers. The first non-blank line decides:

* **NDJSON** (``elastic-agent`` / Filebeat file output, Kibana "export as NDJSON", ``_bulk``-less
  dumps): the first line is a complete JSON object. Every line is one text; ``record`` is the
  line number.
* **Document stream**: anything else that starts with ``{`` or ``[``: one pretty-printed
  document, several concatenated (optionally separated by commas, as when hits are copied out
  of a search response), or a JSON array of them. A small tokenizer walks the lines, tracking
  strings and bracket depth, and cuts out each top-level value (or each element of a top-level
  array). ``record`` is the 1-based index of the document in the file. Text between documents
  that is neither white space nor a comma is a located error and the rest of its line is
  dropped. A document that never closes (a truncated file) is an error at its first line; a line
  that is exactly ``{`` at column 0 while a document that began the same way is still open
  starts a new document (indented pretty-printing never puts a nested ``{`` at column 0), so one
  damaged document does not swallow the rest of the file.

Parsing. Each text goes to ``orjson`` first. Only when that fails, a tolerant pass rewrites
what real exports get wrong and tries again: a trailing comma before ``}`` or ``]`` (hand-edited
exports), and Kibana Dev Tools console strings in triple quotes (``\"\"\"...\"\"\"``, used
there for any string containing quotes). A document read this way is stored and counted under
``sink.skip("ecs document repaired (stored): ...")`` (the sink has no other counter for notes);
a text that still does not parse is a located error.

Expansion. An Elasticsearch search response (``{"hits": {"hits": [...]}}``, or an EQL response
with ``hits.events`` / ``hits.sequences[].events``) gives each hit; a
hit (``{"_index": ..., "_source": {...}}``) gives its ``_source``; an array gives its elements;
a bare object is a document. Exports with dotted keys (``"event.category": ...``) are
unflattened. In the document-stream container each expanded document takes the next record
number, so a search response of three hits followed by a bare document gives records 1-4.

Mapping (see docs/formats.md, "Elastic Common Schema"):

* ``event.category`` has ``process`` and (``event.type`` has ``start`` or ``event.action`` is
  ``exec``/``fork``/``start``) -> ``process``; other process events (end, already_running) are
  skipped as ``ecs process <action>``.
* ``registry`` -> ``config_change`` with ``source='registry'``, shaped like Sysmon 12/13/14 rows:
  ``action`` in Sysmon's vocabulary (``SetValue``, ``CreateKey``, ``DeleteValue``,
  ``DeleteKey``), ``object`` = ``registry.path`` with the hive named as Sysmon names it
  (``HKEY_LOCAL_MACHINE\\`` -> ``HKLM\\``), ``detail`` = ``registry.data.strings`` joined.
* ``dns.question.name`` present -> ``dns`` (Elastic Endpoint's ``lookup_requested`` is skipped:
  its ``lookup_result`` carries the same query and the answers).
* ``network`` with an address and a process (``process.pid`` or ``process.executable``) ->
  ``netconn``. Network documents without a process (Packetbeat, Filebeat's Zeek / Suricata
  modules) are flow records, not endpoint telemetry, and are skipped.
* everything else: skipped, counted as ``ecs <category> event``.

Documents that belong to other readers are not claimed by the sniffer: Windows event-log
documents with ``winlog.*`` (ingest/windows.py), Suricata EVE (``event_type``), Zeek JSON
(``_path``, ``ts`` + ``uid``) and the macOS unified log (``eventMessage``). Inside a file this
reader did claim, a ``winlog`` document is skipped (``ecs windows event log document``).

Bad values never raise: a field of the wrong type is reported with its location and stored as
NULL; a document without a usable ``@timestamp`` is a located error and not stored.
"""

from __future__ import annotations

import re
import shlex
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import orjson

from hopguard.errors import SourceLocation
from hopguard.ingest.base import Format, IngestContext, RowSink, iter_lines, register
from hopguard.ingest.values import dig, is_windows_event, iso_to_us, unflatten

ENDPOINT_SOURCE = "elastic-endpoint"
GENERIC_SOURCE = "ecs"
MAX_DOCUMENT_FACTOR = 64  # a stream document may be this many times max_record_bytes
_I64_MIN, _I64_MAX = -(1 << 63), (1 << 63) - 1
_MAX_EPOCH_MS = 253_402_300_800_000  # 10000-01-01: beyond it, not a time

_HEAD = ("ts", "record", "host", "platform", "source", "event_code")
LAYOUT: dict[str, tuple[str, ...]] = {
    "process": (*_HEAD, "image", "command_line", "user", "pid", "ppid", "parent_image",
                "parent_command_line", "cwd", "process_guid", "parent_guid"),
    "netconn": (*_HEAD, "direction", "proto", "src_ip", "src_port", "dst_ip", "dst_port",
                "dst_host", "image", "pid", "ppid", "user", "process_guid"),
    "config_change": (*_HEAD, "action", "object", "detail", "image", "pid", "user"),
    "dns": ("ts", "record", "host", "platform", "query", "answers", "rcode", "pid", "image",
            "src_ip", "src_port", "dst_ip", "dst_port", "proto", "trans_id"),
}

_START_ACTIONS = frozenset({"exec", "fork", "start", "process_started", "executed"})
_ACTION_DIRECTION = {"connection_accepted": "inbound", "connection_attempted": "outbound",
                     "bind": "listen", "listen": "listen"}
_DIRECTION = {"ingress": "inbound", "inbound": "inbound", "incoming": "inbound",
              "egress": "outbound", "outbound": "outbound", "outgoing": "outbound",
              "listen": "listen", "listening": "listen"}
_SKIPPED_NETWORK_ACTIONS = frozenset({"disconnect_received", "connection_closed", "close"})
_PLATFORM_WORDS = {
    "macos": "macos", "darwin": "macos", "mac os x": "macos", "osx": "macos",
    "windows": "windows", "linux": "linux", "debian": "linux", "ubuntu": "linux",
    "redhat": "linux", "rhel": "linux", "centos": "linux", "fedora": "linux", "suse": "linux",
    "sles": "linux", "amazon": "linux", "amzn": "linux", "arch": "linux", "alpine": "linux",
    "oracle": "linux", "rocky": "linux", "almalinux": "linux", "esxi": "esxi",
    "vmkernel": "esxi",
}
_HIVES = (("HKEY_LOCAL_MACHINE\\", "HKLM\\"), ("HKEY_USERS\\", "HKU\\"),
          ("HKEY_CURRENT_USER\\", "HKCU\\"), ("HKEY_CLASSES_ROOT\\", "HKCR\\"),
          ("HKEY_CURRENT_CONFIG\\", "HKCC\\"))

# Tokens inside a document: a triple-quoted console string, a JSON string, a bracket.
_STRUCT = re.compile(rb'"""|"|[{}\[\]]')
_STRING_REST = re.compile(rb'(?:[^"\\]|\\.)*"')
# The tolerant pass: triple-quoted strings, JSON strings (kept), trailing commas.
_REPAIR = re.compile(rb'"""(.*?)"""|"(?:[^"\\]|\\.)*"|,(\s*[}\]])', re.S)


# -- tolerant parsing ---------------------------------------------------------------------------

def _repair(text: bytes) -> tuple[bytes, list[str]]:
    """The text with trailing commas and triple-quoted strings fixed, and what was fixed."""
    fixes: set[str] = set()

    def fix(m: re.Match[bytes]) -> bytes:
        if m.group(1) is not None:
            fixes.add("triple-quoted string")
            return orjson.dumps(m.group(1).decode("utf-8", "replace"))
        if m.group(2) is not None:
            fixes.add("trailing comma")
            return m.group(2)
        return m.group(0)

    out = _REPAIR.sub(fix, text)
    return out, sorted(fixes)


def parse_text(text: bytes) -> tuple[Any, list[str]]:
    """A JSON value from ``text``, strictly or else tolerantly; raises ValueError if neither.

    Returns the value and the repairs the tolerant pass needed (empty when strict parsing
    worked)."""
    try:
        return orjson.loads(text), []
    except orjson.JSONDecodeError as exc:
        first = exc
    fixed, fixes = _repair(text)
    if not fixes:
        raise ValueError(str(first))
    try:
        return orjson.loads(fixed), fixes
    except orjson.JSONDecodeError:
        raise ValueError(str(first)) from None


def expand(value: Any) -> Iterator[dict[str, Any] | str]:
    """ECS documents inside a parsed value (a search response, a hit, an array, a document);
    a string in place of a document says why that element is not one."""
    if type(value) is list:
        for item in value:
            yield from expand(item) if type(item) is dict else iter(("not a JSON object",))
        return
    if type(value) is not dict:
        yield "not a JSON object"
        return
    hits = value.get("hits")
    if type(hits) is dict and (type(hits.get("hits")) is list or
                               type(hits.get("events")) is list or
                               type(hits.get("sequences")) is list):
        for hit in _hit_list(hits):
            if type(hit) is dict and type(hit.get("_source")) is dict:
                yield _document(hit["_source"])
            elif type(hit) is dict and "_source" not in hit and "@timestamp" in hit:
                yield _document(hit)
            else:
                yield "a search hit without a _source object"
        return
    source = value.get("_source")
    if type(source) is dict:
        yield _document(source)
    elif "_source" in value or ("_index" in value and "_id" in value):
        yield "an Elasticsearch hit without a _source object"
    else:
        yield _document(value)


def _hit_list(hits: dict[str, Any]) -> Iterator[Any]:
    """The hits of a search response: ``hits.hits`` (search), ``hits.events`` (EQL event
    query), ``hits.sequences[].events`` (EQL sequence query)."""
    for key in ("hits", "events"):
        found = hits.get(key)
        if type(found) is list:
            yield from found
    sequences = hits.get("sequences")
    if type(sequences) is list:
        for seq in sequences:
            events = seq.get("events") if type(seq) is dict else None
            if type(events) is list:
                yield from events
            else:
                yield seq


def _document(doc: dict[str, Any]) -> dict[str, Any]:
    for key in doc:
        if type(key) is str and "." in key and not key.startswith("."):
            return unflatten(doc)
    return doc


# -- small value helpers --------------------------------------------------------------------

def _strs(v: Any) -> list[str]:
    """ECS keyword-or-array fields (event.category, event.type) as lower-case strings."""
    if type(v) is str:
        return [v.lower()]
    if type(v) is list:
        return [x.lower() for x in v if type(x) is str]
    return []


def _str(v: Any) -> str | None:
    if type(v) is str:
        return v if v else None
    if type(v) is int or type(v) is float:
        return str(v)
    if type(v) is list:  # a one-element keyword array
        return _str(v[0]) if len(v) == 1 else None
    return None


def _platform(doc: dict[str, Any]) -> str | None:
    os_ = dig(doc, "host.os")
    if type(os_) is not dict:
        return None
    for key in ("type", "family", "platform", "name"):
        v = os_.get(key)
        if type(v) is str:
            word = v.strip().lower()
            found = _PLATFORM_WORDS.get(word)
            if found is not None:
                return found
            if key == "name":
                for name, plat in _PLATFORM_WORDS.items():
                    if name in word:
                        return plat
    return None


def join_args(args: list[str], platform: str | None) -> str:
    """An argument vector as one command line, quoted the way the platform's shell reads it."""
    if platform == "windows":
        return subprocess.list2cmdline(args)
    return shlex.join(args)


def _hive(path: str) -> str:
    upper = path[:24].upper()
    for long, short in _HIVES:
        if upper.startswith(long):
            return short + path[len(long):]
    return path


def _is_endpoint(doc: dict[str, Any]) -> bool:
    if dig(doc, "agent.type") == "endpoint" or dig(doc, "event.module") == "endpoint":
        return True
    ds = dig(doc, "data_stream.dataset")
    if type(ds) is not str:
        ds = dig(doc, "event.dataset")
    return type(ds) is str and ds.startswith("endpoint.events.")


def is_ecs_document(doc: dict[str, Any]) -> bool:
    """Whether a (first) document is one this reader should claim."""
    if "event_type" in doc or "eventMessage" in doc or "_path" in doc or \
            ("ts" in doc and "uid" in doc) or is_windows_event(doc):
        return False  # Suricata EVE, macOS unified log, Zeek JSON, Windows event logs
    if _is_endpoint(doc):
        return True
    event = doc.get("event")
    if "@timestamp" not in doc or type(event) is not dict or "category" not in event:
        return False
    return any(type(doc.get(k)) is dict for k in
               ("process", "source", "destination", "registry", "dns"))


# -- containers -----------------------------------------------------------------------------

class _Piece:
    """One top-level JSON text of a document stream, and where it starts."""

    __slots__ = ("line", "text")

    def __init__(self, line: int, text: bytes) -> None:
        self.line = line
        self.text = text


class _Splitter:
    """Cuts a document stream into top-level JSON texts, line by line (see module docstring).

    ``feed`` yields finished pieces; errors (garbage between documents, oversize and unfinished
    documents) go to ``error(line, message)``.
    """

    def __init__(self, error: Any, max_bytes: int) -> None:
        self.error = error
        self.max_bytes = max_bytes
        self.depth = 0
        self.in_array = False
        self.in_triple = False
        self.parts: list[bytes] = []
        self.size = 0
        self.oversize = False
        self.start = 0
        self.pretty = False  # the open document began with a line that is exactly "{"

    def _open(self, lineno: int, line: bytes, pos: int) -> None:
        self.depth = 1
        self.start = lineno
        self.parts = []
        self.size = 0
        self.oversize = False
        self.pretty = pos == 0 and line.rstrip() == b"{"

    def _keep(self, chunk: bytes) -> None:
        if self.oversize:
            return
        self.size += len(chunk)
        if self.size > self.max_bytes:
            self.oversize = True
            self.parts = []
        else:
            self.parts.append(chunk)

    def _close(self) -> _Piece | None:
        self.depth = 0
        if self.oversize:
            self.error(self.start, f"document longer than {self.max_bytes} bytes")
            return None
        piece = _Piece(self.start, b"".join(self.parts))
        self.parts = []
        return piece

    def feed(self, lineno: int, line: bytes) -> Iterator[_Piece]:
        n = len(line)
        pos = 0
        if self.depth and self.pretty and not self.in_triple and line.rstrip() == b"{":
            self.error(self.start, "incomplete document (it never closes; the next one "
                                   f"starts at line {lineno})")
            self.depth = 0
        doc_from = 0
        while pos < n:
            if self.depth == 0:
                c = line[pos:pos + 1]
                if c in b" \t\r\n\f\v," and c:
                    pos += 1
                    continue
                if c == b"{":
                    self._open(lineno, line, pos)
                    doc_from = pos
                    pos += 1
                    continue
                if c == b"[" and not self.in_array:
                    self.in_array = True
                    pos += 1
                    continue
                if c == b"]" and self.in_array:
                    self.in_array = False
                    pos += 1
                    continue
                text = line[pos:pos + 40].decode("utf-8", "replace")
                self.error(lineno, f"not a JSON document: {text!r}")
                return
            if self.in_triple:
                end = line.find(b'"""', pos)
                if end < 0:
                    break
                self.in_triple = False
                pos = end + 3
                continue
            m = _STRUCT.search(line, pos)
            if m is None:
                break
            tok = m.group(0)
            pos = m.end()
            if tok == b'"""':
                self.in_triple = True
            elif tok == b'"':
                rest = _STRING_REST.match(line, pos)
                if rest is None:  # an unterminated string: JSON strings do not span lines
                    break
                pos = rest.end()
            elif tok in (b"{", b"["):
                self.depth += 1
            else:
                self.depth -= 1
                if self.depth == 0:
                    self._keep(line[doc_from:pos])
                    piece = self._close()
                    if piece is not None:
                        yield piece
        if self.depth:
            self._keep(line[doc_from:] + b"\n")

    def finish(self) -> None:
        if self.depth:
            self.error(self.start, "incomplete document at the end of the file (truncated?)")
            self.depth = 0


def _first_document(head: bytes) -> dict[str, Any] | None:
    """The first ECS document of a sniffed head, or None when none is complete in it."""
    lines = head.splitlines()
    first = next((ln.strip() for ln in lines if ln.strip()), b"")
    if first.startswith(b"{"):
        try:
            value, _ = parse_text(first)
        except ValueError:
            value = None
        if type(value) is dict:
            return next((d for d in expand(value) if type(d) is dict), None)
    splitter = _Splitter(lambda line, msg: None, len(head) + 1)
    for i, line in enumerate(lines, 1):
        for piece in splitter.feed(i, line):
            try:
                value, _ = parse_text(piece.text)
            except ValueError:
                return None
            return next((d for d in expand(value) if type(d) is dict), None)
    return None


# -- the reader -----------------------------------------------------------------------------

class _Reader:
    def __init__(self, ctx: IngestContext, sink: RowSink) -> None:
        self.ctx = ctx
        self.sink = sink
        self.path = str(ctx.path)
        self.line: int | None = None  # where the current document is, for value errors
        self.record: int | None = None
        self.index = 0  # documents so far (record numbers of the document stream)
        self._seconds: dict[str, int] = {}

    # locations
    def where(self) -> SourceLocation:
        return SourceLocation(path=self.path, line=self.line, record=self.record)

    def error_at(self, line: int, message: str) -> None:
        self.sink.error(SourceLocation(path=self.path, line=line), message)

    def bad(self, field: str, value: object, what: str) -> None:
        self.sink.error(self.where(), f"field {field}: {str(value)[:60]!r} is not {what} "
                                      "(stored as unset)")

    # containers
    def run(self) -> None:
        lines = iter_lines(self.ctx, self.sink)
        if self._ndjson():
            self._run_ndjson(lines)
        else:
            self._run_stream(lines)

    def _ndjson(self) -> bool:
        for line in self.ctx.head.splitlines():
            s = line.strip()
            if not s:
                continue
            if not s.startswith(b"{"):
                return False
            try:
                value, _ = parse_text(s)
            except ValueError:
                return False
            return type(value) is dict
        return False

    def _run_ndjson(self, lines: Iterator[tuple[int, bytes]]) -> None:
        for lineno, line in lines:
            s = line.strip()
            if not s:
                continue
            self.sink.record_seen()
            self.line = lineno
            self.record = lineno
            self._text(s, lineno, lineno)

    def _run_stream(self, lines: Iterator[tuple[int, bytes]]) -> None:
        splitter = _Splitter(self.error_at, self.ctx.max_record_bytes * MAX_DOCUMENT_FACTOR)
        for lineno, line in lines:
            for piece in splitter.feed(lineno, line):
                self.sink.record_seen()
                self.line = piece.line
                self._text(piece.text, piece.line, None)
        splitter.finish()

    def _next_index(self) -> int:
        self.index += 1
        return self.index

    def _text(self, text: bytes, line: int, lineno: int | None) -> None:
        """Parse, expand and map one JSON text; ``lineno`` is the record number of every
        document in it (NDJSON), or None to number documents one by one (stream)."""
        try:
            value, fixes = parse_text(text)
        except ValueError as exc:
            if lineno is None:
                self._next_index()  # an unreadable document keeps its place in the numbering
            self.error_at(line, f"not JSON: {exc}")
            return
        for doc in expand(value):
            rec = lineno if lineno is not None else self._next_index()
            if isinstance(doc, str):
                self.error_at(line, doc)
                continue
            self.record = rec
            if fixes:
                self.sink.skip(f"ecs document repaired (stored): {', '.join(fixes)}")
            self.document(doc, rec)

    # mapping
    def document(self, doc: dict[str, Any], rec: int) -> None:
        sink = self.sink
        if is_windows_event(doc):
            sink.skip("ecs windows event log document (read by the windows format)")
            return
        event = doc.get("event")
        if type(event) is not dict:
            event = {}
        cats = _strs(event.get("category"))
        types = _strs(event.get("type"))
        action = _str(event.get("action"))
        act = action.lower() if action else None
        if "process" in cats:
            if "start" in types or act in _START_ACTIONS:
                self._emit(doc, rec, event, action, "process")
            else:
                sink.skip(f"ecs process {act or (types[0] if types else 'event')}")
            return
        if "registry" in cats:
            self._emit(doc, rec, event, action, "config_change")
            return
        if type(dig(doc, "dns.question.name")) is str and (
                "network" in cats or "dns" in cats or not cats):
            if act == "lookup_requested":
                sink.skip("ecs dns lookup_requested (its lookup_result is stored)")
                return
            self._emit(doc, rec, event, action, "dns")
            return
        if "network" in cats:
            if act in _SKIPPED_NETWORK_ACTIONS or ("end" in types and act not in
                                                   _ACTION_DIRECTION):
                sink.skip(f"ecs network {act or 'end'}")
                return
            proc = doc.get("process")
            if type(proc) is not dict or (proc.get("pid") is None and
                                          proc.get("executable") is None):
                sink.skip("ecs network event without a process (not endpoint telemetry)")
                return
            if dig(doc, "source.ip") is None and dig(doc, "destination.ip") is None:
                sink.skip("ecs network event without an address")
                return
            self._emit(doc, rec, event, action, "netconn")
            return
        sink.skip(f"ecs {cats[0] if cats else 'uncategorised'} event")

    def _emit(self, doc: dict[str, Any], rec: int, event: dict[str, Any], action: str | None,
              table: str) -> None:
        ts = self._ts(doc.get("@timestamp"))
        if ts is None:
            return
        host = _str(dig(doc, "host.name")) or _str(dig(doc, "host.hostname"))
        platform = _platform(doc)
        if _is_endpoint(doc):
            source = ENDPOINT_SOURCE
        else:
            source = _str(event.get("module")) or GENERIC_SOURCE
        code = action or _str(event.get("code"))
        proc = doc.get("process")
        if type(proc) is not dict:
            proc = {}
        parent = proc.get("parent")
        if type(parent) is not dict:
            parent = {}
        image = self._text_field(proc.get("executable"), "process.executable")
        pid = self._int(proc.get("pid"), "process.pid")
        user = self._user(doc, platform)
        row: tuple[Any, ...]
        if table == "process":
            row = (ts, rec, host, platform, source, code, image,
                   self._command_line(proc, "process", platform), user, pid,
                   self._int(parent.get("pid"), "process.parent.pid"),
                   self._text_field(parent.get("executable"), "process.parent.executable"),
                   self._command_line(parent, "process.parent", platform),
                   self._text_field(proc.get("working_directory"), "process.working_directory"),
                   self._text_field(proc.get("entity_id"), "process.entity_id"),
                   self._text_field(parent.get("entity_id"), "process.parent.entity_id"))
        elif table == "netconn":
            act = action.lower() if action else None
            direction = _ACTION_DIRECTION.get(act) if act else None
            if direction is None:
                raw = dig(doc, "network.direction")
                direction = _DIRECTION.get(raw.lower()) if type(raw) is str else None
            src_ip = self._text_field(dig(doc, "source.ip"), "source.ip")
            src_port = self._port(dig(doc, "source.port"), "source.port")
            dst_ip = self._text_field(dig(doc, "destination.ip"), "destination.ip")
            dst_port = self._port(dig(doc, "destination.port"), "destination.port")
            if direction == "listen" and dst_ip is None:
                # a bind names only the local address; listen rows keep it as dst (as auditd)
                dst_ip, dst_port, src_ip, src_port = src_ip, src_port, None, None
            proto = _str(dig(doc, "network.transport"))
            row = (ts, rec, host, platform, source, code, direction,
                   proto.lower() if proto else None, src_ip, src_port, dst_ip, dst_port,
                   self._text_field(dig(doc, "destination.domain"), "destination.domain"),
                   image, pid, self._int(parent.get("pid"), "process.parent.pid"), user,
                   self._text_field(proc.get("entity_id"), "process.entity_id"))
        elif table == "config_change":
            path = self._text_field(dig(doc, "registry.path"), "registry.path")
            if path is None:
                hive, key = _str(dig(doc, "registry.hive")), _str(dig(doc, "registry.key"))
                value = _str(dig(doc, "registry.value"))
                path = "\\".join(p for p in (hive, key, value) if p) or None
            strings = dig(doc, "registry.data.strings")
            if type(strings) is list:
                detail = " ".join(s for s in (_str(x) for x in strings) if s) or None
            else:
                detail = self._text_field(strings, "registry.data.strings")
            row = (ts, rec, host, platform, "registry", code,
                   self._registry_action(doc, action, detail),
                   _hive(path) if path else None, detail, image, pid, user)
        else:  # dns
            answers = self._answers(doc)
            rcode = _str(dig(doc, "dns.response_code"))
            proto = _str(dig(doc, "network.transport"))
            row = (ts, rec, host, platform, _str(dig(doc, "dns.question.name")), answers,
                   rcode.upper() if rcode else None, pid, image,
                   self._text_field(dig(doc, "source.ip"), "source.ip"),
                   self._port(dig(doc, "source.port"), "source.port"),
                   self._text_field(dig(doc, "destination.ip"), "destination.ip"),
                   self._port(dig(doc, "destination.port"), "destination.port"),
                   proto.lower() if proto else None, self._dns_id(dig(doc, "dns.id")))
        self.sink.emit(table, LAYOUT[table], row)

    # field readers
    def _ts(self, raw: Any) -> int | None:
        if type(raw) is str:
            try:
                return self._parse_time(raw)
            except ValueError:
                self.sink.error(self.where(), f"bad @timestamp {raw[:40]!r}")
                return None
        if type(raw) is int and 0 < raw < _MAX_EPOCH_MS:
            return raw * 1000  # epoch milliseconds, as Elasticsearch exports dates
        if type(raw) is float and 0 < raw < _MAX_EPOCH_MS:
            return int(raw * 1000)
        self.sink.error(self.where(), "no @timestamp" if raw is None else
                        f"bad @timestamp {str(raw)[:40]!r}")
        return None

    def _parse_time(self, s: str) -> int:
        # Events of one file share whole seconds: cache the second, parse the fraction.
        if len(s) >= 20 and s[-1] == "Z" and s[4:5] == "-" and s[10:11] in ("T", " ") and \
                (len(s) == 20 or s[19] == "."):
            head = s[:19]
            base = self._seconds.get(head)
            if base is None:
                base = iso_to_us(head)
                if len(self._seconds) > 4096:
                    self._seconds.clear()
                self._seconds[head] = base
            frac = s[20:-1]
            if not frac:
                return base
            if frac.isdigit() and frac.isascii():
                return base + int((frac + "000000")[:6])
        return iso_to_us(s)

    def _text_field(self, v: Any, field: str) -> str | None:
        if v is None or type(v) is str:
            return v or None
        if type(v) is int or type(v) is float:
            return str(v)
        if type(v) is list and len(v) == 1 and type(v[0]) is str:
            return v[0] or None
        self.bad(field, orjson.dumps(v, option=orjson.OPT_NON_STR_KEYS).decode()
                 if type(v) in (dict, list) else v, "text")
        return None

    def _int(self, v: Any, field: str) -> int | None:
        if type(v) is int:
            if _I64_MIN <= v <= _I64_MAX:
                return v
        elif v is None:
            return None
        elif type(v) is str:
            s = v.strip()
            if s in ("", "-"):
                return None
            if (s.isdigit() or (s[:1] == "-" and s[1:].isdigit())) and len(s) < 19:
                return int(s)
        elif type(v) is float and v.is_integer() and abs(v) < 2**63:
            return int(v)
        self.bad(field, v, "an integer")
        return None

    def _port(self, v: Any, field: str) -> int | None:
        if type(v) is int and 0 <= v <= 65535:
            return v
        if type(v) is str and not v.strip():
            return None
        n = self._int(v, field) if type(v) is not int else v
        if n is None:
            return None
        if not 0 <= n <= 65535:
            self.bad(field, v, "a port number")
            return None
        return n

    def _dns_id(self, v: Any) -> int | None:
        n = self._int(v, "dns.id")
        return n if n is None or 0 <= n <= 0xFFFF else None

    def _user(self, doc: dict[str, Any], platform: str | None) -> str | None:
        name = _str(dig(doc, "user.name"))
        if name is None:
            return None
        domain = _str(dig(doc, "user.domain"))
        if platform == "windows" and domain:
            return f"{domain}\\{name}"
        return name

    def _command_line(self, proc: dict[str, Any], field: str, platform: str | None) -> \
            str | None:
        cl = proc.get("command_line")
        if cl is not None:
            return self._text_field(cl, f"{field}.command_line")
        args = proc.get("args")
        if type(args) is str:
            return args or None
        if type(args) is list and args:
            words = [a if type(a) is str else _str(a) for a in args]
            if all(w is not None for w in words):
                return join_args([w for w in words if w is not None], platform)
            self.bad(f"{field}.args", orjson.dumps(args).decode(), "a list of strings")
        return None

    def _registry_action(self, doc: dict[str, Any], action: str | None,
                         detail: str | None) -> str | None:
        """Endpoint / ECS registry actions in Sysmon's EventType vocabulary."""
        types = _strs(dig(doc, "event.type"))
        act = action.lower() if action else ""
        has_value = dig(doc, "registry.value") is not None or detail is not None
        if "deletion" in types or act in ("deletion", "delete", "deleted"):
            return "DeleteValue" if has_value else "DeleteKey"
        if act in ("modification", "change", "changed", "set", "setvalue") or \
                "change" in types:
            return "SetValue"
        if "creation" in types or act in ("creation", "create", "created"):
            return "SetValue" if has_value else "CreateKey"
        return action

    def _answers(self, doc: dict[str, Any]) -> list[str] | None:
        out: list[str] = []
        answers = dig(doc, "dns.answers")
        if type(answers) is dict:
            answers = [answers]
        if type(answers) is list:
            for a in answers:
                data = a.get("data") if type(a) is dict else a
                if type(data) is str and data:
                    out.append(data)
        if not out:
            resolved = dig(doc, "dns.resolved_ip")
            if type(resolved) is str:
                resolved = [resolved]
            if type(resolved) is list:
                out = [r for r in resolved if type(r) is str and r]
        return out or None


@register
class EcsFormat(Format):
    name: ClassVar[str] = "ecs"
    description: ClassVar[str] = (
        "Elastic Common Schema documents (Elastic Endpoint, Elastic Agent, Elastic Security): "
        "NDJSON, pretty-printed JSON or arrays, Elasticsearch hits and search responses")
    tables: ClassVar[tuple[str, ...]] = ("process", "netconn", "config_change", "dns")

    @classmethod
    def sniff(cls, head: bytes, path: Path) -> bool:
        if head.lstrip()[:1] not in (b"{", b"["):
            return False
        doc = _first_document(head)
        if doc is None:
            # A first document longer than the sniffed head: look for endpoint markers.
            return (b'"endpoint.events.' in head or b'"type":"endpoint"' in head or
                    re.search(rb'"type"\s*:\s*"endpoint"', head) is not None) and \
                b'"winlog"' not in head and b'"event_type"' not in head
        return is_ecs_document(doc)

    def read(self, ctx: IngestContext, sink: RowSink) -> None:
        _Reader(ctx, sink).run()
