"""The storage contract, run against every backend (today: SQLite).

A second backend (PostgreSQL for webhook replicas) joins by adding one entry to `BACKENDS`; it
then has to pass exactly these tests.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from telegram_bot import migrations
from telegram_bot.models import Author, ChatKey, NewSummary, NewTurn, Role, Status, Usage
from telegram_bot.sqlite_store import SQLiteStore
from telegram_bot.store import Store

BACKENDS: dict[str, Callable[[Path], Store]] = {
    "sqlite": lambda tmp: SQLiteStore(tmp / "bot.sqlite3"),
}

CHAT = ChatKey(42)


@pytest.fixture(params=sorted(BACKENDS))
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    backend = BACKENDS[request.param](tmp_path)
    await backend.open()
    yield backend
    await backend.close()


def turn(text: str, role: Role = Role.USER, chat: ChatKey = CHAT, tokens: int = 10) -> NewTurn:
    return NewTurn(chat=chat, role=role, text=text, tokens=tokens, author=Author(7, "Ann"))


async def test_turns_come_back_in_order_with_their_fields(store: Store) -> None:
    await store.add_turn(turn("hello"))
    await store.add_turn(
        NewTurn(CHAT, Role.ASSISTANT, "hi!", 4, usage=Usage(12, 3), model="m", tg_message_id=9)
    )
    turns = await store.recent_turns(CHAT, 1000)
    assert [(t.role, t.text) for t in turns] == [(Role.USER, "hello"), (Role.ASSISTANT, "hi!")]
    assert turns[0].author == Author(7, "Ann")
    assert turns[1].tg_message_id == 9
    assert turns[1].status is Status.COMPLETE


async def test_recent_turns_keep_the_newest_that_fit_the_budget(store: Store) -> None:
    for i in range(10):
        await store.add_turn(turn(f"m{i}", tokens=10))
    turns = await store.recent_turns(CHAT, 35)
    assert [t.text for t in turns] == ["m7", "m8", "m9"]


async def test_chats_and_topics_never_mix(store: Store) -> None:
    topic = ChatKey(-100, 5)
    await store.add_turn(turn("private"))
    await store.add_turn(turn("group", chat=ChatKey(-100)))
    await store.add_turn(turn("topic", chat=topic))
    assert [t.text for t in await store.recent_turns(CHAT, 1000)] == ["private"]
    assert [t.text for t in await store.recent_turns(ChatKey(-100), 1000)] == ["group"]
    assert [t.text for t in await store.recent_turns(topic, 1000)] == ["topic"]


async def test_archive_hides_turns_without_deleting_them(store: Store) -> None:
    await store.add_turn(turn("old"))
    await store.add_turn(turn("older", role=Role.ASSISTANT))
    assert await store.archive(CHAT) == 2
    assert await store.recent_turns(CHAT, 1000) == []
    assert await store.count_turns(CHAT) == 0
    assert await store.count_turns(CHAT, include_archived=True) == 2


async def test_failed_turns_are_kept_but_never_replayed(store: Store) -> None:
    await store.add_turn(turn("question"))
    await store.add_turn(NewTurn(CHAT, Role.ASSISTANT, "half an ans", 3, status=Status.PARTIAL))
    await store.add_turn(NewTurn(CHAT, Role.ASSISTANT, "", 3, status=Status.FAILED))
    texts = [(t.text, t.status) for t in await store.recent_turns(CHAT, 1000)]
    assert texts == [("question", Status.COMPLETE), ("half an ans", Status.PARTIAL)]
    assert await store.count_turns(CHAT) == 3


async def test_persona_is_stored_per_chat(store: Store) -> None:
    assert await store.get_persona(1) is None
    await store.set_persona(1, "You are a pirate.", by_user=7)
    await store.set_persona(2, "You are a poet.", by_user=8)
    assert await store.get_persona(1) == "You are a pirate."
    await store.set_persona(1, None, by_user=7)
    assert await store.get_persona(1) is None
    assert await store.get_persona(2) == "You are a poet."


async def test_chat_can_be_marked_inactive(store: Store) -> None:
    await store.add_turn(turn("hi"), chat_kind="private")
    chat = await store.get_chat(CHAT)
    assert chat is not None and chat.active and chat.kind == "private"
    await store.set_chat_active(CHAT.chat_id, False)
    chat = await store.get_chat(CHAT)
    assert chat is not None and not chat.active


async def test_data_survives_reopening(tmp_path: Path) -> None:
    first = SQLiteStore(tmp_path / "db.sqlite3")
    await first.open()
    await first.add_turn(turn("remember me"))
    await first.close()
    second = SQLiteStore(tmp_path / "db.sqlite3")
    await second.open()
    assert [t.text for t in await second.recent_turns(CHAT, 1000)] == ["remember me"]
    await second.close()


async def test_migrations_from_blank_database_are_recorded_once(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite3"
    for _ in range(2):  # opening twice must not re-apply anything
        store = SQLiteStore(path)
        await store.open()
        await store.close()
    with sqlite3.connect(path) as db:
        names = [row[0] for row in db.execute("SELECT name FROM _migrations ORDER BY name")]
        mode = db.execute("PRAGMA journal_mode").fetchone()[0]
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert names == [m.__name__ for m in migrations.MIGRATIONS]
    assert mode == "wal"


async def test_concurrent_writes_from_many_tasks_all_land(store: Store) -> None:
    import asyncio

    chats = [ChatKey(i) for i in range(1, 51)]
    await asyncio.gather(*(store.add_turn(turn(f"hello {c.chat_id}", chat=c)) for c in chats))
    counts = await asyncio.gather(*(store.count_turns(c) for c in chats))
    assert counts == [1] * 50


# -- memory: summaries and recall ------------------------------------------------------------


async def test_saving_a_summary_marks_the_messages_it_covers(store: Store) -> None:
    ids = [await store.add_turn(turn(f"m{i}")) for i in range(6)]
    assert await store.current_summary(CHAT) is None
    first = await store.save_summary(
        NewSummary(CHAT, "Ann said m0..m2", 5, ids[0], ids[2], model="m", usage=Usage(90, 5))
    )
    assert (first.first_message_id, first.last_message_id, first.messages_covered) == (
        ids[0],
        ids[2],
        3,
    )
    assert [t.text for t in await store.unsummarised_turns(CHAT)] == ["m3", "m4", "m5"]
    everything = await store.recent_turns(CHAT, 1000)
    assert [t.text for t in everything][:1] == ["m0"], "nothing deleted"
    second = await store.save_summary(NewSummary(CHAT, "m0..m4", 4, ids[3], ids[4]))
    assert (second.first_message_id, second.messages_covered) == (ids[0], 5)
    current = await store.current_summary(CHAT)
    assert current is not None and current.text == "m0..m4" and current.id == second.id
    assert current.usage == Usage() and first.usage == Usage(90, 5)


async def test_unsummarised_turns_keep_the_newest_that_fit_and_always_one(store: Store) -> None:
    for i in range(5):
        await store.add_turn(turn(f"m{i}", tokens=10))
    assert [t.text for t in await store.unsummarised_turns(CHAT, 25)] == ["m3", "m4"]
    await store.add_turn(turn("huge", tokens=10_000))
    assert [t.text for t in await store.unsummarised_turns(CHAT, 25)] == ["huge"]


async def test_a_reset_ends_the_summary_of_the_conversation(store: Store) -> None:
    ids = [await store.add_turn(turn(f"m{i}")) for i in range(3)]
    await store.save_summary(NewSummary(CHAT, "old conversation", 3, ids[0], ids[1]))
    await store.archive(CHAT)
    assert await store.current_summary(CHAT) is None
    assert await store.unsummarised_turns(CHAT) == []


async def test_search_finds_words_in_this_chat_only(store: Store) -> None:
    other = ChatKey(43)
    topic = ChatKey(42, 7)
    fact = await store.add_turn(turn("My sister's name is Ana"))
    await store.add_turn(turn("my sister Ana lives in Porto", chat=other))
    await store.add_turn(turn("sister topic", chat=topic))
    await store.add_turn(turn("the weather is nice"))
    last = await store.add_turn(turn("what about my sisters?"))
    found = await store.search_turns(CHAT, ["sisters", "name"], before_id=last)
    assert [t.id for t in found] == [fact]
    assert await store.search_turns(CHAT, ["sister"], before_id=fact) == [], "only older turns"
    assert await store.search_turns(CHAT, [], before_id=last) == []
    await store.archive(CHAT)
    after = await store.add_turn(turn("sister?"))
    assert [t.text for t in await store.search_turns(CHAT, ["sister"], before_id=after + 1)] == [
        "sister?"
    ], "nothing from before the reset"


@pytest.mark.parametrize(
    "words",
    [['"'], ["NEAR(a b)"], ["a*"], ["-x"], ["OR"], ["(", ")"], ["col:val"], ["^x"], ["\x00"]],
)
async def test_search_words_are_never_query_syntax(store: Store, words: list[str]) -> None:
    await store.add_turn(turn('quote " NEAR(a b) col:val OR -x'))
    last = await store.add_turn(turn("next"))
    await store.search_turns(CHAT, words, before_id=last)  # must not raise


async def test_memory_columns_survive_reopening(tmp_path: Path) -> None:
    first = SQLiteStore(tmp_path / "db.sqlite3")
    await first.open()
    ids = [await first.add_turn(turn(f"m{i}")) for i in range(4)]
    await first.save_summary(NewSummary(CHAT, "summary of m0 m1", 5, ids[0], ids[1]))
    await first.close()
    second = SQLiteStore(tmp_path / "db.sqlite3")
    await second.open()
    summary = await second.current_summary(CHAT)
    assert summary is not None and summary.messages_covered == 2
    assert [t.text for t in await second.unsummarised_turns(CHAT)] == ["m2", "m3"]
    await second.close()


async def test_m002_indexes_messages_of_a_database_from_before_it(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    import aiosqlite

    async with aiosqlite.connect(path, isolation_level=None) as db:
        await db.execute(
            "CREATE TABLE _migrations (name TEXT PRIMARY KEY, applied_at REAL NOT NULL)"
        )
        await migrations.m001_initial(db)
        await db.execute("INSERT INTO _migrations VALUES ('m001_initial', 0)")
        await db.execute(
            "INSERT INTO messages (chat_id, role, text, tokens, created_at) "
            "VALUES (42, 'user', 'the invoice number is 88231', 9, 0)"
        )
    store = SQLiteStore(path)
    await store.open()
    last = await store.add_turn(turn("which invoice?"))
    [found] = await store.search_turns(CHAT, ["invoice"], before_id=last)
    assert found.text == "the invoice number is 88231" and not found.summarised
    await store.close()


async def test_token_factors_are_kept_per_model(store: Store) -> None:
    assert await store.token_factors() == {}
    await store.set_token_factor("llama3", 1.3)
    await store.set_token_factor("gpt-4o", 1.0)
    await store.set_token_factor("llama3", 1.25)
    assert await store.token_factors() == {"llama3": 1.25, "gpt-4o": 1.0}
