"""Where attempts run: ``local`` (the worker pool) or ``dask``."""
