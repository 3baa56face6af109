"""Suricata EVE reader: every stored event type, the three DNS layouts, bad lines, gzip."""

from __future__ import annotations

import gzip
import shutil
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from hopguard.ingest.base import detect_format
from hopguard.ingest.eve import EveFormat, conn_state
from hopguard.ingest.pipeline import FileResult
from hopguard.store import Store

DATA = Path(__file__).resolve().parents[2] / "data" / "eve"
EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "hq-span-eve.json"


def rows(store: Store, sql: str) -> list[dict[str, Any]]:
    got: list[dict[str, Any]] = store.query(sql).to_pylist()
    return got


def one(store: Store, sql: str) -> dict[str, Any]:
    got = rows(store, sql)
    assert len(got) == 1, got
    return got[0]


def ts(text: str) -> datetime:
    return datetime.fromisoformat(text)


# -- detection ---------------------------------------------------------------------------------

def test_sniff_accepts_eve_and_rejects_others() -> None:
    head = (DATA / "sample.json").read_bytes()[:65536]
    assert EveFormat.sniff(head, Path("x.json"))
    assert detect_format(Path("x.json"), head) is EveFormat
    zeek = b'{"ts":1.0,"uid":"C1","id.orig_h":"10.0.0.1","conn_state":"SF"}\n'
    assert not EveFormat.sniff(zeek, Path("conn.log"))
    assert not EveFormat.sniff(b"#separator \\x09\n#path\tconn\n", Path("conn.log"))
    assert not EveFormat.sniff(b'{"event_type":"flow"}\n', Path("x.json"))
    # a damaged first line does not hide the EVE records after it
    assert EveFormat.sniff(b'{"timestamp": \n' + head, Path("x.json"))
    # a first record longer than the sniffed head
    assert EveFormat.sniff(b'{"timestamp":"2026-01-01T00:00:00Z","event_type":"stats","x":"'
                           + b"a" * 100, Path("x.json"))


# -- the sample: one of each type ----------------------------------------------------------------

@pytest.fixture
def sample(store: Store, ingest: Any) -> FileResult:
    res: FileResult = ingest(DATA / "sample.json")
    assert res.failure is None, res.failure
    assert res.format == "eve"
    return res


def test_sample_counts(sample: FileResult) -> None:
    st = sample.stats
    assert st.errors == 0, st.shown
    assert st.records == 14
    assert st.added == {"flow": 4, "tls": 1, "http": 3, "dns": 1, "alert": 1}
    assert st.skipped == {"eve stats": 1, "eve anomaly": 1, "eve fileinfo": 1}


def test_flow_row(store: Store, sample: FileResult) -> None:
    r = one(store, "SELECT * FROM flow WHERE uid = 'F1111'")
    assert r["ts"] == ts("2026-03-02T10:00:00")  # flow.start, not the log timestamp
    assert r["sensor"] == "sensor-a"  # EVE's host
    assert (r["src_ip"], r["src_port"], r["dst_ip"], r["dst_port"]) == \
        ("192.0.2.10", 50000, "198.51.100.20", 443)
    assert r["proto"] == "tcp"
    assert r["service"] == "tls"
    assert r["duration"] == pytest.approx(2.25)
    assert (r["src_bytes"], r["dst_bytes"], r["src_pkts"], r["dst_pkts"]) == (1500, 9000, 10, 12)
    assert r["state"] == "SF"
    assert r["community_id"] == "1:abcdefabcdefabcdefabcdefabc="
    assert r["record"] == 1


def test_flow_states_and_defaults(store: Store, sample: FileResult) -> None:
    got = {r["uid"]: r for r in rows(store, "SELECT * FROM flow")}
    assert got["F7777"]["state"] == "SF"  # UDP with a reply
    assert got["F7777"]["service"] == "dns"
    assert got["F7777"]["sensor"] == "test"  # no host field: the sink's sensor
    assert got["F8888"]["state"] == "S0"
    assert got["F8888"]["service"] is None  # app_proto "failed"
    assert got["F9999"]["state"] == "REJ"


