"""Runbook and environment model: the TOML format and its validation."""
