"""``hopguard intel import|list|match|remove`` and ``hunt --intel``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hopguard.cli import main as cli_main


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = cli_main.main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_import_list_match_remove(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = str(tmp_path / "s.duckdb")
    feed = tmp_path / "c2.txt"
    feed.write_text("# c2\n203.0.113.66\n198.51.100.0/24\nbroken line here\n")
    code, out, err = run(capsys, "intel", "import", "--db", db, "--format", "ip-list",
                         "--category", "c2", "--confidence", "0.9", "--source", "report 7",
                         str(feed))
    assert code == 2  # one broken record
    assert "2 added" in out and f"{feed}:4" in err
    code, out, _ = run(capsys, "intel", "import", "--db", db, "--format", "ip-list", str(feed))
    assert "0 added, 2 updated" in out
    code, out, _ = run(capsys, "intel", "list", "--db", db, "-f", "jsonl")
    (summary,) = [json.loads(line) for line in out.splitlines()]
    assert summary["feed"] == "c2" and summary["ip"] == 2
    code, out, _ = run(capsys, "intel", "match", "--db", db, "--no-seeds", "-f", "jsonl",
                       "198.51.100.200", "192.0.2.1")
    hits = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and [(h["query"], h["value"]) for h in hits] == [
        ("198.51.100.200", "198.51.100.0/24")]
    code, _, err = run(capsys, "intel", "match", "--db", db, "--no-seeds", "192.0.2.1")
    assert code == 1 and "no indicator matches" in err
    code, out, _ = run(capsys, "intel", "remove", "--db", db, "c2")
    assert code == 0 and "2 indicators" in out


def test_match_finds_seed_tunnel_services(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "intel", "match", "--db", str(tmp_path / "s.duckdb"), "-f",
                       "jsonl", "abc123.ngrok-free.app")
    hits = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and hits and all(h["feed"] == "seed" for h in hits)
    assert {h["category"] for h in hits} == {"tunnel"}


def test_unknown_feed_is_a_clear_error(tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"\x00\xff\x00 random")
    code, _, err = run(capsys, "intel", "import", "--db", str(tmp_path / "s.duckdb"), str(junk))
    assert code != 0 and "give its format" in err and str(junk) in err
