"""Configuration changes that turn a host into a relay (DET0445: AN1233 and the host side of
AN1229/AN1230/AN1231).

Theory of operation. Each change is read from every place it leaves a trace and normalised to
one :class:`Change` (host, kind, what, who, when, and a *target* that names the changed thing
independently of the source):

- ``config_change`` rows: nft monitor lines (``add rule ... dnat to``, deletes by handle, chain
  and table), iptables-save snapshots (action ``snapshot``: state, compared with the previous
  snapshot of the same host/table/chain), Sysmon registry rows (PortProxy ``v4tov4\\tcp\\<addr>/
  <port>``, ``IPEnableRouter``, ``ProxyServer``/``ProxyEnable``/``AutoConfigURL``), WinINet 5600
  and macOS ``networksetup`` rows (their sudo ``COMMAND=`` is parsed like a command line);
- ``process`` command lines: ``nft``/``iptables`` rule edits, ``netsh interface portproxy``,
  ``sysctl``/``echo 1 > /proc/sys/.../ip_forward``/``Set-NetIPInterface -Forwarding``,
  ``sshd -o`` and sed/tee/echo edits of ``sshd_config``, ``netsh winhttp set proxy``,
  ``reg add ... ProxyServer``, ``networksetup -set*proxy``.

Changes with the same host, kind and target within ``changes.merge_window`` seconds are one
change seen by several sources (the nft command, its monitor line; netsh and the registry value
it writes) and make one finding whose evidence lists them all. auditd NETFILTER_CFG rows carry
no rule text; they only supply the user of an nft/iptables pid. Each finding says what the host
had before (earlier adds and deletes of the same kind on that host in the monitored period,
the previous snapshot, the earlier registry value) and, when a later delete removed it, when
and after how long. Deletes and resets with no add before them are reported at info.

Detectors (kinds): ``config.port_forward`` (DNAT, REDIRECT, portproxy), ``config.nat``
(MASQUERADE/SNAT, accept rules in a forward chain), ``config.ip_forward``, ``config.sshd``
(GatewayPorts/AllowTcpForwarding/PermitTunnel on), ``config.proxy_setting``. Severity: a forward
to another host high, to a local port medium; NAT medium, low for container engines' own rules
(dockerd, containerd, podman, libvirt, firewalld) and for forward-chain accepts that name no
destination; ip_forward medium (a DNAT on the same host is left to incident correlation);
sshd medium; a proxy pointing outside the inventory's proxies medium (a declared one low); a
PAC URL medium; deletes/resets info. Hosts declared in ``[inventory] relays`` are sanctioned.

Options: ``[changes] merge_window`` (60 s) and ``admin_images`` (container and VM networking,
firewall managers: their NAT rules are their own plumbing).
"""

from __future__ import annotations

import logging
import re
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
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

logger = logging.getLogger(__name__)

KINDS = ("port_forward", "nat", "ip_forward", "sshd", "proxy_setting")

_IP = r"\[?[0-9A-Fa-f.:]*[0-9A-Fa-f]\]?"
_DNAT = re.compile(rf"dnat (?:ip6? )?to ({_IP})(?::(\d+))?|-j DNAT --to-destination ({_IP})"
                   r"(?::(\d+))?", re.I)
_REDIRECT = re.compile(r"redirect to :?(\d+)|-j REDIRECT --to-ports? (\d+)", re.I)
_NAT = re.compile(r"\bmasquerade\b|\bsnat to\b|-j (?:MASQUERADE|SNAT)", re.I)
_DPORT = re.compile(r"(?:dport|--dport) (\d+)")
_DADDR = re.compile(rf"(?:ip6? daddr|-d) ({_IP})(?:/\d+)?")
_SADDR = re.compile(rf"(?:ip6? saddr|-s) ({_IP}(?:/\d+)?)")
_HANDLE = re.compile(r"handle (\d+)")
_PORTPROXY = re.compile(
    r"portproxy\s+(add|set|delete)\s+(v4tov4|v4tov6|v6tov4|v6tov6)(.*)", re.I)
_KV = re.compile(r"(\w+)=(\S+)")
_SYSCTL = re.compile(r"(net\.ipv[46]\.(?:ip_forward|conf\.[\w.]+\.forwarding))\s*=\s*(\d)")
_PROC_FWD = re.compile(r"echo\s+[\"']?(\d)[\"']?\s*>+\s*/proc/sys/net/(ipv[46])/"
                       r"(ip_forward|conf/[\w.]+/forwarding)")
_PS_FWD = re.compile(r"Set-NetIPInterface\b.*-Forwarding\s+(Enabled|Disabled)", re.I)
_SSHD_OPT = re.compile(r"\b(GatewayPorts|AllowTcpForwarding|PermitTunnel|PermitOpen|"
                       r"AllowStreamLocalForwarding)\b[\s=]+([\w:*.,-]+)", re.I)
