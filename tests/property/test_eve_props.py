"""EVE reader under damage: truncated, byte-mutated and value-mutated input always ends in rows
or located errors, never a traceback, and never in a row the store rejects."""

from __future__ import annotations

import tempfile
from functools import cache
from pathlib import Path
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hopguard.ingest.pipeline import FileResult, ingest_file
from hopguard.store import Store

DATA = Path(__file__).resolve().parent.parent / "data" / "eve"
EXAMPLE = Path(__file__).resolve().parent.parent.parent / "examples" / "hq-span-eve.json"
SOURCES = [DATA / n for n in ("sample.json", "dns-v1.json", "dns-v2.json", "dns-v3.json")]
LINES: list[bytes] = [ln for p in SOURCES for ln in p.read_bytes().splitlines() if ln.strip()]
SEED = b"\n".join(LINES) + b"\n"

SETTINGS = settings(max_examples=50, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(1 << 63), max_value=(1 << 64) - 1)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)


@cache
def shared_store() -> Store:
    """One in-memory store for all examples: opening one costs ~0.1 s. A replayed example is
    then a duplicate file, which ``check`` accepts (it was checked the first time)."""
    return Store.open(":memory:")


def run(content: bytes, *, fmt: str | None = "eve", name: str = "eve.json") -> FileResult:
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / name
        p.write_bytes(content)
        return ingest_file(shared_store(), p, sensor="prop", fmt=fmt, max_shown=10_000)


def check(res: FileResult) -> None:
    if res.duplicate_of is not None:
        return
    st_ = res.stats
    for err in st_.shown:
        loc = err.location
        assert loc.line is not None or loc.offset is not None, err
        # the reader never hands the sink a value of the wrong type, nor trips over a shape
        assert "wrong type:" not in err.message, err
        assert "unusable record" not in err.message, err
    if res.failure is not None:
        assert res.failure.location is not None
        return
    assert st_.rows > 0


@SETTINGS
@given(cut=st.integers(min_value=0, max_value=len(SEED)))
def test_truncated(cut: int) -> None:
    res = run(SEED[:cut])
    check(res)
    if cut == len(SEED) and res.duplicate_of is None:
        assert res.stats.errors == 0


@SETTINGS
@given(data=st.data())
def test_byte_mutations(data: st.DataObject) -> None:
    buf = bytearray(SEED)
    for _ in range(data.draw(st.integers(min_value=1, max_value=12))):
        i = data.draw(st.integers(min_value=0, max_value=len(buf) - 1))
        op = data.draw(st.sampled_from(["flip", "delete", "insert", "newline"]))
        if op == "flip":
            buf[i] = data.draw(st.integers(min_value=0, max_value=255))
        elif op == "delete":
            del buf[i: i + data.draw(st.integers(min_value=1, max_value=40))]
        elif op == "insert":
            buf[i:i] = data.draw(st.binary(min_size=1, max_size=8))
        else:
            buf[i:i] = b"\n"
        if not buf:
            buf = bytearray(b"{}")
    check(run(bytes(buf)))


def _paths(obj: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out: list[tuple[str, ...]] = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.append((*prefix, k))
            out.extend(_paths(v, (*prefix, k)))
    return out


@SETTINGS
@given(data=st.data())
def test_value_mutations(data: st.DataObject) -> None:
    """Any field of any record replaced by any JSON value (or removed)."""
    lines = list(LINES)
    for _ in range(data.draw(st.integers(min_value=1, max_value=6))):
        n = data.draw(st.integers(min_value=0, max_value=len(lines) - 1))
        obj = orjson.loads(lines[n])
        path = data.draw(st.sampled_from(_paths(obj)))
        parent = obj
        for key in path[:-1]:
            parent = parent[key]
        if data.draw(st.booleans()):
            parent[path[-1]] = data.draw(json_values)
        else:
            del parent[path[-1]]
        lines[n] = orjson.dumps(obj)
    res = run(b"\n".join(lines) + b"\n")
    check(res)
    assert res.duplicate_of is not None or res.stats.records == len(lines)


@SETTINGS
@given(cut=st.integers(min_value=0, max_value=4096), flip=st.integers(min_value=0, max_value=255))
def test_detection_and_damaged_example(cut: int, flip: int) -> None:
    """Detection never raises, whatever the head looks like; the demo file damaged the same."""
    content = bytearray(EXAMPLE.read_bytes())
    if cut < len(content):
        content[cut] = flip
    res = run(bytes(content), fmt=None)
    if res.format == "eve":
        check(res)
    else:
        assert res.failure is not None
