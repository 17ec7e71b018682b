"""Stopping a reply that is streaming, and answering the last question again."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from tests.fakes import FakeOpenAI, FakeTelegram, Reply
from tests.harness import RunningBot, eventually
from tests.test_private_chat import ALICE, ask, final_messages

Query = Callable[..., list[tuple[Any, ...]]]
CUT_SHORT = "[reply cut short]"  # what the model and the summariser see after a cut reply
LONG = "This answer goes on and on, one slow word after another. " * 40


def slow_reply() -> Reply:
    """Would take minutes to finish: only a stop ends it within a test's patience."""
    return Reply(LONG, chunk_chars=6, delay_per_chunk=0.2)


@pytest.fixture
async def button_bot(bot_factory: Callable[..., RunningBot]) -> AsyncIterator[RunningBot]:
    running = await bot_factory(stop_button=True).start()
    yield running
    await running.stop()


async def test_the_stop_button_keeps_the_partial_text_and_frees_the_chat(
    button_bot: RunningBot, tg: FakeTelegram, ai: FakeOpenAI, db: Query
) -> None:
    ai.enqueue(slow_reply())
    tg.send_text(ALICE, "write an essay", user_id=ALICE)
    [streamed] = await tg.wait_for("sendMessage", lambda c: bool(c.params.get("reply_markup")))
    buttons = streamed.params["reply_markup"]["inline_keyboard"][0]
    assert [b["text"] for b in buttons] == ["⏹ Stop"]
    await tg.wait_for("editMessageText", count=2)  # some text has streamed
    tg.send_callback(ALICE, streamed.result["message_id"], buttons[0]["callback_data"])
    [answered] = await tg.wait_for("answerCallbackQuery")
    assert answered.params.get("text") == "Stopped."
    # Stored before it is delivered: once marked delivered, the final edit is done.
    sql = "SELECT text, status FROM messages WHERE role = 'assistant' AND NOT undelivered"
    [(text, status)] = await eventually(lambda: db(sql), bool)
    assert status == "stopped" and 0 < len(text) < len(LONG) and LONG.startswith(text)
    last_edit = [c for c in tg.calls_to("editMessageText") if not c.failed][-1]
    assert tg.visible_text(last_edit) == text.strip(), "the partial text stays on screen"
    assert not last_edit.params.get("reply_markup"), "the button goes once stopped"
    ai.enqueue("Next answer.")
    [reply] = await ask(tg, ALICE, "something else")  # the model stream no longer holds the chat
    assert tg.visible_text(reply) == "Next answer."
    history = [m["content"] for m in ai.requests[-1].messages[1:]]
    assert history == ["write an essay", f"{text.rstrip()} {CUT_SHORT}", "something else"]


async def test_stop_command_stops_a_drafted_reply(
    bot: RunningBot, tg: FakeTelegram, ai: FakeOpenAI, db: Query
) -> None:
    ai.enqueue(slow_reply())
    tg.send_text(ALICE, "write an essay", user_id=ALICE)
    await tg.wait_for("sendMessageDraft", count=2)
    sent = await ask(tg, ALICE, "/stop", replies=2)
    # The confirmation comes below the text it stopped, never above it.
    partial, confirmation = [tg.visible_text(c) for c in sent]
    assert confirmation == "Stopped."
    assert LONG.startswith(partial) and len(partial) < len(LONG)
    sql = "SELECT text, status FROM messages WHERE role = 'assistant'"
    [(stored, status)] = await eventually(lambda: db(sql), bool)
    assert status == "stopped" and stored.strip() == partial


async def test_stop_before_any_text_stores_no_answer(
    bot: RunningBot, tg: FakeTelegram, ai: FakeOpenAI, db: Query
) -> None:
    ai.enqueue(Reply("too late", first_token_delay=60))
    tg.send_text(ALICE, "think hard", user_id=ALICE)
    await ai.wait_for_requests(1)
    [confirmation] = await ask(tg, ALICE, "/stop")
    assert tg.visible_text(confirmation) == "Stopped."
    ai.enqueue("Fresh answer.")
    [reply] = await ask(tg, ALICE, "never mind")
    assert tg.visible_text(reply) == "Fresh answer."
    sql = "SELECT role FROM messages ORDER BY id"
    rows = await eventually(lambda: db(sql), lambda rows: len(rows) == 3)
    assert rows == [("user",), ("user",), ("assistant",)]


async def test_stop_with_nothing_running_says_so(
    bot: RunningBot, tg: FakeTelegram, ai: FakeOpenAI
) -> None:
    [notice] = await ask(tg, ALICE, "/stop")
    assert "Nothing to stop" in tg.visible_text(notice)


async def test_retry_replaces_the_last_answer_without_deleting_it(
    bot: RunningBot, tg: FakeTelegram, ai: FakeOpenAI, db: Query
) -> None:
    ai.enqueue("A dull answer.", "A better answer.", "Glad you liked it.")
    await ask(tg, ALICE, "Tell me a joke")
    [again] = await ask(tg, ALICE, "/retry")
    assert tg.visible_text(again) == "A better answer."
    retried = [m["content"] for m in ai.requests[1].messages[1:]]
    assert retried == ["Tell me a joke"], "the replaced answer is not shown to the model"
    await ask(tg, ALICE, "ha!")
    history = [m["content"] for m in ai.requests[2].messages[1:]]
    assert history == ["Tell me a joke", "A better answer.", "ha!"]
    rows = db("SELECT id, text, archived, superseded_by FROM messages ORDER BY id")
    assert [r[1:3] for r in rows[:3]] == [
        ("Tell me a joke", 0),
        ("A dull answer.", 1),
        ("A better answer.", 0),
    ]
    assert rows[1][3] == rows[2][0], "the old answer points at its replacement"


