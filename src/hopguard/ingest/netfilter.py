"""nft monitor output and iptables-save snapshots (being written)."""
