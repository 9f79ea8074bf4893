"""Microsoft Graph rich notifications: our encryption keys, their resource data, their tokens.

A subscription made with ``includeResourceData`` carries ``encryptionCertificate`` (base64
of a DER X.509 certificate with an RSA public key) and ``encryptionCertificateId`` (our own
name for it). Each notification item then has ``encryptedContent``:

- ``dataKey``: base64 of RSA-OAEP (SHA-1, MGF1-SHA-1) encryption, with that public key, of a
  32-byte symmetric key;
- ``dataSignature``: base64 of HMAC-SHA256(symmetric key, base64-decoded ``data``), checked
  before anything is decrypted;
- ``data``: base64 of AES-256-CBC (IV = the key's first 16 bytes, PKCS7 padding) of the
  resource as UTF-8 JSON.

Several certificates may be live at once while subscriptions move to a new one: the private
key is picked by ``encryptionCertificateId``, else by ``encryptionCertificateThumbprint``
(hex SHA-1 of the DER, any case).

The POST body then also has ``validationTokens``: RS256 JWTs from the Microsoft identity
platform for our app, checked against its signing keys (a JWKS the caller fetches). Any
failure means: discard the resource data, still answer 202.

Pure functions: no database, no network. Loaded private keys are cached, as notifications
arrive by the thousand a second.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import functools
import hashlib
import hmac
import math
import time
import uuid
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import jwt
import orjson
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives import padding as symmetric_padding
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.x509.oid import NameOID

GRAPH_NOTIFICATIONS_APP_ID = "0bf30f3b-4a52-48df-9a82-234910c4a086"
"""``appid`` (or ``azp``) of every validation token: Microsoft Graph's change notification app."""

SYMMETRIC_KEY_SIZE = 32
TOKEN_LEEWAY_SECONDS = 300.0
"""Clock skew allowed on ``exp``/``nbf``, the default of Microsoft's own token libraries."""

_OAEP_SHA1 = padding.OAEP(
    mgf=padding.MGF1(algorithm=hashes.SHA1()),  # noqa: S303 - Graph's fixed scheme
    algorithm=hashes.SHA1(),  # noqa: S303
    label=None,
)


@dataclass(frozen=True)
class EncryptionCertificate:
    """One live key pair of the gateway for Graph's encrypted resource data."""

    id: str
    """The ``encryptionCertificateId`` given to Graph."""
    certificate_der_b64: str
    """The subscription's ``encryptionCertificate``: base64 of the DER certificate."""
    private_key_pem: bytes = field(repr=False)
    """Unencrypted PKCS#8 PEM: the caller keeps it encrypted at rest."""
    thumbprint: str
    """Hex SHA-1 of the DER certificate, lower-case."""
    not_after: dt.datetime
    """When the certificate expires (UTC): make a new one and move subscriptions before."""


