"""Worker processes: the pool that spawns, watches, reaps and recycles them (pool.py), the
child that runs attempts (child.py), and the messages between them (messages.py,
frames.py). See docs/ARCHITECTURE.md."""
