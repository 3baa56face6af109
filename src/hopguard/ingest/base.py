"""The ingest contract: formats, the row sink they write to, and located record errors.

Theory of operation: ``ingest_file`` (pipeline.py) opens an input through ``open_input``, which
hides gzip and counts raw bytes, then asks every registered ``Format`` whether it recognises the
first 64 KiB of (decompressed) content. The chosen format's ``read`` walks the input and calls
``sink.add(table, row)`` for each row and ``sink.error(where, message)`` for each record it cannot
use; it never raises for bad records. Rows are plain dicts keyed by column name; timestamps are
integer microseconds since the epoch (UTC). The sink buffers rows per table column by column and
hands full batches to the store as Arrow tables.
"""

from __future__ import annotations

import gzip
import io
import logging
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, ClassVar, cast

import orjson
import pyarrow as pa

from hopguard.errors import InputError, SourceLocation, UnknownFormatError
from hopguard.model import arrow_schema, table

logger = logging.getLogger(__name__)

SNIFF_BYTES = 64 * 1024
GZIP_MAGIC = b"\x1f\x8b"

Row = dict[str, Any]


@dataclass(slots=True)
class RecordError:
    """One record that could not be used, and where it is."""

    location: SourceLocation
    message: str

    def __str__(self) -> str:
        return f"{self.message} ({self.location})"


@dataclass(slots=True)
class IngestStats:
    """What one file contributed: rows added and records skipped per table, errors."""

    added: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)
    errors: int = 0
    shown: list[RecordError] = field(default_factory=list)
    records: int = 0

    @property
    def rows(self) -> int:
        return sum(self.added.values())

    def absorb(self, part: IngestStats, *, max_shown: int, rows: bool = True) -> None:
        """Add another part's counts (a live segment, a reader process). ``rows=False`` leaves
        ``added`` alone, for parts whose rows were counted as they were stored."""
        if rows:
            for k, v in part.added.items():
                self.added[k] = self.added.get(k, 0) + v
        for k, v in part.skipped.items():
            self.skipped[k] = self.skipped.get(k, 0) + v
        self.errors += part.errors
        self.records += part.records
        self.shown.extend(part.shown[: max(0, max_shown - len(self.shown))])


