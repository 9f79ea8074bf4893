"""Graph rich notifications: resource data encrypted as Graph does, tokens as Entra signs them."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import time
from collections.abc import Callable
from typing import Any

import jwt
import orjson
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import padding as symmetric_padding
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from jwt.algorithms import RSAAlgorithm

from gateway.clients import graph_crypto
from gateway.clients.graph_crypto import (
    GRAPH_NOTIFICATIONS_APP_ID,
    EncryptionCertificate,
    ResourceDataError,
    ValidationTokenError,
)

CURRENT = graph_crypto.new_certificate(certificate_id="current")
PREVIOUS = graph_crypto.new_certificate(certificate_id="previous")
PRESENCE = {
    "@odata.type": "#Microsoft.Graph.presence",
    "id": "66825e03-7ef5-42da-9069-724602c31f6b",
    "availability": "Busy",
    "activity": "InACall",
}


def pkcs7(plain: bytes) -> bytes:
    padder = symmetric_padding.PKCS7(128).padder()
    return padder.update(plain) + padder.finalize()


def graph_encrypts(
    certificate: EncryptionCertificate,
    resource: object = PRESENCE,
    *,
    padded: bytes | None = None,
) -> dict[str, Any]:
    """``encryptedContent`` as Graph builds it, knowing only the certificate we gave it."""
    key = os.urandom(32)
    der = base64.b64decode(certificate.certificate_der_b64)
    public_key = x509.load_der_x509_certificate(der).public_key()
    assert isinstance(public_key, rsa.RSAPublicKey)
    oaep = padding.OAEP(mgf=padding.MGF1(hashes.SHA1()), algorithm=hashes.SHA1(), label=None)
    encryptor = Cipher(algorithms.AES(key), modes.CBC(key[:16])).encryptor()
    plain = padded if padded is not None else pkcs7(orjson.dumps(resource))
    data = encryptor.update(plain) + encryptor.finalize()
    return {
        "data": base64.b64encode(data).decode(),
        "dataSignature": base64.b64encode(hmac.digest(key, data, hashlib.sha256)).decode(),
        "dataKey": base64.b64encode(public_key.encrypt(key, oaep)).decode(),
        "encryptionCertificateId": certificate.id,
        "encryptionCertificateThumbprint": hashlib.sha1(der).hexdigest().upper(),
    }


def test_resource_data_encrypted_by_graph_decrypts_to_the_presence() -> None:
    """Round trip: OAEP-SHA1 key, HMAC checked, AES-256-CBC with IV = key[:16]."""
    encrypted = graph_encrypts(CURRENT)
    assert graph_crypto.decrypt_resource_data(encrypted, [CURRENT]) == PRESENCE


def test_changed_data_or_signature_is_refused() -> None:
    """One flipped bit in data or dataSignature fails the HMAC check."""
    encrypted = graph_encrypts(CURRENT)
    data = bytearray(base64.b64decode(encrypted["data"]))
    data[-1] ^= 1
    with pytest.raises(ResourceDataError, match="dataSignature does not match"):
        graph_crypto.decrypt_resource_data(
            {**encrypted, "data": base64.b64encode(data).decode()}, [CURRENT]
        )
    signature = bytearray(base64.b64decode(encrypted["dataSignature"]))
    signature[0] ^= 1
    with pytest.raises(ResourceDataError, match="dataSignature does not match"):
        graph_crypto.decrypt_resource_data(
            {**encrypted, "dataSignature": base64.b64encode(signature).decode()}, [CURRENT]
        )
    with pytest.raises(ResourceDataError, match="dataSignature does not match"):
        graph_crypto.decrypt_resource_data({**encrypted, "dataSignature": "é"}, [CURRENT])


def test_missing_or_non_base64_fields_are_refused() -> None:
    """Absent fields and bad base64 give ResourceDataError, not KeyError or binascii.Error."""
    encrypted = graph_encrypts(CURRENT)
    for name in ("data", "dataKey", "dataSignature"):
        with pytest.raises(ResourceDataError, match=name):
            graph_crypto.decrypt_resource_data(
                {k: v for k, v in encrypted.items() if k != name}, [CURRENT]
            )
    with pytest.raises(ResourceDataError, match="dataKey is not base64"):
        graph_crypto.decrypt_resource_data({**encrypted, "dataKey": "not base64!"}, [CURRENT])


def test_an_unknown_certificate_is_refused() -> None:
    """Neither the id nor the thumbprint names a live certificate."""
    encrypted = graph_encrypts(CURRENT)
    with pytest.raises(ResourceDataError, match="no live certificate"):
        graph_crypto.decrypt_resource_data(encrypted, [PREVIOUS])
    with pytest.raises(ResourceDataError, match="no live certificate"):
        graph_crypto.decrypt_resource_data(
            {**encrypted, "encryptionCertificateId": "gone", "encryptionCertificateThumbprint": ""},
            [CURRENT],
        )


def test_the_thumbprint_picks_the_certificate_when_the_id_does_not() -> None:
    """An unknown or missing id falls back to the thumbprint, in any case."""
    encrypted = graph_encrypts(CURRENT)
    assert encrypted["encryptionCertificateThumbprint"].isupper()
    renamed = {**encrypted, "encryptionCertificateId": "renamed"}
    assert graph_crypto.decrypt_resource_data(renamed, [PREVIOUS, CURRENT]) == PRESENCE
    del renamed["encryptionCertificateId"]
    assert graph_crypto.decrypt_resource_data(renamed, [PREVIOUS, CURRENT]) == PRESENCE


def test_during_rotation_each_live_certificate_decrypts_its_own_subscriptions() -> None:
    """With two certificates live, items for either decrypt; a key mixed up does not."""
    live = [CURRENT, PREVIOUS]
    assert graph_crypto.decrypt_resource_data(graph_encrypts(CURRENT), live) == PRESENCE
    other = {**PRESENCE, "availability": "Away", "activity": "Away"}
    assert graph_crypto.decrypt_resource_data(graph_encrypts(PREVIOUS, other), live) == other
    mixed = {**graph_encrypts(PREVIOUS), "encryptionCertificateId": "current"}
    with pytest.raises(ResourceDataError, match="does not decrypt with certificate current"):
        graph_crypto.decrypt_resource_data(mixed, live)


def test_wrong_padding_is_refused() -> None:
    """Correctly signed data whose PKCS7 padding is wrong or missing is refused."""
    blocks = orjson.dumps(PRESENCE).ljust(16 * 10, b" ")
    for padded in (blocks[:-1] + b"\x05", blocks[:-2] + b"\x01\x02", blocks, blocks[:-1] + b"\x00"):
        with pytest.raises(ResourceDataError, match="PKCS7"):
            graph_crypto.decrypt_resource_data(graph_encrypts(CURRENT, padded=padded), [CURRENT])


def test_content_that_is_not_a_json_object_is_refused() -> None:
    """Bad UTF-8, bad JSON and JSON that is not an object all give ResourceDataError."""
    for plain in (b"\xff\xfe{}", b"{not json", b"[1, 2]"):
        encrypted = graph_encrypts(CURRENT, padded=pkcs7(plain))
        with pytest.raises(ResourceDataError, match="JSON"):
            graph_crypto.decrypt_resource_data(encrypted, [CURRENT])


def test_a_stored_certificate_loads_back_the_same() -> None:
    """load_certificate derives the thumbprint and expiry, and refuses a foreign key."""
    loaded = graph_crypto.load_certificate(
        CURRENT.id, CURRENT.certificate_der_b64, CURRENT.private_key_pem
    )
    assert loaded == CURRENT
    der = base64.b64decode(CURRENT.certificate_der_b64)
    assert CURRENT.thumbprint == hashlib.sha1(der).hexdigest()
    validity = CURRENT.not_after - x509.load_der_x509_certificate(der).not_valid_before_utc
    assert validity.days == 365
    with pytest.raises(ValueError, match="does not match"):
        graph_crypto.load_certificate("x", CURRENT.certificate_der_b64, PREVIOUS.private_key_pem)


def test_the_private_key_stays_out_of_reprs() -> None:
    """Logging a certificate does not log its private key."""
    assert b"PRIVATE KEY" in CURRENT.private_key_pem
    assert "PRIVATE" not in repr(CURRENT)
    assert "private_key_pem" not in repr(CURRENT)


SIGNING_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
KID = "kid-current"
JWKS = {"keys": [{**RSAAlgorithm.to_jwk(SIGNING_KEY.public_key(), as_dict=True), "kid": KID}]}
CLIENT_ID = "3f5c2a1e-8d1b-4c55-9e0f-111122223333"
TENANT_ID = "7d1e8a42-1b2c-4c3d-8e4f-555566667777"
NOW = 1_800_000_000.0


def token(key: rsa.RSAPrivateKey = SIGNING_KEY, kid: str = KID, **claims: object) -> str:
    """A validation token as the identity platform issues them, with claims overridden."""
    payload = {
        "aud": CLIENT_ID,
        "iss": f"https://sts.windows.net/{TENANT_ID}/",
        "appid": GRAPH_NOTIFICATIONS_APP_ID,
        "tid": TENANT_ID,
        "iat": int(NOW) - 60,
        "nbf": int(NOW) - 60,
        "exp": int(NOW) + 3600,
        **claims,
    }
    payload = {name: value for name, value in payload.items() if value is not None}
    return jwt.encode(payload, key, algorithm="RS256", headers={"kid": kid})


def verify(*tokens: str, now: float = NOW) -> None:
    graph_crypto.verify_validation_tokens(
        tokens, JWKS, client_ids={"other-app", CLIENT_ID}, tenant_ids=[TENANT_ID], now=now
    )


def test_valid_tokens_pass() -> None:
    """Several valid tokens, with appid or with azp, all verify."""
    verify(token(), token(appid=None, azp=GRAPH_NOTIFICATIONS_APP_ID), token(aud=[CLIENT_ID]))


def test_no_token_is_an_error() -> None:
    """Resource data without validation tokens is not trusted."""
    with pytest.raises(ValidationTokenError, match="none given"):
        verify()


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda: token(aud="another-client"), "Audience"),
        (lambda: token(appid="11111111-2222-3333-4444-555555555555"), "not Graph"),
        (lambda: token(appid=None), "not Graph"),
        (lambda: token(iss="https://sts.windows.net/someone-else/"), "issuer"),
        (lambda: token(iss=f"https://login.microsoftonline.com/{TENANT_ID}/v2.0"), "issuer"),
        (lambda: token(exp=int(NOW) - 301), "expired"),
        (lambda: token(exp=None), "exp"),
        (lambda: token(nbf=int(NOW) + 301), "not yet valid"),
        (lambda: token(kid="unknown-kid"), "no signing key"),
        (lambda: token(key=rsa.generate_private_key(public_exponent=65537, key_size=2048)), ""),
    ],
    ids=[
        "wrong-aud",
        "wrong-appid",
        "no-appid",
        "wrong-tenant",
        "v2-issuer",
        "expired",
        "no-exp",
        "not-yet-valid",
        "unknown-kid",
        "bad-signature",
    ],
)
def test_a_bad_token_is_refused(make: Callable[[], str], reason: str) -> None:
    """Each way a token can be wrong raises ValidationTokenError, even next to a good one."""
    with pytest.raises(ValidationTokenError, match=rf"validationTokens\[1\]: .*{reason}"):
        verify(token(), make())


def test_a_tampered_payload_fails_the_signature() -> None:
    """Swapping in another payload under the original signature is caught."""
    header, _, signature = token().split(".")
    forged_payload = token(aud="another-client").split(".")[1]
    with pytest.raises(ValidationTokenError, match="Signature verification failed"):
        verify(f"{header}.{forged_payload}.{signature}")


def test_expiry_allows_a_small_clock_skew_and_defaults_to_now() -> None:
    """A token expired less than the leeway ago still passes; ``now`` defaults to the clock."""
    verify(token(exp=int(NOW) - 299))
    fresh = token(iat=None, nbf=None, exp=int(time.time()) + 3600)
    graph_crypto.verify_validation_tokens(
        [fresh], JWKS, client_ids=[CLIENT_ID], tenant_ids=[TENANT_ID]
    )
    with pytest.raises(ValidationTokenError, match="expired"):
        graph_crypto.verify_validation_tokens(
            [token(nbf=None, exp=int(time.time()) - 600)],
            JWKS,
            client_ids=[CLIENT_ID],
            tenant_ids=[TENANT_ID],
        )


def test_garbage_and_wrong_algorithms_are_refused() -> None:
    """Non-JWTs and tokens not signed RS256 give ValidationTokenError."""
    hs256 = jwt.encode({"aud": CLIENT_ID}, "s" * 64, algorithm="HS256", headers={"kid": KID})
    for bad in ("not.a.jwt", "", hs256):
        with pytest.raises(ValidationTokenError):
            verify(bad)
    with pytest.raises(ValidationTokenError, match="no signing key"):
        graph_crypto.verify_validation_tokens(
            [token()], {"keys": []}, client_ids=[CLIENT_ID], tenant_ids=[TENANT_ID], now=NOW
        )


def test_the_tokens_hold_from_the_latest_start_to_the_earliest_end() -> None:
    """What a caller may remember: the window in which every token of the POST holds,
    clock skew allowed."""
    since, until = graph_crypto.verify_validation_tokens(
        [token(nbf=int(NOW) - 100, exp=int(NOW) + 900), token(nbf=int(NOW) - 50)],
        JWKS,
        client_ids=[CLIENT_ID],
        tenant_ids=[TENANT_ID],
        now=NOW,
    )
    assert since == NOW - 50 - graph_crypto.TOKEN_LEEWAY_SECONDS
    assert until == NOW + 900 + graph_crypto.TOKEN_LEEWAY_SECONDS
