"""oomguard: a job runner that survives the out-of-memory killer."""
