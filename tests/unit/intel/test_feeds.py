"""Plain lists, fingerprint CSVs, sniffing, options and dispatch (hopguard.intel.feeds)."""

from __future__ import annotations

import gzip
import ipaddress
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from hopguard.errors import ConfigError
from hopguard.intel import feeds
from hopguard.intel.feeds import (
    BATCH_ROWS,
    FORMATS,
    FeedOptions,
    category_from_words,
    domain_list_line,
    ip_list_line,
    parse_time,
    read_feed,
    sniff,
    url_indicators,
)
from tests.conftest import DATA
from tests.unit.intel import reading
from tests.unit.intel.reading import Read

INTEL = DATA / "intel"


def read(path: Path, fmt: str, **options: Any) -> Read:
    out = reading.read(path, fmt, **options)
    assert all(0 < n <= BATCH_ROWS for n in out.batches)
    for loc, _ in out.errors:
        assert loc.path == str(path)
    return out


def write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


# -- ip-list -------------------------------------------------------------------------------

def test_ip_list_sample_counts_values_and_broken_lines() -> None:
    path = INTEL / "ip-list.txt"
    r = read(path, "ip-list")
    assert len(r.rows) == 14
    assert r.lines() == [15, 16, 17, 18]
    assert "not an IP address or network: '192.0.2.256'" in r.errors[0][1]
    assert sorted(r.values()) == sorted([
        "192.0.2.1", "192.0.2.2", "198.51.100.0/24", "198.51.100.0/25", "203.0.113.5",
        "2001:db8::1", "2001:db8::2", "2001:db8:aa::/48", "203.0.113.10", "203.0.113.11",
        "192.0.2.3", "203.0.113.12", "203.0.113.128/25",
        str(ipaddress.ip_address("::ffff:192.0.2.9"))])
    net = r.by_value("198.51.100.0/25")  # written as 198.51.100.77/25: host bits cleared
    assert net["prefix"] == 25 and net["record"] == 7
    assert net["label"] == "host bits set: stored as the network"
    assert r.by_value("203.0.113.5")["prefix"] == 32  # "/32" stored as the bare address
    assert r.by_value("2001:db8::2")["prefix"] == 128
    assert r.by_value("2001:db8:aa::/48")["label"] == "v6 network"
    assert r.by_value("203.0.113.10")["label"] == "brute force ssh"
    assert r.by_value("203.0.113.11")["label"] == "tab separated label"
    assert r.by_value("203.0.113.12")["label"] == "quoted"
    row = r.by_value("192.0.2.2")
    assert row == {"kind": "ip", "value": "192.0.2.2", "prefix": 32, "match": "exact",
                   "category": "ioc", "label": "scanner seen 2025-02-27", "confidence": 0.5,
                   "source": str(path), "first_seen": None, "last_seen": None,
                   "expires": None, "detail": "", "record": 5}


def test_ip_list_options_apply_to_fast_and_slow_rows(tmp_path: Path) -> None:
    path = write(tmp_path, "l.txt", "192.0.2.1 # a\n2001:db8::5 # b\n")
    when = datetime(2025, 6, 1, 12, 0)
    r = read(path, "ip-list", category="c2", confidence=0.8, source="unit feed", label="L",
             expires=when)
    assert len(r.rows) == 2  # the v4 line takes the fast path, the v6 line the Python one
    for row in r.rows:
        assert (row["category"], row["confidence"], row["source"], row["label"],
                row["expires"]) == ("c2", 0.8, "unit feed", "L", when)


def test_ip_list_header_only_on_the_first_data_line(tmp_path: Path) -> None:
    path = write(tmp_path, "h.csv", "# exported\nip,comment\n192.0.2.1,scanner\nip,again\n")
    r = read(path, "ip-list")
    assert r.values() == ["192.0.2.1"]
    assert r.lines() == [4]


