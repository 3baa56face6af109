"""Suricata EVE JSON (being written)."""
