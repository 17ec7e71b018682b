"""What only the PostgreSQL backend has: migrations under a lock, round trips, the pool's rules,
and an unreachable server. The `Store` contract itself is tests/test_store.py, run over both
backends. Each test gets a fresh database on a real PostgreSQL (`pg_dsn`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import date
from typing import TypeVar
from urllib.parse import urlsplit

import asyncpg
import pytest

from telegram_bot.config import Settings
from telegram_bot.errors import DatabaseUnavailable
from telegram_bot.models import Author, ChatKey, NewTurn, Role, Usage
from telegram_bot.storage import open_store
from telegram_bot.storage.postgres import migrations
from telegram_bot.storage.postgres.store import PostgresStore
from tests.real.postgres import free_port
from tests.real.wire import RoundTripCounter, counting

pytestmark = pytest.mark.real_server

CHAT = ChatKey(42)
DAY = date(2026, 3, 14)
EVERY_MIGRATION = [m.__name__ for m in migrations.MIGRATIONS]
T = TypeVar("T")


def said(text: str, tg: int | None = None, chat: ChatKey = CHAT) -> NewTurn:
    return NewTurn(chat, Role.USER, text, 10, author=Author(7, "Ann"), tg_message_id=tg)


def reply(text: str, to: int) -> NewTurn:
    return NewTurn(CHAT, Role.ASSISTANT, text, 5, reply_to=to, model="m", usage=Usage(50, 5))


async def fetch(dsn: str, sql: str, *args: object) -> list[tuple[object, ...]]:
    connection = await asyncpg.connect(dsn)
    try:
        return [tuple(row) for row in await connection.fetch(sql, *args)]
    finally:
        await connection.close()


async def test_open_store_chooses_postgresql_for_a_database_url(pg_dsn: str) -> None:
    store = open_store(Settings(database_url=pg_dsn))
    assert isinstance(store, PostgresStore)
    await store.open()
    try:
        await store.add_user_turn(said("hello"))
    finally:
        await store.close()
    assert await fetch(pg_dsn, "SELECT text FROM messages") == [("hello",)]


async def test_a_blank_database_gets_every_migration_once(pg_dsn: str) -> None:
    for _ in range(2):
        store = PostgresStore(pg_dsn)
        await store.open()
        await store.close()
    applied = await fetch(pg_dsn, "SELECT name FROM _migrations ORDER BY name")
    assert [name for (name,) in applied] == EVERY_MIGRATION


async def test_replicas_starting_together_migrate_exactly_once(
    pg_dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "telegram_bot.storage.postgres.connection")
    replicas = [PostgresStore(pg_dsn, pool_size=2) for _ in range(6)]
    await asyncio.gather(*(replica.open() for replica in replicas))
    try:
        migrated = [
            r.getMessage() for r in caplog.records if "applied p001_schema" in r.getMessage()
        ]
        assert len(migrated) == 1, "exactly one replica ran the migrations"
        # Every replica works on the one schema: six writers, six messages.
        stored = await asyncio.gather(
            *(r.add_user_turn(said(f"from replica {i}", tg=i)) for i, r in enumerate(replicas))
        )
        assert all(s.created for s in stored)
    finally:
        await asyncio.gather(*(replica.close() for replica in replicas))
    applied = await fetch(pg_dsn, "SELECT name, count(*) FROM _migrations GROUP BY name ORDER BY 1")
    assert applied == [(name, 1) for name in EVERY_MIGRATION]


async def test_a_failing_migration_changes_nothing_and_frees_the_lock(
    pg_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def p999_broken(db: asyncpg.Connection) -> None:
        """A release whose last migration fails halfway."""
        await db.execute("CREATE TABLE half_done (x int)")
        await db.execute("SELECT 1 / 0")

    monkeypatch.setattr(migrations, "MIGRATIONS", (*migrations.MIGRATIONS, p999_broken))
    with pytest.raises(asyncpg.DivisionByZeroError):
        await PostgresStore(pg_dsn).open()
    tables = await fetch(pg_dsn, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    assert tables == [], "every migration of the failed start-up was rolled back"
    monkeypatch.undo()
    store = PostgresStore(pg_dsn)
    await asyncio.wait_for(store.open(), 30)  # the lock went with the failed transaction
    await store.close()


async def test_a_failed_statement_leaves_nothing_behind(pg_dsn: str) -> None:
    store = PostgresStore(pg_dsn)
    await store.open()
    try:
        with pytest.raises(asyncpg.ForeignKeyViolationError):  # no such message to reply to
            await store.add_reply(reply("orphan", to=999), user_id=7, day=DAY)
        assert await fetch(pg_dsn, "SELECT count(*) FROM chats") == [(0,)]
        assert await fetch(pg_dsn, "SELECT count(*) FROM usage") == [(0,)]
        assert (await store.add_user_turn(said("still works"))).created
    finally:
        await store.close()


async def hot_path(store: PostgresStore, counter: RoundTripCounter, tg: int) -> dict[str, int]:
    """The store calls of one message, in the engine's order, and the round trips of each."""
    trips: dict[str, int] = {}

    async def step(name: str, call: Awaitable[T]) -> T:
        before = counter.round_trips
        result = await call
        trips[name] = counter.round_trips - before
        return result

    stored = await step("add_user_turn", store.add_user_turn(said(f"the weather? ({tg})", tg)))
    await step("get_persona", store.get_persona(CHAT.chat_id))
    await step("backlog", store.backlog(CHAT, 10_000))
    await step("search_turns", store.search_turns(CHAT, ["weather"], before_id=stored.id))
    await step("add_reply", store.add_reply(reply("answer", stored.id), user_id=7, day=DAY))
    return trips


