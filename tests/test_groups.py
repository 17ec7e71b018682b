"""Group chats end to end: when the bot speaks, who said what, topics, membership, migration; on
SQLite and on PostgreSQL (`every_backend`)."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable
from typing import Any

import pytest

from tests.databases import every_backend
from tests.fakes import ChatRequest, FakeOpenAI, FakeTelegram, Reply
from tests.fakes import _telegram_objects as objects
from tests.fakes.telegram import Call
from tests.harness import TOKEN, RunningBot, eventually

__all__ = ["every_backend"]  # the `database` fixture: these tests run on every backend

Query = Callable[..., list[tuple[Any, ...]]]
GROUP = -100_500
ALICE, BOB, CAROL = 1001, 2002, 3003
NAMES = {ALICE: "Alice", BOB: "Bob", CAROL: "Carol"}
BOT_ID = int(TOKEN.split(":")[0])


def mention(text: str, name: str = "@test_bot") -> list[dict[str, Any]]:
    start = text.index(name)
    return [{"type": "mention", "offset": start, "length": len(name)}]


def say(tg: FakeTelegram, user: int, text: str, chat: int = GROUP, **kw: Any) -> int:
    """A group member writes; returns the message id."""
    if text.startswith("/"):
        update = tg.send_command(chat, text, user_id=user, first_name=NAMES[user], **kw)
    else:
        if "@test_bot" in text and "entities" not in kw:
            kw["entities"] = mention(text)
        update = tg.send_text(chat, text, user_id=user, first_name=NAMES[user], **kw)
    return int(update["message"]["message_id"])


def sent(tg: FakeTelegram, chat: int = GROUP) -> list[Call]:
    return [c for c in tg.calls_to("sendMessage") if c.chat_id == chat and not c.failed]


async def replies(tg: FakeTelegram, count: int, chat: int = GROUP) -> list[Call]:
    """Waits until the bot has sent `count` messages in the chat in total."""
    await tg.wait_for("sendMessage", lambda c: c.chat_id == chat and not c.failed, count=count)
    return sent(tg, chat)


def replied_to(call: Call) -> int | None:
    reply = call.params.get("reply_parameters") or {}
    return reply.get("message_id")


async def test_silent_unless_addressed_and_chatter_becomes_context(
    bot: RunningBot, tg: FakeTelegram, ai: FakeOpenAI, db: Query
) -> None:
    say(tg, BOB, "The team meeting moved to Friday")
    say(tg, CAROL, "I'd rather have it on Thursday")
    asked = say(tg, ALICE, "@test_bot what do you think about that?")
    ai.enqueue("Thursday sounds better.")
    [answer] = await replies(tg, 1)
    assert replied_to(answer) == asked
    assert tg.visible_text(answer) == "Thursday sounds better."
    [request] = ai.requests
    assert request.messages[0]["role"] == "system"
    assert request.messages[1:] == [
        {"role": "user", "content": "Bob: The team meeting moved to Friday"},
        {"role": "user", "content": "Carol: I'd rather have it on Thursday"},
        {"role": "user", "content": "Alice: what do you think about that?"},
    ]
    # Chatter is stored once, flagged as overheard; the next question does not repeat it.
    say(tg, ALICE, "@test_bot and on Friday?")
    ai.enqueue("Also fine.")
    await replies(tg, 2)
    contents = [m["content"] for m in ai.requests[1].messages[1:]]
    assert contents.count("Bob: The team meeting moved to Friday") == 1
    assert contents[-1] == "Alice: and on Friday?"
    sql = "SELECT overheard FROM messages WHERE chat_id = ? ORDER BY id"
    rows = await eventually(lambda: db(sql, (GROUP,)), lambda r: len(r) == 6)
    assert [r[0] for r in rows] == [1, 1, 0, 0, 0, 0]


async def test_only_the_newest_chatter_is_kept(
    bot_factory: Callable[..., RunningBot], tg: FakeTelegram, ai: FakeOpenAI
) -> None:
    running = await bot_factory(group_context_messages=2).start()
    try:
        for i in range(5):
            say(tg, BOB, f"chatter {i}")
        say(tg, ALICE, "@test_bot summarise")
        await replies(tg, 1)
        contents = [m["content"] for m in ai.requests[0].messages[1:]]
        assert contents == ["Bob: chatter 3", "Bob: chatter 4", "Alice: summarise"]
    finally:
        await running.stop()


async def test_mention_reply_and_ask_are_answered_other_bots_commands_are_not(
    bot: RunningBot, tg: FakeTelegram, ai: FakeOpenAI
) -> None:
    ai.responder = lambda request: f"re: {request.last_user_text}"
    first = say(tg, ALICE, "hey @test_bot, tell me a joke")
    [joke] = await replies(tg, 1)
    assert replied_to(joke) == first
    assert ai.requests[0].last_user_text == "Alice: hey TestBot, tell me a joke"
    follow_up = say(tg, BOB, "another one", reply_to_message_id=joke.result["message_id"])
    say(tg, CAROL, "a reply to Alice, not to the bot", reply_to_message_id=first)
    say(tg, BOB, "/reset@other_bot")
    say(tg, BOB, "/ask@other_bot are you there?")
    asked = say(tg, CAROL, "/ask@test_bot what is 2+2?")
    plain = say(tg, ALICE, "/ask why is the sky blue?")
    calls = await replies(tg, 4)
    assert [replied_to(c) for c in calls[1:]] == [follow_up, asked, plain]
    users = [r.last_user_text for r in ai.requests]
    assert users[1:] == ["Bob: another one", "Carol: what is 2+2?", "Alice: why is the sky blue?"]
    # /reset@other_bot never reached us: the bot's earlier answers are still in the history.
    assert any(m["content"].startswith("re: ") for m in ai.requests[-1].messages)


async def test_bare_mention_and_empty_ask_get_a_hint_without_the_model(
    bot: RunningBot, tg: FakeTelegram, ai: FakeOpenAI
) -> None:
    say(tg, ALICE, "@test_bot")
    say(tg, ALICE, "/ask")
    hint, usage = await replies(tg, 2)
    assert "Ask me something" in tg.visible_text(hint)
    assert "Usage: /ask" in tg.visible_text(usage)
    assert ai.requests == []


async def test_two_users_share_one_history_and_private_chats_never_leak(
    bot: RunningBot, tg: FakeTelegram, ai: FakeOpenAI
) -> None:
    tg.send_text(ALICE, "My private secret is swordfish", user_id=ALICE)
    await replies(tg, 1, chat=ALICE)
    say(tg, ALICE, "@test_bot remember that our project is called Apollo")
    await replies(tg, 1)
    say(tg, BOB, "@test_bot what is our project called?")
    await replies(tg, 2)
    contents = [m["content"] for m in ai.requests[-1].messages]
    assert "Alice: remember that our project is called Apollo" in contents
    assert contents[-1] == "Bob: what is our project called?"
    assert not any("swordfish" in c for c in contents)
    private = [m["content"] for m in ai.requests[0].messages]
    assert private[-1] == "My private secret is swordfish", "no name prefix in private chats"


def shown(tg: FakeTelegram, call: Call) -> str:
    """What a group member sees in a message now: its last edit (groups stream by edits)."""
    message_id = (call.result or {}).get("message_id")
    edits = [
        edit
        for edit in tg.calls_to("editMessageText")
        if not edit.failed and edit.params.get("message_id") == message_id
    ]
    return tg.visible_text(edits[-1] if edits else call)


async def test_questions_asked_at_once_are_answered_in_order_each_to_its_asker(
    bot: RunningBot, tg: FakeTelegram, ai: FakeOpenAI
) -> None:
    ai.latency, ai.chunk_chars, ai.chunk_delay = 0.2, 4, 0.01
    ai.responder = lambda request: f"answer to {request.last_user_text}"
    first = say(tg, ALICE, "@test_bot first question from Alice")
    say(tg, BOB, "just chatting, not for the bot")
    second = say(tg, BOB, "@test_bot second question from Bob")
    third = say(tg, CAROL, "@test_bot third question from Carol")
    calls = await replies(tg, 3)
    assert [replied_to(c) for c in calls] == [first, second, third]
    texts = await eventually(
        lambda: [shown(tg, c) for c in calls], lambda texts: texts[-1].endswith("Carol")
    )
    assert texts == [
        "answer to Alice: first question from Alice",
        "answer to Bob: second question from Bob",
        "answer to Carol: third question from Carol",
    ]
    # Each question was asked with the answers before it, and the chatter, in order.
    assert [m["content"] for m in ai.requests[-1].messages[1:]] == [
        "Alice: first question from Alice",
        "answer to Alice: first question from Alice",
        "Bob: just chatting, not for the bot",
        "Bob: second question from Bob",
        "answer to Bob: second question from Bob",
        "Carol: third question from Carol",
    ]


async def test_forum_topics_keep_separate_histories_and_replies_stay_in_the_topic(
    bot: RunningBot, tg: FakeTelegram, ai: FakeOpenAI
) -> None:
    say(tg, ALICE, "@test_bot topic one is about cats", message_thread_id=11)
    await replies(tg, 1)
    say(tg, BOB, "@test_bot topic two is about dogs", message_thread_id=22)
    await replies(tg, 2)
    say(tg, ALICE, "@test_bot what is this topic about?", message_thread_id=11)
    calls = await replies(tg, 3)
    assert [c.params.get("message_thread_id") for c in calls] == [11, 22, 11]
    contents = [m["content"] for m in ai.requests[-1].messages[1:]]
    assert contents[0] == "Alice: topic one is about cats"
    assert not any("dogs" in c for c in contents)


async def test_bot_added_introduces_itself_and_removed_sends_nothing(
    bot: RunningBot, tg: FakeTelegram, ai: FakeOpenAI, db: Query
) -> None:
    say(tg, ALICE, "@test_bot hello")
    await replies(tg, 1)
    tg.push_update(membership(GROUP, "left", "member"))
    [_, intro] = await replies(tg, 2)
    assert "mention me" in tg.visible_text(intro) and "/ask" in tg.visible_text(intro)
    tg.push_update(membership(GROUP, "member", "administrator"))  # promoted: no second intro
    say(tg, ALICE, "@test_bot still here?")
    calls = await replies(tg, 3)
    assert [c.params.get("reply_parameters") is not None for c in calls] == [True, False, True]
    tg.push_update(membership(GROUP, "member", "kicked"))
    await eventually(
        lambda: db("SELECT active FROM chats WHERE chat_id = ?", (GROUP,)), lambda r: r == [(0,)]
    )
    assert len(sent(tg)) == 3, "nothing is sent after being removed"


def membership(chat_id: int, old: str, new: str, by: int = ALICE) -> dict[str, Any]:
    me = objects.user(BOT_ID, "TestBot", username="test_bot", is_bot=True)
    return {
        "my_chat_member": {
            "chat": objects.chat(chat_id),
            "from": objects.user(by, NAMES.get(by, "Someone")),
            "date": 1,
            "old_chat_member": _member(me, old),
            "new_chat_member": _member(me, new),
        }
    }


def _member(user: dict[str, Any], status: str) -> dict[str, Any]:
    if status in ("member", "administrator", "creator"):
        return objects.chat_member(user, status)
    return {"status": status, "user": user, **({"until_date": 0} if status == "kicked" else {})}


async def test_migration_to_a_supergroup_keeps_history_and_persona(
    bot: RunningBot, tg: FakeTelegram, ai: FakeOpenAI
) -> None:
    old, new = -4242, -100_4242
    tg.chat_admins[old] = {ALICE}
    say(tg, ALICE, "/persona You are a pirate.", chat=old)
    say(tg, ALICE, "@test_bot the password is tulip", chat=old)
    await replies(tg, 2, chat=old)
    tg.send_migration(old, new, user_id=ALICE)
    say(tg, BOB, "@test_bot what is the password?", chat=new)
    await replies(tg, 1, chat=new)
    messages = ai.requests[-1].messages
    assert messages[0] == {"role": "system", "content": "You are a pirate."}
    assert {"role": "user", "content": "Alice: the password is tulip"} in messages


async def test_a_reply_into_a_just_migrated_group_follows_it(
    bot: RunningBot, tg: FakeTelegram, ai: FakeOpenAI, db: Query
) -> None:
    old, new = -777, -100_777
    tg.fail("sendMessage", migrate_to_chat_id=new, when=lambda p: p.get("chat_id") == old)
    ai.enqueue("Here is the answer.")
    say(tg, ALICE, "@test_bot a question", chat=old)
    [answer] = await replies(tg, 1, chat=new)
    assert tg.visible_text(answer) == "Here is the answer."
    rows = await eventually(
        lambda: db("SELECT chat_id, role FROM messages ORDER BY id"), lambda r: len(r) == 2
    )
    assert rows == [(new, "user"), (new, "assistant")]


async def test_privacy_mode_is_explained_once_at_start_up(
    bot_factory: Callable[..., RunningBot], tg: FakeTelegram, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="telegram_bot")
    running = await bot_factory().start()
    await running.stop()
    notes = [r.getMessage() for r in caplog.records if "privacy mode" in r.getMessage()]
    assert len(notes) == 1 and "is ON" in notes[0] and "Group Privacy" in notes[0]
    caplog.clear()
    tg.privacy_off = True
    running = await bot_factory().start()
    await running.stop()
    notes = [r.getMessage() for r in caplog.records if "privacy mode" in r.getMessage()]
    assert len(notes) == 1 and "is OFF" in notes[0] and "last 20" in notes[0]


async def test_command_menu_per_scope(bot: RunningBot, tg: FakeTelegram) -> None:
    await tg.wait_for("setMyCommands", count=4)

    def names(scope: str) -> set[str]:
        return {c["command"] for c in tg.my_commands({"type": scope})}

    everyone = {"memory", "stop", "retry", "continue", "usage"}
    assert names("all_private_chats") == {"help", "reset", "persona", *everyone}
    assert names("all_group_chats") == {"help", "ask", "persona", *everyone}
    assert names("all_chat_administrators") == {"help", "ask", "reset", "persona", *everyone}
    assert {c["command"] for c in tg.my_commands()} == names("all_private_chats")


async def test_a_question_replying_to_someone_carries_the_quoted_message(
    bot: RunningBot, tg: FakeTelegram, ai: FakeOpenAI
) -> None:
    claim = say(tg, CAROL, "The Eiffel Tower is 330 m tall")
    say(tg, BOB, "@test_bot is this true?", reply_to_message_id=claim)
    await replies(tg, 1)
    # Several lines from one member are quoted as one string (no line can pass for another).
    assert ai.requests[0].messages[-1]["content"] == (
        'Bob: "[replying to Carol: \\"The Eiffel Tower is 330 m tall\\"]\\nis this true?"'
    )


async def test_after_a_migration_the_lost_message_is_delivered_not_an_older_answer(
    bot: RunningBot, tg: FakeTelegram, ai: FakeOpenAI, db: Query
) -> None:
    """What the migrated group did not receive is what reaches the supergroup: here a failed
    /retry's error line, never the earlier answer (already delivered) a second time."""
    from tests.fakes import Error

    old, new = -778, -100_778
    ai.enqueue("The first answer.", Error(500))
    say(tg, ALICE, "@test_bot a question", chat=old)
    await replies(tg, 1, chat=old)
    tg.fail("sendMessage", migrate_to_chat_id=new, when=lambda p: p.get("chat_id") == old)
    say(tg, ALICE, "/retry", chat=old)
    [notice] = await replies(tg, 1, chat=new)
    said = tg.visible_text(notice)
    assert said.startswith("The model service is unreachable"), said
    rows = await eventually(
        lambda: db("SELECT chat_id, text, archived FROM messages ORDER BY id"),
        lambda r: {row[0] for row in r} == {new},
    )
    assert rows == [(new, "a question", 0), (new, "The first answer.", 0)]


