"""The detector runner: ids, sanctioned marking, replacement on re-run, isolation of a failing
detector, incidents, and the inventory's internal-address test in SQL and Python."""

from __future__ import annotations

from collections.abc import Iterable

import pytest

from hopguard.analytics import base, run
from hopguard.analytics.base import (
    Action,
    Context,
    Detector,
    Endpoint,
    Evidence,
    Finding,
    Inventory,
    Mitigation,
)
from hopguard.correlate import correlate, risk
from hopguard.errors import ConfigError
from hopguard.store import Store
from tests.unit.analytics.util import at, findings, settings


def _finding(detector: str, entities: dict[str, object], *, severity: str = "high",
             confidence: float = 0.9, t: float = 0.0, span: float = 60.0) -> Finding:
    return Finding(detector=detector, title=f"{detector} test", technique="T1090.001",
                   strategy="DET0445", severity=severity, confidence=confidence,
                   first_seen=at(t), last_seen=at(t + span), entities=dict(entities),
                   evidence=[Evidence(table="flow", uid=f"C{i}", summary=f"leg {i}")
                             for i in range(40)],
                   explanation="measured", mitigation=Mitigation(ids=["M1037"], actions=[
                       Action(kind="nft", text="nft add rule inet filter input tcp dport 8443 "
                              "drop")]))


@pytest.fixture
def registry(monkeypatch: pytest.MonkeyPatch) -> dict[str, Detector]:
    """A registry of test detectors in place of the shipped ones."""
    reg: dict[str, Detector] = {}
    monkeypatch.setattr(run, "load_detectors", lambda: reg)
    return reg


def _register(reg: dict[str, Detector], name: str, produce: list[Finding] | Exception) -> None:
    def fn(ctx: Context) -> Iterable[Finding]:
        if isinstance(produce, Exception):
            raise produce
        return [Finding.from_row(f.as_row()) if f.id else f for f in produce]
    reg[name] = Detector(name, "test", "T1090", fn, ("flow",))


RELAY = {"relay": "10.10.2.7", "client": "10.10.1.42", "in_port": 8443,
         "upstream": "203.0.113.66", "up_port": 443}


def test_ids_are_stable_and_rerun_replaces(store: Store, registry: dict[str, Detector]) -> None:
    _register(registry, "bridge.relay", [_finding("bridge.relay", RELAY)])
    first = run.analyze(store, settings())
    again = run.analyze(store, settings())
    assert [f.id for f in first.findings] == [f.id for f in again.findings]
    rows = findings(store)
    assert len(rows) == 1
    row = rows[0]
    assert row["entities"] == RELAY
    assert row["hosts"] == ["10.10.2.7", "10.10.1.42", "203.0.113.66"]
    assert len(row["evidence"]) == 26  # 25 kept + the line that says how many more
    assert row["evidence"][-1] == {"table": "", "summary": "15 more records not listed"}
    assert row["mitigation"]["ids"] == ["M1037"]
    assert row["incident"] and store.query("SELECT count(*) AS n FROM incident").to_pylist() \
        == [{"n": 1}]


def test_another_time_bucket_is_another_finding(store: Store,
                                                registry: dict[str, Detector]) -> None:
    _register(registry, "bridge.relay", [_finding("bridge.relay", RELAY),
                                         _finding("bridge.relay", RELAY, t=2 * 86400)])
    assert len(run.analyze(store, settings()).findings) == 2
    _register(registry, "bridge.relay", [_finding("bridge.relay", RELAY),
                                         _finding("bridge.relay", RELAY, t=60)])
    report = run.analyze(store, settings())
    assert len(report.findings) == 1  # same bucket: merged
    assert report.findings[0].last_seen == at(120)


def test_sanctioned_inventory(store: Store, registry: dict[str, Detector]) -> None:
    proxy = {"proxy": "10.10.0.5", "port": 3128, "target": "c2.example.net:443"}
    other = {"proxy": "10.10.2.7", "port": 1080, "target": "c2.example.net:443"}
    _register(registry, "proxy.connect", [_finding("proxy.connect", proxy),
                                          _finding("proxy.connect", other)])
    report = run.analyze(store, settings("inventory.proxies=['10.10.0.5:3128']"))
    by_proxy = {f.entities["proxy"]: f for f in report.findings}
    assert by_proxy["10.10.0.5"].sanctioned and by_proxy["10.10.0.5"].severity == "low"
    assert not by_proxy["10.10.2.7"].sanctioned and by_proxy["10.10.2.7"].severity == "high"
    # the relay inventory: a declared jump host
    _register(registry, "proxy.connect", [])
    _register(registry, "bridge.relay", [_finding("bridge.relay", RELAY)])
    report = run.analyze(store, settings("inventory.relays=['10.10.2.7']"))
    assert report.findings[0].sanctioned


