"""The scheduler: one loop that takes tasks into a window, admits them by memory,
dispatches attempts to an executor and records how each ended. Where each concept lives:
docs/ARCHITECTURE.md, "Where a change goes"."""
