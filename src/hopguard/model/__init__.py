"""Pure value types and the schema of every table (no I/O).

``tables.TABLES`` is the single source of truth: the Arrow schemas used by ingest, the DuckDB DDL
used by the store and the ECS field names used by exports are all derived from it.
"""

from hopguard.model.tables import TABLES, Column, Table, arrow_schema, table

__all__ = ["TABLES", "Column", "Table", "arrow_schema", "table"]
