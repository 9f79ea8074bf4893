"""The outbox jobs of Teams presence: monitors' upkeep, the directory, reads, writes and
sync all, and the Graph tools they share (``graph``).

``handlers`` is what the app registers with the outbox engine; nothing else outside
presence imports from here.
"""

from __future__ import annotations

from gateway.clients.providers import Providers
from gateway.outbox.policy import RetryPolicy
from gateway.outbox.worker import Handler
from gateway.presence.jobs.directory import directory_handler
from gateway.presence.jobs.graph import Budgets, GraphTools
from gateway.presence.jobs.reads import PresenceReader, presence_read_handler
from gateway.presence.jobs.sync import sync_handler
from gateway.presence.jobs.upkeep import unsubscribe_handler, upkeep_handler
from gateway.presence.jobs.writes import PresenceWriter, presence_write_handler
from gateway.presence.monitors import DIRECTORY, SYNC, UNSUBSCRIBE, UPKEEP
from gateway.presence.service import READ, WRITE
from gateway.security import SecretBox
from gateway.settings import Settings
from storage.engine import Database


def handlers(
    db: Database, secrets: SecretBox, providers: Providers, settings: Settings
) -> dict[str, Handler]:
    """Every kind of outbox row presence writes, and its handler. The Graph budget of a
    tenant is shared by reads and writes: on PostgreSQL by every replica, from the
    database; on the embedded default each process takes its share of it."""
    budgets = Budgets(processes=settings.workers, db=None if settings.embedded else db)
    graph, identity = providers.graph, providers.identity
    tools = GraphTools(
        db,
        secrets,
        graph,
        identity,
        settings.public_url,
        budgets,
        upkeep_every=settings.presence_upkeep_seconds,
        resource_data=settings.presence_resource_data,
    )
    scale = settings.outbox_retry_scale
    # Reads, writes and sync back off like messaging's sends (a few minutes); the upkeep
    # of monitors and the directory keep trying for about half an hour, and each leaves
    # its next run behind when it gives up.
    sends = RetryPolicy(attempts=settings.send_max_attempts, cap=600.0, scale=scale)
    upkeep = RetryPolicy(attempts=10, base=5.0, cap=3600.0, scale=scale)
    return {
        READ: presence_read_handler(db, secrets, PresenceReader(graph, identity, budgets), sends),
        DIRECTORY: directory_handler(tools, upkeep),
        UPKEEP: upkeep_handler(tools, upkeep),
        UNSUBSCRIBE: unsubscribe_handler(tools, upkeep),
        SYNC: sync_handler(tools, sends),
        WRITE: presence_write_handler(db, secrets, PresenceWriter(graph, identity, budgets), sends),
    }
