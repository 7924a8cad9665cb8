"""Textual screens. They render state and turn keys into core commands; no I/O here."""
