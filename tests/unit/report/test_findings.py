"""Findings out of the store: filters, order, the contract's JSON shape, ECS, the console table."""

from __future__ import annotations

import io
import json

import pyarrow as pa
from rich.console import Console

from hopguard.model import arrow_schema
from hopguard.report.findings import (
    CONTRACT_KEYS,
    FindingFilter,
    contract,
    findings_table,
    jsonl_lines,
    load_findings,
    write_jsonl,
)
from hopguard.store import Store
from tests.unit.analytics.util import at
from tests.unit.report.scenario import CHAIN, HOSTILE_SNI, seed


def _ids(store: Store, **kw: object) -> list[str]:
    return [f.doc["detector"] for f in load_findings(store, FindingFilter(**kw))]  # type: ignore[arg-type]


def test_order_is_severity_then_time(store: Store) -> None:
    seed(store)
    assert _ids(store) == ["chain.multihop", "bridge.relay", "bridge.relay",
                           "fronting.sni_host", "proxy.http"]
    relays = [f for f in load_findings(store) if f.doc["detector"] == "bridge.relay"]
    assert relays[0].doc["first_seen"] < relays[1].doc["first_seen"]


def test_filters(store: Store) -> None:
    found = seed(store)
    assert _ids(store, severity="high") == ["chain.multihop", "bridge.relay", "bridge.relay"]
    assert _ids(store, severity="critical") == ["chain.multihop"]
    assert _ids(store, detector="bridge") == ["bridge.relay", "bridge.relay"]
    assert _ids(store, detector="proxy.h") == ["proxy.http"]
    assert _ids(store, host="10.10.0.21") == ["fronting.sni_host"]
    assert _ids(store, host=CHAIN[-1]) == ["chain.multihop", "bridge.relay"]
    assert _ids(store, sanctioned=True) == ["proxy.http"]
    assert len(_ids(store, sanctioned=False)) == 4
    incident = found["chain"].incident
    assert incident is not None
    assert _ids(store, incident=incident[:6].upper()) == ["chain.multihop", "bridge.relay",
                                                          "bridge.relay"]
    assert _ids(store, severity="medium", sanctioned=False, detector="fronting") == [
        "fronting.sni_host"]


def test_jsonl_is_the_contract(store: Store) -> None:
    found = seed(store)
    buf = io.BytesIO()
    assert write_jsonl(load_findings(store), buf) == 5
    docs = [json.loads(line) for line in buf.getvalue().decode().splitlines()]
    assert all(tuple(d) == CONTRACT_KEYS for d in docs)
    relay = next(d for d in docs if d["id"] == found["relay1"].id)
    assert relay["entities"] == {"relay": "10.10.0.30", "client": "10.10.0.20", "in_port": 1080,
                                 "upstream": "10.10.0.40", "up_port": 2222, "kind": "socat"}
    assert relay["evidence"][0] == {"table": "flow", "uid": "C1hop",
                                    "summary": "inbound leg 52000 B"}
    assert relay["evidence"][2]["event"].endswith(":42")
    assert relay["mitigation"]["ids"] == ["M1037", "M1031"]
    assert relay["mitigation"]["actions"][0]["kind"] == "nft"
    assert relay["first_seen"] == "2025-11-24T16:00:00.000000Z"
    assert relay["last_seen"] == "2025-11-24T16:00:30.000000Z"
    assert relay["confidence"] == 0.9 and relay["sanctioned"] is False
    later = next(d for d in docs if d["id"] == found["relay2"].id)
    assert later["first_seen"] == "2025-11-24T16:00:00.200000Z"
    assert next(d for d in docs if d["detector"] == "proxy.http")["sanctioned"] is True


def test_ecs_names(store: Store) -> None:
    seed(store)
    chain = next(f for f in load_findings(store) if f.doc["detector"] == "chain.multihop")
    doc = json.loads(next(jsonl_lines([chain], ecs=True)))
    assert doc["event"]["dataset"] == "hopguard.finding"
    assert doc["event"]["kind"] == "alert"
    assert doc["event"]["severity"] == "critical"
    assert doc["event"]["start"] == "2025-11-24T16:00:00.000000Z"
    assert doc["rule"]["ruleset"] == "chain.multihop"
    assert doc["threat"]["technique"]["id"] == "T1090.003"
    assert doc["related"]["ip"] == CHAIN
    assert doc["hopguard"]["finding"]["entities"] == {"chain": CHAIN}
    assert doc["hopguard"]["finding"]["incident"] == chain.incident


def test_broken_rows_are_shown_not_raised(store: Store) -> None:
    row = {name: None for name in arrow_schema("finding").names}
    row.update(id="broken0001", detector="x.y", severity="weird", entities="{not json",
               evidence='{"a": 1}', mitigation=None, ts=at(0))
    store.write("finding", pa.Table.from_pylist([row], schema=arrow_schema("finding")))
    found = load_findings(store)
    assert [f.id for f in found] == ["broken0001"]
    doc = found[0].doc
    assert doc["entities"] == {"_raw": "{not json"}
    assert doc["evidence"] == [] and doc["mitigation"] == {"ids": [], "actions": []}
    assert doc["first_seen"] is None and doc["confidence"] == 0.0
    assert load_findings(store, FindingFilter(severity="info")) == []
    assert json.loads(next(jsonl_lines(found)))["severity"] == "weird"


def test_contract_of_a_minimal_row() -> None:
    doc = contract({"id": "f1", "severity": "low", "hosts": None})
    assert tuple(doc) == CONTRACT_KEYS
    assert doc["entities"] == {} and doc["evidence"] == [] and doc["explanation"] == ""


def test_console_table_does_not_interpret_markup_or_escapes(store: Store) -> None:
    row = {name: None for name in arrow_schema("finding").names}
    row.update(id="evil000001", detector="fronting.sni_host", severity="high", ts=at(0),
               title="[bold red]owned[/bold red] \x1b[2J" + HOSTILE_SNI, first_seen=at(0))
    store.write("finding", pa.Table.from_pylist([row], schema=arrow_schema("finding")))
    console = Console(file=io.StringIO(), width=300, color_system=None)
    console.print(findings_table(load_findings(store)))
    text = console.file.getvalue()  # type: ignore[attr-defined]
    assert "[bold red]owned[/bold red]" in text
    assert "\\x1b[2J" in text and "\x1b" not in text
    assert "<script>alert('sni')</script>" in text
