"""The PostgreSQL fixtures work, and the asyncpg behaviour the PostgreSQL backend will rely on.

Each test gets its own database from `pg_dsn`; see docs/postgres.md for what each fact is for.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import pytest

from tests.real.postgres import URL_VARIABLE, PostgresServer, fresh_database

pytestmark = pytest.mark.real_server

# How long a test waits for something the server should do at once (a notification, a lock).
PROMPT = 10.0


async def user_tables(conn: asyncpg.Connection) -> list[str]:
    rows = await conn.fetch(
        "SELECT table_name FROM information_schema.tables"
        " WHERE table_schema NOT IN ('pg_catalog', 'information_schema')"
    )
    return [row["table_name"] for row in rows]


# -- the fixtures ---------------------------------------------------------------------------------


@pytest.mark.parametrize("run", ["first", "second"])
async def test_each_test_gets_its_own_empty_database(pg_dsn: str, run: str) -> None:
    # Both runs create the same table: the second would fail if they shared a database.
    conn = await asyncpg.connect(pg_dsn)
    try:
        assert (await conn.fetchval("SELECT current_database()")).startswith("pytest_")
        assert await user_tables(conn) == []
        await conn.execute("CREATE TABLE left_behind (run text)")
        await conn.execute("INSERT INTO left_behind VALUES ($1)", run)
    finally:
        await conn.close()


async def test_the_database_is_dropped_even_when_the_test_fails(pg_server: PostgresServer) -> None:
    admin = await asyncpg.connect(pg_server.dsn)
    try:
        with pytest.raises(RuntimeError, match="the test failed"):
            async with fresh_database(pg_server, "doomed") as dsn:
                name = dsn.rsplit("/", 1)[1]
                # A connection the test forgets to close must not keep the database alive.
                forgotten = await asyncpg.connect(dsn)
                raise RuntimeError("the test failed")
        forgotten.terminate()
        left = await admin.fetchval("SELECT count(*) FROM pg_database WHERE datname = $1", name)
        assert left == 0
    finally:
        await admin.close()


async def test_a_throwaway_cluster_is_local_fast_and_not_root(pg_server: PostgresServer) -> None:
    if pg_server.socket_dir is None:
        pytest.skip(f"not a throwaway cluster: {pg_server.origin}")
    # Reachable through the unix socket in its temp dir, not only over TCP.
    port = urlsplit(pg_server.dsn).port
    conn = await asyncpg.connect(host=str(pg_server.socket_dir), port=port, user="postgres")
    try:
        assert await conn.fetchval("SHOW listen_addresses") == "127.0.0.1"
        assert await conn.fetchval("SHOW fsync") == "off"
        data_directory = Path(await conn.fetchval("SHOW data_directory"))
    finally:
        await conn.close()
    assert data_directory.is_relative_to(pg_server.socket_dir)
    if os.geteuid() == 0:
        assert os.stat(data_directory).st_uid != 0, "PostgreSQL must not run as root"


def test_without_postgresql_the_tests_skip_and_say_why(tmp_path: Path) -> None:
    # A machine with no binaries, simulated in a separate pytest run; its tests must skip, and
    # the summary must say why even under -q.
    (tmp_path / "pytest.ini").write_text("[pytest]\nfilterwarnings = error\n")
    (tmp_path / "conftest.py").write_text(
        "import tests.real.conftest_postgres as fixtures\n"
        "fixtures.find_bin_dir = lambda: None\n"
        "from tests.real.conftest_postgres import pg_server\n"
    )
    (tmp_path / "test_needs_postgres.py").write_text(
        "def test_one(pg_server): pass\ndef test_two(pg_server): pass\n"
    )
    env = {k: v for k, v in os.environ.items() if k != URL_VARIABLE}
    env["PYTHONPATH"] = str(Path(__file__).parents[2])
    env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"  # a faster start; pg_server needs no plugin
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 skipped" in done.stdout
    reason = [line for line in done.stdout.splitlines() if "SKIPPED PostgreSQL tests" in line]
    assert len(reason) == 1, done.stdout
    assert "TEST_POSTGRES_URL is not set and no initdb/pg_ctl was found" in reason[0]


# -- asyncpg: no server-side prepared statements (PgBouncer in transaction mode) ------------------


async def named_statements(conn: asyncpg.Connection) -> int:
    count: int = await conn.fetchval("SELECT count(*) FROM pg_prepared_statements")
    return count


async def test_statement_cache_size_0_leaves_no_prepared_statement_on_the_server(
    pg_dsn: str,
) -> None:
    cached = await asyncpg.connect(pg_dsn)
    uncached = await asyncpg.connect(pg_dsn, statement_cache_size=0)
    try:
        for conn in (cached, uncached):
            for n in range(3):
                assert await conn.fetchval("SELECT $1::int + 1", n) == n + 1
        # The default caches named statements on the server, which breaks under PgBouncer's
        # transaction pooling; with the cache off, asyncpg uses only the unnamed statement.
        assert await named_statements(cached) > 0
        assert await named_statements(uncached) == 0
    finally:
        await cached.close()
        await uncached.close()


async def test_a_pool_without_statement_cache_runs_queries_with_arguments(pg_dsn: str) -> None:
    async with asyncpg.create_pool(pg_dsn, min_size=2, max_size=2, statement_cache_size=0) as pool:
        await pool.execute("CREATE TABLE turns (chat_id bigint, text text)")
        await pool.executemany(
            "INSERT INTO turns VALUES ($1, $2)", [(1, "hi"), (1, "there"), (2, "other")]
        )
        rows = await asyncio.gather(
            *(pool.fetch("SELECT text FROM turns WHERE chat_id = $1", 1) for _ in range(6))
        )
        assert all([r["text"] for r in found] == ["hi", "there"] for found in rows)
        async with pool.acquire() as conn:
            assert await named_statements(conn) == 0


# -- advisory locks across connections ------------------------------------------------------------

CHAT_LOCK = 42


async def test_a_transaction_advisory_lock_excludes_another_connection(pg_dsn: str) -> None:
    a = await asyncpg.connect(pg_dsn, statement_cache_size=0)
    b = await asyncpg.connect(pg_dsn, statement_cache_size=0)
    try:
        async with a.transaction():
            await a.execute("SELECT pg_advisory_xact_lock($1)", CHAT_LOCK)
            assert await b.fetchval("SELECT pg_try_advisory_lock($1)", CHAT_LOCK) is False
        # The commit released it.
        assert await b.fetchval("SELECT pg_try_advisory_lock($1)", CHAT_LOCK) is True
        assert await a.fetchval("SELECT pg_try_advisory_lock($1)", CHAT_LOCK) is False
        assert await b.fetchval("SELECT pg_advisory_unlock($1)", CHAT_LOCK) is True
        assert await a.fetchval("SELECT pg_try_advisory_lock($1)", CHAT_LOCK) is True
    finally:
        await a.close()
        await b.close()


async def test_a_second_connection_waits_for_the_lock_then_gets_it(pg_dsn: str) -> None:
    a = await asyncpg.connect(pg_dsn, statement_cache_size=0)
    b = await asyncpg.connect(pg_dsn, statement_cache_size=0)
    watcher = await asyncpg.connect(pg_dsn, statement_cache_size=0)

    async def b_locks() -> None:
        async with b.transaction():
            await b.execute("SELECT pg_advisory_xact_lock($1)", CHAT_LOCK)

    try:
        async with a.transaction():
            await a.execute("SELECT pg_advisory_xact_lock($1)", CHAT_LOCK)
            waiting = asyncio.create_task(b_locks())
            for _ in range(int(PROMPT / 0.01)):
                if await watcher.fetchval(
                    "SELECT count(*) FROM pg_locks"
                    " WHERE locktype = 'advisory' AND NOT granted AND pid = $1",
                    b.get_server_pid(),
                ):
                    break
                await asyncio.sleep(0.01)
            else:
                pytest.fail("the second connection never waited for the lock")
            assert not waiting.done()
        await asyncio.wait_for(waiting, PROMPT)
    finally:
        for conn in (a, b, watcher):
            await conn.close()


async def test_a_pool_releases_a_session_lock_when_the_connection_goes_back(pg_dsn: str) -> None:
    # asyncpg resets a pooled connection on release (pg_advisory_unlock_all, UNLISTEN *, ...):
    # a session-level lock lasts only while its connection is held.
    other = await asyncpg.connect(pg_dsn, statement_cache_size=0)
    try:
        async with asyncpg.create_pool(
            pg_dsn, min_size=1, max_size=1, statement_cache_size=0
        ) as pool:
            async with pool.acquire() as conn:
                assert await conn.fetchval("SELECT pg_try_advisory_lock($1)", CHAT_LOCK) is True
                assert await other.fetchval("SELECT pg_try_advisory_lock($1)", CHAT_LOCK) is False
            assert await other.fetchval("SELECT pg_try_advisory_lock($1)", CHAT_LOCK) is True
    finally:
        await other.close()


# -- LISTEN / NOTIFY ------------------------------------------------------------------------------


async def test_listen_notify_delivers_committed_notifications_in_order(pg_dsn: str) -> None:
    listener = await asyncpg.connect(pg_dsn)
    sender = await asyncpg.connect(pg_dsn, statement_cache_size=0)
    received: asyncio.Queue[tuple[str, str]] = asyncio.Queue()

    def on_notify(_conn: object, _pid: int, channel: str, payload: str) -> None:
        received.put_nowait((channel, payload))

    try:
        await listener.add_listener("chat_events", on_notify)
        # A notification is sent at commit: a rolled-back one never arrives.
        with pytest.raises(RuntimeError):
            async with sender.transaction():
                await sender.execute("SELECT pg_notify('chat_events', 'rolled back')")
                raise RuntimeError("rollback")
        async with sender.transaction():
            await sender.execute("SELECT pg_notify('chat_events', $1)", "stop chat 7")
        await sender.execute("NOTIFY chat_events, 'после'")
        # One sender's notifications arrive in order: "rolled back" would have come first.
        async with asyncio.timeout(PROMPT):
            assert await received.get() == ("chat_events", "stop chat 7")
            assert await received.get() == ("chat_events", "после")
        await listener.remove_listener("chat_events", on_notify)
    finally:
        await listener.close()
        await sender.close()


# -- full-text search -----------------------------------------------------------------------------


async def test_full_text_search_matches_and_ranks(pg_dsn: str) -> None:
    conn = await asyncpg.connect(pg_dsn, statement_cache_size=0)
    try:
        await conn.execute(
            """
            CREATE TABLE memories (
                id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                text text NOT NULL,
                tsv tsvector GENERATED ALWAYS AS (to_tsvector('simple', text)) STORED
            );
            CREATE INDEX memories_tsv ON memories USING gin (tsv);
            """
        )
        await conn.executemany(
            "INSERT INTO memories (text) VALUES ($1)",
            [
                ("My cat is called Tom, a grey cat",),
                ("The cat food brand is Whiskas",),
                ("Dog walks on Sunday",),
                ("Мой кот любит рыбу",),
            ],
        )

        async def search(function: str, query: str) -> list[str]:
            rows = await conn.fetch(
                f"""
                SELECT text, ts_rank(tsv, q) AS rank
                FROM memories, {function}('simple', $1) AS q
                WHERE tsv @@ q
                ORDER BY rank DESC, id
                """,
                query,
            )
            return [row["text"] for row in rows]

        # ts_rank puts the text with more matches first.
        assert await search("plainto_tsquery", "cat") == [
            "My cat is called Tom, a grey cat",
            "The cat food brand is Whiskas",
        ]
        assert await search("plainto_tsquery", "cat food") == ["The cat food brand is Whiskas"]
        # websearch syntax: "-word" excludes, "or" alternates, quotes ask for a phrase.
        assert await search("websearch_to_tsquery", "cat -whiskas") == [
            "My cat is called Tom, a grey cat"
        ]
        assert await search("websearch_to_tsquery", "tom or sunday") == [
            "My cat is called Tom, a grey cat",
            "Dog walks on Sunday",
        ]
        assert await search("websearch_to_tsquery", '"grey cat"') == [
            "My cat is called Tom, a grey cat"
        ]
        # Operators in user input are words to websearch_to_tsquery; to_tsquery chokes on them.
        typed = "cat) & (grey | !"
        assert await search("websearch_to_tsquery", typed) == ["My cat is called Tom, a grey cat"]
        with pytest.raises(asyncpg.PostgresSyntaxError):
            await search("to_tsquery", typed)
        # 'simple' folds case beyond ASCII too, if the database's LC_CTYPE is a UTF-8 locale.
        ctype = await conn.fetchval("SHOW lc_ctype")
        assert await search("plainto_tsquery", "КОТ") == ["Мой кот любит рыбу"], ctype
    finally:
        await conn.close()
