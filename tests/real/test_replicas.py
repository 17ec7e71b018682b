"""Two replicas of the bot, real processes in webhook mode, behind a load balancer, on one real
PostgreSQL: the fake Bot API delivers webhooks as Telegram does (a chat's next update only after
the previous call returned 200; again after a failure), the balancer spreads them round robin.
What one process promises must hold across both: a chat answered in order, each message once,
nothing acknowledged lost when a replica is killed, /stop reaching the replica that writes."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from tests.fakes import FakeOpenAI, FakeTelegram, Reply
from tests.harness import eventually
from tests.real.replicas import Balancer, Replica, start_replicas
from tests.test_groups import say, sent, shown
from tests.test_private_chat import ALICE, BOB, final_messages
from tests.test_process import LONG
from tests.test_webhook import SECRET, post

pytestmark = pytest.mark.real_server

PENDING = "SELECT count(*) FROM inbox WHERE NOT done"
Start = Callable[..., Awaitable[tuple[list[Replica], Balancer]]]


@pytest.fixture
async def replicas(
    tg: FakeTelegram, ai: FakeOpenAI, tmp_path: Path, pg_dsn: str
) -> AsyncIterator[Start]:
    started: list[tuple[list[Replica], Balancer]] = []

    async def start(**env: str) -> tuple[list[Replica], Balancer]:
        started.append(await start_replicas(tg, ai, tmp_path, pg_dsn, **env))
        return started[-1]

    yield start
    for bots, balancer in started:
        for bot in bots:
            if bot.proc is not None and bot.proc.returncode is None:
                bot.proc.kill()
                await bot.proc.wait()
        await balancer.close()


async def query(dsn: str, sql: str) -> list[tuple[Any, ...]]:
    connection = await asyncpg.connect(dsn)
    try:
        return [tuple(row) for row in await connection.fetch(sql)]
    finally:
        await connection.close()


async def exchanges(dsn: str) -> list[tuple[str, str]]:
    """(question, answer) of every stored answer, in the order the answers were stored."""
    rows = await query(dsn, "SELECT id, role, text, reply_to FROM messages ORDER BY id")
    questions = {row[0]: row[2] for row in rows if row[1] == "user"}
    return [(questions[row[3]], row[2]) for row in rows if row[1] == "assistant"]


async def settled(dsn: str, count: int, within: float = 120.0) -> list[tuple[str, str]]:
    """The exchanges once `count` answers are stored (the last is stored after it is sent)."""
    deadline = time.monotonic() + within
    while True:
        found = await exchanges(dsn)
        if len(found) >= count or time.monotonic() > deadline:
            return found
        await asyncio.sleep(0.05)


def texts(tg: FakeTelegram, chat_id: int) -> list[str]:
    return [tg.visible_text(call) for call in final_messages(tg, chat_id)]


@pytest.mark.parametrize("pgbouncer", [False, True], ids=["direct", "pgbouncer-mode"])
async def test_a_chat_is_answered_in_order_and_each_replica_sees_the_others_history(
    replicas: Start, tg: FakeTelegram, ai: FakeOpenAI, pg_dsn: str, pgbouncer: bool
) -> None:
    # PgBouncer's transaction mode as the bot sees it: no prepared statements on the pool,
    # LISTEN on its own URL (here the same server; behind PgBouncer, PostgreSQL itself).
    env = {"DATABASE_PGBOUNCER": "true", "DATABASE_LISTEN_URL": pg_dsn} if pgbouncer else {}
    bots, balancer = await replicas(**env)
    # The first answer is slow: the next messages reach the other replica while it is written.
    ai.enqueue(Reply("The first answer, written slowly.", chunk_chars=3, delay_per_chunk=0.05))
    questions = [f"message {i}" for i in range(1, 7)]
    for question in questions:
        tg.send_text(ALICE, question, user_id=ALICE)
    await tg.wait_for("sendMessage", lambda c: tg.visible_text(c) == "Echo: message 6", timeout=120)
    answers = ["The first answer, written slowly."] + [f"Echo: {q}" for q in questions[1:]]
    assert texts(tg, ALICE) == answers
    assert {routed.replica for routed in balancer.routed} == {0, 1}, "both replicas served"
    # Each model call saw the exchange before it, whichever replica had stored it.
    for request, before, answered in zip(ai.requests[1:], questions, answers, strict=False):
        contents = [str(message.get("content")) for message in request.messages]
        assert before in contents and answered in contents, contents
    assert await settled(pg_dsn, 6) == list(zip(questions, answers, strict=True))
    assert all(("PgBouncer mode" in bot.log) is pgbouncer for bot in bots)


async def test_a_message_delivered_again_to_the_other_replica_is_answered_once(
    replicas: Start, tg: FakeTelegram, ai: FakeOpenAI, pg_dsn: str
) -> None:
    bots, balancer = await replicas()
    update = tg.send_text(ALICE, "only once", user_id=ALICE)
    # The first 200 is lost on the way back: Telegram sends the update again, and the
    # balancer gives it to the next replica.
    balancer.lose_answer.add(update["update_id"])
    await tg.wait_for("sendMessage", lambda c: tg.visible_text(c) == "Echo: only once", timeout=120)
    await tg.webhook.deliveries.wait_for(lambda d: d.ok, 1, 120)
    assert sorted(balancer.replicas_of(update["update_id"])) == [0, 1]
    # And more copies straight at both replicas, as a confused proxy might send.
    for bot in bots * 3:
        assert await post(bot, update, SECRET) == 200
    tg.send_text(ALICE, "and after", user_id=ALICE)
    await tg.wait_for("sendMessage", lambda c: tg.visible_text(c) == "Echo: and after", timeout=120)
    assert texts(tg, ALICE) == ["Echo: only once", "Echo: and after"]
    assert [r.last_user_text for r in ai.requests] == ["only once", "and after"]
    assert await settled(pg_dsn, 2) == [
        ("only once", "Echo: only once"),
        ("and after", "Echo: and after"),
    ]


async def test_killing_the_replica_writing_an_answer_loses_nothing(
    replicas: Start, tg: FakeTelegram, ai: FakeOpenAI, pg_dsn: str
) -> None:
    bots, balancer = await replicas(REPLICA_LEASE_SECONDS="6")
    ai.enqueue(Reply(LONG, chunk_chars=5, delay_per_chunk=0.1))
    balancer.choose = lambda update: 0
    tg.send_text(ALICE, "a long question", user_id=ALICE)
    await tg.wait_for("sendMessageDraft", count=3, timeout=120)
    victim = bots[0].proc
    assert victim is not None
    victim.kill()  # kill -9, in the middle of the answer
    await victim.wait()
    balancer.choose = None  # the balancer finds replica 0 down and gives calls to replica 1
    tg.send_text(ALICE, "and then?", user_id=ALICE)
    await tg.wait_for("sendMessage", lambda c: tg.visible_text(c) == "Echo: and then?", timeout=120)
    # The question the dead replica held is answered again by the other, before the next one.
    assert texts(tg, ALICE) == ["Echo: a long question", "Echo: and then?"]
    assert await settled(pg_dsn, 2) == [
        ("a long question", "Echo: a long question"),
        ("and then?", "Echo: and then?"),
    ]
    users = await query(pg_dsn, "SELECT text FROM messages WHERE role = 'user' ORDER BY id")
    assert users == [("a long question",), ("and then?",)], "nothing stored twice"
    # Not blocked: another message in the same chat, and another chat, still answered.
    tg.send_text(ALICE, "still there?", user_id=ALICE)
    tg.send_text(BOB, "hello", user_id=BOB)
    await tg.wait_for(
        "sendMessage", lambda c: tg.visible_text(c) == "Echo: still there?", timeout=120
    )
    await tg.wait_for("sendMessage", lambda c: tg.visible_text(c) == "Echo: hello", timeout=120)
    assert await eventually_rows(pg_dsn, PENDING, until=lambda rows: rows == [(0,)]) == [(0,)]
    assert "a dead replica left unhandled are handled now" in bots[1].log


async def test_stop_arriving_at_the_other_replica_stops_the_answer(
    replicas: Start, tg: FakeTelegram, ai: FakeOpenAI, pg_dsn: str
) -> None:
    bots, balancer = await replicas()
    ai.enqueue(Reply(LONG, chunk_chars=5, delay_per_chunk=0.1))
    balancer.choose = lambda update: 0
    tg.send_text(ALICE, "write an essay", user_id=ALICE)
    await tg.wait_for("sendMessageDraft", count=2, timeout=120)
    balancer.choose = lambda update: 1
    stop = tg.send_command(ALICE, "/stop", user_id=ALICE)
    await tg.wait_for("sendMessage", lambda c: tg.visible_text(c) == "Stopped.", timeout=120)
    assert balancer.replicas_of(stop["update_id"]) == [1]
    partial, _stopped = texts(tg, ALICE)
    assert LONG.startswith(partial) and len(partial) < len(LONG)
    [(stored, status)] = await eventually_rows(
        pg_dsn, "SELECT text, status FROM messages WHERE role = 'assistant'"
    )
    assert status == "stopped" and stored.strip() == partial
    assert "stopped from another replica" in bots[0].log


async def test_the_rate_limit_holds_across_replicas(
    replicas: Start, tg: FakeTelegram, ai: FakeOpenAI
) -> None:
    _, balancer = await replicas(RATE_LIMIT_PER_MINUTE="2")
    for question in ("one", "two", "three"):
        tg.send_text(ALICE, question, user_id=ALICE)
    await tg.wait_for(
        "sendMessage", lambda c: "faster than I may" in tg.visible_text(c), timeout=120
    )
    assert texts(tg, ALICE)[:2] == ["Echo: one", "Echo: two"]
    assert len({routed.replica for routed in balancer.routed}) == 2
    assert [r.last_user_text for r in ai.requests] == ["one", "two"]


async def eventually_rows(
    dsn: str,
    sql: str,
    within: float = 120.0,
    until: Callable[[list[tuple[Any, ...]]], bool] = bool,
) -> list[tuple[Any, ...]]:
    deadline = time.monotonic() + within
    while True:
        rows = await query(dsn, sql)
        if until(rows) or time.monotonic() > deadline:
            return rows
        await asyncio.sleep(0.05)


async def test_a_replica_stopped_with_sigterm_hands_its_queued_messages_to_the_other(
    replicas: Start, tg: FakeTelegram, ai: FakeOpenAI, pg_dsn: str
) -> None:
    bots, balancer = await replicas(SHUTDOWN_GRACE="1")
    ai.enqueue(Reply(LONG, chunk_chars=5, delay_per_chunk=0.1))
    balancer.choose = lambda update: 0
    tg.send_text(ALICE, "a long one", user_id=ALICE)
    await tg.wait_for("sendMessageDraft", count=3, timeout=120)
    queued = tg.send_text(ALICE, "queued behind it", user_id=ALICE)
    await tg.webhook.deliveries.wait_for(lambda d: d.update_id == queued["update_id"], 1, 120)
    assert balancer.replicas_of(queued["update_id"]) == [0]  # kept by replica 0, not started
    leaving = bots[0].proc
    assert leaving is not None
    leaving.send_signal(signal.SIGTERM)
    assert await bots[0].wait() == 0
    await tg.wait_for(
        "sendMessage", lambda c: tg.visible_text(c) == "Echo: queued behind it", timeout=120
    )
    partial, restarting, answer = texts(tg, ALICE)
    assert LONG.startswith(partial) and "restarting" in restarting
    assert answer == "Echo: queued behind it"
    assert "a dead replica left unhandled are handled now" in bots[1].log
    assert [r.last_user_text for r in ai.requests] == ["a long one", "queued behind it"]


async def test_a_burst_over_the_rate_limit_gets_one_refusal_in_a_group_across_replicas(
    replicas: Start, tg: FakeTelegram, ai: FakeOpenAI
) -> None:
    _, balancer = await replicas(RATE_LIMIT_PER_MINUTE="1")
    ai.enqueue("Alice's answer.")
    for n in range(6):  # spread over both replicas by the balancer
        say(tg, ALICE, f"@test_bot question {n}")
    ai.enqueue("Bob's answer.")
    say(tg, BOB, "@test_bot and me?")  # after Alice's burst, in the group's order
    # Groups stream by edits: what members see is each message's last edit.
    said = await eventually(
        lambda: [shown(tg, c) for c in sent(tg)], lambda s: "Bob's answer." in s, 120
    )
    assert said[0] == "Alice's answer." and said[-1] == "Bob's answer."
    refusals = [text for text in said if "a minute" in text]
    assert len(refusals) == 1, f"one refusal for the burst across replicas, not {said}"
    assert len({routed.replica for routed in balancer.routed}) == 2
