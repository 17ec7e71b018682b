"""A private chat end to end: the real bot, over real HTTP, against the fake servers, on SQLite
and on PostgreSQL (`every_backend`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tests.databases import every_backend
from tests.fakes import Error, FakeOpenAI, FakeTelegram, Reply
from tests.fakes.telegram import Call
from tests.harness import RunningBot, eventually

__all__ = ["every_backend"]  # the `database` fixture: these tests run on every backend

Query = Callable[..., list[tuple[Any, ...]]]
ALICE = 1001
BOB = 2002


def final_messages(tg: FakeTelegram, chat_id: int) -> list[Call]:
    return [c for c in tg.calls_to("sendMessage") if c.chat_id == chat_id and not c.failed]


async def ask(tg: FakeTelegram, chat_id: int, text: str, replies: int = 1) -> list[Call]:
    """Sends a message as the user and waits until the bot's reply messages arrived."""
    before = len(final_messages(tg, chat_id))
    send = tg.send_command if text.startswith("/") else tg.send_text
    send(chat_id, text, user_id=chat_id)
    await tg.wait_for(
        "sendMessage", lambda c: c.chat_id == chat_id and not c.failed, count=before + replies
    )
    return final_messages(tg, chat_id)[before:]


async def test_hello_gets_the_model_reply(
    bot: RunningBot, tg: FakeTelegram, ai: FakeOpenAI
) -> None:
    ai.enqueue("Hello **Alice**! How can I help?")
    [reply] = await ask(tg, ALICE, "hello")
    assert tg.visible_text(reply) == "Hello Alice! How can I help?"
    entities = reply.params.get("entities") or []
    assert [e["type"] for e in entities] == ["bold"]
    [request] = ai.requests
    assert request.messages[0]["role"] == "system"
    assert request.messages[-1] == {"role": "user", "content": "hello"}
    assert request.stream and request.include_usage


async def test_reply_streams_as_drafts_before_the_final_message(
    bot: RunningBot, tg: FakeTelegram, ai: FakeOpenAI
) -> None:
    text = "One two three four five six seven eight nine ten. " * 4
    ai.enqueue(Reply(text, chunk_chars=10, delay_per_chunk=0.02))
    [final] = await ask(tg, ALICE, "count for me")
    drafts = [c for c in tg.calls_to("sendMessageDraft") if c.chat_id == ALICE]
    assert len(drafts) >= 2, "the user should see the text grow"
    assert all(d.at < final.at for d in drafts)
    assert len({d.params["draft_id"] for d in drafts}) == 1
    growing = [len(d.params.get("text", "")) for d in drafts]
    assert growing == sorted(growing)
    assert tg.visible_text(final) == text.strip()


async def test_without_drafts_the_reply_is_edited_in_place(
    bot: RunningBot, tg: FakeTelegram, ai: FakeOpenAI
) -> None:
    tg.drafts_supported = False
    text = "Streaming by edits works too. " * 6
    ai.enqueue(Reply(text, chunk_chars=8, delay_per_chunk=0.02))
    tg.send_text(ALICE, "go", user_id=ALICE)
    await ai.wait_for_requests(1)
    await tg.wait_for(
        "editMessageText", lambda c: tg.visible_text(c) == text.strip() and not c.failed
    )
    sent = final_messages(tg, ALICE)
    assert len(sent) == 1, "one message, edited as the text grows"
    edits = [c for c in tg.calls_to("editMessageText") if not c.failed]
    assert all(e.params["message_id"] == sent[0].result["message_id"] for e in edits)


async def test_typing_shows_while_the_model_thinks(
    bot: RunningBot, tg: FakeTelegram, ai: FakeOpenAI
) -> None:
    ai.enqueue(Reply("Thought about it.", first_token_delay=1.0))
    [reply] = await ask(tg, ALICE, "think hard")
    [typing] = [c for c in tg.calls_to("sendChatAction") if c.chat_id == ALICE][:1]
    assert typing.params["action"] == "typing"
    assert typing.at < reply.at


async def test_three_turns_carry_the_history(
    bot: RunningBot, tg: FakeTelegram, ai: FakeOpenAI
) -> None:
    ai.enqueue("Nice to meet you, Ann.", "Noted: blue.", "Your name is Ann.")
    await ask(tg, ALICE, "My name is Ann")
    await ask(tg, ALICE, "My favourite colour is blue")
    await ask(tg, ALICE, "What is my name?")
    third = ai.requests[2].messages
    contents = [m["content"] for m in third[1:]]
    assert contents == [
        "My name is Ann",
        "Nice to meet you, Ann.",
        "My favourite colour is blue",
        "Noted: blue.",
        "What is my name?",
    ]


async def test_history_survives_a_restart(
    bot: RunningBot, tg: FakeTelegram, ai: FakeOpenAI
) -> None:
    ai.enqueue("Got it: the code is 4711.")
    await ask(tg, ALICE, "Remember the code 4711")
    await bot.restart()
    ai.enqueue("It was 4711.")
    await ask(tg, ALICE, "What was the code?")
    contents = [m["content"] for m in ai.requests[-1].messages]
    assert "Remember the code 4711" in contents
    assert "Got it: the code is 4711." in contents


