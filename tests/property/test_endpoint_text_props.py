"""Truncated and mutated endpoint text logs yield rows or located errors, never a traceback.

Each example is written to a fresh file and stored through ``ingest_file`` with the format
forced (a mutation may well make the sniffer say no, which is not what is under test).
"""

from __future__ import annotations

import gzip
import itertools
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hopguard.errors import InputError
from hopguard.ingest.pipeline import ingest_file
from hopguard.store import Store

ROOT = Path(__file__).resolve().parents[2]
SEEDS = {
    "macos-unifiedlog": [ROOT / "examples" / "mac-alice-unified.ndjson",
                         ROOT / "tests" / "data" / "macos" / "mixed.ndjson"],
    "esxi-shell": [ROOT / "examples" / "esx-02-shell.log",
                   ROOT / "tests" / "data" / "esxi" / "mixed.log"],
    "nft-monitor": [ROOT / "examples" / "app-07-nft-monitor.log",
                    ROOT / "tests" / "data" / "netfilter" / "monitor-plain.log"],
    "iptables-save": [ROOT / "examples" / "app-07-iptables-save.txt",
                      ROOT / "tests" / "data" / "netfilter" / "iptables-multi.txt"],
}
PROFILE = settings(max_examples=40, deadline=None,
                   suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
_counter = itertools.count()

# bytes that matter to these parsers: separators, brackets, quotes, digits, NUL, bad UTF-8
_INTERESTING = st.sampled_from([*b"\n\r\t :[](){}\"'#*-.,0123456789", 0, 0xFF, 0xC3])


@st.composite
def mutated(draw: st.DrawFn, fmt: str) -> bytes:
    data = draw(st.sampled_from(SEEDS[fmt])).read_bytes()
    cut = draw(st.integers(min_value=0, max_value=len(data)))
    data = data[:cut] if draw(st.booleans()) else data
    buf = bytearray(data)
    for _ in range(draw(st.integers(min_value=0, max_value=12))):
        if not buf:
            break
        pos = draw(st.integers(min_value=0, max_value=len(buf) - 1))
        op = draw(st.sampled_from(["set", "insert", "delete", "dup-line"]))
        if op == "set":
            buf[pos] = draw(_INTERESTING | st.integers(0, 255))
        elif op == "insert":
            buf[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete":
            del buf[pos:pos + draw(st.integers(1, 40))]
        else:
            start = buf.rfind(b"\n", 0, pos) + 1
            end = buf.find(b"\n", pos)
            end = len(buf) if end == -1 else end + 1
            buf[start:start] = buf[start:end]
    out = bytes(buf)
    if draw(st.booleans()):
        out = gzip.compress(out)
        if draw(st.booleans()) and len(out) > 12:
            out = out[: draw(st.integers(min_value=10, max_value=len(out) - 1))]
    return out


def _check(fmt: str, data: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"in-{next(_counter)}.log"
        path.write_bytes(data)
        store = Store.open(":memory:")
        try:
            result = ingest_file(store, path, sensor="prop", fmt=fmt)
        finally:
            store.close()
    assert result.format == fmt
    if result.failure is not None:
        assert isinstance(result.failure, InputError)
        assert result.failure.location is not None
    for err in result.stats.shown:
        loc = err.location
        assert loc.path == str(path)
        assert loc.line is not None or loc.offset is not None, err
    assert result.stats.rows > 0 or result.failure is not None


@PROFILE
@given(mutated("macos-unifiedlog"))
def test_macos_mutations(data: bytes) -> None:
    _check("macos-unifiedlog", data)


@PROFILE
@given(mutated("esxi-shell"))
def test_esxi_mutations(data: bytes) -> None:
    _check("esxi-shell", data)


@PROFILE
@given(mutated("nft-monitor"))
def test_nft_mutations(data: bytes) -> None:
    _check("nft-monitor", data)


@PROFILE
@given(mutated("iptables-save"))
def test_iptables_mutations(data: bytes) -> None:
    _check("iptables-save", data)
