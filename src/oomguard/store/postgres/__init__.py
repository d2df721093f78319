"""The PostgreSQL store (``--store postgresql://...``): imported by
:func:`~oomguard.store.factory.open_store` only for such a URL, so SQLite users never need
psycopg (``pip install 'oomguard[postgres]'``)."""
