"""config.* detectors over rows in a real store: snapshot diffs, an add-then-delete timeline,
registry port proxies, sysctl from a command line, and ordinary admin that stays low."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import hopguard.analytics.changes  # noqa: F401  (registers config.* until MODULES lists them)
from hopguard.analytics.base import SEVERITY_RANK
from hopguard.store import Store
from tests.unit.analytics.util import findings, put, run


@pytest.fixture()
def store() -> Iterator[Store]:
    s = Store.open(":memory:")
    yield s
    s.close()


def cc(t: float, source: str, action: str, obj: str, detail: str | None, *,
       host: str = "app-07", code: str | None = None, pid: int | None = None,
       image: str | None = None, user: str | None = None, record: int = 1
       ) -> dict[str, object]:
    return {"ts": t, "host": host, "platform": "linux", "source": source, "action": action,
            "object": obj, "detail": detail, "event_code": code, "pid": pid, "image": image,
            "user": user, "file_id": 3, "record": record}


def cmd(t: float, line: str, *, host: str = "app-07", pid: int = 50, user: str = "root",
        image: str = "/usr/sbin/sysctl", record: int = 1) -> dict[str, object]:
    return {"ts": t, "host": host, "platform": "linux", "pid": pid, "ppid": 1, "user": user,
            "image": image, "command_line": line, "source": "auditd", "file_id": 4,
            "record": record}


def test_snapshot_diff_reports_only_new_rules(store: Store) -> None:
    dnat = "-A PREROUTING -p tcp -m tcp --dport 2222 -j DNAT --to-destination 10.10.5.9:22"
    put(store, "config_change", [
        cc(0, "iptables", "snapshot", "filter INPUT", "-A INPUT -p tcp --dport 22 -j ACCEPT",
           code="iptables-save", record=5),
        cc(100, "iptables", "snapshot", "filter INPUT", "-A INPUT -p tcp --dport 22 -j ACCEPT",
           code="iptables-save", record=15),
        cc(100, "iptables", "snapshot", "nat PREROUTING", dnat, code="iptables-save",
           record=17),
    ])
    run(store, "config", overrides=("inventory.hosts=['app-07=10.10.2.7']",))
    [f] = findings(store, "config")
    assert f["detector"] == "config.port_forward" and f["severity"] == "high"
    e = f["entities"]
    assert (e["host"], e["ip"], e["listen_port"], e["forward_to"]) == (
        "app-07", "10.10.2.7", 2222, "10.10.5.9:22")
    assert "new since the snapshot of 2025-11-24 16:00:00" in f["explanation"]
    assert f["mitigation"]["actions"][0]["text"] == (
        "on app-07: iptables -t nat -D PREROUTING -p tcp -m tcp --dport 2222 -j DNAT "
        "--to-destination 10.10.5.9:22")
    assert f["evidence"] == [{"table": "config_change", "event": "3:17",
                              "summary": f"iptables-save nat PREROUTING: {dnat}"}]


def test_nft_add_then_delete_timeline(store: Store) -> None:
    rule = "ip daddr 10.10.2.7 tcp dport 2222 dnat to 10.10.5.9:22"
    put(store, "process", [cmd(9.99, f"/usr/sbin/nft add rule ip nat prerouting {rule}",
                               pid=17038, image="/usr/sbin/nft", record=196)])
    put(store, "config_change", [
        cc(10, "nft", "add", "ip nat", None, code="table", pid=17030, image="nft", record=1),
        cc(10, "nft", "add", "ip nat prerouting", rule, code="rule", pid=17038, image="nft",
           record=5),
        cc(10, "netfilter", "nft_register_rule", "nat/ip", "entries=1", code="NETFILTER_CFG",
           pid=17038, image="/usr/sbin/nft", user="0", record=203),
        cc(16, "nft", "delete", "ip nat prerouting", "handle 2", code="rule", pid=17105,
           image="nft", record=15),
    ])
    run(store, "config.port_forward")
    [f] = findings(store, "config")
    assert f["severity"] == "high"
    assert (f["entities"]["pid"], f["entities"]["user"]) == (17038, "root")
    assert "no port-forward/DNAT rule change was logged on app-07 before 16:00:09" \
        in f["explanation"]
    assert "removed at 16:00:16 after 6 s" in f["explanation"]
    assert [e["event"] for e in f["evidence"]] == ["4:196", "3:5", "3:15"]


def test_registry_portproxy_and_its_delete(store: Store) -> None:
    key = r"HKLM\System\CurrentControlSet\Services\PortProxy\v4tov4\tcp\0.0.0.0/8080"
    put(store, "config_change", [
        cc(1, "registry", "SetValue", key, "192.168.1.1/8000", host="MSEDGEWIN10", pid=4028,
           image=r"C:\Windows\system32\netsh.exe", record=4957),
        cc(2, "registry", "DeleteValue", key, None, host="MSEDGEWIN10", pid=5048,
           image=r"C:\Windows\system32\netsh.exe", record=4958),
    ])
    run(store, "config.port_forward")
    [f] = findings(store, "config")
    e = f["entities"]
    assert (e["listen_port"], e["forward_to"], e["pid"]) == (8080, "192.168.1.1:8000", 4028)
    assert f["severity"] == "high" and f["strategy"] == "DET0445/AN1233"
    assert f["mitigation"]["actions"][0]["text"] == (
        "on MSEDGEWIN10: netsh interface portproxy delete v4tov4 listenport=8080 "
        "listenaddress=0.0.0.0")
    assert "removed at 16:00:02 after 1 s" in f["explanation"]


def test_sysctl_from_command_line(store: Store) -> None:
    put(store, "process", [cmd(5, "sysctl -w net.ipv4.ip_forward=1", pid=3420, record=110),
                           cmd(6, "sh -c 'echo 1 > /proc/sys/net/ipv6/conf/all/forwarding'",
                               pid=3421, image="/usr/bin/dash", record=111)])
    run(store, "config.ip_forward")
    got = {f["entities"]["object"]: f for f in findings(store, "config")}
    assert set(got) == {"net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding"}
    f = got["net.ipv4.ip_forward"]
    assert f["severity"] == "medium" and f["entities"]["pid"] == 3420
    assert f["mitigation"]["actions"][0]["text"] == "on app-07: sysctl -w net.ipv4.ip_forward=0"


def test_ordinary_admin_stays_low(store: Store) -> None:
    put(store, "process", [
        cmd(1, "iptables -L -n -v", image="/usr/sbin/iptables", record=1),
        cmd(2, "nft list ruleset", image="/usr/sbin/nft", record=2),
        cmd(3, "netsh interface portproxy show all", host="fs01", image="netsh.exe", record=3),
        cmd(4, "sysctl net.ipv4.ip_forward", record=4),
    ])
    put(store, "config_change", [
        cc(5, "nft", "add", "ip nat POSTROUTING",
           "ip saddr 172.17.0.0/16 oifname != \"docker0\" masquerade", code="rule", pid=900,
           image="dockerd", record=7),
        cc(6, "wininet", "reset", "WinINet proxy settings", None, host="WIN", record=8),
        cc(7, "nft", "add", "inet f2b-table addr-set-sshd", "{ 198.51.100.23 }",
           code="element", pid=1187, image="nft", record=9),
        cc(8, "registry", "SetValue", r"HKLM\SOFTWARE\Foo\Bar", "DWORD (0x00000001)",
           host="WIN", record=10),
        {"ts": 9, "host": None, "sensor": None, "source": None, "detail": None},
        cc(10, "nft", "add", "ip nat PREROUTING", None, code="rule", record=11),
    ])
    run(store, "config")
    got = findings(store, "config")
    assert sorted((f["detector"], f["severity"]) for f in got) == [
        ("config.nat", "low"), ("config.proxy_setting", "info")]
    assert all(SEVERITY_RANK[f["severity"]] <= SEVERITY_RANK["low"] for f in got)


def test_options_change_the_outcome(store: Store) -> None:
    """[changes] admin_images and merge_window: a NAT rule from an image that is no longer
    plumbing is medium; traces of one change further apart than the window are two."""
    put(store, "config_change", [
        cc(5, "nft", "add", "ip nat POSTROUTING", "ip saddr 10.9.0.0/16 masquerade",
           code="rule", pid=900, image="dockerd", record=7)])
    put(store, "process", [
        cmd(1, "sysctl -w net.ipv4.ip_forward=1", record=1),
        cmd(31, "sysctl -w net.ipv4.ip_forward=1", record=2)])
    run(store, "config")
    got = {f["detector"]: f for f in findings(store, "config")}
    assert got["config.nat"]["severity"] == "low"
    # both sysctl runs are one change: one finding citing both records
    assert [len(f["evidence"]) for f in findings(store, "config.ip_forward")] == [2]
    store.con.execute("DELETE FROM finding")
    run(store, "config", overrides=("changes.admin_images=['podman']",
                                    "changes.merge_window=10"))
    got = {f["detector"]: f for f in findings(store, "config")}
    assert got["config.nat"]["severity"] == "medium"
    # 30 s apart with a 10 s window: two changes (same entities, so the stored finding is one
    # of them, citing its own record only)
    assert [len(f["evidence"]) for f in findings(store, "config.ip_forward")] == [1]
