"""Limits and /usage in a group: refusals paced like the allowlist's, figures that belong to
the group and nothing from the asker's other chats."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tests.fakes import FakeOpenAI, FakeTelegram
from tests.harness import RunningBot, eventually
from tests.test_groups import ALICE, BOB, GROUP, say, sent
from tests.test_private_chat import ask

Query = Callable[..., list[tuple[Any, ...]]]
Factory = Callable[..., RunningBot]


async def said_in_group_until_bob_is_answered(tg: FakeTelegram, ai: FakeOpenAI) -> list[str]:
    """Bob asks; the group's updates run in order, so everything the bot said about the
    earlier ones is in the group before his answer. Returns every text sent to the group."""
    ai.enqueue("Bob's answer.")
    say(tg, BOB, "@test_bot and me?")
    await tg.wait_for("sendMessage", lambda c: tg.visible_text(c) == "Bob's answer.")
    return [tg.visible_text(c) for c in sent(tg)]


async def test_a_burst_over_the_rate_limit_gets_one_refusal_in_a_group(
    bot_factory: Factory, tg: FakeTelegram, ai: FakeOpenAI
) -> None:
    running = await bot_factory(rate_limit_per_minute=1).start()
    try:
        ai.enqueue("Alice's answer.")
        for n in range(8):
            say(tg, ALICE, f"@test_bot question {n}")
        said = await said_in_group_until_bob_is_answered(tg, ai)
        refusals = [text for text in said if "a minute" in text]
        assert said[0] == "Alice's answer." and said[-1] == "Bob's answer."
        assert len(refusals) == 1, f"one refusal for the burst, not {len(refusals)}"
        assert len(ai.requests) == 2
        # In her private chat, where she only hears herself, every refusal is said.
        await ask(tg, ALICE, "private one")
        [first] = await ask(tg, ALICE, "private two")
        [second] = await ask(tg, ALICE, "private three")
        assert "a minute" in tg.visible_text(first) and "a minute" in tg.visible_text(second)
    finally:
        await running.stop()


async def test_messages_over_max_input_chars_get_one_refusal_in_a_group(
    bot_factory: Factory, tg: FakeTelegram, ai: FakeOpenAI
) -> None:
    running = await bot_factory(max_input_chars=40).start()
    try:
        for n in range(5):
            say(tg, ALICE, f"@test_bot {n} " + "far too long for this bot " * 3)
        said = await said_in_group_until_bob_is_answered(tg, ai)
        assert len([text for text in said if "too long" in text]) == 1
        assert said[-1] == "Bob's answer."
    finally:
        await running.stop()


async def test_usage_in_a_group_shows_only_that_group(
    bot_factory: Factory, tg: FakeTelegram, ai: FakeOpenAI, db: Query
) -> None:
    running = await bot_factory(owner_ids=frozenset({ALICE})).start()
    try:
        ai.enqueue("A private answer with many words in it, to be counted.", "A group answer.")
        await ask(tg, ALICE, "something private")
        say(tg, ALICE, "@test_bot something in the group")
        await tg.wait_for("sendMessage", lambda c: c.chat_id == GROUP)
        sql = "SELECT chat_id, prompt_tokens + completion_tokens FROM usage ORDER BY chat_id"
        rows = await eventually(lambda: db(sql), lambda rows: len(rows) == 2)
        group_tokens, private_tokens = rows[0][1], rows[1][1]
        say(tg, ALICE, "/usage")
        [report] = await tg.wait_for(
            "sendMessage", lambda c: c.chat_id == GROUP and "usage" in tg.visible_text(c).lower()
        )
        text = tg.visible_text(report)
        assert f"today: {group_tokens:,} tokens" in text, "this group's figures"
        assert f"{group_tokens + private_tokens:,}" not in text, "not the private chat's too"
        assert str(ALICE) not in text and "Top chats" not in text, "no other chats in a group"
        assert "in private" in text, "where to find the rest"
        [private] = await ask(tg, ALICE, "/usage")  # in private: everything, as before
        mine = tg.visible_text(private)
        assert f"today: {group_tokens + private_tokens:,} tokens" in mine
        assert "All chats" in mine and "Top chats" in mine
    finally:
        await running.stop()
