"""endpoint.sigma: rows in a real store, the detector run as the CLI runs it."""

from __future__ import annotations

from pathlib import Path

import hopguard.analytics.endpoint  # noqa: F401  (registers endpoint.sigma until MODULES lists it)
from hopguard.analytics.endpoint import listen_port
from hopguard.store import Store
from tests.unit.analytics.util import findings, put, run

PORTPROXY = ("netsh interface portproxy add v4tov4 listenport=8443 listenaddress=0.0.0.0 "
             "connectaddress=10.9.9.9 connectport=443")

USER_RULE = """\
title: Socat listener relay (test rule)
id: 6b7c1e2a-1111-4222-8333-944445555666
status: test
description: socat listens and forwards
tags: [attack.command-and-control, attack.t1090, attack.t1090.001]
logsource:
  category: process_creation
  product: linux
detection:
  sel:
    Image|endswith: /socat
    CommandLine|contains|all: ['TCP-LISTEN:', 'TCP:']
  condition: sel
analytics: [DET0445/AN1230]
tool: socat
level: high
"""

BROKEN_YAML = "title: broken\nlogsource: [\n"
BROKEN_SQL = USER_RULE.replace("6b7c1e2a-1111-4222-8333-944445555666",
                               "6b7c1e2a-1111-4222-8333-944445555667") \
    .replace("Socat listener relay (test rule)", "lookbehind") \
    .replace("CommandLine|contains|all: ['TCP-LISTEN:', 'TCP:']",
             "CommandLine|re: '(?<=socat )TCP'")


def _store() -> Store:
    s = Store.open(":memory:")
    put(s, "process", [
        # the same portproxy command twice on one host -> one finding, two evidence rows
        {"ts": 10.0, "file_id": 3, "record": 101, "host": "win-01", "platform": "windows",
         "pid": 4242, "image": "C:\\Windows\\System32\\netsh.exe", "user": "CORP\\eve",
         "command_line": PORTPROXY.upper()},
        {"ts": 20.0, "file_id": 3, "record": 102, "host": "win-01", "platform": "windows",
         "pid": 4243, "image": "C:\\Windows\\System32\\netsh.exe", "user": "CORP\\eve",
         "command_line": PORTPROXY.upper()},
        {"ts": 30.0, "file_id": 4, "record": 7, "host": "app-07", "platform": "linux",
         "pid": 900, "image": "/usr/bin/socat", "user": "www-data",
         "command_line": "socat TCP-LISTEN:9000,fork TCP:10.0.0.5:22"},
        # hard negatives: reading the config, socat without a listener, NULL command line
        {"ts": 40.0, "file_id": 3, "record": 103, "host": "win-01", "platform": "windows",
         "pid": 1, "image": "C:\\Windows\\System32\\netsh.exe",
         "command_line": "netsh interface portproxy show all"},
        {"ts": 41.0, "file_id": 4, "record": 8, "host": "app-07", "platform": "linux",
         "pid": 2, "image": "/usr/bin/socat", "command_line": "socat - TCP:10.0.0.5:22"},
        {"ts": 42.0, "file_id": 4, "record": 9, "host": "app-07", "platform": "linux",
         "pid": 3, "image": None, "command_line": None},
    ])
    return s


def _sigma(tmp: Path, *extra: str) -> list[dict[str, object]]:
    s = _store()
    overrides = (f"sigma.paths=[\"{tmp}\"]", "inventory.hosts=[\"win-01=10.1.1.5\"]", *extra)
    report = run(s, "endpoint.sigma", overrides=overrides)
    out = findings(s, "endpoint.")
    for f in out:
        f["_notes"] = report.notes
    return out


