"""``hopguard intel import|list|match|remove|formats``: the threat-intel store.

``import FILE...`` reads feeds (Tor consensus, exit lists, Onionoo, IP/CIDR and domain lists,
JA3/JA4 CSV, STIX 2.1, MISP) into the store; the format is recognised from the content unless
``--format`` says it. Every broken record is printed as ``file:line: message`` and the rest is
imported; the exit code is 2 when any record was broken. Nothing is fetched from the network
unless ``--fetch URL`` asks for it.

``list`` shows the feeds (or, with ``--feed``/``--value``, their indicators); ``match VALUE...``
looks addresses, domain names and fingerprints up in the store and the seed lists with the
in-process matcher the inline paths use; ``remove FEED`` deletes a feed.
"""

from __future__ import annotations

import sys
import tempfile
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import pyarrow as pa
import typer

from hopguard.cli.common import (
    ConfigOpt,
    DbOpt,
    DebugOpt,
    Env,
    OutputFormat,
    SetOpt,
    err,
    make_env,
    out,
    print_arrow,
)
from hopguard.errors import EXIT_BAD_INPUT, ConfigError
from hopguard.intel.feeds import FORMATS, FeedOptions
from hopguard.intel.match import IntelIndex
from hopguard.intel.model import CATEGORIES, MATCHES, as_indicator_rows
from hopguard.intel.seeds import seed_indicators
from hopguard.intel.store import (
    ImportStats,
    feeds_summary,
    fetch_feed,
    import_feed,
    load_indicators,
    remove_feed,
)

intel_app = typer.Typer(no_args_is_help=True, help="Threat intel: import feeds, list, match.")

FmtOpt = Annotated[OutputFormat, typer.Option("--format", "-f", help="Output format.")]


def _parse_time(text: str | None, what: str) -> datetime | None:
    if text is None:
        return None
    try:
        t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(f"{what}: not an ISO 8601 time: {text!r}") from None
    return t.astimezone(UTC).replace(tzinfo=None) if t.tzinfo else t


def import_paths(env: Env, paths: list[tuple[Path, str]], options: FeedOptions,
                 name: str | None = None, *, quiet: bool = False) -> list[ImportStats]:
    """Import feeds (path, format) into the env's store, printing one line per feed and the
    first broken records of each."""
    results = []
    with env.open_store() as store:
        for path, fmt in paths:
            stats = import_feed(store, path, fmt=fmt, name=name, options=options)
            results.append(stats)
            if not quiet:
                out.print(stats.line(), highlight=False, markup=False)
            for line in stats.shown:
                err.print(f"hopguard: {line}", highlight=False, markup=False)
            if stats.errors > len(stats.shown):
                err.print(f"hopguard: ... and {stats.errors - len(stats.shown)} more broken "
                          f"record(s) in {path}", highlight=False, markup=False)
    return results


def configured_feeds(items: list[str]) -> list[tuple[Path, str]]:
    """``[intel] feeds`` entries (PATH or FORMAT=PATH) as (path, format)."""
    feeds = []
    for item in items:
        fmt, sep, rest = item.partition("=")
        if sep and fmt in FORMATS:
            feeds.append((Path(rest), fmt))
        else:
            feeds.append((Path(item), "auto"))
    return feeds


@intel_app.command("import")
def import_cmd(
        paths: Annotated[list[Path] | None, typer.Argument(
            help="Feed files.", show_default=False)] = None,
        feed_format: Annotated[str, typer.Option(
            "--format", help=f"Feed format: auto or one of {', '.join(FORMATS)}.")] = "auto",
        name: Annotated[str | None, typer.Option(
            "--name", help="Feed name (default: the file name); re-importing under the same "
            "name updates that feed's indicators.", show_default=False)] = None,
        category: Annotated[str | None, typer.Option(
            "--category", help=f"Category of every indicator: {', '.join(CATEGORIES)} "
            "[default: what the feed says, else ioc].", show_default=False)] = None,
        confidence: Annotated[float | None, typer.Option(
            "--confidence", min=0.0, max=1.0, help="Confidence 0-1 of every indicator "
            "[default: what the feed says, else the format's default].",
            show_default=False)] = None,
        source: Annotated[str | None, typer.Option(
            "--source", help="Who published the feed [default: what it says, else the file].",
            show_default=False)] = None,
        label: Annotated[str | None, typer.Option(
            "--label", help="Label of every indicator.", show_default=False)] = None,
        expires: Annotated[str | None, typer.Option(
            "--expires", help="ISO 8601 time after which the indicators stop matching newer "
            "events.", show_default=False)] = None,
        domain_match: Annotated[str | None, typer.Option(
            "--domain-match", help=f"How plain domain-list entries match: {', '.join(MATCHES)} "
            "[default: exact; '*.x' and '.x' entries say it themselves].",
            show_default=False)] = None,
        fetch: Annotated[list[str] | None, typer.Option(
            "--fetch", help="Download this feed URL first (the only way hopguard uses the "
            "network; repeatable).", show_default=False)] = None,
        timeout: Annotated[float, typer.Option("--timeout", help="Fetch timeout, seconds.")]
        = 30.0,
        config: ConfigOpt = None, set_: SetOpt = None, db: DbOpt = None,
        debug: DebugOpt = False) -> None:
    """Import threat-intel feeds into the store (offline: files unless --fetch)."""
    env = make_env(config, set_, db, debug)
    if category is not None and category not in CATEGORIES:
        raise ConfigError(f"--category {category!r}: one of {', '.join(CATEGORIES)}")
    if domain_match is not None and domain_match not in MATCHES:
        raise ConfigError(f"--domain-match {domain_match!r}: one of {', '.join(MATCHES)}")
    if not paths and not fetch:
        raise ConfigError("give feed files (or --fetch URL)")
    options = FeedOptions(category=category, confidence=confidence, source=source, label=label,
                          expires=_parse_time(expires, "--expires"), domain_match=domain_match)
    with tempfile.TemporaryDirectory(prefix="hopguard-feed-") as tmp:
        files = [(p, feed_format) for p in paths or []]
        results = import_paths(env, files, options, name) if files else []
        for url in fetch or []:  # a fetched feed's source is its URL unless --source says
            got = fetch_feed(url, Path(tmp), timeout=timeout)
            results += import_paths(env, [(got, feed_format)],
                                    options if source else replace(options, source=url), name)
    if any(r.errors for r in results):
        raise typer.Exit(EXIT_BAD_INPUT)


