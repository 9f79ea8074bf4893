"""Which media types are passed on: what WhatsApp, Messenger and MMS carry, never a type a
browser would run."""

from __future__ import annotations

import pytest

from gateway.clients.media import passable


@pytest.mark.parametrize(
    "content_type",
    [
        "image/jpeg",
        "image/png; name=x.png",
        "audio/ogg; codecs=opus",
        "video/mp4",
        "application/pdf",
        "APPLICATION/PDF",
        "text/vcard",
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    ],
)
def test_what_the_channels_carry_is_passed_on(content_type: str) -> None:
    assert passable(content_type)


@pytest.mark.parametrize(
    "content_type",
    [
        "text/html",
        "text/html; charset=utf-8",
        "image/svg+xml",
        "application/xhtml+xml",
        "application/javascript",
        "application/octet-stream",
        "",
    ],
)
def test_what_a_browser_could_run_or_nobody_named_is_not(content_type: str) -> None:
    assert not passable(content_type)
