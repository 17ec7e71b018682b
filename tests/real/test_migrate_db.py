"""`telegram-bot migrate-db --to postgresql://...`: moving an existing bot's SQLite database.

The command runs as a real process, configured through the environment as a user would; the
SQLite file is written by the store as the bot writes it; the result is read back through the
`Store` API of both backends, which must then answer every question alike.
"""

from __future__ import annotations

import asyncio
import os
import re
import sqlite3
import sys
from contextlib import closing
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from telegram_bot.models import (
    Attachment,
    Author,
    ChatKey,
    MessageKind,
    NewSummary,
    NewTurn,
    Role,
    Status,
    Usage,
)
from telegram_bot.storage import Store
from telegram_bot.storage.postgres.store import PostgresStore
from telegram_bot.storage.sqlite.store import SQLiteStore

pytestmark = pytest.mark.real_server

ROOT = Path(__file__).resolve().parents[2]
ALICE = ChatKey(1001)
GROUP = ChatKey(-500)
TOPIC = ChatKey(-100_777, 3)
SUPERGROUP = ChatKey(-1_000_000_500)
DAY = date(2026, 3, 14)
CHATS = (ALICE, GROUP, TOPIC, SUPERGROUP, ChatKey(-100_777))


@dataclass
class Run:
    code: int
    out: str
    err: str


