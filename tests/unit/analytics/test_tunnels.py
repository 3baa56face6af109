"""tunnel.* detectors on rows in a real in-memory store, run the way the CLI runs them."""

from __future__ import annotations

from hopguard.store import Store
from tests.unit.analytics.util import findings, put, run

C1, C2, EXT, INT = "10.1.0.5", "10.1.0.6", "198.51.100.20", "10.1.9.9"


def tls(uid: str, ts: float, src: str, dst: str, port: int, **kw: object) -> dict[str, object]:
    return {"uid": uid, "ts": ts, "src_ip": src, "src_port": 40000, "dst_ip": dst,
            "dst_port": port, "established": True, **kw}


# -- tunnel.unusual_port -----------------------------------------------------------------------

def test_ssh_on_443_grouped_per_server_with_clients(store: Store) -> None:
    put(store, "ssh", [
        {"uid": "S1", "ts": 0, "src_ip": C1, "src_port": 1, "dst_ip": EXT, "dst_port": 443,
         "client": "SSH-2.0-OpenSSH_9.6", "server": "SSH-2.0-OpenSSH_9.2"},
        {"uid": "S2", "ts": 10, "src_ip": C2, "src_port": 2, "dst_ip": EXT, "dst_port": 443,
         "client": "SSH-2.0-OpenSSH_9.6", "server": "SSH-2.0-OpenSSH_9.2"},
        {"uid": "S3", "ts": 20, "src_ip": C1, "src_port": 3, "dst_ip": EXT, "dst_port": 22},
        {"uid": "S4", "ts": 30, "src_ip": None, "src_port": None, "dst_ip": None,
         "dst_port": None, "client": None},  # odd row: ignored, no crash
    ])
    run(store, "tunnel.unusual_port")
    got = findings(store, "tunnel.unusual_port")
    assert len(got) == 1
    f = got[0]
    assert f["entities"] == {"server": EXT, "port": 443, "protocol": "ssh", "clients": [C1, C2]}
    assert f["severity"] == "medium" and f["confidence"] == 0.7
    assert f["technique"] == "T1571"  # SSH hiding on a web port
    assert {e["uid"] for e in f["evidence"]} == {"S1", "S2"}
    assert "2 connection(s) from 2 client(s)" in f["explanation"]
    kinds = {a["kind"] for a in f["mitigation"]["actions"]}
    assert {"ips", "gateway"} <= kinds


def test_tls_on_ssh_port_and_quic_ignored(store: Store) -> None:
    put(store, "tls", [
        tls("T1", 0, C1, EXT, 22, sni="x.example.com"),
        tls("T2", 1, C1, INT, 8444, sni="mgmt.corp"),  # internal odd port: everyday
        tls("T3", 2, C1, EXT, 4433, sni="quic.example"),  # a QUIC handshake (UDP flow)
        tls("T4", 3, C1, EXT, 443, sni="www.example.com"),
    ])
    put(store, "flow", [{"uid": "T3", "ts": 2, "src_ip": C1, "dst_ip": EXT, "dst_port": 4433,
                         "proto": "udp", "service": "quic"}])
    run(store, "tunnel.unusual_port")
    got = findings(store, "tunnel.unusual_port")
    assert [(f["entities"]["port"], f["entities"]["protocol"], f["severity"]) for f in got] == \
        [(22, "tls", "medium")]


def test_tool_artifacts_raise_confidence(store: Store) -> None:
    put(store, "ssh", [{"uid": "S1", "ts": 0, "src_ip": C1, "dst_ip": EXT, "dst_port": 8080,
                        "client": "SSH-chisel-v3-client", "server": "SSH-chisel-v3-server"}])
    put(store, "tls", [tls("T1", 5, C1, EXT, 11601, cert_subject="CN=ligolo")])
    run(store, "tunnel.unusual_port")
    got = {f["entities"]["protocol"]: f for f in findings(store, "tunnel.unusual_port")}
    assert got["ssh"]["severity"] == "high" and got["ssh"]["confidence"] == 0.95
    assert "chisel" in got["ssh"]["explanation"]
    # TLS on 11601: 0.2 base + 0.2 ligolo-ng port + 0.25 ligolo certificate
    assert got["tls"]["confidence"] == 0.65 and got["tls"]["severity"] == "medium"
    assert "ligolo-ng agent port" in got["tls"]["explanation"]


