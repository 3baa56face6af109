"""Which Sigma logsources and fields hopguard can evaluate, and where they live in the store.

A Sigma rule names a *logsource* (category/product/service) and *fields* in Sysmon vocabulary
(``Image``, ``CommandLine`` ...). hopguard keeps endpoint telemetry in four tables (see
docs/formats.md "Tables"); this module is the one place that says which logsource reads which
table, which rows of it (``platform = 'windows'``, ``source = 'registry'``) and which column (or
derived expression) each field means. Both evaluators (the SQL backend and the Python reference
matcher) read these specs, so they cannot disagree about the mapping.

A field that is not mapped and is not a column of the table is *absent*: it compares as NULL
(the loader notes it), which is what Sigma says about a field the event does not have.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import pyarrow as pa

from hopguard.model.tables import TABLES

Kind = Literal["str", "int", "float", "bool"]

PLATFORMS = ("windows", "linux", "macos", "esxi")


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """Where one Sigma field lives: a column, or an expression over columns (``derive``)."""

    name: str  # the column (or, for a derived field, a label used in notes)
    kind: Kind
    sql: str  # the DuckDB expression of the raw value
    derive: Callable[[Mapping[str, Any]], Any] | None = None  # Python twin of ``sql``

    def value(self, event: Mapping[str, Any]) -> Any:
        return self.derive(event) if self.derive is not None else event.get(self.name)


@dataclass(frozen=True, slots=True)
class Source:
    """A logsource resolved to a table and the row filter it implies."""

    table: str
    where: tuple[tuple[str, str], ...]  # (column, exact value) pairs ANDed to the condition


def _kind(t: pa.DataType) -> Kind:
    if pa.types.is_integer(t):
        return "int"
    if pa.types.is_floating(t):
        return "float"
    if pa.types.is_boolean(t):
        return "bool"
    return "str"


def _column_kinds(table: str) -> dict[str, Kind]:
    return {c.name: _kind(c.type) for c in TABLES[table].columns}


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


sql_col = quote_ident


def _initiated(event: Mapping[str, Any]) -> str | None:
    return {"outbound": "true", "inbound": "false"}.get(str(event.get("direction")))


_COMMON = {"Computer": "host", "EventID": "event_code", "Platform": "platform"}

# Sigma field -> our column, per table (taxonomy of Sysmon / the Sigma "generic" logsources).
_MAPS: dict[str, dict[str, str]] = {
    "process": {
        "Image": "image", "CommandLine": "command_line", "ParentImage": "parent_image",
        "ParentCommandLine": "parent_command_line", "User": "user",
        "CurrentDirectory": "cwd", "ProcessId": "pid", "ParentProcessId": "ppid",
        "ProcessGuid": "process_guid", "ParentProcessGuid": "parent_guid", **_COMMON,
    },
    "netconn": {
        "Image": "image", "User": "user", "ProcessId": "pid", "ParentProcessId": "ppid",
        "SourceIp": "src_ip", "SourcePort": "src_port", "DestinationIp": "dst_ip",
        "DestinationPort": "dst_port", "DestinationHostname": "dst_host", "Protocol": "proto",
        "ProcessGuid": "process_guid", **_COMMON,
    },
    "config_change": {
        "TargetObject": "object", "Details": "detail", "EventType": "action", "Image": "image",
        "User": "user", "ProcessId": "pid", "Source": "source", "Action": "action",
        "Object": "object", "Detail": "detail", "EventCode": "event_code", **_COMMON,
    },
    "dns": {
        "QueryName": "query", "Image": "image", "ProcessId": "pid", "QueryType": "qtype",
        **_COMMON,
    },
}

# Columns an unnamed search (Sigma ``keywords``) looks in.
KEYWORD_COLUMNS: dict[str, tuple[str, ...]] = {
    "process": ("command_line", "image", "parent_command_line"),
    "netconn": ("image", "dst_host"),
    "config_change": ("object", "detail"),
    "dns": ("query",),
}

# The columns a finding reports, and that the one-scan query returns per matched row.
KEY_COLUMNS: dict[str, tuple[str, ...]] = {
    "process": ("ts", "file_id", "record", "host", "platform", "pid", "ppid", "image",
                "command_line", "user", "parent_image", "parent_command_line"),
    "netconn": ("ts", "file_id", "record", "host", "platform", "pid", "image", "user",
                "direction", "proto", "src_ip", "src_port", "dst_ip", "dst_port", "dst_host"),
    "config_change": ("ts", "file_id", "record", "host", "platform", "source", "action",
                      "object", "detail", "user", "pid", "image"),
    "dns": ("ts", "file_id", "record", "host", "platform", "pid", "image", "query", "qtype"),
}


def field_spec(table: str, sigma_field: str) -> FieldSpec | None:
    """The spec of ``sigma_field`` over ``table``, or None when we do not store it."""
    kinds = _column_kinds(table)
    if table == "netconn" and sigma_field.lower() == "initiated":
        return FieldSpec("initiated", "str",
                         "(CASE \"direction\" WHEN 'outbound' THEN 'true' "
                         "WHEN 'inbound' THEN 'false' END)", _initiated)
    mapping = _MAPS[table]
    col = mapping.get(sigma_field)
    if col is None:  # Sigma field names are case-sensitive; be lenient with the case
        lowered = {k.lower(): v for k, v in mapping.items()}
        col = lowered.get(sigma_field.lower())
    if col is None and sigma_field.lower() in kinds:  # our own column names work too
        col = sigma_field.lower()
    if col is None or col not in kinds:
        return None
    return FieldSpec(col, kinds[col], quote_ident(col))


class LogsourceError(ValueError):
    """The logsource names data hopguard does not keep."""


def resolve_logsource(category: str | None, product: str | None,
                      service: str | None) -> Source:
    """The table and row filter a Sigma logsource reads (raises LogsourceError)."""
    cat = (category or "").lower()
    prod = (product or "").lower()
    if service:
        if service.lower() == "auditd":
            raise LogsourceError("service auditd (raw audit records) is not supported: hopguard "
                                 "reassembles auditd into process/netconn; write a "
                                 "process_creation rule with product linux")
        raise LogsourceError(f"service {service!r} is not supported")
    if prod and prod not in PLATFORMS and cat != "config_change":
        raise LogsourceError(f"product {product!r} is not one of {', '.join(PLATFORMS)}")
    platform = (("platform", prod),) if prod in PLATFORMS else ()
    if cat == "process_creation":
        return Source("process", platform)
    if cat == "network_connection":
        return Source("netconn", platform)
    if cat in ("registry_event", "registry_set", "registry_add", "registry_delete"):
        if prod and prod != "windows":
            raise LogsourceError(f"category {cat} exists on windows only")
        return Source("config_change", (("source", "registry"),))
    if cat == "dns_query":
        return Source("dns", platform)
    if cat == "config_change":
        return Source("config_change", platform)
    raise LogsourceError(f"category {category!r} is not supported (process_creation, "
                         "network_connection, registry_*, dns_query, config_change)")
