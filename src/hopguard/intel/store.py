"""The indicator store: importing feeds into the ``indicator`` table, updating what is there.

Theory of operation: a feed is read by its reader (intel/feeds.py) into Arrow batches that land
in a temporary table; then one transaction folds them into ``indicator``. Rows are keyed by
``id = md5(feed|kind|value|match)`` (``intel.model.indicator_id``), so importing a newer copy of a
feed updates the rows it already had instead of adding new ones: the category, label, confidence,
source, expiry and detail become the new feed's, ``first_seen`` keeps the earliest date either
copy gave and ``last_seen`` the latest. Indicators a newer copy no longer lists are kept (they
were true when the older copy was published; their expiry decides how long they match). A value
a feed lists twice is stored once, with its highest confidence.

Nothing already stored is lost when an import fails: the fold runs in one transaction and the
reader reports bad records through the error callback instead of raising. Fetching a feed over
the network happens only through :func:`fetch_feed`, which the CLI calls for ``--fetch`` alone.
"""

from __future__ import annotations

import logging
import shutil
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlparse

import duckdb
import pyarrow as pa

from hopguard.errors import ConfigError, InputError, SourceLocation, StoreError
from hopguard.intel.feeds import FORMATS, FeedOptions, read_feed, sniff
from hopguard.intel.model import BATCH_SCHEMA
from hopguard.store import Store

logger = logging.getLogger(__name__)

HEAD_BYTES = 64 * 1024
NEW = "_hg_intel_new"
KEYED = "_hg_intel_keyed"


@dataclass(slots=True, kw_only=True)
class ImportStats:
    """What one feed import did."""

    feed: str
    format: str
    path: str
    read: int = 0  # indicator rows the reader produced
    added: int = 0  # new rows in the store
    updated: int = 0  # rows that were there and were refreshed
    duplicates: int = 0  # rows the feed listed more than once (stored once)
    errors: int = 0
    shown: list[str] = field(default_factory=list)  # the first errors, "file:line: message"
    skipped: int = 0  # valid records left out on purpose (revoked, benign, not to_ids ...)
    skip_notes: list[str] = field(default_factory=list)  # the first of those, located
    kinds: dict[str, int] = field(default_factory=dict)  # stored rows of this feed per kind
    seconds: float = 0.0

    def line(self) -> str:
        kinds = ", ".join(f"{n} {k}" for k, n in sorted(self.kinds.items()))
        return (f"{self.path}: feed {self.feed!r} ({self.format}): {self.added} added, "
                f"{self.updated} updated" + (f", {self.duplicates} duplicates" if
                                             self.duplicates else "")
                + (f", {self.errors} errors" if self.errors else "")
                + (f", {self.skipped} records skipped on purpose" if self.skipped else "")
                + (f"; the feed now holds {kinds}" if kinds else "")
                + f" in {self.seconds:.2f} s")


def feed_name(path: Path) -> str:
    """The default feed name: the file name without compression and list suffixes."""
    name = path.name
    for suffix in (".gz", ".txt", ".csv", ".json", ".tsv", ".list"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
    return name or path.name


def _head(path: Path) -> bytes:
    """The first bytes of a feed, as they are on disk (``sniff`` looks through gzip)."""
    try:
        with path.open("rb") as fh:
            return fh.read(HEAD_BYTES)
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}",
                         SourceLocation(path=str(path))) from None


def resolve_format(path: Path, fmt: str) -> str:
    """``fmt`` checked, or the format sniffed from the file's first bytes for ``auto``."""
    if fmt != "auto":
        if fmt not in FORMATS:
            raise ConfigError(f"unknown feed format {fmt!r}; formats: {', '.join(FORMATS)}")
        return fmt
    found = sniff(path, _head(path))
    if found is None:
        raise InputError(f"cannot tell what kind of feed {path} is; give its format "
                         f"(--format: {', '.join(FORMATS)})", SourceLocation(path=str(path)))
    return found


def import_feed(store: Store, path: Path, *, fmt: str = "auto", name: str | None = None,
                options: FeedOptions | None = None, now: datetime | None = None,
                max_shown: int = 20) -> ImportStats:
    """Read one feed file and fold it into the store (see the module docstring)."""
    started = time.perf_counter()
    fmt = resolve_format(path, fmt)
    feed = name or feed_name(path)
    stats = ImportStats(feed=feed, format=fmt, path=str(path))
    now = (now or datetime.now(UTC)).replace(tzinfo=None)

    def error(where: SourceLocation, message: str) -> None:
        stats.errors += 1
        if len(stats.shown) < max_shown:
            stats.shown.append(f"{where}: {message}")

    def note(where: SourceLocation, message: str) -> None:
        stats.skipped += 1
        if len(stats.skip_notes) < max_shown:
            stats.skip_notes.append(f"{where}: {message}")

    con = store.con
    empty = BATCH_SCHEMA.empty_table()
    con.register("_hg_intel_empty", empty)
    try:
        con.execute(f"CREATE OR REPLACE TEMP TABLE {NEW} AS SELECT * FROM _hg_intel_empty")
    finally:
        con.unregister("_hg_intel_empty")
    try:
        for batch in read_feed(path, fmt, options or FeedOptions(), error, note=note):
            if not batch.num_rows:
                continue
            stats.read += batch.num_rows
            con.register("_hg_intel_batch", batch.select(BATCH_SCHEMA.names))
            try:
                con.execute(f"INSERT INTO {NEW} BY NAME SELECT * FROM _hg_intel_batch")
            finally:
                con.unregister("_hg_intel_batch")
        _fold(store, feed, now, stats)
    except duckdb.Error as exc:
        raise StoreError(f"cannot store the indicators of {path}: {exc}") from None
    finally:
        con.execute(f"DROP TABLE IF EXISTS {NEW}")
        con.execute(f"DROP TABLE IF EXISTS {KEYED}")
    stats.seconds = time.perf_counter() - started
    return stats


