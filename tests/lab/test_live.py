"""Live capture: ``hopguard ingest --iface`` inside a lab host records a relay it watches.

A socat relay on app-07 forwards ws-042's HTTP request to the web server; hopguard captures on
app-07's eth0 (a real AF_PACKET socket in the namespace) while curl runs, and the store must then
hold both legs of the relay as flows, the request as an http row on each leg, and the relay's
outbound leg starting after the inbound one.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from hopguard.lab.net import Lab
from hopguard.store import Store

pytestmark = [pytest.mark.lab, pytest.mark.root]

WS, APP, WEB = "10.10.1.42", "10.10.2.7", "203.0.113.10"


def test_live_capture_sees_relayed_request(tmp_path: Path) -> None:
    from hopguard.lab.run import lab_lock
    db = tmp_path / "live.duckdb"
    with lab_lock(), Lab(workdir=tmp_path / "lab") as lab:
        lab.add_host("ws-042", WS)
        lab.add_host("app-07", APP)
        lab.add_host("web", WEB)
        lab.spawn("web", [sys.executable, "-m", "hopguard.lab.servers", "--port", "80"],
                  name="http")
        lab.wait_port("web", 80)
        relay = lab.spawn("app-07", ["socat", "TCP-LISTEN:8080,fork,reuseaddr",
                                     f"TCP:{WEB}:80"], name="socat")
        lab.wait_port("app-07", 8080)
        cap = lab.spawn("app-07", [sys.executable, "-m", "hopguard", "ingest", "--iface", "eth0",
                                   "--duration", "6", "--no-progress", "--db", str(db),
                                   "--set", "packets.rotate=2"], name="hopguard")
        time.sleep(1.5)  # the socket is bound well before this
        lab.run_on("ws-042", ["curl", "-sS", "-o", "/dev/null", "-H", "User-Agent: live-test",
                              f"http://{APP}:8080/relayed/path"])
        assert cap.popen.wait(30) in (0, 2), (cap.log.read_text() if cap.log else "")
        lab.stop(relay)
    log = cap.log.read_text() if cap.log else ""
    with Store.open(str(db), read_only=True) as store:
        files = store.query("SELECT path, format FROM source_file").to_pylist()
        assert files and all(f["path"] == "live:eth0" and f["format"] == "live" for f in files)
        assert len(files) >= 2, f"segments of 2 s over 6 s: {files}"  # rotation happened
        flows = store.query(
            "SELECT uid, src_ip, dst_ip, dst_port, state, src_bytes, dst_bytes, ts "
            "FROM flow WHERE proto = 'tcp' ORDER BY ts").to_pylist()
        inbound = [f for f in flows if (f["src_ip"], f["dst_ip"], f["dst_port"]) ==
                   (WS, APP, 8080)]
        outbound = [f for f in flows if (f["src_ip"], f["dst_ip"], f["dst_port"]) ==
                    (APP, WEB, 80)]
        assert len(inbound) == 1 and len(outbound) == 1, (flows, log)
        assert inbound[0]["state"] == "SF" and outbound[0]["state"] == "SF"
        assert inbound[0]["ts"] < outbound[0]["ts"]
        assert inbound[0]["dst_bytes"] > 0 and outbound[0]["dst_bytes"] > 0
        http = store.query("SELECT uid, method, uri, user_agent, status FROM http "
                           "ORDER BY ts").to_pylist()
        assert {(h["uid"], h["method"], h["uri"], h["user_agent"]) for h in http} == {
            (inbound[0]["uid"], "GET", "/relayed/path", "live-test"),
            (outbound[0]["uid"], "GET", "/relayed/path", "live-test")}
        assert all(h["status"] is not None for h in http)


def test_live_capture_unknown_interface_is_a_clear_error(tmp_path: Path) -> None:
    import subprocess
    proc = subprocess.run([sys.executable, "-m", "hopguard", "ingest", "--iface", "nosuch0",
                           "--duration", "1", "--no-progress", "--db",
                           str(tmp_path / "x.duckdb")], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "no such interface (live:nosuch0)" in proc.stderr
