"""The shipped seed lists (rules/intel/*.tsv) and their reader, hopguard.intel.seeds.

The expected counts are computed from the files' text by a second, naive route (split lines on
tabs), so a parser that drops or invents rows fails here; the per-file row counts are pinned
too, so deleting rows by accident fails as well (adding rows means updating ROWS below).
"""

from __future__ import annotations

import ipaddress
import re
from collections import Counter
from importlib import resources

import pytest

from hopguard.analytics import fronting, tunnels
from hopguard.config import TunnelSettings
from hopguard.intel import seeds
from hopguard.intel.model import BATCH_SCHEMA, CATEGORIES, domain_value, hash_value
from hopguard.store import Store
from tests.unit.analytics.util import findings, put, run

# Data rows per file (pinned; see the module docstring).
ROWS = {"tunnel_services.tsv": 60, "cdn_domains.tsv": 43, "vpn_proxy_services.tsv": 39,
        "tor.tsv": 56, "fingerprints.tsv": 16}


def raw_rows(name: str) -> list[tuple[int, list[str]]]:
    """(line, fields) of every data line, by the naive route: not a comment, not blank, not
    the first such line (the header)."""
    text = resources.files("hopguard").joinpath("rules", "intel", name).read_text("utf-8")
    out = [(n, line.split("\t")) for n, line in enumerate(text.splitlines(), start=1)
           if line.strip() and not line.startswith("#")]
    assert out[0][1] == list(seeds.COLUMNS[name]), f"{name}: header"
    return out[1:]


def column(name: str, col: str) -> list[str]:
    i = seeds.COLUMNS[name].index(col)
    return [fields[i] for _, fields in raw_rows(name)]


# -- the files -----------------------------------------------------------------------------------

def test_every_shipped_file_parses_cleanly() -> None:
    assert seeds.check_seeds() == []
    for name in seeds.FILES:
        rows, errors = seeds.parse_seed(name, seeds.read_text(name))
        assert errors == []
        assert len(rows) == len(raw_rows(name)) == ROWS[name], name
        assert [r.line for r in rows] == [n for n, _ in raw_rows(name)]


def test_every_row_is_sourced_and_complete() -> None:
    for name in seeds.FILES:
        width = len(seeds.COLUMNS[name])
        for line, fields in raw_rows(name):
            assert len(fields) == width, f"{name}:{line}"
            assert all(f.strip() for f in fields), f"{name}:{line} has an empty field"
            assert fields[-1].strip() == fields[-1] and len(fields[-1]) > 10, \
                f"{name}:{line} source {fields[-1]!r}"


def test_comments_explain_every_column() -> None:
    for name in seeds.FILES:
        text = seeds.read_text(name)
        head = text[:text.index("\n" + "\t".join(seeds.COLUMNS[name]) + "\n")]
        assert all(line.startswith("#") for line in head.splitlines())
        for col in seeds.COLUMNS[name]:
            assert re.search(rf"^#\s+{col}\s", head, re.M), f"{name}: column {col} unexplained"


def test_no_duplicate_keys() -> None:
    for name, cols in (("tunnel_services.tsv", ("suffix",)), ("cdn_domains.tsv", ("suffix",)),
                       ("vpn_proxy_services.tsv", ("suffix", "match")),
                       ("tor.tsv", ("kind", "value")),
                       ("fingerprints.tsv", ("kind", "fingerprint"))):
        keys = list(zip(*(column(name, c) for c in cols), strict=True))
        assert [k for k, n in Counter(keys).items() if n > 1] == [], name


def test_values_are_canonical() -> None:
    for name in ("tunnel_services.tsv", "cdn_domains.tsv", "vpn_proxy_services.tsv"):
        for value in column(name, "suffix"):
            assert domain_value(value) == (value, "exact"), value
    for fp, kind in zip(column("fingerprints.tsv", "fingerprint"),
                        column("fingerprints.tsv", "kind"), strict=True):
        assert hash_value(kind, fp) == fp
    for kind, value in zip(column("tor.tsv", "kind"), column("tor.tsv", "value"), strict=True):
        if kind == "directory_authority":
            assert str(ipaddress.ip_address(value)) == value


