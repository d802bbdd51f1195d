"""Capability tokens: unguessable, URL-safe, and the store keys them by a hash only."""

import base64
import hashlib

from store.tokens import TOKEN_BYTES, artifact_id, new_token


def test_a_token_is_192_random_bits_in_url_safe_base64() -> None:
    tokens = [new_token() for _ in range(1000)]

    assert len(set(tokens)) == len(tokens)
    for token in tokens:
        assert len(token) == 32  # 24 bytes, no padding
        raw = base64.urlsafe_b64decode(token)
        assert len(raw) == TOKEN_BYTES == 24  # at least the promised 128 bits
    # Every bit varies across tokens: none is fixed (a counter or a constant prefix would show).
    ored = anded = int.from_bytes(base64.urlsafe_b64decode(tokens[0]))
    for token in tokens[1:]:
        value = int.from_bytes(base64.urlsafe_b64decode(token))
        ored, anded = ored | value, anded & value
    assert (ored, anded) == (2 ** (8 * TOKEN_BYTES) - 1, 0)


def test_the_artifact_id_is_the_sha256_of_the_token() -> None:
    # The standard's own test vector: the id is plain SHA-256 hex, nothing of the token kept.
    assert artifact_id("abc") == (
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    )
    token = new_token()
    assert artifact_id(token) == hashlib.sha256(token.encode()).hexdigest()
    assert token not in artifact_id(token)


def test_a_malformed_token_hashes_instead_of_raising() -> None:
    """A URL can carry a lone surrogate; it must simply miss, never become a 500."""
    assert artifact_id("\ud800") == (
        "91a681b998555fb475479817b126c94e57e52011fa1842c5d188795a4a05226b"  # of b"\xed\xa0\x80"
    )
    assert artifact_id("\ud800") != artifact_id("\udc00")
