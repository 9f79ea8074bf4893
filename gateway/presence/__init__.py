"""Everything Teams presence: per-source and combined states (``states``, ``service``),
Teams' changes coming in (``from_teams``), the Teams integration (``teams``), presence
monitors (``monitors``) and their sign-in (``sign_in``), notification certificates,
the system check, the admin routes, and the outbox jobs that talk to Graph (``jobs``)."""
