"""SSH-based tunnels: ssh -L, -R, -D, a reverse tunnel from inside to outside, and sshuttle."""

from __future__ import annotations
