"""Tor network feeds: the consensus (full and microdesc flavour), TorDNSEL exit lists and
Onionoo details documents, as ip indicators of category tor_exit or tor_relay.

Theory of operation. All three describe relays; each address a relay listens on or exits from
becomes one ip indicator labelled with the relay's nickname (where the feed has one), with its
ports, flags and hex fingerprint in ``detail`` (``or_port=9001 dir_port=0 flags=Exit,Fast
fingerprint=ABCD...``). A relay is a tor_exit when its flags contain Exit and not BadExit
(clients do not pick a BadExit relay to leave the network, so its address is not where Tor
traffic comes from), otherwise a tor_relay; TorDNSEL lists and Onionoo ``exit_addresses``
are observed exits and always tor_exit.

Consensus (Tor dir-spec, "network-status-version 3", section 3.4.1 and the microdesc flavour
of appendix "Consensus flavors"): a header with ``valid-after``, ``fresh-until`` and
``valid-until``; then one entry per router starting with an ``r`` line::

    r <nickname> <identity> <digest> <published date> <published time> <IPv4> <ORPort> <DirPort>

(the microdesc flavour has no ``<digest>``), followed by ``a`` lines (further OR addresses,
``[IPv6]:port``), ``s`` (flags), ``v``, ``pr``, ``w``, ``p`` and ``m`` lines; the footer starts
at ``directory-footer``. ``identity`` is the unpadded base64 of the 20-byte RSA identity
digest; its hex form is the relay fingerprint. Indicators are seen at ``valid-after`` and
expire at ``valid-until`` (after that a client would not use the document either).

TorDNSEL (exitlist-spec; check.torproject.org/exit-addresses; CollecTor adds an ``@type``
annotation and a ``Downloaded`` line): blocks of ``ExitNode <fingerprint>``, ``Published``,
``LastStatus`` and one or more ``ExitAddress <IPv4> <date> <time>`` lines, the time being when
the exit scanner last saw traffic leave from that address. Seen then, expiring
``TOR_LIFETIME`` later.

Onionoo details (metrics.torproject.org/onionoo.html): ``relays[]`` with ``nickname``,
``fingerprint``, ``or_addresses`` (``"ip:port"``, ``"[v6]:port"``), ``exit_addresses``,
``dir_address``, ``flags``, ``first_seen`` and ``last_seen``; ``relays_published``.
``bridges[]`` carry hashed fingerprints and no addresses: they are counted in one note.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime

import pyarrow as pa

from hopguard.intel.feeds import (
    TOR_CONFIDENCE,
    TOR_LIFETIME,
    ReadContext,
    address_value,
    batches,
    parse_time,
    read_json,
    text_lines,
)
from hopguard.intel.model import Indicator


def _category(flags: list[str]) -> str:
    return "tor_exit" if "Exit" in flags and "BadExit" not in flags else "tor_relay"


def _port(text: str) -> int:
    if not text.isdigit() or int(text) > 65535:
        raise ValueError(f"not a port: {text[:20]!r}")
    return int(text)


def _address(text: str) -> tuple[str, int, int]:
    """``(canonical address, prefix, port)`` from ``ip:port`` or ``[v6]:port``."""
    host, sep, port = text.rpartition(":")
    if not sep:
        raise ValueError(f"not address:port: {text[:80]!r}")
    if host.startswith("["):
        if not host.endswith("]"):
            raise ValueError(f"not [address]:port: {text[:80]!r}")
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"an IPv6 address needs brackets: {text[:80]!r}")
    value, prefix = _host_address(host)
    return value, prefix, _port(port)


def _host_address(text: str) -> tuple[str, int]:
    if "/" in text:
        raise ValueError(f"a network, not a relay address: {text[:80]!r}")
    return address_value(text)


def _fingerprint(identity: str) -> str:
    """Hex fingerprint (upper case, as Tor prints it) of a base64 identity digest."""
    try:
        raw = base64.b64decode(identity + "=" * (-len(identity) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"identity is not base64: {identity[:40]!r}") from None
    if len(raw) != 20:
        raise ValueError(f"identity is not a 20-byte digest: {identity[:40]!r}")
    return raw.hex().upper()


def _detail(or_port: int | None, dir_port: int | None, flags: list[str], fp: str,
            extra: str = "") -> str:
    parts = []
    if or_port is not None:
        parts.append(f"or_port={or_port}")
    if dir_port is not None:
        parts.append(f"dir_port={dir_port}")
    parts.append(f"flags={','.join(flags)}")
    parts.append(f"fingerprint={fp}")
    if extra:
        parts.append(extra)
    return " ".join(parts)


# -- consensus -----------------------------------------------------------------------------

@dataclass(slots=True)
class _RouterState:
    """The router entry being read (from its ``r`` line to the next one)."""

    line: int
    nickname: str
    fingerprint: str
    address: str
    prefix: int
    or_port: int
    dir_port: int
    extra: list[tuple[str, int, int, int]] = field(default_factory=list)  # value, prefix, port
    flags: list[str] = field(default_factory=list)


@dataclass(slots=True)
class _ConsensusState:
    microdesc: bool = False
    valid_after: datetime | None = None
    valid_until: datetime | None = None
    router: _RouterState | None = None
    in_router: bool = False  # inside a router entry (a bad r line still opens one)


def read_consensus(ctx: ReadContext) -> Iterator[pa.Table]:
    """A network-status consensus (full or microdesc flavour: the document's
    ``network-status-version`` line decides) as ip indicators, one per router address."""
    yield from batches(_consensus(ctx))


def _consensus(ctx: ReadContext) -> Iterator[Indicator]:
    st = _ConsensusState()
    started = False
    for n, line in text_lines(ctx):
        if not started:
            if not line.strip() or line.startswith("@"):
                continue  # CollecTor's "@type network-status-consensus-3 1.0"
            words = line.split()
            if words[:2] != ["network-status-version", "3"]:
                ctx.error(ctx.at_line(n), "not a Tor network-status document: the first line "
                          "must be 'network-status-version 3'")
                return
            st.microdesc = words[2:3] == ["microdesc"]
            started = True
            continue
        keyword, _, rest = line.partition(" ")
        if keyword == "directory-footer":
            break
        try:
            if keyword in ("valid-after", "valid-until"):
                when = parse_time(rest)
                if keyword == "valid-after":
                    st.valid_after = when
                else:
                    st.valid_until = when
            elif keyword == "r":
                if st.router is not None:
                    yield from _router(ctx, st, st.router)
                st.router, st.in_router = None, True
                st.router = _r_line(rest, n, st.microdesc)
            elif keyword in ("a", "s") and not st.in_router:
                raise ValueError(f"'{keyword}' line outside a router entry")
            elif keyword == "a" and st.router is not None:
                value, prefix, port = _address(rest.strip())
                st.router.extra.append((value, prefix, port, n))
            elif keyword == "s" and st.router is not None:
                st.router.flags = rest.split()
        except ValueError as exc:
            ctx.error(ctx.at_line(n), f"{keyword} line: {exc}")
    if not started:
        ctx.error(ctx.at_line(1), "empty: not a Tor network-status document")
        return
    if st.router is not None:
        yield from _router(ctx, st, st.router)


def _r_line(rest: str, n: int, microdesc: bool) -> _RouterState:
    f = rest.split()
    want = 7 if microdesc else 8
    if len(f) != want:
        shape = "nickname identity" + ("" if microdesc else " digest") + \
            " date time address ORPort DirPort"
        raise ValueError(f"{len(f)} fields, expected {want} ({shape})")
    nickname, identity = f[0], f[1]
    date, time, ip, or_port, dir_port = f[-5:]
    parse_time(f"{date} {time}")  # validates the published time
    address, prefix = _host_address(ip)
    return _RouterState(line=n, nickname=nickname, fingerprint=_fingerprint(identity),
                        address=address, prefix=prefix, or_port=_port(or_port),
                        dir_port=_port(dir_port))


def _router(ctx: ReadContext, st: _ConsensusState, r: _RouterState) -> Iterator[Indicator]:
    kind = "tor microdesc consensus" if st.microdesc else "tor consensus"
    source = f"{kind} {st.valid_after:%Y-%m-%d %H:%M:%S}" if st.valid_after else str(ctx.path)
    category = _category(r.flags)
    addresses = [(r.address, r.prefix, r.or_port, r.line), *r.extra]
    seen: set[str] = set()
    for value, prefix, port, line in addresses:
        if value in seen:
            continue
        seen.add(value)
        yield ctx.make(kind="ip", value=value, prefix=prefix, category=category,
                       label=r.nickname, confidence=TOR_CONFIDENCE, source=source,
                       first_seen=st.valid_after, last_seen=st.valid_after,
                       expires=st.valid_until,
                       detail=_detail(port, r.dir_port, r.flags, r.fingerprint), line=line)


# -- TorDNSEL ------------------------------------------------------------------------------

@dataclass(slots=True)
class _ExitNodeState:
    fingerprint: str
    published: str = ""
    last_status: str = ""


def read_tordnsel(ctx: ReadContext) -> Iterator[pa.Table]:
    """A TorDNSEL exit list: one tor_exit indicator per ExitAddress line."""
    yield from batches(_tordnsel(ctx))


def _tordnsel(ctx: ReadContext) -> Iterator[Indicator]:
    node: _ExitNodeState | None = None
    started = False
    source = str(ctx.path)
    for n, line in text_lines(ctx):
        s = line.strip()
        if not s:
            continue
        keyword, _, rest = s.partition(" ")
        rest = rest.strip()
        if not started:
            if s.startswith("@") or keyword == "Downloaded":
                continue
            if keyword != "ExitNode":
                ctx.error(ctx.at_line(n), "not a TorDNSEL exit list: expected an ExitNode line")
                return
            started = True
        try:
            if keyword == "ExitNode":
                node = None
                fp = rest.upper()
                if len(fp) != 40 or any(c not in "0123456789ABCDEF" for c in fp):
                    raise ValueError(f"not a relay fingerprint: {rest[:60]!r}")
                node = _ExitNodeState(fingerprint=fp)
            elif keyword in ("Published", "LastStatus"):
                if node is not None:
                    parse_time(rest)
                    if keyword == "Published":
                        node.published = rest
                    else:
                        node.last_status = rest
            elif keyword == "ExitAddress":
                if node is None:
                    raise ValueError("no valid ExitNode line before it")
                addr, _, when = rest.partition(" ")
                value, prefix = _host_address(addr)
                seen = parse_time(when)
                detail = f"fingerprint={node.fingerprint}"
                if node.published:
                    detail += f" published={node.published.replace(' ', 'T')}"
                if node.last_status:
                    detail += f" last_status={node.last_status.replace(' ', 'T')}"
                yield ctx.make(kind="ip", value=value, prefix=prefix, category="tor_exit",
                               confidence=TOR_CONFIDENCE, source=source, first_seen=seen,
                               last_seen=seen, expires=seen + TOR_LIFETIME, detail=detail,
                               line=n)
            elif keyword != "Downloaded":
                raise ValueError(f"unknown keyword {keyword[:40]!r}")
        except ValueError as exc:
            ctx.error(ctx.at_line(n), f"{keyword[:40]} line: {exc}")
    if not started:
        ctx.error(ctx.at_line(1), "no ExitNode lines: not a TorDNSEL exit list")


# -- Onionoo -------------------------------------------------------------------------------

def read_onionoo(ctx: ReadContext) -> Iterator[pa.Table]:
    """An Onionoo details document: one indicator per relay address (``record`` = the relay's
    position in ``relays``, from 1)."""
    yield from batches(_onionoo(ctx))


def _onionoo(ctx: ReadContext) -> Iterator[Indicator]:
    ok, doc = read_json(ctx)
    if not ok:
        return
    if not isinstance(doc, dict) or not isinstance(doc.get("relays", []), list) or not (
            "relays" in doc or "bridges" in doc):
        ctx.error(ctx.whole(), "not an Onionoo details document (no relays list)")
        return
    published = doc.get("relays_published")
    source = f"onionoo {published}" if isinstance(published, str) else str(ctx.path)
    bridges = doc.get("bridges")
    if isinstance(bridges, list) and bridges:
        ctx.note(ctx.whole(), f"{len(bridges)} bridges skipped: Onionoo gives hashed "
                 "fingerprints and no addresses for bridges")
    for i, relay in enumerate(doc.get("relays", []), start=1):
        try:
            yield from _relay(ctx, relay, i, source)
        except ValueError as exc:
            ctx.error(ctx.at_record(i), str(exc))


def _str_list(relay: dict[str, object], key: str) -> list[str]:
    v = relay.get(key, [])
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise ValueError(f"{key} is not a list of strings")
    return [str(x) for x in v]


def _relay(ctx: ReadContext, relay: object, i: int, source: str) -> Iterator[Indicator]:
    if not isinstance(relay, dict):
        raise ValueError("relay is not a JSON object")
    nickname = relay.get("nickname", "")
    fp = relay.get("fingerprint", "")
    if not isinstance(nickname, str) or not isinstance(fp, str):
        raise ValueError("nickname or fingerprint is not a string")
    flags = _str_list(relay, "flags")
    first = _relay_time(relay, "first_seen")
    last = _relay_time(relay, "last_seen")
    dir_port: int | None = None
    dir_address = relay.get("dir_address")
    if isinstance(dir_address, str) and dir_address:
        dir_port = _address(dir_address)[2]
    found: dict[str, tuple[int, int | None, str]] = {}  # value -> prefix, port, category
    for text in _str_list(relay, "or_addresses"):
        value, prefix, port = _address(text)
        found.setdefault(value, (prefix, port, _category(flags)))
    for text in _str_list(relay, "exit_addresses"):
        value, prefix = _host_address(text.strip("[]"))
        old = found.get(value)
        found[value] = (prefix, old[1] if old else None, "tor_exit")
    if not found:
        raise ValueError(f"relay {fp[:40] or nickname[:40]} has no addresses")
    expires = last + TOR_LIFETIME if last is not None else None
    for value, (bits, or_port, category) in found.items():
        yield ctx.make(kind="ip", value=value, prefix=bits, category=category,
                       label=nickname, confidence=TOR_CONFIDENCE, source=source,
                       first_seen=first, last_seen=last, expires=expires,
                       detail=_detail(or_port, dir_port, flags, fp.upper()), line=i)


def _relay_time(relay: dict[str, object], key: str) -> datetime | None:
    v = relay.get(key)
    if v is None:
        return None
    if not isinstance(v, str):
        raise ValueError(f"{key} is not a string")
    return parse_time(v)
