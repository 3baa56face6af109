"""kill -9 in the middle of a large ingest: the store still opens, earlier files are intact,
nothing of the killed file is stored, and the same file ingests fully afterwards."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hopguard.store import Store

pytestmark = pytest.mark.integration

CONN_HEADER = (
    "#separator \\x09\n#set_separator\t,\n#empty_field\t(empty)\n#unset_field\t-\n#path\tconn\n"
    "#fields\tts\tuid\tid.orig_h\tid.orig_p\tid.resp_h\tid.resp_p\tproto\tservice\tduration\t"
    "orig_bytes\tresp_bytes\tconn_state\thistory\torig_pkts\tresp_pkts\n"
    "#types\ttime\tstring\taddr\tport\taddr\tport\tenum\tstring\tinterval\tcount\tcount\tstring\t"
    "string\tcount\tcount\n")


def write_conn(path: Path, n: int, prefix: str) -> None:
    with path.open("w") as fh:
        fh.write(CONN_HEADER)
        for i in range(n):
            fh.write(f"{1795165200 + i * 0.001:.6f}\t{prefix}{i}\t10.1.{i % 250}.{i % 200}\t"
                     f"{1024 + i % 60000}\t10.2.0.{i % 100}\t443\ttcp\tssl\t1.5\t{i % 9000}\t"
                     f"{i % 70000}\tSF\tShADadFf\t{i % 90}\t{i % 80}\n")


def run_hopguard(*args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "hopguard", *args, "--no-progress"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


@pytest.mark.parametrize("fast", ["true", "false"])
def test_kill_9_mid_ingest(tmp_path: Path, fast: str) -> None:
    db = tmp_path / "s.duckdb"
    small, big = tmp_path / "small.log", tmp_path / "big.log"
    write_conn(small, 1000, "S")
    write_conn(big, 1_500_000 if fast == "true" else 400_000, "B")
    first = run_hopguard("ingest", "--db", str(db), str(small))
    assert first.wait(60) == 0, first.stderr.read() if first.stderr else ""

    # How long does the whole ingest take here? Kill the real one at 40 % of that: past start-up,
    # inside the file's transaction (the end of a run is commit and DuckDB's checkpoint).
    t0 = time.monotonic()
    timing = run_hopguard("ingest", "--db", str(tmp_path / "timing.duckdb"), "--set",
                          f"ingest.fast_zeek_tsv={fast}", str(big))
    assert timing.wait(300) == 0
    full = time.monotonic() - t0

    proc = run_hopguard("ingest", "--db", str(db), "--set", f"ingest.fast_zeek_tsv={fast}",
                        str(big))
    time.sleep(full * 0.4)
    assert proc.poll() is None, "the ingest finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)

    expected = 1_500_000 if fast == "true" else 400_000
    with Store.open(db) as s:
        flows = s.counts()["flow"]
        files = s.query("SELECT path, rows FROM source_file ORDER BY id").to_pylist()
        # all of the killed file or nothing of it; the earlier file always intact
        assert files[0] == {"path": str(small), "rows": 1000}
        assert s.query("SELECT count(*) AS n FROM flow WHERE uid LIKE 'S%'").to_pylist() == [
            {"n": 1000}]
        if len(files) == 1:
            assert flows == 1000
        else:
            assert files[1] == {"path": str(big), "rows": expected}
            assert flows == 1000 + expected
    # The kill is meant to land inside the transaction; say so when it did not.
    assert len(files) == 1, f"the kill came after the commit ({full:.1f} s run); nothing tested"

    again = run_hopguard("ingest", "--db", str(db), str(big))
    assert again.wait(300) == 0
    with Store.open(db, read_only=True) as s:
        assert s.counts()["flow"] == 1000 + expected