_WINHTTP = re.compile(r"winhttp\s+(set|reset|import)\s+proxy\s*(\S*)", re.I)
_REG_PROXY = re.compile(r"Internet Settings\S*\s+.*?/v\s+(ProxyServer|ProxyEnable|"
                        r"AutoConfigURL)\b.*?/d\s+\"?([^\s\"]+)", re.I)
_NETWORKSETUP = re.compile(
    r"networksetup\s+-(set(?:web|secureweb|socksfirewall|ftp|streaming|gopher)proxy|"
    r"setautoproxyurl|set\w*proxystate)\s+(?:\"([^\"]+)\"|(\S+))\s*(\S+)?\s*(\d+)?", re.I)
_REG_PORTPROXY = re.compile(r"\\PortProxy\\(v4tov4|v4tov6|v6tov4|v6tov6)\\tcp\\(.+)/(\d+)$",
                            re.I)

# the coarse SQL filter over process command lines (the Python classifiers decide)
_PROCESS_FILTER = (
    r"(?i)(nft|iptables|ip6tables|portproxy|ip_forward|forwarding|sysctl|sshd|"
    r"winhttp|ProxyServer|ProxyEnable|AutoConfigURL|networksetup)")

_TECH = {"port_forward": "T1090.001", "nat": "T1090", "ip_forward": "T1090",
         "sshd": "T1090", "proxy_setting": "T1090"}


@dataclass(slots=True, kw_only=True)
class Change:
    kind: str
    op: str  # add | delete | snapshot
    host: str
    t: float
    ts: datetime
    target: str  # what changed, source-independent (merge key)
    object: str
    change: str
    user: str | None = None
    process: str | None = None
    pid: int | None = None
    listen_port: int | None = None
    forward_to: str | None = None
    severity: str = "medium"
    revert: str = ""
    table: str = "config_change"
    event: str | None = None
    source: str = ""
    chain: str | None = None  # nft: "family table chain"; iptables: "table chain"
    handle: int | None = None
    note: str = ""  # snapshots: how this rule compares with the previous snapshot
    evidence: list[Evidence] = field(default_factory=list)
    merged: list[Change] = field(default_factory=list)


def _ev(table: str, row: dict[str, Any], summary: str) -> Evidence:
    event = f"{row['file_id']}:{row['record']}" if row.get("file_id") is not None else None
    return Evidence(table=table, event=event, summary=summary[:300])


def _hp(ip: str | None, port: int | str | None) -> str | None:
    if not ip:
        return None
    ip = ip.strip("[]")
    if port in (None, ""):
        return ip
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def _rule(text: str, chain: str, fam: str) -> tuple[str, str, dict[str, Any]] | None:
    """(kind, target, extra) for a netfilter rule text, or None when it is not relevant."""
    m = _DNAT.search(text)
    dport = _DPORT.search(text)
    lport = int(dport.group(1)) if dport else None
    if m:
        ip = m.group(1) or m.group(3)
        port = m.group(2) or m.group(4)
        fwd = _hp(ip, port)
        return "port_forward", f"{lport}->{fwd}", {"listen_port": lport, "forward_to": fwd}
    r = _REDIRECT.search(text)
    if r:
        port = r.group(1) or r.group(2)
        fwd = f"local:{port}"
        return "port_forward", f"{lport}->{fwd}", {"listen_port": lport, "forward_to": fwd,
                                                   "local": True}
    if _NAT.search(text):
        s = _SADDR.search(text)
        d = _DADDR.search(text)
        key = f"nat {s.group(1) if s else '*'}->{d.group(1) if d else '*'}"
        return "nat", key, {"saddr": s.group(1) if s else None}
    if "forward" in chain.lower() and re.search(r"\baccept\b|-j ACCEPT", text, re.I):
        d = _DADDR.search(text)
        return "nat", f"forward-accept {d.group(1) if d else '*'} {lport or '*'}", {
            "permit": True, "named": bool(d or lport)}
    return None


def _nft_revert(chain: str | None, handle: int | None, fam_table_chain_text: str) -> str:
    if chain and handle is not None:
        return f"nft delete rule {chain} handle {handle}"
    if chain:
        return (f"nft -a list chain {chain}  # then: nft delete rule {chain} handle <N> "
                f"for '{fam_table_chain_text}'")
    return f"nft -a list ruleset  # find and delete '{fam_table_chain_text}'"


