"""The console's routes, mounted by the app under ``/admin``.

Each module is a part of the console: a GET shows; a POST changes, then redirects to the
page that shows the change (so a reload never repeats it), except where the answer holds
a secret shown once (SCIM keys, an endpoint's secret), which is rendered in place.
"""

from __future__ import annotations

from gateway.console import accounts, endpoints, events, messaging, oidc, presence, sign_in

ROUTES = [
    *sign_in.ROUTES,
    *oidc.ROUTES,
    *accounts.ROUTES,
    *messaging.ROUTES,
    *endpoints.ROUTES,
    *presence.ROUTES,
    *events.ROUTES,
]
