"""The event loop's PostgreSQL connections (asyncpg) take the same database URL as the
threads' (psycopg, libpq): its libpq parameters are translated, not refused."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import func, literal, make_url, select

from storage.engine import Database, make_engine
from storage.loop_reader import connect_arguments
from storage.prepared import Prepared
from storage.reads import Plan, Read

_SETTING = Prepared(select(func.current_setting(literal("application_name"))))
_WORK_MEM = Prepared(select(func.current_setting(literal("work_mem"))))


def settings() -> Plan[tuple[str, str]]:
    [name] = yield Read(_SETTING, {})
    [memory] = yield Read(_WORK_MEM, {})
    return name[0], memory[0]


def test_libpq_options_become_server_settings() -> None:
    url = make_url(
        "postgresql+psycopg://u:p@db:5432/gw?options=-c%20work_mem%3D8MB%20-cstatement_timeout%3D5s"
        "%20--lock-timeout%3D1s"
    )
    dsn, server, timeout = connect_arguments(url)
    assert server == {"work_mem": "8MB", "statement_timeout": "5s", "lock_timeout": "1s"}
    assert dsn == "postgresql://u:p@db:5432/gw"
    assert timeout == 60.0


def test_connect_timeout_is_the_timeout_and_libpq_only_parameters_are_left_out() -> None:
    url = make_url(
        "postgresql+psycopg://u@db/gw?connect_timeout=7&keepalives_idle=30&sslmode=require"
        "&application_name=gw"
    )
    dsn, server, timeout = connect_arguments(url)
    assert timeout == 7.0
    assert server == {}
    assert "keepalives" not in dsn
    assert "connect_timeout" not in dsn
    assert "sslmode=require" in dsn
    assert "application_name=gw" in dsn


def test_the_url_s_settings_reach_the_event_loop_s_connections(database_url: str) -> None:
    """A URL with libpq's options, a connect timeout and a libpq-only parameter still
    serves reads on the event loop, with its settings in force."""
    if not database_url.startswith("postgresql"):
        pytest.skip("reads on the event loop are PostgreSQL's")
    extra = "connect_timeout=5&keepalives_idle=30&application_name=gw-test"
    url = f"{database_url}{'&' if '?' in database_url else '?'}{extra}&options=-c%20work_mem%3D7MB"
    database = Database(make_engine(url), threads=1)
    try:
        assert asyncio.run(database.read(settings)) == ("gw-test", "7MB")
    finally:
        database.dispose()
