"""Textual CSS for the control room."""
