"""The database at runtime: locked by another process, or on a full disk. The user gets one
line saying so, the log names the cause, and other chats are served where the store can."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import sqlite3
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from telegram_bot.storage.sqlite.store import SQLiteStore
from telegram_bot.telegram_adapter.services import services_of
from tests.fakes import ChatRequest, FakeOpenAI, FakeTelegram, Reply
from tests.harness import RunningBot, eventually, make_settings
from tests.test_private_chat import ALICE, BOB, ask, final_messages

Query = Callable[..., list[tuple[Any, ...]]]
Factory = Callable[..., RunningBot]
USERS = "SELECT text FROM messages WHERE role = 'user' ORDER BY id"


@contextlib.contextmanager
def locked(path: Path) -> Iterator[sqlite3.Connection]:
    """Another process's write lock on the database (the sqlite3 shell in a transaction, a
    backup tool...): SQLite's locks are per file, so a second connection holds it alike."""
    other = sqlite3.connect(path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        yield other
        other.execute("COMMIT")
    finally:
        other.close()


async def test_a_lock_held_elsewhere_stalls_no_other_chat_and_the_message_waits_for_it(
    bot: RunningBot, tg: FakeTelegram, ai: FakeOpenAI, db: Query, db_path: Path
) -> None:
    ai.enqueue("Answered once the lock is gone.")
    with locked(db_path):
        tg.send_text(ALICE, "hello", user_id=ALICE)
        await tg.wait_for("sendChatAction", lambda c: c.chat_id == ALICE)  # her write waits
        [usage] = await ask(tg, BOB, "/usage")  # a read in another chat: served meanwhile
        assert "Your usage" in tg.visible_text(usage)
        assert final_messages(tg, ALICE) == [], "Alice's message is still waiting, not failed"
    [reply] = await tg.wait_for("sendMessage", lambda c: c.chat_id == ALICE)
    assert tg.visible_text(reply) == "Answered once the lock is gone."
    assert db(USERS) == [("hello",)]


async def test_a_lock_held_too_long_gets_the_storage_line_and_an_error_log(
    bot_factory: Factory,
    tg: FakeTelegram,
    ai: FakeOpenAI,
    db: Query,
    db_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    running = await bot_factory(database_busy_timeout=0.3).start()
    try:
        with locked(db_path), caplog.at_level(logging.ERROR):
            [notice] = await ask(tg, ALICE, "hello")
        assert "storage is busy" in tg.visible_text(notice)
        assert "not saved" in tg.visible_text(notice)
        [record] = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert "locked" in record.getMessage() and str(db_path) in record.getMessage()
        assert record.exc_info is None, "one line, no traceback"
        assert db(USERS) == [] and ai.requests == []
        ai.enqueue("Fine again.")
        [reply] = await ask(tg, ALICE, "hello again")
        assert tg.visible_text(reply) == "Fine again."
    finally:
        await running.stop()


async def test_a_full_database_refuses_with_the_storage_line_and_serves_reads(
    bot: RunningBot, tg: FakeTelegram, ai: FakeOpenAI, db: Query, caplog: pytest.LogCaptureFixture
) -> None:
    """SQLite's own size limit stands in for a full disk (the real one is tested below where
    a small file system can be mounted): the bot's connection may not grow the file."""
    ai.enqueue("A first answer.")
    await ask(tg, ALICE, "a first message")
    await eventually(
        lambda: db("SELECT undelivered FROM messages WHERE role = 'assistant'"),
        lambda rows: rows == [(0,)],
    )
    store = services_of(bot.application).store
    assert isinstance(store, SQLiteStore)
    await store._conn.rows("VACUUM")  # no free pages left inside the file
    [(pages,)] = db("PRAGMA page_count")
    await store._conn.rows(f"PRAGMA max_page_count = {pages}")  # the "disk" is full now
    with caplog.at_level(logging.ERROR):
        [notice] = await ask(tg, ALICE, "a long message " * 400)  # needs new pages
        [usage] = await ask(tg, BOB, "/usage")
    assert "storage is full" in tg.visible_text(notice)
    assert "not saved" in tg.visible_text(notice)
    assert "Your usage" in tg.visible_text(usage), "reads are still served"
    assert "full" in caplog.text and "Traceback" not in caplog.text
    assert db(USERS) == [("a first message",)]
    await store._conn.rows(f"PRAGMA max_page_count = {2**31}")  # space freed
    ai.enqueue("Saved this time.")
    [reply] = await ask(tg, ALICE, "a long message " * 400)
    assert tg.visible_text(reply) == "Saved this time."


async def test_an_answer_that_cannot_be_stored_is_still_delivered_with_a_line(
    bot: RunningBot, tg: FakeTelegram, ai: FakeOpenAI, db: Query
) -> None:
    answer = "A long answer that the disk has no room for. " * 300
    ready = asyncio.Event()

    async def when_ready(_request: ChatRequest) -> Reply:
        await ready.wait()
        return Reply(answer, chunk_chars=2000)

    ai.responder = when_ready
    tg.send_text(ALICE, "short?", user_id=ALICE)
    await ai.wait_for_requests(1)  # the question is stored; now the disk fills up
    store = services_of(bot.application).store
    assert isinstance(store, SQLiteStore)
    await store._conn.rows("VACUUM")
    [(pages,)] = db("PRAGMA page_count")
    await store._conn.rows(f"PRAGMA max_page_count = {pages}")
    ready.set()
    await tg.wait_for("sendMessage", lambda c: "saved" in tg.visible_text(c))
    *parts, notice = final_messages(tg, ALICE)
    assert " ".join(tg.visible_text(p) for p in parts) == answer.strip(), "delivered whole"
    assert "this answer was not saved" in tg.visible_text(notice)
    assert db("SELECT role FROM messages") == [("user",)]


def query(path: Path, sql: str) -> list[tuple[Any, ...]]:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return list(conn.execute(sql))


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 2 MiB file system (tmpfs); needs root, so skipped where it cannot be mounted."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)],
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(directory: Path) -> Path:
    """Writes a file until the disk is full; returns it (delete it to free the space)."""
    filler = directory / "filler"
    with filler.open("wb") as out:
        try:
            while True:
                out.write(b"\0" * 65536)
                out.flush()
                os.fsync(out.fileno())
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    return filler


@pytest.fixture
async def bot_on_small_disk(
    small_disk: Path, tg: FakeTelegram, ai: FakeOpenAI
) -> AsyncIterator[RunningBot]:
    settings = make_settings(tg.base_url, ai.base_url, small_disk / "bot.sqlite3")
    running = await RunningBot(settings).start()
    yield running
    await running.stop()


async def test_a_full_disk_refuses_with_the_storage_line_and_other_chats_read_on(
    bot_on_small_disk: RunningBot,
    small_disk: Path,
    tg: FakeTelegram,
    ai: FakeOpenAI,
    caplog: pytest.LogCaptureFixture,
) -> None:
    ai.enqueue("A first answer.")
    await ask(tg, ALICE, "a first message")
    delivered = "SELECT 1 FROM messages WHERE role = 'assistant' AND undelivered = 0"
    await eventually(lambda: query(small_disk / "bot.sqlite3", delivered), bool)
    filler = fill(small_disk)
    with caplog.at_level(logging.ERROR):
        [notice] = await ask(tg, ALICE, "a message for a full disk " * 100)
        [usage] = await ask(tg, BOB, "/usage")
    assert "storage is full" in tg.visible_text(notice)
    assert "Your usage" in tg.visible_text(usage)
    [record] = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert "disk is full" in record.getMessage() and record.exc_info is None
    filler.unlink()
    ai.enqueue("Saved this time.")
    [reply] = await ask(tg, ALICE, "and now?")
    assert tg.visible_text(reply) == "Saved this time."
    path = small_disk / "bot.sqlite3"
    assert query(path, "PRAGMA integrity_check") == [("ok",)]
    assert query(path, USERS) == [("a first message",), ("and now?",)]