def test_carried_over_entries() -> None:
    """Every entry of the lists the detectors shipped before the move is still there."""
    svc = {t.suffix: (t.service, t.kind) for t in seeds.tunnel_services()}
    assert svc["connect.ngrok-agent.com"] == ("ngrok", "agent")
    assert svc["tunnel.in.ngrok.com"] == ("ngrok", "agent")
    assert svc["ngrok-free.app"] == ("ngrok", "edge")
    assert svc["cftunnel.com"] == ("cloudflared", "agent")
    assert svc["trycloudflare.com"] == ("cloudflared", "edge")
    assert svc["loca.lt"] == ("localtunnel", "edge")
    assert svc["share.zrok.io"] == ("zrok", "edge")
    assert svc["ts.net"] == ("tailscale-funnel", "edge")
    cdn = {c.suffix: c.provider for c in seeds.cdn_domains()}
    assert cdn["cloudfront.net"] == "amazon-cloudfront"
    assert cdn["azurefd.net"] == "azure-front-door"
    assert cdn["global.ssl.fastly.net"] == "fastly"
    assert cdn["herokuapp.com"] == "heroku"


# -- the detectors' accessors ---------------------------------------------------------------------

def test_detector_suffix_lists() -> None:
    services = tunnels.shipped_services()
    assert [s.suffix for s in services] == [
        s for s, m in zip(column("tunnel_services.tsv", "suffix"),
                          column("tunnel_services.tsv", "match"), strict=True) if m == "suffix"]
    assert {s.kind for s in services} == {"agent", "edge"}
    ngrok = next(s for s in services if s.suffix == "connect.ngrok-agent.com")
    assert (ngrok.label, ngrok.kind) == ("ngrok", "agent")
    cdns = tunnels.shipped_cdns()
    assert [(c.suffix, c.label) for c in cdns] == list(zip(
        column("cdn_domains.tsv", "suffix"), column("cdn_domains.tsv", "provider"), strict=True))
    assert fronting.shipped_cdns is tunnels.shipped_cdns


def test_fingerprint_priors_keep_the_old_ones_and_skip_server_fingerprints() -> None:
    priors = seeds.fingerprint_priors()
    old = {
        "t13d190900_9dc949149365_97f8aa674fd9":
            "Go crypto/tls default client (chisel, frp, ligolo-ng, gost, cloudflared, Sliver ...)",
        "t13i190900_9dc949149365_e7c285222651": "ngrok agent 3.8 / Go TLS library (also Evilginx)",
        "t13d191000_9dc949149365_e7c285222651": "ngrok agent 3.8 / Go TLS library (also Evilginx)",
        "e7d705a3286e19ea42f587b344ee6865": "old Tor client JA3 (outdated)",
        "eb88d0b3e1961a0562f006e5ce2a0b87": "Cobalt Strike 'Malleable C2 M1' JA3",
    }
    assert {k: priors[k] for k in old} == old
    client = [fp for fp, kind in zip(column("fingerprints.tsv", "fingerprint"),
                                     column("fingerprints.tsv", "kind"), strict=True)
              if kind != "ja3s"]
    assert sorted(priors) == sorted(client) and len(priors) == 13
    assert "ae4edc6faf64d08308082ad26be60767" not in priors  # a JA3S: not a ClientHello prior
    assert all(0.1 <= p.confidence <= 0.3 for p in seeds.fingerprints())


def test_tor_patterns_and_ports() -> None:
    pat = seeds.tor_patterns()
    # the literals tunnel.tor used before they moved into tor.tsv
    assert pat.issuer == r"^/?CN=www\.[a-z2-7]{8,20}\.com$"
    assert pat.subject == r"^/?CN=www\.[a-z2-7]{8,20}\.net$"
    assert pat.sni == r"^www\.[a-z2-7]{4,25}\.com$"
    assert re.fullmatch(pat.issuer, "CN=www.xkgk7fdx362yyxib.com")
    assert re.fullmatch(pat.subject, "CN=www.c3trnj5s5i.net")
    assert not re.fullmatch(pat.subject, "CN=www.c3trnj5s5i.com")
    for sni in ("www.ct7ctrgb6cr7.com", "www.gfu7hbxpfp.com", "www.jmts2id.com"):  # tor.pcap
        assert re.fullmatch(pat.sni, sni)
    assert not re.fullmatch(pat.sni, "www.example1.com")  # 1 is not base32
    assert tunnels.full_match_sql(pat.sni) == r"www\.[a-z2-7]{4,25}\.com"
    # tunnel.tor_ports defaults to the ports tor.tsv lists
    assert seeds.tor_ports() == (9001, 9030, 9050, 9051, 9150)
    assert list(seeds.tor_ports()) == sorted(TunnelSettings().tor_ports)


