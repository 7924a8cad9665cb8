"""Textual widgets. They render snapshots; no I/O here."""
