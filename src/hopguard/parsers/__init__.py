"""Sans-IO protocol parsers shared by the packet engine, the IPS and the TLS gateway.

Every parser takes bytes and gives one of three outcomes: a value, ``NEED_DATA`` (the input
so far is a valid prefix), or :class:`hopguard.errors.ProtocolError` (the peer sent something
the protocol does not allow). None of them reads a socket or a file.
"""