def new_certificate(
    *,
    common_name: str = "cloudlink-gateway notifications",
    days: int = 365,
    key_size: int = 2048,
    certificate_id: str | None = None,
) -> EncryptionCertificate:
    """A fresh RSA key pair in a self-signed certificate; the id is a random UUID unless given."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=key_size)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=True,
                data_encipherment=True,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return load_certificate(
        certificate_id or str(uuid.uuid4()),
        base64.b64encode(certificate.public_bytes(serialization.Encoding.DER)).decode("ascii"),
        pem,
    )


def load_certificate(
    certificate_id: str, certificate_der_b64: str, private_key_pem: bytes
) -> EncryptionCertificate:
    """Rebuild a stored key pair, deriving thumbprint and expiry from the certificate.

    Raises ValueError when the certificate is not valid base64 DER or the private key does
    not belong to it.
    """
    der = base64.b64decode(certificate_der_b64, validate=True)
    certificate = x509.load_der_x509_certificate(der)
    if certificate.public_key() != _private_key(private_key_pem).public_key():
        raise ValueError(f"certificate {certificate_id}: the private key does not match")
    return EncryptionCertificate(
        id=certificate_id,
        certificate_der_b64=certificate_der_b64,
        private_key_pem=private_key_pem,
        thumbprint=hashlib.sha1(der).hexdigest(),  # noqa: S324 - Graph's thumbprint
        not_after=certificate.not_valid_after_utc,
    )


class ResourceDataError(Exception):
    """The encrypted resource data cannot be trusted or read; the message holds no secrets."""


def decrypt_resource_data(
    encrypted: Mapping[str, Any], certificates: Sequence[EncryptionCertificate]
) -> dict[str, Any]:
    """The resource (e.g. a presence) from one item's ``encryptedContent``.

    Raises ResourceDataError for an unknown certificate, a key that does not decrypt, a
    signature mismatch, bad padding, or anything but a JSON object inside.
    """
    certificate = _pick_certificate(encrypted, certificates)
    data = _b64_field(encrypted, "data")
    encrypted_key = _b64_field(encrypted, "dataKey")
    signature = encrypted.get("dataSignature")
    if not isinstance(signature, str):
        raise ResourceDataError("encryptedContent: dataSignature is missing")

    private_key = _private_key(certificate.private_key_pem)  # a broken stored key: raise
    try:
        key = private_key.decrypt(encrypted_key, _OAEP_SHA1)
    except ValueError:
        raise ResourceDataError(
            f"encryptedContent: dataKey does not decrypt with certificate {certificate.id}"
        ) from None
    if len(key) != SYMMETRIC_KEY_SIZE:
        raise ResourceDataError(f"encryptedContent: dataKey holds {len(key)} bytes, not 32")

    expected = base64.b64encode(hmac.digest(key, data, hashlib.sha256))
    if not hmac.compare_digest(expected, signature.encode()):
        raise ResourceDataError("encryptedContent: dataSignature does not match")

    try:
        decryptor = Cipher(algorithms.AES(key), modes.CBC(key[:16])).decryptor()
        padded = decryptor.update(data) + decryptor.finalize()
        unpadder = symmetric_padding.PKCS7(algorithms.AES.block_size).unpadder()
        plain = unpadder.update(padded) + unpadder.finalize()
    except ValueError:
        raise ResourceDataError(
            "encryptedContent: data is not AES-CBC with PKCS7 padding"
        ) from None

    try:
        resource = orjson.loads(plain)
    except orjson.JSONDecodeError:
        raise ResourceDataError("encryptedContent: data is not UTF-8 JSON") from None
    if not isinstance(resource, dict):
        raise ResourceDataError("encryptedContent: data is not a JSON object")
    return resource


def _pick_certificate(
    encrypted: Mapping[str, Any], certificates: Sequence[EncryptionCertificate]
) -> EncryptionCertificate:
    certificate_id = encrypted.get("encryptionCertificateId")
    for certificate in certificates:
        if certificate.id == certificate_id:
            return certificate
    thumbprint = encrypted.get("encryptionCertificateThumbprint")
    if isinstance(thumbprint, str):
        for certificate in certificates:
            if certificate.thumbprint == thumbprint.lower():
                return certificate
    raise ResourceDataError(
        f"encryptedContent: no live certificate with id {certificate_id!r}"
        f" or thumbprint {thumbprint!r}"
    )


def _b64_field(encrypted: Mapping[str, Any], name: str) -> bytes:
    value = encrypted.get(name)
    if not isinstance(value, str):
        raise ResourceDataError(f"encryptedContent: {name} is missing")
    try:
        return base64.b64decode(value, validate=True)
    except binascii.Error:
        raise ResourceDataError(f"encryptedContent: {name} is not base64") from None


@functools.lru_cache(maxsize=16)
def _private_key(pem: bytes) -> rsa.RSAPrivateKey:
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise TypeError("encryption certificates need an RSA private key")
    return key


class ValidationTokenError(Exception):
    """A ``validationTokens`` entry is missing or does not verify: discard the resource data."""


def verify_validation_tokens(
    tokens: Sequence[str],
    jwks: Mapping[str, Any],
    *,
    client_ids: Collection[str],
    tenant_ids: Collection[str],
    now: float | None = None,
    leeway: float = TOKEN_LEEWAY_SECONDS,
) -> tuple[float, float]:
    """Check every validation token of a notification POST that carries resource data;
    returns the times between which all of them hold (the caller may remember them).

    Each must be an RS256 JWT signed by a key of ``jwks`` (the identity platform's
    ``{"keys": [...]}``, matched by ``kid``), for one of our ``client_ids``, from Graph's
    notification app, issued by ``https://sts.windows.net/{tenant}/`` for one of
    ``tenant_ids``, and unexpired at ``now`` (default: the current time). Raises
    ValidationTokenError on the first that is not, or when there are none.
    """
    if not tokens:
        raise ValidationTokenError("validationTokens: none given with resource data")
    when = time.time() if now is None else now
    issuers = {f"https://sts.windows.net/{tenant}/" for tenant in tenant_ids}
    issuers |= {issuer.lower() for issuer in issuers}
    since, until = -math.inf, math.inf
    for index, token in enumerate(tokens):
        try:
            nbf, exp = _verify_token(
                token, jwks=jwks, client_ids=client_ids, issuers=issuers, now=when, leeway=leeway
            )
        except (jwt.PyJWTError, ValidationTokenError) as exc:
            raise ValidationTokenError(f"validationTokens[{index}]: {exc}") from None
        since, until = max(since, nbf - leeway), min(until, exp + leeway)
    return since, until


def _verify_token(
    token: str,
    *,
    jwks: Mapping[str, Any],
    client_ids: Collection[str],
    issuers: Collection[str],
    now: float,
    leeway: float,
) -> tuple[float, float]:
    header = jwt.get_unverified_header(token)
    kid = header.get("kid")
    if header.get("alg") != "RS256" or not isinstance(kid, str):
        raise ValidationTokenError("not an RS256 token with a kid")
    payload = jwt.decode(
        token,
        _signing_key(jwks, kid),
        algorithms=["RS256"],
        audience=list(client_ids),
        issuer=issuers,
        options={
            "require": ["aud", "iss", "exp"],
            # Times are checked below against the caller's clock.
            "verify_exp": False,
            "verify_nbf": False,
            "verify_iat": False,
        },
    )
    app_id = payload.get("appid", payload.get("azp"))
    if app_id != GRAPH_NOTIFICATIONS_APP_ID:
        raise ValidationTokenError(f"issued to app {app_id!r}, not Graph notifications")
    exp, nbf = payload["exp"], payload.get("nbf", 0)
    if not isinstance(exp, int | float) or not isinstance(nbf, int | float):
        raise ValidationTokenError("exp or nbf is not a number")
    if exp + leeway <= now:
        raise ValidationTokenError("expired")
    if nbf - leeway > now:
        raise ValidationTokenError("not yet valid")
    return float(nbf), float(exp)


def _signing_key(jwks: Mapping[str, Any], kid: str) -> jwt.PyJWK:
    keys = jwks.get("keys")
    if isinstance(keys, list):
        for key in keys:
            if isinstance(key, dict) and key.get("kid") == kid and key.get("kty") == "RSA":
                return jwt.PyJWK(key, algorithm="RS256")
    raise ValidationTokenError(f"no signing key with kid {kid!r}")