async def test_reset_archives_and_forgets(
    bot: RunningBot, tg: FakeTelegram, ai: FakeOpenAI, db: Query
) -> None:
    ai.enqueue("Secret kept.")
    await ask(tg, ALICE, "My secret is swordfish")
    [notice] = await ask(tg, ALICE, "/reset")
    assert "fresh conversation" in tg.visible_text(notice)
    ai.enqueue("I don't know any secret.")
    await ask(tg, ALICE, "What is my secret?")
    contents = [m["content"] for m in ai.requests[-1].messages]
    assert not any("swordfish" in c for c in contents)
    sql = "SELECT text, archived FROM messages WHERE chat_id = ? ORDER BY id"
    rows = await eventually(lambda: db(sql, (ALICE,)), lambda rows: len(rows) == 4)
    assert rows[:2] == [("My secret is swordfish", 1), ("Secret kept.", 1)]
    assert rows[2:] == [("What is my secret?", 0), ("I don't know any secret.", 0)]


async def test_a_very_long_reply_is_split_without_losing_text(
    bot: RunningBot, tg: FakeTelegram, ai: FakeOpenAI, db: Query
) -> None:
    paragraph = "This paragraph is filler text that keeps going for a while. " * 5
    code = "```python\n" + "\n".join(f"print({i})  # line {i}" for i in range(120)) + "\n```"
    text = "\n\n".join([paragraph] * 14 + [code] + [paragraph] * 14)
    assert len(text) >= 10_000
    ai.enqueue(Reply(text, chunk_chars=400))
    tg.send_text(ALICE, "write a lot", user_id=ALICE)
    # The reply is marked delivered once every part has been delivered.
    sql = "SELECT text FROM messages WHERE chat_id = ? AND role = 'assistant' AND NOT undelivered"
    await eventually(lambda: db(sql, (ALICE,)), bool)
    parts = final_messages(tg, ALICE)
    assert len(parts) >= 3
    joined = "\n".join(tg.visible_text(p) for p in parts)
    for i in range(120):
        assert f"print({i})  # line {i}" in joined
    assert joined.count("filler text") == text.count("filler text")
    code_parts = [p for p in parts if "print(" in (p.text or "")]
    for part in code_parts:
        pre = [e for e in part.params.get("entities") or [] if e["type"] == "pre"]
        assert pre and all(e.get("language") == "python" for e in pre), "code stays code"


async def test_formatting_rejected_by_telegram_falls_back_to_plain_text(
    bot: RunningBot, tg: FakeTelegram, ai: FakeOpenAI
) -> None:
    tg.fail(
        "sendMessage",
        description="Bad Request: can't parse entities: unsupported entity",
        when=lambda params: bool(params.get("entities")),
        times=5,
    )
    ai.enqueue("This is **bold** and _odd* markup")
    tg.send_text(ALICE, "format please", user_id=ALICE)
    await tg.wait_for("sendMessage", lambda c: c.chat_id == ALICE and not c.failed)
    [ok] = final_messages(tg, ALICE)
    assert not ok.params.get("entities")
    assert "bold" in tg.visible_text(ok) and "markup" in tg.visible_text(ok)


async def test_one_slow_chat_never_delays_another(
    bot: RunningBot, tg: FakeTelegram, ai: FakeOpenAI
) -> None:
    ai.responder = lambda request: (
        Reply("slow answer", first_token_delay=5.0)
        if request.last_user_text == "slow question"
        else "fast answer"
    )
    tg.send_text(ALICE, "slow question", user_id=ALICE)
    await ai.wait_for_requests(1)
    tg.send_text(BOB, "fast question", user_id=BOB)
    [fast] = await tg.wait_for("sendMessage", lambda c: c.chat_id == BOB)
    assert tg.visible_text(fast) == "fast answer"
    assert not final_messages(tg, ALICE), "chat A is still waiting for its slow model"


async def test_two_quick_messages_in_one_chat_are_answered_in_order(
    bot: RunningBot, tg: FakeTelegram, ai: FakeOpenAI
) -> None:
    ai.enqueue(Reply("first answer", first_token_delay=0.3), "second answer")
    tg.send_text(ALICE, "first", user_id=ALICE)
    tg.send_text(ALICE, "second", user_id=ALICE)
    await tg.wait_for("sendMessage", lambda c: c.chat_id == ALICE, count=2)
    assert [tg.visible_text(c) for c in final_messages(tg, ALICE)] == [
        "first answer",
        "second answer",
    ]
    second_request = [m["content"] for m in ai.requests[1].messages[1:]]
    assert second_request == ["first", "first answer", "second"]


async def test_model_failure_gives_a_clear_message_and_keeps_the_question(
    bot: RunningBot, tg: FakeTelegram, ai: FakeOpenAI, db: Query
) -> None:
    ai.enqueue(Error(status=500, message="The server had an error"))
    [notice] = await ask(tg, ALICE, "Will this be kept?")
    assert "try again" in tg.visible_text(notice).lower()
    assert db("SELECT role, text FROM messages WHERE chat_id = ?", (ALICE,)) == [
        ("user", "Will this be kept?")
    ]
    ai.enqueue("Yes, it was kept.")
    await ask(tg, ALICE, "Hello again")
    contents = [m["content"] for m in ai.requests[-1].messages]
    assert contents[1:] == ["Will this be kept?", "Hello again"]


async def test_start_help_and_the_command_menu(
    bot: RunningBot, tg: FakeTelegram, ai: FakeOpenAI
) -> None:
    [hello] = await ask(tg, ALICE, "/start")
    assert "/reset" in tg.visible_text(hello) and "/help" in tg.visible_text(hello)
    [help_] = await ask(tg, ALICE, "/help")
    assert "/reset" in tg.visible_text(help_)
    [menu] = await tg.wait_for("setMyCommands")
    assert {c["command"] for c in menu.params["commands"]} >= {"help", "reset"}
    assert ai.requests == [], "commands never reach the model"