def test_shipped_pack_and_user_rule(tmp_path: Path) -> None:
    (tmp_path / "socat.yml").write_text(USER_RULE)
    got = _sigma(tmp_path)
    mine = [f for f in got if f["entities"]["rule"] == "6b7c1e2a-1111-4222-8333-944445555666"]
    assert len(mine) == 1
    f = mine[0]
    assert f["title"] == "Socat listener relay (test rule) on app-07"
    assert (f["severity"], f["technique"], f["strategy"]) == ("high", "T1090.001",
                                                              "DET0445/AN1230")
    assert f["entities"]["process"] == "/usr/bin/socat" and f["entities"]["pid"] == 900
    assert f["entities"]["tool"] == "socat" and "ip" not in f["entities"]
    assert f["hosts"] == []
    assert f["evidence"] == [{"table": "process", "event": "4:7", "summary":
                              "2025-11-24T16:00:30 pid 900 user www-data: "
                              "socat TCP-LISTEN:9000,fork TCP:10.0.0.5:22"}]
    actions = [a["text"] for a in f["mitigation"]["actions"]]
    assert any("tcp dport 9000 drop" in a for a in actions), actions
    # the hard negatives (records 8, 9, 103) stay informational or low at most
    events = {e["event"] for g in got for e in g["evidence"]
              if g["severity"] not in ("info", "low")}
    assert not events & {"4:8", "4:9", "3:103"}


def test_portproxy_grouped_with_host_address(tmp_path: Path) -> None:
    (tmp_path / "socat.yml").write_text(USER_RULE)
    got = [f for f in _sigma(tmp_path)
           if f["entities"].get("host") == "win-01"]
    add = [f for f in got if "add" in f["entities"].get("command_line", "").lower()
           and f["severity"] in ("medium", "high", "critical")]
    assert add, [f["title"] for f in got]
    f = add[0]
    assert f["entities"]["ip"] == "10.1.1.5" and f["hosts"] == ["10.1.1.5"]
    assert [e["event"] for e in f["evidence"]] == ["3:101", "3:102"]
    assert f["entities"]["user"] == "CORP\\eve" and f["entities"]["pid"] == 4242
    texts = " ".join(a["text"] for a in f["mitigation"]["actions"])
    assert "netsh interface portproxy delete v4tov4 listenport=8443 listenaddress=0.0.0.0" \
        in texts
    assert "M1042" in f["mitigation"]["ids"]
    assert "2 process events" in f["explanation"]


def test_user_rule_only_severity_and_grouping(tmp_path: Path) -> None:
    (tmp_path / "socat.yml").write_text(USER_RULE.replace("level: high", "level: informational"))
    got = _sigma(tmp_path, "sigma.pack=false")
    assert [(f["entities"]["rule"], f["severity"], f["confidence"]) for f in got] == [
        ("6b7c1e2a-1111-4222-8333-944445555666", "info", 0.2)]


def test_broken_user_rules_are_noted_and_the_rest_runs(tmp_path: Path) -> None:
    (tmp_path / "socat.yml").write_text(USER_RULE)
    (tmp_path / "broken.yml").write_text(BROKEN_YAML)
    (tmp_path / "lookbehind.yml").write_text(BROKEN_SQL)
    got = _sigma(tmp_path, "sigma.pack=false")
    assert [f["entities"]["rule"] for f in got] == ["6b7c1e2a-1111-4222-8333-944445555666"]
    notes = got[0]["_notes"]
    assert isinstance(notes, list)
    assert any("broken.yml:2" in n and "not loaded" in n for n in notes), notes
    # pySigma checks regexes with RE2 already: the look-behind is a load error with its line
    assert any("lookbehind.yml:12" in n and "not loaded" in n for n in notes), notes


def test_rule_duckdb_rejects_is_dropped(tmp_path: Path) -> None:
    from dataclasses import replace

    from hopguard.sigma import check_rules, load_rules

    (tmp_path / "socat.yml").write_text(USER_RULE)
    good = load_rules([tmp_path]).rules[0]
    bad = replace(good, id="x", condition="no_such_function(command_line)")
    s = _store()
    ok, dropped = check_rules(s.con, [bad, good])
    assert ok == [good]
    assert [(r.id, "no_such_function" in msg) for r, msg in dropped] == [("x", True)]


def test_listen_port() -> None:
    assert listen_port("socat TCP4-LISTEN:8080,fork TCP:x:80") == 8080
    assert listen_port("ncat -l -p 4444 --sh-exec 'ncat x 22'") == 4444
    assert listen_port("ssh -N -D 1080 user@h") == 1080
    assert listen_port("ssh -L 127.0.0.1:8443:intranet:443 h") == 8443
    assert listen_port("chisel server --port 8000 --reverse") == 8000
    assert listen_port("netsh interface portproxy add v4tov4 listenport=3389 connectaddress=x") \
        == 3389
    assert listen_port("ls -la") is None and listen_port(None) is None
