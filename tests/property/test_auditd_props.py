"""auditd reader under damage: any truncated or mutated audit.log gives rows or located errors.

Every file goes through ``ingest_file`` (detection, gzip handling, the store transaction), so a
traceback anywhere on that path fails the property.
"""

from __future__ import annotations

import gzip
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hopguard.errors import InputError
from hopguard.ingest.pipeline import FileResult, ingest_file
from hopguard.store import Store

DATA = Path(__file__).resolve().parents[1] / "data" / "auditd"
SAMPLES = [(DATA / n).read_bytes() for n in
           ("execve.log", "interleaved.log", "net.log", "netfilter.log", "malformed.log")]
SETTINGS = settings(max_examples=50, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def run(content: bytes, *, gz: bool = False) -> FileResult:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / ("audit.log.gz" if gz else "audit.log")
        path.write_bytes(gzip.compress(content) if gz else content)
        store = Store.open(":memory:")
        try:
            return ingest_file(store, path, sensor="prop", fmt="auditd")
        finally:
            store.close()


def check(res: FileResult) -> None:
    stats = res.stats
    if res.failure is not None:
        # nothing usable: an input error that says where (the first bad record, or the file)
        assert isinstance(res.failure, InputError)
        assert res.failure.location is not None
    for err in stats.shown:
        assert err.location.line is not None or err.location.offset is not None, err
        assert err.location.line is None or err.location.line >= 1


@st.composite
def damaged(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SAMPLES)))
    for _ in range(draw(st.integers(0, 6))):
        if not data:
            break
        at = draw(st.integers(0, len(data) - 1))
        op = draw(st.sampled_from(["flip", "delete", "insert", "dup"]))
        if op == "flip":
            data[at] = draw(st.integers(0, 255))
        elif op == "delete":
            del data[at:at + draw(st.integers(1, 40))]
        elif op == "insert":
            data[at:at] = draw(st.sampled_from(
                [b"\n", b" ", b"\x1d", b"\x00", b")", b":", b"=", b'"', b"type=", b"node=x ",
                 b"msg=audit(", b"a0_len=5 a0[0]=", b"saddr=0A00", b"\xff\xfe"]))
        else:
            end = min(len(data), at + draw(st.integers(1, 200)))
            data[at:at] = data[at:end]
    return bytes(data[:draw(st.integers(0, len(data)))])  # truncated anywhere


@SETTINGS
@given(damaged())
def test_damaged_logs_give_rows_or_located_errors(content: bytes) -> None:
    check(run(content))


@SETTINGS
@given(damaged(), st.integers(0, 64))
def test_damaged_gzip_logs(content: bytes, cut: int) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "audit.log.gz"
        blob = gzip.compress(content)
        path.write_bytes(blob[:max(0, len(blob) - cut)])
        store = Store.open(":memory:")
        try:
            check(ingest_file(store, path, sensor="prop", fmt="auditd"))
        finally:
            store.close()


_TYPES = st.sampled_from(["SYSCALL", "EXECVE", "CWD", "PATH", "PROCTITLE", "SOCKADDR",
                          "NETFILTER_CFG", "EOE", "USER_CMD", "LOGIN"])
_KEYS = st.sampled_from(["arch", "syscall", "success", "exit", "pid", "ppid", "uid", "UID",
                         "exe", "comm", "argc", "a0", "a1", "a1_len", "a1[0]", "a1[1]", "cwd",
                         "name", "item", "proctitle", "saddr", "table", "family", "entries",
                         "op", "SYSCALL", "msg", "cmd", "res", "a0"])
_VALUES = st.one_of(
    st.sampled_from(["59", "42", "43", "288", "49", "50", "221", "yes", "no", "-115",
                     "c000003e", "c00000b7", "40000003", "102", "(null)", "?", '"x"', '""',
                     "0", "2", "10", "4294967295", '"root"', "'cwd=\"/\"", "success'"]),
    st.binary(max_size=30).map(lambda b: b.hex().upper()),
    st.text(alphabet="0123456789ABCDEFZ\"'=:()", max_size=12),
)


@st.composite
def record_line(draw: st.DrawFn) -> str:
    fields = " ".join(f"{draw(_KEYS)}={draw(_VALUES)}" for _ in range(draw(st.integers(0, 8))))
    node = draw(st.sampled_from(["", "node=a ", "node=b "]))
    stamp = f"1700000000.{draw(st.integers(0, 2)):03d}:{draw(st.integers(0, 3))}"
    return f"{node}type={draw(_TYPES)} msg=audit({stamp}): {fields}"


@SETTINGS
@given(st.lists(record_line(), min_size=1, max_size=30))
def test_generated_records(lines: list[str]) -> None:
    check(run(("\n".join(lines) + "\n").encode()))
