"""The HTML report: self-contained, escaped, with the summary, incidents, chains and findings."""

from __future__ import annotations

import re
from datetime import datetime

from hopguard.report.findings import FindingFilter, load_findings
from hopguard.report.html import build_report, chain_diagram, hop_details, render_html
from hopguard.store import Store
from tests.unit.report.scenario import AUDIT, CHAIN, HOSTILE_SNI, NFT, PCAP, seed

NOW = datetime(2025, 11, 25, 8, 0, 0)
# an attribute that loads or links something outside the file
EXTERNAL = re.compile(r"""(?:src|href|action|xlink:href|srcset|data)\s*=\s*["']?\s*"""
                      r"""(?:https?:|//|ftp:)""", re.IGNORECASE)


def _html(store: Store, **kw: object) -> str:
    return render_html(build_report(store, now=NOW, **kw))  # type: ignore[arg-type]


def test_report_is_self_contained(store: Store) -> None:
    seed(store)
    html = _html(store, notes=["excluded https://cdn.example/x.js as a busy service"])
    assert not EXTERNAL.search(html)
    assert "<script" not in html.lower() and "<link" not in html.lower()
    assert "@import" not in html and "url(http" not in html
    # the only URL is the escaped note text, not a resource
    assert html.count("https://") == 1 and "<li>excluded https://cdn.example/x.js" in html


def test_attacker_strings_are_escaped(store: Store) -> None:
    seed(store)
    html = _html(store, notes=["<img src=x onerror=alert(1)>"])
    assert HOSTILE_SNI not in html
    assert "&lt;script&gt;alert(&#39;sni&#39;)&lt;/script&gt;.example" in html
    assert html.count("&lt;script&gt;") >= 5  # title, incident title, entity, explanation, ...
    assert "<img" not in html and "&lt;img src=x onerror=alert(1)&gt;" in html


def test_summary_sources_and_range(store: Store) -> None:
    seed(store)
    html = _html(store)
    assert 'generated 2025-11-25T08:00:00.000000Z' in html
    counts = {sev: n for n, sev in
              re.findall(r'<div class="n">(\d+)</div><span class="sev sev-(\w+)">', html)}
    assert counts == {"critical": "1", "high": "2", "medium": "1", "low": "1", "info": "0"}
    assert '<div class="n">5</div>findings' in html and '<div class="n">3</div>incidents' in html
    assert f'<td class="mono">{PCAP}</td>' in html and f'<td class="mono">{AUDIT}</td>' in html
    assert "<dt>data from</dt><dd>2025-11-24T16:00:00.000000Z</dd>" in html
    assert "<dt>data until</dt><dd>2025-11-24T16:00:05.100000Z</dd>" in html
    assert "Analyzer notes" not in html


def test_incidents_by_risk_and_chain_drawn(store: Store) -> None:
    found = seed(store)
    html = _html(store)
    order = [html.index(f'id="i-{f.incident}"') for f in
             (found["chain"], found["fronting"], found["sanctioned"])]
    assert order == sorted(order)
    svg = html[html.index("<svg"):html.index("</svg>")]
    assert html.count("<svg") == 1  # only the chain incident is drawn
    labels = re.findall(r'<text x="[\d.]+" y="[\d.]+" text-anchor="middle">([^<]+)</text>', svg)
    assert labels == CHAIN
    assert re.findall(r'class="port"[^>]*>([^<]*)<', svg) == [":1080", ":2222", ":443"]
    assert re.findall(r'class="role"[^>]*>([^<]*)<', svg) == [
        "origin", "socat", "bridge.relay", "destination"]
    assert svg.count("<line") == 3 and svg.count("<rect") == 4


