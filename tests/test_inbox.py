"""The durable inbox, as a real process: what Telegram considers delivered survives kill -9.

Long polling acknowledges a batch with the next getUpdates call, which comes at once, long
before the replies are written; so messages waiting behind a slow reply in their chat, and the
reply a crash cut off, were gone with the process and never delivered again. Each test kills
the bot where that used to lose something, restarts it, and checks that every question is
answered exactly once, in order (or, past RECOVERY_WINDOW, that its asker is told once).
"""

from __future__ import annotations

import signal
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

from telegram_bot.errors import MessageLost
from tests import test_process
from tests.fakes import FakeOpenAI, FakeTelegram, Reply
from tests.harness import eventually
from tests.test_private_chat import ALICE, final_messages
from tests.test_process import LONG, BotProcess
from tests.test_startup import assert_clean

process = test_process.process  # the fixture that starts and reaps bot processes

Query = Callable[..., list[tuple[Any, ...]]]


async def kill_9(bot: BotProcess) -> None:
    assert bot.proc is not None
    bot.proc.kill()
    assert await bot.wait() == -signal.SIGKILL


async def asked_while_a_slow_reply_streams(
    tg: FakeTelegram, ai: FakeOpenAI
) -> list[dict[str, Any]]:
    """ "first" is being answered, slowly; "second" and "third" wait behind it in the chat,
    fetched and acknowledged to Telegram (it has nothing left to deliver)."""
    ai.enqueue(Reply(LONG, chunk_chars=5, delay_per_chunk=0.1))
    updates = [tg.send_text(ALICE, "first", user_id=ALICE)]
    await tg.wait_for("sendMessageDraft", count=3)
    updates.append(tg.send_text(ALICE, "second", user_id=ALICE))
    updates.append(tg.send_text(ALICE, "third", user_id=ALICE))
    await eventually(lambda: tg.pending_updates, lambda pending: pending == [])
    return updates


def exchanges(db: Query) -> list[tuple[str, str]]:
    rows = db("SELECT id, role, text, reply_to FROM messages ORDER BY id")
    questions = {row[0]: row[2] for row in rows if row[1] == "user"}
    return [(questions[row[3]], row[2]) for row in rows if row[1] == "assistant"]


def pending_in_inbox(db_path: Path) -> int:
    with sqlite3.connect(db_path) as conn:
        return int(conn.execute("SELECT count(*) FROM inbox WHERE done = 0").fetchone()[0])


async def test_messages_waiting_behind_a_reply_and_the_reply_survive_kill_9(
    process: Callable[..., BotProcess],
    tg: FakeTelegram,
    ai: FakeOpenAI,
    db: Query,
    db_path: Path,
) -> None:
    bot = await process().start()
    await asked_while_a_slow_reply_streams(tg, ai)
    await kill_9(bot)
    assert [r[0] for r in db("SELECT text FROM messages")] == ["first"], "stored, unanswered"

    await bot.start()  # Telegram delivers nothing again: the inbox has all three
    await tg.wait_for("sendMessage", lambda c: tg.visible_text(c) == "Echo: third", timeout=20)
    answers = [tg.visible_text(c) for c in final_messages(tg, ALICE)]
    assert answers == ["Echo: first", "Echo: second", "Echo: third"], "each once, in order"
    expected = [(q, f"Echo: {q}") for q in ("first", "second", "third")]
    assert await eventually(lambda: exchanges(db), lambda found: len(found) == 3) == expected
    assert [r.last_user_text for r in ai.requests] == ["first", "first", "second", "third"]
    await eventually(lambda: pending_in_inbox(db_path), lambda count: count == 0)
    assert "handled now" in bot.log
    assert bot.proc is not None
    bot.proc.send_signal(signal.SIGTERM)
    assert await bot.wait() == 0


async def test_an_update_telegram_delivers_again_after_a_crash_is_handled_once(
    process: Callable[..., BotProcess], tg: FakeTelegram, ai: FakeOpenAI, db: Query
) -> None:
    bot = await process().start()
    tg.delay("getUpdates", 30)  # the call that would acknowledge the batch never returns
    ai.enqueue(Reply(LONG, chunk_chars=5, delay_per_chunk=0.1))
    question = tg.send_text(ALICE, "only once", user_id=ALICE)
    await tg.wait_for("sendMessageDraft", count=3)
    await kill_9(bot)
    assert [u["update_id"] for u in tg.pending_updates] == [question["update_id"]]

    tg.delay("getUpdates", 0)
    since = len(tg.calls)
    await bot.start()
    await tg.wait_for("sendMessage", lambda c: tg.visible_text(c) == "Echo: only once")
    redelivered = [
        c for c in tg.calls[since:] if c.method == "getUpdates" and c.result and not c.failed
    ]
    assert redelivered and redelivered[0].result[0]["update_id"] == question["update_id"]
    tg.send_text(ALICE, "next", user_id=ALICE)
    await tg.wait_for("sendMessage", lambda c: tg.visible_text(c) == "Echo: next")
    assert [tg.visible_text(c) for c in final_messages(tg, ALICE)] == [
        "Echo: only once",
        "Echo: next",
    ]
    assert await eventually(lambda: exchanges(db), lambda found: len(found) == 2) == [
        ("only once", "Echo: only once"),
        ("next", "Echo: next"),
    ]


