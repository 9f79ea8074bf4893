"""Small HTTP fakes of the services the gateway talks to: Twilio, CM.com and CloudLink.

Mocks would only repeat what the gateway already believes about these services. These fakes
speak HTTP and enforce the services' documented rules (authentication, sender ownership,
signatures, error shapes, rate limits), so a test fails where production would. Each fake is
a Starlette app plus the state a test inspects; serve it with ``starlette.testclient`` or on
a loopback port with ``tests.fakes.loopback.serve_app``.
"""
