"""The packet engine on cut and corrupted captures: rows up to the damage plus a located error,
never a traceback, and nothing stored for a file that is refused."""

from __future__ import annotations

import gzip
import io
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hopguard.errors import InputError
from hopguard.ingest.capture import read_packets
from hopguard.ingest.pipeline import FileResult, ingest_file
from hopguard.store import Store
from tests.conftest import ROOT

# The first 400 packets of a lab capture: TLS, HTTP through a relay, DNS, SSH.
_LAB = gzip.decompress((ROOT / "examples" / "lab" / "socks-servers" / "capture.pcap.gz")
                       .read_bytes())
_END = next(off for i, (_, _, _, off) in enumerate(read_packets(io.BytesIO(_LAB))) if i == 400)
SAMPLES = {"lab.pcap": _LAB[:_END]}
FAST = settings(max_examples=40, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def ingest_bytes(data: bytes, name: str) -> FileResult:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / name
        path.write_bytes(data)
        store = Store.open(":memory:")
        try:
            result = ingest_file(store, path, sensor="p", fmt="pcap")
            stored = sum(store.counts().values())
        finally:
            store.close()
    if result.failure is not None:
        assert isinstance(result.failure, InputError)
        assert result.failure.location is not None
        assert result.failure.location.path == str(path)
        assert stored == 0
    else:
        assert result.stats.rows == stored > 0
    for e in result.stats.shown:
        assert e.location.path == str(path)
        assert e.location.offset is not None or e.location.record is not None
    return result


@FAST
@given(cut=st.integers(min_value=0, max_value=len(SAMPLES["lab.pcap"])))
def test_cut_anywhere(cut: int) -> None:
    data = SAMPLES["lab.pcap"]
    result = ingest_bytes(data[:cut], "lab.pcap")
    if cut > 24 + 2000 and result.failure is None:
        # everything before the cut still gives rows
        assert result.stats.added.get("flow", 0) >= 1


@FAST
@given(edits=st.lists(st.tuples(st.integers(min_value=0), st.integers(0, 255)), min_size=1,
                      max_size=30))
def test_flipped_bytes(edits: list[tuple[int, int]]) -> None:
    data = bytearray(SAMPLES["lab.pcap"])
    for pos, value in edits:
        data[pos % len(data)] = value
    ingest_bytes(bytes(data), "lab.pcap")


@FAST
@given(cut=st.integers(min_value=10, max_value=len(SAMPLES["lab.pcap"]) // 2))
def test_cut_gzip(cut: int) -> None:
    ingest_bytes(gzip.compress(SAMPLES["lab.pcap"])[:cut], "lab.pcap.gz")
