"""The admin console at ``/admin``: server-rendered pages for the people who run the gateway.

Pages are Jinja2 templates; htmx (a vendored static file) updates parts of them in
place, and every page works without it. Each action calls the same service function as
the admin API, so there is one write path and one validation. Sign-in makes a
server-side session (``sessions``); every form and htmx request carries its CSRF token.
"""
