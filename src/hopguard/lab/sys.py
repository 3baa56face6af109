"""Thin wrappers over the system calls and commands the lab needs (root only)."""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import shutil
import subprocess
from collections.abc import Sequence

from hopguard.errors import ConfigError, HopguardError

logger = logging.getLogger(__name__)

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


class LabError(HopguardError):
    """The lab could not be built or run (a missing tool, a command that failed)."""

    exit_code = 3


def require_root() -> None:
    if os.geteuid() != 0:
        raise ConfigError("the lab needs root (network namespaces, nftables, the audit subsystem)")


def require_tools(*names: str) -> None:
    missing = [n for n in names if shutil.which(n) is None and not os.path.exists(n)]
    if missing:
        raise LabError(f"the lab needs {', '.join(missing)}; 'make test' as root installs them "
                       "(Debian packages listed in the Makefile's LAB_PACKAGES)")


def setns(path: str) -> None:
    """Move the calling thread (in practice: a child before exec) into a network namespace."""
    fd = os.open(path, os.O_RDONLY)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err), path)
    finally:
        os.close(fd)


CLONE_NEWNS = 0x00020000
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18


def _check(rc: int, what: str) -> None:
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def private_files(binds: dict[str, str]) -> None:
    """Give the calling child its own mount namespace with files bind-mounted over others
    (the lab's /etc/resolv.conf and /etc/hosts, as ``ip netns exec`` does with /etc/netns)."""
    _check(_libc.unshare(CLONE_NEWNS), "unshare(CLONE_NEWNS)")
    _check(_libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None), "mount --make-rprivate /")
    for target, source in binds.items():
        _check(_libc.mount(source.encode(), target.encode(), None, MS_BIND, None),
               f"bind {source} on {target}")


def run(argv: Sequence[str], *, check: bool = True, input: str | None = None,
        timeout: float = 30) -> subprocess.CompletedProcess[str]:
    logger.debug("run: %s", " ".join(argv))
    proc = subprocess.run(list(argv), capture_output=True, text=True, input=input,
                          timeout=timeout, check=False)
    if check and proc.returncode != 0:
        raise LabError(f"command failed ({proc.returncode}): {' '.join(argv)}: "
                       f"{(proc.stderr or proc.stdout).strip()[:500]}")
    return proc
