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
        [], "Sanctioned proxies as host:port; findings about them are marked sanctioned.")
    networks: list[str] = option([], "Internal networks (CIDR); everything else is external.")


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
        else:  # pragma: no cover - every field type is listed above
            raise ValueError(typ)
    except (TypeError, ValueError):
        raise ConfigError(f"{key}: expected {typ}, got {raw!r}", where) from None
    lo, hi, choices = f.metadata["min"], f.metadata["max"], f.metadata["choices"]
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
