"""Readers of telemetry formats; each turns one input file into rows of the model tables.

A format is a small class registered in ``FORMATS`` (see ``base.Format``): it recognises its
input from the first bytes of content, then feeds rows to a ``RowSink``. ``pipeline.ingest_file``
wraps the whole file in one store transaction, so a file is stored whole or not at all.
"""

from hopguard.ingest.base import FORMATS, Format, IngestContext, RowSink, detect_format

__all__ = ["FORMATS", "Format", "IngestContext", "RowSink", "detect_format"]
