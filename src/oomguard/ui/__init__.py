"""The web dashboard: jobs, a job's memory over time with its OOM kills, failures with the
kernel's evidence (``/ui/`` in ``oomguard serve``; ``oomguard ui --store`` alone).

See docs/ARCHITECTURE.md ("The dashboard").
"""
