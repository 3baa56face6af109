"""Endpoint detection: Sigma rules over process, network-connection, registry and configuration
events (detector ``endpoint.sigma``).

Theory of operation: the rules (the pack shipped in ``hopguard/rules/sigma`` when
``[sigma] pack`` is on, plus ``[sigma] paths``) are loaded once per analyze run and kept in
``ctx.cache``. Load errors (file:line) become notes; then each rule is bound alone once against
the store (``LIMIT 0``), so a user rule whose SQL DuckDB rejects (an RE2-incompatible regex, say)
is dropped with a note instead of failing the scan. Per table, one query runs every rule in one
pass over the distinct combinations of the columns the rules read
(:func:`hopguard.sigma.scan.compile_distinct_scan`: endpoint events repeat, so the rules run once
per distinct event), joins the matches back to their rows (:func:`~hopguard.sigma.scan.rows_of`),
unnests the matched rule positions and groups the
matches per (rule, host, image, command line | registry object and value | destination | DNS
name), so a rule that fires on a thousand identical command lines is one finding with a thousand
counted events. Each group becomes a finding whose severity comes from the Sigma level, whose
technique and DET/AN strategy come from the rule, and whose mitigation is chosen from what
matched (a netsh portproxy gets its ``delete`` command, an ssh tunnel the sshd setting, a
listener port an nft drop rule).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hopguard.analytics.base import (
    Action,
    Context,
    Evidence,
    Finding,
    Mitigation,
    detector,
    ts_of,
)
from hopguard.analytics.hosts import address_of
from hopguard.sigma import Rule, check_rules, load_rules, rule_paths
from hopguard.sigma.fields import KEY_COLUMNS, quote_ident
from hopguard.sigma.scan import ScanQuery, compile_distinct_scan, rows_of

CACHE_KEY = "endpoint.sigma.rules"
SEVERITY = {"informational": "info", "low": "low", "medium": "medium", "high": "high",
            "critical": "critical"}
CONFIDENCE = {"informational": 0.2, "low": 0.35, "medium": 0.55, "high": 0.75, "critical": 0.9}
MAX_ROWS = 50  # evidence rows fetched per group (finalize() caps them again)
CMD_MAX = 400

# What one finding is about, per table (besides the rule).
GROUP: dict[str, tuple[str, ...]] = {
    "process": ("host", "image", "command_line"),
    "config_change": ("host", "image", "source", "object", "detail"),
    "netconn": ("host", "image", "direction", "dst_ip", "dst_port"),
    "dns": ("host", "image", "query"),
}


def rules(ctx: Context) -> list[Rule]:
    """The runnable rules of this analyze run (loaded and checked once, then cached)."""
    cached = ctx.cache.get(CACHE_KEY)
    if cached is not None:
        return list(cached)
    s = ctx.settings.sigma
    loaded = load_rules(rule_paths(s.pack, s.paths), disabled=s.disabled, min_level=s.min_level)
    for err in loaded.errors:
        ctx.note(f"sigma: rule not loaded: {err}")
    for note in loaded.notes:
        ctx.note(note)
    good, bad = check_rules(ctx.con, loaded.rules)
    for rule, msg in bad:
        ctx.note(f"sigma: rule {rule.id} ({rule.title}, {rule.location}) dropped: DuckDB "
                 f"rejects its SQL: {msg}")
    ctx.cache[CACHE_KEY] = good
    return list(good)


def _grouped_sql(table: str, scan: ScanQuery) -> str:
    keys = KEY_COLUMNS[table]
    group = GROUP[table]
    firsts = [c for c in keys if c not in group and c not in ("ts", "file_id", "record")]
    q = quote_ident
    struct = ", ".join(f"{q(c)}: {q(c)}" for c in keys)
    return (
        f"WITH m AS ({rows_of(scan, keys)}), u AS (SELECT * EXCLUDE (hits), unnest(hits) "
        f"AS hg_rule FROM m) SELECT hg_rule, {', '.join(q(c) for c in group)}, "
        "min(ts) AS hg_first, max(ts) AS hg_last, count(*) AS hg_n, "
        + "".join(f"arg_min({q(c)}, ts) AS {q(c)}, " for c in firsts)
        + f"list({{{struct}}} ORDER BY ts, file_id, record)[1:{MAX_ROWS}] AS hg_rows "
        f"FROM u GROUP BY ALL ORDER BY hg_first, hg_rule")


@detector("endpoint.sigma", technique="T1090",
          tables=("process", "netconn", "config_change", "dns"),
          summary="Sigma rules (shipped pack and your own) over process, connection, registry "
                  "and configuration-change events")
def sigma(ctx: Context) -> Iterator[Finding]:
    by_table: dict[str, list[Rule]] = {}
    for rule in rules(ctx):
        by_table.setdefault(rule.table, []).append(rule)
    for table in GROUP:
        table_rules = by_table.get(table)
        if not table_rules:
            continue
        scan = compile_distinct_scan(table, table_rules)
        for row in ctx.rows(_grouped_sql(table, scan)):
            yield _finding(ctx, table, scan.rules[row["hg_rule"]], row)


def _clip(text: Any, limit: int = CMD_MAX) -> str:
    s = "" if text is None else str(text)
    return s if len(s) <= limit else s[:limit - 1] + "…"


def _summary(table: str, r: dict[str, Any]) -> str:
    ts = ts_of(r["ts"]).isoformat(timespec="seconds") if r.get("ts") is not None else "?"
    who = f"pid {r.get('pid')}" + (f" user {r['user']}" if r.get("user") else "")
    if table == "process":
        return f"{ts} {who}: {_clip(r.get('command_line') or r.get('image'), 200)}"
    if table == "config_change":
        return (f"{ts} {r.get('source') or '?'} {r.get('action') or ''} "
                f"{_clip(r.get('object'), 150)} = {_clip(r.get('detail'), 150)}")
    if table == "netconn":
        return (f"{ts} {who} {r.get('image') or '?'} {r.get('direction') or ''} "
                f"{r.get('src_ip')}:{r.get('src_port')} -> {r.get('dst_ip')}:{r.get('dst_port')}")
    return f"{ts} {who} {r.get('image') or '?'} queried {r.get('query')}"


def _technique(rule: Rule) -> str:
    if not rule.techniques:
        return "T1090"
    first = rule.techniques[0]
    # attack.t1090 + attack.t1090.001: the sub-technique says more
    sub = next((t for t in rule.techniques[1:] if t.startswith(first + ".")), None)
    return sub or first


def _finding(ctx: Context, table: str, rule: Rule, row: dict[str, Any]) -> Finding:
    host = row.get("host")
    ip = address_of(ctx, host)
    entities: dict[str, Any] = {"host": host, "rule": rule.id, "rule_title": rule.title,
                                "tool": rule.tool or None, "process": row.get("image"),
                                "pid": row.get("pid"), "user": row.get("user"),
                                "platform": row.get("platform")}
    if ip:
        entities["ip"] = ip
    if table == "process":
        entities["command_line"] = _clip(row.get("command_line"))
    elif table == "config_change":
        entities["object"] = _clip(row.get("object"))
        entities["detail"] = _clip(row.get("detail"))
        entities["source"] = row.get("source")
    elif table == "netconn":
        entities["dst_ip"], entities["dst_port"] = row.get("dst_ip"), row.get("dst_port")
        entities["direction"] = row.get("direction")
    else:
        entities["query"] = row.get("query")
    entities = {k: v for k, v in entities.items() if v is not None}
    n = int(row["hg_n"])
    first, last = ts_of(row["hg_first"]), ts_of(row["hg_last"])
    what = _what(table, row)
    span = (f"at {first.isoformat(timespec='seconds')}Z" if first == last else
            f"between {first.isoformat(timespec='seconds')}Z and "
            f"{last.isoformat(timespec='seconds')}Z")
    explanation = (
        f"Sigma rule '{rule.title}' ({rule.id}, level {rule.level}, {rule.location}) matched "
        f"{n} {table} event{'s' if n != 1 else ''} on {host or 'an unnamed host'} {span}: "
        f"{what}." + (f" {_clip(rule.description, 300)}" if rule.description else "")
        + (f" Known false positives: {'; '.join(rule.falsepositives)}."
           if rule.falsepositives else ""))
    evidence = [Evidence(table=table, event=f"{r.get('file_id')}:{r.get('record')}",
                         summary=_summary(table, r)) for r in row["hg_rows"] or []]
    return Finding(
        detector="endpoint.sigma", title=f"{rule.title} on {host or 'unknown host'}",
        technique=_technique(rule), strategy=", ".join(rule.analytics) or "DET0445",
        severity=SEVERITY[rule.level], confidence=CONFIDENCE[rule.level],
        first_seen=first, last_seen=last, entities=entities, evidence=evidence,
        explanation=explanation, mitigation=mitigation_for(rule, table, row),
        hosts=[ip] if ip else [], evidence_total=n)


def _what(table: str, row: dict[str, Any]) -> str:
    if table == "process":
        return f"{row.get('image') or '?'} ran '{_clip(row.get('command_line'), 300)}'" + (
            f" (user {row['user']})" if row.get("user") else "")
    if table == "config_change":
        return (f"{row.get('source') or '?'} change of {_clip(row.get('object'), 200)} to "
                f"'{_clip(row.get('detail'), 200)}'"
                + (f" by {row['image']}" if row.get("image") else ""))
    if table == "netconn":
        return (f"{row.get('image') or '?'} {row.get('direction') or 'connection'} "
                f"{row.get('dst_ip')}:{row.get('dst_port')}")
    return f"{row.get('image') or '?'} looked up {row.get('query')}"


# -- mitigations --------------------------------------------------------------------------------

_LISTEN = [
    re.compile(r"tcp[46]?-listen:(\d+)", re.I),  # socat
    re.compile(r"(?:^|\s)(?:-l|--listen)\s+(?:-p\s+)?(?:[\w.:\[\]]+:)?(\d+)\b"),  # ncat/nc
    re.compile(r"(?:^|\s)-[lp]{1,2}\s+(\d+)\b"),  # nc -lp 8080
    re.compile(r"--port[ =](\d+)\b"),  # chisel server --port
    re.compile(r"(?:^|\s)-[LD]\s*(?:[\w.\[\]:]*?:)?(\d+)(?::|\s|$)"),  # ssh -L/-D local listener
    re.compile(r"listenport=(\d+)", re.I),  # netsh portproxy
]
_PORTPROXY = re.compile(r"listenport=(\d+)", re.I)
_LISTENADDR = re.compile(r"listenaddress=([^\s]+)", re.I)
_REG_PORTPROXY = re.compile(r"\\portproxy\\(v4tov4|v4tov6|v6tov4|v6tov6)\\tcp\\?([^\\]*)$", re.I)


def listen_port(command_line: str | None) -> int | None:
    """The port a relay's command line makes it listen on, when it names one."""
    if not command_line:
        return None
    for rx in _LISTEN:
        m = rx.search(command_line)
        if m and 0 < int(m.group(1)) < 65536:
            return int(m.group(1))
    return None