@intel_app.command("list")
def list_cmd(
        feed: Annotated[str | None, typer.Option(
            "--feed", help="Show this feed's indicators.", show_default=False)] = None,
        value: Annotated[str | None, typer.Option(
            "--value", help="Show indicators whose value contains this text.",
            show_default=False)] = None,
        seeds: Annotated[bool, typer.Option(
            "--seeds", help="Show the shipped seed lists instead of the store.")] = False,
        limit: Annotated[int, typer.Option("--limit", help="At most this many rows.")] = 200,
        fmt: FmtOpt = OutputFormat.table, config: ConfigOpt = None, set_: SetOpt = None,
        db: DbOpt = None, debug: DebugOpt = False) -> None:
    """The feeds in the store, or the indicators of one feed."""
    env = make_env(config, set_, db, debug)
    if seeds:
        tbl = seed_indicators().select(["kind", "value", "match", "category", "label",
                                        "confidence", "source"])
        print_arrow(tbl.slice(0, limit), fmt, title=f"{tbl.num_rows} seed indicators")
        return
    with env.open_store(read_only=True) as store:
        if feed is None and value is None:
            print_arrow(feeds_summary(store), fmt, title="Threat-intel feeds")
            return
        where, params = [], []
        if feed is not None:
            where.append("feed = ?")
            params.append(feed)
        if value is not None:
            where.append("contains(value, lower(?))")
            params.append(value)
        tbl = load_indicators(store, " AND ".join(where), list(params))
    cols = ["feed", "kind", "value", "match", "category", "label", "confidence", "source",
            "first_seen", "last_seen", "expires", "detail"]
    print_arrow(tbl.select(cols).slice(0, limit), fmt,
                title=f"{tbl.num_rows} indicators" + (f" (first {limit})"
                                                      if tbl.num_rows > limit else ""))


@intel_app.command("match")
def match_cmd(
        values: Annotated[list[str] | None, typer.Argument(
            help="Addresses, domain names or JA3/JA4 fingerprints ('-': one per line from "
            "stdin).", show_default=False)] = None,
        at: Annotated[str | None, typer.Option(
            "--at", help="Match as of this ISO 8601 time (expired indicators do not match).",
            show_default=False)] = None,
        seeds: Annotated[bool, typer.Option(
            "--seeds/--no-seeds", help="Also match the shipped seed lists.")] = True,
        fmt: FmtOpt = OutputFormat.table, config: ConfigOpt = None, set_: SetOpt = None,
        db: DbOpt = None, debug: DebugOpt = False) -> None:
    """Look values up in the intel store (exit 0 when any matched, 1 when none did)."""
    env = make_env(config, set_, db, debug)
    items = [v.strip() for v in values or []]
    if "-" in items:
        items = [v for v in items if v != "-"] + [ln.strip() for ln in sys.stdin if ln.strip()]
    if not items:
        raise ConfigError("give values to match (or '-' to read them from stdin)")
    when = _parse_time(at, "--at")
    tables = []
    if env.db.exists() or str(env.db) == ":memory:":
        with env.open_store(read_only=True) as store:
            tables.append(load_indicators(store))
    if seeds:
        tables.append(as_indicator_rows(seed_indicators(), "seed"))
    cols = ["id", "feed", "kind", "value", "prefix", "match", "category", "label", "confidence",
            "source", "first_seen", "last_seen", "expires"]
    if not tables:
        raise ConfigError(f"no store at {env.db} and --no-seeds: nothing to match against")
    index = IntelIndex.from_table(pa.concat_tables([t.select(cols) for t in tables]))
    rows = []
    for item in items:
        for hit in index.lookup(item, when):
            rows.append({"query": item, "feed": hit.feed, "kind": hit.kind, "value": hit.value,
                         "match": hit.match, "category": hit.category, "label": hit.label,
                         "confidence": hit.confidence, "source": hit.source,
                         "expires": hit.expires})
    if rows:
        print_arrow(pa.Table.from_pylist(rows), fmt, title=f"{len(rows)} match(es)")
    else:
        err.print("no indicator matches", highlight=False)
    raise typer.Exit(0 if rows else 1)


@intel_app.command("remove")
def remove_cmd(feed: Annotated[str, typer.Argument(help="The feed name.")],
               config: ConfigOpt = None, set_: SetOpt = None, db: DbOpt = None,
               debug: DebugOpt = False) -> None:
    """Delete every indicator of one feed."""
    env = make_env(config, set_, db, debug)
    with env.open_store() as store:
        n = remove_feed(store, feed)
    if not n:
        raise ConfigError(f"no feed named {feed!r} in {env.db}")
    out.print(f"removed feed {feed!r}: {n} indicators", highlight=False, markup=False)


@intel_app.command("formats")
def formats_cmd() -> None:
    """The feed formats import reads."""
    from hopguard.intel import feeds
    for name in FORMATS:
        out.print(f"{name:16} {feeds.describe(name)}", highlight=False, markup=False)
