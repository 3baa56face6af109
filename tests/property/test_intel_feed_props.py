"""Feed readers on arbitrary, truncated and mutated input: canonical rows or located errors,
never an exception; and the vectorised list path agrees with the Python reference."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hopguard.errors import SourceLocation
from hopguard.intel.feeds import FORMATS, FeedOptions, read_feed, sniff
from hopguard.intel.model import (
    BATCH_SCHEMA,
    CATEGORIES,
    MATCHES,
    domain_value,
    hash_value,
    ip_value,
)
from hopguard.intel.stix import _pattern_values
from tests.conftest import DATA
from tests.unit.intel.reading import block_rows

SAMPLES = {
    "tor-consensus": "tor-consensus.txt", "tor-microdesc": "tor-microdesc.txt",
    "tordnsel": "tordnsel-exit-addresses.txt", "onionoo": "onionoo-details.json",
    "ip-list": "ip-list.txt", "domain-list": "domain-list.txt",
    "fingerprint-csv": "sslbl-ja3.csv", "stix": "stix-bundle.json", "misp": "misp-event.json"}
DATA_OF = {fmt: (DATA / "intel" / name).read_bytes() for fmt, name in SAMPLES.items()}
FAST = settings(max_examples=40, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def check_rows(rows: list[dict[str, Any]]) -> None:
    """Every row is canonical: normalising its value again changes nothing."""
    for r in rows:
        assert r["category"] in CATEGORIES and r["match"] in MATCHES
        assert 0.0 <= r["confidence"] <= 1.0
        if r["kind"] == "ip":
            assert ip_value(r["value"]) == (r["value"], r["prefix"])
        elif r["kind"] == "domain":
            assert domain_value(r["value"])[0] == r["value"]
        elif r["kind"] in ("ja3", "ja3s", "ja4"):
            assert hash_value(r["kind"], r["value"]) == r["value"]
        else:
            assert r["kind"] == "url" and r["value"]


def read_bytes(data: bytes, fmt: str) -> list[tuple[SourceLocation, str]]:
    errors: list[tuple[SourceLocation, str]] = []
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "feed"
        path.write_bytes(data)
        rows: list[dict[str, Any]] = []
        for table in read_feed(path, fmt, FeedOptions(),
                               lambda loc, msg: errors.append((loc, msg)),
                               note=lambda loc, msg: None):
            assert table.schema == BATCH_SCHEMA
            rows.extend(table.to_pylist())
        check_rows(rows)
        for loc, msg in errors:
            assert loc.path == str(path) and msg
    return errors


@FAST
@given(fmt=st.sampled_from(FORMATS), data=st.binary(max_size=600))
def test_arbitrary_bytes(fmt: str, data: bytes) -> None:
    read_bytes(data, fmt)
    found = sniff(Path("x"), data)
    assert found is None or found in FORMATS


@FAST
@given(fmt=st.sampled_from(FORMATS), text=st.text(max_size=400))
def test_arbitrary_text(fmt: str, text: str) -> None:
    read_bytes(text.encode("utf-8", "surrogatepass"), fmt)


@FAST
@given(fmt=st.sampled_from(FORMATS), cut=st.integers(min_value=0, max_value=20_000))
def test_truncated_samples(fmt: str, cut: int) -> None:
    data = DATA_OF[fmt]
    read_bytes(data[: cut % (len(data) + 1)], fmt)


@FAST
@given(fmt=st.sampled_from(FORMATS),
       edits=st.lists(st.tuples(st.integers(min_value=0), st.binary(min_size=0, max_size=4)),
                      min_size=1, max_size=8))
def test_mutated_samples(fmt: str, edits: list[tuple[int, bytes]]) -> None:
    data = bytearray(DATA_OF[fmt])
    for pos, new in edits:
        at = pos % (len(data) + 1)
        data[at: at + len(new)] = new
    read_bytes(bytes(data), fmt)


# Lines built from the pieces list entries are made of, so that many are valid and many are
# nearly valid: the fast path must accept exactly what it can and agree on the rest.
_IP_PIECES = st.sampled_from([
    "192.0.2.1", "10.1.2.3", "255.255.255.255", "0.0.0.0", "01.2.3.4", "1.2.3", "256.1.1.1",
    "2001:db8::1", "2001:DB8::", "::", "/", "/0", "/8", "/24", "/31", "/32", "/33", "/128",
    "0:0:", "1:0:0:", "0:", ":0", "00", "ABCD:", "abcd", "::ffff:", "fe80::1%eth0", ":",
    " ", "\t", "#", ";", ",", "# note", "label", '"', "\r", "x", ".", "1"])
_DOMAIN_PIECES = st.sampled_from([
    "example.com", "EXAMPLE.org", "a-b.example", "_dmarc.example", "xn--bcher-kva.example",
    "bücher.example", "*.", ".", "||", "^", "$third-party", "0.0.0.0 ", "127.0.0.1\t",
    "::1 ", "localhost", "1.2.3.4", "123", "-", "..", " ", "\t", " # c", "#", "!", "[x]",
    "/path", "http://", "@@", "a" * 63, "b" * 64, "\r", "ip6-localhost"])


def _lines(pieces: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    line = st.lists(pieces, min_size=0, max_size=5).map("".join)
    return st.lists(line, min_size=1, max_size=30).map("\n".join)


def _block_rows(kind: str, text: str, fast: bool) -> tuple[list[Any], list[str]]:
    rows, errors = block_rows(kind, text, fast)
    check_rows(rows)
    return rows, errors


@settings(max_examples=150, deadline=None)
@given(text=_lines(_IP_PIECES))
def test_ip_fast_path_equals_reference(text: str) -> None:
    assert _block_rows("ip", text, True) == _block_rows("ip", text, False)


@settings(max_examples=150, deadline=None)
@given(text=_lines(_DOMAIN_PIECES))
def test_domain_fast_path_equals_reference(text: str) -> None:
    assert _block_rows("domain", text, True) == _block_rows("domain", text, False)


_PATTERN_PIECES = st.sampled_from([
    "[", "]", "ipv4-addr", "ipv6-addr", "domain-name", "url", "file", ":value", ":name", " ",
    "=", "!=", " IN ", "'", "192.0.2.1", "2001:db8::1", "a.example", "http://a.example/",
    "\\", "\\'", "(", ")", ",", " OR ", " AND ", "/24"])


@settings(max_examples=300, deadline=None)
@given(pattern=st.one_of(
    st.lists(_PATTERN_PIECES, max_size=14).map("".join),
    st.builds(lambda t, a, b, v: f"[{t}:value{a}={b}'{v}']",
              st.sampled_from(["ipv4-addr", "ipv6-addr", "domain-name", "url"]),
              st.sampled_from(["", " ", "  "]), st.sampled_from(["", " ", "\t"]),
              st.lists(st.sampled_from([*"ab.:/\\'19%", "192.0.2.1", "example.com",
                                        "http://", "2001:db8::"]), max_size=6).map("".join))))
def test_stix_simple_pattern_shortcut_equals_the_grammar(pattern: str) -> None:
    def run(grammar: bool) -> object:
        try:
            return _pattern_values(pattern, grammar=grammar)
        except ValueError:
            return ValueError
    assert run(False) == run(True)