def test_ip_list_bom_crlf_and_missing_final_newline(tmp_path: Path) -> None:
    path = tmp_path / "w.txt"
    path.write_bytes(b"\xef\xbb\xbf192.0.2.1\r\n\r\n2001:db8::7\r\n198.51.100.0/24")
    r = read(path, "ip-list")
    assert [(x["value"], x["record"]) for x in sorted(r.rows, key=lambda x: x["record"])] == [
        ("192.0.2.1", 1), ("2001:db8::7", 3), ("198.51.100.0/24", 4)]
    assert r.errors == []


def test_gzip_list_reads_like_the_plain_one(tmp_path: Path) -> None:
    plain = INTEL / "ip-list.txt"
    gz = tmp_path / "ip-list.txt.gz"
    gz.write_bytes(gzip.compress(plain.read_bytes()))
    a, b = read(plain, "ip-list"), read(gz, "ip-list")
    assert [x["value"] for x in a.rows] == [x["value"] for x in b.rows]
    assert a.lines() == b.lines()
    assert sniff(gz, gz.read_bytes()[:4096]) == "ip-list"


def test_large_list_batches_and_line_numbers_across_blocks(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(feeds, "BLOCK_BYTES", 4096)  # many blocks: numbering must carry over
    lines = [f"10.{i // 65536 % 256}.{i // 256 % 256}.{i % 256}" for i in range(250_000)]
    lines[1234] = "bad line"
    lines[200_000] = "10.0.0.0/99"
    path = write(tmp_path, "big.txt", "\n".join(lines) + "\n")
    r = read(path, "ip-list")
    assert len(r.rows) == 249_998
    assert max(r.batches) <= BATCH_ROWS
    assert r.lines() == [1235, 200_001]
    records = sorted(x["record"] for x in r.rows)
    assert records[:3] == [1, 2, 3] and records[-1] == 250_000
    i = 200_001
    assert r.by_value(f"10.{i // 65536 % 256}.{i // 256 % 256}.{i % 256}")["record"] == i + 1


def test_overlong_line_is_one_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(feeds, "BLOCK_BYTES", 64)
    monkeypatch.setattr(feeds, "MAX_LINE_BYTES", 100)
    path = write(tmp_path, "long.txt", "192.0.2.1\n" + "9" * 1000 + "\n192.0.2.2\n")
    r = read(path, "ip-list")
    assert sorted((x["value"], x["record"]) for x in r.rows) == [("192.0.2.1", 1),
                                                                ("192.0.2.2", 3)]
    assert r.lines() == [2]
    assert "longer than 100 bytes" in r.errors[0][1]


def test_overlong_line_in_a_line_reader(tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(feeds, "MAX_LINE_BYTES", 50)
    path = write(tmp_path, "fp.csv", "ab" * 16 + ",one\n" + "x" * 500 + "\n" + "cd" * 16 + ",two\n")
    r = read(path, "fingerprint-csv")
    assert [(x["label"], x["record"]) for x in r.rows] == [("one", 1), ("two", 3)]
    assert r.lines() == [2]


def test_binary_file_is_one_error(tmp_path: Path) -> None:
    path = tmp_path / "bin.txt"
    path.write_bytes(b"\x00\x01\x02192.0.2.1\n" * 100)
    for fmt in ("ip-list", "domain-list"):
        r = read(path, fmt)
        assert r.rows == [] and r.lines() == [1]


def test_missing_file_is_one_error(tmp_path: Path) -> None:
    for fmt in FORMATS:
        r = read(tmp_path / "absent", fmt)
        assert r.rows == [] and len(r.errors) == 1, fmt


# -- domain-list ---------------------------------------------------------------------------

DOMAIN_EXPECTED = {
    "evil.example": ("exact", 5, ""),
    "mixed-case.example.com": ("exact", 6, ""),
    "wild.example": ("subdomains", 7, ""),
    "suffix.example": ("suffix", 8, ""),
    "ads.example.net": ("suffix", 9, ""),
    "tracker.example.org": ("suffix", 10, ""),
    "hosts-blocked.example": ("exact", 11, ""),
    "loopback-blocked.example": ("exact", 12, "from a hosts file"),
    "two.example": ("exact", 13, ""),
    "three.example": ("exact", 13, ""),
    "xn--bcher-kva.example": ("exact", 16, ""),
    "c2.example.com": ("exact", 17, "cobalt strike team server"),
}


def test_domain_list_sample() -> None:
    r = read(INTEL / "domain-list.txt", "domain-list")
    got = {x["value"]: (x["match"], x["record"], x["label"]) for x in r.rows}
    assert got == DOMAIN_EXPECTED
    assert len(r.rows) == 12  # localhost & co. from the hosts preamble give nothing
    assert r.lines() == [18, 19, 20, 21, 22, 23, 24]
    messages = dict((loc.line, msg) for loc, msg in r.errors)
    assert messages[18].startswith("a URL or path")
    assert messages[21].startswith("an adblock exception rule")
    assert messages[22].startswith("an address, not a domain name")
    assert {x["kind"] for x in r.rows} == {"domain"}
    assert {x["prefix"] for x in r.rows} == {None}


def test_domain_match_option_changes_plain_entries_only() -> None:
    r = read(INTEL / "domain-list.txt", "domain-list", domain_match="suffix")
    got = {x["value"]: x["match"] for x in r.rows}
    assert got["evil.example"] == "suffix"
    assert got["hosts-blocked.example"] == "suffix"
    assert got["wild.example"] == "subdomains"


def test_domain_hosts_line_with_a_bad_name_keeps_the_good_ones(tmp_path: Path) -> None:
    path = write(tmp_path, "hosts", "0.0.0.0 good.example bad..example other.example\n")
    r = read(path, "domain-list")
    assert sorted(r.values()) == ["good.example", "other.example"]
    assert r.lines() == [1]


@pytest.mark.parametrize(("line", "expected"), [
    ("Example.COM.", (["example.com"], "exact")),
    ("*.example.com", (["example.com"], "subdomains")),
    (".example.com", (["example.com"], "suffix")),
    ("||example.com^$third-party,important", (["example.com"], "suffix")),
    ("::1 localhost", ([], None)),
    ("fe80::1%lo0 a.example b.example", (["a.example", "b.example"], "exact")),
])
def test_domain_list_line_forms(line: str, expected: tuple[list[str], str | None]) -> None:
    got = domain_list_line(line)
    assert got is not None
    entries, _ = got
    assert [v for v, _ in entries] == expected[0]
    assert {m for _, m in entries} <= {expected[1]}


@pytest.mark.parametrize("line", ["||example.com/ads^", "@@||example.com^", "a.example b.example",
                                  "https://example.com/", "||*.example.com^", "ex ample"])
def test_domain_list_line_rejects(line: str) -> None:
    with pytest.raises(ValueError):
        domain_list_line(line)


@pytest.mark.parametrize("line", ["", "   ", "# c", "! c", "; c", "[Adblock Plus 2.0]"])
def test_domain_list_line_skips(line: str) -> None:
    assert domain_list_line(line) is None


def test_ip_list_line_direct() -> None:
    assert ip_list_line("  10.1.2.3/8 ; why ") == ("10.0.0.0/8", 8, "why")
    assert ip_list_line("fe80::1%eth0/64") == ("fe80::/64", 64, "")  # the zone is dropped
    assert ip_list_line("# nothing") is None
    with pytest.raises(ValueError, match="not an IP address or network"):
        ip_list_line("10.1.2")


# -- the fast path is only an optimisation --------------------------------------------------

_block_rows = reading.block_rows


@pytest.mark.parametrize(("kind", "name"), [("ip", "ip-list.txt"),
                                            ("domain", "domain-list.txt")])
def test_fast_path_equals_reference_on_samples(kind: str, name: str) -> None:
    text = (INTEL / name).read_text()
    assert _block_rows(kind, text, True) == _block_rows(kind, text, False)


@pytest.mark.parametrize("text", [
    "2001:DB8:0:0:0:0:0:1", "0:0:0:0:0:0:0:0", "1:0:0:2:0:0:0:3", "1:0:0:2:0:0:3:4",
    "0:0:1:0:0:0:0:0", "1:0:2:0:3:0:4:0", "::ffff:c000:201", "::c000:201", "::1", "fe80::1%lo"])
def test_ipv6_c_library_lane_equals_ipaddress(text: str) -> None:
    assert feeds._ip_text(text) == ipaddress_value(text)


def ipaddress_value(text: str) -> tuple[str, int]:
    addr = ipaddress.ip_address(text.split("%")[0])
    return str(addr), addr.max_prefixlen


# -- fingerprint CSV -----------------------------------------------------------------------

def test_sslbl_ja3_csv() -> None:
    r = read(INTEL / "sslbl-ja3.csv", "fingerprint-csv")
    assert [x["value"] for x in r.rows] == [
        "f956b2bd4b9ba522cfbb736a38390caa", "abacf0d3e805a91c163a6471d1d7472c",
        "195ef9ea09e88b74b4a67f4cd5dec89f", "b41b261acb31e0d5d5ece6bb55596c80"]
    assert {x["kind"] for x in r.rows} == {"ja3"}
    assert r.lines() == [13]
    first = r.rows[0]
    assert (first["label"], first["first_seen"], first["last_seen"], first["record"]) == (
        "Dridex", datetime(2024, 7, 14, 18, 8, 15), datetime(2025, 2, 27, 20, 42, 54), 10)
    assert [x["category"] for x in r.rows] == ["ioc", "ioc", "ioc", "tor_relay"]


def test_ja4_csv_with_header_columns() -> None:
    r = read(INTEL / "ja4-list.csv", "fingerprint-csv")
    assert [(x["value"], x["category"], x["confidence"], x["record"]) for x in r.rows] == [
        ("t13d1516h2_961a253b8266_8c1d119a2697", "c2", 0.9, 2),
        ("t13d1713h2_6129380fb89f_63c02d097be8", "vpn", 0.5, 3),
        ("q13d0310h3_9044fb49d843_af1df52548b9", "tunnel", 0.6, 4),
        ("t12i0609h1_efd84ec30c92_2e0723d5d0e1", "ioc", 0.7, 6)]
    assert {x["kind"] for x in r.rows} == {"ja4"}
    assert r.lines() == [5]


def test_ja3_csv_without_header() -> None:
    r = read(INTEL / "ja3-plain.csv", "fingerprint-csv")
    assert [(x["label"], x["category"], x["first_seen"]) for x in r.rows] == [
        ("Sample proxy client", "proxy", datetime(2025, 1, 5)),
        ("Sample scanner", "ioc", None), ("", "ioc", None)]
    assert r.errors == []


def test_ja3s_column_name_sets_the_kind(tmp_path: Path) -> None:
    path = write(tmp_path, "s.csv", "ja3s_md5\tserver\n" + "AB" * 16 + "\tsample server\n")
    r = read(path, "fingerprint-csv")
    assert [(x["kind"], x["value"], x["label"]) for x in r.rows] == [
        ("ja3s", "ab" * 16, "sample server")]


# -- sniffing ------------------------------------------------------------------------------

@pytest.mark.parametrize(("name", "fmt"), [
    ("tor-consensus.txt", "tor-consensus"), ("tor-microdesc.txt", "tor-microdesc"),
    ("tordnsel-exit-addresses.txt", "tordnsel"), ("onionoo-details.json", "onionoo"),
    ("ip-list.txt", "ip-list"), ("domain-list.txt", "domain-list"),
    ("sslbl-ja3.csv", "fingerprint-csv"), ("ja4-list.csv", "fingerprint-csv"),
    ("ja3-plain.csv", "fingerprint-csv"), ("stix-bundle.json", "stix"),
    ("misp-event.json", "misp")])
def test_sniff_recognises_every_sample(name: str, fmt: str) -> None:
    path = INTEL / name
    assert sniff(path, path.read_bytes()[:65536]) == fmt
    assert sniff(path, path.read_bytes()[:1000]) == fmt  # a head cut inside a line


@pytest.mark.parametrize("head", [
    b"", b"# only comments\n# here\n", b"Dear reader,\nthis is a letter.\n",
    b'{"hello": "world"}', b"\x00\x01\x02\x03", b"\x1f\x8bnot really gzip",
    b"192.0.2.1\nexample.com\n192.0.2.2\nexample.org\n"])
def test_sniff_says_none_when_unsure(head: bytes) -> None:
    assert sniff(Path("x"), head) is None


def test_sniff_hosts_file_is_a_domain_list() -> None:
    head = b"127.0.0.1 localhost\n::1 localhost\n0.0.0.0 ads.example\n0.0.0.0 t.example\n"
    assert sniff(Path("hosts"), head) == "domain-list"


# -- options, dispatch, helpers ------------------------------------------------------------

def test_every_format_is_described() -> None:
    assert set(feeds._DESCRIPTIONS) == set(FORMATS)
    assert all(0 < len(feeds.describe(f)) <= 100 for f in FORMATS)


def test_unknown_format_and_bad_options_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="unknown feed format"):
        read_feed(Path("x"), "csv", FeedOptions(), lambda loc, msg: None)
    with pytest.raises(ConfigError):
        FeedOptions(category="evil")
    with pytest.raises(ConfigError):
        FeedOptions(confidence=1.5)
    with pytest.raises(ConfigError):
        FeedOptions(domain_match="prefix")


@pytest.mark.parametrize(("words", "category"), [
    (["tor"], "tor_relay"), (["Tor exit node"], "tor_exit"), (["tor-exit"], "tor_exit"),
    (["kill-chain:Command and Control"], "c2"), (["botnet_cc"], "c2"), (["C&C"], "c2"),
    (["NordVPN"], "vpn"), (["open proxy"], "proxy"), (["SOCKS5"], "proxy"),
    (["DNS tunneling"], "tunnel"), (["cdn"], "cdn"), (["tlp:green", "phishing"], None),
    (["TrickBot"], None), (["monitor"], None)])
def test_category_from_words(words: list[str], category: str | None) -> None:
    assert category_from_words(words) == category


def test_url_indicators() -> None:
    assert url_indicators("HTTPS://Login.Example.NET/Path?q=A") == (
        "https://login.example.net/Path?q=A", ("domain", "login.example.net", None))
    assert url_indicators("http://[2001:DB8::1]:8080/x") == (
        "http://[2001:db8::1]:8080/x", ("ip", "2001:db8::1", 128))
    assert url_indicators("dl.example/payload") == (
        "dl.example/payload", ("domain", "dl.example", None))
    for bad in ("", "http://", "http://a b/", "http://bad..example/"):
        with pytest.raises(ValueError):
            url_indicators(bad)


def test_parse_time() -> None:
    assert parse_time("2025-03-01 12:00:00") == datetime(2025, 3, 1, 12)
    assert parse_time("2025-03-01T12:00:00.5Z") == datetime(2025, 3, 1, 12, 0, 0, 500000)
    assert parse_time("2025-03-01T14:00:00+02:00") == datetime(2025, 3, 1, 12)
    assert parse_time("1740787200") == datetime(2025, 3, 1)
    assert parse_time(1740787200) == datetime(2025, 3, 1)
    with pytest.raises(ValueError):
        parse_time("yesterday")


def test_empty_file_gives_nothing(tmp_path: Path) -> None:
    path = write(tmp_path, "empty.txt", "")
    for fmt in ("ip-list", "domain-list", "fingerprint-csv"):
        r = read(path, fmt)
        assert r.rows == [] and r.errors == []
