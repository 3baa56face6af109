"""tunnel.tor on nDPI's tor.pcap (every TLS flow in it is a Tor link) and on ordinary TLS
captures from the same corpus (no Tor finding).

nDPI labels only some of tor.pcap's flows as Tor; our tls rows show why all seven are: each
has a Tor relay certificate (issuer CN=www.<base32>.com, subject CN=www.<base32>.net) and a
random www.<base32>.com SNI that no DNS lookup explains.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from hopguard.store import Store
from tests.conftest import PUBLIC_CORPUS
from tests.unit.analytics.util import findings, run

pytestmark = pytest.mark.corpus

PCAPS = PUBLIC_CORPUS / "ndpi" / "tests" / "cfgs" / "default" / "pcap"

# (src_ip, src_port, dst_ip, dst_port) of the seven TLS flows in tor.pcap
TOR_FLOWS = {
    ("192.168.1.252", 51110, "91.143.93.242", 443),
    ("192.168.1.252", 51111, "46.59.52.31", 443),
    ("192.168.1.252", 51112, "38.229.70.53", 443),
    ("192.168.1.252", 51174, "212.83.155.250", 443),
    ("192.168.1.252", 51175, "91.143.93.242", 443),
    ("192.168.1.252", 51176, "38.229.70.53", 443),
    ("192.168.1.252", 51185, "62.210.137.230", 443),
}

ORDINARY_TLS = ("chrome.pcap", "firefox.pcap", "443-chrome.pcap", "443-firefox.pcap",
                "google_ssl.pcap", "tls-rdn-extract.pcap", "long_tls_certificate.pcap",
                "ssl-cert-name-mismatch.pcap", "tls_2_reasms.pcapng", "tls-appdata.pcap",
                # with www.<letters>.com SNIs (TLS 1.3 without certificates among them)
                "android.pcap", "pinterest.pcap", "pluralsight.pcap",
                "tls_1.3_unidirectional_client.pcapng")


def need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path} not in the public corpus")
    return path


def test_every_tls_flow_in_tor_pcap_is_flagged(store: Store, ingest) -> None:  # type: ignore[no-untyped-def]
    ingest(need(PCAPS / "tor.pcap"))
    rows = store.query("SELECT uid, src_ip, src_port, dst_ip, dst_port FROM tls").to_pylist()
    assert {(r["src_ip"], r["src_port"], r["dst_ip"], r["dst_port"]) for r in rows} == TOR_FLOWS
    assert len(rows) == 7
    run(store, "tunnel.tor")
    got = findings(store, "tunnel.tor")
    flagged = {e["uid"] for f in got for e in f["evidence"]}
    assert flagged == {r["uid"] for r in rows}
    # one finding per (client, relay, port): five relays, two of them used twice
    assert sorted(f["entities"]["relay"] for f in got) == sorted(
        {"91.143.93.242", "46.59.52.31", "38.229.70.53", "212.83.155.250", "62.210.137.230"})
    assert all(f["entities"]["client"] == "192.168.1.252" for f in got)
    assert all(f["severity"] == "high" and f["confidence"] >= 0.8 for f in got)
    assert all("relay certificate pattern" in f["explanation"] for f in got)


def test_ordinary_tls_captures_give_no_tor_finding(store: Store, ingest) -> None:  # type: ignore[no-untyped-def]
    present = [PCAPS / n for n in ORDINARY_TLS if (PCAPS / n).exists()]
    if len(present) < 5:
        pytest.skip("too few of the ordinary TLS captures in the public corpus")
    for path in present:
        ingest(path)
    n_tls = store.query("SELECT count(*) AS n FROM tls").to_pylist()[0]["n"]
    assert n_tls >= 15  # the check means something: many real handshakes
    # some of them carry www.<letters>.com SNIs (www.google.com ...): the SNI shape alone is
    # not enough
    shaped = store.query("SELECT count(*) AS n FROM tls WHERE regexp_full_match("
                         "lower(sni), 'www\\.[a-z2-7]{4,25}\\.com')").to_pylist()[0]["n"]
    assert shaped >= 5
    run(store, "tunnel.tor")
    assert findings(store, "tunnel.tor") == []
