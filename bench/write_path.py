"""The webhook benchmark's write alone: how fast one process stores inbound messages, no HTTP.

The gateway's SQLite writers, one per process, take turns at the file's one write lock,
so however many processes serve, the webhooks cannot be stored faster than one writer
stores them. This measures that writer with nothing else in the way: the same unit a
Twilio webhook runs (``chat.receive_message`` of a message parsed by the Twilio receiver,
one of 100 customers with open conversations, the same ~500-byte text), ``in_flight`` at
once on one event loop (as 32 connections keep 32 webhooks waiting), committed by the
writer thread in groups, durably (synchronous FULL). No request is parsed, no signature
checked, no answer written.

    python bench/write_path.py CHANNEL_ID --count 20000   # run by bench/webhooks.py

With the environment of a gateway that has set the channel and its conversations up
(``GATEWAY_DATA_DIR`` and the rest), and that is stopped.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid

import uvloop
from webhooks import CUSTOMERS, PADDING, Channel, customer_of, params_for

from gateway.app import open_database
from gateway.channels.service import live_channel
from gateway.chat import service as chat
from gateway.settings import Settings
from gateway.webhooks.twilio import TWILIO_ACTOR, parse_inbound


async def store(channel_id: str, count: int, in_flight: int, customers: int) -> dict[str, float]:
    """Store ``count`` new messages, ``in_flight`` at a time; units per second."""
    db = open_database(Settings())
    try:
        channel = await db.query(live_channel, channel_id)
        assert channel is not None, "no such channel: set the data directory up first"
        posted_to = Channel("", channel_id, "", "", channel.number or "")
        slots = asyncio.Semaphore(in_flight)

        async def one(index: int) -> None:
            async with slots:
                fields = params_for(
                    posted_to,
                    customer_of(index % customers),
                    "SM" + uuid.uuid4().hex,
                    PADDING + str(index),
                )
                message = parse_inbound(channel, fields)
                await chat.receive_message(db, message, actor=TWILIO_ACTOR)

        started = time.perf_counter()
        await asyncio.gather(*(one(index) for index in range(count)))
        seconds = time.perf_counter() - started
    finally:
        db.dispose()
    return {"units": count, "seconds": seconds, "per_second": count / seconds}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("channel_id")
    parser.add_argument("--count", type=int, default=20_000)
    parser.add_argument("--in-flight", type=int, default=32)
    parser.add_argument("--customers", type=int, default=CUSTOMERS)
    args = parser.parse_args()
    result = uvloop.run(store(args.channel_id, args.count, args.in_flight, args.customers))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