# -- the detectors read the seeds, and the config options still add to them --------------------

C1, C2, EDGE = "10.1.0.5", "10.1.0.6", "198.51.100.90"


def tls(uid: str, ts: float, src: str, dst: str = EDGE, **kw: object) -> dict[str, object]:
    return {"uid": uid, "ts": ts, "src_ip": src, "src_port": 40000 + int(ts), "dst_ip": dst,
            "dst_port": 443, "established": True, **kw}


def test_tunnel_service_reads_an_added_seed_row(store: Store) -> None:
    """tunnelto's control host (agent) sits under its edge suffix: the longest suffix wins."""
    put(store, "tls", [tls("A", 0, C1, sni="wormhole.tunnelto.dev"),
                       tls("B", 1, C2, sni="demo.tunnelto.dev")])
    run(store, "tunnel.service")
    got = {f["entities"]["client"]: f for f in findings(store, "tunnel.service")}
    assert {c: f["entities"]["service"] for c, f in got.items()} == {C1: "tunnelto",
                                                                     C2: "tunnelto"}
    assert got[C1]["confidence"] == 0.75 and got[C2]["confidence"] == 0.45  # agent / edge


def test_fingerprint_option_adds_to_the_seed_priors(store: Store) -> None:
    custom = "0123456789abcdef0123456789abcdef"
    softether = "t13d880900_fcb5b95cb75a_b0d3b4ac2a14"  # a seed row added by the move
    put(store, "tls", [tls("A", 0, C1, sni="a.example", ja3=custom.upper()),
                       tls("B", 1, C2, sni="b.example", ja4=softether)])
    run(store, "tunnel.fingerprint")
    assert [f["entities"]["client"] for f in findings(store, "tunnel.fingerprint")] == [C2]
    run(store, "tunnel.fingerprint", overrides=(f"tunnel.fingerprints=['{custom}=lab tool']",))
    got = {f["entities"]["client"]: f for f in findings(store, "tunnel.fingerprint")}
    assert got[C1]["entities"]["fingerprint"] == custom and "lab tool" in got[C1]["explanation"]
    assert "SoftEther VPN client" in got[C2]["explanation"]


def test_cdn_option_adds_to_the_seed_suffixes(store: Store) -> None:
    put(store, "tls", [tls("A", 0, C2, sni="edge1.cdn.example"),  # names EDGE a CDN address
                       tls("B", 1, C1, sni="")])
    run(store, "fronting.empty_sni")
    assert findings(store, "fronting.empty_sni") == []
    run(store, "fronting.empty_sni", overrides=("fronting.cdn_domains=['cdn.example']",))
    (f,) = findings(store, "fronting.empty_sni")
    assert (f["entities"]["client"], f["entities"]["edge"]) == (C1, EDGE)
    put(store, "tls", [tls("C", 2, C2, dst="198.51.100.91", sni="x.b-cdn.net"),
                       tls("D", 3, C1, dst="198.51.100.91", sni=None)])
    run(store, "fronting.empty_sni")
    got = {f["entities"]["edge"]: f for f in findings(store, "fronting.empty_sni")}
    assert got["198.51.100.91"]["entities"]["provider"] == "bunny"  # a carried-over seed row


# -- seed_indicators() ---------------------------------------------------------------------------

def expected_categories() -> Counter[str]:
    """Per-category indicator counts computed from the raw lines (the naive route)."""
    want: Counter[str] = Counter()
    want["tunnel"] += len(raw_rows("tunnel_services.tsv"))
    want["cdn"] += len(raw_rows("cdn_domains.tsv"))
    want.update(column("vpn_proxy_services.tsv", "category"))
    want["tor_relay"] += sum(k in ("directory_authority", "domain")
                             for k in column("tor.tsv", "kind"))
    want.update(column("fingerprints.tsv", "category"))
    return want


