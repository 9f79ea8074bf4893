"""Sync all's write alone: how long storing what a sync read takes, no Graph and no HTTP.

A sync reads every monitor's users from Graph, then stores what changed (states and their
events) in each monitor's settling unit, through the process's one SQLite writer. This
stores the same reads into a copy of the database taken just before the sync, with the
same units (``apply_graph_presences``, one per monitor, all in flight at once as the
monitors' rows run side by side), so that the sync can be compared with what its own work
costs: the reads' bound plus this.

    python bench/sync_write.py ACCOUNT_ID READS_JSON   # run by bench/presence.py

With ``GATEWAY_DATA_DIR`` (and the key) of the copy; READS_JSON holds, per monitor, the
presences Graph answered (``[[{...}, ...], ...]``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import uvloop

from gateway.app import open_database
from gateway.presence.from_teams import apply_graph_presences
from gateway.settings import Settings
from storage.transaction import Transaction


async def store(account_id: str, reads: list[list[dict[str, Any]]]) -> dict[str, float]:
    """Store every monitor's read at once; seconds and events."""
    db = open_database(Settings())
    read_at = datetime.now(UTC)
    try:

        async def one(presences: list[dict[str, Any]]) -> int:
            def work(tx: Transaction) -> int:
                return apply_graph_presences(tx, account_id, presences, read_at=read_at)

            return await db.transact(work)

        started = time.perf_counter()
        events = await asyncio.gather(*(one(chunk) for chunk in reads))
        seconds = time.perf_counter() - started
    finally:
        db.dispose()
    return {"seconds": seconds, "events": sum(events), "units": len(reads)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("account_id")
    parser.add_argument("reads", type=Path)
    args = parser.parse_args()
    reads = json.loads(args.reads.read_text())
    print(json.dumps(uvloop.run(store(args.account_id, reads))))


if __name__ == "__main__":
    main()
