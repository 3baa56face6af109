"""Proxy servers and chains: SOCKS4/5 servers, HTTP CONNECT abuse, proxychains, multi-hop chains, beaconing through a proxy, domain fronting."""

from __future__ import annotations