@pytest.mark.parametrize(("pgbouncer", "per_call"), [(False, 1), (True, 2)])
async def test_a_message_costs_one_round_trip_per_store_call(
    pg_dsn: str, pgbouncer: bool, per_call: int
) -> None:
    async with counting(pg_dsn) as (counter, through):
        store = PostgresStore(through, pool_size=2, pgbouncer=pgbouncer)
        await store.open()
        try:
            await hot_path(store, counter, 1)  # the pool connected, the statements prepared
            trips = await hot_path(store, counter, 2)
        finally:
            await store.close()
    # With PgBouncer's transaction pooling nothing is prepared: Parse/Describe is a trip too.
    calls = ("add_user_turn", "get_persona", "backlog", "search_turns", "add_reply")
    assert trips == dict.fromkeys(calls, per_call)


async def test_pgbouncer_mode_prepares_no_statements_on_the_server(pg_dsn: str) -> None:
    for pgbouncer, prepared in ((True, False), (False, True)):
        store = PostgresStore(pg_dsn, pool_size=1, pgbouncer=pgbouncer)
        await store.open()
        try:
            await store.add_user_turn(said("hello", tg=1 if pgbouncer else 2))
            await store.backlog(CHAT, 1000)
            count = await store.pool.fetchval("SELECT count(*) FROM pg_prepared_statements")
            assert (count > 0) is prepared
        finally:
            await store.close()


async def test_the_pool_is_handed_back_clean_for_code_that_shares_it(pg_dsn: str) -> None:
    """What coordination code on the shared pool may rely on: a transaction left open by a
    caller that failed is rolled back, and an xact advisory lock ends with its transaction."""
    store = PostgresStore(pg_dsn, pool_size=1)
    await store.open()
    try:
        with pytest.raises(RuntimeError):
            async with store.pool.acquire() as connection:
                await connection.execute("BEGIN")
                await connection.execute("SELECT pg_advisory_xact_lock(7)")
                raise RuntimeError("the caller failed mid-transaction")
        other = await store.database.connect_dedicated()
        try:
            assert await other.fetchval("SELECT pg_try_advisory_lock(7)"), "the lock was freed"
        finally:
            await other.close()
        assert (await store.add_user_turn(said("the pool still works"))).created
    finally:
        await store.close()


async def test_an_unreachable_server_is_one_clear_error_without_the_password() -> None:
    url = f"postgresql://bot:hunter2-secret@127.0.0.1:{free_port()}/botdb"
    store = PostgresStore(url)
    with pytest.raises(DatabaseUnavailable) as raised:
        await store.open()
    assert "127.0.0.1" in str(raised.value) and "botdb" in str(raised.value)
    assert "hunter2" not in str(raised.value)
    assert raised.value.user_message().startswith("I can't reach my database")
    await store.close()  # closing a store that never opened is fine


async def test_lost_connections_are_replaced_and_a_lost_query_is_one_clear_error(
    pg_dsn: str,
) -> None:
    store = PostgresStore(pg_dsn, pool_size=2)
    await store.open()
    database = urlsplit(pg_dsn).path.lstrip("/")

    async def drop_connections() -> None:
        """What a failover or a server restart does to the bot's connections."""
        await fetch(
            pg_dsn,
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = $1 AND pid <> pg_backend_pid()",
            database,
        )

    try:
        await store.add_user_turn(said("before"))
        await drop_connections()

        async def answers() -> bool:
            try:
                await store.get_persona(1)
            except DatabaseUnavailable:  # a call racing the server's goodbye may still fail
                return False
            return True

        # Idle connections that died are replaced: the store answers again by itself.
        await eventually_true(answers)
        assert (await store.add_user_turn(said("after the restart"))).created
        # A statement in flight when its connection dies fails with one clear error...
        running = asyncio.create_task(store.database.fetchval("SELECT pg_sleep(30)"))
        await eventually_true(lambda: _busy(pg_dsn, database))
        await drop_connections()
        with pytest.raises(DatabaseUnavailable):
            await asyncio.wait_for(running, 30)
        # ...and the next call gets a new connection.
        assert (await store.add_user_turn(said("later"))).created
    finally:
        await store.close()
    texts = await fetch(pg_dsn, "SELECT text FROM messages ORDER BY id")
    assert texts == [("before",), ("after the restart",), ("later",)]


async def _busy(dsn: str, database: str) -> bool:
    rows = await fetch(
        dsn,
        "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND query LIKE '%pg_sleep(30)%' "
        "AND state = 'active' AND pid <> pg_backend_pid()",
        database,
    )
    return bool(rows[0][0])


async def eventually_true(probe: Callable[[], Awaitable[bool]], within: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not await probe():
        assert asyncio.get_running_loop().time() < deadline, "the condition was never reached"
        await asyncio.sleep(0.02)


async def test_two_replicas_racing_for_each_message_store_each_once(pg_dsn: str) -> None:
    """The insert-or-get's second read (the winner committed after the loser's snapshot) is
    taken only in a close race; a hundred races make it likely, and every one must end with
    one stored message, created for exactly one replica."""
    first, second = PostgresStore(pg_dsn, pool_size=2), PostgresStore(pg_dsn, pool_size=2)
    await asyncio.gather(first.open(), second.open())
    try:
        for tg in range(100):
            results = await asyncio.gather(
                first.add_user_turn(said("q", tg)), second.add_user_turn(said("q", tg))
            )
            assert sorted(r.created for r in results) == [False, True]
            assert results[0].id == results[1].id
    finally:
        await asyncio.gather(first.close(), second.close())
    assert await fetch(pg_dsn, "SELECT count(*) FROM messages") == [(100,)]
