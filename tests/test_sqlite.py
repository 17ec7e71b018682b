"""What only the SQLite backend has: its file, its migrations, its connection's thread.

Migrations are tested from a blank database and from old schemas built by running only the
first migrations. The connection runs work on aiosqlite's thread through aiosqlite's private API
(`storage/sqlite/connection.py`); the test here says so plainly when a release changes it.
"""

from __future__ import annotations

import sqlite3
import threading
from contextlib import closing
from datetime import date
from pathlib import Path

import aiosqlite
import pytest

from telegram_bot.config import Settings
from telegram_bot.models import Author, ChatKey, NewSummary, NewTurn, Role, StoredTurn
from telegram_bot.storage import open_store
from telegram_bot.storage.sqlite import migrations
from telegram_bot.storage.sqlite.connection import run_on_connection_thread
from telegram_bot.storage.sqlite.store import SQLiteStore

CHAT = ChatKey(42)
DAY = date(2026, 3, 14)


def said(text: str, tg: int | None = None) -> NewTurn:
    return NewTurn(CHAT, Role.USER, text, 10, author=Author(7, "Ann"), tg_message_id=tg)


async def migrated_to(path: Path, count: int) -> aiosqlite.Connection:
    """A database as a release with only the first `count` migrations left it."""
    db = await aiosqlite.connect(path, isolation_level=None)
    await db.execute("CREATE TABLE _migrations (name TEXT PRIMARY KEY, applied_at REAL NOT NULL)")
    for migration in migrations.MIGRATIONS[:count]:
        await migration(db)
        await db.execute("INSERT INTO _migrations VALUES (?, 0)", (migration.__name__,))
    return db


def query(path: Path, sql: str) -> list[tuple[object, ...]]:
    with closing(sqlite3.connect(path)) as db:
        return list(db.execute(sql))


async def test_open_store_opens_the_database_the_settings_name(tmp_path: Path) -> None:
    store = open_store(Settings(database_path=tmp_path / "data" / "bot.sqlite3"))
    await store.open()
    await store.add_user_turn(said("hello"))
    await store.close()
    assert query(tmp_path / "data" / "bot.sqlite3", "SELECT text FROM messages") == [("hello",)]


async def test_data_survives_reopening(tmp_path: Path) -> None:
    first = SQLiteStore(tmp_path / "db.sqlite3")
    await first.open()
    ids = [(await first.add_user_turn(said(f"m{i}"))).id for i in range(4)]
    await first.save_summary(NewSummary(CHAT, "summary of m0 m1", 5, ids[0], ids[1]))
    await first.close()
    second = SQLiteStore(tmp_path / "db.sqlite3")
    await second.open()
    summary = await second.current_summary(CHAT)
    assert summary is not None and summary.messages_covered == 2
    assert [t.text for t in await second.unsummarised_turns(CHAT)] == ["m2", "m3"]
    await second.close()


