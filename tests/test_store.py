"""The storage contract, run against every backend: SQLite and PostgreSQL.

A backend joins by adding one entry to `BACKENDS`: a store and a `Peek` at its data; it then
has to pass exactly these tests. The tests use the `Store` API, and a `Peek` only for what the
API does not show (archived rows, a chat's row). The PostgreSQL runs use a real server (a fresh
database per test, from tests/real/conftest_postgres.py) and are skipped, with one line saying
why at the end of the run, where there is none.
"""

from __future__ import annotations

import asyncio
import random
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, closing
from datetime import date
from pathlib import Path
from typing import Any, Protocol

import asyncpg
import pytest

from telegram_bot.models import (
    Attachment,
    Author,
    Backlog,
    ChatKey,
    MessageKind,
    NewSummary,
    NewTurn,
    Role,
    Status,
    StoredTurn,
    Usage,
    UsageTotals,
)
from telegram_bot.storage import Store
from telegram_bot.storage.postgres.store import PostgresStore
from telegram_bot.storage.sqlite.store import SQLiteStore
from tests.real.pgbouncer import PgBouncer
from tests.real.postgres import PostgresServer, fresh_database


class Peek(Protocol):
    """Reads a backend's data beneath the `Store` API, as its owner would with the database's
    own shell."""

    async def messages(self, chat: ChatKey) -> list[tuple[str, bool]]:
        """Every stored message of the conversation, archived or not: (text, archived), oldest
        first."""

    async def chat(self, chat: ChatKey) -> tuple[str, bool] | None:
        """The conversation's chat row: (kind, active)."""


