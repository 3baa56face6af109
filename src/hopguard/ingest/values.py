"""Small, strict converters shared by the readers. Each raises ValueError on bad input."""

from __future__ import annotations

from datetime import UTC, datetime

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