def _severity(kind: str, extra: dict[str, Any], image: str | None, ctx: Context,
              host_ip: str | None) -> str:
    name = (image or "").rsplit("/", 1)[-1].lower()
    if kind == "port_forward":
        fwd = str(extra.get("forward_to") or "")
        fwd_ip = fwd.rsplit(":", 1)[0].strip("[]") if not fwd.startswith("local:") else ""
        local = extra.get("local") or fwd_ip in ("127.0.0.1", "::1", "localhost") \
            or (host_ip is not None and fwd_ip == host_ip)
        return "medium" if local else "high"
    if kind == "nat":
        if any(a in name for a in ctx.settings.changes.admin_images) or \
                str(extra.get("saddr") or "").startswith("172.17."):
            return "low"
        if extra.get("permit"):
            return "medium" if extra.get("named") else "low"
        return "medium"
    return "medium"


# -- reading the sources ----------------------------------------------------------------------

def _from_config(ctx: Context, row: dict[str, Any]) -> Iterator[Change]:
    src = (row["source"] or "").lower()
    host = row["host"]
    base = {"host": host, "t": row["t"], "ts": row["ts"], "user": row["user"],
            "process": row["image"], "pid": row["pid"], "source": src}
    detail = row["detail"] or ""
    obj = row["object"] or ""
    action = (row["action"] or "").lower()
    if src == "nft":
        kind_code = (row["event_code"] or "").lower()
        fam_table = obj.split()
        if action in ("delete", "destroy", "flush") or kind_code == "ruleset":
            h = _HANDLE.search(detail)
            yield Change(kind="*", op="delete", target=f"{kind_code} {obj}", object=obj,
                         change=f"{action} {kind_code} {obj} {detail}".strip(),
                         chain=obj if kind_code in ("rule", "chain") else None,
                         handle=int(h.group(1)) if h and kind_code == "rule" else None,
                         evidence=[_ev("config_change", row, f"nft monitor: {action} "
                                       f"{kind_code} {obj} {detail}")], **base)
            return
        if kind_code != "rule" or action not in ("add", "insert", "replace"):
            return
        got = _rule(detail, obj, fam_table[0] if fam_table else "ip")
        if got is None:
            return
        kind, target, extra = got
        h = _HANDLE.search(detail)
        handle = int(h.group(1)) if h else None
        text = _HANDLE.sub("", detail).replace("#", "").strip()
        yield Change(kind=kind, op="add", target=target, object=obj, change=text, chain=obj,
                     handle=handle, listen_port=extra.get("listen_port"),
                     forward_to=extra.get("forward_to"),
                     severity=_severity(kind, extra, row["image"], ctx, None),
                     revert=_nft_revert(obj, handle, text),
                     evidence=[_ev("config_change", row, f"nft monitor: {action} rule {obj} "
                                   f"{detail}")], **base)
    elif src == "iptables" and action == "snapshot":
        table, _, chain = obj.partition(" ")
        got = _rule(detail, chain, "ip")
        if got is None:
            return
        kind, target, extra = got
        spec = re.sub(r"^-A\s+\S+\s*", "", detail)
        yield Change(kind=kind, op="snapshot", target=target, object=obj, change=detail,
                     chain=obj, listen_port=extra.get("listen_port"),
                     forward_to=extra.get("forward_to"),
                     severity=_severity(kind, extra, row["image"], ctx, None),
                     revert=f"iptables -t {table} -D {chain} {spec}",
                     evidence=[_ev("config_change", row, f"iptables-save {obj}: {detail}")],
                     **base)
    elif src == "registry":
        yield from _from_registry(ctx, row, base, obj, detail, action)
    elif src == "wininet":
        value = detail
        op = "delete" if action == "reset" or not value else "add"
        pac = re.search(r"pac=(\S+)", value)
        proxy = re.search(r"proxy=(\S+)", value)
        yield Change(kind="proxy_setting", op=op, target="wininet", object=obj or "WinINet",
                     change=value or "reset (no proxy)", severity=_proxy_severity(
                         ctx, proxy.group(1) if proxy else None, bool(pac)) if op == "add"
                     else "info",
                     revert="reset the user's proxy (Internet Options, or netsh winhttp "
                            "reset proxy for WinHTTP)",
                     evidence=[_ev("config_change", row, f"WinINet 5600 {action}: {value}")],
                     **base)
    elif src == "networksetup":
        cmd = detail.split("COMMAND=", 1)[-1]
        for c in _from_command(ctx, cmd, row, base | {"source": "networksetup"}):
            c.evidence = [_ev("config_change", row, f"networksetup: {cmd}")]
            yield c


def _proxy_severity(ctx: Context, proxy: str | None, pac: bool) -> str:
    if pac:
        return "medium"
    if not proxy:
        return "low"
    hostpart = re.sub(r"^\w+://", "", proxy).split("/")[0]
    host, _, port = hostpart.rpartition(":") if ":" in hostpart else (hostpart, "", "")
    if ctx.inventory.is_proxy(host, int(port) if port.isdigit() else None):
        return "low"
    return "medium"