async def test_after_a_migration_an_answer_given_in_between_is_not_sent_again(
    bot: RunningBot, tg: FakeTelegram, ai: FakeOpenAI
) -> None:
    """The supergroup was answered while the old group's question was still with the model,
    which then failed: the supergroup gets that failure's line, not its own answer again."""
    from tests.fakes import Error

    old, new = -779, -100_779
    release = asyncio.Event()

    async def respond(request: ChatRequest) -> str | Error:
        if "slow" in request.last_user_text:
            await release.wait()
            return Error(500)
        return "The quick answer."

    ai.responder = respond
    tg.fail("sendMessage", migrate_to_chat_id=new, when=lambda p: p.get("chat_id") == old)
    say(tg, ALICE, "@test_bot a slow question", chat=old)
    await ai.wait_for_requests(1)
    tg.send_migration(old, new, user_id=ALICE)
    say(tg, BOB, "@test_bot a quick question", chat=new)
    await replies(tg, 1, chat=new)
    release.set()
    texts = [tg.visible_text(c) for c in await replies(tg, 2, chat=new)]
    assert texts[0] == "The quick answer."
    assert texts[1].startswith("The model service is unreachable"), texts


async def test_a_long_answer_streamed_by_edits_ends_as_whole_parts_without_losing_text(
    bot: RunningBot, tg: FakeTelegram, ai: FakeOpenAI, db: Query
) -> None:
    paragraph = "This paragraph is filler text that keeps going for a while. " * 5
    text = "\n\n".join(f"{i}. {paragraph}" for i in range(40))
    assert len(text) > 2 * 4096
    ai.responder = lambda request: text
    ai.chunk_chars, ai.chunk_delay = 300, 0.02  # many previews: the parts grow by edits
    asked = say(tg, ALICE, "@test_bot write a lot")
    # The reply is marked delivered once every part has been delivered.
    sql = "SELECT text FROM messages WHERE chat_id = ? AND role = 'assistant' AND NOT undelivered"
    await eventually(lambda: db(sql, (GROUP,)), bool)
    messages = sent(tg)
    assert len(messages) >= 3
    assert [replied_to(m) for m in messages] == [asked] + [None] * (len(messages) - 1)
    texts = [shown(tg, m) for m in messages]
    assert all(len(t) <= 4096 for t in texts)
    numbers = re.findall(r"(?m)^(\d+)\. This", "\n\n".join(texts))
    assert numbers == [str(i) for i in range(40)], "every paragraph once, in order"


