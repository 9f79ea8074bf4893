"""NUL characters are refused before they reach the database.

PostgreSQL text cannot hold NUL, and a query carrying one fails with a server error;
SQLite would store it silently. Paths and query strings are checked by each
``Surface``; decoded JSON bodies by ``gateway.web.bodies``.
"""

from __future__ import annotations

NUL_DETAIL = "Text may not contain NUL characters (\\u0000 or %00)."
