"""The indicator store: importing, re-importing (update, not duplicate), located errors, nothing
lost when an import fails, and fetching only on request (from a loopback server)."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from hopguard.errors import ConfigError, InputError
from hopguard.intel.feeds import FeedOptions
from hopguard.intel.model import indicator_id
from hopguard.intel.store import feeds_summary, fetch_feed, import_feed, remove_feed
from hopguard.store import Store

T1, T2 = datetime(2026, 11, 1, 10), datetime(2026, 11, 2, 10)


@pytest.fixture()
def store() -> Iterator[Store]:
    s = Store.open(":memory:")
    yield s
    s.close()


def rows(store: Store) -> dict[str, dict[str, object]]:
    return {r["value"]: r for r in store.query("SELECT * FROM indicator").to_pylist()}


def test_reimport_updates_instead_of_duplicating(store: Store, tmp_path: Path) -> None:
    p = tmp_path / "blocklist.txt"
    p.write_text("198.51.100.7\n198.51.100.0/25\n2001:db8::1\n")
    first = import_feed(store, p, fmt="ip-list", options=FeedOptions(confidence=0.4), now=T1)
    assert (first.feed, first.added, first.updated, first.errors) == ("blocklist", 3, 0, 0)
    assert first.kinds == {"ip": 3}
    p.write_text("198.51.100.7\n2001:db8::1\n203.0.113.5\n")  # one dropped, one new
    second = import_feed(store, p, fmt="ip-list", options=FeedOptions(confidence=0.7), now=T2)
    assert (second.added, second.updated) == (1, 2)
    got = rows(store)
    assert len(got) == 4 and store.query("SELECT count(*) AS n FROM indicator").to_pylist() \
        == [{"n": 4}]
    kept = got["198.51.100.7"]
    assert kept["confidence"] == pytest.approx(0.7)  # the newer copy's statement
    assert kept["first_seen"] == T1 and kept["last_seen"] == T2
    assert kept["id"] == indicator_id("blocklist", "ip", "198.51.100.7", "exact")
    assert got["198.51.100.0/25"]["last_seen"] == T1  # no longer listed: kept, not refreshed
    assert got["198.51.100.0/25"]["prefix"] == 25


def test_a_value_listed_twice_is_stored_once(store: Store, tmp_path: Path) -> None:
    p = tmp_path / "dupes.txt"
    p.write_text("198.51.100.7\n198.51.100.7/32\n198.51.100.7\n")
    stats = import_feed(store, p, fmt="ip-list")
    assert (stats.added, stats.duplicates) == (1, 2)


def test_broken_lines_are_located_and_the_rest_imported(store: Store, tmp_path: Path) -> None:
    p = tmp_path / "mixed.txt"
    p.write_text("198.51.100.7\nnot-an-address\n10.0.0.0/33\n203.0.113.9\n")
    stats = import_feed(store, p, fmt="ip-list")
    assert stats.added == 2 and stats.errors == 2
    assert stats.shown[0].startswith(f"{p}:2") and stats.shown[1].startswith(f"{p}:3")
    assert set(rows(store)) == {"198.51.100.7", "203.0.113.9"}


def test_failed_import_keeps_what_is_stored(store: Store, tmp_path: Path) -> None:
    good = tmp_path / "good.txt"
    good.write_text("198.51.100.7\n")
    import_feed(store, good, fmt="ip-list")
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"\x00\x01\x02 nothing a feed reader knows")
    with pytest.raises(InputError, match="give its format"):
        import_feed(store, junk)
    with pytest.raises(ConfigError, match="unknown feed format"):
        import_feed(store, good, fmt="no-such-format")
    assert set(rows(store)) == {"198.51.100.7"}


def test_feeds_are_named_summarised_and_removed(store: Store, tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("198.51.100.7\n")
    (tmp_path / "b.list").write_text("evil.example\n*.bad.example\n")
    import_feed(store, tmp_path / "a.txt", fmt="ip-list")
    import_feed(store, tmp_path / "b.list", fmt="domain-list", name="domains")
    summary = {r["feed"]: r for r in feeds_summary(store).to_pylist()}
    assert summary["a"]["ip"] == 1 and summary["domains"]["domain"] == 2
    assert remove_feed(store, "domains") == 2
    assert set(rows(store)) == {"198.51.100.7"}


@pytest.fixture()
def loopback_server(tmp_path: Path) -> Iterator[str]:
    (tmp_path / "exits.txt").write_text("203.0.113.93\n198.51.100.25\n")

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            return

    def handler(*args: object) -> Quiet:
        return Quiet(*args, directory=str(tmp_path))  # type: ignore[arg-type]

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_fetch_only_downloads_what_is_asked(store: Store, tmp_path: Path,
                                            loopback_server: str) -> None:
    dest = tmp_path / "dl"
    dest.mkdir()
    got = fetch_feed(loopback_server + "/exits.txt", dest)
    stats = import_feed(store, got, fmt="ip-list")
    assert stats.added == 2
    with pytest.raises(InputError, match="cannot fetch"):
        fetch_feed(loopback_server + "/missing.txt", dest)
    with pytest.raises(ConfigError, match="only http"):
        fetch_feed("ftp://127.0.0.1/x", dest)


DATA = Path(__file__).parents[2] / "data" / "intel"


@pytest.mark.parametrize(("name", "fmt", "kinds", "errors", "skipped"), [
    ("stix-bundle.json", "stix", {"ip": 6, "domain": 3, "url": 1}, 1, 4),
    ("misp-event.json", "misp", {"ip": 4, "domain": 3, "url": 1, "ja3": 1}, 1, 4),
    ("tor-consensus.txt", "tor-consensus", {"ip": 13}, 2, 0),
    ("tor-microdesc.txt", "tor-microdesc", {"ip": 10}, 0, 0),
    ("tordnsel-exit-addresses.txt", "tordnsel", {"ip": 6}, 3, 0),
    ("onionoo-details.json", "onionoo", {"ip": 9}, 1, 1),
    ("ip-list.txt", "ip-list", {"ip": 14}, 4, 0),
    ("domain-list.txt", "domain-list", {"domain": 12}, 7, 0),
    ("sslbl-ja3.csv", "fingerprint-csv", {"ja3": 4}, 1, 0),
    ("ja4-list.csv", "fingerprint-csv", {"ja4": 4}, 1, 0),
])
def test_samples_import_with_expected_counts(store: Store, name: str, fmt: str,
                                             kinds: dict[str, int], errors: int,
                                             skipped: int) -> None:
    """The samples written from each format's specification (tests/data/intel/README.md):
    the format is recognised from the content, every indicator stored, each broken record
    reported with its location, deliberate skips (revoked, benign, not to_ids, deleted)
    counted apart; a second import updates every row and adds none."""
    stats = import_feed(store, DATA / name)
    assert (stats.format, stats.kinds, stats.errors, stats.skipped) == (fmt, kinds, errors,
                                                                         skipped), stats.line()
    assert all(line.startswith(str(DATA / name)) for line in stats.shown)
    again = import_feed(store, DATA / name)
    assert (again.added, again.updated) == (0, sum(kinds.values()))
