"""The indexer: scan -> decode -> embed -> store, incremental and resumable (see pipeline.py)."""
