"""Results on disk: Parquet parts written exactly once (parquet.py) and the sink that
writes them as attempts end (sink.py). See docs/ARCHITECTURE.md."""
