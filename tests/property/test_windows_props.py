"""Damaged Windows inputs give rows or located errors, never a traceback."""

from __future__ import annotations

import gzip
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hopguard.ingest.pipeline import FileResult, ingest_file
from hopguard.store import Store

DATA = Path(__file__).resolve().parents[1] / "data" / "windows"
JSONL = b"".join((DATA / name).read_bytes()
                 for name in ("winlogbeat.jsonl", "nxlog.jsonl", "otrf.jsonl"))
ENDPOINT = Path(__file__).resolve().parents[3] / "shared" / "data" / "endpoint"
EVTX = ENDPOINT / "sbousseaden+EVTX-ATTACK-SAMPLES" / "Command and Control" / \
    "DE_sysmon-3-rdp-tun.evtx"

SETTINGS = settings(max_examples=50, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

mutations = st.lists(st.tuples(st.integers(min_value=0), st.integers(0, 255)), max_size=25)


def mutate(data: bytes, cut: int, changes: list[tuple[int, int]]) -> bytes:
    out = bytearray(data[: cut % (len(data) + 1)])
    for pos, value in changes:
        if out:
            out[pos % len(out)] = value
    return bytes(out)


def ingest_bytes(data: bytes, name: str, fmt: str | None = "windows") -> FileResult:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        path.write_bytes(data)
        store = Store.open(":memory:")
        try:
            return ingest_file(store, path, sensor="prop", fmt=fmt, max_shown=1000)
        finally:
            store.close()


def check(result: FileResult) -> None:
    """Rows or a located failure; every reported error has a location inside the file."""
    if result.failure is not None:
        assert result.failure.location is not None
        assert result.stats.rows == 0
    else:
        assert result.stats.rows > 0
    for err in result.stats.shown:
        loc = err.location
        assert loc.line is not None or loc.offset is not None or loc.record is not None or \
            "not a readable EVTX" in err.message or "nothing" in err.message, err


@SETTINGS
@given(cut=st.integers(min_value=0), changes=mutations)
def test_mutated_json_lines(cut: int, changes: list[tuple[int, int]]) -> None:
    check(ingest_bytes(mutate(JSONL, cut, changes), "events.jsonl"))


@SETTINGS
@given(cut=st.integers(min_value=0), changes=mutations)
def test_mutated_json_lines_detected(cut: int, changes: list[tuple[int, int]]) -> None:
    """Without a forced format: either recognised as something, or refused with a location."""
    result = ingest_bytes(mutate(JSONL, cut, changes), "events.jsonl", fmt=None)
    assert result.failure is None or result.failure.location is not None


@SETTINGS
@given(cut=st.integers(min_value=0), changes=mutations)
def test_mutated_gzip_json_lines(cut: int, changes: list[tuple[int, int]]) -> None:
    check(ingest_bytes(mutate(gzip.compress(JSONL), cut, changes), "events.jsonl.gz"))


@SETTINGS
@given(lines=st.lists(st.binary(max_size=200), max_size=20))
def test_arbitrary_lines(lines: list[bytes]) -> None:
    check(ingest_bytes(b"\n".join(lines), "junk.jsonl"))


@pytest.fixture(scope="module")
def evtx_bytes() -> bytes:
    if not EVTX.is_file():
        pytest.skip(f"endpoint corpus not found at {ENDPOINT}")
    return EVTX.read_bytes()


@settings(max_examples=40, deadline=None, suppress_health_check=[
    HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture])
@given(cut=st.integers(min_value=0), changes=mutations,
       chunk_only=st.booleans())
def test_mutated_evtx(evtx_bytes: bytes, cut: int, changes: list[tuple[int, int]],
                      chunk_only: bool) -> None:
    if chunk_only:  # keep the file header intact so that the chunk parser is exercised
        cut = 4096 + cut % (len(evtx_bytes) - 4096 + 1)
        changes = [(4096 + pos % (len(evtx_bytes) - 4096), v) for pos, v in changes]
    check(ingest_bytes(mutate(evtx_bytes, cut, changes), "events.evtx"))
