"""VMware ESXi shell.log (being written)."""
