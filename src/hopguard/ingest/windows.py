"""Windows event logs: Sysmon (EVTX and JSON lines) and Security 4688/5156 (being written)."""
