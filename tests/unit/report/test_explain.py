"""explain: id resolution and the evidence chain down to stored rows and input files."""

from __future__ import annotations

import pyarrow as pa
import pytest

from hopguard.errors import ConfigError
from hopguard.model import arrow_schema
from hopguard.report.explain import (
    explain_finding,
    finding_lines,
    incident_lines,
    incident_of,
    resolve,
)
from hopguard.report.findings import findings_by_id
from hopguard.store import Store
from tests.unit.analytics.util import at, put
from tests.unit.report.scenario import AUDIT, PCAP, seed


def _finding_row(ident: str, title: str, evidence: str = "[]") -> dict[str, object]:
    row: dict[str, object] = {name: None for name in arrow_schema("finding").names}
    row.update(id=ident, detector="test.x", title=title, severity="low", ts=at(0),
               first_seen=at(0), last_seen=at(1), evidence=evidence)
    return row


def test_resolve_full_prefix_and_incident(store: Store) -> None:
    found = seed(store)
    relay = found["relay1"]
    assert resolve(store, relay.id).id == relay.id
    assert resolve(store, " " + relay.id[:6].upper()).id == relay.id
    incident = found["chain"].incident
    assert incident is not None
    hit = resolve(store, incident[:8])
    assert (hit.kind, hit.id) == ("incident", incident)


def test_resolve_refuses_short_unknown_and_ambiguous(store: Store) -> None:
    store.write("finding", pa.Table.from_pylist(
        [_finding_row("abcdef0001", "first one"), _finding_row("abcdef0002", "second one"),
         _finding_row("abcdef00", "a shorter id")], schema=arrow_schema("finding")))
    with pytest.raises(ConfigError, match="too short"):
        resolve(store, "abcde")
    with pytest.raises(ConfigError, match="no finding or incident has an id starting with"):
        resolve(store, "ffffff")
    with pytest.raises(ConfigError) as exc:
        resolve(store, "abcdef0")
    msg = str(exc.value)
    assert "ambiguous, it matches 3" in msg
    assert "finding abcdef0001 (first one)" in msg and "finding abcdef0002 (second one)" in msg
    # an exact id wins over the longer ids it prefixes
    assert resolve(store, "abcdef00").id == "abcdef00"


def test_evidence_chain_reaches_rows_and_files(store: Store) -> None:
    found = seed(store)
    relay = findings_by_id(store, [found["relay1"].id])[found["relay1"].id]
    ex = explain_finding(store, relay)
    assert [len(t.rows) for t in ex.trails] == [1, 1, 1]
    flow = ex.trails[0].rows[0]
    assert flow.table == "flow" and flow.source == PCAP and flow.row["record"] == 11
    assert flow.line() == (
        "2025-11-24T16:00:00.000000Z  flow  10.10.0.20:50000 -> 10.10.0.30:1080  proto=tcp  "
        "duration=30.5  src_bytes=52000  dst_bytes=156000  state=SF  "
        f"[{PCAP}#11]")
    proc = ex.trails[2].rows[0]
    assert proc.table == "process" and proc.source == AUDIT
    assert "command_line=socat TCP-LISTEN:1080,fork TCP:10.10.0.40:2222" in proc.line()
    text = "\n".join(finding_lines(ex))
    assert "1. flow uid C1hop: inbound leg 52000 B" in text
    assert f"[{AUDIT}#42]" in text
    assert "nft add rule inet filter forward ip saddr 10.10.0.20" in text
    doc = ex.as_dict()
    assert doc["evidence"][0]["rows"][0]["source"] == PCAP
    assert doc["evidence"][0]["rows"][0]["ts"] == "2025-11-24T16:00:00.000000Z"


def test_one_uid_gathers_every_table(store: Store) -> None:
    found = seed(store)
    fronting = findings_by_id(store, [found["fronting"].id])[found["fronting"].id]
    ex = explain_finding(store, fronting)
    assert [r.table for r in ex.trails[0].rows] == ["flow", "tls"]
    assert "sni=<script>alert('sni')</script>.example" in ex.trails[0].rows[1].line()


def test_missing_rows_and_odd_evidence_do_not_crash(store: Store) -> None:
    put(store, "flow", [{"ts": 0, "uid": "Cx", "src_ip": "fe80::1", "src_port": 1,
                         "dst_ip": "10.0.0.1", "dst_port": None, "file_id": 99, "record": 3,
                         "history": "S\x1b[2J"}])
    evidence = ('[{"table": "flow", "uid": "Cx", "summary": "s"}, {"table": "flow", "uid": "gone"},'
                ' {"table": "process", "event": "not-a-key"}, {"table": "", "summary": "9 more"},'
                ' "junk"]')
    store.write("finding", pa.Table.from_pylist([_finding_row("odd0000001", "odd", evidence)],
                                                schema=arrow_schema("finding")))
    f = findings_by_id(store, ["odd0000001"])["odd0000001"]
    ex = explain_finding(store, f)
    assert [len(t.rows) for t in ex.trails] == [1, 0, 0, 0]
    line = ex.trails[0].rows[0].line()
    assert "[fe80::1]:1 -> 10.0.0.1" in line and "[file 99#3]" in line
    assert "\x1b" not in line and "history=S\\x1b[2J" in line
    text = "\n".join(finding_lines(ex))
    assert text.count("(no stored row") == 1  # the vanished uid
    assert "(not a <file_id>:<record> reference" in text
    assert "4. 9 more" in text


def test_incident_lists_findings_strongest_first(store: Store) -> None:
    found = seed(store)
    incident = found["chain"].incident
    assert incident is not None
    inc, members = incident_of(store, incident)
    assert [m.doc["detector"] for m in members] == ["chain.multihop", "bridge.relay",
                                                    "bridge.relay"]
    lines = list(incident_lines(inc, [explain_finding(store, m) for m in members]))
    assert lines[0].startswith(f"incident {incident}  [critical]  risk 100  chain 10.10.0.20 > ")
    assert sum(line.startswith("finding ") for line in lines) == 3
