"""hopguard findings / report / explain as a user runs them, against a store file."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pyarrow as pa
import pytest

from hopguard.cli import main as cli_main
from hopguard.model import arrow_schema
from hopguard.report.findings import CONTRACT_KEYS
from hopguard.store import Store
from tests.unit.analytics.util import at
from tests.unit.report.scenario import AUDIT, HOSTILE_SNI, PCAP, seed_file


def test_commands_are_registered() -> None:
    names = {c.name or (c.callback.__name__ if c.callback else "")
             for c in cli_main.app.registered_commands}
    assert {"findings", "report", "explain", "analyze", "detectors"} <= names


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = cli_main.main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def db(tmp_path: Path) -> tuple[str, dict[str, str]]:
    path = tmp_path / "h.duckdb"
    found = seed_file(path)
    return str(path), {k: f.id for k, f in found.items()} | {
        "chain_incident": found["chain"].incident or ""}


def test_findings_jsonl_is_the_contract(db: tuple[str, dict[str, str]],
                                        capsys: pytest.CaptureFixture[str]) -> None:
    path, ids = db
    code, out, _ = run(capsys, "findings", "--db", path, "--format", "jsonl")
    assert code == 0
    docs = [json.loads(line) for line in out.splitlines()]
    assert [d["detector"] for d in docs] == ["chain.multihop", "bridge.relay", "bridge.relay",
                                            "fronting.sni_host", "proxy.http"]
    assert all(list(d) == list(CONTRACT_KEYS) for d in docs)
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", d["first_seen"])
               for d in docs)
    assert docs[0]["entities"] == {"chain": ["10.10.0.20", "10.10.0.30", "10.10.0.40",
                                             "203.0.113.50"]}
    code, out, _ = run(capsys, "findings", "--db", path, "-f", "jsonl", "--severity", "high",
                       "--no-sanctioned", "--detector", "bridge", "--host", "203.0.113.50")
    assert code == 0 and [json.loads(x)["id"] for x in out.splitlines()] == [ids["relay2"]]
    code, out, _ = run(capsys, "findings", "--db", path, "-f", "jsonl", "--sanctioned")
    assert [json.loads(x)["detector"] for x in out.splitlines()] == ["proxy.http"]


def test_findings_ecs_and_files(db: tuple[str, dict[str, str]], tmp_path: Path,
                                capsys: pytest.CaptureFixture[str]) -> None:
    path, ids = db
    target = tmp_path / "f.ndjson"
    code, out, _ = run(capsys, "findings", "--db", path, "-f", "jsonl", "--ecs",
                       "--incident", ids["chain_incident"][:6], "-o", str(target))
    assert code == 0 and out == ""
    docs = [json.loads(x) for x in target.read_text().splitlines()]
    assert [d["rule"]["ruleset"] for d in docs] == ["chain.multihop", "bridge.relay",
                                                   "bridge.relay"]
    code, _, err = run(capsys, "findings", "--db", path, "--ecs")
    assert code == 1 and "--ecs goes with --format jsonl" in err


def test_findings_table(db: tuple[str, dict[str, str]],
                        capsys: pytest.CaptureFixture[str]) -> None:
    path, ids = db
    code, out, _ = run(capsys, "findings", "--db", path, "--severity", "medium")
    assert code == 0
    assert "4 findings (filtered)" in out
    assert ids["chain"][:12] in out and ids["fronting"][:12] in out
    assert ids["sanctioned"][:12] not in out
    assert "<script>alert('sni')</script>" in out  # shown as text, not interpreted


def test_report_and_findings_html(db: tuple[str, dict[str, str]], tmp_path: Path,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    path, ids = db
    target = tmp_path / "report.html"
    code, out, _ = run(capsys, "report", "--db", path, "-o", str(target))
    assert code == 0 and f"{target}: 5 findings, 3 incidents" in out
    html = target.read_text()
    assert not re.search(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", html, re.I)
    assert HOSTILE_SNI not in html and "&lt;script&gt;alert(" in html
    assert html.count('<article class="') == 8  # 3 incidents + 5 findings
    assert PCAP in html and "<svg" in html
    code, out, _ = run(capsys, "findings", "--db", path, "-f", "html", "--severity", "critical",
                       "-o", str(tmp_path / "crit.html"))
    assert code == 0 and "1 findings, 1 incidents" in out
    assert f'id="f-{ids["chain"]}"' in (tmp_path / "crit.html").read_text()
    code, _, err = run(capsys, "findings", "--db", path, "-f", "html")
    assert code == 1 and "say where with -o FILE" in err


def test_explain_finding_shows_rows_and_sources(db: tuple[str, dict[str, str]],
                                                capsys: pytest.CaptureFixture[str]) -> None:
    path, ids = db
    code, out, err = run(capsys, "explain", "--db", path, ids["relay1"][:6])
    assert code == 0, err
    assert out.startswith(f"finding {ids['relay1']}  [high]  bridge.relay")
    assert ("flow  10.10.0.20:50000 -> 10.10.0.30:1080  proto=tcp  duration=30.5  "
            f"src_bytes=52000  dst_bytes=156000  state=SF  [{PCAP}#11]") in out
    assert "image=/usr/bin/socat" in out and f"[{AUDIT}#42]" in out
    assert "mitigation: M1037, M1031" in out
    code, out, _ = run(capsys, "explain", "--db", path, "-f", "jsonl", ids["relay1"])
    doc = json.loads(out)
    assert doc["finding"]["id"] == ids["relay1"]
    assert doc["evidence"][0]["rows"][0]["uid"] == "C1hop"
    assert doc["evidence"][0]["rows"][0]["source"] == PCAP


def test_explain_incident(db: tuple[str, dict[str, str]],
                          capsys: pytest.CaptureFixture[str]) -> None:
    path, ids = db
    code, out, _ = run(capsys, "explain", "--db", path, ids["chain_incident"])
    assert code == 0
    starts = [line.split()[1] for line in out.splitlines() if line.startswith("finding ")]
    assert starts == [ids["chain"], ids["relay1"], ids["relay2"]]


def test_explain_unknown_and_ambiguous(db: tuple[str, dict[str, str]],
                                       capsys: pytest.CaptureFixture[str]) -> None:
    path, _ = db
    with Store.open(path) as store:
        rows = []
        for ident in ("feedbeef01", "feedbeef02"):
            row = {name: None for name in arrow_schema("finding").names}
            row.update(id=ident, detector="t.x", title=f"twin {ident}", severity="low", ts=at(0))
            rows.append(row)
        store.write("finding", pa.Table.from_pylist(rows, schema=arrow_schema("finding")))
    code, out, err = run(capsys, "explain", "--db", path, "feedbe")
    assert code == 1 and out == ""
    assert err.startswith("hopguard: id prefix 'feedbe' is ambiguous, it matches 2: ")
    assert "finding feedbeef01 (twin feedbeef01)" in err
    assert "finding feedbeef02 (twin feedbeef02)" in err
    code, _, err = run(capsys, "explain", "--db", path, "0123456789")
    assert code == 1
    assert "hopguard: no finding or incident has an id starting with '0123456789'" in err
    code, _, err = run(capsys, "explain", "--db", path, "feed")
    assert code == 1 and "too short" in err
