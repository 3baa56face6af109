"""What the feed-reader tests share: a feed read into rows, located errors and notes, and a
block of list lines read through the fast or the reference path."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hopguard.errors import SourceLocation
from hopguard.intel import feeds
from hopguard.intel.feeds import FeedOptions, ReadContext, read_feed
from hopguard.intel.model import BATCH_SCHEMA


@dataclass
class Read:
    rows: list[dict[str, Any]] = field(default_factory=list)
    errors: list[tuple[SourceLocation, str]] = field(default_factory=list)
    notes: list[tuple[SourceLocation, str]] = field(default_factory=list)
    batches: list[int] = field(default_factory=list)  # rows per yielded table

    def lines(self) -> list[int | None]:
        return [loc.line for loc, _ in self.errors]

    def values(self, kind: str | None = None) -> list[str]:
        return [r["value"] for r in self.rows if kind is None or r["kind"] == kind]

    def categories(self) -> Counter[str]:
        return Counter(r["category"] for r in self.rows)

    def by_value(self, value: str) -> dict[str, Any]:
        (row,) = [r for r in self.rows if r["value"] == value]
        return row


def read(path: Path, fmt: str, **options: Any) -> Read:
    """Every table ``read_feed`` yields (each in BATCH_SCHEMA), its errors and its notes."""
    out = Read()
    for table in read_feed(path, fmt, FeedOptions(**options),
                           lambda loc, msg: out.errors.append((loc, msg)),
                           note=lambda loc, msg: out.notes.append((loc, msg))):
        assert table.schema == BATCH_SCHEMA
        out.batches.append(table.num_rows)
        out.rows.extend(table.to_pylist())
    return out


def block_rows(kind: str, text: str, fast: bool) -> tuple[list[dict[str, Any]], list[str]]:
    """One block of ip-list or domain-list lines through the vectorised path (``fast``) or the
    Python reference: the rows sorted, and the errors as ``line:message``."""
    errors: list[str] = []
    ctx = ReadContext(path=Path("mem"), options=FeedOptions(),
                      error=lambda loc, msg: errors.append(f"{loc.line}:{msg}"))
    if kind == "ip":
        tables = list(feeds._ip_block(ctx, feeds._ListState(), 1, text, fast=fast))
    else:
        tables = list(feeds._domain_block(ctx, 1, text, fast=fast))
    rows = [r for t in tables for r in t.to_pylist()]
    return sorted(rows, key=lambda r: (r["record"], r["value"])), errors