def mitigation_for(rule: Rule, table: str, row: dict[str, Any]) -> Mitigation:
    """The M-ids and the concrete host actions for what a rule matched."""
    cmd = str(row.get("command_line") or "")
    obj = str(row.get("object") or "")
    detail = str(row.get("detail") or "")
    text = " ".join((cmd, obj, detail, rule.tool, rule.title)).lower()
    host = row.get("host") or "the host"
    image = row.get("image") or ""
    actions: list[Action] = []
    ids: list[str] = []

    def add(mid: str, kind: str, action: str) -> None:
        if mid not in ids:
            ids.append(mid)
        actions.append(Action(kind=kind, text=action))

    if "portproxy" in text:
        port_m, addr_m = _PORTPROXY.search(cmd), _LISTENADDR.search(cmd)
        kind, port, addr = "v4tov4", port_m.group(1) if port_m else None, \
            addr_m.group(1) if addr_m else None
        reg = _REG_PORTPROXY.search(obj)
        if reg:
            kind = reg.group(1).lower()
            if "/" in reg.group(2):  # value name "<listenaddress>/<listenport>"
                addr, _, port = reg.group(2).rpartition("/")
        delete = f"netsh interface portproxy delete {kind}"
        delete += f" listenport={port}" if port else " listenport=<port>"
        if addr:
            delete += f" listenaddress={addr}"
        add("M1042", "host", f"on {host}: {delete}; then check 'netsh interface portproxy "
            "show all' is empty and the IP Helper (iphlpsvc) service is not needed")
    if re.search(r"\b(ssh|plink|autossh)\b", text) and re.search(r"\s[-/–][rldw]\b", cmd.lower()):
        add("M1042", "host", "disable AllowTcpForwarding, GatewayPorts and PermitTunnel "
            "(set them to 'no') in /etc/ssh/sshd_config on the SSH server this tunnel reaches, "
            "then reload sshd")
    if "sshd_config" in text or "allowtcpforwarding" in text or "gatewayports" in text:
        add("M1042", "host", f"on {host}: set 'AllowTcpForwarding no' and 'GatewayPorts no' "
            "in /etc/ssh/sshd_config (and any sshd_config.d file), then "
            "'systemctl reload sshd'")
    if "ip_forward" in text or re.search(r"\.forwarding\b", text):
        add("M1042", "host", f"on {host}: 'sysctl -w net.ipv4.ip_forward=0' (and "
            "net.ipv6.conf.all.forwarding=0) and remove the setting from /etc/sysctl.conf and "
            "/etc/sysctl.d/, unless the host is a router")
    if re.search(r"\b(dnat|redirect|masquerade|snat|tproxy)\b", text):
        if re.search(r"\biptables\b|\bip6tables\b", text) and re.search(r"\s-[AI]\s", cmd):
            undo = re.sub(r"\s-[AI]\s(\S+)(\s\d+)?", r" -D \1", cmd, count=1)
            add("M1037", "host", f"on {host}: remove the forwarding rule: {_clip(undo, 300)}")
        else:
            add("M1037", "host", f"on {host}: find the rule with 'nft -a list ruleset' and "
                "remove it with 'nft delete rule <family> <table> <chain> handle <n>'")
    if "proxyserver" in text or "proxyenable" in text or "autoconfigurl" in text:
        add("M1042", "host", f"on {host}: reset the WinINet proxy (reg delete \"HKCU\\Software\\"
            "Microsoft\\Windows\\CurrentVersion\\Internet Settings\" /v ProxyServer /f, set "
            "ProxyEnable to 0) and pin the sanctioned proxy by group policy")
    port = listen_port(cmd)
    if port is not None:
        # the inet family covers IPv4 and IPv6 alike
        add("M1037", "nft", f"on {host}: nft add rule inet filter input tcp dport {port} "
            "drop (closes the listener the command line opens)")
    if not actions or (image and not ids.count("M1038") and rule.level in ("high", "critical")):
        tool = rule.tool or Path(str(image).replace("\\", "/")).name or "the tool"
        add("M1038", "host", f"block {tool} ({image or 'its binary'}) with application control "
            "(AppLocker/WDAC on Windows, fapolicyd on Linux, santa on macOS) where it is not "
            "sanctioned")
    return Mitigation(ids=ids, actions=actions)