@pytest.mark.parametrize(("proto", "flow", "tcp", "pkts_tc", "want"), [
    ("tcp", {"state": "new"}, {"tcp_flags_ts": "02", "tcp_flags_tc": "00"}, 0, "S0"),
    ("tcp", {"state": "closed"}, {"tcp_flags_ts": "02", "tcp_flags_tc": "14"}, 1, "REJ"),
    ("tcp", {"state": "closed"}, {"tcp_flags_ts": "06", "tcp_flags_tc": "00"}, 0, "RSTOS0"),
    ("tcp", {"state": "closed"}, {"tcp_flags_ts": "03", "tcp_flags_tc": "00"}, 0, "SH"),
    ("tcp", {"state": "closed"}, {"tcp_flags_ts": "1b", "tcp_flags_tc": "1b"}, 9, "SF"),
    ("tcp", {"state": "closed"}, {"tcp_flags_ts": "1e", "tcp_flags_tc": "1b"}, 9, "RSTO"),
    ("tcp", {"state": "closed"}, {"tcp_flags_ts": "1a", "tcp_flags_tc": "1e"}, 9, "RSTR"),
    ("tcp", {"state": "established"}, {"tcp_flags_ts": "1b", "tcp_flags_tc": "1a"}, 9, "S2"),
    ("tcp", {"state": "established"}, {"tcp_flags_ts": "1a", "tcp_flags_tc": "1b"}, 9, "S3"),
    ("tcp", {"state": "established"}, {"tcp_flags_ts": "1a", "tcp_flags_tc": "1a"}, 9, "S1"),
    ("tcp", {"state": "established"}, {"tcp_flags_ts": "18", "tcp_flags_tc": "18"}, 9, "OTH"),
    ("tcp", {"state": "closed"}, {"tcp_flags_ts": "00", "tcp_flags_tc": "16"}, 1, "RSTRH"),
    ("tcp", {"state": "closed"}, {"tcp_flags_ts": "00", "tcp_flags_tc": "13"}, 1, "SHR"),
    ("tcp", {"state": "bypassed"}, {"tcp_flags_ts": "1a", "tcp_flags_tc": "1a"}, 9, "S1"),
    # without per-direction flags, flow.state decides
    ("tcp", {"state": "new"}, None, 0, "S0"),
    ("tcp", {"state": "established"}, None, 3, "S1"),
    ("tcp", {"state": "closed"}, None, 3, "SF"),
    ("tcp", {"state": "bypassed"}, None, 3, "OTH"),
    ("tcp", {"state": ["junk"]}, {"tcp_flags_ts": "zz"}, 3, "OTH"),
    ("udp", {"state": "new"}, None, 0, "S0"),
    ("udp", {"state": "established"}, None, 2, "SF"),
    ("udp", {"state": "established"}, None, None, "OTH"),
    ("icmp", {"state": "established"}, None, 1, "OTH"),
])
def test_conn_state(proto: str, flow: dict[str, Any], tcp: dict[str, Any] | None,
                    pkts_tc: int | None, want: str) -> None:
    assert conn_state(proto, flow, tcp, pkts_tc) == want


