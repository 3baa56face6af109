"""The contract between stream parsers and whoever drives them.

Theory of operation: a *session* parser follows one TCP connection. Its driver (the packet
engine's reassembler, later the IPS and the gateway) calls ``feed(direction, data)`` with the
next in-order bytes of one direction, ``ORIG`` (the side that opened the connection) or
``RESP``, in the order the bytes were seen on the wire. ``feed`` returns the events those bytes
completed, as frozen dataclasses; a session never raises for bad input. When the peer sends
something the protocol does not allow, the session returns a :class:`Malformed` event and sets
``done``; the driver then stops feeding it.

A proxy handshake (SOCKS, HTTP CONNECT) that succeeds ends with :class:`TunnelOpened`, which
carries the bytes of each direction that followed the handshake in the data already fed. The
driver starts a new session on the tunnelled streams, with those bytes first, so a TLS hello
inside a SOCKS tunnel is recorded on the same connection.

Buffers are bounded: a session keeps at most ``MAX_BUFFER`` bytes of an unfinished message per
direction and reports :class:`Malformed` beyond that.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Protocol

ORIG: Final = 0
RESP: Final = 1

MAX_BUFFER: Final = 64 * 1024


class NeedData:
    """The outcome "the bytes so far are a valid prefix; give me more"."""

    _instance: NeedData | None = None

    def __new__(cls) -> NeedData:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA: Final = NeedData()


@dataclass(frozen=True, slots=True, kw_only=True)
class Malformed:
    """The peer broke the protocol; ``offset`` is in that direction's stream."""

    direction: int
    offset: int
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class TunnelOpened:
    """A proxy handshake finished; what follows in each direction is tunnelled payload."""

    orig_rest: bytes
    resp_rest: bytes


class Session(Protocol):
    """One connection's parser (see the module docstring)."""

    done: bool

    def feed(self, direction: int, data: bytes) -> list[object]: ...