def test_busy_service_is_info(store: Store) -> None:
    put(store, "ssh", [{"uid": f"S{i}", "ts": i, "src_ip": f"10.2.0.{i}", "dst_ip": INT,
                        "dst_port": 2022} for i in range(1, 4)])
    run(store, "tunnel.unusual_port", overrides=("tunnel.busy_clients=3",))
    (f,) = findings(store, "tunnel.unusual_port")
    assert f["severity"] == "info" and "tunnel.busy_clients 3" in f["explanation"]


# -- tunnel.service ----------------------------------------------------------------------------

def test_ngrok_agent_and_cloudflare_edge(store: Store) -> None:
    put(store, "tls", [
        tls("T1", 0, C1, EXT, 443, sni="Connect.Ngrok-Agent.com."),
        tls("T2", 60, C1, EXT, 443, sni="connect.ngrok-agent.com"),
        tls("T3", 5, C2, EXT, 443, sni="notngrok.io"),  # not the suffix: no match
        tls("T4", 6, C2, EXT, 443, sni="ngrok.io.evil.example"),
        tls("T5", 7, C2, EXT, 443, sni=None),
    ])
    put(store, "dns", [{"uid": "D1", "ts": 3, "src_ip": C2, "dst_ip": "10.0.0.2",
                        "dst_port": 53, "query": "fancy-words.trycloudflare.com"},
                       {"uid": "D2", "ts": 4, "src_ip": C2, "query": None}])
    run(store, "tunnel.service")
    got = {(f["entities"]["client"], f["entities"]["service"]): f
           for f in findings(store, "tunnel.service")}
    assert set(got) == {(C1, "ngrok"), (C2, "cloudflared")}
    ngrok = got[(C1, "ngrok")]
    assert ngrok["severity"] == "medium" and ngrok["confidence"] == 0.75
    assert {e["uid"] for e in ngrok["evidence"]} == {"T1", "T2"}
    assert "2 record(s) (2 TLS SNI, 0 DNS, 0 HTTP Host)" in ngrok["explanation"]
    assert any("ngrok-agent.com" in a["text"] and a["kind"] == "ips"
               for a in ngrok["mitigation"]["actions"])
    edge = got[(C2, "cloudflared")]
    assert edge["severity"] == "low" and edge["confidence"] == 0.35
    assert "DNS lookups only" in edge["explanation"]


def test_configured_service_domain(store: Store) -> None:
    put(store, "http", [{"uid": "H1", "ts": 0, "src_ip": C1, "dst_ip": EXT, "dst_port": 80,
                         "host": "a.relay.example:8080", "method": "GET"}])
    run(store, "tunnel.service")
    assert findings(store, "tunnel.service") == []
    run(store, "tunnel.service", overrides=("tunnel.service_domains=['relay.example']",))
    (f,) = findings(store, "tunnel.service")
    assert f["entities"] == {"client": C1, "service": "relay.example"}


# -- tunnel.tor --------------------------------------------------------------------------------

TOR_CERT = {"cert_issuer": "CN=www.xkgk7fdx362yyxib.com",
            "cert_subject": "CN=www.g6ghvisevf3ibuu5.net"}


