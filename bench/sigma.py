"""The Sigma engine's throughput: the whole shipped pack over N generated process events.

Theory of operation. DuckDB generates N process rows (default 10,000,000) from templates of
ordinary Windows and Linux admin command lines (svchost, PowerShell scripts, git over ssh,
rsync backups, iptables -L, netsh advfirewall, 'portproxy show' and other hard negatives),
with one planted positive every 2,500 rows (socat listeners, netsh portproxy add, ssh -R,
plink -R, chisel, iptables DNAT, ncat --sh-exec, sysctl ip_forward ...): 4,000 in 10 M. Every
process rule of the pack then runs in ONE scan (hopguard.sigma.compile_scan) and, for
comparison, as a plain OR of the standalone conditions (lower() written per rule). The
reference is hopguard.sigma.PyMatcher (pure Python, the same parsed rules) on the first
200,000 rows, timed and scaled to N; the one-scan query runs on the same sample and both must
report exactly the same (row, rule) pairs.

Usage: python bench/sigma.py [--events N] [--sample N] [--seed S] [--json OUT]
Exit status: 0 goal met (>= 1,000,000 events/s and identical sample results), 1 missed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

# Run as a script, this file's directory is sys.path[0] and its name would shadow pySigma's
# `sigma` package: drop that entry before importing anything that imports pySigma.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent.resolve()]

from hopguard.sigma import PyMatcher, compile_scan, load_rules, pack_dir  # noqa: E402
from hopguard.sigma.scan import compile_distinct_scan, rows_of  # noqa: E402
from hopguard.store import Store  # noqa: E402

GOAL = 1_000_000.0

WINDOWS = [
    ("C:\\Windows\\System32\\svchost.exe",
     "C:\\Windows\\system32\\svchost.exe -k netsvcs -p -s Schedule"),
    ("C:\\Windows\\System32\\WindowsPowerShell\\v1.0\\powershell.exe",
     "powershell.exe -NoProfile -ExecutionPolicy Bypass -File C:\\Scripts\\backup{n}.ps1"),
    ("C:\\Windows\\System32\\cmd.exe", "cmd.exe /c dir C:\\Users\\user{n}\\Documents"),
    ("C:\\Windows\\System32\\netsh.exe", "netsh advfirewall show allprofiles"),
    ("C:\\Windows\\System32\\netsh.exe", "netsh interface portproxy show all"),
    ("C:\\Windows\\System32\\reg.exe",
     "reg query HKLM\\Software\\Microsoft\\Windows\\CurrentVersion\\Run /s"),
    ("C:\\Program Files\\Git\\usr\\bin\\ssh.exe",
     "ssh.exe git@github.com git-upload-pack 'org/repo{n}.git'"),
    ("C:\\Program Files (x86)\\Microsoft\\Edge\\Application\\msedge.exe",
     "msedge.exe --type=renderer --lang=en-US --renderer-client-id={n}"),
    ("C:\\Windows\\System32\\sc.exe", "sc.exe query wuauserv"),
    ("C:\\Windows\\System32\\Robocopy.exe",
     "robocopy C:\\Data \\\\fs{n}\\backup /MIR /R:2 /W:5 /LOG:C:\\Logs\\rc.log"),
    ("C:\\Windows\\System32\\ipconfig.exe", "ipconfig /all"),
    ("C:\\Windows\\System32\\mstsc.exe", "mstsc.exe /v:ts{n}.corp.example"),
]
LINUX = [
    ("/usr/bin/ls", "ls -la /var/log/app{n}"),
    ("/usr/bin/ssh",
     "ssh -o BatchMode=yes backup@10.0.{n}.7 rsync --server -logDtpre.iLsfxC . /srv"),
    ("/usr/bin/grep", "grep -r ERROR /var/log/app{n}/"),
    ("/usr/bin/python3", "python3 manage.py runserver 0.0.0.0:8000"),
    ("/usr/sbin/iptables", "iptables -L -n -v"),
    ("/usr/sbin/iptables", "iptables -A INPUT -p tcp --dport 22 -s 10.0.0.0/8 -j ACCEPT"),
    ("/usr/bin/curl", "curl -s https://repo{n}.example.com/health"),
    ("/usr/bin/systemctl", "systemctl status sshd"),
    ("/usr/bin/socat", "socat - UNIX-CONNECT:/run/app{n}.sock"),
    ("/usr/bin/docker", "docker run --rm -p 8080:80 nginx:1.{n}"),
    ("/usr/sbin/sysctl", "sysctl -a"),
    ("/usr/bin/scp", "scp report{n}.csv ops@10.0.3.4:/data/"),
]
POSITIVE = [
    ("linux", "/usr/bin/socat", "socat TCP-LISTEN:{p},fork,reuseaddr TCP:10.0.{n}.5:22"),
    ("windows", "C:\\Windows\\System32\\netsh.exe",
     "netsh interface portproxy add v4tov4 listenport={p} listenaddress=0.0.0.0 "
     "connectaddress=10.9.{n}.4 connectport=3389"),
    ("linux", "/usr/bin/ssh", "ssh -f -N -R {p}:localhost:22 tunnel@203.0.113.{n}"),
    ("windows", "C:\\Users\\Public\\plink.exe",
     "plink.exe -ssh -R {p}:127.0.0.1:3389 -pw hunter2 user@198.51.100.{n}"),
    ("linux", "/tmp/chisel", "/tmp/chisel client 203.0.113.{n}:8080 R:socks"),
    ("linux", "/usr/sbin/iptables",
     "iptables -t nat -A PREROUTING -p tcp --dport {p} -j DNAT --to-destination 10.0.0.{n}:443"),
    ("linux", "/usr/bin/ncat", "ncat -l -k -p {p} --sh-exec \"ncat 10.0.0.{n} 22\""),
    ("linux", "/usr/sbin/sysctl", "sysctl -w net.ipv4.ip_forward=1"),
]
PLANT_EVERY = 2500


def _list(values: list[str]) -> str:
    return "[" + ", ".join("'" + v.replace("'", "''") + "'" for v in values) + "]"


def generate(store: Store, n: int, seed: int, unique_share: float = 0.2) -> None:
    """N process rows, half Windows, half Linux, one planted positive every PLANT_EVERY.
    In ``unique_share`` of the ordinary rows the template's number is the row's own (a temp
    file, a session id, a renderer id: a command line seen once), so the distinct-event scan
    faces realistic diversity instead of a few thousand repeated lines."""
    wi, wc = _list([w[0] for w in WINDOWS]), _list([w[1] for w in WINDOWS])
    li, lc = _list([x[0] for x in LINUX]), _list([x[1] for x in LINUX])
    pp, pi, pc = (_list([p[0] for p in POSITIVE]), _list([p[1] for p in POSITIVE]),
                  _list([p[2] for p in POSITIVE]))
    store.con.execute(f"""
    INSERT INTO process BY NAME
    WITH g AS (
        SELECT i, CAST(hash(i, {seed}) % 1000000007 AS BIGINT) AS h,
               (i % {PLANT_EVERY} = 0) AS planted,
               CAST((i // {PLANT_EVERY}) % {len(POSITIVE)} AS BIGINT) AS pk
        FROM range({n}) t(i)
    ), r AS (
        SELECT i, planted, pk, h, (h % 2 = 0) AS win, (h // 2) % 12 AS k,
               CASE WHEN NOT planted AND (h // 7) % 1000 < {int(unique_share * 1000)}
                    THEN CAST(i AS VARCHAR) ELSE CAST((h // 97) % 250 AS VARCHAR) END AS num,
               CAST(1024 + (h // 131) % 60000 AS VARCHAR) AS port
        FROM g
    )
    SELECT TIMESTAMP '2026-11-29 00:00:00' + to_microseconds(i * 8) AS ts, 'bench' AS sensor,
           1 AS file_id, i AS record,
           CASE WHEN planted THEN 'pos-' || num WHEN win THEN 'win-' || (h % 400)
                ELSE 'lnx-' || (h % 400) END AS host,
           CASE WHEN planted THEN {pp}[pk + 1] WHEN win THEN 'windows' ELSE 'linux' END
               AS platform,
           1000 + (h % 60000) AS pid, 1 + (h % 900) AS ppid,
           CASE WHEN planted THEN {pi}[pk + 1] WHEN win THEN {wi}[k + 1] ELSE {li}[k + 1] END
               AS image,
           replace(replace(CASE WHEN planted THEN {pc}[pk + 1] WHEN win THEN {wc}[k + 1]
                                ELSE {lc}[k + 1] END, '{{n}}', num), '{{p}}', port)
               AS command_line,
           CASE WHEN win THEN 'CORP\\user' || (h % 300) ELSE 'user' || (h % 300) END AS "user",
           CASE WHEN win THEN 'C:\\Windows\\explorer.exe' ELSE '/bin/bash' END AS parent_image,
           CASE WHEN win THEN 'C:\\Windows\\Explorer.EXE' ELSE '-bash' END
               AS parent_command_line,
           CASE WHEN win THEN 'sysmon' ELSE 'auditd' END AS source
    FROM r
    """)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=10_000_000)
    ap.add_argument("--sample", type=int, default=200_000)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--unique-share", type=float, default=0.2,
                    help="share of ordinary events whose command line is seen once")
    ap.add_argument("--repeat", type=int, default=3, help="scans timed; the best counts")
    ap.add_argument("--plain", action="store_true",
                    help="also time the plain OR of standalone conditions (slow)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)

    rs = load_rules([pack_dir()])
    rules = [r for r in rs.rules if r.table == "process"]
    store = Store.open(":memory:")
    t0 = time.perf_counter()
    generate(store, args.events, args.seed, args.unique_share)
    gen_s = time.perf_counter() - t0
    planted = args.events // PLANT_EVERY + (1 if args.events % PLANT_EVERY else 0)

    # what endpoint.sigma runs: the rules once per distinct event, then the matches joined back
    # to their rows, giving every matching row with its rule positions
    dscan = compile_distinct_scan("process", rules)
    dsql = rows_of(dscan, ["record"])
    times, matched = [], []
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        matched = store.con.execute(dsql).fetchall()
        times.append(time.perf_counter() - t0)
    dist_s = min(times)
    distinct_events = store.con.execute(
        f"SELECT count(*) FROM (SELECT DISTINCT {', '.join(dscan.keys[:-1])} FROM process)"
    ).fetchone()[0]  # type: ignore[index]
    planted_found = sum(1 for row in matched if row[0] % PLANT_EVERY == 0)
    # the row-by-row one-scan query, for comparison
    scan = compile_scan("process", rules)
    t0 = time.perf_counter()
    row_matched = store.con.execute(scan.sql).fetchall()
    scan_s = time.perf_counter() - t0
    rec = scan.keys.index("record")
    assert {r[rec] for r in row_matched} == {r[0] for r in matched}
    plain_sql = ("SELECT record FROM process WHERE "
                 + " OR ".join(f"({r.condition})" for r in rules)) if rules else None
    plain_s = float("nan")
    if plain_sql and args.plain:
        t0 = time.perf_counter()
        plain_n = len(store.con.execute(plain_sql).fetchall())
        plain_s = time.perf_counter() - t0
        assert plain_n == len(matched), (plain_n, len(matched))

    # the reference on a sample: the first args.sample rows
    store.con.execute(f"CREATE TEMP TABLE sample AS SELECT * FROM process "
                      f"WHERE record < {args.sample}")
    events: list[dict[str, Any]] = store.con.sql("SELECT * FROM sample ORDER BY record") \
        .to_arrow_table().to_pylist()
    matcher = PyMatcher(rules)
    t0 = time.perf_counter()
    py_hits = {(e["record"], rid) for e in events for rid in matcher.match("process", e)}
    py_s = time.perf_counter() - t0
    sq = compile_distinct_scan("process", rules, relation="sample")
    sql_hits = {(row[0], sq.rules[i].id)
                for row in store.con.execute(rows_of(sq, ["record"], relation="sample"))
                .fetchall() for i in row[-1]}
    same = py_hits == sql_hits
    n_sample = len(events)
    py_rate = n_sample / py_s if py_s else float("inf")
    rate = args.events / dist_s
    result = {
        "events": args.events, "rules": len(rules), "planted": planted,
        "planted_found": planted_found, "matched_rows": len(matched),
        "generate_s": round(gen_s, 2), "distinct_events": distinct_events,
        "distinct_scan_s": round(dist_s, 3), "events_per_s": round(rate),
        "row_scan_s": round(scan_s, 3), "row_scan_events_per_s": round(args.events / scan_s),
        "plain_or_s": round(plain_s, 3),
        "sample": n_sample, "py_s": round(py_s, 3), "py_events_per_s": round(py_rate),
        "py_scaled_s": round(args.events / py_rate, 1), "speedup": round(rate / py_rate, 1),
        "sample_pairs_sql": len(sql_hits), "sample_pairs_py": len(py_hits), "same": same,
    }
    print(f"Sigma pack over {args.events:,} process events ({len(rules)} process rules, "
          f"{planted:,} planted positives; generated in {gen_s:.1f} s)")
    print(f"{distinct_events:,} distinct events (the columns the rules read)")
    print(f"{'engine':<40}{'seconds':>10}{'events/s':>14}{'matched rows':>14}")
    print(f"{f'distinct-event scan + rows (best of {args.repeat})':<40}{dist_s:>10.2f}"
          f"{rate:>14,.0f}{len(matched):>14,}")
    print(f"{'row-by-row one-scan SQL':<40}{scan_s:>10.2f}{args.events / scan_s:>14,.0f}"
          f"{len(row_matched):>14,}")
    if args.plain:
        print(f"{'plain OR, lower() per rule':<40}{plain_s:>10.2f}"
              f"{args.events / plain_s:>14,.0f}{len(matched):>14,}")
    print(f"{f'PyMatcher, scaled from {n_sample // 1000}k':<40}"
          f"{args.events / py_rate:>10.1f}{py_rate:>14,.0f}{'':>14}")
    print(f"planted positives found: {planted_found:,} of {planted:,}; one-scan is "
          f"{rate / py_rate:.0f}x PyMatcher; sample (row, rule) pairs: SQL {len(sql_hits):,}, "
          f"Python {len(py_hits):,}, identical: {same}")
    if not same:
        print("differences (row, rule):", sorted(py_hits ^ sql_hits)[:20])
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0 if same and rate >= GOAL else 1


if __name__ == "__main__":
    sys.exit(main())
