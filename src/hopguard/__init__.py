"""hopguard: find and stop command-and-control traffic hiding behind proxies (ATT&CK T1090).

The package is organised by what the data goes through: ``ingest`` turns sensor and endpoint
telemetry into Arrow batches shaped by ``model``; ``store`` keeps them in DuckDB; ``cli`` is the
``hopguard`` command. See docs/ARCHITECTURE.md for the map.
"""

__version__ = "0.1.0"
