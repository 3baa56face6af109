"""chain.multihop over relay pairs from synthetic flows in a real store."""

from __future__ import annotations

from typing import Any

from hopguard.store import Store
from tests.unit.analytics.test_bridge import flow
from tests.unit.analytics.util import findings, put, run


def path_flows(hosts: list[str], t: float, ports: list[int], *, ob: int = 900,
               rb: int = 2400) -> list[dict[str, Any]]:
    """One connection relayed along ``hosts``: flow k goes hosts[k] -> hosts[k+1]:ports[k]."""
    rows = []
    for k in range(len(hosts) - 1):
        start = t + 0.002 * k
        rows.append(flow(hosts[k], 40000 + k, hosts[k + 1], ports[k], start, 1.0 - 0.002 * k,
                         ob, rb, uid=f"P{int(t)}_{k}"))
    return rows


def test_chain_of_three_relays(store: Store) -> None:
    hosts = ["10.0.1.42", "10.0.2.7", "10.0.5.9", "10.0.6.3", "203.0.113.66"]
    put(store, "flow", path_flows(hosts, 0, [2222, 22, 8080, 443])
        + path_flows(hosts, 30, [2222, 22, 8080, 443]))
    run(store, "bridge.relay", "chain.multihop")
    got = findings(store, "chain.multihop")
    assert len(got) == 1
    f = got[0]
    assert f["entities"] == {
        "chain": hosts, "hops": 4, "destination": "203.0.113.66:443",
        "relays": [{"relay": h, "kind": "process"} for h in hosts[1:-1]]}
    assert f["technique"] == "T1090.003" and f["severity"] == "high"
    assert [e["uid"] for e in f["evidence"]][:4] == ["P0_0", "P0_1", "P0_2", "P0_3"]
    assert len(f["evidence"]) == 8
    assert "2 connection path(s) crossed 3 relays" in f["explanation"]


def test_one_relay_is_not_a_chain(store: Store) -> None:
    put(store, "flow", path_flows(["10.0.1.42", "10.0.2.7", "203.0.113.66"], 0, [8443, 443]))
    run(store, "bridge.relay", "chain.multihop")
    assert len(findings(store, "bridge.relay")) == 1
    assert findings(store, "chain.multihop") == []
    run(store, "chain.multihop", overrides=("chain.min_relays=1",))
    assert [f["entities"]["chain"] for f in findings(store, "chain.multihop")] == [
        ["10.0.1.42", "10.0.2.7", "203.0.113.66"]]


def test_loop_is_blocked(store: Store) -> None:
    # A -> B -> C -> D -> B -> E: the step back into B is refused, the path ends at D
    a, b, c, d, e = "10.0.1.42", "10.0.2.7", "10.0.5.9", "10.0.6.3", "203.0.113.66"
    put(store, "flow", path_flows([a, b, c, d, b, e], 0, [2222, 22, 8080, 2223, 443]))
    run(store, "bridge.relay", "chain.multihop")
    assert len(findings(store, "bridge.relay")) == 5  # B also pairs A->B with B->E
    got = findings(store, "chain.multihop")
    assert [f["entities"]["chain"] for f in got] == [[a, b, c, d]]
    assert got[0]["entities"]["destination"] == "10.0.6.3:8080"


def test_max_hops_bounds_the_walk(store: Store) -> None:
    hosts = ["10.0.1.42", "10.0.2.7", "10.0.5.9", "10.0.6.3", "10.0.7.4", "203.0.113.66"]
    put(store, "flow", path_flows(hosts, 0, [2222, 22, 8080, 9090, 443]))
    run(store, "bridge.relay", "chain.multihop", overrides=("chain.max_hops=3",))
    got = findings(store, "chain.multihop")
    assert [f["entities"]["chain"] for f in got] == [hosts[:4]]
    assert "may go on" in got[0]["explanation"]


def _socks(uid: str, client: str, proxy: str, t: float, target: str, port: int) -> dict[str, Any]:
    return {"ts": t, "uid": uid, "src_ip": client, "src_port": 40000, "dst_ip": proxy,
            "dst_port": 1080, "protocol": "socks5", "target_ip": target, "target_port": port,
            "outcome": "succeeded"}


def test_nested_handshakes_name_hops_no_sensor_sees(store: Store) -> None:
    """proxychains: ws -> app:1080 asks for hop2:1080, and inside that tunnel asks hop2 for
    c2:443. Only the first connection crosses the sensor."""
    ws, app, hop2, c2 = "10.0.1.42", "10.0.2.7", "203.0.113.80", "203.0.113.66"
    put(store, "flow", [flow(ws, 40000, app, 1080, 0.0, 2.0, 900, 2400, uid="N1")])
    put(store, "proxy", [_socks("N1", ws, app, 0.01, hop2, 1080),
                         _socks("N1", ws, app, 0.02, c2, 443)])
    run(store, "chain.multihop")
    [f] = findings(store, "chain.multihop")
    assert f["entities"]["chain"] == [ws, app, hop2, c2]
    assert f["entities"]["destination"] == f"{c2}:443"
    assert [r["kind"] for r in f["entities"]["relays"]] == ["socks5", "socks5"]


def test_a_handshake_on_the_last_leg_extends_the_path(store: Store) -> None:
    ws, app, hop2, c2 = "10.0.1.42", "10.0.2.7", "203.0.113.80", "203.0.113.66"
    put(store, "flow", path_flows([ws, app, hop2], 0, [1080, 1080]))
    put(store, "proxy", [_socks("P0_1", app, hop2, 0.01, c2, 443)])
    run(store, "bridge.relay", "chain.multihop")
    [f] = findings(store, "chain.multihop")
    assert f["entities"]["chain"] == [ws, app, hop2, c2]
    assert [r["kind"] for r in f["entities"]["relays"]] == ["process", "socks5"]


def test_handshakes_on_flows_without_times_are_passed_over(store: Store) -> None:
    put(store, "flow", [{**flow("10.0.1.42", 40000, "10.0.2.7", 1080, 0.0, 2.0, 900, 2400,
                                uid="N2"), "ts": None}])
    put(store, "proxy", [_socks("N2", "10.0.1.42", "10.0.2.7", 0.01, "203.0.113.80", 1080),
                         _socks("N2", "10.0.1.42", "10.0.2.7", 0.02, "203.0.113.66", 443)])
    run(store, "chain.multihop")
    assert findings(store, "chain.multihop") == []
