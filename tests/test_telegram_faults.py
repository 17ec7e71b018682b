"""Bot API faults, injected through the fake Telegram server."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pytest

from tests.fakes import FakeOpenAI, FakeTelegram, Reply
from tests.fakes.telegram import NOT_MODIFIED
from tests.harness import RunningBot, eventually
from tests.test_private_chat import ALICE, BOB, ask, final_messages

Query = Callable[..., list[tuple[Any, ...]]]

BLOCKED = "Forbidden: bot was blocked by the user"


def to(chat_id: int) -> Callable[[dict[str, Any]], bool]:
    return lambda params: params.get("chat_id") == chat_id


async def test_flood_control_on_the_final_message_waits_then_delivers(
    bot: RunningBot, tg: FakeTelegram, ai: FakeOpenAI
) -> None:
    tg.fail("sendMessage", status=429, retry_after=1)
    ai.enqueue("Worth the wait.")
    tg.send_text(ALICE, "hi", user_id=ALICE)
    [ok] = await tg.wait_for("sendMessage", lambda c: not c.failed)
    [refused] = [c for c in tg.calls_to("sendMessage") if c.failed]
    assert tg.visible_text(ok) == "Worth the wait."
    assert ok.at - refused.at >= 0.95


async def test_flood_control_slows_the_streaming_preview_instead_of_failing(
    bot: RunningBot, tg: FakeTelegram, ai: FakeOpenAI
) -> None:
    tg.fail("sendMessageDraft", status=429, retry_after=1)
    text = "A steady stream of words that keeps coming for a while. " * 4
    ai.enqueue(Reply(text, chunk_chars=6, delay_per_chunk=0.03))
    [final] = await ask(tg, ALICE, "stream please")
    assert tg.visible_text(final) == text.strip()
    drafts = tg.calls_to("sendMessageDraft")
    [refused] = [d for d in drafts if d.failed]
    later = [d.at - refused.at for d in drafts if d.at > refused.at]
    assert all(gap >= 0.95 for gap in later), "no preview inside the flood-control window"


async def test_flood_control_and_network_errors_on_polling_do_not_stop_the_bot(
    bot: RunningBot, tg: FakeTelegram, ai: FakeOpenAI, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        tg.drop_connection("getUpdates", 2)
        tg.fail("getUpdates", status=429, retry_after=1)
        tg.fail("getUpdates", status=502)
        await tg.wait_for("getUpdates", lambda c: c.failed, count=4)
        ai.enqueue("Still here.")
        [reply] = await ask(tg, ALICE, "are you alive?")
    assert tg.visible_text(reply) == "Still here."
    assert "polling goes on" in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], "calm lines only"


async def test_message_not_modified_is_ignored(
    bot: RunningBot, tg: FakeTelegram, ai: FakeOpenAI, caplog: pytest.LogCaptureFixture
) -> None:
    tg.drafts_supported = False
    tg.fail("editMessageText", description=NOT_MODIFIED, times=3)
    text = "Edits that Telegram calls unchanged are fine. " * 3
    ai.enqueue(Reply(text, chunk_chars=10, delay_per_chunk=0.03))
    with caplog.at_level(logging.WARNING):
        tg.send_text(ALICE, "go", user_id=ALICE)
        await tg.wait_for(
            "editMessageText", lambda c: tg.visible_text(c) == text.strip() and not c.failed
        )
    assert len(final_messages(tg, ALICE)) == 1, "no error notice"
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_a_part_telegram_finds_too_long_is_sent_in_halves(
    bot_factory: Callable[..., RunningBot], tg: FakeTelegram, ai: FakeOpenAI, db: Query
) -> None:
    running = await bot_factory(streaming=False).start()  # one sendMessage: the final one
    try:
        tg.fail("sendMessage", description="Bad Request: message is too long")
        text = " ".join(f"word{i}" for i in range(400))
        ai.enqueue(text)
        tg.send_text(ALICE, "long one", user_id=ALICE)
        delivered = "SELECT 1 FROM messages WHERE role = 'assistant' AND NOT undelivered"
        await eventually(lambda: db(delivered), bool)
        parts = final_messages(tg, ALICE)
        assert len(parts) == 2
        assert " ".join(tg.visible_text(p) for p in parts) == text
    finally:
        await running.stop()


@pytest.mark.parametrize(
    ("status", "description"),
    [(403, BLOCKED), (400, "Bad Request: chat not found")],
)
async def test_a_chat_that_is_gone_is_marked_inactive_without_a_retry_storm(
    bot: RunningBot, tg: FakeTelegram, ai: FakeOpenAI, db: Query, status: int, description: str
) -> None:
    gone = tg.fail("*", status=status, description=description, times=1000, when=to(ALICE))
    ai.enqueue(Reply("A long answer nobody will read. " * 10, chunk_chars=4, delay_per_chunk=0.01))
    tg.send_text(ALICE, "hello", user_id=ALICE)
    sql = "SELECT active FROM chats WHERE chat_id = ?"
    await eventually(lambda: db(sql, (ALICE,)), lambda rows: rows == [(0,)])
    ai.enqueue("Bob is fine.")
    await ask(tg, BOB, "and me?")  # the bot carries on for everyone else
    attempts = [c for c in tg.calls if c.chat_id == ALICE]
    assert len(attempts) <= 3, f"retry storm: {[c.method for c in attempts]}"
    assert db("SELECT role FROM messages WHERE chat_id = ? ORDER BY id", (ALICE,)) == [
        ("user",),
        ("assistant",),
    ], "the question and the answer are stored even though it could not be delivered"
    gone.times = 0  # the user unblocks the bot and writes again
    ai.enqueue("Welcome back.")
    [reply] = await ask(tg, ALICE, "I'm back")
    assert tg.visible_text(reply) == "Welcome back."
    assert db(sql, (ALICE,)) == [(1,)]


async def test_flood_control_on_any_call_is_waited_out(
    bot: RunningBot, tg: FakeTelegram, ai: FakeOpenAI
) -> None:
    tg.fail("sendMessage", status=429, retry_after=1, times=2)
    tg.send_command(ALICE, "/help")
    [help_] = await tg.wait_for("sendMessage", lambda c: not c.failed)
    assert "/reset" in tg.visible_text(help_)
    refused = [c for c in tg.calls_to("sendMessage") if c.failed]
    assert len(refused) == 2 and help_.at - refused[-1].at >= 0.95
    tg.fail("answerCallbackQuery", status=429, retry_after=1)
    tg.send_callback(ALICE, help_.result["message_id"], "stop")
    await tg.wait_for("answerCallbackQuery", lambda c: not c.failed)
    assert len(tg.calls_to("answerCallbackQuery")) == 2


async def test_flood_control_that_never_ends_gives_up_after_a_few_waits(
    bot: RunningBot, tg: FakeTelegram, ai: FakeOpenAI, caplog: pytest.LogCaptureFixture
) -> None:
    tg.fail("sendMessage", status=429, retry_after=1, times=100, when=to(ALICE))
    with caplog.at_level(logging.WARNING):
        tg.send_command(ALICE, "/help")
        await tg.wait_for("sendMessage", count=4, timeout=20)
        ai.enqueue("Bob gets his answer.")
        await ask(tg, BOB, "hello")
        await eventually(lambda: caplog.text, lambda text: "answer dropped" in text)
    assert len([c for c in tg.calls_to("sendMessage") if c.chat_id == ALICE]) == 4, (
        "one try and three waits, no storm"
    )
    assert "answer dropped" in caplog.text


async def test_flood_control_on_streaming_edits_slows_them_down(
    bot: RunningBot, tg: FakeTelegram, ai: FakeOpenAI
) -> None:
    tg.drafts_supported = False
    tg.fail("editMessageText", status=429, retry_after=1)
    text = "Edits wait for flood control and then carry on. " * 4
    ai.enqueue(Reply(text, chunk_chars=6, delay_per_chunk=0.03))
    tg.send_text(ALICE, "go", user_id=ALICE)
    await tg.wait_for(
        "editMessageText", lambda c: tg.visible_text(c) == text.strip() and not c.failed
    )
    edits = tg.calls_to("editMessageText")
    [refused] = [e for e in edits if e.failed]
    assert all(e.at - refused.at >= 0.95 for e in edits if e.at > refused.at)
    assert len(final_messages(tg, ALICE)) == 1, "one message, no error notice"