def _from_registry(ctx: Context, row: dict[str, Any], base: dict[str, Any], obj: str,
                   detail: str, action: str) -> Iterator[Change]:
    m = _REG_PORTPROXY.search(obj)
    if m:
        laddr, lport = m.group(2), int(m.group(3))
        if action == "deletevalue" or action == "deletekey":
            yield Change(kind="port_forward", op="delete", target=f"portproxy {laddr}:{lport}",
                         object=obj, change=f"PortProxy {laddr}:{lport} deleted",
                         severity="info", evidence=[_ev("config_change", row,
                                                        f"registry {action} {obj}")], **base)
            return
        if action != "setvalue":
            return
        fip, _, fport = detail.partition("/")
        fwd = _hp(fip, fport)
        extra = {"forward_to": fwd}
        yield Change(kind="port_forward", op="add", target=f"portproxy {laddr}:{lport}",
                     object=obj, change=f"{laddr}:{lport} -> {fwd}", listen_port=lport,
                     forward_to=fwd, severity=_severity("port_forward", extra, None, ctx, None),
                     revert=(f"netsh interface portproxy delete {m.group(1).lower()} "
                             f"listenport={lport} listenaddress={laddr}"),
                     evidence=[_ev("config_change", row, f"registry {action} {obj} = {detail}")],
                     **base)
        return
    low = obj.lower()
    if low.endswith("\\ipenablerouter") and action == "setvalue":
        on = "0x00000001" in detail or detail.strip() == "1"
        yield Change(kind="ip_forward", op="add" if on else "delete", target="IPEnableRouter",
                     object=obj, change=f"IPEnableRouter = {detail}",
                     severity="medium" if on else "info",
                     revert=(r"reg add HKLM\SYSTEM\CurrentControlSet\Services\Tcpip\Parameters "
                             "/v IPEnableRouter /t REG_DWORD /d 0 /f"),
                     evidence=[_ev("config_change", row, f"registry {action} {obj} = {detail}")],
                     **base)
        return
    for key in ("proxyserver", "proxyenable", "autoconfigurl"):
        if low.endswith("\\" + key) and "internet settings" in low:
            deleting = action.startswith("delete") or (key == "proxyenable" and
                                                       "0x00000000" in detail)
            sev = "info" if deleting else ("low" if key == "proxyenable" else
                                           _proxy_severity(ctx, detail if key == "proxyserver"
                                                           else None, key == "autoconfigurl"))
            yield Change(kind="proxy_setting", op="delete" if deleting else "add",
                         target=f"registry {key}", object=obj, change=f"{key} = {detail}",
                         severity=sev,
                         revert=(f'reg add "{obj.rsplit(chr(92), 1)[0]}" /v ProxyEnable '
                                 "/t REG_DWORD /d 0 /f"),
                         evidence=[_ev("config_change", row,
                                       f"registry {action} {obj} = {detail}")], **base)
            return


