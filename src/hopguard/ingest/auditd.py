"""Linux auditd audit.log (being written)."""