def test_findings_sections(store: Store) -> None:
    found = seed(store)
    html = _html(store)
    relay = html[html.index(f'id="f-{found["relay1"].id}"'):]
    relay = relay[:relay.index("</article>")]
    assert "T1090.001" in relay and "DET0445/AN1230" in relay
    assert f"<pre>{NFT}</pre>" in relay
    assert "<pre>alert tcp 10.10.0.20 any -&gt; 10.10.0.30 1080 (msg:&#34;relay&#34;;" in relay
    assert '<span class="tag">M1037</span><span class="tag">M1031</span>' in relay
    assert '<tr><td>flow</td><td class="mono">C1hop</td><td>inbound leg 52000 B</td></tr>' in relay
    assert "<pre>outbound leg started 0.20 s after the inbound one; byte ratio 1.00</pre>" in relay
    assert f'href="#i-{found["relay1"].incident}"' in relay
    # a finding without actions says so
    proxy = html[html.index(f'id="f-{found["sanctioned"].id}"'):]
    assert "No concrete action given." in proxy[:proxy.index("</article>")]


def test_filtered_report_keeps_only_their_incidents(store: Store) -> None:
    found = seed(store)
    data = build_report(store, FindingFilter(detector="fronting"), now=NOW)
    assert [f.id for f in data.findings] == [found["fronting"].id]
    assert [i["id"] for i in data.incidents] == [found["fronting"].incident]
    assert data.diagrams == {}


def test_empty_store_renders(store: Store) -> None:
    html = _html(store)
    assert "No findings." in html and "No incidents." in html
    assert "No inputs recorded in this store." in html


def test_hop_details_from_chain_entities_and_fallbacks(store: Store) -> None:
    seed(store)
    members = load_findings(store)
    ports, kinds = hop_details(CHAIN, members)
    assert ports == [1080, 2222, 443] and kinds == {"10.10.0.30": "socat",
                                                    "10.10.0.40": "bridge.relay"}
    # no relay findings: the chain's own ports list, and a hop left unknown
    chain_only = [f for f in members if f.doc["detector"] == "chain.multihop"]
    chain_only[0].doc["entities"]["ports"] = [8080, None, "x"]
    ports, kinds = hop_details(CHAIN, chain_only)
    assert ports == [8080, None, None] and kinds == {}
    # the chain detector's own shape: relays with kinds, the destination as ip:port
    chain_only[0].doc["entities"].update(
        relays=[{"relay": "10.10.0.40", "kind": "multiplexed"}, {"relay": "9.9.9.9"}],
        destination="203.0.113.50:8443", hops=3)
    ports, kinds = hop_details(CHAIN, chain_only)
    assert ports == [8080, None, 8443] and kinds == {"10.10.0.40": "multiplexed"}
    chain_only[0].doc["entities"].pop("relays")
    chain_only[0].doc["entities"].pop("destination")
    d = chain_diagram("abc", CHAIN, chain_only)
    assert [a.label for a in d.arrows] == [":8080", "", ""]
    assert [b.role for b in d.boxes] == ["origin", "relay", "relay", "destination"]
    assert d.boxes[-1].x + d.boxes[-1].w < d.width


def test_incident_facts_shown_and_escaped(store: Store) -> None:
    """What correlate/ names in an incident (tools, processes, users, legs) is in the report,
    each value escaped: a process name is attacker-controlled."""
    import pyarrow as pa

    from hopguard.model import arrow_schema

    row = {name: None for name in arrow_schema("incident").names}
    row.update(id="inc1", title="10.10.2.7: relay", kind="host", key="10.10.2.7", risk=80.0,
               severity="high", first_seen=NOW, last_seen=NOW, hosts=["10.10.2.7"],
               techniques=["T1090.001"], findings=[], sanctioned=False,
               host_names=["app-07"], tools=["socat"], users=["www-data"],
               processes=["/tmp/<b>x</b> (pid 7) as www-data"],
               legs=["10.10.1.42 > 10.10.2.7:8443 > 203.0.113.66:443"], changes=[])
    store.write("incident", pa.Table.from_pylist([row], schema=arrow_schema("incident")))
    html = _html(store)
    assert "10.10.2.7 (app-07)" in html
    assert "<dt>tools</dt><dd class=\"mono\">socat</dd>" in html
    assert "/tmp/&lt;b&gt;x&lt;/b&gt; (pid 7) as www-data" in html and "<b>x</b>" not in html
    assert "10.10.1.42 &gt; 10.10.2.7:8443 &gt; 203.0.113.66:443" in html
    assert "<dt>changes</dt>" not in html  # empty facts are left out
