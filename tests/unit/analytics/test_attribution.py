"""endpoint.relay over rows in a real store: fork, sh-exec and multiplexed relays, and the
benign shapes that must stay quiet."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import hopguard.analytics.attribution  # noqa: F401  (registers endpoint.relay until MODULES lists it)
from hopguard.store import Store
from tests.unit.analytics.util import findings, put, run


@pytest.fixture()
def store() -> Iterator[Store]:
    s = Store.open(":memory:")
    yield s
    s.close()


def nc(t: float, pid: int, direction: str, *, host: str = "app-07", ppid: int | None = None,
       image: str = "/usr/bin/socat", user: str = "33", src: str | None = None,
       dst: str | None = None, dport: int | None = None, record: int = 0) -> dict[str, object]:
    return {"ts": t, "host": host, "platform": "linux", "pid": pid, "ppid": ppid,
            "image": image, "user": user, "direction": direction, "src_ip": src,
            "dst_ip": dst, "dst_port": dport, "proto": "tcp", "source": "auditd",
            "file_id": 1, "record": record or int(t * 1000) + pid}


def proc(t: float, pid: int, ppid: int, cmd: str, *, host: str = "app-07",
         image: str = "/usr/bin/socat", user: str = "33") -> dict[str, object]:
    return {"ts": t, "host": host, "platform": "linux", "pid": pid, "ppid": ppid,
            "image": image, "command_line": cmd, "user": user, "source": "auditd",
            "file_id": 1, "record": int(t * 1000) + pid}


def test_socat_fork_child_without_process_row(store: Store) -> None:
    put(store, "process", [proc(0.5, 100, 1, "socat TCP-LISTEN:8443,fork TCP:203.0.113.66:443")])
    put(store, "netconn", [
        nc(1.0, 100, "listen", dst="0.0.0.0", dport=8443),
        nc(2.0, 100, "inbound", src="10.10.1.42"),
        nc(2.004, 101, "outbound", ppid=100, dst="203.0.113.66", dport=443),
        nc(5.0, 100, "inbound", src="10.10.1.42"),
        nc(5.010, 102, "outbound", ppid=100, dst="203.0.113.66", dport=443),
    ])
    run(store, "endpoint.relay")
    [f] = findings(store, "endpoint.relay")
    e = f["entities"]
    assert (e["relay"], e["client"], e["in_port"], e["upstream"], e["up_port"]) == (
        "app-07", "10.10.1.42", 8443, "203.0.113.66", 443)
    assert (e["pid"], e["process"], e["user"], e["kind"], e["pairs"]) == (
        100, "socat", "www-data", "process", 2)
    assert e["command_line"].startswith("socat TCP-LISTEN:8443")
    assert f["severity"] == "high"
    assert f["strategy"] == "DET0445/AN1230"
    assert len(f["evidence"]) == 4 and f["evidence"][0]["event"] == "1:2100"
    assert f["evidence"][0]["summary"].endswith("socat accept from 10.10.1.42")
    assert any("tcp dport 8443 drop" in a["text"] for a in f["mitigation"]["actions"])


def test_ncat_sh_exec_through_unlogged_fork(store: Store) -> None:
    put(store, "process", [
        proc(0.1, 200, 1, "ncat --listen --keep-open 0.0.0.0 8444 "
             '--sh-exec "ncat 203.0.113.66 443"', image="/usr/bin/ncat"),
        # pid 210 is ncat's fork: it never exec'd, so nothing names it
        proc(10.004, 211, 210, 'sh -c "ncat 203.0.113.66 443"', image="/usr/bin/dash"),
        proc(10.008, 212, 211, "ncat 203.0.113.66 443", image="/usr/bin/ncat"),
    ])
    put(store, "netconn", [
        nc(0.2, 200, "listen", image="/usr/bin/ncat", dst="0.0.0.0", dport=8444),
        nc(10.0, 200, "inbound", image="/usr/bin/ncat", src="10.10.1.42"),
        nc(10.12, 212, "outbound", ppid=211, image="/usr/bin/ncat", dst="203.0.113.66",
           dport=443),
    ])
    run(store, "endpoint.relay")
    [f] = findings(store, "endpoint.relay")
    assert f["entities"]["pid"] == 200
    assert f["entities"]["in_port"] == 8444
    assert "inferred" in f["explanation"] and "ncat 203.0.113.66 443" in f["explanation"]


def test_sshd_session_multiplexes_forwards(store: Store) -> None:
    sshd = "/usr/sbin/sshd"
    put(store, "netconn", [
        nc(20.0, 300, "inbound", image=sshd, user="0", src="10.10.1.42"),
        # every login: the session child 'connects' to the unspecified address
        nc(20.01, 301, "outbound", ppid=300, image=sshd, user="0", dst="::", dport=22),
        nc(40.0, 301, "outbound", ppid=300, image=sshd, user="0", dst="10.10.5.9", dport=22),
        nc(95.0, 301, "outbound", ppid=300, image=sshd, user="0", dst="10.10.5.9", dport=22),
        # the client's own connect names the port it reached
        nc(19.996, 900, "outbound", host="ws-042", image="/usr/bin/ssh", user="0",
           dst="10.10.2.7", dport=22),
    ])
    run(store, "endpoint.relay", overrides=(
        "inventory.hosts=['app-07=10.10.2.7', 'ws-042=10.10.1.42']",))
    [f] = findings(store, "endpoint.relay")
    e = f["entities"]
    assert (e["relay"], e["pid"], e["kind"], e["client"], e["in_port"], e["upstream"],
            e["up_port"], e["pairs"]) == (
        "10.10.2.7", 301, "multiplexed", "10.10.1.42", 22, "10.10.5.9", 22, 2)
    assert f["severity"] == "high"  # sshd forwarding is a known relay
    assert f["hosts"] == ["10.10.2.7", "10.10.1.42", "10.10.5.9"]


def test_user_login_running_curl_is_not_a_relay(store: Store) -> None:
    sshd = "/usr/sbin/sshd"
    put(store, "process", [
        proc(1.01, 401, 400, "sshd: alice", image=sshd, user="alice"),
        proc(1.2, 402, 401, "bash -c 'curl https://example.org'", image="/usr/bin/bash",
             user="alice"),
        proc(1.3, 403, 402, "curl https://example.org", image="/usr/bin/curl", user="alice"),
    ])
    put(store, "netconn", [
        nc(1.0, 400, "inbound", image=sshd, user="0", src="10.10.1.51"),
        nc(1.5, 403, "outbound", ppid=402, image="/usr/bin/curl", user="alice",
           dst="93.184.216.34", dport=443),
    ])
    run(store, "endpoint.relay")
    assert findings(store, "endpoint.relay") == []


def test_benign_accept_and_unrelated_connect_minutes_apart(store: Store) -> None:
    put(store, "netconn", [
        nc(100.0, 500, "inbound", image="/usr/bin/python3", user="1000", src="10.10.1.7"),
        nc(400.0, 500, "outbound", image="/usr/bin/python3", user="1000", dst="10.10.9.9",
           dport=443),
        nc(700.0, 500, "inbound", image="/usr/bin/python3", user="1000", src="10.10.1.8"),
    ])
    run(store, "endpoint.relay")
    assert findings(store, "endpoint.relay") == []


def test_null_columns_and_loopback_do_not_crash_or_fire(store: Store) -> None:
    put(store, "netconn", [
        {"ts": 1.0, "host": None, "sensor": None, "pid": 1, "direction": "inbound"},
        {"ts": 1.0, "host": "h", "pid": None, "direction": "outbound", "dst_ip": "10.0.0.1"},
        {"ts": 1.0, "host": "h", "pid": 7, "direction": None},
        nc(2.0, 8, "inbound", host="h", image="/usr/bin/node", user="1000", src="127.0.0.1"),
        nc(2.1, 8, "outbound", host="h", image="/usr/bin/node", user="1000",
           dst="127.0.0.1", dport=5432),
        nc(3.0, 9, "inbound", host="h", image=None, user=None, src="10.0.0.5"),  # type: ignore[arg-type]
        nc(3.1, 9, "outbound", host="h", image=None, user=None, dst=None, dport=None),  # type: ignore[arg-type]
    ])
    run(store, "endpoint.relay")
    assert findings(store, "endpoint.relay") == []


def test_sanctioned_proxy_keeps_relay_and_port(store: Store) -> None:
    tp = "/usr/bin/tinyproxy"
    put(store, "netconn", [
        nc(1.0, 600, "inbound", host="proxy-01", image=tp, user="0", src="10.10.1.42"),
        nc(1.004, 600, "outbound", host="proxy-01", image=tp, user="0", dst="203.0.113.10",
           dport=443),
        nc(0.999, 901, "outbound", host="ws-042", image="/usr/bin/curl", user="0",
           dst="10.10.0.5", dport=3128),
    ])
    run(store, "endpoint.relay", overrides=("inventory.hosts=['proxy-01=10.10.0.5']",
                                            "inventory.proxies=['10.10.0.5:3128']"))
    [f] = findings(store, "endpoint.relay")
    assert (f["entities"]["relay"], f["entities"]["in_port"]) == ("10.10.0.5", 3128)
    assert f["sanctioned"] is True and f["severity"] == "low"


def test_application_backend_ports_are_an_option(store: Store) -> None:
    """A web application that accepts a request and queries its database has a relay's shape:
    low while the port is in attribution.backend_ports, a relay when it is not."""
    put(store, "process", [proc(0.5, 300, 1, "gunicorn app:wsgi -b 0.0.0.0:8000",
                                image="/usr/bin/gunicorn")])
    put(store, "netconn", [
        nc(1.0, 300, "listen", image="/usr/bin/gunicorn", dst="0.0.0.0", dport=8000),
        nc(2.0, 300, "inbound", image="/usr/bin/gunicorn", src="10.10.1.42"),
        nc(2.01, 300, "outbound", image="/usr/bin/gunicorn", dst="10.10.5.9", dport=5432),
    ])
    run(store, "endpoint.relay")
    [f] = findings(store, "endpoint.relay")
    assert f["severity"] == "low" and f["entities"]["up_port"] == 5432
    store.con.execute("DELETE FROM finding")
    run(store, "endpoint.relay", overrides=("attribution.backend_ports=[3306]",))
    [f] = findings(store, "endpoint.relay")
    assert f["severity"] == "high"  # www-data (uid 33) is a service account
