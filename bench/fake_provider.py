"""The fake Twilio API as a process of its own, for the outbox throughput benchmark.

The fake from ``tests/fakes`` with its accounts and numbers, plus ``GET /_stats?skip=N``
(messages received so far, the time of the first after the N skipped and of the last)
for the benchmark to read.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.fakes.twilio import FakeTwilio


def account(index: int) -> tuple[str, str, str]:
    """The SID, Auth Token and WhatsApp number of the fake's account ``index``."""
    return f"AC{index:032x}", f"bench-token-{index:04d}-0123456789", f"+1415555{index:04d}"


def build(accounts: int) -> Starlette:
    # The benchmark's customers write to the gateway directly: the fake never sees them.
    fake = FakeTwilio(enforce_window=False)
    for index in range(accounts):
        sid, token, number = account(index)
        fake.add_account(sid, token)
        fake.add_number(sid, number)
    times: list[float] = []
    inner = fake.app

    async def stats(request: Request) -> Response:
        skip = int(request.query_params.get("skip", "0"))
        return JSONResponse(
            {
                "sent": len(fake.sent),
                "first": times[skip] if len(times) > skip else None,
                "last": times[-1] if len(times) > skip else None,
            }
        )

    async def timed(scope, receive, send):  # type: ignore[no-untyped-def]
        await inner(scope, receive, send)
        if scope.get("method") == "POST" and scope["path"].endswith("/Messages.json"):
            times.append(time.time())

    return Starlette(routes=[Route("/_stats", stats), Mount("/", app=timed)])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--accounts", type=int, default=1)
    args = parser.parse_args()
    uvicorn.run(
        build(args.accounts),
        host="127.0.0.1",
        port=args.port,
        log_config=None,
        access_log=False,
    )


if __name__ == "__main__":
    main()