async def test_past_the_recovery_window_the_asker_is_told_once_to_send_it_again(
    process: Callable[..., BotProcess], tg: FakeTelegram, ai: FakeOpenAI, db: Query
) -> None:
    bot = await process(RECOVERY_WINDOW="0").start()
    *_, third = await asked_while_a_slow_reply_streams(tg, ai)
    await kill_9(bot)

    await bot.start()
    lost = MessageLost.user_message()
    [notice] = await tg.wait_for("sendMessage", lambda c: lost in (c.text or ""))
    assert notice.params["reply_parameters"]["message_id"] == third["message"]["message_id"]
    assert "sent at" in (notice.text or "")
    tg.send_text(ALICE, "hello again", user_id=ALICE)
    await tg.wait_for("sendMessage", lambda c: tg.visible_text(c) == "Echo: hello again")
    assert bot.proc is not None
    bot.proc.send_signal(signal.SIGTERM)
    assert await bot.wait() == 0

    await bot.start()  # and once more: nobody is told twice
    tg.send_text(ALICE, "still there?", user_id=ALICE)
    await tg.wait_for("sendMessage", lambda c: tg.visible_text(c) == "Echo: still there?")
    notices = [c for c in tg.calls_to("sendMessage") if lost in (c.text or "")]
    assert len(notices) == 1
    assert [r.last_user_text for r in ai.requests] == ["first", "hello again", "still there?"]
    assert_clean(bot.log)


async def test_sigterm_leaves_messages_that_have_not_started_for_the_next_start(
    process: Callable[..., BotProcess], tg: FakeTelegram, ai: FakeOpenAI, db: Query
) -> None:
    bot = await process(SHUTDOWN_GRACE="0.3").start()
    await asked_while_a_slow_reply_streams(tg, ai)
    assert bot.proc is not None
    bot.proc.send_signal(signal.SIGTERM)
    assert await bot.wait() == 0
    partial, restarting = [tg.visible_text(c) for c in final_messages(tg, ALICE)]
    assert LONG.startswith(partial) and "restarting" in restarting
    assert [r.last_user_text for r in ai.requests] == ["first"], "nothing new started"

    await bot.start()
    await tg.wait_for("sendMessage", lambda c: tg.visible_text(c) == "Echo: third", timeout=20)
    assert [tg.visible_text(c) for c in final_messages(tg, ALICE)][2:] == [
        "Echo: second",
        "Echo: third",
    ]
    assert [r.last_user_text for r in ai.requests] == ["first", "second", "third"]
    assert_clean(bot.log)


async def test_an_answer_stored_but_never_sent_before_a_crash_is_sent_once_after_it(
    bot_factory: Callable[..., Any], tg: FakeTelegram, ai: FakeOpenAI, db: Query, db_path: Path
) -> None:
    """kill -9 between storing the answer and sending it (a delivery waiting out flood
    control, say): the redelivered question, or the inbox after the restart, sends that answer
    as it is, without asking the model again."""
    from datetime import date

    from telegram_bot.models import ChatKey, NewTurn, Role
    from telegram_bot.storage.sqlite.store import SQLiteStore

    message = tg.make_message(ALICE, "asked just before the crash", user_id=ALICE)
    store = SQLiteStore(db_path)
    await store.open()
    question = await store.add_user_turn(
        NewTurn(ChatKey(ALICE), Role.USER, message["text"], 7, tg_message_id=message["message_id"])
    )
    answer = NewTurn(
        ChatKey(ALICE), Role.ASSISTANT, "The answer nobody saw.", 5, reply_to=question.id,
        undelivered=True,
    )  # fmt: skip
    await store.add_reply(answer, user_id=ALICE, day=date.today())
    await store.close()
    running = await bot_factory().start()
    try:
        tg.push_update({"message": message})
        [sent] = await tg.wait_for("sendMessage")
        assert tg.visible_text(sent) == "The answer nobody saw."
        sql = "SELECT undelivered FROM messages WHERE role = 'assistant'"
        assert await eventually(lambda: db(sql), lambda rows: rows == [(0,)]) == [(0,)]
        tg.push_update({"message": message})  # and again: now it was sent, nothing more
        tg.send_text(ALICE, "next", user_id=ALICE)
        await tg.wait_for("sendMessage", lambda c: tg.visible_text(c) == "Echo: next")
        assert [tg.visible_text(c) for c in final_messages(tg, ALICE)] == [
            "The answer nobody saw.",
            "Echo: next",
        ]
        assert [r.last_user_text for r in ai.requests] == ["next"]
    finally:
        await running.stop()
