"""The DuckDB store: schema, migrations, batched and atomic writes, queries and export."""

from hopguard.store.db import SCHEMA_VERSION, Store

__all__ = ["SCHEMA_VERSION", "Store"]