async def test_a_stream_cut_in_a_group_leaves_the_partial_text_without_a_stop_button(
    bot: RunningBot, tg: FakeTelegram, ai: FakeOpenAI, db: Query
) -> None:
    text = "The first half of the answer arrives. The second half never does."
    ai.enqueue(Reply(text, chunk_chars=5, delay_per_chunk=0.02, cut_after_chars=35))
    asked = say(tg, ALICE, "@test_bot tell me")
    partial, notice = await replies(tg, 2)
    assert replied_to(partial) == asked
    sql = "SELECT text, status FROM messages WHERE role = 'assistant'"
    assert await eventually(lambda: db(sql), bool) == [(text[:35], "partial")]
    assert shown(tg, partial) == text[:35].strip()
    edits = [e for e in tg.calls_to("editMessageText") if not e.failed]
    last_markup = (edits[-1].params if edits else partial.params).get("reply_markup")
    assert not last_markup, "no Stop button left on a reply that has ended"
    assert "cut off" in tg.visible_text(notice)


async def test_the_stop_button_stops_a_reply_in_a_supergroup_without_topics(
    bot: RunningBot, tg: FakeTelegram, ai: FakeOpenAI, db: Query
) -> None:
    # Outside forums Telegram puts every reply in its reply chain's thread: the bot's answer
    # carries a message_thread_id (without is_topic_message), the question did not.
    ai.enqueue(Reply("This answer goes on and on. " * 200, chunk_chars=6, delay_per_chunk=0.2))
    asked = say(tg, ALICE, "@test_bot write an essay")
    [streamed] = await tg.wait_for("sendMessage", lambda c: bool(c.params.get("reply_markup")))
    assert streamed.result["message_thread_id"] == asked
    assert "is_topic_message" not in streamed.result
    buttons = streamed.params["reply_markup"]["inline_keyboard"][0]
    tg.send_callback(
        GROUP, streamed.result["message_id"], buttons[0]["callback_data"], user_id=ALICE
    )
    [answered] = await tg.wait_for("answerCallbackQuery")
    assert answered.params.get("text") == "Stopped."
    sql = "SELECT status FROM messages WHERE role = 'assistant'"
    assert await eventually(lambda: db(sql), bool) == [("stopped",)]
