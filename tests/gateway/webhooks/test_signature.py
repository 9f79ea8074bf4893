"""The gateway's Twilio signature check agrees with Twilio's own RequestValidator."""

from __future__ import annotations

import hashlib

from hypothesis import given
from hypothesis import strategies as st
from twilio.request_validator import RequestValidator

from gateway.webhooks import signature

TOKEN = "12345678901234567890123456789012"
URL = "https://gateway.example.com/webhooks/twilio/5f0c"

names = st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=0x2FFF), min_size=1)
values = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=0x2FFF))


@given(st.dictionaries(names, values, max_size=12))
def test_signatures_made_by_twilios_validator_are_accepted(params: dict[str, str]) -> None:
    """Any parameters, blank or unknown ones included, signed by RequestValidator, match."""
    signed = RequestValidator(TOKEN).compute_signature(URL, params)
    assert signature.matches(TOKEN, URL, list(params.items()), signed)


def test_a_changed_value_or_url_does_not_match() -> None:
    """The signature covers every value and the URL."""
    params = {"Body": "hi", "MessagingServiceSid": ""}
    signed = RequestValidator(TOKEN).compute_signature(URL, params)
    assert not signature.matches(TOKEN, URL, [("Body", "hi!"), ("MessagingServiceSid", "")], signed)
    assert not signature.matches(TOKEN, URL, [("Body", "hi")], signed)
    assert not signature.matches(TOKEN, URL + "x", list(params.items()), signed)
    assert not signature.matches(TOKEN, URL, list(params.items()), None)
    assert not signature.matches(TOKEN, URL, list(params.items()), "not base64!")


def test_the_default_port_may_be_written_or_not() -> None:
    """Like Twilio's validator, https://host and https://host:443 are the same URL."""
    params = {"Body": "hi"}
    with_port = "https://gateway.example.com:443/webhooks/twilio/5f0c"
    signed = RequestValidator(TOKEN).compute_signature(with_port, params)
    assert signature.matches(TOKEN, URL, list(params.items()), signed)
    signed_plain = RequestValidator(TOKEN).compute_signature(URL, params)
    assert signature.matches(TOKEN, with_port, list(params.items()), signed_plain)


def test_json_bodies_are_signed_over_the_url_with_their_hash() -> None:
    """A JSON body: the URL carries bodySHA256 and the signature covers the URL alone."""
    body = b'{"MessageSid": "SM1"}'
    url = f"{URL}?bodySHA256={hashlib.sha256(body).hexdigest()}"
    signed = RequestValidator(TOKEN).compute_signature(url, {})
    assert signature.matches(TOKEN, url, [], signed)
    assert signature.body_hash_matches(url, body)
    assert not signature.body_hash_matches(url, body + b" ")
    assert not signature.body_hash_matches(URL, body)