def _fold(store: Store, feed: str, now: datetime, stats: ImportStats) -> None:
    con = store.con
    # One row per key; a value listed twice keeps its most confident statement.
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE {KEYED} AS
        SELECT left(md5(concat_ws('|', $feed, kind, value, match)), 16) AS id,
               kind, value, match, any_value(prefix) AS prefix,
               arg_max(category, confidence) AS category, arg_max(label, confidence) AS label,
               max(confidence) AS confidence, arg_max(source, confidence) AS source,
               coalesce(min(first_seen), $now) AS first_seen,
               coalesce(max(last_seen), $now) AS last_seen,
               CASE WHEN bool_or(expires IS NULL) THEN NULL ELSE max(expires) END AS expires,
               arg_max(detail, confidence) AS detail, min(record) AS record,
               count(*) AS n
        FROM {NEW} WHERE value IS NOT NULL AND kind IS NOT NULL
        GROUP BY kind, value, match
        """, {"feed": feed, "now": now})
    keyed, dupes = con.execute(
        f"SELECT count(*), coalesce(sum(n - 1), 0) FROM {KEYED}").fetchall()[0]
    stats.duplicates = int(dupes)
    con.execute("BEGIN TRANSACTION")
    try:
        stats.updated = int(con.execute(
            f"SELECT count(*) FROM {KEYED} k SEMI JOIN indicator i ON i.id = k.id"
        ).fetchall()[0][0])
        if stats.updated:
            con.execute(f"""
                UPDATE indicator AS i SET
                    ts = $now, record = k.record, prefix = k.prefix, category = k.category,
                    label = k.label, confidence = k.confidence, source = k.source,
                    first_seen = least(i.first_seen, k.first_seen),
                    last_seen = greatest(i.last_seen, k.last_seen), expires = k.expires,
                    detail = k.detail
                FROM {KEYED} k WHERE i.id = k.id
                """, {"now": now})
        con.execute(f"""
            INSERT INTO indicator BY NAME
            SELECT $now AS ts, NULL AS sensor, NULL AS file_id, k.record, k.id, $feed AS feed,
                   k.kind, k.value, k.prefix, k.match, k.category, k.label, k.confidence,
                   k.source, k.first_seen, k.last_seen, k.expires, k.detail
            FROM {KEYED} k ANTI JOIN indicator i ON i.id = k.id
            """, {"now": now, "feed": feed})
        stats.added = int(keyed) - stats.updated
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    stats.kinds = {str(k): int(n) for k, n in con.execute(
        "SELECT kind, count(*) FROM indicator WHERE feed = ? GROUP BY kind", [feed]).fetchall()}


def remove_feed(store: Store, feed: str) -> int:
    """Delete every indicator of one feed; returns how many there were."""
    n = int(store.con.execute("SELECT count(*) FROM indicator WHERE feed = ?",
                              [feed]).fetchall()[0][0])
    store.con.execute("DELETE FROM indicator WHERE feed = ?", [feed])
    return n


def load_indicators(store: Store, where: str = "", params: list[object] | None = None
                    ) -> pa.Table:
    """Indicator rows (every column), optionally filtered by a SQL condition."""
    return store.query("SELECT * FROM indicator" + (f" WHERE {where}" if where else "")
                       + " ORDER BY feed, kind, value", list(params or []))


def feeds_summary(store: Store) -> pa.Table:
    """One row per feed: indicators per kind, categories, sources and when it was imported."""
    return store.query("""
        SELECT feed, count(*) AS indicators,
               count(*) FILTER (WHERE kind = 'ip') AS ip,
               count(*) FILTER (WHERE kind = 'domain') AS domain,
               count(*) FILTER (WHERE kind = 'url') AS url,
               count(*) FILTER (WHERE kind IN ('ja3', 'ja3s', 'ja4')) AS fingerprint,
               string_agg(DISTINCT category, ',' ORDER BY category) AS categories,
               round(avg(confidence), 2) AS confidence, max(ts) AS imported,
               min(first_seen) AS first_seen, max(last_seen) AS last_seen,
               count(*) FILTER (WHERE expires IS NOT NULL AND expires < now()::TIMESTAMP)
                   AS expired
        FROM indicator GROUP BY feed ORDER BY feed
        """)


def fetch_feed(url: str, directory: Path, *, timeout: float = 30.0) -> Path:
    """Download one feed (http, https or file URL) into ``directory``; the caller asked for it
    explicitly (``hopguard intel import --fetch``): hopguard never fetches on its own."""
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https", "file"):
        raise ConfigError(f"cannot fetch {url!r}: only http, https and file URLs")
    name = Path(parsed.path).name or parsed.netloc or "feed"
    dest = directory / name
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp, dest.open("wb") as fh:
            shutil.copyfileobj(resp, fh)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise InputError(f"cannot fetch {url}: {reason}", SourceLocation(path=url)) from None
    return dest
