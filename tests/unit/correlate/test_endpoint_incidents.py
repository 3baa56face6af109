"""Endpoint findings join the network activity they explain (correlate/)."""

from __future__ import annotations

from hopguard.analytics.base import Evidence, Finding, Mitigation
from hopguard.correlate import correlate, is_endpoint, primary_host, risk
from tests.unit.analytics.util import at, settings

RELAY = {"relay": "10.10.2.7", "client": "10.10.1.42", "in_port": 8443,
         "upstream": "203.0.113.66", "up_port": 443}


def _f(detector: str, entities: dict[str, object], *, t: float = 0.0, span: float = 30.0,
       severity: str = "high") -> Finding:
    f = Finding(detector=detector, title=f"{detector} title", technique="T1090.001",
                strategy="DET0445", severity=severity, confidence=0.8, first_seen=at(t),
                last_seen=at(t + span), entities=dict(entities),
                evidence=[Evidence(table="process", event="1:2", summary="x")],
                explanation="measured", mitigation=Mitigation(ids=["M1037"]))
    f.finalize(86400, 25)
    if is_endpoint(f) and isinstance(entities.get("ip"), str):
        f.hosts = [str(entities["ip"])]
    return f


SOCAT = {"host": "app-07", "ip": "10.10.2.7", "tool": "socat", "process": "/usr/bin/socat",
         "pid": 16792, "user": "www-data", "command_line": "socat TCP-LISTEN:8443,fork TCP:x:443"}


def test_relay_and_its_tool_make_one_incident_that_names_both() -> None:
    relay = _f("bridge.relay", RELAY, t=10)
    tool = _f("endpoint.sigma", SOCAT, t=0, span=1)
    change = _f("config.port_forward", {"host": "app-07", "ip": "10.10.2.7",
                                        "change": "dnat 8443 to 203.0.113.66:443"}, t=5)
    rows = correlate([relay, tool, change], settings())
    assert len(rows) == 1
    inc = rows[0]
    assert set(inc["findings"]) == {relay.id, tool.id, change.id}
    assert inc["tools"] == ["socat"] and inc["users"] == ["www-data"]
    assert inc["processes"] == ["/usr/bin/socat (pid 16792) as www-data"]
    assert inc["legs"] == ["10.10.1.42 > 10.10.2.7:8443 > 203.0.113.66:443"]
    assert inc["changes"] == ["app-07: dnat 8443 to 203.0.113.66:443"]
    assert inc["host_names"] == ["app-07"]
    assert "set up with socat by www-data" in inc["title"]
    # host and wire agreeing is worth more than either alone
    assert inc["risk"] > risk([relay]) and inc["risk"] > risk([tool])


def test_client_side_tool_joins_the_relay_it_uses() -> None:
    """ssh -L runs on the client; the relay finding is about the server."""
    relay = _f("bridge.relay", RELAY, t=10)
    ssh = _f("endpoint.sigma", {"host": "ws-042", "ip": "10.10.1.42", "tool": "ssh",
                                "process": "/usr/bin/ssh", "pid": 5, "user": "root"}, t=0)
    rows = correlate([relay, ssh], settings())
    assert len(rows) == 1 and relay.incident == ssh.incident


def test_chain_origin_tool_joins_the_chain() -> None:
    chain = _f("chain.multihop", {"chain": ["10.10.1.42", "10.10.2.7", "203.0.113.66"]}, t=5)
    pc = _f("endpoint.sigma", {"host": "ws-042", "ip": "10.10.1.42", "tool": "proxychains4",
                               "process": "/usr/bin/proxychains4", "pid": 9}, t=0)
    rows = correlate([chain, pc], settings())
    assert len(rows) == 1 and rows[0]["kind"] == "chain" and pc.incident == chain.incident


