"""The PostgreSQL backend behind a real PgBouncer in transaction mode (tests/real/pgbouncer.py):
why DATABASE_PGBOUNCER matters, what happens when LISTEN goes through PgBouncer, and the bot
(one process, then two replicas) with its pool through PgBouncer. The store contract runs
through it too (tests/test_store.py, backend `pgbouncer`)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import asyncpg
import pytest

from telegram_bot.config import Settings
from telegram_bot.coordination import Coordination
from telegram_bot.coordination.postgres import Replica, replica_coordination
from telegram_bot.storage.postgres.connection import Database
from telegram_bot.storage.postgres.store import PostgresStore
from tests.fakes import FakeOpenAI, FakeTelegram, Reply
from tests.real.replicas import start_replicas
from tests.test_cli import bot_env
from tests.test_private_chat import ALICE, final_messages
from tests.test_process import LONG
from tests.test_store import said

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
async def replica(pool_dsn: str, listen_dsn: str) -> AsyncIterator[tuple[Coordination, Replica]]:
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


async def fetch(dsn: str, sql: str) -> list[tuple[object, ...]]:
    connection = await asyncpg.connect(dsn)
    try:
        return [tuple(row) for row in await connection.fetch(sql)]
    finally:
        await connection.close()


async def test_replicas_starting_together_through_pgbouncer_migrate_exactly_once(
    pgbouncer_dsn: str, pg_dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    # The migration lock is pg_advisory_xact_lock, held by the migrating transaction: a
    # transaction keeps its server connection in PgBouncer's transaction mode, so it holds.
    caplog.set_level(logging.INFO, "telegram_bot.storage.postgres.connection")
    stores = [PostgresStore(pgbouncer_dsn, pool_size=2, pgbouncer=True) for _ in range(4)]
    await asyncio.gather(*(store.open() for store in stores))
    try:
        migrated = [r for r in caplog.records if "applied p001_schema" in r.getMessage()]
        assert len(migrated) == 1, "exactly one replica ran the migrations"
        stored = await asyncio.gather(
            *(s.add_user_turn(said(f"from replica {i}", tg=i)) for i, s in enumerate(stores))
        )
        assert all(turn.created for turn in stored)
    finally:
        await asyncio.gather(*(store.close() for store in stores))
    counts = await fetch(pg_dsn, "SELECT count(*), count(DISTINCT name) FROM _migrations")
    assert counts[0][0] == counts[0][1] > 0, "each migration recorded once"


async def test_the_bot_process_through_pgbouncer_migrates_and_answers(
    tg: FakeTelegram, ai: FakeOpenAI, tmp_path: Path, pgbouncer_dsn: str, pg_dsn: str
) -> None:
    env = bot_env(
        tg,
        ai,
        tmp_path,
        DATABASE_URL=pgbouncer_dsn,
        DATABASE_PGBOUNCER="true",
        DATABASE_LISTEN_URL=pg_dsn,
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "telegram_bot",
        cwd=tmp_path,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    questions = ["first question", "second question", "third question"]
    try:
        for question in questions:
            tg.send_text(ALICE, question, user_id=ALICE)
            await tg.wait_for(
                "sendMessage", lambda c, q=question: tg.visible_text(c) == f"Echo: {q}", timeout=60
            )
        rows = await fetch(pg_dsn, "SELECT role, text FROM messages ORDER BY id")
    finally:
        process.terminate()
        stdout, stderr = await asyncio.wait_for(process.communicate(), 30)
    log = stderr.decode() + stdout.decode()
    assert process.returncode == 0, log
    assert [tuple(row) for row in rows] == [
        pair for q in questions for pair in (("user", q), ("assistant", f"Echo: {q}"))
    ]
    # The third request carried the first two exchanges: history read back through PgBouncer.
    assert [m.get("content") for m in ai.requests[2].messages][-5:] == [
        "first question",
        "Echo: first question",
        "second question",
        "Echo: second question",
        "third question",
    ]
    assert "PgBouncer mode); applied p001_schema" in log
    assert "NOTIFY did not arrive" not in log


async def test_stop_reaches_the_other_replica_with_the_pool_through_pgbouncer(
    tg: FakeTelegram, ai: FakeOpenAI, tmp_path: Path, pgbouncer_dsn: str, pg_dsn: str
) -> None:
    bots, balancer = await start_replicas(
        tg, ai, tmp_path, pgbouncer_dsn, DATABASE_PGBOUNCER="true", DATABASE_LISTEN_URL=pg_dsn
    )
    try:
        ai.enqueue(Reply(LONG, chunk_chars=5, delay_per_chunk=0.1))
        balancer.choose = lambda update: 0
        tg.send_text(ALICE, "write an essay", user_id=ALICE)
        await tg.wait_for("sendMessageDraft", count=2, timeout=120)
        balancer.choose = lambda update: 1
        stop = tg.send_command(ALICE, "/stop", user_id=ALICE)
        await tg.wait_for("sendMessage", lambda c: tg.visible_text(c) == "Stopped.", timeout=120)
        assert balancer.replicas_of(stop["update_id"]) == [1]
        partial, _stopped = [tg.visible_text(call) for call in final_messages(tg, ALICE)]
        assert LONG.startswith(partial) and len(partial) < len(LONG)
    finally:
        for bot in bots:
            if bot.proc is not None and bot.proc.returncode is None:
                bot.proc.kill()
                await bot.proc.wait()
        await balancer.close()
    assert "stopped from another replica" in bots[0].log
    assert all("PgBouncer mode" in bot.log for bot in bots)
    assert not any("NOTIFY did not arrive" in bot.log for bot in bots)
