"""The ``hopguard`` command: one module per verb group, errors mapped to exit codes."""