class RowSink:
    """Buffers rows per table, column by column, and flushes batches through ``write``.

    ``write(table_name, arrow_table)`` is called with at most ``batch_rows`` rows at a time.
    Errors beyond ``max_shown`` are counted but not kept.
    """

    def __init__(self, *, write: Callable[[str, pa.Table], None], file_id: int, sensor: str,
                 path: str, batch_rows: int = 50_000, max_shown: int = 5,
                 on_rows: Callable[[int], None] | None = None) -> None:
        self._write = write
        self._on_rows = on_rows
        self.file_id = file_id
        self.sensor = sensor
        self.path = path
        self.batch_rows = batch_rows
        self.max_shown = max_shown
        self.stats = IngestStats()
        self._columns: dict[str, dict[str, list[Any]]] = {}
        self._tuples: dict[tuple[str, tuple[str, ...]], list[tuple[Any, ...]]] = {}
        self._counts: dict[str, int] = {}

    def add(self, table_name: str, row: Row) -> None:
        cols = self._columns.get(table_name)
        if cols is None:
            cols = {name: [] for name in table(table_name).names}
            self._columns[table_name] = cols
            self._counts[table_name] = 0
        row.setdefault("sensor", self.sensor)
        row["file_id"] = self.file_id
        get = row.get
        for name, values in cols.items():
            values.append(get(name))
        n = self._counts[table_name] + 1
        self._counts[table_name] = n
        if n >= self.batch_rows:
            self._flush(table_name)

    def emit(self, table_name: str, layout: tuple[str, ...], values: tuple[Any, ...]) -> None:
        """Add a row given as a tuple in ``layout`` order (columns not in it are NULL).

        The fast form of ``add`` for hot readers: no dict per row, and a full batch becomes
        Arrow columns in one step (profiled on Sysmon JSON: about 30 % faster than ``add``).
        ``sensor`` and ``file_id`` come from the sink; ``layout`` must not name them.
        """
        key = (table_name, layout)
        rows = self._tuples.get(key)
        if rows is None:
            rows = self._tuples[key] = []
        rows.append(values)
        if len(rows) >= self.batch_rows:
            self._flush_tuples(key)

    def _flush_tuples(self, key: tuple[str, tuple[str, ...]]) -> None:
        rows = self._tuples.pop(key, None)
        if not rows:
            return
        table_name, layout = key
        n = len(rows)
        columns = dict(zip(layout, zip(*rows, strict=True), strict=True))
        schema = arrow_schema(table_name)
        try:
            arrays = []
            for f in schema:
                if f.name == "sensor":
                    arrays.append(pa.array([self.sensor] * n, type=f.type))
                elif f.name == "file_id":
                    arrays.append(pa.array([self.file_id] * n, type=f.type))
                elif f.name in columns:
                    arrays.append(pa.array(columns[f.name], type=f.type))
                else:
                    arrays.append(pa.nulls(n, type=f.type))
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
            # A value of the wrong type (a reader bug): go row by row, which reports the bad rows.
            for values in rows:
                self.add(table_name, dict(zip(layout, values, strict=True)))
            self._flush(table_name)
            return
        self._write(table_name, pa.Table.from_arrays(arrays, schema=schema))
        self.stats.added[table_name] = self.stats.added.get(table_name, 0) + n
        if self._on_rows is not None:
            self._on_rows(self.stats.rows)

    def skip(self, what: str, n: int = 1) -> None:
        """Count records that are valid but not stored (another event id, another log kind)."""
        self.stats.skipped[what] = self.stats.skipped.get(what, 0) + n

    def record_seen(self, n: int = 1) -> None:
        self.stats.records += n

    def error(self, location: SourceLocation, message: str) -> None:
        self.stats.errors += 1
        if len(self.stats.shown) < self.max_shown:
            self.stats.shown.append(RecordError(location, message))
        logger.debug("bad record at %s: %s", location, message)

    def write_batch(self, table_name: str, batch: pa.Table) -> None:
        """Store a ready Arrow batch of the model's schema (rows made in another process)."""
        self._write(table_name, batch)
        self.added_externally(table_name, batch.num_rows)

    def added_externally(self, table_name: str, n: int) -> None:
        """Rows a format wrote through the store directly (bulk SQL paths)."""
        self.stats.added[table_name] = self.stats.added.get(table_name, 0) + n
        if self._on_rows is not None:
            self._on_rows(self.stats.rows)

    def _flush(self, table_name: str) -> None:
        n = self._counts.get(table_name, 0)
        if not n:
            return
        cols = self._columns[table_name]
        schema = arrow_schema(table_name)
        try:
            arrays = [pa.array(cols[f.name], type=f.type) for f in schema]
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError) as exc:
            # A parser produced a value of the wrong type: a bug, but the batch must not be
            # lost silently. Find the bad rows one by one and report them.
            arrays = self._salvage(table_name, schema, exc)
            n = len(arrays[0]) if arrays else 0
        self._write(table_name, pa.Table.from_arrays(arrays, schema=schema))
        self.stats.added[table_name] = self.stats.added.get(table_name, 0) + n
        if self._on_rows is not None:
            self._on_rows(self.stats.rows)
        self._columns[table_name] = {name: [] for name in cols}
        self._counts[table_name] = 0

    def _salvage(self, table_name: str, schema: pa.Schema, exc: Exception) -> list[pa.Array]:
        cols = self._columns[table_name]
        n = self._counts[table_name]
        keep: list[int] = []
        for i in range(n):
            try:
                for f in schema:
                    pa.array([cols[f.name][i]], type=f.type)
            except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError) as row_exc:
                rec = cols["record"][i]
                self.error(SourceLocation(path=self.path, line=rec),
                           f"{table_name} row has a value of the wrong type: {row_exc}")
                continue
            keep.append(i)
        logger.warning("dropped %d %s rows with bad values: %s", n - len(keep), table_name, exc)
        return [pa.array([cols[f.name][i] for i in keep], type=f.type) for f in schema]

    def flush(self) -> None:
        for key in list(self._tuples):
            self._flush_tuples(key)
        for name in list(self._columns):
            self._flush(name)


@dataclass(slots=True)
class IngestContext:
    """What a format needs besides the sink: the input and the settings that shape reading."""

    path: Path
    gzipped: bool
    head: bytes
    max_record_bytes: int = 4 << 20
    fast_zeek_tsv: bool = True
    store: Any = None  # hopguard.store.Store, for formats with a bulk SQL path
    progress: Callable[[int], None] | None = None  # raw bytes consumed so far
    flow: Any = None  # hopguard.ingest.flows.FlowSettings for packet inputs (None: defaults)


class RetryWithoutFastPath(Exception):
    """Raised by a bulk path that cannot finish; the pipeline retries on the line path."""


class Format:
    """One input format. Subclasses set the ClassVars and implement ``sniff`` and ``read``."""

    name: ClassVar[str]
    description: ClassVar[str]
    tables: ClassVar[tuple[str, ...]]
    binary: ClassVar[bool] = False  # True: read() gets the path, not lines (EVTX)

    @classmethod
    def sniff(cls, head: bytes, path: Path) -> bool:
        raise NotImplementedError

    def read(self, ctx: IngestContext, sink: RowSink) -> None:
        raise NotImplementedError


FORMATS: dict[str, type[Format]] = {}


def register(cls: type[Format]) -> type[Format]:
    FORMATS[cls.name] = cls
    return cls


