"""macOS unified log NDJSON (being written)."""
