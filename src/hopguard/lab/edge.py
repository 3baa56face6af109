"""A small "CDN edge" for the lab's internet side: one TLS certificate, virtual hosts by Host.

``python -m hopguard.lab.edge --port 443 --cert C --key K --site cdn-front.example.net
--origin hidden-c2.example.org=203.0.113.66:443:c2.example.net --origin-ca c2.crt``

Like a real CDN edge, the TLS handshake (SNI, certificate) and the HTTP request inside it are
handled separately: the certificate is the front domain's whatever the client asks for, and the
request is routed by its ``Host`` header alone. A ``--site`` name is answered by the edge itself
(a small page); an ``--origin NAME=IP:PORT:ORIGIN_NAME`` name is fetched from that origin over
HTTPS (SNI and Host ``ORIGIN_NAME``, its certificate checked against ``--origin-ca``) and the
answer passed back. Any other Host gets 404. That is what domain fronting abuses: SNI says
the front domain, Host says the hidden one.

Each request is logged as one JSON line on standard output (time, client, SNI, Host, path,
route, status), so a lab run can check what the edge saw. With ``--eve PATH`` the edge also
writes what a TLS-terminating gateway or CDN would log in Suricata EVE form: one ``tls`` event per
handshake and one ``http`` event per request, sharing the connection's ``flow_id``, so hopguard
ingests SNI and Host of one connection under one uid (fronting.sni_host). Runs inside a lab
namespace only.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import itertools
import json
import socket
import ssl
import sys
import threading
import time
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import IO, Any

MAX_BODY = 16 << 20
_log_lock = threading.Lock()
_eve: IO[str] | None = None  # --eve: the gateway log in Suricata EVE form
_flow_ids = itertools.count(int(time.time() * 1000) % 1_000_000 * 1_000_000 + 1)


def log(record: dict[str, Any]) -> None:
    with _log_lock:
        sys.stdout.write(json.dumps(record, sort_keys=True) + "\n")
        sys.stdout.flush()


def eve(event_type: str, conn: dict[str, Any], **fields: Any) -> None:
    """One EVE record for the connection ``conn`` (flow_id and endpoints), if --eve is on."""
    if _eve is None:
        return
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f+0000")
    record = {"timestamp": stamp, "event_type": event_type, "proto": "TCP", "host": "edge",
              **conn, **fields}
    with _log_lock:
        _eve.write(json.dumps(record, sort_keys=True) + "\n")
        _eve.flush()


class EdgeServer(ThreadingHTTPServer):
    """Accepts plain TCP; each handler thread does its own TLS handshake (a slow client cannot
    stall the accept loop) and remembers the SNI the client sent."""

    daemon_threads = True

    def __init__(self, addr: tuple[str, int], ctx: ssl.SSLContext, sites: set[str],
                 origins: dict[str, tuple[str, int, str]], origin_ctx: ssl.SSLContext) -> None:
        super().__init__(addr, EdgeHandler)
        self.ctx, self.sites, self.origins, self.origin_ctx = ctx, sites, origins, origin_ctx

    def finish_request(self, request: Any, client_address: Any) -> None:
        request.settimeout(30)
        try:
            tls = self.ctx.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError) as exc:
            log({"t": time.time(), "client": client_address[0], "error": f"tls: {exc}"})
            return
        try:
            local = tls.getsockname()
            conn = {"flow_id": next(_flow_ids), "src_ip": client_address[0],
                    "src_port": client_address[1], "dest_ip": local[0], "dest_port": local[1]}
            tls.lab_conn = conn  # type: ignore[attr-defined]
            version = (tls.version() or "").replace("TLSv", "TLS ")
            eve("tls", conn, tls={"sni": sni_of(tls) or "", "version": version})
        except OSError:
            pass
        try:
            EdgeHandler(tls, client_address, self)
        finally:
            with contextlib.suppress(OSError):
                tls.shutdown(socket.SHUT_RDWR)  # wrap_socket took the fd: close it here
            tls.close()


def sni_of(sock: object) -> str | None:
    value = getattr(sock, "lab_sni", None)
    return value if isinstance(value, str) else None


class EdgeHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "lab-edge/1"
    server: EdgeServer

    def do_GET(self) -> None:
        self._dispatch(b"")

    def do_POST(self) -> None:
        length = min(int(self.headers.get("Content-Length") or 0), MAX_BODY)
        self._dispatch(self.rfile.read(length))

    def _dispatch(self, body: bytes) -> None:
        host = (self.headers.get("Host") or "").split(":")[0].lower()
        record: dict[str, Any] = {"t": time.time(), "client": self.client_address[0],
                                  "sni": sni_of(self.connection), "host": host,
                                  "method": self.command, "path": self.path}
        if host in self.server.sites:
            record["route"] = "site"
            page = f"<html><body>{host} {self.path[:200]}</body></html>".encode()
            status, ctype, data = 200, "text/html", page
        elif host in self.server.origins:
            ip, port, name = self.server.origins[host]
            record.update(route="origin", origin=f"{ip}:{port}", origin_name=name)
            try:
                status, ctype, data = self._fetch(ip, port, name, body)
            except (OSError, http.client.HTTPException) as exc:
                record["error"] = str(exc)
                status, ctype, data = 502, "text/plain", b"bad gateway\n"
        else:
            record["route"] = "none"
            status, ctype, data = 404, "text/plain", b"unknown host\n"
        record["status"] = status
        log(record)
        conn = getattr(self.connection, "lab_conn", None)
        if isinstance(conn, dict):
            tx = conn.setdefault("tx", 0)
            conn["tx"] = tx + 1
            eve("http", {k: v for k, v in conn.items() if k != "tx"}, tx_id=tx,
                app_proto="http", http={
                    "hostname": self.headers.get("Host") or "", "url": self.path,
                    "http_method": self.command, "protocol": self.request_version,
                    "http_user_agent": self.headers.get("User-Agent") or "",
                    "status": status, "length": len(data)})
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Via", "1.1 lab-edge")
        self.end_headers()
        self.wfile.write(data)

    def _fetch(self, ip: str, port: int, name: str, body: bytes) -> tuple[int, str, bytes]:
        raw = socket.create_connection((ip, port), timeout=15)
        tls = self.server.origin_ctx.wrap_socket(raw, server_hostname=name)
        conn = http.client.HTTPConnection(name, port, timeout=15)
        conn.sock = tls  # the request goes over our TLS socket; Host is the origin's name
        try:
            headers = {"X-Forwarded-For": self.client_address[0], "Connection": "close"}
            if self.command == "POST":
                headers["Content-Type"] = self.headers.get("Content-Type") or \
                    "application/octet-stream"
            conn.request(self.command, self.path, body=body or None, headers=headers)
            resp = conn.getresponse()
            data = resp.read(MAX_BODY)
            return resp.status, resp.getheader("Content-Type") or "application/octet-stream", \
                data
        finally:
            conn.close()

    def log_message(self, format: str, *args: object) -> None:  # the JSON lines say it all
        return


def parse_origin(text: str) -> tuple[str, tuple[str, int, str]]:
    name, _, target = text.partition("=")
    ip, port, origin_name = target.split(":")
    return name.lower(), (ip, int(port), origin_name)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, default=443)
    ap.add_argument("--cert", required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--site", action="append", default=[], help="a Host the edge serves itself")
    ap.add_argument("--origin", action="append", default=[], type=parse_origin,
                    help="NAME=IP:PORT:ORIGIN_NAME, a Host fetched from an HTTPS origin")
    ap.add_argument("--origin-ca", help="CA file for the origins' certificates")
    ap.add_argument("--eve", help="also write tls and http events as Suricata EVE JSON here")
    args = ap.parse_args(argv)
    global _eve
    if args.eve:
        _eve = open(args.eve, "a", encoding="utf-8")  # noqa: SIM115 - open for the process
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(args.cert, args.key)

    def remember_sni(sock: ssl.SSLSocket | ssl.SSLObject, name: str | None,
                     _ctx: ssl.SSLContext) -> None:
        sock.lab_sni = name  # type: ignore[union-attr]

    ctx.sni_callback = remember_sni
    origin_ctx = ssl.create_default_context(cafile=args.origin_ca)
    server = EdgeServer(("0.0.0.0", args.port), ctx, {s.lower() for s in args.site},
                        dict(args.origin), origin_ctx)
    log({"t": time.time(), "listening": args.port, "sites": sorted(server.sites),
         "origins": sorted(server.origins)})
    server.serve_forever()


if __name__ == "__main__":
    main()
