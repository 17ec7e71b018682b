"""Delivering an answer through a Bot API that refuses, fails or stalls: flood control that
lasts an hour, a proxy's 502, a network error, a part Telegram finds empty. The answer is
stored before it is sent, every wait is bounded, and the user is told when it cannot arrive."""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from telegram_bot.telegram_adapter.flood import DELIVERY_BACKOFF
from tests.fakes import FakeOpenAI, FakeTelegram
from tests.harness import RunningBot, eventually
from tests.test_private_chat import ALICE, ask, final_messages
from tests.test_process import BotProcess

Query = Callable[..., list[tuple[Any, ...]]]
Factory = Callable[..., RunningBot]


@pytest.mark.parametrize("streaming", [False, True])
@pytest.mark.parametrize("tail", ["\x1f", "\x00\x01", "\n\u200b\x1c"])
async def test_a_last_part_made_only_of_control_characters_is_not_sent(
    bot_factory: Factory, tg: FakeTelegram, ai: FakeOpenAI, db: Query, streaming: bool, tail: str
) -> None:
    running = await bot_factory(streaming=streaming).start()
    try:
        ai.enqueue("x" * 4096 + tail, "Next.")
        [part] = await ask(tg, ALICE, "fill a message")
        assert tg.visible_text(part) == "x" * 4096
        [reply] = await ask(tg, ALICE, "and then?")
        assert tg.visible_text(reply) == "Next.", "no error line came in between"
        assert not [c for c in tg.calls if c.failed], "nothing Telegram would reject as empty"
        assert await eventually(
            lambda: db("SELECT COUNT(*) FROM messages WHERE role = 'assistant'"),
            lambda rows: rows == [(2,)],
        )
        assert len(final_messages(tg, ALICE)) == 2
    finally:
        await running.stop()


def to(chat_id: int) -> Callable[[dict[str, Any]], bool]:
    return lambda params: params.get("chat_id") == chat_id


ANSWERS = "SELECT text, undelivered, tg_message_id FROM messages WHERE role = 'assistant'"


async def test_an_hour_of_flood_control_drops_the_answer_at_once_stored_and_frees_the_chat(
    bot: RunningBot, tg: FakeTelegram, ai: FakeOpenAI, db: Query, caplog: pytest.LogCaptureFixture
) -> None:
    tg.fail("sendMessage", status=429, retry_after=3600, when=to(ALICE))
    ai.enqueue("An answer Telegram will not take now.", "The next answer.")
    with caplog.at_level(logging.WARNING):
        tg.send_text(ALICE, "first", user_id=ALICE)
        await tg.wait_for("sendMessage", lambda c: c.failed)
        rows = await eventually(lambda: caplog.text, lambda text: "answer dropped" in text)
    assert "3600" in rows, "the log says how long Telegram asked for"
    assert db(ANSWERS) == [("An answer Telegram will not take now.", 1, None)], (
        "stored before delivery, marked undelivered"
    )
    [reply] = await ask(tg, ALICE, "second")  # the chat is not held by the wait
    assert tg.visible_text(reply) == "The next answer."
    rows = await eventually(lambda: db(ANSWERS), lambda rows: len(rows) == 2 and not rows[1][1])
    assert rows[1] == ("The next answer.", 0, reply.result["message_id"])


async def test_a_flood_wait_under_the_cap_is_waited_out_and_the_answer_marked_delivered(
    bot: RunningBot, tg: FakeTelegram, ai: FakeOpenAI, db: Query
) -> None:
    tg.fail("sendMessage", status=429, retry_after=1, when=to(ALICE))
    ai.enqueue("Worth the wait.")
    [reply] = await ask(tg, ALICE, "hi")
    assert tg.visible_text(reply) == "Worth the wait."
    rows = await eventually(lambda: db(ANSWERS), lambda rows: rows and not rows[0][1])
    assert rows == [("Worth the wait.", 0, reply.result["message_id"])]