class SQLitePeek:
    def __init__(self, path: Path) -> None:
        self.path = path

    def _query(self, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        with closing(sqlite3.connect(self.path)) as db:
            return list(db.execute(sql, params))

    async def messages(self, chat: ChatKey) -> list[tuple[str, bool]]:
        sql = "SELECT text, archived FROM messages WHERE chat_id = ? AND thread_id = ? ORDER BY id"
        return [(text, bool(archived)) for text, archived in self._query(sql, chat_key(chat))]

    async def chat(self, chat: ChatKey) -> tuple[str, bool] | None:
        sql = "SELECT kind, active FROM chats WHERE chat_id = ? AND thread_id = ?"
        rows = self._query(sql, chat_key(chat))
        return (rows[0][0], bool(rows[0][1])) if rows else None


class PostgresPeek:
    def __init__(self, dsn: str) -> None:
        self.dsn = dsn

    async def _query(self, sql: str, params: tuple[Any, ...]) -> list[asyncpg.Record]:
        connection = await asyncpg.connect(self.dsn)
        try:
            return list(await connection.fetch(sql, *params))
        finally:
            await connection.close()

    async def messages(self, chat: ChatKey) -> list[tuple[str, bool]]:
        sql = (
            "SELECT text, archived FROM messages WHERE chat_id = $1 AND thread_id = $2 ORDER BY id"
        )
        return [(row[0], row[1]) for row in await self._query(sql, chat_key(chat))]

    async def chat(self, chat: ChatKey) -> tuple[str, bool] | None:
        sql = "SELECT kind, active FROM chats WHERE chat_id = $1 AND thread_id = $2"
        rows = await self._query(sql, chat_key(chat))
        return (rows[0][0], rows[0][1]) if rows else None


def chat_key(chat: ChatKey) -> tuple[int, int]:
    return (chat.chat_id, chat.thread_id)


Backend = tuple[Store, Peek]


async def sqlite_backend(request: pytest.FixtureRequest, stack: AsyncExitStack) -> Backend:
    path = request.getfixturevalue("tmp_path") / "bot.sqlite3"
    return SQLiteStore(path), SQLitePeek(path)


async def postgres_backend(request: pytest.FixtureRequest, stack: AsyncExitStack) -> Backend:
    server: PostgresServer = request.getfixturevalue("pg_server")  # skips without PostgreSQL
    dsn = await stack.enter_async_context(fresh_database(server, request.node.name))
    # A pool of 4: the concurrency tests race real connections, as replicas do.
    return PostgresStore(dsn, pool_size=4), PostgresPeek(dsn)


async def pgbouncer_backend(request: pytest.FixtureRequest, stack: AsyncExitStack) -> Backend:
    """PostgreSQL through a real PgBouncer in transaction mode, with DATABASE_PGBOUNCER."""
    bouncer: PgBouncer = request.getfixturevalue("pgbouncer")  # skips without pgbouncer
    server: PostgresServer = request.getfixturevalue("pg_server")
    dsn = await stack.enter_async_context(fresh_database(server, request.node.name))
    return PostgresStore(bouncer.through(dsn), pool_size=4, pgbouncer=True), PostgresPeek(dsn)


BACKENDS: dict[str, Callable[[pytest.FixtureRequest, AsyncExitStack], Awaitable[Backend]]] = {
    "sqlite": sqlite_backend,
    "postgres": postgres_backend,
    "pgbouncer": pgbouncer_backend,
}
ON_A_REAL_SERVER = {"postgres", "pgbouncer"}


@pytest.fixture(
    params=[
        pytest.param(name, marks=pytest.mark.real_server) if name in ON_A_REAL_SERVER else name
        for name in BACKENDS
    ]
)
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[Backend]:
    async with AsyncExitStack() as stack:
        store, peek = await BACKENDS[request.param](request, stack)
        await store.open()
        stack.push_async_callback(store.close)
        yield store, peek


@pytest.fixture
def store(backend: tuple[Store, Peek]) -> Store:
    return backend[0]


@pytest.fixture
def peek(backend: tuple[Store, Peek]) -> Peek:
    return backend[1]


CHAT = ChatKey(42)
GROUP = ChatKey(-500)
ANN = Author(7, "Ann")
DAY = date(2026, 3, 14)
NEXT_DAY = date(2026, 3, 15)


def said(text: str, chat: ChatKey = CHAT, *, tokens: int = 10, tg: int | None = None) -> NewTurn:
    """A user's message (`tg`: its Telegram id)."""
    return NewTurn(chat, Role.USER, text, tokens, author=ANN, tg_message_id=tg)


def overheard(text: str, chat: ChatKey = GROUP, *, tg: int | None = None) -> NewTurn:
    return NewTurn(chat, Role.USER, text, 5, author=Author(8, "Bob"), tg_message_id=tg)


async def ask(store: Store, text: str, chat: ChatKey = CHAT, *, tokens: int = 10) -> int:
    """Stores a user's message; returns its id."""
    return (await store.add_user_turn(said(text, chat, tokens=tokens))).id


async def answer(
    store: Store, text: str, chat: ChatKey = CHAT, *, reply_to: int | None = None, **fields: Any
) -> int:
    """Stores a reply (no usage booked); returns its id."""
    reply = NewTurn(
        chat, Role.ASSISTANT, text, fields.pop("tokens", 3), reply_to=reply_to, **fields
    )
    return await store.add_reply(reply, user_id=None, day=DAY)


async def history(store: Store, chat: ChatKey = CHAT) -> list[str]:
    """The texts of the conversation's live turns (nothing is summarised in these tests)."""
    return [t.text for t in await store.unsummarised_turns(chat)]


async def test_turns_come_back_in_order_with_their_fields(store: Store) -> None:
    await ask(store, "hello")
    await answer(store, "hi!", tokens=4, usage=Usage(12, 3), model="m", tg_message_id=9)
    turns = await store.unsummarised_turns(CHAT)
    assert [(t.role, t.text) for t in turns] == [(Role.USER, "hello"), (Role.ASSISTANT, "hi!")]
    assert turns[0].author == ANN
    assert turns[1].tg_message_id == 9
    assert turns[1].status is Status.COMPLETE


async def test_chats_and_topics_never_mix(store: Store) -> None:
    topic = ChatKey(-100, 5)
    await ask(store, "private")
    await ask(store, "group", ChatKey(-100))
    await ask(store, "topic", topic)
    assert await history(store) == ["private"]
    assert await history(store, ChatKey(-100)) == ["group"]
    assert await history(store, topic) == ["topic"]


async def test_archive_hides_turns_without_deleting_them(store: Store, peek: Peek) -> None:
    await ask(store, "old")
    await answer(store, "older")
    assert await store.archive(CHAT) == 2
    assert await history(store) == []
    assert await peek.messages(CHAT) == [("old", True), ("older", True)]


async def test_failed_turns_are_kept_but_never_replayed(store: Store, peek: Peek) -> None:
    await ask(store, "question")
    await answer(store, "half an ans", status=Status.PARTIAL)
    await answer(store, "", status=Status.FAILED)
    texts = [(t.text, t.status) for t in await store.unsummarised_turns(CHAT)]
    assert texts == [("question", Status.COMPLETE), ("half an ans", Status.PARTIAL)]
    assert len(await peek.messages(CHAT)) == 3


async def test_persona_is_stored_per_chat(store: Store) -> None:
    assert await store.get_persona(1) is None
    await store.set_persona(1, "You are a pirate.", by_user=7)
    await store.set_persona(2, "You are a poet.", by_user=8)
    assert await store.get_persona(1) == "You are a pirate."
    await store.set_persona(1, None, by_user=7)
    assert await store.get_persona(1) is None
    assert await store.get_persona(2) == "You are a poet."


async def test_chat_can_be_marked_inactive(store: Store, peek: Peek) -> None:
    question = await ask(store, "hi")
    assert await peek.chat(CHAT) == ("private", True)
    await store.set_chat_active(CHAT.chat_id, False)
    assert await peek.chat(CHAT) == ("private", False)
    await answer(store, "an answer", reply_to=question)
    assert await peek.chat(CHAT) == ("private", False), "a reply does not wake the chat"
    await ask(store, "I unblocked you")  # a user writes: active again
    assert await peek.chat(CHAT) == ("private", True)


async def test_a_redelivered_message_wakes_the_chat_too(store: Store, peek: Peek) -> None:
    await store.add_user_turn(said("hi", tg=5))
    await store.set_chat_active(CHAT.chat_id, False)
    assert not (await store.add_user_turn(said("hi", tg=5))).created
    assert await peek.chat(CHAT) == ("private", True)


async def test_concurrent_writes_from_many_tasks_all_land(store: Store) -> None:
    chats = [ChatKey(i) for i in range(1, 51)]
    await asyncio.gather(*(ask(store, f"hello {c.chat_id}", c) for c in chats))
    stored = await asyncio.gather(*(history(store, c) for c in chats))
    assert stored == [[f"hello {c.chat_id}"] for c in chats]


# -- insert-or-get: a user's message is stored once per Telegram id --------------------------


async def test_a_message_stored_twice_is_stored_once(store: Store, peek: Peek) -> None:
    first = await store.add_user_turn(said("q", tg=5))
    assert first.created and not first.answered
    again = await store.add_user_turn(said("q", tg=5))
    assert again == StoredTurn(first.id, created=False, answered=False)
    assert await peek.messages(CHAT) == [("q", False)]
    elsewhere = await store.add_user_turn(said("q", ChatKey(43), tg=5))
    assert elsewhere.created and elsewhere.id != first.id, "Telegram ids are per chat"


async def test_a_redelivered_message_is_answered_once_a_reply_is_stored(store: Store) -> None:
    question = (await store.add_user_turn(said("q", tg=5))).id
    await answer(store, "not a reply to it")
    assert not (await store.add_user_turn(said("q", tg=5))).answered
    await answer(store, "a", reply_to=question, status=Status.PARTIAL)
    assert await store.add_user_turn(said("q", tg=5)) == StoredTurn(question, False, True)


async def test_two_replicas_storing_the_same_message_create_it_once(
    store: Store, peek: Peek
) -> None:
    results = await asyncio.gather(*(store.add_user_turn(said("q", tg=5)) for _ in range(2)))
    assert sorted(r.created for r in results) == [False, True]
    assert results[0].id == results[1].id
    assert await peek.messages(CHAT) == [("q", False)]


async def test_messages_without_a_telegram_id_are_always_stored(store: Store) -> None:
    first = await store.add_user_turn(said("same text"))
    second = await store.add_user_turn(said("same text"))
    assert first.created and second.created and first.id != second.id
    assert await history(store) == ["same text", "same text"]


async def test_a_redelivered_overheard_message_is_stored_once(store: Store, peek: Peek) -> None:
    first = await store.add_overheard(overheard("lunch?", tg=11), keep=5)
    again = await store.add_overheard(overheard("lunch?", tg=11), keep=5)
    assert first.created and again == StoredTurn(first.id, created=False)
    assert await peek.messages(GROUP) == [("lunch?", False)]
    addressed = await store.add_user_turn(said("lunch?", GROUP, tg=11))
    assert not addressed.created and addressed.id == first.id


# -- groups: overheard chatter, migration to a supergroup --------------------------------------


async def test_overheard_messages_join_the_history_but_only_the_newest_are_kept(
    store: Store,
) -> None:
    for i in range(3):
        await store.add_overheard(overheard(f"early {i}"), keep=2)
    question = await ask(store, "@bot what about that?", GROUP)
    await answer(store, "An answer.", GROUP, reply_to=question)
    for i in range(5):
        await store.add_overheard(overheard(f"late {i}"), keep=2)
    # Chatter before the addressed turn was its context and stays; later chatter is trimmed
    # to the newest two; every message appears once, in the order it was said.
    assert await history(store, GROUP) == [
        "early 1",
        "early 2",
        "@bot what about that?",
        "An answer.",
        "late 3",
        "late 4",
    ]
    assert (await store.unsummarised_turns(GROUP))[0].author == Author(8, "Bob")
    assert await history(store, ChatKey(-500, 7)) == []


async def test_a_migrated_group_keeps_its_history_and_settings(store: Store, peek: Peek) -> None:
    new = ChatKey(-1_000_000_500)
    await store.add_user_turn(said("before migration", GROUP, tg=5), chat_kind="group")
    await store.add_overheard(overheard("chatter"), keep=5)
    await ask(store, "topic message", ChatKey(GROUP.chat_id, 3))
    await store.set_persona(GROUP.chat_id, "You are a pirate.", by_user=7)
    assert await store.move_chat(GROUP.chat_id, new.chat_id) == 3
    assert await history(store, new) == ["before migration", "chatter"]
    assert [t.chat for t in await store.unsummarised_turns(ChatKey(new.chat_id, 3))] == [
        ChatKey(new.chat_id, 3)
    ]
    assert await history(store, GROUP) == []
    assert await store.get_persona(new.chat_id) == "You are a pirate."
    assert await store.get_persona(GROUP.chat_id) is None
    assert await peek.chat(new) == ("group", True)
    assert await peek.chat(GROUP) is None
    assert await store.move_chat(GROUP.chat_id, new.chat_id) == 0, "a second move is a no-op"
    # The supergroup numbers its messages afresh: its message 5 is not the old group's 5.
    assert (await store.add_user_turn(said("new 5", new, tg=5))).created


async def test_moving_onto_a_chat_with_its_own_settings_keeps_the_newer(store: Store) -> None:
    await store.set_persona(1, "old persona", by_user=7)
    await store.set_persona(2, "new persona", by_user=7)
    await store.move_chat(1, 2)
    assert await store.get_persona(2) == "new persona"
    assert await store.get_persona(1) is None


# -- usage, retry ------------------------------------------------------------------------------


async def test_usage_is_summed_per_day_user_and_chat(store: Store) -> None:
    await store.record_usage(CHAT, 7, DAY, 100, 20)
    await store.record_usage(CHAT, 7, DAY, 50, 5)
    await store.record_usage(ChatKey(-100, 3), 7, DAY, 10, 1)
    await store.record_usage(ChatKey(-100), 8, NEXT_DAY, 1000, 100)
    await store.record_usage(-100, None, NEXT_DAY, 30, 3)  # a summary: chat only
    assert await store.usage_totals(DAY, DAY, user_id=7) == UsageTotals(3, 160, 26)
    assert await store.usage_totals(DAY, DAY, chat_id=42) == UsageTotals(2, 150, 25)
    assert await store.usage_totals(DAY, NEXT_DAY, chat_id=-100) == UsageTotals(3, 1040, 104)
    assert await store.usage_totals(NEXT_DAY, NEXT_DAY, user_id=7) == UsageTotals()
    assert await store.usage_totals(DAY, NEXT_DAY) == UsageTotals(5, 1190, 129)
    top = await store.top_chats(DAY, NEXT_DAY, 5)
    assert [chat_id for chat_id, _ in top] == [-100, 42]
    assert await store.top_chats(DAY, NEXT_DAY, 1) == [(-100, UsageTotals(3, 1040, 104))]


async def test_transcribed_seconds_are_booked_beside_the_tokens(store: Store) -> None:
    await store.record_usage(CHAT, 7, DAY, 100, 20)
    await store.record_usage(CHAT, 7, DAY, 0, 0, audio_seconds=42)
    assert await store.usage_totals(DAY, DAY, user_id=7) == UsageTotals(2, 100, 20, 42)
    assert await store.top_chats(DAY, DAY, 1) == [(42, UsageTotals(2, 100, 20, 42))]


async def test_reasoning_tokens_are_booked_beside_the_tokens_and_follow_a_moved_chat(
    store: Store,
) -> None:
    """m012/p009: how many of the completion tokens a reasoning model spent thinking."""
    question = (await store.add_user_turn(said("question", tg=5))).id
    usage = Usage(100, 50, reasoning_tokens=30)
    reply = NewTurn(CHAT, Role.ASSISTANT, "answer", 3, reply_to=question, model="m", usage=usage)
    await store.add_reply(reply, user_id=7, day=DAY)
    await store.record_usage(CHAT, 7, DAY, 10, 8, reasoning_tokens=5)
    totals = UsageTotals(2, 110, 58, reasoning_tokens=35)
    assert await store.usage_totals(DAY, DAY, user_id=7) == totals
    assert await store.top_chats(DAY, DAY, 1) == [(CHAT.chat_id, totals)]
    await store.record_usage(-1, 7, DAY, 10, 8, reasoning_tokens=5)
    await store.record_usage(-2, 7, DAY, 10, 8, reasoning_tokens=2)
    await store.move_chat(-1, -2)
    moved = await store.usage_totals(DAY, DAY, chat_id=-2)
    assert moved == UsageTotals(2, 20, 16, reasoning_tokens=7)


async def test_cached_prompt_tokens_are_booked_beside_the_prompt_tokens(store: Store) -> None:
    question = (await store.add_user_turn(said("question", tg=5))).id
    reply = NewTurn(
        CHAT,
        Role.ASSISTANT,
        "answer",
        3,
        reply_to=question,
        usage=Usage(1000, 20, cached_tokens=900),
    )
    await store.add_reply(reply, user_id=7, day=DAY)
    await store.record_usage(CHAT, None, DAY, 300, 30, cached_tokens=200)  # a summary
    await store.record_usage(CHAT, 7, DAY, 100, 10)  # a server that does not say
    assert await store.usage_totals(DAY, DAY, user_id=7) == UsageTotals(
        2, 1100, 30, cached_tokens=900
    )
    mine = UsageTotals(3, 1400, 60, cached_tokens=1100)
    assert await store.usage_totals(DAY, DAY, chat_id=CHAT.chat_id) == mine
    assert await store.top_chats(DAY, DAY, 1) == [(CHAT.chat_id, mine)]
    await store.move_chat(CHAT.chat_id, 43)
    assert await store.usage_totals(DAY, DAY, chat_id=43) == mine, "a moved chat keeps them"


async def test_a_media_turn_keeps_its_kind_duration_and_attachments(store: Store) -> None:
    photos = (
        Attachment(MessageKind.PHOTO, "file-1", size=1234, width=1280, height=960),
        Attachment(MessageKind.PHOTO, "file-2", mime="image/png", name="screen.png"),
    )
    photo = NewTurn(
        CHAT, Role.USER, "[2 photos: look]", 9, author=ANN, tg_message_id=5,
        kind=MessageKind.PHOTO, attachments=photos,
    )  # fmt: skip
    voice = NewTurn(
        CHAT, Role.USER, "the transcript", 5, author=ANN, tg_message_id=6,
        kind=MessageKind.VOICE, duration=12,
    )  # fmt: skip
    await store.add_user_turn(photo)
    await store.add_user_turn(voice)
    backlog = await store.backlog(CHAT, 10_000)
    first, second = backlog.turns
    assert (first.kind, first.attachments, first.duration) == (MessageKind.PHOTO, photos, None)
    assert (second.kind, second.attachments, second.duration) == (MessageKind.VOICE, (), 12)
    question, _ = await store.last_exchange(CHAT) or (None, [])
    assert question is not None and question.kind is MessageKind.VOICE


async def test_a_reply_and_its_usage_are_stored_together(store: Store) -> None:
    question = (await store.add_user_turn(said("question", tg=5))).id
    reply = NewTurn(
        CHAT, Role.ASSISTANT, "answer", 3, reply_to=question, model="m", usage=Usage(100, 20)
    )
    reply_id = await store.add_reply(reply, user_id=7, day=DAY)
    assert reply_id > question
    await store.add_reply(reply, user_id=7, day=DAY)
    assert await store.usage_totals(DAY, DAY, user_id=7) == UsageTotals(2, 200, 40)
    stopped = NewTurn(CHAT, Role.ASSISTANT, "st", 2, status=Status.STOPPED, reply_to=question)
    await store.add_reply(stopped, user_id=8, day=DAY)  # no tokens known: nothing booked
    assert await store.usage_totals(DAY, DAY, user_id=8) == UsageTotals()
    assert await store.usage_totals(DAY, DAY, chat_id=CHAT.chat_id) == UsageTotals(2, 200, 40)
    assert await history(store) == ["question", "answer", "answer", "st"]
    assert await store.add_user_turn(said("question", tg=5)) == StoredTurn(question, False, True)


async def test_a_reply_stored_before_it_is_sent_is_marked_until_delivered(store: Store) -> None:
    question = await ask(store, "question")
    reply_id = await answer(store, "answer", reply_to=question, undelivered=True)
    [_, stored] = await store.unsummarised_turns(CHAT)
    assert stored.undelivered and stored.tg_message_id is None
    exchange = await store.last_exchange(CHAT)
    assert exchange is not None and exchange[1][0].undelivered, "/retry can tell"
    await store.mark_delivered(reply_id, 31)
    [_, delivered] = await store.unsummarised_turns(CHAT)
    assert not delivered.undelivered and delivered.tg_message_id == 31
    assert delivered.text == "answer", "stored once: only the delivery fields change"


async def test_moving_a_chat_adds_up_usage_both_ids_had_that_day(store: Store) -> None:
    await store.record_usage(-1, 7, DAY, 100, 10)
    await store.record_usage(-1, None, DAY, 40, 4)  # a summary of the old group
    await store.record_usage(-2, 7, DAY, 50, 5)  # the supergroup, used before the move
    await store.move_chat(-1, -2)
    assert await store.usage_totals(DAY, DAY, chat_id=-2) == UsageTotals(3, 190, 19)
    assert await store.usage_totals(DAY, DAY, user_id=7) == UsageTotals(2, 150, 15)
    assert await store.usage_totals(DAY, DAY, chat_id=-1) == UsageTotals()


async def test_the_last_exchange_skips_overheard_chatter(store: Store) -> None:
    question = await ask(store, "@bot a question", GROUP)
    reply = await answer(store, "an answer", GROUP, reply_to=question)
    await store.add_overheard(overheard("lunch anyone?"), keep=5)
    exchange = await store.last_exchange(GROUP)
    assert exchange is not None
    asked, answers = exchange
    assert asked.id == question and [a.id for a in answers] == [reply]


async def test_superseded_answers_leave_the_history_but_stay_stored(
    store: Store, peek: Peek
) -> None:
    assert await store.last_exchange(CHAT) is None
    await ask(store, "first")
    question = await ask(store, "second")
    old = await answer(store, "old answer", reply_to=question)
    exchange = await store.last_exchange(CHAT)
    assert exchange is not None
    asked, answers = exchange
    assert asked.id == question and [a.id for a in answers] == [old]
    new = await answer(store, "new answer", reply_to=question)
    await store.supersede([old], new)
    assert await history(store) == ["first", "second", "new answer"]
    assert ("old answer", True) in await peek.messages(CHAT)


# -- memory: summaries and recall ------------------------------------------------------------


async def test_saving_a_summary_marks_the_messages_it_covers(store: Store, peek: Peek) -> None:
    ids = [await ask(store, f"m{i}") for i in range(6)]
    assert await store.current_summary(CHAT) is None
    first = await store.save_summary(
        NewSummary(CHAT, "Ann said m0..m2", 5, ids[0], ids[2], model="m", usage=Usage(90, 5))
    )
    assert (first.first_message_id, first.last_message_id, first.messages_covered) == (
        ids[0],
        ids[2],
        3,
    )
    assert await history(store) == ["m3", "m4", "m5"]
    assert [text for text, _ in await peek.messages(CHAT)][:1] == ["m0"], "nothing deleted"
    second = await store.save_summary(NewSummary(CHAT, "m0..m4", 4, ids[3], ids[4]))
    assert (second.first_message_id, second.messages_covered) == (ids[0], 5)
    current = await store.current_summary(CHAT)
    assert current is not None and current.text == "m0..m4" and current.id == second.id
    assert current.usage == Usage() and first.usage == Usage(90, 5)


async def test_unsummarised_turns_keep_the_newest_that_fit_and_always_one(store: Store) -> None:
    for i in range(5):
        await ask(store, f"m{i}", tokens=10)
    assert [t.text for t in await store.unsummarised_turns(CHAT, 25)] == ["m3", "m4"]
    await ask(store, "huge", tokens=10_000)
    assert [t.text for t in await store.unsummarised_turns(CHAT, 25)] == ["huge"]


async def test_the_backlog_is_the_summary_and_the_unsummarised_turns_that_fit(
    store: Store,
) -> None:
    empty = await store.backlog(CHAT, 25)
    assert empty == Backlog(None, [], True, first_id=None)
    ids = [await ask(store, f"m{i}", tokens=10) for i in range(5)]
    everything = await store.backlog(CHAT, 1000)
    assert [t.text for t in everything.turns] == [f"m{i}" for i in range(5)]
    assert everything.complete and everything.summary is None
    assert everything.first_id == ids[0]
    newest = await store.backlog(CHAT, 25)
    assert [t.text for t in newest.turns] == ["m3", "m4"] and not newest.complete
    await store.save_summary(NewSummary(CHAT, "m0..m2", 4, ids[0], ids[2]))
    folded = await store.backlog(CHAT, 25)
    assert folded.summary is not None and folded.summary.text == "m0..m2"
    assert [t.text for t in folded.turns] == ["m3", "m4"] and folded.complete
    assert folded.first_id == ids[0], "summarised turns are still live (recall finds them)"
    await ask(store, "huge", tokens=10_000)
    huge = await store.backlog(CHAT, 25)
    assert [t.text for t in huge.turns] == ["huge"] and not huge.complete
    assert (await store.backlog(ChatKey(43), 25)).turns == [], "another chat's turns never count"
    await store.archive(CHAT)
    assert await store.backlog(CHAT, 25) == Backlog(None, [], True)


async def test_a_reset_ends_the_summary_of_the_conversation(store: Store) -> None:
    ids = [await ask(store, f"m{i}") for i in range(3)]
    await store.save_summary(NewSummary(CHAT, "old conversation", 3, ids[0], ids[1]))
    await store.archive(CHAT)
    assert await store.current_summary(CHAT) is None
    assert await store.unsummarised_turns(CHAT) == []


async def test_search_finds_words_in_this_chat_only(store: Store) -> None:
    other = ChatKey(43)
    topic = ChatKey(42, 7)
    fact = await ask(store, "My sister's name is Ana")
    await ask(store, "my sister Ana lives in Porto", other)
    await ask(store, "sister topic", topic)
    await ask(store, "the weather is nice")
    last = await ask(store, "what about my sisters?")
    found = await store.search_turns(CHAT, ["sisters", "name"], before_id=last)
    assert [t.id for t in found] == [fact]
    assert await store.search_turns(CHAT, ["sister"], before_id=fact) == [], "only older turns"
    assert await store.search_turns(CHAT, [], before_id=last) == []
    await store.archive(CHAT)
    after = await ask(store, "sister?")
    assert [t.text for t in await store.search_turns(CHAT, ["sister"], before_id=after + 1)] == [
        "sister?"
    ], "nothing from before the reset"


async def test_search_follows_a_group_to_its_supergroup(store: Store) -> None:
    """The recall index names each message's chat; moving the chat must move its entries."""
    new = ChatKey(-1_000_000_501)
    fact = await ask(store, "the invoice number is 4471", GROUP)
    await ask(store, "invoice for someone else", ChatKey(-GROUP.chat_id))
    await store.move_chat(GROUP.chat_id, new.chat_id)
    last = await ask(store, "which invoice?", new)
    assert [t.id for t in await store.search_turns(new, ["invoice"], before_id=last)] == [fact]
    assert await store.search_turns(GROUP, ["invoice"], before_id=last) == []


@pytest.mark.parametrize(
    "words",
    [['"'], ["NEAR(a b)"], ["a*"], ["-x"], ["OR"], ["(", ")"], ["col:val"], ["^x"], ["\x00"]],
)
async def test_search_words_are_never_query_syntax(store: Store, words: list[str]) -> None:
    await ask(store, 'quote " NEAR(a b) col:val OR -x')
    last = await ask(store, "next")
    await store.search_turns(CHAT, words, before_id=last)  # must not raise


async def test_search_ignores_case_and_accents(store: Store) -> None:
    fact = await ask(store, "We met at the Café Müller in ÉVORA")
    last = await ask(store, "next")
    for words in (["cafe"], ["MULLER"], ["évora"], ["CAFÉ"]):
        found = await store.search_turns(CHAT, words, before_id=last)
        assert [t.id for t in found] == [fact], words


async def test_search_takes_long_words_as_prefixes_and_short_ones_whole(store: Store) -> None:
    sisters = await ask(store, "my sisters visited")
    await ask(store, "the category was wrong")
    last = await ask(store, "next")
    assert [t.id for t in await store.search_turns(CHAT, ["sister"], before_id=last)] == [sisters]
    assert await store.search_turns(CHAT, ["cat"], before_id=last) == []


async def test_search_puts_the_best_match_first(store: Store) -> None:
    await ask(store, "the garage door is red")
    both = await ask(store, "the garage door code is 4471")
    await ask(store, "another garage story")
    last = await ask(store, "next")
    found = await store.search_turns(CHAT, ["garage", "4471"], before_id=last, limit=2)
    assert found[0].id == both and len(found) == 2


async def test_no_typed_text_is_ever_query_syntax(store: Store) -> None:
    rng = random.Random(15)
    alphabet = "ab'\"\\*:&|!()<->-^~+@#{}[]NEARORAND\x00\t\u00e9\u0416\U0001f600 ,.;"
    await ask(store, "alpha beta NEAR(a b) it's a 'quoted' \\ back")
    last = await ask(store, "next")
    for _ in range(300):
        words = [
            "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 12)))
            for _ in range(rng.randint(1, 4))
        ]
        await store.search_turns(CHAT, words, before_id=last)  # must not raise


async def test_token_factors_are_kept_per_model(store: Store) -> None:
    assert await store.token_factors() == {}
    await store.set_token_factor("llama3", 1.3)
    await store.set_token_factor("gpt-4o", 1.0)
    await store.set_token_factor("llama3", 1.25)
    assert await store.token_factors() == {"llama3": 1.25, "gpt-4o": 1.0}
