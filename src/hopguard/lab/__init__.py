"""The network lab: labelled proxy, relay and tunnel traffic made by real tools.

``net.Lab`` builds hosts as network namespaces on a LAN bridge, a NAT router and an "internet"
bridge; ``record`` captures the LAN span (tcpdump), endpoint telemetry (the kernel audit
subsystem through auditd) and firewall changes (``nft monitor``); ``scenarios`` start real tools
and write ``truth.json`` from what they actually started. Everything runs as root and is torn
down on exit, on error and on Ctrl-C. No address outside the namespaces is ever contacted.
"""