def test_tls_row(store: Store, sample: FileResult) -> None:
    r = one(store, "SELECT * FROM tls")
    assert r["uid"] == "F1111"  # joins the flow row
    assert r["sensor"] == "sensor-a"
    assert r["ts"] == ts("2026-03-02T10:00:00.100000")
    assert r["version"] == "TLS 1.2"
    assert r["sni"] == "www.example.org"
    assert r["ja3"] == "0123456789abcdef0123456789abcdef"
    assert r["ja3s"] == "fedcba9876543210fedcba9876543210"
    assert r["ja4"] == "t12d0101h2_000000000000_000000000000"
    assert r["ja4s"] is None  # Suricata does not log it
    assert r["alpn"] == ["h2"]  # the server's choice
    assert r["cert_subject"] == "CN=www.example.org"
    assert r["cert_issuer"] == "C=US, O=Example CA, CN=Example Issuing CA"
    # SHA-1 fingerprint kept with its label; sha256 only from the logged certificate bytes
    assert r["cert_fuids"] == ["sha1:aa:bb:cc:dd:ee:ff:00:11:22:33:44:55:66:77:88:99:aa:bb:cc:dd"]
    assert r["cert_sha256"] == \
        "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9"  # sha256(hello world)
    assert r["cert_not_before"] == ts("2026-01-01T00:00:00")
    assert r["cert_not_after"] == ts("2027-01-01T00:00:00")
    assert r["resumed"] is None


def test_tls_alpn_falls_back_to_client_offer(store: Store, ingest: Any, tmp_path: Path) -> None:
    p = tmp_path / "eve.json"
    p.write_text('{"timestamp":"2026-01-01T00:00:00Z","event_type":"tls","flow_id":1,'
                 '"tls":{"client_alpns":["h2","http/1.1"],"ja4s":"t130200_1301_234ea6891581",'
                 '"session_resumed":true}}\n')
    assert ingest(p).stats.errors == 0
    r = one(store, "SELECT alpn, ja4s, resumed, cert_fuids, cert_sha256 FROM tls")
    assert r == {"alpn": ["h2", "http/1.1"], "ja4s": "t130200_1301_234ea6891581",
                 "resumed": True, "cert_fuids": None, "cert_sha256": None}


def test_http_rows(store: Store, sample: FileResult) -> None:
    got = {r["uid"]: r for r in rows(store, "SELECT * FROM http")}
    connect = got["F2222"]
    assert connect["method"] == "CONNECT"
    assert connect["uri"] == "www.example.org:443"
    assert connect["host"] == "www.example.org"
    assert connect["version"] == "HTTP/1.1"
    assert connect["status"] == 200
    assert connect["trans_depth"] == 1
    assert connect["is_proxy_request"] is True
    assert connect["via"] == "1.1 edge"
    assert connect["x_forwarded_for"] == "192.0.2.99"
    assert connect["proxied"] == ["VIA -> 1.1 edge", "X-FORWARDED-FOR -> 192.0.2.99"]
    assert connect["user_agent"] == "curl/8.0"

    absolute = got["F3333"]
    assert absolute["is_proxy_request"] is True
    assert absolute["status"] == 404  # old Suricata's text status
    assert absolute["trans_depth"] == 3
    assert absolute["referrer"] == "http://plain.example.org/"
    assert absolute["content_type"] == "text/html"
    assert absolute["response_body_len"] == 512
    assert absolute["via"] is None and absolute["proxied"] is None

    direct = got["F4444"]
    assert direct["is_proxy_request"] is False
    assert direct["x_forwarded_for"] == "203.0.113.9"  # the xff option's extra-data field


def test_alert_row_oriented_to_flow(store: Store, sample: FileResult) -> None:
    r = one(store, "SELECT * FROM alert")
    assert r["uid"] == "F1111"
    # the alerting packet went server -> client; the row follows the flow's orientation
    assert (r["src_ip"], r["src_port"], r["dst_ip"], r["dst_port"]) == \
        ("192.0.2.10", 50000, "198.51.100.20", 443)
    assert (r["gid"], r["signature_id"], r["rev"]) == (1, 9000001, 3)
    assert r["signature"] == "TEST suspicious certificate"
    assert r["category"] == "Potentially Bad Traffic"
    assert r["severity"] == 2
    assert r["action"] == "allowed"
    assert r["app_proto"] == "tls"
    assert r["proto"] == "tcp"
    assert r["sensor"] == "sensor-a"


