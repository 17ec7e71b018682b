"""The bot as a real process (`python -m telegram_bot`) against the fakes: kill -9 mid-reply,
restart, and a clean SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from tests.fakes import FakeOpenAI, FakeTelegram, Reply
from tests.harness import API_KEY, TOKEN, eventually
from tests.test_private_chat import ALICE, final_messages

Query = Callable[..., list[tuple[Any, ...]]]
LONG = "A reply that takes a long time to write, word by word. " * 40


class BotProcess:
    def __init__(self, tg: FakeTelegram, ai: FakeOpenAI, db_path: Path, **env: str) -> None:
        self.log_path = db_path.parent.parent / "bot.log"
        self.env = {
            **os.environ,
            "TELEGRAM_BOT_TOKEN": TOKEN,
            "OPENAI_API_KEY": API_KEY,
            "OPENAI_BASE_URL": ai.base_url,
            "TELEGRAM_API_BASE_URL": tg.base_url,
            "DATABASE_PATH": str(db_path),
            "STREAM_EDIT_INTERVAL": "0.05",
            "OPENAI_MAX_RETRIES": "0",
            "LOG_LEVEL": "INFO",
            **env,
        }
        self.tg = tg
        self.proc: asyncio.subprocess.Process | None = None

    async def spawn(self) -> BotProcess:
        """Starts the process without waiting for it to be ready."""
        with self.log_path.open("a") as log:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "telegram_bot",
                env=self.env,
                cwd=self.log_path.parent,  # no stray .env is read
                stdout=log,
                stderr=log,
                preexec_fn=lambda: os.umask(0o022),  # the usual umask, whatever the test runner's
            )
        return self

    async def start(self, ready: str = "getUpdates") -> BotProcess:
        """Starts the process and waits for its first call of `ready` (webhook: setWebhook)."""
        calls = len(self.tg.calls_to(ready))
        await self.spawn()
        await self.tg.wait_for(ready, count=calls + 1, timeout=30)
        return self

    async def wait(self) -> int:
        """The exit code; a process that does not end within 30 s fails the test (a hang)."""
        assert self.proc is not None
        return await asyncio.wait_for(self.proc.wait(), 30)

    @property
    def log(self) -> str:
        return self.log_path.read_text()


@pytest.fixture
async def process(
    tg: FakeTelegram, ai: FakeOpenAI, db_path: Path
) -> AsyncIterator[Callable[..., BotProcess]]:
    started: list[BotProcess] = []

    def make(**env: str) -> BotProcess:
        started.append(BotProcess(tg, ai, db_path, **env))
        return started[-1]

    yield make
    for bot in started:
        if bot.proc is not None and bot.proc.returncode is None:
            bot.proc.kill()
            await bot.proc.wait()


def integrity(db_path: Path) -> str:
    with sqlite3.connect(db_path) as conn:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])


async def test_kill_9_mid_reply_then_restart_loses_and_duplicates_nothing(
    process: Callable[..., BotProcess],
    tg: FakeTelegram,
    ai: FakeOpenAI,
    db: Query,
    db_path: Path,
) -> None:
    bot = await process().start()
    ai.enqueue(Reply(LONG, chunk_chars=5, delay_per_chunk=0.1))
    tg.send_text(ALICE, "write an essay", user_id=ALICE)
    await tg.wait_for("sendMessageDraft", count=3)
    assert bot.proc is not None
    bot.proc.kill()
    assert await bot.wait() == -signal.SIGKILL
    assert integrity(db_path) == "ok"
    assert db("SELECT role, text, status FROM messages") == [("user", "write an essay", "complete")]

    await bot.start()  # if Telegram delivers the update again, it is answered, not re-stored
    tg.send_text(ALICE, "are you back?", user_id=ALICE)
    await tg.wait_for("sendMessage", lambda c: tg.visible_text(c) == "Echo: are you back?")
    sql = "SELECT role, text, status FROM messages ORDER BY id"
    rows = await eventually(lambda: db(sql), lambda rows: rows[-1][1] == "Echo: are you back?")
    users = [text for role, text, _ in rows if role == "user"]
    assert users.count("write an essay") == 1 and users.count("are you back?") == 1
    assert all(status == "complete" for _, _, status in rows)
    assert rows[-2:] == [
        ("user", "are you back?", "complete"),
        ("assistant", "Echo: are you back?", "complete"),
    ]
    assert bot.proc is not None
    bot.proc.send_signal(signal.SIGTERM)
    assert await bot.wait() == 0
    assert integrity(db_path) == "ok"


async def test_sigterm_cuts_a_long_reply_short_stores_it_as_partial_and_closes_the_db(
    process: Callable[..., BotProcess],
    tg: FakeTelegram,
    ai: FakeOpenAI,
    db: Query,
    db_path: Path,
) -> None:
    bot = await process(SHUTDOWN_GRACE="0.3").start()
    ai.enqueue(Reply(LONG, chunk_chars=5, delay_per_chunk=0.1))
    tg.send_text(ALICE, "write an essay", user_id=ALICE)
    await tg.wait_for("sendMessageDraft", count=3)
    assert bot.proc is not None
    bot.proc.send_signal(signal.SIGTERM)
    assert await bot.wait() == 0
    partial, notice = [tg.visible_text(c) for c in final_messages(tg, ALICE)]
    assert LONG.startswith(partial) and len(partial) < len(LONG)
    assert "restarting" in notice
    [(text, status)] = db("SELECT text, status FROM messages WHERE role = 'assistant'")
    assert status == "partial" and text.strip() == partial
    assert integrity(db_path) == "ok"
    assert "database closed" in bot.log and "Traceback" not in bot.log


async def test_sigterm_lets_a_short_reply_finish(
    process: Callable[..., BotProcess], tg: FakeTelegram, ai: FakeOpenAI, db: Query
) -> None:
    bot = await process(SHUTDOWN_GRACE="20").start()
    ai.enqueue(Reply("Finished in time.", first_token_delay=0.5))
    tg.send_text(ALICE, "quick one", user_id=ALICE)
    await ai.wait_for_requests(1)
    assert bot.proc is not None
    bot.proc.send_signal(signal.SIGTERM)
    assert await bot.wait() == 0
    assert [tg.visible_text(c) for c in final_messages(tg, ALICE)] == ["Finished in time."]
    sql = "SELECT status FROM messages WHERE role = 'assistant'"
    assert await eventually(lambda: db(sql), bool) == [("complete",)]


async def test_an_update_delivered_twice_is_stored_once_and_answered_once(
    bot_factory: Callable[..., Any], tg: FakeTelegram, ai: FakeOpenAI, db: Query
) -> None:
    """What Telegram does when the bot died before confirming an update."""
    running = await bot_factory().start()
    try:
        update = tg.send_text(ALICE, "only once, please", user_id=ALICE)
        await tg.wait_for("sendMessage")
        await eventually(lambda: db("SELECT 1 FROM messages WHERE role = 'assistant'"), bool)
        tg.push_update({"message": update["message"]})  # a new update_id, the same message
        tg.send_text(ALICE, "next", user_id=ALICE)
        await tg.wait_for("sendMessage", lambda c: tg.visible_text(c) == "Echo: next")
        assert [r.last_user_text for r in ai.requests] == ["only once, please", "next"]
        texts = [row[0] for row in db("SELECT text FROM messages WHERE role = 'user'")]
        assert texts == ["only once, please", "next"]
    finally:
        await running.stop()


async def test_a_stored_but_unanswered_message_delivered_again_is_answered_without_a_copy(
    bot_factory: Callable[..., Any], tg: FakeTelegram, ai: FakeOpenAI, db: Query, db_path: Path
) -> None:
    from telegram_bot.models import ChatKey, NewTurn, Role
    from telegram_bot.storage.sqlite.store import SQLiteStore

    message = tg.make_message(ALICE, "asked just before the crash", user_id=ALICE)
    store = SQLiteStore(db_path)  # the state kill -9 left: question stored, no answer yet
    await store.open()
    await store.add_user_turn(
        NewTurn(ChatKey(ALICE), Role.USER, message["text"], 7, tg_message_id=message["message_id"])
    )
    await store.close()
    running = await bot_factory().start()
    try:
        tg.push_update({"message": message})
        [reply] = await tg.wait_for("sendMessage")
        assert tg.visible_text(reply) == "Echo: asked just before the crash"
        sql = "SELECT role, text FROM messages ORDER BY id"
        rows = await eventually(lambda: db(sql), lambda rows: len(rows) == 2)
        assert rows == [
            ("user", "asked just before the crash"),
            ("assistant", "Echo: asked just before the crash"),
        ]
        assert [m["content"] for m in ai.requests[0].messages[1:]] == [message["text"]]
    finally:
        await running.stop()