def test_tor_by_certificate_and_sni(store: Store) -> None:
    put(store, "tls", [
        tls("T1", 0, C1, EXT, 9001, sni="www.ct7ctrgb6cr7.com", **TOR_CERT),
        tls("T2", 9, C1, EXT, 9001, sni="www.gfu7hbxpfp.com", **TOR_CERT),
        # an ordinary site: SNI of the same shape but looked up in DNS, real CA
        tls("T3", 1, C2, "203.0.113.5", 443, sni="www.example.com",
            cert_issuer="CN=R11,O=Let's Encrypt,C=US", cert_subject="CN=www.example.com"),
        tls("T4", 2, C2, "203.0.113.6", 443, sni=None, cert_issuer=None, cert_subject=None),
    ])
    put(store, "dns", [{"uid": "D1", "ts": 0, "src_ip": C2, "query": "www.example.com"}])
    run(store, "tunnel.tor")
    (f,) = findings(store, "tunnel.tor")
    assert f["entities"] == {"client": C1, "relay": EXT, "in_port": 9001}
    # cert 0.6 + SNI 0.15 + digits 0.05 + two random SNIs 0.1 + Tor port 0.1
    assert f["confidence"] == 0.97  # capped at TOR_CAP
    assert f["severity"] == "high" and f["technique"] == "T1090.003"
    assert {e["uid"] for e in f["evidence"]} == {"T1", "T2"}
    assert "Tor port 9001" in f["explanation"]


def test_sni_pattern_alone_is_weak(store: Store) -> None:
    # one TLS 1.3 handshake (no certificate) with a Tor-shaped SNI on 443: 0.15 + 0.05 < 0.3
    put(store, "tls", [tls("T1", 0, C1, EXT, 443, sni="www.q4cyamnc6mtokjur.com")])
    run(store, "tunnel.tor")
    assert findings(store, "tunnel.tor") == []
    # the same to two more relays and a second name to the first: reported, low
    put(store, "tls", [tls("T2", 5, C1, EXT, 443, sni="www.jmts2id.com"),
                       tls("T3", 6, C1, "198.51.100.21", 443, sni="www.t3i3ru.com"),
                       tls("T4", 7, C1, "198.51.100.22", 443, sni="www.e6r5p57kbaf.com")])
    run(store, "tunnel.tor")
    got = {f["entities"]["relay"]: f for f in findings(store, "tunnel.tor")}
    assert got[EXT]["confidence"] == 0.4 and got[EXT]["severity"] == "low"
    assert got["198.51.100.21"]["confidence"] == 0.3


def test_onion_lookup(store: Store) -> None:
    put(store, "dns", [{"uid": "D1", "ts": 0, "src_ip": C1, "dst_ip": "10.0.0.2",
                        "query": "duckduckgogg42xjoc72x3sjasowoarfbgcmvfimaftt6twagswzczad.onion"}])
    run(store, "tunnel.tor")
    (f,) = findings(store, "tunnel.tor")
    assert f["entities"]["client"] == C1 and f["severity"] == "medium"
    assert "1 DNS question(s) for .onion" in f["explanation"]


# -- tunnel.fingerprint ------------------------------------------------------------------------

GO_JA4 = "t13d190900_9dc949149365_97f8aa674fd9"


def test_fingerprint_is_a_prior(store: Store) -> None:
    put(store, "tls", [tls("T1", 0, C1, EXT, 443, sni="a.example", ja4=GO_JA4),
                       tls("T2", 1, C2, EXT, 443, sni="b.example", ja4=GO_JA4.upper()),
                       tls("T3", 2, C2, EXT, 443, sni="connect.ngrok-agent.com"),
                       tls("T4", 3, C1, EXT, 443, sni="c.example", ja4="t13d1516h2_x_y")])
    run(store, "tunnel")
    got = {f["entities"]["client"]: f for f in findings(store, "tunnel.fingerprint")}
    assert got[C1]["severity"] == "info" and got[C1]["confidence"] == 0.15
    assert got[C2]["severity"] == "low"  # the same client reaches ngrok: still low at most
    assert all(f["severity"] in ("info", "low") for f in got.values())
    assert [e["uid"] for e in got[C1]["evidence"]] == ["T1"]


def test_empty_tables(store: Store) -> None:
    report = run(store, "tunnel")
    assert report.findings == []
