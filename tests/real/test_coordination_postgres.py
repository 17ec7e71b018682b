"""The replicas' coordination (`coordination/postgres.py`) on a real PostgreSQL, two replicas in
one test process, each with its own store (pool) and listening connection, as two bot
processes would have: a chat's turn, a dead replica's turn, /stop from the other replica, the
shared rate window and refusal pacing, and the inbox's hand-over of a dead replica's updates."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest

from telegram_bot.config import Settings
from telegram_bot.coordination import Coordination, StopOutcome
from telegram_bot.coordination.postgres import Replica, replica_coordination
from telegram_bot.models import ChatKey, InboxUpdate, Status
from telegram_bot.storage.postgres.store import PostgresStore

pytestmark = pytest.mark.real_server

CHAT = ChatKey(1001)
LEASE = 2.0


@contextlib.asynccontextmanager
async def replica(dsn: str, **settings: object) -> AsyncIterator[tuple[Coordination, Replica]]:
    store = PostgresStore(dsn, pool_size=4)
    await store.open()
    base = Settings(database_url=dsn, replica_lease_seconds=LEASE)
    coordination, member = replica_coordination(store, replace(base, **settings))
    await member.start()
    try:
        yield coordination, member
    finally:
        await member.close()
        await store.close()


def die(member: Replica) -> None:
    """What kill -9 leaves: no more heartbeats, no goodbye, the listening connection gone."""
    assert member._heartbeat is not None
    member._heartbeat.cancel()
    member._heartbeat = None  # close() then says nothing to the database
    if member._listener is not None:
        member._listener.terminate()
        member._listener = None


async def test_a_chat_is_held_by_one_replica_at_a_time_and_others_chats_never_wait(
    pg_dsn: str,
) -> None:
    async with replica(pg_dsn) as (a, _), replica(pg_dsn) as (b, _):
        order: list[str] = []
        holding, released = asyncio.Event(), asyncio.Event()

        async def first() -> None:
            async with a.turns.hold(CHAT):
                order.append("a holds")
                holding.set()
                await released.wait()
                order.append("a gives back")

        async def second() -> None:
            async with b.turns.hold(CHAT):
                order.append("b holds")

        holder = asyncio.create_task(first())
        await holding.wait()
        waiter = asyncio.create_task(second())
        async with asyncio.timeout(10):  # another chat, on the other replica: at once
            async with b.turns.hold(ChatKey(2002)):
                pass
        assert order == ["a holds"], "the other replica waits for the chat"
        released.set()
        async with asyncio.timeout(10):  # woken by the NOTIFY (or its own look, within 1 s)
            await asyncio.gather(holder, waiter)
        assert order == ["a holds", "a gives back", "b holds"]


async def test_a_dead_replicas_chat_is_free_once_its_lease_ran_out(pg_dsn: str) -> None:
    async with replica(pg_dsn) as (a, member_a), replica(pg_dsn) as (b, _):
        entered = asyncio.Event()

        async def hold_for_ever() -> None:
            async with a.turns.hold(CHAT):
                entered.set()
                await asyncio.Event().wait()

        stuck = asyncio.create_task(hold_for_ever())
        await entered.wait()
        die(member_a)  # A never gives the chat back: B gets it once A's lease ran out
        async with asyncio.timeout(30), b.turns.hold(CHAT):
            pass
        stuck.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await stuck


async def test_stop_reaches_the_replica_writing_the_reply(pg_dsn: str) -> None:
    async with replica(pg_dsn) as (a, _), replica(pg_dsn) as (b, _):
        stopped: asyncio.Future[tuple[Status, str | None]] = (
            asyncio.get_running_loop().create_future()
        )
        await a.replies.begin(CHAT, 7, lambda status, notice: stopped.set_result((status, notice)))
        assert await b.replies.stop(CHAT, 8) is StopOutcome.NOT_YOURS
        assert not stopped.done()
        assert await b.replies.stop(CHAT, 7, "Stopped.") is StopOutcome.STOPPED
        async with asyncio.timeout(10):
            assert await stopped == (Status.STOPPED, "Stopped.")
        await a.replies.end(CHAT)
        assert await b.replies.stop(CHAT, 7) is StopOutcome.NOTHING


async def test_the_rate_window_and_refusal_pacing_are_shared(pg_dsn: str) -> None:
    settings = {"rate_limit_per_minute": 3, "refusal_interval": 600.0}
    async with replica(pg_dsn, **settings) as (a, ma), replica(pg_dsn, **settings) as (b, mb):
        assert [await a.rate.take(5), await b.rate.take(5), await a.rate.take(5)] == [None] * 3
        wait = await b.rate.take(5)
        assert wait is not None and 55 < wait <= 60
        assert await a.rate.take(6) is None, "another user has a window of their own"
        assert await ma.should_answer(("refusal", -100, 5)) is True
        assert await mb.should_answer(("refusal", -100, 5)) is False
        assert await mb.should_answer(("refusal", -100, 6)) is True


async def test_a_dead_replicas_pending_updates_are_taken_over_once(pg_dsn: str) -> None:
    async with replica(pg_dsn) as (_, member_a), replica(pg_dsn) as (_, member_b):
        store_a = PostgresStore(pg_dsn)
        store_a.replica_id = member_a.id  # the same process as replica A: its updates
        await store_a.open()
        try:
            kept = [InboxUpdate(i, CHAT, f'{{"update_id": {i}}}', 0.0) for i in (11, 12)]
            assert await store_a.inbox_add(kept) == [11, 12]
        finally:
            await store_a.close()
        store_b = PostgresStore(pg_dsn)
        store_b.replica_id = member_b.id
        await store_b.open()
        try:
            assert await store_b.inbox_pending() == [], "replica A is alive: its updates"
            assert await member_b.pending_before(CHAT, 12) == [11]
            die(member_a)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 30
            taken: list[InboxUpdate] = []
            while not taken and loop.time() < deadline:
                taken = await store_b.inbox_pending()
                await asyncio.sleep(0.1)
            assert [u.update_id for u in taken] == [11, 12]
            assert await store_b.inbox_pending() == [], "taken once, by replica B"
        finally:
            await store_b.close()


async def test_a_replica_frozen_past_its_lease_cuts_its_replies_short(pg_dsn: str) -> None:
    async with replica(pg_dsn) as (a, _):
        cut: asyncio.Future[Status] = asyncio.get_running_loop().create_future()
        await a.replies.begin(CHAT, 7, lambda status, _notice: cut.set_result(status))
        # The whole process frozen past its lease (no heartbeat): others may take over.
        time.sleep(LEASE * 1.5)  # noqa: ASYNC251 - freezing the event loop is the point
        async with asyncio.timeout(30):
            assert await cut == Status.PARTIAL, "not written twice: cut short here"
        await a.replies.end(CHAT)
