"""Group commit in the SQLite store: concurrent writes share transactions, never each other's fate.

A burst of messages from many chats is stored in a few transactions instead of one each; every
caller still returns only once its own turn is committed, a turn that cannot be stored fails only
its own caller, and closing the store waits for whatever is still queued.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from telegram_bot.models import ChatKey, NewTurn, Role
from telegram_bot.sqlite_store import SQLiteStore


def turn(chat: int, text: str, reply_to: int | None = None) -> NewTurn:
    return NewTurn(ChatKey(chat), Role.USER, text, 5, reply_to=reply_to)


def rows(path: Path) -> list[tuple[int, str]]:
    with sqlite3.connect(path) as conn:
        return list(conn.execute("SELECT chat_id, text FROM messages ORDER BY id"))


async def test_a_burst_from_many_chats_is_stored_whole_and_in_order(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "bot.sqlite3")
    await store.open()
    try:
        ids = await asyncio.gather(
            *(store.add_turn(turn(chat, f"{chat}-{n}")) for n in range(3) for chat in range(1, 41))
        )
        assert len(set(ids)) == 120
        for chat in (1, 17, 40):
            stored = await store.recent_turns(ChatKey(chat), 1000)
            assert [t.text for t in stored] == [f"{chat}-0", f"{chat}-1", f"{chat}-2"]
    finally:
        await store.close()


async def test_a_turn_that_cannot_be_stored_fails_alone(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "bot.sqlite3")
    await store.open()
    try:
        results = await asyncio.gather(
            store.add_turn(turn(1, "fine")),
            store.add_turn(turn(2, "replies to nothing", reply_to=999_999)),  # foreign key
            store.add_turn(turn(3, "also fine")),
            return_exceptions=True,
        )
    finally:
        await store.close()

    assert isinstance(results[1], sqlite3.IntegrityError)
    assert all(isinstance(r, int) for r in (results[0], results[2]))
    assert rows(tmp_path / "bot.sqlite3") == [(1, "fine"), (3, "also fine")]


async def test_closing_waits_for_queued_turns(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "bot.sqlite3")
    await store.open()
    pending = [asyncio.create_task(store.add_turn(turn(9, f"m{n}"))) for n in range(10)]
    await asyncio.sleep(0)  # queued, not yet committed

    await store.close()

    assert [text for _, text in rows(tmp_path / "bot.sqlite3")] == [f"m{n}" for n in range(10)]
    assert all(task.done() and not task.exception() for task in pending)


async def test_a_caller_that_gives_up_still_gets_its_turn_stored(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "bot.sqlite3")
    await store.open()
    task = asyncio.create_task(store.add_turn(turn(5, "keep me")))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await store.close()

    assert rows(tmp_path / "bot.sqlite3") == [(5, "keep me")]