def _from_command(ctx: Context, cmd: str, row: dict[str, Any], base: dict[str, Any]
                  ) -> Iterator[Change]:
    """Changes named by one command line (nothing for listings such as ``iptables -L``)."""
    pid = row.get("pid")
    ev = [_ev("process", row, (f"pid {pid} " if pid is not None else "") + cmd)]
    low = cmd.lower()
    name = re.split(r"[\\/]", cmd.split()[0].strip('"'))[-1].lower() if cmd.split() else ""
    # nft / iptables rule edits
    if re.match(r"nft(\.exe)?$", name) or re.search(r"\bnft\s+(add|insert|delete|flush)", cmd):
        text = cmd.replace('"', " ").replace("'", " ")
        m = re.search(r"\b(add|insert|replace)\s+rule\s+(?:(ip6?|inet|arp|bridge|netdev)\s+)?"
                      r"(\S+)\s+(\S+)\s+(.*)", text)
        if m:
            chain = f"{m.group(2) or 'ip'} {m.group(3)} {m.group(4)}"
            got = _rule(m.group(5), m.group(4), m.group(2) or "ip")
            if got:
                kind, target, extra = got
                yield Change(kind=kind, op="add", target=target, object=chain,
                             change=m.group(5).strip(), chain=chain,
                             listen_port=extra.get("listen_port"),
                             forward_to=extra.get("forward_to"),
                             severity=_severity(kind, extra, row.get("image"), ctx, None),
                             revert=_nft_revert(chain, None, m.group(5).strip()), table="process",
                             evidence=ev, **base)
            return
    if re.match(r"ip6?tables(-nft|-legacy)?$", name) or re.search(r"\bip6?tables\s", cmd):
        m = re.search(r"\s-(A|I|D)\s+(\S+)(.*)", cmd)
        if m and m.group(1) != "D":
            t = re.search(r"-t\s+(\w+)", cmd)
            table = t.group(1) if t else "filter"
            got = _rule(cmd, m.group(2), "ip")
            if got:
                kind, target, extra = got
                spec = re.sub(r"\s+\d+\s*$", "", m.group(3)).strip()
                yield Change(kind=kind, op="add", target=target, object=f"{table} {m.group(2)}",
                             change=cmd, chain=f"{table} {m.group(2)}",
                             listen_port=extra.get("listen_port"),
                             forward_to=extra.get("forward_to"),
                             severity=_severity(kind, extra, row.get("image"), ctx, None),
                             revert=f"iptables -t {table} -D {m.group(2)} {spec}",
                             table="process", evidence=ev, **base)
        return
    m = _PORTPROXY.search(cmd)
    if m:
        kv = {k.lower(): v for k, v in _KV.findall(m.group(3))}
        laddr = kv.get("listenaddress", "0.0.0.0")
        lport = int(kv["listenport"]) if kv.get("listenport", "").isdigit() else None
        target = f"portproxy {laddr}:{lport}"
        revert = (f"netsh interface portproxy delete {m.group(2).lower()} listenport={lport} "
                  f"listenaddress={laddr}")
        if m.group(1).lower() == "delete":
            yield Change(kind="port_forward", op="delete", target=target, object=target,
                         change=cmd, severity="info", table="process", evidence=ev, **base)
            return
        fwd = _hp(kv.get("connectaddress", laddr), kv.get("connectport", lport))
        extra = {"forward_to": fwd}
        yield Change(kind="port_forward", op="add", target=target, object=target,
                     change=f"{laddr}:{lport} -> {fwd}", listen_port=lport, forward_to=fwd,
                     severity=_severity("port_forward", extra, None, ctx, None), revert=revert,
                     table="process", evidence=ev, **base)
        return
    for rx in (_SYSCTL, _PROC_FWD):
        m = rx.search(cmd)
        if m and ((rx is _SYSCTL and re.search(r"\bsysctl\b", cmd)) or rx is _PROC_FWD):
            if rx is _SYSCTL:
                key, val = m.group(1), m.group(2)
            else:
                val, fam, leaf = m.group(1), m.group(2), m.group(3)
                key = f"net.{fam}.{leaf.replace('/', '.')}"
            on = val == "1"
            yield Change(kind="ip_forward", op="add" if on else "delete", target=key,
                         object=key, change=f"{key}={val}", severity="medium" if on else "info",
                         revert=f"sysctl -w {key}=0", table="process", evidence=ev, **base)
            return
    m = _PS_FWD.search(cmd)
    if m:
        on = m.group(1).lower() == "enabled"
        yield Change(kind="ip_forward", op="add" if on else "delete", target="NetIPInterface",
                     object="Set-NetIPInterface -Forwarding", change=cmd,
                     severity="medium" if on else "info",
                     revert="Set-NetIPInterface -Forwarding Disabled", table="process",
                     evidence=ev, **base)
        return
    if "sshd" in low and (" -o" in low or "sshd_config" in low):
        if not (name.startswith("sshd") or re.search(r"\b(sed|tee|echo|printf|cat)\b", low)):
            return
        for opt, val in _SSHD_OPT.findall(cmd):
            on = val.lower() not in ("no", "none", "false")
            yield Change(kind="sshd", op="add" if on else "delete", target=opt.lower(),
                         object="sshd " + opt, change=f"{opt} {val}",
                         severity="medium" if on else "info",
                         revert=(f"set '{opt} no' in /etc/ssh/sshd_config and reload sshd "
                                 "(or stop the sshd started with -o)"),
                         table="process", evidence=ev, **base)
        return
    m = _WINHTTP.search(cmd)
    if m:
        reset = m.group(1).lower() == "reset"
        yield Change(kind="proxy_setting", op="delete" if reset else "add", target="winhttp",
                     object="WinHTTP proxy", change=cmd,
                     severity="info" if reset else _proxy_severity(ctx, m.group(2), False),
                     revert="netsh winhttp reset proxy", table="process", evidence=ev, **base)
        return
    m = _REG_PROXY.search(cmd)
    if m and re.search(r"\breg(\.exe)?\s+add\b", low):
        key, val = m.group(1).lower(), m.group(2)
        off = key == "proxyenable" and val in ("0", "0x0")
        yield Change(kind="proxy_setting", op="delete" if off else "add",
                     target=f"registry {key}", object=f"Internet Settings\\{m.group(1)}",
                     change=cmd, severity="info" if off else _proxy_severity(
                         ctx, val if key == "proxyserver" else None, key == "autoconfigurl"),
                     revert=(r'reg add "HKCU\Software\Microsoft\Windows\CurrentVersion\Internet '
                             r'Settings" /v ProxyEnable /t REG_DWORD /d 0 /f'),
                     table="process", evidence=ev, **base)
        return
    m = _NETWORKSETUP.search(cmd)
    if m:
        verb = m.group(1).lower()
        service = m.group(2) or m.group(3)
        if verb.endswith("state"):
            off = (m.group(4) or "").lower() == "off"
            if not off:
                return
            yield Change(kind="proxy_setting", op="delete", target=f"{service} proxy",
                         object=f"{service}/Proxies", change=cmd, severity="info",
                         table="process", evidence=ev, **base)
            return
        value = m.group(4)
        pac = verb == "setautoproxyurl"
        proxy = value if pac else _hp(value, m.group(5))
        state = re.sub(r"^set", "set", verb).replace("proxy", "proxystate")
        yield Change(kind="proxy_setting", op="add", target=f"{service} {verb}",
                     object=f"{service}/Proxies/{verb}", change=f"{verb} {service} {proxy}",
                     severity=_proxy_severity(ctx, proxy, pac),
                     revert=f"networksetup -{state} '{service}' off", table="process",
                     evidence=ev, **base)