async def migrate_db(sqlite_path: Path, dsn: str) -> Run:
    """`telegram-bot migrate-db --to <dsn>`, with DATABASE_PATH naming the SQLite file."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TELEGRAM_", "OPENAI_"))}
    env.update(PYTHONPATH=str(ROOT), DATABASE_PATH=str(sqlite_path), LOG_LEVEL="DEBUG")
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "telegram_bot",
        "migrate-db",
        "--to",
        dsn,
        cwd=sqlite_path.parent,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode is not None
    return Run(process.returncode, out.decode(), err.decode())


def with_password(dsn: str, password: str) -> str:
    """The same DSN with a password (the test server trusts local connections anyway)."""
    parts = urlsplit(dsn)
    return parts._replace(netloc=parts.netloc.replace("@", f":{password}@", 1)).geturl()


def said(chat: ChatKey, text: str, tg: int | None, user: int = 7) -> NewTurn:
    return NewTurn(chat, Role.USER, text, 10, author=Author(user, f"user{user}"), tg_message_id=tg)


def answer(chat: ChatKey, text: str, to: int, **fields: object) -> NewTurn:
    return NewTurn(chat, Role.ASSISTANT, text, 4, reply_to=to, model="gpt", **fields)  # type: ignore[arg-type]


async def a_bots_life(store: Store) -> None:
    """What a bot stores over a few weeks: chats, replies with usage, a summary, a reset, a
    retry, group chatter and topics, a persona, a group that became a supergroup, a blocked
    user, learned token factors."""
    for i in range(6):
        question = (await store.add_user_turn(said(ALICE, f"question {i} about my garden", i))).id
        await store.add_reply(
            answer(ALICE, f"answer {i}", question, usage=Usage(100 + i, 10)), user_id=7, day=DAY
        )
    turns = await store.unsummarised_turns(ALICE)
    await store.save_summary(
        NewSummary(ALICE, "Alice gardens.", 4, turns[0].id, turns[3].id, "gpt", Usage(80, 8))
    )
    await store.record_usage(ALICE, None, DAY, 80, 8)
    exchange = await store.last_exchange(ALICE)
    assert exchange is not None
    asked, old = exchange
    retried = await store.add_reply(
        answer(ALICE, "a better answer", asked.id, status=Status.STOPPED), user_id=7, day=DAY
    )
    await store.supersede([t.id for t in old], retried)
    await store.set_chat_active(ALICE.chat_id, False)
    for i in range(4):
        await store.add_overheard(said(GROUP, f"chatter {i}", 100 + i, user=8), keep=2)
    question = (
        await store.add_user_turn(said(GROUP, "@bot the invoice?", 110), chat_kind="group")
    ).id
    await store.add_reply(
        answer(GROUP, "It is 4471.", question), user_id=7, day=DAY, chat_kind="group"
    )
    await store.set_persona(GROUP.chat_id, "You are a pirate.", by_user=7)
    await store.move_chat(GROUP.chat_id, SUPERGROUP.chat_id)
    await store.add_user_turn(said(TOPIC, "topic talk", 5), chat_kind="supergroup")
    await store.add_user_turn(said(ChatKey(-100_777), "general talk", 5), chat_kind="supergroup")
    await store.archive(ChatKey(-100_777))
    photo = Attachment(MessageKind.PHOTO, "file-1", size=1234, width=1280, height=960)
    await store.add_user_turn(
        NewTurn(TOPIC, Role.USER, "[photo: my garden]", 9, tg_message_id=6,
                kind=MessageKind.PHOTO, attachments=(photo,))
    )  # fmt: skip
    await store.add_user_turn(
        NewTurn(TOPIC, Role.USER, "the transcript", 5, tg_message_id=7,
                kind=MessageKind.VOICE, duration=12)
    )  # fmt: skip
    await store.record_usage(TOPIC, 7, DAY, 0, 0, audio_seconds=12)
    await store.set_token_factor("gpt", 1.0)
    await store.set_token_factor("llama3", 1.27)


async def answers(store: Store) -> list[object]:
    """Everything the bot can ask its store, for every chat of `a_bots_life`."""
    found: list[object] = [await store.token_factors()]
    found.append(await store.usage_totals(DAY, DAY))
    found.append(await store.top_chats(DAY, DAY, 10))
    for chat in CHATS:
        found.append(await store.unsummarised_turns(chat))
        found.append(await store.backlog(chat, 60))
        found.append(await store.current_summary(chat))
        found.append(await store.last_exchange(chat))
        found.append(await store.get_persona(chat.chat_id))
        found.append(await store.usage_totals(DAY, DAY, chat_id=chat.chat_id))
        found.append(await store.search_turns(chat, ["garden", "invoice", "4471"], before_id=10**6))
    return found


async def opened(store: Store) -> Store:
    await store.open()
    return store


def sqlite_rows(path: Path, sql: str) -> list[tuple[object, ...]]:
    with closing(sqlite3.connect(path)) as db:
        return list(db.execute(sql))


async def test_a_bot_moves_to_postgresql_and_the_copy_can_be_run_again(
    tmp_path: Path, pg_dsn: str
) -> None:
    path = tmp_path / "bot.sqlite3"
    sqlite = await opened(SQLiteStore(path))
    await a_bots_life(sqlite)
    await sqlite.close()
    dsn = with_password(pg_dsn, "Sup3r-s3cret-pw")

    first = await migrate_db(path, dsn)
    assert first.code == 0, first.err
    assert "Sup3r-s3cret-pw" not in first.out + first.err
    counts = {line.split()[0]: line.split()[1:] for line in first.out.splitlines()[2:8]}
    expected_messages = sqlite_rows(path, "SELECT count(*) FROM messages")[0][0]
    assert counts["messages"] == [str(expected_messages)] * 2 + [str(expected_messages), "0", "0"]
    assert counts["chats"][:3] == ["4", "4", "4"]
    assert "Counts match. Copied" in first.out
    indexed = re.search(r"^recall index\s+(\d+)", first.out, re.MULTILINE)
    assert indexed is not None and int(indexed[1]) == expected_messages

    # The same questions get the same answers from both stores.
    sqlite, postgres = await opened(SQLiteStore(path)), await opened(PostgresStore(pg_dsn))
    try:
        assert await answers(postgres) == await answers(sqlite)
    finally:
        await sqlite.close()
        await postgres.close()

    again = await migrate_db(path, dsn)
    assert again.code == 0, again.err
    assert "Nothing to copy: PostgreSQL already holds every row." in again.out

    # The bot ran on SQLite a little longer: the next copy takes only what changed.
    sqlite = await opened(SQLiteStore(path))
    question = (await sqlite.add_user_turn(said(ALICE, "one more question", 50))).id
    await sqlite.add_reply(answer(ALICE, "one more answer", question), user_id=7, day=DAY)
    await sqlite.archive(ALICE)
    await sqlite.close()
    later = await migrate_db(path, dsn)
    assert later.code == 0, later.err
    [messages] = [line.split() for line in later.out.splitlines() if line.startswith("messages")]
    assert messages[3] == "2", "the two new messages"
    assert int(messages[4]) > 0, "and the ones /reset archived, updated"
    assert messages[5] == "0"

    sqlite, postgres = await opened(SQLiteStore(path)), await opened(PostgresStore(pg_dsn))
    try:
        assert await answers(postgres) == await answers(sqlite)
        # Ids continue after the file's: a new message in PostgreSQL takes the next one.
        newest = sqlite_rows(path, "SELECT seq FROM sqlite_sequence WHERE name = 'messages'")
        stored = await postgres.add_user_turn(said(ALICE, "first on PostgreSQL", 60))
        assert stored.id == newest[0][0] + 1
    finally:
        await sqlite.close()
        await postgres.close()

    # Now the bot has written to PostgreSQL: copying the file again would mix two histories.
    refused = await migrate_db(path, dsn)
    assert refused.code == 1
    assert "The bot has written to PostgreSQL since the last copy" in refused.err


async def test_a_column_postgresql_lacks_stops_the_copy_before_anything_is_written(
    tmp_path: Path, pg_dsn: str
) -> None:
    """A SQLite migration that was not ported must be noticed, not silently dropped."""
    path = tmp_path / "bot.sqlite3"
    sqlite = await opened(SQLiteStore(path))
    await a_bots_life(sqlite)
    await sqlite.close()
    with closing(sqlite3.connect(path)) as db:
        db.execute("ALTER TABLE usage ADD COLUMN unported_tokens INTEGER NOT NULL DEFAULT 0")
        db.execute("CREATE TABLE media (id INTEGER PRIMARY KEY, chat_id INTEGER)")
        db.commit()
    refused = await migrate_db(path, pg_dsn)
    assert refused.code == 1
    assert "PostgreSQL has no place for media, usage.unported_tokens of the SQLite" in refused.err
    postgres = await opened(PostgresStore(pg_dsn))
    try:
        assert await postgres.unsummarised_turns(ALICE) == [], "nothing was copied"
    finally:
        await postgres.close()


async def test_a_database_the_bot_already_uses_is_refused(tmp_path: Path, pg_dsn: str) -> None:
    path = tmp_path / "bot.sqlite3"
    sqlite = await opened(SQLiteStore(path))
    await a_bots_life(sqlite)
    await sqlite.close()
    postgres = await opened(PostgresStore(pg_dsn))
    await postgres.add_user_turn(said(ALICE, "written by a bot on PostgreSQL", 1))
    await postgres.close()
    refused = await migrate_db(path, pg_dsn)
    assert refused.code == 1
    assert "already holds data (table chats) that migrate-db did not copy" in refused.err


async def test_a_missing_file_or_a_bad_url_is_one_line(tmp_path: Path, pg_dsn: str) -> None:
    missing = await migrate_db(tmp_path / "nothing.sqlite3", pg_dsn)
    assert missing.code == 1
    assert missing.err.strip().splitlines() == [
        f"Cannot copy: There is no SQLite database at {tmp_path / 'nothing.sqlite3'}."
    ]
    assert not (tmp_path / "nothing.sqlite3").exists(), "no empty database was made"
    bad = await migrate_db(tmp_path / "nothing.sqlite3", "mysql://u:p@host/db")
    assert bad.code == 2 and bad.err.startswith("migrate-db --to: expected a postgresql://")
