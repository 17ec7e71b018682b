"""Many chats at once with a slow model: everyone is answered, each chat in its own order."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from tests.fakes import FakeOpenAI, FakeTelegram, Hang, Reply
from tests.fakes.openai import ChatRequest
from tests.harness import RunningBot, eventually

Query = Callable[..., list[tuple[Any, ...]]]
CHATS = 200


async def test_200_chats_at_once_are_all_answered_in_their_own_order(
    bot: RunningBot, tg: FakeTelegram, ai: FakeOpenAI, db: Query
) -> None:
    def slow_echo(request: ChatRequest) -> Reply:
        return Reply(f"re: {request.last_user_text}", first_token_delay=0.5)

    ai.responder = slow_echo
    chats = range(10_000, 10_000 + CHATS)
    for chat_id in chats:
        tg.send_text(chat_id, f"{chat_id} first", user_id=chat_id)
    for chat_id in chats:
        tg.send_text(chat_id, f"{chat_id} second", user_id=chat_id)
    await tg.wait_for("sendMessage", lambda c: not c.failed, count=2 * CHATS, timeout=120)
    answers: dict[int, list[str]] = defaultdict(list)
    for call in tg.calls_to("sendMessage"):
        if not call.failed:
            answers[call.chat_id].append(tg.visible_text(call))
    assert answers == {c: [f"re: {c} first", f"re: {c} second"] for c in chats}
    # Each second question was asked with the first exchange already in its history.
    for request in ai.requests:
        if request.last_user_text.endswith("second"):
            chat_id = request.last_user_text.split()[0]
            contents = [m["content"] for m in request.messages[1:]]
            assert contents == [f"{chat_id} first", f"re: {chat_id} first", f"{chat_id} second"]
    rows = await eventually(
        lambda: db("SELECT COUNT(*) FROM messages"), lambda rows: rows[0][0] == 4 * CHATS
    )
    assert rows == [(4 * CHATS,)]


async def test_serving_many_chats_leaves_no_per_chat_residue_in_the_application(
    bot: RunningBot, tg: FakeTelegram, ai: FakeOpenAI
) -> None:
    """The bot keeps its state in its database; python-telegram-bot, without persistence,
    would keep every chat and user id it ever saw (see app.BotApplication)."""
    ai.responder = lambda request: Reply("ok")
    chats = range(20_000, 20_050)
    for chat_id in chats:
        tg.send_text(chat_id, "hello", user_id=chat_id)
    await tg.wait_for("sendMessage", lambda c: not c.failed, count=len(chats), timeout=60)
    app = bot.application
    # Every update fully handled (PTB marks them for persistence as its last step).
    await asyncio.wait_for(app.update_queue.join(), timeout=30)
    assert app.persistence is None
    assert not app._chat_ids_to_be_updated_in_persistence
    assert not app._user_ids_to_be_updated_in_persistence


async def test_one_chats_backlog_never_delays_another_chat(
    bot_factory: Callable[..., RunningBot], tg: FakeTelegram, ai: FakeOpenAI
) -> None:
    """With few slots (a Raspberry Pi's MAX_CONCURRENT_UPDATES), messages queued behind one
    chat's slow reply must not take the slots every other chat needs."""
    running = await bot_factory(max_concurrent_updates=2).start()
    release = asyncio.Event()

    async def slow_for_alice(request: ChatRequest) -> str:
        if request.last_user_text.startswith("alice"):
            await release.wait()
        return f"re: {request.last_user_text}"

    ai.responder = slow_for_alice
    alice, bob = 31_001, 31_002
    tg.send_text(alice, "alice 1", user_id=alice)
    await ai.wait_for_requests(1)  # Alice's first answer is being written, and stays so
    for n in range(2, 6):
        tg.send_text(alice, f"alice {n}", user_id=alice)
    tg.send_text(bob, "bob 1", user_id=bob)
    [answer] = await tg.wait_for("sendMessage", lambda c: c.chat_id == bob and not c.failed)
    assert tg.visible_text(answer) == "re: bob 1"
    alice_sent = [c for c in tg.calls_to("sendMessage") if c.chat_id == alice]
    release.set()
    assert not alice_sent, "Alice's first answer was still being written"
    calls = await tg.wait_for("sendMessage", lambda c: c.chat_id == alice and not c.failed, count=5)
    assert [tg.visible_text(c) for c in calls] == [f"re: alice {n}" for n in range(1, 6)]
    await running.stop()


async def test_stop_is_never_stuck_behind_busy_slots(
    bot_factory: Callable[..., RunningBot], tg: FakeTelegram, ai: FakeOpenAI
) -> None:
    """Every slot is taken by a reply being written and a third chat waits for one: /stop
    still reaches its reply at once, and the slot it frees goes to the waiting chat."""
    running = await bot_factory(max_concurrent_updates=2).start()

    async def hang_unless_carol(request: ChatRequest) -> str | Hang:
        return "re: carol" if request.last_user_text == "carol" else Hang(30)

    ai.responder = hang_unless_carol
    alice, bob, carol = 32_001, 32_002, 32_003
    tg.send_text(alice, "alice", user_id=alice)
    tg.send_text(bob, "bob", user_id=bob)
    await ai.wait_for_requests(2)
    tg.send_text(carol, "carol", user_id=carol)
    tg.send_command(alice, "/stop", user_id=alice)
    [stopped] = await tg.wait_for("sendMessage", lambda c: c.chat_id == alice and not c.failed)
    assert tg.visible_text(stopped) == "Stopped."
    [answer] = await tg.wait_for("sendMessage", lambda c: c.chat_id == carol and not c.failed)
    assert tg.visible_text(answer) == "re: carol"
    tg.send_command(bob, "/stop", user_id=bob)
    await tg.wait_for("sendMessage", lambda c: c.chat_id == bob and not c.failed)
    await running.stop()
