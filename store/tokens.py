"""Capability tokens and the artifact ids derived from them.

The token is the capability in an image URL; the store keys by its SHA-256 so
a listing of the store or a log line that names an id never reveals a URL.
"""

import hashlib
import secrets

TOKEN_BYTES = 24  # 192 bits from the OS CSPRNG, above the 128-bit floor


def new_token() -> str:
    """A fresh URL-safe token (32 characters)."""
    return secrets.token_urlsafe(TOKEN_BYTES)


def artifact_id(token: str) -> str:
    """The store key of a token: its SHA-256 in hex, safe to log and list."""
    # surrogatepass: a malformed token from a URL must hash (and miss), not raise.
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()
