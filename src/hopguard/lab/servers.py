"""Small real servers for the lab's internet side: HTTP and HTTPS that serve sized bodies.

``python -m hopguard.lab.servers --port 443 --cert C --key K`` serves ``/bytes/N`` (N bytes),
``/beacon`` (a short C2-style answer) and anything else as a small page. Used by scenarios as
"public" web and C2 servers; runs inside a lab namespace only.
"""

from __future__ import annotations

import argparse
import ssl
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MAX_BODY = 64 << 20


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "lab-httpd/1"

    def do_GET(self) -> None:
        if self.path.startswith("/bytes/"):
            try:
                n = min(int(self.path.split("/")[2]), MAX_BODY)
            except ValueError:
                n = 0
            body = b"x" * n
            ctype = "application/octet-stream"
        elif self.path.startswith("/beacon"):
            body = b'{"task":"sleep","jitter":0.3}'
            ctype = "application/json"
        else:
            body = b"<html><body>lab page " + self.path.encode()[:200] + b"</body></html>"
            ctype = "text/html"
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        length = min(int(self.headers.get("Content-Length") or 0), MAX_BODY)
        self.rfile.read(length)
        self.do_GET()

    def log_message(self, format: str, *args: object) -> None:  # quiet
        return


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=80)
    ap.add_argument("--cert")
    ap.add_argument("--key")
    args = ap.parse_args()
    server = ThreadingHTTPServer(("0.0.0.0", args.port), Handler)
    if args.cert:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(args.cert, args.key)
        server.socket = ctx.wrap_socket(server.socket, server_side=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