# -- timeline, merging and findings ------------------------------------------------------------

_CONFIG_SQL = """
SELECT epoch(ts) AS t, ts, coalesce(host, sensor) AS host, source, action, object, detail,
       user, pid, image, event_code, file_id, record
FROM config_change WHERE ts IS NOT NULL ORDER BY t, file_id, record
"""
_PROCESS_SQL = f"""
SELECT epoch(ts) AS t, ts, coalesce(host, sensor) AS host, pid, ppid, user, image,
       command_line, file_id, record
FROM process
WHERE ts IS NOT NULL AND command_line IS NOT NULL
  AND regexp_matches(command_line, '{_PROCESS_FILTER}')
ORDER BY t, file_id, record
"""


def _collect(ctx: Context) -> list[Change]:
    changes: list[Change] = []
    users: dict[tuple[str, int], str] = {}  # (host, pid) -> user from NETFILTER_CFG
    for row in ctx.rows(_CONFIG_SQL):
        if row["host"] is None:
            continue
        if (row["source"] or "") == "netfilter":
            if row["pid"] is not None and row["user"]:
                users[(row["host"], row["pid"])] = row["user"]
            continue
        try:
            changes.extend(_from_config(ctx, row))
        except (ValueError, IndexError) as exc:  # odd values never stop the detector
            logger.debug("config_change %s:%s: %s", row["file_id"], row["record"], exc)
    for row in ctx.rows(_PROCESS_SQL):
        if row["host"] is None:
            continue
        base = {"host": row["host"], "t": row["t"], "ts": row["ts"], "user": row["user"],
                "process": row["image"], "pid": row["pid"], "source": "process"}
        try:
            changes.extend(_from_command(ctx, row["command_line"], row, base))
        except (ValueError, IndexError) as exc:
            logger.debug("process %s:%s: %s", row["file_id"], row["record"], exc)
    for c in changes:
        if c.user is None and c.pid is not None:
            c.user = users.get((c.host, c.pid))
        if c.user in ("0",):
            c.user = "root"
    return changes


def _merge(changes: list[Change], window: float) -> list[Change]:
    """One change per (host, kind, op, target) within ``window`` s; its evidence from all."""
    out: list[Change] = []
    last: dict[tuple[str, str, str, str], Change] = {}
    for c in sorted(changes, key=lambda c: c.t):
        op = "add" if c.op in ("add",) else c.op
        key = (c.host, c.kind, op, c.target)
        have = last.get(key)
        if have is not None and c.t - have.t <= window and c.op != "snapshot":
            have.evidence.extend(c.evidence)
            have.merged.append(c)
            # the registry writer (netsh) is the actor, not the cmd /c that started it
            prefer = c.source == "registry" and have.source == "process"
            for attr in ("user", "process", "pid", "handle"):
                if getattr(c, attr) is not None and (prefer or getattr(have, attr) is None):
                    setattr(have, attr, getattr(c, attr))
            if c.handle is not None and have.chain:
                have.revert = _nft_revert(have.chain, c.handle, have.change)
            continue
        last[key] = c
        out.append(c)
    return out


def _removed_by(add: Change, d: Change) -> bool:
    """Whether delete ``d`` (a later change on the same host) removes ``add``."""
    if d.t < add.t or d.host != add.host:
        return False
    if d.kind == "*":  # nft monitor deletes
        if not add.chain:
            return False
        fam_table = " ".join(add.chain.split()[:2])
        what = d.target.split(" ", 1)[0]
        if what == "ruleset":
            return True
        if what == "table":
            return d.object == fam_table
        if what == "chain":
            return d.object == add.chain
        if what == "rule":
            return d.object == add.chain and (add.handle is None or d.handle == add.handle)
        return False
    return d.kind == add.kind and d.target == add.target and d.op == "delete"


