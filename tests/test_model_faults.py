"""Model API faults, injected through the fake OpenAI server: each ends in a clear line in
the chat, a log line, and a database that kept the user's message."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pytest

from tests.fakes import Error, FakeOpenAI, FakeTelegram, Hang, Reply
from tests.harness import API_KEY, RunningBot, eventually
from tests.test_private_chat import ALICE, ask, final_messages

Query = Callable[..., list[tuple[Any, ...]]]
Factory = Callable[..., RunningBot]
QUICK = {"retry-after-ms": "10"}  # the SDK honours it, and it keeps the tests fast


@pytest.fixture
async def retrying_bot(bot_factory: Factory) -> Any:
    running = await bot_factory(openai_max_retries=2).start()
    yield running
    await running.stop()


async def test_rate_limit_waits_as_long_as_retry_after_says(
    retrying_bot: RunningBot, tg: FakeTelegram, ai: FakeOpenAI
) -> None:
    ai.enqueue(Error(429, headers={"retry-after": "1"}), "Answer after the wait.")
    [reply] = await ask(tg, ALICE, "hello")
    assert tg.visible_text(reply) == "Answer after the wait."
    first, second = ai.requests
    assert second.at - first.at >= 0.95, "the retry came before Retry-After allowed it"


async def test_rate_limit_retries_are_bounded_then_the_user_is_told(
    retrying_bot: RunningBot, tg: FakeTelegram, ai: FakeOpenAI, db: Query
) -> None:
    ai.enqueue(*[Error(429, headers=QUICK) for _ in range(3)], "never asked for")
    [notice] = await ask(tg, ALICE, "hello?")
    assert "busy" in tg.visible_text(notice) and "rate limit" in tg.visible_text(notice)
    assert len(ai.requests) == 3, "one call and OPENAI_MAX_RETRIES=2 retries, no more"
    assert db("SELECT role, text FROM messages") == [("user", "hello?")]


async def test_server_errors_and_dropped_connections_are_retried(
    retrying_bot: RunningBot, tg: FakeTelegram, ai: FakeOpenAI
) -> None:
    ai.enqueue(Error(503, headers=QUICK), Hang(0), "Third time lucky.")
    [reply] = await ask(tg, ALICE, "are you there?")
    assert tg.visible_text(reply) == "Third time lucky."
    assert len(ai.requests) == 3


@pytest.mark.parametrize("status", [500, 502, 503])
async def test_a_model_server_that_stays_down_gets_a_clear_message(
    retrying_bot: RunningBot, tg: FakeTelegram, ai: FakeOpenAI, status: int
) -> None:
    ai.enqueue(*[Error(status, headers=QUICK) for _ in range(3)])
    [notice] = await ask(tg, ALICE, "hello")
    assert "unreachable or failing" in tg.visible_text(notice)
    ai.enqueue("Back again.")
    [reply] = await ask(tg, ALICE, "now?")
    assert tg.visible_text(reply) == "Back again."


async def test_a_model_that_never_answers_times_out(
    bot_factory: Factory, tg: FakeTelegram, ai: FakeOpenAI, db: Query
) -> None:
    running = await bot_factory(openai_timeout=1.0).start()
    try:
        ai.enqueue(Hang(60))
        [notice] = await ask(tg, ALICE, "think forever")
        assert "took too long" in tg.visible_text(notice)
        assert db("SELECT role FROM messages") == [("user",)]
    finally:
        await running.stop()


async def test_a_stream_cut_halfway_keeps_shows_and_marks_the_partial_text(
    bot: RunningBot, tg: FakeTelegram, ai: FakeOpenAI, db: Query
) -> None:
    text = "The first half of the answer arrives. The second half never does."
    ai.enqueue(Reply(text, chunk_chars=5, cut_after_chars=35))
    partial, notice = await ask(tg, ALICE, "tell me", replies=2)
    assert tg.visible_text(partial) == text[:35].strip()
    assert "cut off" in tg.visible_text(notice)
    sql = "SELECT role, text, status FROM messages ORDER BY id"
    rows = await eventually(lambda: db(sql), lambda rows: len(rows) == 2)
    assert rows[1] == ("assistant", text[:35], "partial")
    ai.enqueue("Continuing.")
    await ask(tg, ALICE, "go on")
    contents = [m["content"] for m in ai.requests[-1].messages[1:]]
    # The partial text stays in the history, marked as cut short so the model knows.
    assert contents == ["tell me", f"{text[:35].rstrip()} [reply cut short]", "go on"]


@pytest.mark.parametrize("status", [401, 403])
async def test_refused_credentials_tell_the_user_and_name_the_setting_in_the_log(
    bot: RunningBot,
    tg: FakeTelegram,
    ai: FakeOpenAI,
    caplog: pytest.LogCaptureFixture,
    status: int,
) -> None:
    if status == 401:
        ai.api_key = "sk-the-right-key-is-another-one"
    else:
        ai.enqueue(Error(403))
    with caplog.at_level(logging.INFO):
        [notice] = await ask(tg, ALICE, "hello")
    assert "not configured correctly" in tg.visible_text(notice)
    assert "OPENAI_API_KEY" in caplog.text
    assert API_KEY not in caplog.text, "the key itself never reaches the log"


async def test_an_empty_completion_is_reported_and_not_stored(
    bot: RunningBot, tg: FakeTelegram, ai: FakeOpenAI, db: Query
) -> None:
    ai.enqueue("")
    [notice] = await ask(tg, ALICE, "say nothing")
    assert "empty answer" in tg.visible_text(notice)
    assert db("SELECT role FROM messages") == [("user",)]
    assert len(final_messages(tg, ALICE)) == 1
