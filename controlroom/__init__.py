"""controlroom: a terminal control room for production releases."""

__version__ = "0.1.0"
