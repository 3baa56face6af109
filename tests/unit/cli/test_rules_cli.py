"""``hopguard rules list|check``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hopguard.cli import main as cli_main

GOOD = """title: Test Relay Listener
id: 0b6f4c2e-1111-4d7a-9e0b-000000000001
status: test
tags: [attack.command-and-control, attack.t1090.001]
analytics: [DET0445/AN1230]
tool: socat
logsource: {category: process_creation, product: linux}
detection:
  sel:
    Image|endswith: /socat
    CommandLine|contains: TCP-LISTEN
  condition: sel
level: high
"""

BROKEN_YAML = """title: Broken
detection:
  sel: [unclosed
  condition: sel
"""

BAD_MODIFIER = """title: Bad Modifier
id: 0b6f4c2e-1111-4d7a-9e0b-000000000002
logsource: {category: process_creation}
detection:
  sel:
    CommandLine|nosuchmodifier: x
  condition: sel
level: low
"""


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = cli_main.main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_check_names_each_broken_rule_and_fails(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "good.yml").write_text(GOOD)
    (tmp_path / "broken.yml").write_text(BROKEN_YAML)
    (tmp_path / "modifier.yaml").write_text(BAD_MODIFIER)
    code, stdout, stderr = run(capsys, "rules", "check", str(tmp_path))
    assert code == 2
    assert "1 rules load and compile; 2 problems" in stdout
    assert f"{tmp_path / 'broken.yml'}:4)" in stderr  # where YAML notices the bracket
    assert f"{tmp_path / 'modifier.yaml'}:6)" in stderr


def test_check_passes_on_good_rules(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "good.yml").write_text(GOOD)
    code, stdout, _ = run(capsys, "rules", "check", str(tmp_path / "good.yml"))
    assert code == 0 and "1 rules load and compile; 0 problems" in stdout


def test_list_shows_pack_and_user_rules(tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "good.yml").write_text(GOOD)
    code, stdout, _ = run(capsys, "rules", "list", "-f", "jsonl", str(tmp_path))
    assert code == 0
    docs = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
    mine = [d for d in docs if d["title"] == "Test Relay Listener"]
    assert mine and mine[0]["techniques"] == ["T1090.001"] and mine[0]["table"] == "process"
    assert mine[0]["location"] == f"{tmp_path / 'good.yml'}:1"
    pack = [d for d in docs if d["location"].startswith(str(Path(cli_main.__file__).parents[1]))]
    assert len(pack) >= 50  # the shipped pack
    assert all(d["analytics"] and d["tool"] for d in pack)
    code, stdout, _ = run(capsys, "rules", "list", "-f", "jsonl", "--set", "sigma.pack=false",
                          str(tmp_path))
    assert [json.loads(line)["title"] for line in stdout.splitlines()] == ["Test Relay Listener"]


def test_analyze_runs_a_rules_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``analyze --rules DIR`` runs the user's rules beside the pack: a process row that only
    the user's rule matches gives a finding carrying that rule."""
    import pyarrow as pa

    from hopguard.model import arrow_schema
    from hopguard.store import Store
    from tests.unit.analytics.util import at
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "mine.yml").write_text(GOOD.replace("/socat", "/relayd").replace(
        "TCP-LISTEN", "--listen-relay"))
    db = tmp_path / "s.duckdb"
    with Store.open(db) as store:
        row = {n: None for n in arrow_schema("process").names}
        row.update(ts=at(0), sensor="t", host="app-07", platform="linux", pid=7,
                   image="/opt/relayd", command_line="/opt/relayd --listen-relay 9000")
        store.write("process", pa.Table.from_pylist([row], schema=arrow_schema("process")))
    code, _, _ = run(capsys, "analyze", "--db", str(db), "-d", "endpoint.sigma")
    assert code == 0
    with Store.open(db) as store:
        assert store.query("SELECT count(*) AS n FROM finding").to_pylist()[0]["n"] == 0
    code, _, _ = run(capsys, "analyze", "--db", str(db), "-d", "endpoint.sigma",
                     "--rules", str(rules))
    assert code == 0
    with Store.open(db) as store:
        got = store.query("SELECT title, entities FROM finding").to_pylist()
    assert len(got) == 1 and got[0]["title"].startswith("Test Relay Listener")
    assert '"rule":"0b6f4c2e-1111-4d7a-9e0b-000000000001"' in got[0]["entities"]