async def test_migrations_from_blank_database_are_recorded_once(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite3"
    for _ in range(2):  # opening twice must not re-apply anything
        store = SQLiteStore(path)
        await store.open()
        await store.close()
    with closing(sqlite3.connect(path)) as db:
        names = [row[0] for row in db.execute("SELECT name FROM _migrations ORDER BY name")]
        mode = db.execute("PRAGMA journal_mode").fetchone()[0]
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert names == [m.__name__ for m in migrations.MIGRATIONS]
    assert mode == "wal"


async def test_m002_indexes_messages_of_a_database_from_before_it(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    db = await migrated_to(path, 1)
    await db.execute(
        "INSERT INTO messages (chat_id, role, text, tokens, created_at) "
        "VALUES (42, 'user', 'the invoice number is 88231', 9, 0)"
    )
    await db.close()
    store = SQLiteStore(path)
    await store.open()
    last = await store.add_user_turn(said("which invoice?"))
    [found] = await store.search_turns(CHAT, ["invoice"], before_id=last.id)
    assert found.text == "the invoice number is 88231" and not found.summarised
    await store.close()


async def test_m006_keeps_the_oldest_of_messages_stored_twice(tmp_path: Path) -> None:
    """Before m006 a redelivered overheard message could be stored twice; the unique index
    needs one row per Telegram id, and the oldest keeps it."""
    path = tmp_path / "old.sqlite3"
    db = await migrated_to(path, 5)
    insert = (
        "INSERT INTO messages (chat_id, role, text, tokens, tg_message_id, overheard, "
        "created_at) VALUES (?, ?, ?, 5, ?, ?, 0)"
    )
    rows = [
        (42, "user", "lunch?", 5, 1),
        (42, "user", "lunch?", 5, 1),  # the same update, delivered again
        (42, "assistant", "reply", 5, 0),  # the bot's message 5: not a user message
        (43, "user", "another chat", 5, 0),
        (42, "user", "lunch?", 5, 1),
        (42, "user", "console", None, 0),
        (42, "user", "console", None, 0),
    ]
    await db.executemany(insert, rows)
    await db.close()
    store = SQLiteStore(path)
    await store.open()
    try:
        stored = query(path, "SELECT id, chat_id, role, tg_message_id FROM messages ORDER BY id")
        assert [row[3] for row in stored] == [5, None, 5, 5, None, None, None]
        indexes = {row[0] for row in query(path, "SELECT name FROM sqlite_master")}
        assert "messages_user_tg" in indexes and "messages_tg" not in indexes
        again = await store.add_user_turn(said("lunch?", tg=5))
        assert again == StoredTurn(stored[0][0], created=False, answered=False)
    finally:
        await store.close()


async def test_m010_counts_replies_stored_before_it_as_delivered(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    db = await migrated_to(path, 6)  # m001..m006
    await db.execute(
        "INSERT INTO messages (chat_id, role, text, tokens, tg_message_id, created_at) "
        "VALUES (42, 'assistant', 'an old answer', 3, 77, 0)"
    )
    await db.close()
    store = SQLiteStore(path)
    await store.open()
    try:
        assert query(path, "SELECT undelivered, tg_message_id FROM messages") == [(0, 77)]
    finally:
        await store.close()


async def test_m009_adds_the_inbox_to_a_database_from_before_it(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    db = await migrated_to(path, migrations.MIGRATIONS.index(migrations.m009_inbox))
    await db.execute(
        "INSERT INTO messages (chat_id, role, text, tokens, created_at) "
        "VALUES (42, 'user', 'kept', 5, 0)"
    )
    await db.close()
    store = SQLiteStore(path)
    await store.open()
    try:
        assert query(path, "SELECT text FROM messages") == [("kept",)]
        assert await store.inbox_pending() == []
    finally:
        await store.close()


# -- opening a file that cannot be used: one line, and no thread left behind -------------------


def connection_threads() -> list[threading.Thread]:
    return [
        t for t in threading.enumerate() if t.is_alive() and not t.daemon and t.name != "MainThread"
    ]


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"this is not a database at all, just some text" * 100, "is not a SQLite database"),
        (None, "is corrupt"),  # a real database cut short
    ],
)
async def test_a_bad_file_is_one_line_naming_it_and_leaves_no_thread(
    tmp_path: Path, content: bytes | None, problem: str
) -> None:
    from telegram_bot.errors import StorageUnusable

    path = tmp_path / "bot.sqlite3"
    if content is None:
        good = SQLiteStore(tmp_path / "good.sqlite3")
        await good.open()
        await good.inbox_add([])
        await good.close()
        whole = (tmp_path / "good.sqlite3").read_bytes()
        content = whole[: len(whole) // 3]
    path.write_bytes(content)
    before = connection_threads()
    with pytest.raises(StorageUnusable) as raised:
        await SQLiteStore(path).open()
    assert raised.value.describe().startswith(f"Database {path} {problem}")
    for thread in set(connection_threads()) - set(before):
        thread.join(timeout=10)  # it ends right after handing back the close
        assert not thread.is_alive(), "aiosqlite's thread (not a daemon) was left running"


async def test_new_database_files_are_private_from_the_start(tmp_path: Path) -> None:
    path = tmp_path / "data" / "bot.sqlite3"
    store = SQLiteStore(path)
    await store.open()
    try:
        await store.add_user_turn(said("a private thought"))
        assert (path.parent.stat().st_mode & 0o777) == 0o700
        for name in ("bot.sqlite3", "bot.sqlite3-wal", "bot.sqlite3-shm"):
            assert ((path.parent / name).stat().st_mode & 0o777) == 0o600, name
    finally:
        await store.close()


# -- the connection: one trip to aiosqlite's thread ------------------------------------------

AIOSQLITE_CHANGED = (
    f"aiosqlite {aiosqlite.__version__} changed the private API that "
    "telegram_bot/storage/sqlite/connection.py:run_on_connection_thread relies on "
    "(Connection._execute queues a callable on the connection's thread, Connection._conn is "
    "its sqlite3.Connection). Adapt that one function to the new release, or keep aiosqlite "
    "below this version in pyproject.toml."
)


async def test_aiosqlite_private_api_is_what_run_on_connection_thread_expects(
    tmp_path: Path,
) -> None:
    if not callable(getattr(aiosqlite.Connection, "_execute", None)):
        pytest.fail(AIOSQLITE_CHANGED)
    if not isinstance(getattr(aiosqlite.Connection, "_conn", None), property):
        pytest.fail(AIOSQLITE_CHANGED)
    async with aiosqlite.connect(tmp_path / "probe.sqlite3", isolation_level=None) as db:
        # aiosqlite's own thread, found through its public API alone.
        await db.create_function("thread_id", 0, threading.get_ident)
        [(worker,)] = list(await db.execute_fetchall("SELECT thread_id()"))

        def probe(conn: sqlite3.Connection) -> tuple[int, object]:
            conn.execute("CREATE TEMP TABLE probe (x)")  # visible to this connection only
            return threading.get_ident(), conn

        try:
            ran_on, conn = await run_on_connection_thread(db, probe)
        except (AttributeError, TypeError, ValueError) as error:
            pytest.fail(f"{AIOSQLITE_CHANGED} ({error!r})")
        assert isinstance(conn, sqlite3.Connection), AIOSQLITE_CHANGED
        assert ran_on == worker != threading.get_ident(), AIOSQLITE_CHANGED
        temp = await db.execute_fetchall("SELECT name FROM sqlite_temp_master")
        assert [row[0] for row in temp] == ["probe"], AIOSQLITE_CHANGED


async def test_a_failed_transaction_leaves_nothing_behind(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "db.sqlite3")
    await store.open()
    try:
        with pytest.raises(sqlite3.IntegrityError):  # no such message to reply to
            await store.add_reply(
                NewTurn(CHAT, Role.ASSISTANT, "orphan", 3, reply_to=999), user_id=7, day=DAY
            )
        assert query(tmp_path / "db.sqlite3", "SELECT COUNT(*) FROM chats") == [(0,)]
        assert (await store.add_user_turn(said("still works"))).created
    finally:
        await store.close()
