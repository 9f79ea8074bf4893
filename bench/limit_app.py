"""The limit of the webhook benchmark: what one uvicorn process answers with no gateway.

A bare Starlette endpoint that parses the form body (with the standard library, as the
gateway does; Starlette's own form parser needs python-multipart) and answers Twilio's
empty TwiML; served with the options ``cloudlink-gateway serve`` uses.
"""

from __future__ import annotations

import argparse
from urllib.parse import parse_qsl

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

TWIML = b'<?xml version="1.0" encoding="UTF-8"?><Response/>'


async def receive(request: Request) -> Response:
    form = dict(parse_qsl((await request.body()).decode(), keep_blank_values=True))
    if not form.get("MessageSid"):
        return Response(status_code=400)
    return Response(TWIML, media_type="text/xml")


app = Starlette(routes=[Route("/webhooks/twilio/{channel_id}", receive, methods=["POST"])])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=args.port,
        log_config=None,
        access_log=False,
        proxy_headers=True,
        server_header=False,
    )


if __name__ == "__main__":
    main()
