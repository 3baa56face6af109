"""Rows as Elastic Common Schema documents.

Each column with an ECS name (model/tables.py) is placed at that dotted path; columns without one
go under ``hopguard.<table>.<column>``. ``event.dataset`` names the table, so a SIEM can route the
documents. Timestamps are ISO 8601 UTC with a 'Z'.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

from hopguard.model import table as model_table


def _put(doc: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = doc
    for key in keys[:-1]:
        child = node.get(key)
        if not isinstance(child, dict):
            child = {}
            node[key] = child
        node = child
    node[keys[-1]] = value


def _value(v: Any) -> Any:
    if isinstance(v, datetime):
        return v.isoformat(timespec="microseconds") + "Z"
    return v


def to_ecs(table_name: str, rows: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    tbl = model_table(table_name)
    paths = {c.name: c.ecs or f"hopguard.{table_name}.{c.name}" for c in tbl.columns}
    for row in rows:
        doc: dict[str, Any] = {"event": {"dataset": f"hopguard.{table_name}"}}
        for name, value in row.items():
            if value is None or name not in paths:
                continue
            _put(doc, paths[name], _value(value))
        yield doc
