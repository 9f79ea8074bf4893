"""Token hashing and the encryption of stored secrets."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from gateway.security import (
    SecretBox,
    SecretBoxError,
    generate_key,
    new_token,
    token_digest,
    token_matches,
)


def test_tokens_are_long_random_and_stored_only_as_digest() -> None:
    """Two tokens differ; the digest verifies the token and nothing else."""
    token, other = new_token(), new_token()
    assert token != other
    assert len(token) >= 43
    digest = token_digest(token)
    assert token not in digest
    assert token_matches(token, digest)
    assert not token_matches(other, digest)


def test_secret_box_round_trips_and_rotates_keys() -> None:
    """A secret encrypted with an old key still decrypts after a new key is put first."""
    old, new = generate_key(), generate_key()
    ciphertext = SecretBox([SecretStr(old)]).encrypt("twilio-auth-token")
    assert "twilio-auth-token" not in ciphertext
    rotated_box = SecretBox([SecretStr(new), SecretStr(old)])
    assert rotated_box.decrypt(ciphertext) == "twilio-auth-token"
    rewritten = rotated_box.encrypt("twilio-auth-token")
    assert SecretBox([SecretStr(new)]).decrypt(rewritten) == "twilio-auth-token"


def test_secret_box_without_key_refuses_with_the_setting_to_fix() -> None:
    """No key configured: a clear error naming GATEWAY_SECRET_KEYS."""
    with pytest.raises(SecretBoxError, match="GATEWAY_SECRET_KEYS"):
        SecretBox([]).encrypt("x")
    with pytest.raises(SecretBoxError, match="does not decrypt"):
        SecretBox([SecretStr(generate_key())]).decrypt(
            SecretBox([SecretStr(generate_key())]).encrypt("x")
        )