def test_alert_without_flow_endpoints_uses_direction(store: Store, ingest: Any,
                                                     tmp_path: Path) -> None:
    p = tmp_path / "eve.json"
    p.write_text('{"timestamp":"2026-01-01T00:00:00Z","event_type":"alert","flow_id":5,'
                 '"src_ip":"10.0.0.2","src_port":80,"dest_ip":"10.0.0.1","dest_port":5000,'
                 '"proto":"TCP","direction":"to_client","alert":{"signature_id":7}}\n')
    assert ingest(p).stats.errors == 0
    r = one(store, "SELECT src_ip, src_port, dst_ip, dst_port FROM alert")
    assert r == {"src_ip": "10.0.0.1", "src_port": 5000, "dst_ip": "10.0.0.2", "dst_port": 80}


# -- DNS, three layouts ------------------------------------------------------------------------

def test_dns_v2_sample(store: Store, sample: FileResult) -> None:
    r = one(store, "SELECT * FROM dns")
    assert r["uid"] == "F5555"
    assert r["ts"] == ts("2026-03-02T10:02:00")  # the question's time
    assert r["record"] == 6  # the question's line
    assert (r["src_ip"], r["dst_ip"], r["dst_port"]) == ("192.0.2.10", "192.0.2.2", 53)
    assert (r["query"], r["qtype"], r["trans_id"], r["proto"]) == \
        ("www.example.org", "A", 4660, "udp")
    assert r["rcode"] == "NOERROR"
    assert r["answers"] == ["edge.example.net", "198.51.100.20"]  # detailed: with TTLs
    assert r["ttls"] == [300.0, 60.0]
    assert r["rtt"] == pytest.approx(0.02)


def test_dns_v1(store: Store, ingest: Any) -> None:
    res = ingest(DATA / "dns-v1.json")
    assert res.stats.errors == 0
    assert res.stats.added == {"dns": 3}
    got = {r["query"]: r for r in rows(store, "SELECT * FROM dns")}
    mx = got["mail.example.com"]
    assert mx["answers"] == ["mx1.example.com", "mx2.example.com"]  # one event per record
    assert mx["ttls"] == [3600.0, 3600.0]
    assert mx["rcode"] == "NOERROR" and mx["qtype"] == "MX"
    assert mx["rtt"] == pytest.approx(0.03)
    nx = got["nope.example.com"]
    assert nx["rcode"] == "NXDOMAIN" and nx["answers"] is None
    lost = got["lost.example.com"]  # never answered
    assert lost["rcode"] is None and lost["rtt"] is None and lost["qtype"] == "AAAA"


def test_dns_v2_grouped_and_orphan_response(store: Store, ingest: Any) -> None:
    res = ingest(DATA / "dns-v2.json")
    assert res.stats.errors == 0
    got = {r["query"]: r for r in rows(store, "SELECT * FROM dns")}
    g = got["grouped.example.com"]
    assert g["answers"] == ["10.1.1.1", "10.1.1.2"]
    assert g["ttls"] == [None, None]  # grouped carries no TTLs
    assert g["rtt"] == pytest.approx(0.005)
    orphan = got["orphan.example.com"]  # response whose question was not logged
    assert orphan["rcode"] == "NXDOMAIN" and orphan["qtype"] == "TXT"
    assert orphan["rtt"] is None
    # logged in the response's direction; stored oriented to the client
    assert (orphan["src_ip"], orphan["src_port"], orphan["dst_ip"], orphan["dst_port"]) == \
        ("10.0.0.6", 34001, "10.0.0.1", 53)


def test_dns_v3(store: Store, ingest: Any) -> None:
    res = ingest(DATA / "dns-v3.json")
    assert res.stats.errors == 0
    r = one(store, "SELECT * FROM dns")
    assert (r["query"], r["qtype"], r["trans_id"]) == ("v3.example.com", "AAAA", 20)
    assert r["answers"] == ["2001:db8::1"] and r["ttls"] == [120.0]
    assert r["rcode"] == "NOERROR"
    assert r["rtt"] == pytest.approx(0.0125)