def test_far_apart_or_elsewhere_stays_apart() -> None:
    relay = _f("bridge.relay", RELAY, t=10)
    late = _f("endpoint.sigma", {**SOCAT, "pid": 1}, t=10 + 7200)  # beyond gap and window
    other = _f("endpoint.sigma", {**SOCAT, "host": "db-09", "ip": "10.10.5.9"}, t=10)
    unknown = _f("endpoint.sigma", {"host": "mac-alice", "tool": "networksetup"}, t=10)
    rows = correlate([relay, late, other, unknown], settings())
    assert len(rows) == 4
    assert primary_host(unknown) == "mac-alice"  # keyed by name when no address is known
    assert {r["key"] for r in rows} == {"10.10.2.7", "10.10.5.9", "mac-alice"}
    assert late.incident != relay.incident


def test_window_is_a_setting() -> None:
    relay = _f("bridge.relay", RELAY, t=300)
    ssh = _f("endpoint.sigma", {"host": "ws-042", "ip": "10.10.1.42", "tool": "ssh"}, t=0,
             span=1)
    assert len(correlate([relay, ssh], settings())) == 1  # 299 s apart, default window 600 s
    assert len(correlate([relay, ssh], settings("correlate.endpoint_window=60"))) == 2


def test_client_tool_goes_to_the_relay_its_command_line_names() -> None:
    """ws-042 uses the sanctioned proxy and, at the same time, an ssh -L through app-07: the
    ssh finding belongs with the relay its command line names, not the proxy it also uses."""
    proxy = _f("bridge.relay", {"relay": "10.10.0.5", "client": "10.10.1.42", "in_port": 3128,
                                "upstream": "203.0.113.10", "up_port": 443}, t=0, severity="low")
    proxy.sanctioned = True
    relay = _f("bridge.relay", {"relay": "10.10.2.7", "client": "10.10.1.42", "in_port": 22,
                                "upstream": "10.10.5.9", "up_port": 22}, t=20)
    ssh = _f("endpoint.sigma", {"host": "ws-042", "ip": "10.10.1.42", "tool": "ssh",
                                "process": "/usr/bin/ssh", "pid": 7,
                                "command_line": "ssh -N -L 8022:10.10.5.9:22 root@10.10.2.7"},
             t=1)
    correlate([proxy, relay, ssh], settings())
    assert ssh.incident == relay.incident != proxy.incident
    # without the names, the unsanctioned relay still wins over the sanctioned proxy
    plain = _f("endpoint.sigma", {"host": "ws-042", "ip": "10.10.1.42", "tool": "ssh",
                                  "pid": 8}, t=1)
    correlate([proxy, relay, plain], settings())
    assert plain.incident == relay.incident


def test_a_chain_through_the_client_does_not_steal_the_relay_evidence() -> None:
    """A lab run once paired ws-042's ssh session with its own proxied browsing, a chain
    app-07 > ws-042 > proxy > web. The process relay on app-07 has the same legs as the real
    relay pair and goes there; the ssh -L names the relay and its upstream and goes there too,
    though ws-042 sits on the chain as a relay."""
    chain = _f("chain.multihop", {"chain": ["10.10.2.7", "10.10.1.42", "10.10.0.5",
                                            "203.0.113.10"]}, t=0)
    relay = _f("bridge.relay", {"relay": "10.10.2.7", "client": "10.10.1.42", "in_port": 22,
                                "upstream": "10.10.5.9", "up_port": 22}, t=2)
    sshd = _f("endpoint.relay", {"host": "app-07", "ip": "10.10.2.7", "relay": "10.10.2.7",
                                 "client": "10.10.1.42", "in_port": 22,
                                 "upstream": "10.10.5.9", "up_port": 22, "process": "sshd",
                                 "pid": 6358}, t=2)
    ssh = _f("endpoint.sigma", {"host": "ws-042", "ip": "10.10.1.42", "tool": "ssh",
                                "command_line": "ssh -N -L 8022:10.10.5.9:22 root@10.10.2.7"},
             t=1)
    correlate([chain, relay, sshd, ssh], settings())
    assert sshd.incident == relay.incident == ssh.incident != chain.incident
