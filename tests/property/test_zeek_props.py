"""Zeek readers on truncated and mutated input: rows or located errors, never a traceback."""

from __future__ import annotations

import gzip
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hopguard.errors import InputError
from hopguard.ingest.pipeline import FileResult, ingest_file
from hopguard.store import Store
from tests.conftest import DATA

SAMPLES = {name: (DATA / "zeek" / name).read_bytes() for name in
           ("conn.log", "http.log", "socks.log")}
FAST = settings(max_examples=40, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def ingest_bytes(data: bytes, name: str, *, fast: bool = True) -> FileResult:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / name
        path.write_bytes(data)
        store = Store.open(":memory:")
        try:
            result = ingest_file(store, path, sensor="p", fast_zeek_tsv=fast)
            stored = sum(store.counts().values())
        finally:
            store.close()
    check(result, stored, str(path))
    return result


def check(result: FileResult, stored: int, path: str) -> None:
    if result.failure is not None:
        assert isinstance(result.failure, InputError)
        assert result.failure.location is not None
        assert result.failure.location.path == path
        assert stored == 0  # a refused file leaves nothing behind
    else:
        assert result.stats.rows == stored > 0
    for e in result.stats.shown:
        assert e.location.path == path
        assert e.location.line is not None or e.location.offset is not None


@FAST
@given(name=st.sampled_from(sorted(SAMPLES)), cut=st.integers(min_value=0, max_value=2000),
       fast=st.booleans())
def test_truncated(name: str, cut: int, fast: bool) -> None:
    data = SAMPLES[name]
    ingest_bytes(data[: cut % (len(data) + 1)], name, fast=fast)


@FAST
@given(name=st.sampled_from(sorted(SAMPLES)),
       edits=st.lists(st.tuples(st.integers(min_value=0), st.binary(min_size=0, max_size=4)),
                      min_size=1, max_size=8),
       fast=st.booleans())
def test_mutated(name: str, edits: list[tuple[int, bytes]], fast: bool) -> None:
    data = bytearray(SAMPLES[name])
    for pos, new in edits:
        p = pos % (len(data) + 1)
        data[p: p + len(new)] = new
    ingest_bytes(bytes(data), name, fast=fast)


@FAST
@given(name=st.sampled_from(sorted(SAMPLES)), cut=st.integers(min_value=0, max_value=4000))
def test_truncated_gzip(name: str, cut: int) -> None:
    gz = gzip.compress(SAMPLES[name])
    ingest_bytes(gz[: cut % (len(gz) + 1)], name + ".gz")
