"""Input that is not a plain question: each gets a clear reply or a documented silence."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.fakes import FakeOpenAI, FakeTelegram
from tests.harness import RunningBot, eventually
from tests.test_private_chat import ALICE, ask, final_messages

Query = Callable[..., list[tuple[Any, ...]]]

FILE = {"file_id": "AgAD1", "file_unique_id": "u1"}
MEDIA: dict[str, dict[str, Any]] = {
    "sticker": {
        "sticker": {**FILE, "type": "regular", "width": 512, "height": 512}
        | {"is_animated": False, "is_video": False}
    },
    "gif": {
        "animation": {**FILE, "width": 320, "height": 240, "duration": 3},
        "document": {**FILE},
    },
    "video": {"video": {**FILE, "width": 320, "height": 240, "duration": 3}},
}
# Voice notes, photos and files are read now: tests/test_media.py.


def push_media(tg: FakeTelegram, chat_id: int, fields: dict[str, Any]) -> None:
    message = tg.make_message(chat_id, "", user_id=chat_id)
    del message["text"]
    tg.push_update({"message": {**message, **fields}})


async def next_answer_proves_silence(tg: FakeTelegram, ai: FakeOpenAI) -> list[str]:
    """Asks a normal question and returns every text the bot sent to ALICE up to its answer.

    Updates of one chat are handled in order, so anything the bot did about the earlier
    update shows up before this answer.
    """
    ai.responder = lambda request: f"Answer to: {request.last_user_text}"
    tg.send_text(ALICE, "a real question", user_id=ALICE)
    answer = "Answer to: a real question"
    await tg.wait_for("sendMessage", lambda c: tg.visible_text(c) == answer)
    return [tg.visible_text(c) for c in final_messages(tg, ALICE)]


@pytest.mark.parametrize("kind", sorted(MEDIA))
async def test_media_gets_one_line_saying_what_the_bot_reads(
    bot: RunningBot, tg: FakeTelegram, ai: FakeOpenAI, db: Query, kind: str
) -> None:
    push_media(tg, ALICE, MEDIA[kind])
    [notice] = await tg.wait_for("sendMessage")
    assert "Send text, a voice note, a photo or a text file" in tg.visible_text(notice)
    assert ai.requests == [] and db("SELECT * FROM messages") == []


async def test_whitespace_only_text_is_silently_ignored(
    bot: RunningBot, tg: FakeTelegram, ai: FakeOpenAI
) -> None:
    tg.send_text(ALICE, " \n\t \u0007 ", user_id=ALICE)
    assert await next_answer_proves_silence(tg, ai) == ["Answer to: a real question"]
    assert len(ai.requests) == 1


async def test_a_4096_character_paste_is_answered_whole(
    bot: RunningBot, tg: FakeTelegram, ai: FakeOpenAI
) -> None:
    paste = ("0123456789abcdef" * 256)[:4096]
    ai.enqueue("That is a lot of hex.")
    [reply] = await ask(tg, ALICE, paste)
    assert tg.visible_text(reply) == "That is a lot of hex."
    assert ai.requests[0].last_user_text == paste


async def test_text_over_max_input_chars_is_refused_and_not_stored(
    bot_factory: Callable[..., RunningBot], tg: FakeTelegram, ai: FakeOpenAI, db: Query
) -> None:
    running = await bot_factory(max_input_chars=100).start()
    try:
        [notice] = await ask(tg, ALICE, "x" * 101)
        assert "too long" in tg.visible_text(notice) and "100 characters" in tg.visible_text(notice)
        assert ai.requests == [] and db("SELECT * FROM messages") == []
    finally:
        await running.stop()


async def test_edited_messages_are_not_answered_again(
    bot: RunningBot, tg: FakeTelegram, ai: FakeOpenAI
) -> None:
    ai.enqueue("First answer.")
    update = tg.send_text(ALICE, "what is 2+2", user_id=ALICE)
    await tg.wait_for("sendMessage")
    tg.send_edit(ALICE, update["message"]["message_id"], "what is 2+3")
    texts = await next_answer_proves_silence(tg, ai)
    assert texts == ["First answer.", "Answer to: a real question"]
    assert len(ai.requests) == 2


async def test_channel_posts_and_other_bots_are_ignored(
    bot: RunningBot, tg: FakeTelegram, ai: FakeOpenAI
) -> None:
    tg.send_text(-1001234, "channel news", chat_type="channel", chat_title="News")
    tg.send_text(ALICE, "I am a bot", user_id=777, is_bot=True)
    assert await next_answer_proves_silence(tg, ai) == ["Answer to: a real question"]
    assert [c for c in tg.calls_to("sendMessage") if c.chat_id != ALICE] == []
    assert len(ai.requests) == 1


async def test_a_forward_is_quoted_with_its_origin(
    bot: RunningBot, tg: FakeTelegram, ai: FakeOpenAI, db: Query
) -> None:
    origin = {
        "type": "user",
        "date": 0,
        "sender_user": {"id": 5, "is_bot": False, "first_name": "Carol"},
    }
    ai.enqueue("Carol sounds busy.")
    tg.send_text(ALICE, "Can't make it today.\nSorry!", user_id=ALICE, forward_origin=origin)
    await tg.wait_for("sendMessage")
    expected = "Forwarded message from Carol:\n> Can't make it today.\n> Sorry!"
    assert ai.requests[0].last_user_text == expected
    assert db("SELECT text FROM messages WHERE role = 'user'") == [(expected,)]


async def test_unknown_commands_get_a_hint_and_other_bots_commands_silence(
    bot: RunningBot, tg: FakeTelegram, ai: FakeOpenAI
) -> None:
    [hint] = await ask(tg, ALICE, "/frobnicate now")
    assert tg.visible_text(hint) == "I don't know /frobnicate. Send /help to see what I can do."
    tg.send_command(ALICE, "/reset@OtherBot")
    [help_] = await ask(tg, ALICE, "/help")
    assert "/reset" in tg.visible_text(help_), "a known command gets only its own answer"
    assert len(final_messages(tg, ALICE)) == 2
    assert ai.requests == []


async def test_emoji_rtl_zero_width_and_control_characters(
    bot: RunningBot, tg: FakeTelegram, ai: FakeOpenAI, db: Query
) -> None:
    text = "שלום 👋🏽 family 👨\u200d👩\u200d👧 zero\u200bwidth\u0007bell\u202eRTL"
    ai.enqueue("مرحبا 👋")
    tg.send_text(ALICE, text, user_id=ALICE, first_name="Zoë \u0000👩\u200d💻")
    [reply] = await tg.wait_for("sendMessage")
    assert tg.visible_text(reply) == "مرحبا 👋"
    cleaned = text.replace("\u0007", "")
    assert ai.requests[0].last_user_text == cleaned
    sql = "SELECT role, text, author_name FROM messages ORDER BY id"
    rows = await eventually(lambda: db(sql), lambda rows: len(rows) == 2)
    assert rows == [("user", cleaned, "Zoë 👩\u200d💻"), ("assistant", "مرحبا 👋", None)]
