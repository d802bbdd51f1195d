"""Standard Webhooks signatures, and each principal's signing secret.

`webhook-signature: v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">` keyed by
the secret's 32 bytes; receivers verify it with any Standard Webhooks library.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from collections.abc import Mapping

from service.tenancy.principal import Principal

SECRET_PREFIX = "whsec_"  # noqa: S105 (the format's prefix, not a secret)
SECRET_BYTES = 32
# Labels the HMAC that turns a key's stored hash into its webhook secret.
_DERIVATION_LABEL = b"imagegen webhook signing secret v1"
# A secret shorter than this is too easy to guess (Standard Webhooks allows 24 to 64 bytes).
MIN_SECRET_BYTES = 24


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def secret_key(secret: str) -> bytes:
    """The key bytes of a `whsec_` secret; ValueError when it is not one."""
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError(f"a webhook secret starts with {SECRET_PREFIX!r}")
    try:
        key = base64.b64decode(secret[len(SECRET_PREFIX):], validate=True)
    except binascii.Error:
        raise ValueError("a webhook secret is base64 after its prefix") from None
    if not MIN_SECRET_BYTES <= len(key) <= 64:
        raise ValueError(f"a webhook secret holds {MIN_SECRET_BYTES} to 64 bytes")
    return key


def signature(secret: str, webhook_id: str, timestamp: int, body: bytes) -> str:
    signed = f"{webhook_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signed_headers(secret: str, webhook_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    return {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature(secret, webhook_id, timestamp, body),
    }


class WebhookSecrets:
    """The signing secret of each principal.

    `preset` holds secrets the operator chose, by principal id: with auth off, the one
    principal's is IMAGEGEN_WEBHOOK_SECRET when set. An API key's secret is derived from
    its stored hash (HMAC-SHA256 under a fixed label), so every replica signs with the
    same secret, before and after a restart, with nothing more stored; revoking the key
    retires it. Any other principal's is made on first use and held in memory only.
    """

    def __init__(self, preset: Mapping[str, str] | None = None) -> None:
        self._secrets = dict(preset or {})
        for secret in self._secrets.values():
            secret_key(secret)

    def secret_for(self, principal: Principal) -> str:
        secret = self._secrets.get(principal.id)
        if secret is not None:
            return secret
        if principal.key_hash is not None:
            derived = hmac.new(bytes.fromhex(principal.key_hash), _DERIVATION_LABEL,
                               hashlib.sha256).digest()
            return SECRET_PREFIX + base64.b64encode(derived).decode()
        secret = self._secrets[principal.id] = new_secret()
        return secret