def test_failing_detector_keeps_the_others_and_its_old_findings(
        store: Store, registry: dict[str, Detector]) -> None:
    _register(registry, "bridge.relay", [_finding("bridge.relay", RELAY)])
    _register(registry, "proxy.socks", [_finding("proxy.socks", {"proxy": "10.10.2.7",
                                                                 "port": 1080})])
    run.analyze(store, settings())
    _register(registry, "proxy.socks", RuntimeError("bug"))
    report = run.analyze(store, settings())
    assert [r.name for r in report.failed] == ["proxy.socks"]
    assert sorted(r["detector"] for r in findings(store)) == ["bridge.relay", "proxy.socks"]


def test_select_by_family_and_unknown(registry: dict[str, Detector]) -> None:
    for name in ("bridge.relay", "proxy.socks", "proxy.hub"):
        _register(registry, name, [])
    assert [d.name for d in run.select(["proxy"])] == ["proxy.socks", "proxy.hub"]
    with pytest.raises(ConfigError, match="unknown detector 'nope'"):
        run.select(["nope"])


def test_chain_incident_takes_its_relays() -> None:
    chain = _finding("chain.multihop", {"chain": ["10.10.1.42", "10.10.2.7", "10.10.5.9",
                                                  "203.0.113.66"]})
    r1 = _finding("bridge.relay", RELAY, t=10)
    r2 = _finding("bridge.relay", {**RELAY, "relay": "10.10.5.9"}, t=12)
    lone = _finding("proxy.server", {"proxy": "10.10.9.9", "port": 1080}, severity="medium")
    for f in (chain, r1, r2, lone):
        f.finalize(86400, 25)
    rows = correlate([chain, r1, r2, lone], settings())
    kinds = {r["kind"]: r for r in rows}
    assert set(kinds) == {"chain", "host"}
    assert set(kinds["chain"]["findings"]) == {chain.id, r1.id, r2.id}
    assert kinds["chain"]["risk"] > kinds["host"]["risk"]
    assert r1.incident == chain.incident == kinds["chain"]["id"]


def test_risk_grows_with_corroboration_and_sanctioned_stays_low() -> None:
    a = _finding("bridge.relay", RELAY, severity="medium", confidence=0.6)
    b = _finding("proxy.server", {"proxy": "10.10.2.7", "port": 1080}, severity="low")
    assert risk([a, b]) > risk([a])
    a.sanctioned = b.sanctioned = True
    assert risk([a, b]) <= 15


def test_finding_rejects_bad_values() -> None:
    with pytest.raises(ValueError):
        _finding("x", {}, severity="urgent")
    with pytest.raises(ValueError):
        _finding("x", {}, confidence=1.5)


@pytest.mark.parametrize(("ip", "internal"), [
    ("10.1.2.3", True), ("172.16.0.1", True), ("172.32.0.1", False), ("192.168.9.9", True),
    ("203.0.113.5", False), ("fe80::1", True), ("fd12:3456::1", True), ("2001:db8::1", False),
    ("::1", True), ("not an address", False), ("", False), (None, False)])
def test_internal_in_sql_and_python_agree(ip: str | None, internal: bool) -> None:
    inv = Inventory.from_settings(settings())
    s = Store.open(":memory:")
    inv.define_macros(s.con)
    got = s.con.execute("SELECT hg_internal(?)", [ip]).fetchall()[0][0]
    assert got is internal
    assert inv.is_internal(ip) is internal
    s.close()


def test_declared_networks_replace_the_defaults() -> None:
    inv = Inventory.from_settings(
        settings("inventory.networks=['203.0.113.0/24', '2001:db8::/32']"))
    s = Store.open(":memory:")
    inv.define_macros(s.con)
    for ip, want in (("203.0.113.9", True), ("10.1.1.1", False), ("2001:db8:1::5", True)):
        assert s.con.execute("SELECT hg_internal(?)", [ip]).fetchall()[0][0] is want, ip
        assert inv.is_internal(ip) is want
    s.close()
    with pytest.raises(ConfigError, match=r"inventory\.networks"):
        Inventory.from_settings(settings("inventory.networks=['10.0.0.0/33']"))


def test_endpoints() -> None:
    assert Endpoint.parse("10.0.0.5:3128") == Endpoint("10.0.0.5", 3128)
    assert Endpoint.parse("10.0.0.5") == Endpoint("10.0.0.5", None)
    assert Endpoint.parse("[fd00::5]:1080") == Endpoint("fd00::5", 1080)
    assert Endpoint.parse("fd00::5") == Endpoint("fd00::5", None)
    assert Endpoint("10.0.0.5", 3128).matches("10.0.0.5", 3128)
    assert not Endpoint("10.0.0.5", 3128).matches("10.0.0.5", 8080)
    with pytest.raises(ConfigError):
        Inventory.from_settings(settings("inventory.proxies=['10.0.0.5:http']"))


def test_list_of_ports_setting() -> None:
    assert settings("proxy.web_ports=[443, 8443]").proxy.web_ports == [443, 8443]
    with pytest.raises(ConfigError, match="within"):
        settings("proxy.web_ports=[70000]")
    with pytest.raises(ConfigError):
        settings("proxy.web_ports=['x']")


def test_severity_ladder() -> None:
    assert base.lower_severity("high") == "medium"
    assert base.lower_severity("info") == "info"
    assert base.severity_for(0.85) == "high" and base.severity_for(0.1) == "info"
