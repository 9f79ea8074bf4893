"""The peer of the benchmark: scim2-server's ASGI application over its async memory storage.

It serves the default resource types of scim2-server (User with the enterprise
extension, and Group) under ``/v2``, with no authentication.

It runs in one process under uvicorn, with the options of the gateway's ``serve``
(default loop and HTTP implementation, no access log, no Server header)::

    python bench/peer_app.py --host 127.0.0.1 --port 8081 --loop auto --http auto
"""

from __future__ import annotations

import argparse

import uvicorn
from scim2_server.applications.asgi import ASGIApplication
from scim2_server.memory import AsyncInMemoryStorage
from scim2_server.utils import load_default_provider

BASE_PATH = "/v2"


def build_app() -> ASGIApplication:
    """Build the peer's ASGI application, with an empty async in-memory storage."""
    return ASGIApplication(AsyncInMemoryStorage(), load_default_provider())


def main(argv: list[str] | None = None) -> None:
    """Serve the peer with uvicorn, in this process."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8081)
    parser.add_argument("--loop", default="auto", help="uvicorn event loop implementation")
    parser.add_argument("--http", default="auto", help="uvicorn HTTP implementation")
    parser.add_argument("--access-log", action="store_true", help="log every request")
    parser.add_argument("--log-level", default="warning")
    args = parser.parse_args(argv)
    uvicorn.run(
        build_app(),
        host=args.host,
        port=args.port,
        loop=args.loop,
        http=args.http,
        access_log=args.access_log,
        log_level=args.log_level,
        server_header=False,
    )


if __name__ == "__main__":
    main()
