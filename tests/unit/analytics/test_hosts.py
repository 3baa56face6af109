"""Host names tied to addresses (analytics/hosts.py)."""

from __future__ import annotations

import pytest

from hopguard.analytics.base import Context, Inventory
from hopguard.analytics.hosts import address_of, host_addresses, hosts_of
from hopguard.errors import ConfigError
from hopguard.store import Store
from tests.unit.analytics.util import put, settings


@pytest.fixture
def store() -> Store:
    return Store.open(":memory:")


def _ctx(store: Store, *overrides: str) -> Context:
    st = settings(*overrides)
    inv = Inventory.from_settings(st)
    inv.define_macros(store.con)
    return Context(con=store.con, settings=st, inventory=inv)


def _flow(uid: str, t: float, src: str, sport: int, dst: str, dport: int) -> dict[str, object]:
    return {"ts": t, "uid": uid, "src_ip": src, "src_port": sport, "dst_ip": dst,
            "dst_port": dport, "proto": "tcp"}


def test_learnt_from_connections_joined_to_flows(store: Store) -> None:
    put(store, "flow", [
        _flow("C1", 0.0, "10.10.1.42", 40000, "10.10.2.7", 8443),
        # DNAT: the client's packet seen before (to the forwarder) and after forwarding
        _flow("C2", 10.0, "10.10.1.42", 40100, "10.10.2.7", 2222),
        _flow("C3", 10.001, "10.10.1.42", 40100, "10.10.5.9", 22),
        _flow("C4", 20.0, "10.10.1.51", 50000, "203.0.113.10", 443),
    ])
    put(store, "netconn", [
        {"ts": 0.01, "host": "app-07", "direction": "inbound", "src_ip": "10.10.1.42",
         "src_port": 40000},
        {"ts": 10.01, "host": "db-09", "direction": "inbound", "src_ip": "10.10.1.42",
         "src_port": 40100},
        {"ts": 20.0, "host": "ws-051", "direction": "outbound", "dst_ip": "203.0.113.10",
         "dst_port": 443},
        {"ts": 30.0, "host": "ws-051", "direction": "listen", "dst_ip": "0.0.0.0",
         "dst_port": 22},  # unspecified: names every machine, never counts
        {"ts": 40.0, "host": "nowhere", "direction": "inbound", "src_ip": "10.9.9.9",
         "src_port": 1},  # no flow to join
    ])
    put(store, "config_change", [
        {"ts": 5.0, "host": "fw-01", "source": "nft", "action": "add",
         "object": "ip nat prerouting",
         "detail": "ip daddr 10.10.2.1 tcp dport 2222 dnat to 10.10.5.9:22"},
        {"ts": 5.0, "host": "fw-01", "source": "nft", "action": "add",
         "object": "ip filter forward", "detail": "ip daddr 10.10.5.9 tcp dport 22 accept"},
    ])
    ctx = _ctx(store)
    got = host_addresses(ctx)
    assert got == {"app-07": ["10.10.2.7"], "db-09": ["10.10.5.9"], "ws-051": ["10.10.1.51"],
                   "fw-01": ["10.10.2.1"]}
    assert address_of(ctx, "db-09") == "10.10.5.9"
    assert address_of(ctx, "nowhere") is None and address_of(ctx, None) is None
    assert hosts_of(ctx)["10.10.2.7"] == "app-07"


def test_declared_hosts_win_and_bad_entries_are_errors(store: Store) -> None:
    put(store, "flow", [_flow("C1", 0.0, "10.10.1.42", 40000, "10.10.2.7", 8443)])
    put(store, "netconn", [{"ts": 0.0, "host": "app-07", "direction": "inbound",
                            "src_ip": "10.10.1.42", "src_port": 40000}])
    ctx = _ctx(store, 'inventory.hosts=["web-01=10.10.2.7", "web-01=fd00::7"]')
    assert host_addresses(ctx) == {"web-01": ["10.10.2.7", "fd00::7"]}
    with pytest.raises(ConfigError, match="not name=ip"):
        host_addresses(_ctx(store, 'inventory.hosts=["web-01:10.10.2.7"]'))


def test_empty_store(store: Store) -> None:
    assert host_addresses(_ctx(store)) == {}


def test_busy_server_outbound_takes_the_nearest_flow(store: Store) -> None:
    """Two hosts connect to one sshd a second apart; auditd logs no local port. Each connect
    belongs to the flow that started nearest it, not to whichever flow came last."""
    put(store, "flow", [
        _flow("C1", 0.0, "10.10.1.51", 47636, "10.10.5.9", 22),
        _flow("C2", 1.0, "10.10.2.7", 36352, "10.10.5.9", 22),
        _flow("C3", 3.5, "10.10.1.51", 47640, "10.10.5.9", 22),
        _flow("C4", 4.0, "10.10.2.7", 36364, "10.10.5.9", 22),
    ])
    put(store, "netconn", [
        {"ts": t, "host": h, "direction": "outbound", "dst_ip": "10.10.5.9", "dst_port": 22}
        for t, h in ((0.01, "ws-051"), (1.01, "app-07"), (3.49, "ws-051"), (4.02, "app-07"))])
    assert host_addresses(_ctx(store)) == {"ws-051": ["10.10.1.51"], "app-07": ["10.10.2.7"]}
