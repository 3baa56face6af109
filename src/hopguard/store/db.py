"""One DuckDB file holds every table of ``hopguard.model``.

Theory of operation: ``Store.open`` creates the file, or checks and migrates an existing one.
The schema version lives in ``hg_meta``; ``MIGRATIONS`` upgrades step by step, and additive model
changes (a new table, a new nullable column) are applied automatically, so files written by older
versions keep working. Each input file is ingested inside one transaction (``Store.file``): rows of
a file that fails or is killed part way are never committed, and DuckDB's write-ahead log discards
them on the next open. ``source_file`` records each ingested file by SHA-256 of its bytes; a file
whose hash is present is not ingested again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from hopguard.errors import QueryError, StoreError
from hopguard.model import TABLES

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1


def duck_type(t: pa.DataType) -> str:
    if pa.types.is_timestamp(t):
        return "TIMESTAMP"
    if pa.types.is_string(t):
        return "VARCHAR"
    if pa.types.is_int64(t):
        return "BIGINT"
    if pa.types.is_int32(t):
        return "INTEGER"
    if pa.types.is_float64(t):
        return "DOUBLE"
    if pa.types.is_boolean(t):
        return "BOOLEAN"
    if pa.types.is_list(t):
        return duck_type(t.value_type) + "[]"
    raise TypeError(f"no DuckDB type for {t}")


def _create_table_sql(name: str) -> str:
    cols = ", ".join(f'"{c.name}" {duck_type(c.type)}' for c in TABLES[name].columns)
    return f'CREATE TABLE IF NOT EXISTS "{name}" ({cols})'


def _migration_1(con: duckdb.DuckDBPyConnection) -> None:
    con.execute("CREATE SEQUENCE IF NOT EXISTS source_file_id START 1")
    con.execute(
        "CREATE TABLE IF NOT EXISTS source_file ("
        " id BIGINT PRIMARY KEY, path VARCHAR NOT NULL, sha256 VARCHAR NOT NULL UNIQUE,"
        " size BIGINT, format VARCHAR, sensor VARCHAR, ingested_at TIMESTAMP,"
        " rows BIGINT, errors BIGINT, skipped BIGINT)")
    for name in TABLES:
        con.execute(_create_table_sql(name))


MIGRATIONS: dict[int, Callable[[duckdb.DuckDBPyConnection], None]] = {1: _migration_1}


@dataclass(frozen=True, slots=True, kw_only=True)
class SourceFile:
    id: int
    path: str
    sha256: str
    format: str
    rows: int
    ingested_at: datetime


class Store:
    """A DuckDB database holding every hopguard table."""

    def __init__(self, con: duckdb.DuckDBPyConnection, path: str) -> None:
        self.con = con
        self.path = path

    @classmethod
    def open(cls, path: str | Path, *, read_only: bool = False, threads: int = 0,
             memory_limit: str = "") -> Store:
        path = str(path)
        if read_only and path != ":memory:" and not Path(path).exists():
            raise StoreError(f"no store at {path} (ingest something first)")
        config: dict[str, Any] = {}
        if threads:
            config["threads"] = threads
        if memory_limit:
            config["memory_limit"] = memory_limit
        try:
            con = duckdb.connect(path, read_only=read_only, config=config)
        except duckdb.IOException as exc:
            msg = str(exc).split("\n")[0]
            if "lock" in msg.lower():
                raise StoreError(f"the store {path} is in use by another process (another "
                                 "hopguard run?)") from None
            raise StoreError(f"cannot open the store {path}: {msg}") from None
        except duckdb.Error as exc:
            raise StoreError(f"cannot open the store {path}: {exc}") from None
        store = cls(con, path)
        if not read_only:
            store._migrate()
        else:
            store._check_version()
        return store

    def close(self) -> None:
        self.con.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- schema -------------------------------------------------------------------------

    def schema_version(self) -> int:
        exists = self._scalar(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = 'hg_meta'")
        if not exists:
            return 0
        value = self._scalar("SELECT value FROM hg_meta WHERE key = 'schema_version'")
        return int(value) if value is not None else 0

    def _scalar(self, sql: str, params: list[Any] | None = None) -> Any:
        """The first column of the first row, or None (fetching the whole result: DuckDB 2
        refuses new work on a connection with an unfinished result)."""
        rows = self.con.execute(sql, params or []).fetchall()
        return rows[0][0] if rows else None

    def _check_version(self) -> None:
        version = self.schema_version()
        if version > SCHEMA_VERSION:
            raise StoreError(f"the store {self.path} has schema version {version}; this hopguard "
                             f"understands up to {SCHEMA_VERSION} (upgrade hopguard)")

    def _migrate(self) -> None:
        self._check_version()
        con = self.con
        version = self.schema_version()
        con.execute("BEGIN TRANSACTION")
        try:
            con.execute(
                "CREATE TABLE IF NOT EXISTS hg_meta (key VARCHAR PRIMARY KEY, value VARCHAR)")
            for step in range(version + 1, SCHEMA_VERSION + 1):
                logger.info("migrating %s to schema version %d", self.path, step)
                MIGRATIONS[step](con)
            self._add_missing(con)
            con.execute("INSERT OR REPLACE INTO hg_meta VALUES ('schema_version', ?)",
                        [str(SCHEMA_VERSION)])
            con.execute("COMMIT")
        except duckdb.Error as exc:
            con.execute("ROLLBACK")
            raise StoreError(f"cannot migrate the store {self.path}: {exc}") from None

    @staticmethod
    def _add_missing(con: duckdb.DuckDBPyConnection) -> None:
        """Additive model changes: new tables and new (nullable) columns."""
        have: dict[str, set[str]] = {}
        for tname, cname in con.execute(
                "SELECT table_name, column_name FROM information_schema.columns").fetchall():
            have.setdefault(tname, set()).add(cname)
        for name, tbl in TABLES.items():
            if name not in have:
                con.execute(_create_table_sql(name))
                continue
            for col in tbl.columns:
                if col.name not in have[name]:
                    con.execute(f'ALTER TABLE "{name}" ADD COLUMN "{col.name}" '
                                f"{duck_type(col.type)}")

    # -- files and writes ---------------------------------------------------------------

    def find_file(self, sha256: str) -> SourceFile | None:
        rows = self.con.execute(
            "SELECT id, path, sha256, format, rows, ingested_at FROM source_file WHERE sha256 = ?",
            [sha256]).fetchall()
        if not rows:
            return None
        row = rows[0]
        return SourceFile(id=row[0], path=row[1], sha256=row[2], format=row[3], rows=row[4],
                          ingested_at=row[5])

    @contextmanager
    def file(self, *, path: str, sha256: str, size: int, fmt: str, sensor: str) -> Iterator[int]:
        """A transaction for one input file; yields its file id. Commits only on success."""
        con = self.con
        con.execute("BEGIN TRANSACTION")
        try:
            file_id = self._scalar("SELECT nextval('source_file_id')")
            con.execute(
                "INSERT INTO source_file (id, path, sha256, size, format, sensor, ingested_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                [file_id, path, sha256, size, fmt, sensor, datetime.now(UTC).replace(tzinfo=None)])
            yield int(file_id)
            con.execute("COMMIT")
        except BaseException:
            try:
                con.execute("ROLLBACK")
            except duckdb.Error:  # pragma: no cover - connection already broken
                logger.exception("rollback failed")
            raise

    def set_file_sha256(self, file_id: int, sha256: str) -> None:
        """The content hash of a file whose hash was computed while it was read."""
        self.con.execute("UPDATE source_file SET sha256 = ? WHERE id = ?", [sha256, file_id])

    def finish_file(self, file_id: int, *, rows: int, errors: int, skipped: int) -> None:
        self.con.execute("UPDATE source_file SET rows = ?, errors = ?, skipped = ? WHERE id = ?",
                         [rows, errors, skipped, file_id])

    def write(self, table_name: str, batch: pa.Table) -> None:
        """Append an Arrow batch whose schema is the model's (inside the caller's transaction)."""
        self.con.register("_hg_batch", batch)
        try:
            self.con.execute(f'INSERT INTO "{table_name}" BY NAME SELECT * FROM _hg_batch')
        finally:
            self.con.unregister("_hg_batch")

    def fill_host(self, file_id: int, host: str, tables: list[str]) -> None:
        """Name the host of one file's endpoint rows where the input did not."""
        for name in tables:
            if "host" in TABLES[name].names:
                self.con.execute(f'UPDATE "{name}" SET host = ? WHERE file_id = ? AND host IS NULL',
                                 [host, file_id])

    def delete_file_rows(self, file_id: int, tables: list[str]) -> None:
        for name in tables:
            self.con.execute(f'DELETE FROM "{name}" WHERE file_id = ?', [file_id])

    def set_meta(self, key: str, value: str) -> None:
        """Keep a small named value with the store (inside the caller's transaction)."""
        self.con.execute("INSERT OR REPLACE INTO hg_meta VALUES (?, ?)", [key, value])

    def meta(self, key: str) -> str | None:
        value = self._scalar("SELECT value FROM hg_meta WHERE key = ?", [key])
        return None if value is None else str(value)

    # -- queries ------------------------------------------------------------------------

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for name in TABLES:
            out[name] = int(self._scalar(f'SELECT count(*) FROM "{name}"'))
        return out

    def query(self, sql: str, params: list[Any] | None = None) -> pa.Table:
        try:
            rel = self.con.sql(sql, params=params or None)
            return rel.to_arrow_table() if rel is not None else pa.table({})
        except duckdb.Error as exc:
            raise QueryError(f"query failed: {str(exc).splitlines()[0]}") from None

    def batches(self, sql: str, rows: int = 50_000) -> Iterator[pa.RecordBatch]:
        """Stream a query's result in Arrow batches (for exports that must not hold it all)."""
        try:
            rel = self.con.sql(sql)
        except duckdb.Error as exc:
            raise QueryError(f"query failed: {str(exc).splitlines()[0]}") from None
        if rel is None:
            return
        yield from rel.to_arrow_reader(rows)

    def export_parquet(self, directory: Path, tables: list[str] | None = None) -> dict[str, int]:
        directory.mkdir(parents=True, exist_ok=True)
        out: dict[str, int] = {}
        for name in tables or [*TABLES, "source_file"]:
            target = directory / f"{name}.parquet"
            self.con.execute(f"COPY \"{name}\" TO '{_sql_str(str(target))}' (FORMAT PARQUET)")
            out[name] = int(self._scalar(f'SELECT count(*) FROM "{name}"'))
        return out


def _sql_str(s: str) -> str:
    return s.replace("'", "''")
