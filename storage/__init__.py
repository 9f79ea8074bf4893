"""Persistence: the engine, the tables, migrations and the repositories built on them."""
