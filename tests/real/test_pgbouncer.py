"""The PostgreSQL backend behind a real PgBouncer in transaction mode (tests/real/pgbouncer.py):
why DATABASE_PGBOUNCER matters, what happens when LISTEN goes through PgBouncer, and the bot
(one process, then two replicas) with its pool through PgBouncer. The store contract runs
through it too (tests/test_store.py, backend `pgbouncer`)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import replace

import asyncpg
import pytest

from telegram_bot.config import Settings
from telegram_bot.coordination import Coordination
from telegram_bot.coordination.postgres import Replica, replica_coordination
from telegram_bot.storage.postgres.connection import Database
from telegram_bot.storage.postgres.store import PostgresStore
from tests.real.pgbouncer import PgBouncer

pytestmark = pytest.mark.real_server

QUERY = "SELECT $1::int + 1"


@pytest.mark.parametrize("pgbouncer_mode", [False, True], ids=["prepared", "DATABASE_PGBOUNCER"])
async def test_prepared_statements_break_through_transaction_pooling_unless_turned_off(
    pgbouncer_dsn: str, pgbouncer_mode: bool
) -> None:
    # Two connections made as the store makes its pool's. PgBouncer gives each transaction
    # whichever server connection is free (the last one freed first), so a statement asyncpg
    # prepared on one server connection is later sent, by name, to another.
    database = Database(pgbouncer_dsn, pgbouncer=pgbouncer_mode)
    a = await database.connect_dedicated()
    b = await database.connect_dedicated()
    try:
        async with a.transaction():  # a holds server connection 1
            await a.execute("SELECT 1")
            assert await b.fetchval(QUERY, 1) == 2  # b prepares on server connection 2
        # server connection 1, freed last, now serves b
        if pgbouncer_mode:
            assert await b.fetchval(QUERY, 2) == 3
        else:
            with pytest.raises(asyncpg.InvalidSQLStatementNameError, match="does not exist"):
                await b.fetchval(QUERY, 2)
    finally:
        await a.close()
        await b.close()


@contextlib.asynccontextmanager
async def replica(
    pool_dsn: str, listen_dsn: str
) -> AsyncIterator[tuple[Coordination, Replica]]:
    store = PostgresStore(pool_dsn, pool_size=2, pgbouncer=True)
    await store.open()
    settings = replace(
        Settings(database_url=pool_dsn, database_listen_url=listen_dsn, database_pgbouncer=True),
        replica_lease_seconds=2.0,
    )
    coordination, member = replica_coordination(store, settings)
    await member.start()
    try:
        yield coordination, member
    finally:
        await member.close()
        await store.close()


LISTEN_ADVICE = "DATABASE_LISTEN_URL"


async def test_listening_through_pgbouncer_in_transaction_mode_is_reported_at_start(
    pgbouncer_dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="telegram_bot")
    async with replica(pgbouncer_dsn, pgbouncer_dsn):
        pass
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, caplog.text
    line = errors[0].getMessage()
    assert "NOTIFY" in line and LISTEN_ADVICE in line and "PgBouncer" in line, line


async def test_listening_straight_at_postgresql_is_checked_and_quiet(
    pgbouncer_dsn: str, pg_dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="telegram_bot")
    async with replica(pgbouncer_dsn, pg_dsn):
        pass
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