class CountingReader(io.RawIOBase):
    """Wraps a binary file and reports how many raw bytes were read (for progress)."""

    def __init__(self, raw: IO[bytes], progress: Callable[[int], None] | None) -> None:
        self._raw = raw
        self._progress = progress
        self.consumed = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = self._raw.readinto(buffer)  # type: ignore[attr-defined]
        if n:
            self.consumed += n
            if self._progress is not None:
                self._progress(self.consumed)
        return n or 0

    def close(self) -> None:
        self._raw.close()
        super().close()


def is_gzip(path: Path) -> bool:
    with path.open("rb") as fh:
        return fh.read(2) == GZIP_MAGIC


def read_head(path: Path) -> tuple[bytes, bool]:
    """The first SNIFF_BYTES of content (decompressed) and whether the file is gzip."""
    gz = is_gzip(path)
    try:
        if gz:
            with gzip.open(path, "rb") as fh:
                return _read_upto(cast(IO[bytes], fh), SNIFF_BYTES), True
        with path.open("rb") as fh:
            return fh.read(SNIFF_BYTES), False
    except OSError as exc:
        raise InputError(f"cannot read: {exc.strerror or exc}", SourceLocation(path=str(path))) \
            from None


def _read_upto(fh: IO[bytes], n: int) -> bytes:
    chunks: list[bytes] = []
    got = 0
    try:
        while got < n:
            # Small reads: GzipFile.read() drops what it had inflated in a call that then hits
            # the end of a truncated stream, so a short damaged file would sniff as empty.
            chunk = fh.read(min(4096, n - got))
            if not chunk:
                break
            chunks.append(chunk)
            got += len(chunk)
    except (EOFError, zlib.error, gzip.BadGzipFile):
        pass  # a damaged gzip: sniff what we could read; read() reports the damage
    return b"".join(chunks)


def open_binary(ctx: IngestContext) -> tuple[IO[bytes], CountingReader]:
    raw = CountingReader(ctx.path.open("rb"), ctx.progress)
    buffered = io.BufferedReader(raw, 1 << 20)
    if ctx.gzipped:
        return gzip.GzipFile(fileobj=buffered, mode="rb"), raw  # type: ignore[return-value]
    return buffered, raw


def iter_lines(ctx: IngestContext, sink: RowSink) -> Iterator[tuple[int, bytes]]:
    """Yield (line number, line without EOL) and report damage with its location.

    A truncated or corrupt gzip stream ends the iteration with one located error (the byte
    offset is in the compressed file); every complete line before it has been yielded. Lines
    longer than ``max_record_bytes`` are reported and skipped.
    """
    fh, raw = open_binary(ctx)
    lineno = 0
    limit = ctx.max_record_bytes
    try:
        while True:
            try:
                line = fh.readline(limit + 1)
            except (EOFError, zlib.error, gzip.BadGzipFile, OSError) as exc:
                what = "truncated" if isinstance(exc, EOFError) else "corrupt"
                sink.error(SourceLocation(path=str(ctx.path), offset=raw.consumed),
                           f"gzip stream is {what} after line {lineno}: {exc}")
                return
            if not line:
                return
            lineno += 1
            if len(line) > limit and not line.endswith(b"\n"):
                sink.error(SourceLocation(path=str(ctx.path), line=lineno),
                           f"record longer than {limit} bytes")
                # drain the rest of this over-long line
                while line and not line.endswith(b"\n"):
                    try:
                        line = fh.readline(limit + 1)
                    except (EOFError, zlib.error, gzip.BadGzipFile, OSError):
                        return
                continue
            if line.endswith(b"\n"):
                line = line[:-1]
                if line.endswith(b"\r"):
                    line = line[:-1]
            yield lineno, line
    finally:
        fh.close()


def head_lines(head: bytes, limit: int) -> list[bytes]:
    """The first ``limit`` complete, non-blank lines of a sniffed head, stripped. When the head
    filled SNIFF_BYTES its last line may be cut, so that one is not returned."""
    lines = head.splitlines()
    if len(head) >= SNIFF_BYTES and lines:
        lines = lines[:-1]
    return [ln.strip() for ln in lines if ln.strip()][:limit]


def parse_json_object(line: bytes, where: SourceLocation, sink: RowSink) -> dict[str, Any] | None:
    """One JSON-lines record as a dict, or None after reporting why it is not one."""
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        sink.error(where, f"invalid JSON: {exc}")
        return None
    if not isinstance(obj, dict):
        sink.error(where, "expected a JSON object")
        return None
    return obj


def detect_format(path: Path, head: bytes) -> type[Format]:
    for cls in FORMATS.values():
        try:
            if cls.sniff(head, path):
                return cls
        except Exception:  # a sniffer must never stop detection; treat as "not mine"
            logger.debug("sniffer %s failed on %s", cls.name, path, exc_info=True)
    supported = ", ".join(f"{c.name} ({c.description})" for c in FORMATS.values())
    raise UnknownFormatError(f"unknown input format; supported: {supported}",
                             SourceLocation(path=str(path)))
