"""The command line as a user runs it: exit codes, one-line errors, outputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hopguard.cli.main import main
from tests.conftest import DATA

ZEEK = DATA / "zeek"


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_ingest_then_sql_formats(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = str(tmp_path / "h.duckdb")
    code, out, _ = run(capsys, "ingest", "--db", db, "--no-progress", str(ZEEK))
    assert code == 0
    assert "Rows added per table" in out and "flow" in out and "9" in out
    code, out, _ = run(capsys, "sql", "--db", db, "-f", "jsonl",
                       "SELECT uid, dst_port FROM flow ORDER BY uid")
    assert code == 0
    assert json.loads(out.splitlines()[0]) == {"uid": "Ca1", "dst_port": 8443}
    code, out, _ = run(capsys, "sql", "--db", db, "-f", "csv", "SELECT count(*) AS n FROM http")
    assert out.splitlines() == ["n", "3"]
    code, out, _ = run(capsys, "ingest", "--db", db, "--no-progress", str(ZEEK / "conn.log"))
    assert code == 0 and "already stored" in out


def test_bad_input_exit_code_and_location(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    lines = (ZEEK / "conn.log").read_text().splitlines(keepends=True)
    lines[9] = "garbage\n"
    bad = tmp_path / "conn.log"
    bad.write_text("".join(lines))
    code, out, err = run(capsys, "ingest", "--db", str(tmp_path / "h.duckdb"), "--no-progress",
                         str(bad))
    assert code == 2
    assert f"hopguard: expected 21 fields, found 1 ({bad}:10)" in err
    assert "stored, with damage" in out


def test_unknown_format_names_the_supported(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    junk = tmp_path / "notes.txt"
    junk.write_text("hello\nworld\n")
    code, _, err = run(capsys, "ingest", "--db", str(tmp_path / "h.duckdb"), str(junk))
    assert code == 2
    assert "unknown input format; supported: " in err and "zeek (" in err and str(junk) in err
    assert "Traceback" not in err


def test_nothing_usable_is_one_clear_line(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    log = tmp_path / "conn.log"
    log.write_text((ZEEK / "conn.log").read_text().split("1795165200.123456")[0])
    code, _, err = run(capsys, "ingest", "--db", str(tmp_path / "h.duckdb"), str(log))
    assert code == 2 and "nothing usable" in err


def test_config_errors_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "ingest", "--set", "store.batch_rows=3", str(ZEEK))
    assert code == 1 and "store.batch_rows: 3 is below the minimum 1000 (--set)" in err
    cfg = tmp_path / "h.toml"
    cfg.write_text("[ingest]\nsensor = 'x'\nbogus = 1\n")
    code, _, err = run(capsys, "ingest", "--config", str(cfg), str(ZEEK))
    assert code == 1 and "unknown setting 'ingest.bogus'" in err and str(cfg) in err
    cfg.write_text("[ingest\n")
    code, _, err = run(capsys, "config", "dump", "--config", str(cfg))
    assert code == 1 and "invalid TOML" in err and f"{cfg}:1" in err


def test_bad_sql_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = str(tmp_path / "h.duckdb")
    run(capsys, "ingest", "--db", db, str(ZEEK / "conn.log"))
    code, _, err = run(capsys, "sql", "--db", db, "SELEC nothing")
    assert code == 1 and err.startswith("hopguard: query failed")


def test_config_dump_lists_every_option(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "config", "dump", "--set", "ingest.sensor=edge-1")
    assert code == 0
    assert 'sensor = "edge-1"' in out and "[store]" in out and "min 1,000" in out
    import tomllib
    parsed = tomllib.loads(out)
    assert parsed["ingest"]["sensor"] == "edge-1" and parsed["store"]["batch_rows"] == 50000


def test_hunt_ingests_analyzes_and_reports(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "hunt", "--db", str(tmp_path / "h.duckdb"), str(ZEEK))
    assert code == 0 and "Ingest summary" in out and " findings (" in out


def test_export(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = str(tmp_path / "h.duckdb")
    run(capsys, "ingest", "--db", db, str(ZEEK))
    code, out, _ = run(capsys, "export", "--db", db, "--parquet", str(tmp_path / "pq"),
                       "--table", "flow")
    assert code == 0 and (tmp_path / "pq" / "flow.parquet").exists() and "4 rows" in out
    code, _, err = run(capsys, "export", "--db", db, "--parquet", str(tmp_path / "pq"),
                       "--table", "nope")
    assert code == 1 and "unknown table 'nope'" in err


def test_export_ecs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = str(tmp_path / "h.duckdb")
    run(capsys, "ingest", "--db", db, str(ZEEK))
    code, out, _ = run(capsys, "export", "--db", db, "--ecs", str(tmp_path / "ecs"),
                       "--table", "proxy")
    assert code == 0 and "2 documents" in out
    docs = [json.loads(x) for x in (tmp_path / "ecs" / "proxy.ndjson").read_text().splitlines()]
    bob = next(d for d in docs if d.get("user", {}).get("name") == "bob")
    assert bob["source"] == {"ip": "10.10.1.51", "port": 50123}
    assert bob["event"]["dataset"] == "hopguard.proxy"
    assert bob["hopguard"]["proxy"]["target_host"] == "files.corp.example"
    assert bob["@timestamp"] == "2026-11-20T09:03:20.500000Z"


def test_tables_markdown_is_in_the_docs(capsys: pytest.CaptureFixture[str]) -> None:
    from hopguard.model.tables import markdown
    from tests.conftest import ROOT
    assert markdown() in (ROOT / "docs" / "formats.md").read_text()


def test_truncated_gzip_from_the_command_line(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    import gzip
    body = "".join((ZEEK / "conn.log").read_text().splitlines(keepends=True)[:8])
    record = (ZEEK / "conn.log").read_text().splitlines(keepends=True)[8]
    data = gzip.compress((body + record * 30000).encode())
    cut = tmp_path / "conn.log.gz"
    cut.write_bytes(data[: len(data) // 2])
    db = str(tmp_path / "h.duckdb")
    code, out, err = run(capsys, "ingest", "--db", db, str(cut))
    assert code == 2
    assert f"({cut}@offset " in err and "gzip stream is truncated after line" in err
    assert "stored, with damage" in out
    code, out, _ = run(capsys, "sql", "--db", db, "-f", "csv", "SELECT count(*) FROM flow")
    assert 0 < int(out.splitlines()[1]) < 30000


def test_damaged_evtx_from_the_command_line(tmp_path: Path, endpoint_corpus: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    evtx = (endpoint_corpus / "sbousseaden+EVTX-ATTACK-SAMPLES" / "AutomatedTestingTools"
            / "panache_sysmon_vs_EDRTestingScript.evtx")
    data = bytearray(evtx.read_bytes())
    third = 4096 + 2 * 65536
    for i in range(third + 0x400, third + 0x600):
        data[i] ^= 0x5A
    damaged = tmp_path / "damaged.evtx"
    damaged.write_bytes(bytes(data))
    db = str(tmp_path / "h.duckdb")
    code, out, err = run(capsys, "ingest", "--db", db, str(damaged))
    assert code == 2 and f"({damaged}@offset {third})" in err
    code, out, _ = run(capsys, "sql", "--db", db, "-f", "csv",
                       "SELECT count(*) FROM process WHERE command_line LIKE '%portproxy%'")
    assert int(out.splitlines()[1]) >= 1


def test_host_option_names_endpoint_rows(tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    from tests.conftest import ROOT
    db = str(tmp_path / "h.duckdb")
    code, _, _ = run(capsys, "ingest", "--db", db, "--host", "esx-02",
                     str(ROOT / "examples" / "esx-02-shell.log"))
    assert code == 0
    code, out, _ = run(capsys, "sql", "--db", db, "-f", "csv",
                       "SELECT DISTINCT host, platform FROM process")
    assert out.splitlines()[1:] == ["esx-02,esxi"]
