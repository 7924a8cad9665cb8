"""Textual widgets. They render state; no I/O here."""
