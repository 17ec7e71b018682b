"""Personas, admin rights and the allowlist, end to end over the fake Bot API."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from tests.fakes import FakeOpenAI, FakeTelegram
from tests.fakes import _telegram_objects as objects
from tests.harness import RunningBot, eventually
from tests.test_groups import ALICE, BOB, CAROL, GROUP, mention, replies, say, sent

Query = Callable[..., list[tuple[Any, ...]]]
OWNER = 9009
ANONYMOUS_ADMIN_BOT = 1087968824


@pytest.fixture
async def admin_bot(
    bot_factory: Callable[..., RunningBot], tg: FakeTelegram
) -> AsyncIterator[RunningBot]:
    tg.chat_admins[GROUP] = {ALICE}
    running = await bot_factory(owner_ids=frozenset({OWNER})).start()
    yield running
    await running.stop()


async def system_prompt_of_next_answer(tg: FakeTelegram, ai: FakeOpenAI, user: int = CAROL) -> str:
    before = len(sent(tg))
    say(tg, user, "@test_bot hi")
    await replies(tg, before + 1)
    system = ai.requests[-1].messages[0]
    assert system["role"] == "system"
    return str(system["content"])


async def test_non_admin_persona_change_is_refused_and_changes_nothing(
    admin_bot: RunningBot, tg: FakeTelegram, ai: FakeOpenAI, db: Query
) -> None:
    default = admin_bot.settings.system_prompt
    asked = say(tg, BOB, "/persona You are a rude bot.")
    [refusal] = await replies(tg, 1)
    assert tg.visible_text(refusal) == "Only this group's admins can do that."
    assert refusal.params["reply_parameters"]["message_id"] == asked
    assert db("SELECT persona FROM chat_settings") == []
    say(tg, BOB, "/reset")
    [_, refused_reset] = await replies(tg, 2)
    assert "admins" in tg.visible_text(refused_reset)
    assert await system_prompt_of_next_answer(tg, ai) == default
    assert [c.params["chat_id"] for c in tg.calls_to("getChatAdministrators")] == [GROUP]


async def test_admin_owner_and_anonymous_admin_may_change_the_persona(
    admin_bot: RunningBot, tg: FakeTelegram, ai: FakeOpenAI, db: Query
) -> None:
    say(tg, ALICE, "/persona You are a pirate.")
    [done] = await replies(tg, 1)
    assert "from your next message" in tg.visible_text(done)
    assert await system_prompt_of_next_answer(tg, ai) == "You are a pirate."
    assert db("SELECT updated_by FROM chat_settings WHERE chat_id = ?", (GROUP,)) == [(ALICE,)]

    tg.send_command(GROUP, "/persona You are a poet.", user_id=OWNER, first_name="Olga")
    await replies(tg, 3)
    assert await system_prompt_of_next_answer(tg, ai) == "You are a poet."

    anonymous = tg.make_message(GROUP, "/persona default", user_id=ANONYMOUS_ADMIN_BOT)
    anonymous["from"] = objects.user(
        ANONYMOUS_ADMIN_BOT, "Group", username="GroupAnonymousBot", is_bot=True
    )
    anonymous["sender_chat"] = anonymous["chat"]
    anonymous["entities"] = [objects.bot_command_entity("/persona default")]
    tg.push_update({"message": anonymous})
    await replies(tg, 5)
    assert await system_prompt_of_next_answer(tg, ai) == admin_bot.settings.system_prompt
    assert db("SELECT updated_by FROM chat_settings WHERE chat_id = ?", (GROUP,)) == [(None,)]


async def test_persona_in_a_private_chat_is_the_users_own(
    bot: RunningBot, tg: FakeTelegram, ai: FakeOpenAI
) -> None:
    tg.send_command(BOB, "/persona You answer in haiku.", user_id=BOB)
    await replies(tg, 1, chat=BOB)
    tg.send_command(BOB, "/persona", user_id=BOB)
    [_, shown] = await replies(tg, 2, chat=BOB)
    assert "You answer in haiku." in tg.visible_text(shown)
    assert "custom" in tg.visible_text(shown)
    tg.send_text(BOB, "hello", user_id=BOB)
    await replies(tg, 3, chat=BOB)
    assert ai.requests[-1].messages[0]["content"] == "You answer in haiku."
    assert tg.calls_to("getChatAdministrators") == [], "no admin check in a private chat"


async def test_presets_list_and_apply(bot: RunningBot, tg: FakeTelegram, ai: FakeOpenAI) -> None:
    tg.send_command(ALICE, "/persona list", user_id=ALICE)
    [listing] = await replies(tg, 1, chat=ALICE)
    assert "pirate" in tg.visible_text(listing) and "tutor" in tg.visible_text(listing)
    tg.send_command(ALICE, "/persona use Pirate", user_id=ALICE)
    await replies(tg, 2, chat=ALICE)
    tg.send_text(ALICE, "ahoy", user_id=ALICE)
    await replies(tg, 3, chat=ALICE)
    system = ai.requests[-1].messages[0]["content"]
    assert system.startswith("You are a friendly pirate assistant")
    assert all(m["content"] == "ahoy" for m in ai.requests[-1].messages[1:])
    tg.send_command(ALICE, "/persona", user_id=ALICE)
    [*_, shown] = await replies(tg, 4, chat=ALICE)
    assert "preset “pirate”" in tg.visible_text(shown)
    tg.send_command(ALICE, "/persona use nosuch", user_id=ALICE)
    [*_, unknown] = await replies(tg, 5, chat=ALICE)
    assert "no preset called “nosuch”" in tg.visible_text(unknown)


async def test_a_deployers_personas_file_replaces_the_shipped_presets(
    bot_factory: Callable[..., RunningBot], tg: FakeTelegram, ai: FakeOpenAI, tmp_path: Path
) -> None:
    path = tmp_path / "personas.toml"
    path.write_text('[chef]\ndescription = "Cooks"\nprompt = "You are a chef."\n')
    running = await bot_factory(personas_file=path).start()
    try:
        tg.send_command(ALICE, "/persona list", user_id=ALICE)
        [listing] = await replies(tg, 1, chat=ALICE)
        assert "chef — Cooks" in tg.visible_text(listing)
        assert "pirate" not in tg.visible_text(listing)
    finally:
        await running.stop()


async def test_an_overlong_persona_is_rejected(
    bot: RunningBot, tg: FakeTelegram, ai: FakeOpenAI, db: Query
) -> None:
    tg.send_command(ALICE, "/persona " + "x" * 4001, user_id=ALICE)
    [refusal] = await replies(tg, 1, chat=ALICE)
    assert "4,001 characters" in tg.visible_text(refusal)
    assert "4,000" in tg.visible_text(refusal)
    assert db("SELECT persona FROM chat_settings") == []


async def test_a_user_outside_the_allowlist_gets_their_id_and_nothing_else(
    bot_factory: Callable[..., RunningBot],
    tg: FakeTelegram,
    ai: FakeOpenAI,
    db: Query,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="telegram_bot.telegram_adapter.handlers.gate")
    running = await bot_factory(allowed_user_ids=frozenset({ALICE})).start()
    try:
        tg.send_text(BOB, "hello?", user_id=BOB)
        [refusal] = await replies(tg, 1, chat=BOB)
        assert str(BOB) in tg.visible_text(refusal)
        tg.send_text(BOB, "hello again", user_id=BOB)
        tg.send_command(BOB, "/reset", user_id=BOB)
        tg.send_edit(BOB, 1, "edited")
        tg.send_callback(BOB, refusal.result["message_id"], "retry", user_id=BOB)
        [answer] = await tg.wait_for("answerCallbackQuery")
        assert str(BOB) in answer.params["text"]
        # The gate logs each refusal it does not answer: both later messages were refused.
        await eventually(
            lambda: [r for r in caplog.records if "not answering" in r.getMessage()],
            lambda records: len(records) == 2,
        )
        assert len(sent(tg, BOB)) == 1, "one refusal per REFUSAL_INTERVAL, not one per message"
        tg.send_text(ALICE, "hi", user_id=ALICE)
        await replies(tg, 1, chat=ALICE)
        assert [r.last_user_text for r in ai.requests] == ["hi"]
        assert db("SELECT chat_id FROM messages WHERE chat_id = ?", (BOB,)) == []
    finally:
        await running.stop()


async def test_in_an_open_group_only_allowed_users_are_answered_and_never_spammed(
    bot_factory: Callable[..., RunningBot], tg: FakeTelegram, ai: FakeOpenAI
) -> None:
    other_bot = 777_000
    running = await bot_factory(allowed_user_ids=frozenset({ALICE})).start()
    try:
        # Another bot is never answered, not even with a refusal (bots could ping-pong).
        say_as_bot = {"user_id": other_bot, "first_name": "OtherBot", "is_bot": True}
        tg.send_text(GROUP, "@test_bot ping", entities=mention("@test_bot ping"), **say_as_bot)
        say(tg, BOB, "just chatting, not for the bot")
        say(tg, BOB, "@test_bot answer me")
        [refusal] = await replies(tg, 1)
        assert str(BOB) in tg.visible_text(refusal) and str(GROUP) in tg.visible_text(refusal)
        say(tg, ALICE, "@test_bot what did Bob say?")
        await replies(tg, 2)
        contents = [m["content"] for m in ai.requests[-1].messages[1:]]
        assert contents == ["Alice: what did Bob say?"], "a refused user's words never reach it"
        assert not any(str(other_bot) in text for text in tg.sent_texts(GROUP))
    finally:
        await running.stop()


async def test_a_group_that_is_not_allowed_is_left(
    bot_factory: Callable[..., RunningBot], tg: FakeTelegram, ai: FakeOpenAI
) -> None:
    allowed, other = -100_111, -100_222
    running = await bot_factory(allowed_chat_ids=frozenset({allowed})).start()
    try:
        say(tg, BOB, "@test_bot hello", chat=other)
        [left] = await tg.wait_for("leaveChat")
        assert left.params["chat_id"] == other
        [note] = sent(tg, other)
        assert str(other) in tg.visible_text(note) and "ALLOWED_CHAT_IDS" in tg.visible_text(note)
        say(tg, BOB, "@test_bot hello", chat=allowed)  # anyone in a listed group is served
        await replies(tg, 1, chat=allowed)
        assert [r.last_user_text for r in ai.requests] == ["Bob: hello"]
        tg.send_text(CAROL, "hi in private", user_id=CAROL)  # private chats stay open
        await replies(tg, 1, chat=CAROL)
    finally:
        await running.stop()


async def test_an_allowed_group_stays_allowed_after_becoming_a_supergroup(
    bot_factory: Callable[..., RunningBot], tg: FakeTelegram, ai: FakeOpenAI
) -> None:
    old, new = -4343, -100_4343
    running = await bot_factory(allowed_chat_ids=frozenset({old})).start()
    try:
        tg.send_migration(old, new, user_id=ALICE)
        say(tg, BOB, "@test_bot still there?", chat=new)
        await replies(tg, 1, chat=new)
        assert tg.calls_to("leaveChat") == []
    finally:
        await running.stop()