def test_seed_indicator_counts_per_category() -> None:
    tbl = seeds.seed_indicators()
    assert tbl.schema.equals(BATCH_SCHEMA)
    got = Counter(tbl.column("category").to_pylist())
    assert got == expected_categories()
    assert got == {"tunnel": 64, "tor_relay": 48, "cdn": 43, "vpn": 29, "proxy": 13, "c2": 9}
    assert tbl.num_rows == sum(ROWS.values()) - 8  # tor.tsv's 5 ports and 3 patterns
    assert set(got) <= set(CATEGORIES)


def test_seed_indicator_rows() -> None:
    rows = seeds.seed_indicators().to_pylist()
    files = {f"seed:{n}" for n in seeds.FILES}
    ids = Counter((r["kind"], r["value"], r["match"]) for r in rows)
    assert [k for k, n in ids.items() if n > 1] == []  # the store keys rows by these
    for r in rows:
        assert r["detail"] in files and r["source"] and r["label"], r
        assert r["record"] > 0 and 0 < r["confidence"] <= 1
        assert r["first_seen"] is r["last_seen"] is r["expires"] is None
        if r["kind"] == "ip":
            assert r["prefix"] == ipaddress.ip_address(r["value"]).max_prefixlen
            assert r["category"] == "tor_relay" and r["detail"] == "seed:tor.tsv"
        else:
            assert r["prefix"] is None
        if r["kind"] == "domain":
            assert domain_value(r["value"])[0] == r["value"] and r["match"] in ("suffix", "exact")
    by_value = {(r["kind"], r["value"]): r for r in rows}
    ngrok = by_value[("domain", "connect.ngrok-agent.com")]
    assert (ngrok["category"], ngrok["label"], ngrok["match"], ngrok["confidence"]) == (
        "tunnel", "ngrok", "suffix", 0.6)
    loca = by_value[("domain", "loca.lt")]
    assert loca["confidence"] == 0.4 and loca["record"] == raw_line("tunnel_services.tsv",
                                                                      "loca.lt")
    assert by_value[("domain", "nordvpn.com")]["confidence"] == 0.3  # also the website
    assert by_value[("domain", "mask.icloud.com")]["match"] == "exact"
    assert by_value[("domain", "brd.superproxy.io")]["category"] == "proxy"
    moria = by_value[("ip", "128.31.0.39")]
    assert (moria["prefix"], moria["confidence"]) == (32, 0.9)
    assert "moria1" in moria["label"] and "auth_dirs.inc" in moria["source"]
    assert by_value[("ip", "2001:67c:289c::9")]["prefix"] == 128
    onion = by_value[("domain", "onion")]
    assert (onion["match"], onion["category"]) == ("suffix", "tor_relay")
    assert by_value[("domain", "check.torproject.org")]["match"] == "exact"
    cs = by_value[("ja3s", "ae4edc6faf64d08308082ad26be60767")]
    assert (cs["category"], cs["match"], cs["confidence"]) == ("c2", "exact", 0.1)
    assert by_value[("ja4", "t13d880900_fcb5b95cb75a_b0d3b4ac2a14")]["category"] == "vpn"


def raw_line(name: str, first_field: str) -> int:
    return next(n for n, fields in raw_rows(name) if fields[0] == first_field)


# -- errors are located and do not stop the file ------------------------------------------------

TUNNEL_HEAD = "# a comment\n\nsuffix\tservice\tkind\tmatch\tsource\n"