PROXY_502 = "<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>"


@pytest.mark.parametrize("fault", ["html 502", "json 500", "dropped connection"])
async def test_a_transient_bot_api_failure_on_the_answer_is_retried(
    bot: RunningBot, tg: FakeTelegram, ai: FakeOpenAI, db: Query, fault: str
) -> None:
    if fault == "html 502":
        tg.fail("sendMessage", status=502, raw_body=PROXY_502, when=to(ALICE))
    elif fault == "json 500":
        tg.fail("sendMessage", status=500, when=to(ALICE))
    else:
        tg.drop_connection("sendMessage")
    ai.enqueue("Delivered after all.")
    [reply] = await ask(tg, ALICE, "hi")
    assert tg.visible_text(reply) == "Delivered after all."
    assert len(final_messages(tg, ALICE)) == 1, "no error line"
    rows = await eventually(lambda: db(ANSWERS), lambda rows: rows and not rows[0][1])
    assert rows == [("Delivered after all.", 0, reply.result["message_id"])]


async def test_an_answer_that_cannot_be_delivered_is_announced_and_retry_sends_it(
    bot: RunningBot, tg: FakeTelegram, ai: FakeOpenAI, db: Query, caplog: pytest.LogCaptureFixture
) -> None:
    # The first try and every retry fail; then Telegram is back, in time for the notice.
    tries = 1 + len(DELIVERY_BACKOFF)
    tg.fail("sendMessage", status=502, raw_body=PROXY_502, times=tries, when=to(ALICE))
    ai.enqueue("The answer nobody saw yet.")
    with caplog.at_level(logging.WARNING):
        tg.send_text(ALICE, "a question", user_id=ALICE)
        [notice] = await tg.wait_for("sendMessage", lambda c: c.chat_id == ALICE and not c.failed)
    assert len([c for c in tg.calls_to("sendMessage") if c.failed]) == tries, "bounded"
    assert "could not be delivered" in tg.visible_text(notice)
    assert "/retry" in tg.visible_text(notice)
    assert "could not deliver" in caplog.text
    assert db(ANSWERS) == [("The answer nobody saw yet.", 1, None)]
    [resent] = await ask(tg, ALICE, "/retry")
    assert tg.visible_text(resent) == "The answer nobody saw yet."
    assert len(ai.requests) == 1, "the stored answer is sent; the model is not asked again"
    rows = await eventually(lambda: db(ANSWERS), lambda rows: not rows[0][1])
    assert rows == [("The answer nobody saw yet.", 0, resent.result["message_id"])]
    ai.enqueue("A new answer.")
    [again] = await ask(tg, ALICE, "/retry")
    assert tg.visible_text(again) == "A new answer.", "once delivered, /retry asks anew"


async def test_sigterm_ends_the_bot_within_the_grace_while_a_delivery_waits(
    tg: FakeTelegram, ai: FakeOpenAI, db: Query, db_path: Path
) -> None:
    bot = await BotProcess(tg, ai, db_path, SHUTDOWN_GRACE="0.5").start()
    assert bot.proc is not None
    try:
        tg.fail("sendMessage", status=429, retry_after=50, when=to(ALICE))  # under the cap
        ai.enqueue("Held up by flood control.")
        tg.send_text(ALICE, "hi", user_id=ALICE)
        await tg.wait_for("sendMessage", lambda c: c.failed)
        stored = await eventually(lambda: db(ANSWERS), bool)
        assert stored == [("Held up by flood control.", 1, None)], "stored before delivery"
        bot.proc.send_signal(signal.SIGTERM)
        assert await bot.wait() == 0, "the wait is given up at the end of the grace period"
        assert db(ANSWERS) == [("Held up by flood control.", 1, None)], "kept for /retry"
        assert "giving up" in bot.log and "Traceback" not in bot.log
    finally:
        if bot.proc.returncode is None:
            bot.proc.kill()
            await bot.proc.wait()
