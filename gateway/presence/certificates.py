"""The certificates Graph encrypts presence resource data with, and their rotation.

One self-signed key pair serves every subscription of the gateway (all processes, all
accounts: it identifies the receiver, not a customer). Its private key is encrypted with
the gateway's key ring like every other secret. A new one is made when the newest has
less than ``ROTATE_DAYS`` left; subscriptions made with an older one are recreated with
the new one at their next upkeep, and the older ones keep decrypting until they expire.
"""

from __future__ import annotations

import asyncio
import time
import uuid

from sqlalchemy import Connection, insert, select

from gateway.clients.graph_crypto import EncryptionCertificate, load_certificate, new_certificate
from gateway.security import SecretBox
from storage.engine import Database
from storage.tables import NOTIFICATION_CERTIFICATES, utcnow
from storage.transaction import Transaction

ROTATE_DAYS = 30
VALID_DAYS = 365


def live_certificates(conn: Connection, secrets: SecretBox) -> list[EncryptionCertificate]:
    """Every certificate not yet expired, newest first."""
    rows = conn.execute(
        select(NOTIFICATION_CERTIFICATES)
        .where(NOTIFICATION_CERTIFICATES.c.not_after > time.time())
        .order_by(NOTIFICATION_CERTIFICATES.c.not_after.desc())
    ).all()
    return [
        load_certificate(row.id, row.certificate, secrets.decrypt(row.private_key).encode())
        for row in rows
    ]


def _newest_lasting(conn: Connection, secrets: SecretBox) -> EncryptionCertificate | None:
    """The newest certificate with more than ``ROTATE_DAYS`` left (by the stored expiry,
    which is the certificate's own), if any."""
    row = conn.execute(
        select(NOTIFICATION_CERTIFICATES)
        .where(NOTIFICATION_CERTIFICATES.c.not_after > time.time() + ROTATE_DAYS * 86400)
        .order_by(NOTIFICATION_CERTIFICATES.c.not_after.desc())
        .limit(1)
    ).one_or_none()
    if row is None:
        return None
    return load_certificate(row.id, row.certificate, secrets.decrypt(row.private_key).encode())


async def current_certificate(db: Database, secrets: SecretBox) -> EncryptionCertificate:
    """The certificate for new subscriptions: the newest, or a new one when it runs out."""
    found = await db.query(_newest_lasting, secrets)
    if found is not None:
        return found
    # Key generation takes tens of milliseconds: off the event loop, outside the write.
    made = await _generate()

    def work(tx: Transaction) -> None:
        tx.conn.execute(
            insert(NOTIFICATION_CERTIFICATES).values(
                id=made.id,
                certificate=made.certificate_der_b64,
                private_key=secrets.encrypt(made.private_key_pem.decode()),
                thumbprint=made.thumbprint,
                not_after=made.not_after.timestamp(),
                created_at=utcnow(),
            )
        )

    await db.transact(work)
    return made


async def _generate() -> EncryptionCertificate:
    return await asyncio.to_thread(
        new_certificate, days=VALID_DAYS, certificate_id=str(uuid.uuid4())
    )