def _latest(add: Change, d: Change, changes: list[Change]) -> bool:
    """A rule delete by handle whose add had no known handle removes the latest add in that
    chain before it (nft numbers rules in order), not an older one."""
    if d.handle is None or add.handle is not None or d.kind != "*":
        return True
    return not any(c is not add and c.chain == add.chain and c.op == "add"
                   and add.t < c.t <= d.t and c.handle is None for c in changes)


def _prior(add: Change, changes: list[Change], first_t: float) -> str:
    kind_word = {"port_forward": "port-forward/DNAT rule", "nat": "NAT or forward rule",
                 "ip_forward": "forwarding setting", "sshd": "sshd forwarding option",
                 "proxy_setting": "proxy setting"}[add.kind]
    before = [c for c in changes if c.host == add.host and c.kind == add.kind
              and c.t < add.t and c.op != "snapshot" and c is not add]
    live = [c for c in before if c.op == "add"
            and not any(_removed_by(c, d) for d in changes if d.op == "delete" and d.t < add.t)]
    since = f"{ts_of(first_t):%Y-%m-%d %H:%M:%S}"
    if add.op == "snapshot":
        return ""
    if not before:
        return (f"no {kind_word} change was logged on {add.host} before "
                f"{add.ts:%H:%M:%S} (telemetry from {since})")
    if not live:
        return f"no {kind_word} was active on {add.host} before {add.ts:%H:%M:%S}"
    return (f"{len(live)} earlier {kind_word}(s) were active: "
            + "; ".join(f"{c.change} ({c.ts:%H:%M:%S})" for c in live[:3]))


@dataclass(slots=True)
class _Snapshots:
    """Every iptables-save snapshot: its times per host and its rules per (host, table chain)."""

    times: dict[str, set[float]] = field(default_factory=lambda: defaultdict(set))
    rules: dict[tuple[str, str, float], set[str]] = field(
        default_factory=lambda: defaultdict(set))

    def diff(self, changes: list[Change]) -> list[Change]:
        """Snapshot rows new since the previous snapshot of the same host (and table/chain)."""
        kept = []
        for c in changes:
            if c.op != "snapshot":
                kept.append(c)
                continue
            earlier = [t for t in self.times[c.host] if t < c.t]
            if not earlier:
                c.note = (f"present in the first snapshot of {c.host} ({c.ts:%Y-%m-%d %H:%M:%S});"
                          " there is no earlier snapshot to compare with")
                kept.append(c)
                continue
            prev = max(earlier)
            then = self.rules[(c.host, c.object, prev)]
            if c.change not in then:
                c.note = (f"new since the snapshot of {ts_of(prev):%Y-%m-%d %H:%M:%S}, which had "
                          f"{len(then)} rule(s) in {c.object}")
                kept.append(c)
        return kept


_CACHE = "changes.findings"

_TITLES = {"port_forward": "port forward", "nat": "NAT / forwarding rule",
           "ip_forward": "IP forwarding", "sshd": "sshd forwarding option",
           "proxy_setting": "proxy setting"}


def _all_findings(ctx: Context) -> dict[str, list[Finding]]:
    cached = ctx.cache.get(_CACHE)
    if cached is not None:
        return dict(cached)
    snaps = _Snapshots()
    for row in ctx.rows("SELECT epoch(ts) AS t, coalesce(host, sensor) AS host, object, detail "
                        "FROM config_change WHERE source = 'iptables' AND action = 'snapshot' "
                        "AND ts IS NOT NULL"):
        if row["host"] is None:
            continue
        snaps.times[row["host"]].add(row["t"])
        snaps.rules[(row["host"], row["object"] or "", row["t"])].add(row["detail"] or "")
    changes = _merge(snaps.diff(_collect(ctx)), ctx.settings.changes.merge_window)
    out: dict[str, list[Finding]] = {k: [] for k in KINDS}
    if not changes:
        ctx.cache[_CACHE] = out
        return out
    first_t = min(c.t for c in changes)
    deletes = [c for c in changes if c.op == "delete"]
    explained: set[int] = set()
    addrs: dict[str, str | None] = {}
    for c in changes:
        if c.op == "delete" or c.kind == "*":
            continue
        if c.host not in addrs:
            addrs[c.host] = address_of(ctx, c.host)
        gone = next((d for d in deletes if _removed_by(c, d) and _latest(c, d, changes)), None)
        if gone is not None:
            explained.add(id(gone))
        out[c.kind].append(_finding(ctx, c, addrs[c.host], _prior(c, changes, first_t), gone))
    for d in deletes:
        if id(d) in explained or d.kind == "*":
            continue
        if d.host not in addrs:
            addrs[d.host] = address_of(ctx, d.host)
        out[d.kind].append(_finding(ctx, d, addrs[d.host], "", None))
    ctx.cache[_CACHE] = out
    return out