def test_dns_pending_is_bounded(store: Store, ingest: Any, tmp_path: Path,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    import hopguard.ingest.eve as eve

    monkeypatch.setattr(eve, "MAX_PENDING_DNS", 3)
    p = tmp_path / "eve.json"
    p.write_text("".join(
        f'{{"timestamp":"2026-01-01T00:00:0{i}Z","event_type":"dns","flow_id":{i},'
        f'"dns":{{"type":"query","id":{i},"rrname":"q{i}.example","rrtype":"A"}}}}\n'
        for i in range(8)))
    res = ingest(p)
    assert res.stats.added == {"dns": 8}
    assert [r["query"] for r in rows(store, "SELECT query FROM dns ORDER BY record")] == \
        [f"q{i}.example" for i in range(8)]


# -- damage --------------------------------------------------------------------------------------

def test_bad_lines_are_located_and_reading_goes_on(store: Store, ingest: Any) -> None:
    res = ingest(DATA / "bad.json", max_shown=50)
    st = res.stats
    by_line = {e.location.line: e.message for e in st.shown}
    assert set(by_line) == {2, 3, 4, 5, 7, 8, 9, 10, 11}
    assert by_line[2].startswith("invalid JSON")
    assert by_line[3] == "expected a JSON object"
    assert by_line[4] == "missing event_type"
    assert "alert.signature_id" in by_line[5]
    assert "bad timestamp" in by_line[7]
    assert "flow.start" in by_line[8]
    assert "src_port" in by_line[9] and "dest_port" in by_line[9] and "tls.sni" in by_line[9]
    assert "dns.type" in by_line[10]
    assert by_line[11].startswith("invalid JSON")
    assert all(e.location.path.endswith("bad.json") for e in st.shown)
    # the good alert and the tls row with bad fields set to NULL are kept
    assert st.added == {"alert": 1, "tls": 1}
    r = one(store, "SELECT src_port, dst_port, sni, version FROM tls")
    assert r == {"src_port": None, "dst_port": None, "sni": None, "version": "TLS 1.3"}
    assert st.records == 10  # the blank line is not a record


def test_odd_numbers_are_reported_not_raised(store: Store, ingest: Any, tmp_path: Path) -> None:
    p = tmp_path / "eve.json"
    p.write_text('{"timestamp":"2026-01-01T00:00:00Z","event_type":"alert","flow_id":1,'
                 '"src_port":"\u00b2","dest_port":true,"alert":{"signature_id":1,'
                 '"severity":2.5,"gid":99999999999999999999999}}\n', encoding="utf-8")
    res = ingest(p)
    assert res.stats.added == {"alert": 1}
    [err] = res.stats.shown
    assert err.location.line == 1
    for name in ("src_port", "dest_port", "alert.severity", "alert.gid"):
        assert name in err.message
    r = one(store, "SELECT src_port, dst_port, gid, severity FROM alert")
    assert r == {"src_port": None, "dst_port": None, "gid": None, "severity": None}


def test_nothing_usable_is_a_failure(ingest: Any, tmp_path: Path) -> None:
    p = tmp_path / "eve.json"
    p.write_text('{"timestamp":"2026-01-01T00:00:00Z","event_type":"stats","stats":{}}\n')
    res = ingest(p)
    assert res.failure is not None
    assert res.stats.skipped == {"eve stats": 1}


def test_skip_kinds_are_bounded(ingest: Any, tmp_path: Path) -> None:
    p = tmp_path / "eve.json"
    lines = [f'{{"timestamp":"2026-01-01T00:00:00Z","event_type":"kind{i}"}}' for i in range(100)]
    lines.append('{"timestamp":"2026-01-01T00:00:00Z","event_type":"alert","alert":'
                 '{"signature_id":1}}')
    p.write_text("\n".join(lines) + "\n")
    res = ingest(p)
    assert len(res.stats.skipped) <= 65
    assert sum(res.stats.skipped.values()) == 100


# -- gzip ----------------------------------------------------------------------------------------

def test_gzip_same_rows(store: Store, ingest: Any, tmp_path: Path) -> None:
    gz = tmp_path / "eve.json.gz"
    with (DATA / "sample.json").open("rb") as src, gzip.open(gz, "wb") as dst:
        shutil.copyfileobj(src, dst)
    res = ingest(gz)
    assert res.format == "eve" and res.failure is None
    assert res.stats.errors == 0
    assert res.stats.added == {"flow": 4, "tls": 1, "http": 3, "dns": 1, "alert": 1}


def test_truncated_gzip_keeps_complete_lines(store: Store, ingest: Any, tmp_path: Path) -> None:
    gz = tmp_path / "eve.json.gz"
    gz.write_bytes(gzip.compress((DATA / "sample.json").read_bytes() * 40))
    cut = tmp_path / "cut.json.gz"
    cut.write_bytes(gz.read_bytes()[: gz.stat().st_size * 2 // 3])
    res = ingest(cut)
    assert res.failure is None
    assert res.stats.errors >= 1
    assert any("gzip stream" in e.message for e in res.stats.shown)
    assert res.stats.rows > 0


# -- the demo file -------------------------------------------------------------------------------

def test_example_tells_the_story(store: Store, ingest: Any) -> None:
    res = ingest(EXAMPLE, sensor="default")
    assert res.failure is None and res.stats.errors == 0, res.stats.shown
    assert set(res.stats.added) == {"flow", "tls", "http", "dns", "alert"}
    assert rows(store, "SELECT DISTINCT sensor FROM flow") == [{"sensor": "hq-span"}]
    # the socat relay: inbound leg to 10.10.2.7:8443, outbound leg ~20 ms later to the C2
    legs = rows(store, """
        SELECT a.uid AS a, b.uid AS b, epoch_ms(b.ts) - epoch_ms(a.ts) AS lag_ms,
               a.src_bytes AS a_up, b.src_bytes AS b_up
        FROM flow a JOIN flow b
          ON a.dst_ip = '10.10.2.7' AND a.dst_port = 8443 AND a.src_ip = '10.10.1.42'
         AND b.src_ip = '10.10.2.7' AND b.dst_ip = '203.0.113.66' AND b.dst_port = 443
         AND b.ts BETWEEN a.ts AND a.ts + INTERVAL 1 SECOND""")
    assert legs, "no relay leg pairs"
    for leg in legs:
        assert 5 <= leg["lag_ms"] <= 100
        assert abs(leg["a_up"] - leg["b_up"]) <= 0.2 * leg["a_up"]
    assert rows(store, "SELECT count(*) AS n FROM flow WHERE dst_port = 1080")[0]["n"] >= 2
    assert rows(store, "SELECT count(*) AS n FROM tls WHERE dst_ip = '203.0.113.66' "
                       "AND sni IS NOT NULL")[0]["n"] >= 1
    assert rows(store, "SELECT count(*) AS n FROM http WHERE method = 'CONNECT' "
                       "AND dst_ip = '10.10.0.5' AND dst_port = 3128 AND is_proxy_request"
                )[0]["n"] >= 2
    assert rows(store, "SELECT count(*) AS n FROM dns WHERE answers IS NOT NULL")[0]["n"] >= 2
    assert 1 <= rows(store, "SELECT count(*) AS n FROM alert")[0]["n"] <= 2
    # every app-layer row joins a flow row of the same connection
    orphans = rows(store, """
        SELECT t, uid FROM (SELECT 'tls' AS t, uid FROM tls UNION ALL
                            SELECT 'http', uid FROM http UNION ALL
                            SELECT 'alert', uid FROM alert UNION ALL
                            SELECT 'dns', uid FROM dns)
        WHERE uid NOT IN (SELECT uid FROM flow)""")
    assert orphans == []
