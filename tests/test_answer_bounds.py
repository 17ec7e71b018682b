"""A model that misbehaves without failing: it never stops, trickles, or sends deltas that are
not text. Each answer ends within a bound, cut like /stop cuts it, with the text so far kept."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pytest

from telegram_bot.config import load_settings
from tests.fakes import Chunks, Endless, FakeOpenAI, FakeTelegram
from tests.harness import TOKEN, RunningBot, eventually
from tests.test_private_chat import ALICE, ask, final_messages

Query = Callable[..., list[tuple[Any, ...]]]
Factory = Callable[..., RunningBot]
ASSISTANT = "SELECT text, status FROM messages WHERE role = 'assistant'"


@pytest.mark.parametrize("content", [["a", "list"], 42, {"text": "an object"}])
async def test_a_delta_that_is_not_text_cuts_the_answer_and_keeps_the_text(
    bot: RunningBot,
    tg: FakeTelegram,
    ai: FakeOpenAI,
    db: Query,
    caplog: pytest.LogCaptureFixture,
    content: Any,
) -> None:
    ai.enqueue(Chunks(["The first part ", "arrives whole.", content, " Never shown."]))
    with caplog.at_level(logging.INFO):
        partial, notice = await ask(tg, ALICE, "tell me", replies=2)
    assert tg.visible_text(partial) == "The first part arrives whole."
    assert "cut off" in tg.visible_text(notice)
    rows = await eventually(lambda: db(ASSISTANT), bool)
    assert rows == [("The first part arrives whole.", "partial")]
    assert "not text" in caplog.text, "the log says what the server sent"
    assert "Traceback" not in caplog.text


async def test_an_endless_stream_is_cut_at_max_answer_chars(
    bot_factory: Factory, tg: FakeTelegram, ai: FakeOpenAI, db: Query
) -> None:
    running = await bot_factory(max_answer_chars=3000).start()
    try:
        ai.enqueue(Endless("la " * 50))
        tg.send_text(ALICE, "sing", user_id=ALICE)
        [request] = await ai.wait_for_requests(1)
        await tg.wait_for(
            "sendMessage", lambda c: c.chat_id == ALICE and "cut off" in tg.visible_text(c)
        )
        *parts, notice = final_messages(tg, ALICE)
        assert "too long" in tg.visible_text(notice)
        assert 1 <= len(parts) <= 2, "one answer's worth of messages, no flood"
        [(text, status)] = await eventually(lambda: db(ASSISTANT), bool)
        assert status == "partial" and 2900 <= len(text) <= 3000
        await eventually(lambda: request.ended_at, bool)  # the bot closed the stream
        ai.enqueue("Back to normal.")
        [reply] = await ask(tg, ALICE, "hello?")
        assert tg.visible_text(reply) == "Back to normal."
    finally:
        await running.stop()


async def test_a_trickling_stream_is_cut_at_the_answer_deadline(
    bot_factory: Factory, tg: FakeTelegram, ai: FakeOpenAI, db: Query
) -> None:
    # Every read comes well within OPENAI_TIMEOUT, so only a total deadline can end it.
    running = await bot_factory(openai_timeout=2.0, answer_timeout=1.5).start()
    try:
        ai.enqueue(Endless("tick ", delay=0.2))
        tg.send_text(ALICE, "count slowly", user_id=ALICE)
        [request] = await ai.wait_for_requests(1)
        await tg.wait_for(
            "sendMessage", lambda c: c.chat_id == ALICE and "cut off" in tg.visible_text(c)
        )
        *parts, notice = final_messages(tg, ALICE)
        assert "took too long" in tg.visible_text(notice)
        assert tg.visible_text(parts[0]).startswith("tick tick")
        [(text, status)] = await eventually(lambda: db(ASSISTANT), bool)
        assert status == "partial" and text.startswith("tick tick")
        await eventually(lambda: request.ended_at, bool)
    finally:
        await running.stop()


async def test_a_model_silent_past_the_answer_deadline_times_out(
    bot_factory: Factory, tg: FakeTelegram, ai: FakeOpenAI, db: Query
) -> None:
    # Keeps the connection busy with empty deltas: no read ever times out.
    running = await bot_factory(openai_timeout=2.0, answer_timeout=1.0).start()
    try:
        ai.enqueue(Endless("", delay=0.2))
        [notice] = await ask(tg, ALICE, "think")
        assert "took too long" in tg.visible_text(notice)
        assert db("SELECT role FROM messages") == [("user",)]
    finally:
        await running.stop()


def test_the_bounds_follow_the_timeout_and_the_output_cap_unless_set() -> None:
    keys = {"TELEGRAM_BOT_TOKEN": TOKEN, "OPENAI_API_KEY": "sk-x"}
    s = load_settings({**keys, "OPENAI_TIMEOUT": "100", "MAX_OUTPUT_TOKENS": "500"}, None)
    assert (s.answer_deadline, s.answer_chars) == (300.0, 8000)
    s = load_settings({**keys, "ANSWER_TIMEOUT": "45", "MAX_ANSWER_CHARS": "9000"}, None)
    assert (s.answer_deadline, s.answer_chars) == (45.0, 9000)
