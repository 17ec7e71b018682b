"""The storage contract, run against every backend (today: SQLite).

A second backend (PostgreSQL for webhook replicas) joins by adding one entry to `BACKENDS`; it
then has to pass exactly these tests.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Callable
from datetime import date
from pathlib import Path

import pytest

from telegram_bot.models import (
    Author,
    Backlog,
    ChatKey,
    NewSummary,
    NewTurn,
    Role,
    Status,
    Usage,
    UsageTotals,
)
from telegram_bot.storage import Store
from telegram_bot.storage.sqlite import migrations
from telegram_bot.storage.sqlite.store import SQLiteStore

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
    await store.add_turn(turn("an answer", role=Role.ASSISTANT))
    assert (chat := await store.get_chat(CHAT)) is not None and not chat.active
    await store.add_turn(turn("I unblocked you"))  # a user writes: active again
    assert (chat := await store.get_chat(CHAT)) is not None and chat.active


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


GROUP = ChatKey(-500)


def said(text: str, chat: ChatKey = GROUP, name: str = "Bob") -> NewTurn:
    return NewTurn(chat=chat, role=Role.USER, text=text, tokens=5, author=Author(8, name))


async def test_overheard_messages_join_the_history_but_only_the_newest_are_kept(
    store: Store,
) -> None:
    for i in range(3):
        await store.add_overheard(said(f"early {i}"), keep=2)
    await store.add_turn(turn("@bot what about that?", chat=GROUP))
    await store.add_turn(turn("An answer.", role=Role.ASSISTANT, chat=GROUP))
    for i in range(5):
        await store.add_overheard(said(f"late {i}"), keep=2)
    texts = [t.text for t in await store.recent_turns(GROUP, 1000)]
    # Chatter before the addressed turn was its context and stays; later chatter is trimmed
    # to the newest two; every message appears once, in the order it was said.
    assert texts == [
        "early 1",
        "early 2",
        "@bot what about that?",
        "An answer.",
        "late 3",
        "late 4",
    ]
    assert (await store.recent_turns(GROUP, 1000))[0].author == Author(8, "Bob")
    assert await store.recent_turns(ChatKey(-500, 7), 1000) == []


async def test_a_migrated_group_keeps_its_history_and_settings(store: Store) -> None:
    new = ChatKey(-1_000_000_500)
    await store.add_turn(
        NewTurn(GROUP, Role.USER, "before migration", 10, tg_message_id=5), chat_kind="group"
    )
    await store.add_overheard(said("chatter"), keep=5)
    await store.add_turn(turn("topic message", chat=ChatKey(GROUP.chat_id, 3)))
    await store.set_persona(GROUP.chat_id, "You are a pirate.", by_user=7)
    assert await store.move_chat(GROUP.chat_id, new.chat_id) == 3
    assert [t.text for t in await store.recent_turns(new, 1000)] == [
        "before migration",
        "chatter",
    ]
    assert [t.chat for t in await store.recent_turns(ChatKey(new.chat_id, 3), 1000)] == [
        ChatKey(new.chat_id, 3)
    ]
    assert await store.recent_turns(GROUP, 1000) == []
    assert await store.get_persona(new.chat_id) == "You are a pirate."
    assert await store.get_persona(GROUP.chat_id) is None
    chat = await store.get_chat(new)
    assert chat is not None and chat.kind == "group"
    assert await store.move_chat(GROUP.chat_id, new.chat_id) == 0, "a second move is a no-op"
    # The supergroup numbers its messages afresh: its message 5 is not the old group's 5.
    assert await store.find_user_turn(new, 5) is None


async def test_moving_onto_a_chat_with_its_own_settings_keeps_the_newer(store: Store) -> None:
    await store.set_persona(1, "old persona", by_user=7)
    await store.set_persona(2, "new persona", by_user=7)
    await store.move_chat(1, 2)
    assert await store.get_persona(2) == "new persona"
    assert await store.get_persona(1) is None


DAY = date(2026, 3, 14)
NEXT_DAY = date(2026, 3, 15)


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


async def test_a_reply_and_its_usage_are_stored_together(store: Store) -> None:
    question = await store.add_turn(NewTurn(CHAT, Role.USER, "question", 3, tg_message_id=5))
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
    assert [t.text for t in await store.recent_turns(CHAT, 100)] == [
        "question",
        "answer",
        "answer",
        "st",
    ]
    assert await store.find_user_turn(CHAT, 5) == (question, True)


async def test_moving_a_chat_adds_up_usage_both_ids_had_that_day(store: Store) -> None:
    await store.record_usage(-1, 7, DAY, 100, 10)
    await store.record_usage(-1, None, DAY, 40, 4)  # a summary of the old group
    await store.record_usage(-2, 7, DAY, 50, 5)  # the supergroup, used before the move
    await store.move_chat(-1, -2)
    assert await store.usage_totals(DAY, DAY, chat_id=-2) == UsageTotals(3, 190, 19)
    assert await store.usage_totals(DAY, DAY, user_id=7) == UsageTotals(2, 150, 15)
    assert await store.usage_totals(DAY, DAY, chat_id=-1) == UsageTotals()


async def test_the_last_exchange_skips_overheard_chatter(store: Store) -> None:
    question = await store.add_turn(turn("@bot a question", chat=GROUP))
    answer = await store.add_turn(NewTurn(GROUP, Role.ASSISTANT, "an answer", 3, reply_to=question))
    await store.add_overheard(said("lunch anyone?"), keep=5)
    exchange = await store.last_exchange(GROUP)
    assert exchange is not None
    asked, answers = exchange
    assert asked.id == question and [a.id for a in answers] == [answer]


async def test_a_redelivered_message_is_found_with_its_answer_state(store: Store) -> None:
    assert await store.find_user_turn(CHAT, 5) is None
    question = await store.add_turn(NewTurn(CHAT, Role.USER, "q", 3, tg_message_id=5))
    assert await store.find_user_turn(CHAT, 5) == (question, False)
    assert await store.find_user_turn(ChatKey(42, 9), 5) is None, "another topic"
    await store.add_turn(NewTurn(CHAT, Role.ASSISTANT, "a", 3, reply_to=question))
    assert await store.find_user_turn(CHAT, 5) == (question, True)


async def test_superseded_answers_leave_the_history_but_stay_stored(store: Store) -> None:
    assert await store.last_exchange(CHAT) is None
    await store.add_turn(turn("first"))
    question = await store.add_turn(turn("second"))
    old = await store.add_turn(NewTurn(CHAT, Role.ASSISTANT, "old answer", 3, reply_to=question))
    exchange = await store.last_exchange(CHAT)
    assert exchange is not None
    asked, answers = exchange
    assert asked.id == question and [a.id for a in answers] == [old]
    new = await store.add_turn(NewTurn(CHAT, Role.ASSISTANT, "new answer", 3, reply_to=question))
    await store.supersede([old], new)
    texts = [t.text for t in await store.recent_turns(CHAT, 1000)]
    assert texts == ["first", "second", "new answer"]
    assert await store.count_turns(CHAT, include_archived=True) == 4


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


async def test_the_backlog_is_the_summary_and_the_unsummarised_turns_that_fit(
    store: Store,
) -> None:
    empty = await store.backlog(CHAT, 25)
    assert empty == Backlog(None, [], True, first_id=None)
    ids = [await store.add_turn(turn(f"m{i}", tokens=10)) for i in range(5)]
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
    await store.add_turn(turn("huge", tokens=10_000))
    huge = await store.backlog(CHAT, 25)
    assert [t.text for t in huge.turns] == ["huge"] and not huge.complete
    assert (await store.backlog(ChatKey(43), 25)).turns == [], "another chat's turns never count"
    await store.archive(CHAT)
    assert await store.backlog(CHAT, 25) == Backlog(None, [], True)


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


async def test_search_follows_a_group_to_its_supergroup(store: Store) -> None:
    """The recall index names each message's chat; moving the chat must move its entries."""
    new = ChatKey(-1_000_000_501)
    fact = await store.add_turn(turn("the invoice number is 4471", chat=GROUP))
    await store.add_turn(turn("invoice for someone else", chat=ChatKey(-GROUP.chat_id)))
    await store.move_chat(GROUP.chat_id, new.chat_id)
    last = await store.add_turn(turn("which invoice?", chat=new))
    assert [t.id for t in await store.search_turns(new, ["invoice"], before_id=last)] == [fact]
    assert await store.search_turns(GROUP, ["invoice"], before_id=last) == []


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
