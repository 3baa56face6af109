"""The store: schema creation, versioning, additive migration, atomic files."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pyarrow as pa
import pytest

from hopguard.errors import QueryError, StoreError
from hopguard.model import TABLES, arrow_schema
from hopguard.store import SCHEMA_VERSION, Store


def test_new_store_has_every_table(tmp_path: Path) -> None:
    with Store.open(tmp_path / "s.duckdb") as s:
        assert s.schema_version() == SCHEMA_VERSION
        assert set(s.counts()) == set(TABLES)
        for name in TABLES:
            cols = [r["column_name"] for r in s.query(
                "SELECT column_name FROM information_schema.columns WHERE table_name = ? "
                "ORDER BY ordinal_position", [name]).to_pylist()]
            assert cols == TABLES[name].names


def test_reopen_keeps_rows_and_version(tmp_path: Path) -> None:
    db = tmp_path / "s.duckdb"
    with Store.open(db) as s, s.file(path="a", sha256="h1", size=1, fmt="zeek",
                                     sensor="x") as fid:
        batch = pa.Table.from_pylist([{"uid": "C1", "file_id": fid}], schema=arrow_schema("flow"))
        s.write("flow", batch)
    with Store.open(db, read_only=True) as s:
        assert s.counts()["flow"] == 1
        assert s.find_file("h1") is not None


def test_failed_file_leaves_nothing(tmp_path: Path) -> None:
    db = tmp_path / "s.duckdb"
    with Store.open(db) as s:
        with pytest.raises(RuntimeError), s.file(path="a", sha256="h1", size=1, fmt="zeek",
                                                 sensor="x") as fid:
            s.write("flow", pa.Table.from_pylist([{"uid": "C1", "file_id": fid}],
                                                 schema=arrow_schema("flow")))
            raise RuntimeError("reader crashed")
        assert s.counts()["flow"] == 0 and s.find_file("h1") is None


def test_additive_migration_adds_missing_columns(tmp_path: Path) -> None:
    db = tmp_path / "old.duckdb"
    with Store.open(db):
        pass
    con = duckdb.connect(str(db))
    con.execute('ALTER TABLE flow DROP COLUMN "community_id"')
    con.execute("DROP TABLE ssh")
    con.close()
    with Store.open(db) as s:
        assert "ssh" in s.counts()
        cols = {r["column_name"] for r in s.query(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'flow'"
        ).to_pylist()}
        assert "community_id" in cols


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "new.duckdb"
    with Store.open(db) as s:
        s.con.execute("UPDATE hg_meta SET value = '999' WHERE key = 'schema_version'")
    with pytest.raises(StoreError, match="schema version 999"):
        Store.open(db)


def test_missing_store_read_only(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="no store"):
        Store.open(tmp_path / "absent.duckdb", read_only=True)


def test_bad_query_is_a_query_error(store: Store) -> None:
    with pytest.raises(QueryError, match="query failed"):
        store.query("SELECT * FROM nowhere")


def test_export_parquet(tmp_path: Path, ingest, store: Store) -> None:  # type: ignore[no-untyped-def]
    from tests.conftest import DATA
    ingest(DATA / "zeek" / "conn.log")
    counts = store.export_parquet(tmp_path / "pq", ["flow", "source_file"])
    assert counts == {"flow": 4, "source_file": 1}
    import pyarrow.parquet as pq
    t = pq.read_table(tmp_path / "pq" / "flow.parquet")
    assert t.num_rows == 4 and "src_ip" in t.column_names