def test_bad_rows_are_located_and_skipped() -> None:
    text = TUNNEL_HEAD + "\n".join([
        "good.example\tsvc\tagent\tsuffix\tsomewhere",           # line 4
        "Bad.Example\tsvc\tagent\tsuffix\tsomewhere",            # 5: not canonical
        "x.example\tsvc\tmiddle\tsuffix\tsomewhere",             # 6: unknown kind
        "y.example\tsvc\tedge\tsuffix",                          # 7: a field short
        "z.example\tsvc\tedge\tsuffix\t ",                       # 8: no source
        "good.example\tother\tedge\tsuffix\tsomewhere",          # 9: duplicate of 4
        ".dot.example\tsvc\tedge\tsuffix\tsomewhere",            # 10: leading dot
        "1.2.3.4\tsvc\tedge\tsuffix\tsomewhere",                 # 11: an address
        "last.example\tsvc\tedge\texact\tsomewhere",             # 12: good
    ]) + "\n"
    rows, errors = seeds.parse_seed("tunnel_services.tsv", text)
    assert [(r.suffix, r.line) for r in rows] == [("good.example", 4), ("last.example", 12)]
    where = [str(e.location) for e in errors]
    assert where == [f"rules/intel/tunnel_services.tsv:{n}" for n in (5, 6, 7, 8, 9, 10, 11)]
    messages = [e.message for e in errors]
    assert "write 'bad.example'" in messages[0]
    assert "kind 'middle'" in messages[1]
    assert "4 tab-separated fields" in messages[2]
    assert "empty source" in messages[3]
    assert "duplicate of line 4" in messages[4]
    assert "bare name" in messages[5]
    assert "address" in messages[6]
    assert "rules/intel/tunnel_services.tsv:5" in str(errors[0])


def test_wrong_header_is_one_error() -> None:
    rows, errors = seeds.parse_seed("cdn_domains.tsv", "# c\nsuffix\tsource\nx.example\ty\n")
    assert rows == [] and len(errors) == 1
    assert str(errors[0].location) == "rules/intel/cdn_domains.tsv:2"
    rows, errors = seeds.parse_seed("cdn_domains.tsv", "# only comments\n")
    assert rows == [] and "no header" in errors[0].message


@pytest.mark.parametrize(("name", "line", "message"), [
    ("fingerprints.tsv", "t13d190900_9dc949149365_97f8aa674fd9\tja4\tgo\ttunnel\t0.9\ts",
     "outside 0.1-0.3"),
    ("fingerprints.tsv", "ABCDEF\tja3\tx\tc2\t0.2\ts", "not a JA3"),
    ("fingerprints.tsv", "e7d705a3286e19ea42f587b344ee6865\tja3\tx\tevil\t0.2\ts",
     "category 'evil'"),
    ("vpn_proxy_services.tsv", "a.example\tA\tvpn\tsuffix\thigh\ts", "not a number"),
    ("vpn_proxy_services.tsv", "a.example\tA\tbridge\tsuffix\t0.5\ts", "category 'bridge'"),
    ("tor.tsv", "port\t90001\tp\ts", "not a TCP port"),
    ("tor.tsv", "directory_authority\t10.0.0.0/8\td\ts", "one address"),
    ("tor.tsv", "directory_authority\t2001:67C:289C:0::9\td\ts", "write '2001:67c:289c::9'"),
    ("tor.tsv", "domain\t*.onion\td\ts", "write '.name'"),
    ("tor.tsv", "sni_pattern\twww\\.[a-z]+\\.com\td\ts", "anchored"),
    ("tor.tsv", "sni_pattern\t^www\\.[a-z+$\td\ts", "not a regular expression"),
    ("tor.tsv", "cert_pattern\tserial:^1$\td\ts", "issuer:REGEX"),
])
def test_each_normaliser_refuses_with_a_location(name: str, line: str, message: str) -> None:
    text = "\t".join(seeds.COLUMNS[name]) + "\n" + line + "\n"
    rows, errors = seeds.parse_seed(name, text)
    assert rows == [] and len(errors) == 1
    assert message in errors[0].message
    assert str(errors[0].location) == f"rules/intel/{name}:2"


def test_tor_domain_rows_say_how_they_match() -> None:
    text = "kind\tvalue\tmeaning\tsource\ndomain\t.onion.to\tg\ts\ndomain\tcheck.example\tc\ts\n"
    rows, errors = seeds.parse_seed("tor.tsv", text)
    assert errors == []
    assert [(r.value, r.match) for r in rows if isinstance(r, seeds.TorFact)] == [
        ("onion.to", "suffix"), ("check.example", "exact")]


def test_old_data_directory_is_gone() -> None:
    assert not resources.files("hopguard").joinpath("analytics", "data").is_dir()
    with pytest.raises(ValueError, match="no seed list"):
        seeds.read_text("tunnel_services.txt")
