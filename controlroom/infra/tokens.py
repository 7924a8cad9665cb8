"""How the platform identifies a token without storing it: its fingerprint."""

from __future__ import annotations

import hashlib


def token_fingerprint(token: str) -> str:
    """As the platform records it (sandbox.api_tokens, pos_rotation_metrics.token_fingerprint):
    the first 16 hex digits of SHA-256(token)."""
    return hashlib.sha256(token.encode()).hexdigest()[:16]
