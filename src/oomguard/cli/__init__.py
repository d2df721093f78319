"""The ``oomguard`` command line: one module per command group."""
