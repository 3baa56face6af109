"""The exception hierarchy.

Every error hopguard raises on purpose is a :class:`HopguardError`. The CLI maps each class to an
exit code (see ``EXIT_CODES``) and prints ``hopguard: <message> (<location>)`` without a traceback.

Two families matter for callers: errors about *our* use (``ConfigError``) and errors about *input*
someone handed us (``InputError``, ``RuleError``, ``PolicyError``, ``ProtocolError``). The latter
carry where in the input the problem is, so a user can open the file at that line or offset.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True, kw_only=True)
class SourceLocation:
    """Where in an input something is: a file plus a line (and column) or a byte offset."""

    path: str
    line: int | None = None
    column: int | None = None
    offset: int | None = None
    record: int | None = None

    def __str__(self) -> str:
        if self.line is not None:
            col = f":{self.column}" if self.column is not None else ""
            return f"{self.path}:{self.line}{col}"
        if self.offset is not None:
            return f"{self.path}@offset {self.offset}"
        if self.record is not None:
            return f"{self.path}#record {self.record}"
        return self.path


class HopguardError(Exception):
    """Base of every error hopguard raises deliberately."""

    exit_code = 3

    def __init__(self, message: str, location: SourceLocation | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.location = location

    def __str__(self) -> str:
        if self.location is None:
            return self.message
        return f"{self.message} ({self.location})"


class ConfigError(HopguardError):
    """A setting, option or command-line argument is wrong."""

    exit_code = 1


class InputError(HopguardError):
    """Telemetry we were given cannot be read (at the location given)."""

    exit_code = 2


class UnknownFormatError(InputError):
    """The content of a file matches none of the formats hopguard reads."""


class QueryError(ConfigError):
    """A query given by the user (``hopguard sql``) is not valid SQL for the store."""


class StoreError(HopguardError):
    """The DuckDB store cannot be opened, migrated or written."""

    exit_code = 3


class RuleError(HopguardError):
    """A detection or IPS rule is malformed."""

    exit_code = 2


class PolicyError(HopguardError):
    """A filter or decryption policy is malformed or contradicts itself."""

    exit_code = 2


class ProtocolError(HopguardError):
    """A peer sent bytes that violate the protocol (parsers raise this, engines record it)."""

    exit_code = 2


EXIT_OK = 0
EXIT_USAGE = 1
EXIT_BAD_INPUT = 2
EXIT_RUNTIME = 3
