"""One typed settings tree, loaded in layers.

Theory of operation: every option is a dataclass field whose metadata carries its help text and,
for numbers, inclusive bounds. ``load_settings`` starts from the defaults and overlays, in order,
``/etc/hopguard/hopguard.toml``, the user's ``~/.config/hopguard/hopguard.toml``, the file named by
``--config`` (or ``./hopguard.toml`` when it exists), ``HOPGUARD_<SECTION>_<KEY>`` environment
variables and ``--set section.key=value`` arguments. Later layers win. Each value is checked
against its type and bounds as it is applied, and the error names the layer it came from.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import tomllib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hopguard.errors import ConfigError, SourceLocation


def option(default: Any, help: str, *, min: float | None = None, max: float | None = None,
           choices: Sequence[str] | None = None) -> Any:
    """A settings field: default, help text and bounds (for validation and ``config dump``)."""
    meta = {"help": help, "min": min, "max": max, "choices": tuple(choices) if choices else None}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(slots=True)
class StoreSettings:
    path: str = option("hopguard.duckdb", "DuckDB database file that holds every table.")
    batch_rows: int = option(
        50_000, "Rows buffered per table before they are written to the store.",
        min=1_000, max=5_000_000)
    threads: int = option(0, "DuckDB worker threads (0: one per core).", min=0, max=256)
    memory_limit: str = option("", "DuckDB memory limit such as '4GB' (empty: DuckDB's default).")


@dataclass(slots=True)
class IngestSettings:
    sensor: str = option(
        "default", "Sensor name stored with network rows when the input does not name one.")
    max_errors_shown: int = option(
        5, "Malformed records printed per file (all are counted).", min=0, max=10_000)
    fast_zeek_tsv: bool = option(
        True, "Read clean Zeek TSV logs with DuckDB's CSV reader; files with damage fall back to "
        "the line-by-line reader, which locates every bad line.")
    max_record_bytes: int = option(
        4 << 20, "Longest record (line or JSON object) accepted before it is reported as damage.",
        min=1024, max=1 << 30)
    progress: bool = option(True, "Show a progress bar on a terminal.")


@dataclass(slots=True)
class PacketSettings:
    reassembly_bytes: int = option(
        32 * 1024, "Bytes of each TCP direction reassembled and parsed (TLS, HTTP, SOCKS ...).",
        min=512, max=16 << 20)
    tcp_timeout: float = option(300.0, "Seconds of silence that end a TCP flow.", min=1, max=86400)
    udp_timeout: float = option(60.0, "Seconds of silence that end a UDP flow.", min=1, max=86400)
    icmp_timeout: float = option(60.0, "Seconds of silence that end an ICMP flow.", min=1,
                                 max=86400)
    active_timeout: float = option(
        0.0, "Split flows longer than this many seconds (0: never, like Zeek).", min=0,
        max=86400 * 7)
    burst_gap: float = option(
        0.5, "Silence in seconds after which a packet starts a new burst in the activity sketch.",
        min=0.01, max=3600)
    max_bursts: int = option(256, "Bursts kept per direction in the activity sketch.", min=1,
                             max=100_000)
    workers: int = option(
        0, "Processes that read one capture in parallel, each keeping a share of the "
        "connections (0: one per CPU for captures of 64 MiB or more, else 1).", min=0, max=8)
    rotate: float = option(
        60.0, "Seconds per stored segment of a live capture (each segment is one transaction).",
        min=1, max=86400)


@dataclass(slots=True)
class InventorySettings:
    proxies: list[str] = option(
        [], "Sanctioned proxies as host:port (or host for every port); findings about them are "
        "kept, marked sanctioned and reported at low severity.")
    relays: list[str] = option(
        [], "Declared relays, jump hosts, port forwarders and NAT gateways as host:port (or "
        "host); relay, chain and hub findings through them are marked sanctioned.")
    networks: list[str] = option(
        [], "Internal networks (CIDR); everything else is external. Empty: the private, "
        "loopback, link-local and unique-local ranges.")
    hosts: list[str] = option(
        [], "Endpoint names and their addresses as name=ip (one entry per address), so endpoint "
        "findings (which name a host) meet network findings (which name an address). Addresses "
        "are also learnt from the telemetry itself; these entries win.")


@dataclass(slots=True)
class AnalyzeSettings:
    detectors: list[str] = option(
        [], "Detectors to run, by name or dotted prefix (empty: all; see 'hopguard detectors').")
    id_bucket: float = option(
        86400.0, "Seconds per time bucket in a finding's id: the same entities in another bucket "
        "make another finding; re-running in the same bucket replaces it.", min=60,
        max=86400 * 366)
    max_evidence: int = option(
        25, "Evidence records kept per finding (the explanation says how many there were).",
        min=1, max=10_000)


@dataclass(slots=True)
class RelaySettings:
    window: float = option(
        2.0, "Seconds after an inbound leg starts within which the outbound leg must start (also "
        "the join's time bucket).", min=0.01, max=600)
    byte_low: float = option(
        0.8, "Lowest outbound/inbound byte ratio accepted, in each direction.", min=0.01, max=1)
    byte_high: float = option(
        1.25, "Highest outbound/inbound byte ratio accepted, in each direction.", min=1, max=100)
    slack_bytes: int = option(
        4096, "Bytes of protocol overhead (TLS or SSH handshakes on one leg only) allowed on top "
        "of the ratio.", min=0, max=1 << 30)
    fanin: int = option(
        50, "Inbound flows to a service (host, port) with more distinct sources than this are "
        "not paired (busy services; reported as excluded).", min=2, max=10_000_000)
    cap: int = option(
        256, "Outbound candidates per (host, time bucket) beyond which the bucket is not paired "
        "and is reported as saturated.", min=2, max=10_000_000)
    timing_gap: float = option(
        0.5, "Idle gap in seconds that starts an ON period (Zhang-Paxson T_idle).", min=0.01,
        max=60)
    timing_delta: float = option(
        0.08, "Seconds within which an ON period on the outbound leg must follow one on the "
        "inbound leg to count as coincident (Zhang-Paxson delta).", min=0.001, max=10)
    timing_ratio: float = option(
        0.3, "Share of ON periods that must coincide for timing to confirm a pair.", min=0.01,
        max=1)
    timing_min_periods: int = option(
        3, "ON periods the shorter leg needs before the timing test says anything.", min=1,
        max=10_000)
    dnat_skew: float = option(
        0.5, "Seconds between the two captured legs of a kernel port forward (DNAT without SNAT: "
        "the same client address and port towards two destinations).", min=0.0, max=60)
    end_tolerance: float = option(
        0.2, "Slack-matched legs must end together: within this share of the inbound leg's "
        "duration (plus 50 ms).", min=0.0, max=10)
    dnat_byte_tolerance: float = option(
        0.02, "Kernel port forward legs carry the same packets: bytes may differ by this share "
        "(plus 64 B, for capture loss).", min=0.0, max=1)
    causal_window: float = option(
        0.5, "Where both legs carry activity sketches, seconds after one of the client's ON "
        "periods within which an outbound leg whose bytes match by ratio must start (a relay "
        "that spawns a process per connection, like ncat --sh-exec, takes 100-200 ms); other "
        "matches must start within timing_delta.", min=0.001, max=60)
    multiplex_min_legs: int = option(
        2, "Outbound legs a long-lived leg must set off (each within timing_delta of one of its "
        "ON periods) before it counts as a multiplexed relay (ssh -L/-R/-D, reverse tunnels; "
        "needs activity sketches).", min=1, max=10_000)


@dataclass(slots=True)
class ChainSettings:
    max_hops: int = option(8, "Longest path rebuilt from relay pairs, in hops.", min=2, max=32)
    min_relays: int = option(
        2, "Relays a path needs to be reported as a chain (one relay is a bridge.relay finding "
        "already).", min=1, max=31)


@dataclass(slots=True)
class ProxySettings:
    web_ports: list[int] = option(
        [80, 443, 8080, 8443], "Ports a CONNECT or SOCKS request may name without "
        "raising the score (anything else: tunnelling to a non-web service).", min=0,
        max=65535)
    beacon_min_connections: int = option(
        8, "Connections from one client to one inner destination before beaconing is scored.",
        min=3, max=1_000_000)
    beacon_score: float = option(
        0.7, "Beacon score (0-1, RITA-style regularity of intervals) that makes a finding.",
        min=0, max=1)
    hub_min_clients: int = option(
        5, "Internal clients an undeclared host must serve to be a proxy hub.", min=2,
        max=1_000_000)
    hub_min_destinations: int = option(
        10, "External destinations the same host must reach to be a proxy hub.", min=2,
        max=10_000_000)
    proxy_ports: list[int] = option(
        [1080, 3128, 3129, 8080, 8000, 8118, 8888, 80, 443], "Ports where proxies usually "
        "listen; a SOCKS or CONNECT handshake to a proxy on any other port raises the score.",
        min=0, max=65535)
    failure_min: int = option(
        3, "Refused or failed-authentication handshakes from one client through one proxy to "
        "one target before they score as probing or password spraying.", min=1,
        max=1_000_000)
    beacon_bytes_weight: float = option(
        0.25, "Weight of the request-size regularity (RITA's data-size score) in the beacon "
        "score, when flow sizes are known; timing regularity and coverage share the rest.",
        min=0, max=0.5)
    hub_slack: float = option(
        1.0, "Seconds after an inbound client connection ends within which an outbound "
        "connection still counts as overlapping it (proxy hub).", min=0, max=3600)
    hub_exclude_ports: list[int] = option(
        [53, 67, 68, 88, 123, 137, 138, 161, 162, 389, 514, 636, 25, 465, 587, 5353],
        "Service ports ignored on both sides of a proxy hub: resolvers, time, DHCP, "
        "NetBIOS, SNMP, syslog, Kerberos/LDAP and mail relays fan in and out by design.",
        min=0, max=65535)


@dataclass(slots=True)
class TunnelSettings:
    service_domains: list[str] = option(
        [], "Extra tunnel-service domain suffixes (added to the shipped list).")
    tor_ports: list[int] = option(
        [9001, 9030, 9050, 9051, 9150],
        "Ports Tor relays and clients commonly use (ORPort 9001, DirPort 9030, SOCKS 9050/9150, "
        "control 9051); 443 is left out because it is no signal.", min=0, max=65535)
    tor_min_confidence: float = option(
        0.3, "Combined confidence a (client, relay, port) needs before tunnel.tor reports it.",
        min=0.05, max=1.0)
    ssh_ports: list[int] = option(
        [22, 2222], "Ports where SSH is expected; SSH elsewhere is reported by "
        "tunnel.unusual_port.", min=0, max=65535)
    tls_ports: list[int] = option(
        [443, 465, 563, 636, 853, 989, 990, 992, 993, 994, 995, 3269, 4443, 5061, 5223, 5671,
         6697, 8443, 8883, 9443, 10443],
        "Ports where TLS is expected; TLS on a port in ssh_ports or on one of the well-known "
        "clear-text ports (21, 22, 23, 25, 53, 80, 110, 143) is reported by tunnel.unusual_port.",
        min=0, max=65535)
    busy_clients: int = option(
        25, "A non-standard service with at least this many distinct clients is reported as "
        "info only (a service the site uses).", min=2, max=1_000_000)
    fingerprints: list[str] = option(
        [], "Extra client fingerprint priors as 'JA4_OR_JA3=label' (added to the shipped Go TLS "
        "and tool priors; reported by tunnel.fingerprint at info/low only).")


@dataclass(slots=True)
class FrontingSettings:
    cdn_domains: list[str] = option(
        [], "Extra CDN domain suffixes (added to the shipped list).")
    min_snis: int = option(
        5, "Distinct SNIs on one CDN from one client fingerprint before it is reported.", min=2,
        max=1_000_000)
    max_fp_clients: int = option(
        1, "fronting.multi_sni: a fingerprint (JA4, else JA3) seen from more clients than this "
        "is common software (a browser) and is not reported.", min=1, max=1_000_000)
    nat_window: float = option(
        5.0, "fronting.sni_host: when the log that holds SNI and Host saw a public (NAT) client "
        "address, an internal flow to the same server, port and source port within this many "
        "seconds names the real client (0: no NAT attribution).", min=0, max=300)


@dataclass(slots=True)
class CorrelateSettings:
    incident_gap: float = option(
        3600.0, "Seconds of quiet after which findings about the same host start a new incident.",
        min=1, max=86400 * 30)
    endpoint_window: float = option(
        600.0, "Seconds around a network finding within which an endpoint finding on one of its "
        "hosts (the relay, or its client) joins the same incident.", min=1, max=86400)


@dataclass(slots=True)
class SigmaSettings:
    pack: bool = option(True, "Run the Sigma rule pack shipped with hopguard.")
    paths: list[str] = option(
        [], "More Sigma rule files or directories (searched for *.yml and *.yaml); a broken rule "
        "is reported with its file and line and the others still load.")
    disabled: list[str] = option(
        [], "Rule ids or titles to leave out (shipped or your own).")
    min_level: str = option(
        "informational", "Rules below this Sigma level are not run.",
        choices=("informational", "low", "medium", "high", "critical"))


@dataclass(slots=True)
class AttributionSettings:
    window: float = option(
        2.0, "Seconds after a process accepts a connection within which its (or its child's) "
        "outbound connection counts as the other leg of a relay.", min=0.01, max=600)
    depth: int = option(
        3, "Process generations searched between the accepting and the connecting process "
        "(socat fork, ncat --sh-exec's shell, sshd's session child).", min=0, max=10)
    backend_ports: list[int] = option(
        [3306, 5432, 1433, 1521, 6379, 11211, 27017, 9200, 9042, 5672, 389, 636, 88, 2181, 9092],
        "Upstream ports of application backends (databases, caches, directories, queues): a "
        "process that accepts a request and then connects to one is an application, not a "
        "relay, unless it is a known relay tool; reported at low.")


@dataclass(slots=True)
class ChangesSettings:
    merge_window: float = option(
        60.0, "Seconds within which traces of one configuration change from different sources "
        "(the nft command and its monitor line; netsh and the registry value it writes) are one "
        "finding.", min=0, max=3600)
    admin_images: list[str] = option(
        ["dockerd", "containerd", "podman", "libvirtd", "firewalld", "netavark", "kube-proxy",
         "lxd", "incusd"],
        "Processes whose NAT rules are their own plumbing (container and VM networking, "
        "firewall managers): reported at low.")


@dataclass(slots=True)
class IntelSettings:
    feeds: list[str] = option(
        [], "Threat-intel feed files imported into the store before hunt and analyze run their "
        "detectors, each as PATH or FORMAT=PATH (formats: 'hopguard intel formats'); a file "
        "already imported is refreshed, not duplicated. Nothing is fetched from the network.")
    seeds: bool = option(
        True, "Also match the shipped seed lists (VPN and proxy services, Tor directory "
        "authorities and Tor project names). Tunnel services, CDN domains and fingerprint priors "
        "from the seeds are reported by tunnel.* and fronting.*, not twice by intel.*.")
    min_confidence: float = option(
        0.0, "Indicators below this confidence do not produce intel findings.", min=0.0,
        max=1.0)
    expiry_grace: float = option(
        0.0, "Seconds after an indicator's expiry during which it still matches events "
        "(an event before the expiry always matches: hunting back is the point).", min=0,
        max=365 * 86400)
    inbound: bool = option(
        True, "Also report connections *from* Tor exits, VPN or proxy services to internal "
        "servers (at low severity: somebody reaches you anonymously).")
    max_clients: int = option(
        50, "An indicator more internal clients than this touched is one finding for all of "
        "them (medium at most: a popular address is more often a listing mistake), not one "
        "per client.", min=1, max=10_000_000)


@dataclass(slots=True)
class LogSettings:
    level: str = option("warning", "Logging level of hopguard's own diagnostics.",
                        choices=("debug", "info", "warning", "error"))


@dataclass(slots=True)
class Settings:
    store: StoreSettings = field(default_factory=StoreSettings)
    ingest: IngestSettings = field(default_factory=IngestSettings)
    packets: PacketSettings = field(default_factory=PacketSettings)
    inventory: InventorySettings = field(default_factory=InventorySettings)
    analyze: AnalyzeSettings = field(default_factory=AnalyzeSettings)
    relay: RelaySettings = field(default_factory=RelaySettings)
    chain: ChainSettings = field(default_factory=ChainSettings)
    proxy: ProxySettings = field(default_factory=ProxySettings)
    tunnel: TunnelSettings = field(default_factory=TunnelSettings)
    fronting: FrontingSettings = field(default_factory=FrontingSettings)
    correlate: CorrelateSettings = field(default_factory=CorrelateSettings)
    sigma: SigmaSettings = field(default_factory=SigmaSettings)
    attribution: AttributionSettings = field(default_factory=AttributionSettings)
    changes: ChangesSettings = field(default_factory=ChangesSettings)
    intel: IntelSettings = field(default_factory=IntelSettings)
    log: LogSettings = field(default_factory=LogSettings)


@dataclass(frozen=True, slots=True, kw_only=True)
class OptionInfo:
    key: str
    value: Any
    default: Any
    type: str
    help: str
    min: float | None
    max: float | None
    choices: tuple[str, ...] | None


def iter_options(settings: Settings) -> Iterator[OptionInfo]:
    """Every option with its current value, default, type, help and bounds."""
    defaults = Settings()
    for section in dataclasses.fields(settings):
        current = getattr(settings, section.name)
        default_section = getattr(defaults, section.name)
        for f in dataclasses.fields(current):
            yield OptionInfo(
                key=f"{section.name}.{f.name}", value=getattr(current, f.name),
                default=getattr(default_section, f.name), type=_type_name(f),
                help=f.metadata["help"], min=f.metadata["min"], max=f.metadata["max"],
                choices=f.metadata["choices"])


def _type_name(f: dataclasses.Field[Any]) -> str:
    return str(f.type).replace("typing.", "")


def _coerce(key: str, f: dataclasses.Field[Any], raw: Any, origin: str) -> Any:
    typ = str(f.type)
    where = SourceLocation(path=origin)
    lo, hi, choices = f.metadata["min"], f.metadata["max"], f.metadata["choices"]
    try:
        if typ == "bool":
            if isinstance(raw, bool):
                value: Any = raw
            elif isinstance(raw, str) and raw.lower() in ("1", "true", "yes", "on"):
                value = True
            elif isinstance(raw, str) and raw.lower() in ("0", "false", "no", "off"):
                value = False
            else:
                raise ValueError(raw)
        elif typ == "int":
            if isinstance(raw, bool):
                raise ValueError(raw)
            value = int(raw)
        elif typ == "float":
            value = float(raw)
        elif typ == "str":
            if not isinstance(raw, str):
                raise ValueError(raw)
            value = raw
        elif typ == "list[str]":
            if isinstance(raw, str):
                value = [item.strip() for item in raw.split(",") if item.strip()]
            elif isinstance(raw, list) and all(isinstance(item, str) for item in raw):
                value = list(raw)
            else:
                raise ValueError(raw)
        elif typ == "list[int]":
            items = raw.split(",") if isinstance(raw, str) else raw
            if not isinstance(items, list) or any(isinstance(i, bool) for i in items):
                raise ValueError(raw)
            value = [int(i) for i in items if str(i).strip()]
            if (lo is not None and any(i < lo for i in value)) or \
                    (hi is not None and any(i > hi for i in value)):
                raise ConfigError(f"{key}: every item must be within {lo}..{hi}", where)
            return value
        else:  # pragma: no cover - every field type is listed above
            raise ValueError(typ)
    except (TypeError, ValueError):
        raise ConfigError(f"{key}: expected {typ}, got {raw!r}", where) from None
    if lo is not None and value < lo:
        raise ConfigError(f"{key}: {value} is below the minimum {lo}", where)
    if hi is not None and value > hi:
        raise ConfigError(f"{key}: {value} is above the maximum {hi}", where)
    if choices is not None and value not in choices:
        raise ConfigError(f"{key}: {value!r} is not one of {', '.join(choices)}", where)
    return value


def _apply(settings: Settings, key: str, raw: Any, origin: str) -> None:
    section_name, _, name = key.partition(".")
    section = getattr(settings, section_name, None) if section_name else None
    if section is None or not dataclasses.is_dataclass(section) or not name:
        raise ConfigError(f"unknown setting {key!r} (see 'hopguard config dump')",
                          SourceLocation(path=origin))
    fields = {f.name: f for f in dataclasses.fields(section)}
    if name not in fields:
        raise ConfigError(f"unknown setting {key!r} (see 'hopguard config dump')",
                          SourceLocation(path=origin))
    setattr(section, name, _coerce(key, fields[name], raw, origin))


def _apply_mapping(settings: Settings, data: Mapping[str, Any], origin: str) -> None:
    for section_name, values in data.items():
        if not isinstance(values, Mapping):
            raise ConfigError(f"[{section_name}] must be a table", SourceLocation(path=origin))
        for name, raw in values.items():
            _apply(settings, f"{section_name}.{name}", raw, origin)


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        # Python 3.11's tomllib puts the position only in the message: "(at line 3, column 8)"
        m = re.search(r"\(at line (\d+), column (\d+)\)", str(exc))
        msg = re.sub(r"\s*\(at line \d+, column \d+\)", "", str(exc))
        raise ConfigError(f"invalid TOML: {msg}", SourceLocation(
            path=str(path), line=int(m.group(1)) if m else None,
            column=int(m.group(2)) if m else None)) from None
    except OSError as exc:
        raise ConfigError(f"cannot read configuration: {exc.strerror}",
                          SourceLocation(path=str(path))) from None


def default_layers(config: Path | None) -> list[Path]:
    layers = [Path("/etc/hopguard/hopguard.toml"),
              Path(os.environ.get("XDG_CONFIG_HOME", Path.home() / ".config"))
              / "hopguard" / "hopguard.toml"]
    if config is not None:
        if not config.exists():
            raise ConfigError("configuration file not found", SourceLocation(path=str(config)))
        layers.append(config)
    elif Path("hopguard.toml").exists():
        layers.append(Path("hopguard.toml"))
    return layers


def load_settings(config: Path | None = None, overrides: Sequence[str] = (),
                  environ: Mapping[str, str] | None = None,
                  layers: Sequence[Path] | None = None) -> Settings:
    """Build the settings from every layer; raises ConfigError naming the bad layer."""
    settings = Settings()
    for path in default_layers(config) if layers is None else layers:
        if path.exists():
            _apply_mapping(settings, _read_toml(path), str(path))
    env = os.environ if environ is None else environ
    known = {info.key for info in iter_options(settings)}
    for key in sorted(known):
        var = "HOPGUARD_" + key.replace(".", "_").upper()
        if var in env:
            _apply(settings, key, env[var], f"${var}")
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep:
            raise ConfigError(f"--set expects section.key=value, got {item!r}")
        value: Any = raw
        with contextlib.suppress(tomllib.TOMLDecodeError):  # TOML literals: 3, true, ['a']
            value = tomllib.loads(f"v = {raw}")["v"]
        _apply(settings, key.strip(), value, "--set")
    return settings
