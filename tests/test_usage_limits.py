"""Usage accounting, /usage, and the optional limits, end to end."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from telegram_bot.config import Settings
from telegram_bot.coordination.local import SlidingWindow
from telegram_bot.engine.limits import Limits
from telegram_bot.storage.sqlite.store import SQLiteStore
from tests.fakes import FakeOpenAI, FakeTelegram
from tests.harness import RunningBot, eventually
from tests.test_private_chat import ALICE, BOB, ask

Query = Callable[..., list[tuple[Any, ...]]]
Factory = Callable[..., RunningBot]


@pytest.fixture
async def limited(bot_factory: Factory) -> AsyncIterator[RunningBot]:
    running = await bot_factory(
        rate_limit_per_minute=2, daily_token_limit_user=10_000, owner_ids=frozenset({BOB})
    ).start()
    yield running
    await running.stop()


async def test_every_model_call_is_booked_per_user_chat_and_day(
    bot: RunningBot, tg: FakeTelegram, ai: FakeOpenAI, db: Query
) -> None:
    ai.enqueue("One.", "Two.")
    await ask(tg, ALICE, "first")
    await ask(tg, ALICE, "second")
    sql = "SELECT day, chat_id, user_id, calls, prompt_tokens, completion_tokens FROM usage"
    [row] = await eventually(lambda: db(sql), lambda rows: rows and rows[0][3] == 2)
    day = datetime.now(UTC).date().isoformat()
    prompt = sum(r.prompt_tokens for r in ai.requests)
    completion = ai.count_completion_tokens("One.") + ai.count_completion_tokens("Two.")
    assert row == (day, ALICE, ALICE, 2, prompt, completion), "the server's own counts"


async def test_usage_shows_a_user_their_own_figures(
    bot: RunningBot, tg: FakeTelegram, ai: FakeOpenAI, db: Query
) -> None:
    [empty] = await ask(tg, ALICE, "/usage")
    assert "today: nothing yet" in tg.visible_text(empty)
    ai.enqueue("Hello.")
    await ask(tg, ALICE, "hi")
    await eventually(lambda: db("SELECT 1 FROM usage"), bool)
    [report] = await ask(tg, ALICE, "/usage")
    text = tg.visible_text(report)
    total = db("SELECT prompt_tokens + completion_tokens FROM usage")[0][0]
    assert f"today: {total:,} tokens" in text and "in 1 answer" in text
    assert "All chats" not in text, "totals are for owners only"


async def test_owners_also_see_totals_and_top_chats(
    limited: RunningBot, tg: FakeTelegram, ai: FakeOpenAI, db: Query
) -> None:
    await ask(tg, ALICE, "hello from alice")
    await eventually(lambda: db("SELECT 1 FROM usage"), bool)
    [report] = await ask(tg, BOB, "/usage")
    text = tg.visible_text(report)
    assert "All chats" in text and "Top chats this month" in text
    assert f"• {ALICE}:" in text


async def test_too_many_messages_a_minute_get_one_polite_line(
    limited: RunningBot, tg: FakeTelegram, ai: FakeOpenAI, db: Query
) -> None:
    await ask(tg, ALICE, "one")
    await ask(tg, ALICE, "two")
    [refusal] = await ask(tg, ALICE, "three")
    assert "faster than I may answer (2 a minute)" in tg.visible_text(refusal)
    assert "try again in" in tg.visible_text(refusal)
    assert len(ai.requests) == 2, "nothing sent to the model"
    texts = [row[0] for row in db("SELECT text FROM messages WHERE role = 'user'")]
    assert texts == ["one", "two"]
    for text in ("one", "two", "three"):  # owners are exempt
        await ask(tg, BOB, text)
    assert len(ai.requests) == 5


async def test_a_spent_daily_allowance_refuses_until_midnight_utc(
    bot_factory: Factory, tg: FakeTelegram, ai: FakeOpenAI, db: Query
) -> None:
    running = await bot_factory(daily_token_limit_user=1).start()
    try:
        await ask(tg, ALICE, "first")
        await eventually(lambda: db("SELECT 1 FROM usage"), bool)
        [refusal] = await ask(tg, ALICE, "second")
        text = tg.visible_text(refusal)
        assert "You have used today's allowance of 1 tokens" in text
        assert "resets at 00:00 UTC" in text
        assert len(ai.requests) == 1
        [report] = await ask(tg, ALICE, "/usage")
        assert "left today: 0 of 1 tokens" in tg.visible_text(report)
    finally:
        await running.stop()


async def test_group_allowance_counts_everyone_in_the_group(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "bot.sqlite3")
    await store.open()
    try:
        settings = Settings(daily_token_limit_chat=100, owner_ids=frozenset({9}))
        limits = Limits(store, settings, SlidingWindow(0))
        today = datetime.now(UTC).date()
        await store.record_usage(-100, 1, today, 60, 10)
        assert await limits.check(2, -100) is None
        await store.record_usage(-100, 2, today, 25, 5)
        refusal = await limits.check(3, -100)
        assert refusal is not None and refusal.kind == "chat_tokens"
        assert await limits.check(3, 3) is None, "a private chat has no group allowance"
        assert await limits.check(9, -100) is None, "owners are exempt"
    finally:
        await store.close()


async def test_a_refused_retry_costs_no_rate_limit_slot(
    bot_factory: Factory, tg: FakeTelegram, ai: FakeOpenAI
) -> None:
    """Nothing to retry, or someone else's question: a refusal that reaches no model must not
    count against the sender's messages per minute."""
    from tests.test_groups import CAROL, GROUP, say

    running = await bot_factory(rate_limit_per_minute=1).start()
    [nothing] = await ask(tg, ALICE, "/retry")
    assert "nothing to answer again" in tg.visible_text(nothing).lower()
    ai.enqueue("Hello Alice.")
    [reply] = await ask(tg, ALICE, "hello")
    assert tg.visible_text(reply) == "Hello Alice."

    ai.enqueue("A prime: 7.", "Hello Bob.")
    say(tg, CAROL, "@test_bot name a prime")
    await tg.wait_for("sendMessage", lambda c: c.chat_id == GROUP, count=1)
    say(tg, BOB, "/retry")  # Carol's question, and Bob is no admin
    await tg.wait_for("sendMessage", lambda c: c.chat_id == GROUP, count=2)
    say(tg, BOB, "@test_bot hello")
    calls = await tg.wait_for("sendMessage", lambda c: c.chat_id == GROUP, count=3)
    said = [tg.visible_text(c) for c in calls]
    assert "Only the person who asked" in said[1]
    assert said[2] == "Hello Bob."
    await running.stop()
