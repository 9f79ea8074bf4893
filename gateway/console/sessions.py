"""Console sessions: a signed-in browser, held on the server.

The cookie carries only a random session id; the database keeps its SHA-256, so a copy
of the table signs nobody in. Each sign-in starts a new session (a fixated id is
worthless), signing out deletes it on the server, and every replica reads the same row.
A session ends after ``GATEWAY_CONSOLE_IDLE_MINUTES`` unused and after
``GATEWAY_CONSOLE_SESSION_HOURS`` at all, whichever comes first. Its CSRF token is a
second random value stored with it, sent back by every form and htmx request.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection, delete, insert, or_, select, update

from gateway.security import SecretBox
from gateway.settings import Settings
from storage.engine import Database
from storage.tables import CONSOLE_SESSIONS, utcnow
from storage.transaction import Transaction

# A session's last use is written at most this often: a page view is a read, not a write.
TOUCH_EVERY = timedelta(seconds=60)


@dataclass(frozen=True)
class Session:
    """A live console session."""

    digest: str
    csrf: str
    subject: str
    name: str
    created_at: datetime
    seen_at: datetime

    def csrf_matches(self, presented: str | None) -> bool:
        """Whether a request carried this session's CSRF token."""
        return presented is not None and hmac.compare_digest(
            presented.encode("utf-8", "replace"), self.csrf.encode()
        )


@dataclass(frozen=True)
class Lifetime:
    """How long sessions last, from the settings."""

    idle: timedelta
    absolute: timedelta

    @classmethod
    def of(cls, settings: Settings) -> Lifetime:
        return cls(
            idle=timedelta(minutes=settings.console_idle_minutes),
            absolute=timedelta(hours=settings.console_session_hours),
        )

    def expired(self, session: Session, now: datetime) -> bool:
        return now - session.seen_at >= self.idle or now - session.created_at >= self.absolute


def digest_of(session_id: str) -> str:
    """What the database keeps of a session id."""
    return hashlib.sha256(session_id.encode("utf-8", "replace")).hexdigest()


def _stale(lifetime: Lifetime, now: datetime) -> object:
    return or_(
        CONSOLE_SESSIONS.c.seen_at <= now - lifetime.idle,
        CONSOLE_SESSIONS.c.created_at <= now - lifetime.absolute,
    )


async def start(db: Database, lifetime: Lifetime, *, subject: str, name: str) -> str:
    """A new session for who signed in; its id, for the cookie. Ended sessions are
    cleared on the way, so the table holds only live ones."""
    session_id = secrets.token_urlsafe(32)
    now = utcnow()

    def work(tx: Transaction) -> None:
        tx.conn.execute(delete(CONSOLE_SESSIONS).where(_stale(lifetime, now)))  # type: ignore[arg-type]
        tx.conn.execute(
            insert(CONSOLE_SESSIONS).values(
                digest=digest_of(session_id),
                csrf=secrets.token_urlsafe(32),
                subject=subject[:200],
                name=name[:200],
                created_at=now,
                seen_at=now,
            )
        )

    await db.transact(work)
    return session_id


def _read(conn: Connection, digest: str) -> Session | None:
    row = conn.execute(select(CONSOLE_SESSIONS).where(CONSOLE_SESSIONS.c.digest == digest)).first()
    if row is None:
        return None
    return Session(
        digest=row.digest,
        csrf=row.csrf,
        subject=row.subject,
        name=row.name,
        created_at=_aware(row.created_at),
        seen_at=_aware(row.seen_at),
    )


def _aware(value: datetime) -> datetime:
    """SQLite gives back naive times; they were written in UTC."""
    return value if value.tzinfo is not None else value.replace(tzinfo=utcnow().tzinfo)


async def find(db: Database, lifetime: Lifetime, session_id: str | None) -> Session | None:
    """The live session of a cookie, its last use noted; None when absent or ended."""
    if not session_id or len(session_id) > 100:
        return None
    session = await db.query(_read, digest_of(session_id))
    now = utcnow()
    if session is None:
        return None
    if lifetime.expired(session, now):
        await end(db, session_id)
        return None
    if now - session.seen_at >= TOUCH_EVERY:

        def touch(tx: Transaction) -> None:
            tx.conn.execute(
                update(CONSOLE_SESSIONS)
                .where(CONSOLE_SESSIONS.c.digest == session.digest)
                .values(seen_at=now)
            )

        await db.transact(touch)
    return session


def _set_reveal(tx: Transaction, session: Session, sealed: str | None) -> None:
    tx.conn.execute(
        update(CONSOLE_SESSIONS)
        .where(CONSOLE_SESSIONS.c.digest == session.digest)
        .values(reveal=sealed)
    )


async def reveal(db: Database, box: SecretBox, session: Session, shown: dict[str, str]) -> None:
    """Keep ``shown`` (a secret just made) for the session's next page, encrypted."""
    sealed = box.encrypt(json.dumps(shown))
    await db.transact(lambda tx: _set_reveal(tx, session, sealed))


async def take_reveal(
    db: Database, box: SecretBox, session: Session, kind: str
) -> dict[str, str] | None:
    """The secret kept for this page (``kind``), cleared as it is read: it is shown once."""

    def work(tx: Transaction) -> str | None:
        row = tx.conn.execute(
            select(CONSOLE_SESSIONS.c.reveal).where(CONSOLE_SESSIONS.c.digest == session.digest)
        ).first()
        if row is None or row.reveal is None:
            return None
        _set_reveal(tx, session, None)
        return str(row.reveal)

    sealed = await db.transact(work)
    if sealed is None:
        return None
    shown: dict[str, str] = json.loads(box.decrypt(sealed))
    return shown if shown.get("kind") == kind else None


async def end(db: Database, session_id: str) -> None:
    """Sign out: the session is gone on the server, whatever the browser keeps."""
    digest = digest_of(session_id)

    def work(tx: Transaction) -> None:
        tx.conn.execute(delete(CONSOLE_SESSIONS).where(CONSOLE_SESSIONS.c.digest == digest))

    await db.transact(work)
