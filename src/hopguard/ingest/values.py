"""Small, strict converters shared by the readers. Each raises ValueError on bad input.

Also the one definition of Zeek's TCP conn_state, which the EVE reader and the packet engine
both derive from what each side was seen to send, and the JSON document helpers the Windows
and ECS readers share (dotted keys, paths, telling a Windows event log document apart)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def epoch_to_us(seconds: float | str) -> int:
    """Epoch seconds (float or decimal string) to integer microseconds."""
    return round(float(seconds) * 1_000_000)


def iso_to_us(text: str) -> int:
    """ISO 8601 (with 'Z', an offset, or none meaning UTC; up to nanoseconds) to microseconds."""
    s = text.strip()
    if not s:
        raise ValueError("empty timestamp")
    try:  # Python 3.11 reads 'Z', offsets and long fractions itself: the common case
        dt = datetime.fromisoformat(s)
    except ValueError:
        dt = _iso_lenient(s)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    delta = dt - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _iso_lenient(s: str) -> datetime:
    if s.endswith(("Z", "z")):
        s = s[:-1] + "+00:00"
    # Python 3.11 accepts at most 6 fractional digits: cut nanoseconds (EVTX, auditd, macOS).
    dot = s.find(".")
    if dot != -1:
        end = dot + 1
        while end < len(s) and s[end].isdigit():
            end += 1
        if end - dot - 1 > 6:
            s = s[: dot + 7] + s[end:]
    return datetime.fromisoformat(s)


def to_int(value: object) -> int | None:
    """An integer from int, decimal or 0x-hex text; None for None/empty/'-'."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError(f"not an integer: {value!r}")
    if isinstance(value, int):
        return value
    s = str(value).strip()
    if s in ("", "-"):
        return None
    if s[:2].lower() == "0x":
        return int(s, 16)
    return int(s)


def to_bool(value: object) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    s = str(value).strip().lower()
    if s in ("t", "true", "1", "yes"):
        return True
    if s in ("f", "false", "0", "no"):
        return False
    if s in ("", "-"):
        return None
    raise ValueError(f"not a boolean: {value!r}")


def zeek_tcp_state(*, syn: bool, synack: bool, orig_fin: bool, orig_rst: bool, resp_fin: bool,
                   resp_rst: bool, resp_silent: bool) -> str:
    """Zeek's conn_state of a TCP connection from what each side sent: the originator's SYN,
    the responder's SYN-ACK, each side's FIN and RST, and whether the responder sent nothing.

    - no SYN: RSTRH / SHR when the responder's SYN-ACK was followed by its RST / FIN, else OTH;
    - SYN but no SYN-ACK: REJ (responder RST), RSTOS0 (originator RST), SH (originator FIN),
      S0 (responder silent), else OTH;
    - handshake seen: RSTO / RSTR (originator first), SF (both FIN), S2 / S3 (one FIN), S1.
    """
    if not syn:
        if synack:
            if resp_rst:
                return "RSTRH"
            if resp_fin:
                return "SHR"
        return "OTH"
    if not synack:
        if resp_rst:
            return "REJ"
        if orig_rst:
            return "RSTOS0"
        if orig_fin:
            return "SH"
        return "S0" if resp_silent else "OTH"
    if orig_rst:
        return "RSTO"
    if resp_rst:
        return "RSTR"
    if orig_fin and resp_fin:
        return "SF"
    if orig_fin:
        return "S2"
    if resp_fin:
        return "S3"
    return "S1"


# -- JSON documents (Winlogbeat, Elastic Agent, ECS) -----------------------------------------

def unflatten(doc: dict[str, Any]) -> dict[str, Any]:
    """``{"winlog.event_id": 1}`` -> ``{"winlog": {"event_id": 1}}`` (Kibana and CSV-like
    exports write dotted keys); a dotted key and a nested object of the same name merge."""
    out: dict[str, Any] = {}
    for key, value in doc.items():
        if type(key) is not str or "." not in key or key.startswith("."):
            if type(out.get(key)) is dict and type(value) is dict:
                out[key].update(value)
            else:
                out[key] = value
            continue
        parts = key.split(".")
        cur = out
        for p in parts[:-1]:
            nxt = cur.get(p)
            if type(nxt) is not dict:
                nxt = {}
                cur[p] = nxt
            cur = nxt
        if type(cur.get(parts[-1])) is dict and type(value) is dict:
            cur[parts[-1]].update(value)
        else:
            cur[parts[-1]] = value
    return out


def dig(obj: Any, path: str) -> Any:
    """``obj["a"]["b"]`` for ``"a.b"``, or None where the path leaves the objects."""
    for part in path.split("."):
        if type(obj) is not dict:
            return None
        obj = obj.get(part)
    return obj


def is_windows_event(doc: dict[str, Any]) -> bool:
    """A Windows event log record as Winlogbeat / Elastic Agent / NXLog write it (the Windows
    reader's), as opposed to an Elastic Endpoint or other ECS document."""
    wl = doc.get("winlog")
    if type(wl) is dict:
        return "event_id" in wl or "channel" in wl
    if "winlog.event_id" in doc or "winlog.channel" in doc:
        return True
    return "EventID" in doc and ("Channel" in doc or "SourceName" in doc)