def _finding(ctx: Context, c: Change, ip: str | None, prior: str, gone: Change | None
             ) -> Finding:
    who = ", ".join(x for x in (f"user {c.user}" if c.user else "",
                                f"process {c.process}" if c.process else "",
                                f"pid {c.pid}" if c.pid is not None else "") if x) or "unknown"
    where = f"{c.host} ({ip})" if ip else c.host
    verb = {"add": "set", "delete": "removed/reset", "snapshot": "present"}[c.op]
    severity = "info" if c.op == "delete" else c.severity
    sanctioned = bool(ip and ctx.inventory.is_relay(ip, c.listen_port))
    parts = [f"{_TITLES[c.kind]} {verb} on {where} at {c.ts:%Y-%m-%d %H:%M:%S}: {c.change}",
             f"by {who}"]
    if c.note:
        parts.append(c.note)
    if prior:
        parts.append(prior)
    last = c.t
    if gone is not None:
        parts.append(f"removed at {gone.ts:%H:%M:%S} after {gone.t - c.t:.0f} s "
                     f"({gone.change})")
        last = gone.t
    sources = sorted({e.table for e in c.evidence})
    parts.append(f"seen in {len(c.evidence)} record(s) ({', '.join(sources)})")
    if c.kind == "ip_forward" and c.op != "delete":
        parts.append("together with a DNAT on the same host within minutes it makes the host "
                     "a router for the forward (incident correlation joins them)")
    entities: dict[str, Any] = {"host": c.host, "ip": ip, "object": c.object,
                                "change": c.change, "user": c.user, "process": c.process,
                                "pid": c.pid}
    if c.kind == "port_forward":
        entities["listen_port"] = c.listen_port
        entities["forward_to"] = c.forward_to
    actions = []
    if c.revert and c.op != "delete":
        actions.append(Action(kind="host", text=f"on {c.host}: {c.revert}"))
    if c.kind == "port_forward" and c.listen_port and c.op != "delete":
        actions.append(Action(kind="nft", text=(
            f"nft add rule inet filter input tcp dport {c.listen_port} drop  # on {c.host}")))
    evidence = list(c.evidence) + (list(gone.evidence) if gone else [])
    plat = "AN1233" if c.source in ("nft", "iptables") or c.kind in ("port_forward", "nat") \
        else _analytic(c)
    return Finding(
        detector=f"config.{c.kind}",
        title=f"{_TITLES[c.kind]} {verb} on {c.host}: {c.change}"[:200],
        technique=_TECH[c.kind], strategy=f"DET0445/{plat}", severity=severity,
        confidence=0.9 if len(c.evidence) > 1 else 0.8, first_seen=ts_of(c.t),
        last_seen=ts_of(last), entities=entities, evidence=evidence,
        explanation="; ".join(parts) + ".",
        mitigation=Mitigation(ids=["M1037", "M1042"], actions=actions),
        sanctioned=sanctioned, hosts=[ip] if ip else [], evidence_total=len(evidence))


def _analytic(c: Change) -> str:
    text = " ".join(e.summary for e in c.evidence).lower()
    if "registry" in text or "wininet" in text or "netsh" in text or "\\" in c.object:
        return "AN1229"
    if c.source == "networksetup" or "networksetup" in text:
        return "AN1231"
    return "AN1230"


def _make(kind: str) -> Any:
    def run(ctx: Context) -> list[Finding]:
        return list(_all_findings(ctx)[kind])
    run.__name__ = f"config_{kind}"
    return run


for _kind, _summary, _tech in (
        ("port_forward", "a port forward added: nft/iptables DNAT or REDIRECT, netsh portproxy, "
         "PortProxy registry keys", "T1090.001"),
        ("nat", "NAT (MASQUERADE/SNAT) or forward-chain accept rules added", "T1090"),
        ("ip_forward", "IP forwarding turned on (sysctl, /proc, Set-NetIPInterface, "
         "IPEnableRouter)", "T1090"),
        ("sshd", "sshd forwarding turned on (GatewayPorts, AllowTcpForwarding, PermitTunnel)",
         "T1090"),
        ("proxy_setting", "system proxy changed (WinINet, registry, netsh winhttp, macOS "
         "networksetup)", "T1090")):
    detector(f"config.{_kind}", summary=_summary, technique=_tech,
             tables=("config_change", "process"))(_make(_kind))