async def test_retry_that_fails_keeps_the_old_answer(
    bot: RunningBot, tg: FakeTelegram, ai: FakeOpenAI, db: Query
) -> None:
    from tests.fakes import Error

    ai.enqueue("The original.", Error(500))
    await ask(tg, ALICE, "question")
    [notice] = await ask(tg, ALICE, "/retry")
    assert "try again" in tg.visible_text(notice).lower()
    assert db("SELECT text, archived FROM messages ORDER BY id") == [
        ("question", 0),
        ("The original.", 0),
    ]


async def test_retry_with_nothing_to_retry(
    bot: RunningBot, tg: FakeTelegram, ai: FakeOpenAI
) -> None:
    [notice] = await ask(tg, ALICE, "/retry")
    assert "nothing to answer again" in tg.visible_text(notice).lower()
    assert ai.requests == []


async def while_streaming(
    tg: FakeTelegram, ai: FakeOpenAI, exchange: tuple[str, str], then: str, next_answer: str
) -> list[str]:
    """Asks `exchange[0]`, sends `then` while its answer `exchange[1]` streams slowly, and
    returns what the chat shows once two messages have arrived."""
    question, answer = exchange
    ai.enqueue(Reply(answer, chunk_chars=2, delay_per_chunk=0.05), next_answer)
    tg.send_text(ALICE, question, user_id=ALICE)
    await tg.wait_for("sendMessageDraft")
    send = tg.send_command if then.startswith("/") else tg.send_text
    send(ALICE, then, user_id=ALICE)
    await tg.wait_for("sendMessage", lambda c: c.chat_id == ALICE, count=2)
    return [tg.visible_text(c) for c in final_messages(tg, ALICE)]


async def test_a_message_sent_while_a_reply_streams_is_answered_after_it(
    bot: RunningBot, tg: FakeTelegram, ai: FakeOpenAI
) -> None:
    shown = await while_streaming(tg, ai, ("one", "First, slowly."), "two", "Second.")
    assert shown == ["First, slowly.", "Second."]
    assert [m["content"] for m in ai.requests[1].messages[1:]] == ["one", "First, slowly.", "two"]


async def test_reset_sent_while_a_reply_streams_waits_for_it_and_archives_it_too(
    bot: RunningBot, tg: FakeTelegram, ai: FakeOpenAI, db: Query
) -> None:
    exchange = ("my secret is swordfish", "Noted, slowly.")
    answer, notice = await while_streaming(tg, ai, exchange, "/reset", "Fresh.")
    assert answer == "Noted, slowly."
    assert "2 earlier messages archived" in notice
    await ask(tg, ALICE, "what is my secret?")
    assert [m["content"] for m in ai.requests[-1].messages[1:]] == ["what is my secret?"]
    sql = "SELECT text, archived FROM messages WHERE chat_id = ? ORDER BY id"
    rows = await eventually(lambda: db(sql, (ALICE,)), lambda rows: len(rows) == 4)
    assert rows[:2] == [("my secret is swordfish", 1), ("Noted, slowly.", 1)]


async def test_a_stopped_reply_is_marked_cut_short_for_the_model_and_the_summariser(
    bot_factory: Callable[..., RunningBot], tg: FakeTelegram, ai: FakeOpenAI, db: Query
) -> None:
    """Half an answer must not pass for a whole one: the next prompt and the summary request
    both show the stopped reply followed by the same marker."""
    from tests.test_memory import SMALL, filler, is_summary, summariser

    running = await bot_factory(**SMALL).start()
    ai.responder = summariser("SUMMARY")
    ai.enqueue(slow_reply())
    tg.send_text(ALICE, "write an essay", user_id=ALICE)
    await tg.wait_for("sendMessageDraft", count=2)
    await ask(tg, ALICE, "/stop", replies=2)
    sql = "SELECT text FROM messages WHERE status = 'stopped'"
    [(partial,)] = await eventually(lambda: db(sql), bool)
    marked = f"{partial.rstrip()} {CUT_SHORT}"

    await ask(tg, ALICE, filler(0))
    assert ai.requests[-1].messages[2] == {"role": "assistant", "content": marked}
    asked = 1
    while not [r for r in ai.requests if is_summary(r)]:
        await ask(tg, ALICE, filler(asked))
        asked += 1
        assert asked < 20, "the history passed its budget but nothing was folded"
    [summary_request] = [r for r in ai.requests if is_summary(r)]
    transcript = summary_request.messages[1]["content"]
    assert f"Assistant: {json.dumps(marked)}\n" in transcript, "quoted, with its marker"
    assert transcript.count(CUT_SHORT) == 1, "complete answers carry no marker"
    await running.stop()
