"""Ingest one file end to end: hash, detect, read inside one store transaction, report."""

from __future__ import annotations

import hashlib
import logging
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hopguard.ingest.formats  # noqa: F401  (registers every format)
from hopguard.errors import HopguardError, InputError, SourceLocation
from hopguard.ingest.base import (
    FORMATS,
    Format,
    IngestContext,
    IngestStats,
    RetryWithoutFastPath,
    RowSink,
    detect_format,
    read_head,
)
from hopguard.store import Store

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class FileResult:
    path: Path
    format: str
    stats: IngestStats
    duplicate_of: str | None = None  # path of the earlier copy, when already stored
    failure: HopguardError | None = None  # the file could not be stored at all

    @property
    def usable(self) -> bool:
        return self.failure is None and (self.duplicate_of is not None or self.stats.rows > 0)


def sha256_file(path: Path, progress: Callable[[int], None] | None = None) -> str:
    h = hashlib.sha256()
    done = 0
    buf = bytearray(8 << 20)  # one buffer read into again and again: no copy per chunk
    view = memoryview(buf)
    with path.open("rb", buffering=0) as fh:
        while n := fh.readinto(buf):
            h.update(view[:n])
            done += n
            if progress is not None:
                progress(done)
    return h.hexdigest()


def ingest_file(store: Store, path: Path, *, sensor: str, fmt: str | None = None,
                host: str | None = None,
                batch_rows: int = 50_000, max_shown: int = 5, max_record_bytes: int = 4 << 20,
                fast_zeek_tsv: bool = True, flow: Any = None,
                progress: Callable[[int], None] | None = None,
                on_rows: Callable[[int], None] | None = None) -> FileResult:
    """Store one file atomically. Bad records are counted in the result; a file that cannot
    be read at all comes back with ``failure`` set (nothing of it is stored)."""
    try:
        if not path.is_file():
            raise InputError("no such file", SourceLocation(path=str(path)))
        head, gz = read_head(path)
        cls = FORMATS[fmt] if fmt else detect_format(path, head)
    except HopguardError as exc:
        return FileResult(path=path, format=fmt or "?", stats=IngestStats(), failure=exc)
    size = path.stat().st_size
    hasher: _Hasher | None = None
    digest: str | None = None
    if size >= HASH_ALONGSIDE_BYTES:
        # A large file is hashed while it is read (the hash costs seconds per GB); whether it
        # is a duplicate is then decided just before the commit.
        hasher = _Hasher(path)
    else:
        try:
            digest = sha256_file(path)
        except OSError as exc:
            return FileResult(path=path, format=cls.name, stats=IngestStats(),
                              failure=InputError(f"cannot read: {exc.strerror}",
                                                 SourceLocation(path=str(path))))
        earlier = store.find_file(digest)
        if earlier is not None:
            return FileResult(path=path, format=cls.name, stats=IngestStats(),
                              duplicate_of=earlier.path)
    ctx = IngestContext(path=path, gzipped=gz, head=head, max_record_bytes=max_record_bytes,
                        fast_zeek_tsv=fast_zeek_tsv, store=store, progress=progress,
                        flow=flow)
    for attempt in (1, 2):
        try:
            return _ingest_once(store, ctx, cls, digest=digest, hasher=hasher, size=size,
                                sensor=sensor, host=host, batch_rows=batch_rows,
                                max_shown=max_shown, on_rows=on_rows)
        except RetryWithoutFastPath:
            if attempt == 2:
                raise
            ctx.fast_zeek_tsv = False
    raise AssertionError("unreachable")


def _ingest_once(store: Store, ctx: IngestContext, cls: type[Format], *, digest: str | None,
                 hasher: _Hasher | None, size: int, sensor: str, host: str | None,
                 batch_rows: int, max_shown: int,
                 on_rows: Callable[[int], None] | None) -> FileResult:
    path = ctx.path
    try:
        with store.file(path=str(path), sha256=digest or f"pending:{uuid.uuid4()}", size=size,
                        fmt=cls.name, sensor=sensor) as file_id:
            sink = RowSink(write=store.write, file_id=file_id, sensor=sensor, path=str(path),
                           batch_rows=batch_rows, max_shown=max_shown, on_rows=on_rows)
            cls().read(ctx, sink)
            sink.flush()
            stats = sink.stats
            if host is not None:
                store.fill_host(file_id, host, [t for t in stats.added if stats.added[t]])
            store.finish_file(file_id, rows=stats.rows, errors=stats.errors,
                              skipped=sum(stats.skipped.values()))
            if hasher is not None:
                digest = hasher.result()
                earlier = store.find_file(digest)
                if earlier is not None:
                    raise _Duplicate(earlier.path)  # rolls the copy back
                store.set_file_sha256(file_id, digest)
            if stats.rows == 0:
                # Nothing usable: roll back, so that a repaired copy can be ingested later.
                raise _NothingUsable(stats)
    except _Duplicate as dup:
        return FileResult(path=path, format=cls.name, stats=IngestStats(),
                          duplicate_of=dup.earlier)
    except _NothingUsable as exc:
        return FileResult(path=path, format=cls.name, stats=exc.stats,
                          failure=_nothing_usable(path, exc.stats))
    return FileResult(path=path, format=cls.name, stats=stats)


HASH_ALONGSIDE_BYTES = 256 << 20


class _Hasher:
    """SHA-256 of a file in a thread (hashlib and file reads release the GIL)."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._digest: str | None = None
        self._error: OSError | None = None
        self._thread = threading.Thread(target=self._run, name="hopguard-hash", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._digest = sha256_file(self._path)
        except OSError as exc:
            self._error = exc

    def result(self) -> str:
        self._thread.join()
        if self._error is not None or self._digest is None:
            reason = self._error.strerror if self._error is not None else "no digest"
            raise InputError(f"cannot read: {reason}", SourceLocation(path=str(self._path)))
        return self._digest


class _Duplicate(Exception):
    def __init__(self, earlier: str) -> None:
        super().__init__("duplicate")
        self.earlier = earlier


class _NothingUsable(Exception):
    def __init__(self, stats: IngestStats) -> None:
        super().__init__("nothing usable")
        self.stats = stats


def _nothing_usable(path: Path, stats: IngestStats) -> InputError:
    if stats.errors:
        first = stats.shown[0] if stats.shown else None
        msg = f"nothing usable: {stats.errors} bad records"
        if first is not None:
            msg += f", the first: {first.message}"
            return InputError(msg, first.location)
        return InputError(msg, SourceLocation(path=str(path)))
    return InputError("nothing usable: no records of a kind hopguard stores",
                      SourceLocation(path=str(path)))
