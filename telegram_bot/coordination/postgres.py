"""Coordination across replicas, in the PostgreSQL database they share (tables of p007).

Chosen automatically when DATABASE_URL is PostgreSQL; the engine sees the same three
interfaces as in one process. This replica is `Replica`: a row in `replicas` whose lease
(REPLICA_LEASE_SECONDS) a heartbeat renews every fifth of it, and one dedicated connection
that LISTENs. A replica whose lease passed is dead, and what it held is free again:

- **turns** (`LeasedTurns`): a chat's turn is a row in `chat_turns` naming the replica that
  holds it, with the same lease, renewed by the same heartbeat. Taking it is one statement
  (insert, or take over a row whose lease passed); giving it back deletes the row and NOTIFYs,
  which wakes a replica waiting for that chat at once (else it looks again, backing off to 1 s).
  Within a process the chat's waiters queue on a local lock first, so one of them at a time
  asks the database; other chats never wait for it.
- **replies** (`SharedReplies`): a reply being written is a row in `running_replies` too.
  /stop (or the Stop button) handled by another replica finds the row, checks who may stop it,
  and NOTIFYs the replica writing it, whose listener stops it there; "Stopped." is posted by
  that reply, as in one process.
- **rate** (`SharedRateWindow`): each user's times of the last minute, one array per user,
  decided and appended in one statement on the server's clock. Daily token limits need nothing
  here: the usage they count is in the shared store.
- **refusal pacing** (`Replica.should_answer`): when a key was last told it is refused.
- **order of a chat's updates**: `pending_before` says which earlier updates of a chat are
  still pending in the inbox, so the adapter starts an update only after them (`inbox.py`).

LISTEN needs a session of its own: the listening connection is made to DATABASE_LISTEN_URL
(default DATABASE_URL), so behind PgBouncer in transaction mode it can go straight to
PostgreSQL while the pool goes through PgBouncer. Everything else is one statement on the
store's pool, no session state, so PgBouncer's transaction mode serves it. At start the
replica sends itself a NOTIFY and says in one ERROR line if it never arrives (LISTEN through
PgBouncer in transaction mode is accepted, then deaf). A lost listening connection is made
again by the heartbeat; meanwhile waiters poll, and another replica's /stop is lost (logged).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg

from ..config import Settings
from ..errors import DatabaseUnavailable
from ..models import ChatKey
from ..storage.postgres.store import INBOX_CHANNEL, PostgresStore
from . import Coordination, OnStop, StopOutcome
from .listening import check_listening
from .local import WINDOW, KeyedLocks, LocalReplies

log = logging.getLogger(__name__)

TURNS_CHANNEL = INBOX_CHANNEL  # a chat's turn given back, or its updates marked done
STOP_CHANNEL = "telegram_bot_stop"
HEARTBEATS_PER_LEASE = 5
POLL_MAX = 1.0  # seconds: the longest a waiter goes without looking again
PRUNE_EVERY = 600  # heartbeats between clean-ups of dead replicas' rows and old windows

_LEASE = "now() + make_interval(secs => $2)"
HEARTBEAT = f"""
WITH me AS (
    INSERT INTO replicas (id, expires_at) VALUES ($1, {_LEASE})
    ON CONFLICT (id) DO UPDATE SET expires_at = excluded.expires_at
)
UPDATE chat_turns SET expires_at = {_LEASE} WHERE holder = $1
"""
PRUNE = """
WITH dead AS (
    DELETE FROM replicas WHERE expires_at < now() - interval '1 hour' RETURNING id
), replies AS (
    DELETE FROM running_replies r WHERE NOT EXISTS
        (SELECT 1 FROM replicas p WHERE p.id = r.replica AND p.expires_at > now())
), windows AS (
    DELETE FROM rate_windows WHERE times[cardinality(times)]
        < extract(epoch FROM now()) - 3600
)
DELETE FROM refusals WHERE told_at < extract(epoch FROM now()) - 86400
"""
LEAVE = """
WITH me AS (DELETE FROM replicas WHERE id = $1),
     replies AS (DELETE FROM running_replies WHERE replica = $1),
     turns AS (DELETE FROM chat_turns WHERE holder = $1 RETURNING chat_id, thread_id)
SELECT pg_notify($2, chat_id::text || ':' || thread_id::text) FROM turns
"""
TAKE_TURN = f"""
INSERT INTO chat_turns AS t (chat_id, thread_id, holder, expires_at)
VALUES ($3, $4, $1, {_LEASE})
ON CONFLICT (chat_id, thread_id) DO UPDATE
    SET holder = excluded.holder, expires_at = excluded.expires_at
    WHERE t.expires_at < now() OR t.holder = excluded.holder
RETURNING 1
"""
GIVE_TURN = """
WITH gone AS (
    DELETE FROM chat_turns WHERE chat_id = $2 AND thread_id = $3 AND holder = $1 RETURNING 1
)
SELECT pg_notify($4, $2::text || ':' || $3::text) FROM gone
"""
BEGIN_REPLY = """
INSERT INTO running_replies (chat_id, thread_id, replica, author_id) VALUES ($2, $3, $1, $4)
ON CONFLICT (chat_id, thread_id) DO UPDATE
    SET replica = excluded.replica, author_id = excluded.author_id, started_at = now()
"""
END_REPLY = "DELETE FROM running_replies WHERE chat_id = $2 AND thread_id = $3 AND replica = $1"
FIND_REPLY = """
SELECT r.replica, r.author_id FROM running_replies r
JOIN replicas p ON p.id = r.replica AND p.expires_at > now()
WHERE r.chat_id = $1 AND r.thread_id = $2
"""
TAKE_RATE = """
WITH clock AS (SELECT extract(epoch FROM clock_timestamp())::float8 AS t)
INSERT INTO rate_windows AS w (user_id, times) SELECT $1, ARRAY[t] FROM clock
ON CONFLICT (user_id) DO UPDATE SET times = (
    SELECT CASE WHEN count(*) < $2
                THEN coalesce(array_agg(x ORDER BY x), '{}') || (SELECT t FROM clock)
                ELSE array_agg(x ORDER BY x) END
    FROM unnest(w.times) AS x WHERE x > (SELECT t FROM clock) - $3
)
RETURNING times, (SELECT t FROM clock)
"""
PACE = """
INSERT INTO refusals AS r (key, told_at) VALUES ($1, extract(epoch FROM clock_timestamp()))
ON CONFLICT (key) DO UPDATE SET told_at = excluded.told_at
    WHERE r.told_at <= excluded.told_at - $2
RETURNING 1
"""
PENDING_BEFORE = """
SELECT update_id FROM inbox
WHERE chat_id = $1 AND thread_id = $2 AND NOT done AND update_id < $3 ORDER BY update_id
"""


class Replica:
    """This process among the replicas: its lease, its heartbeat, its listening connection."""

    def __init__(
        self, store: PostgresStore, lease: float, listen_url: str = "", refusal_interval: float = 0
    ) -> None:
        self.id = store.replica_id
        self.refusal_interval = refusal_interval
        self.database = store.database
        self.lease = lease
        self.listen_url = listen_url or store.database.url
        self.local = LocalReplies()
        self.wakers: dict[ChatKey, asyncio.Event] = {}
        self._listener: asyncpg.Connection | None = None
        self._heartbeat: asyncio.Task[None] | None = None
        self._stops: set[asyncio.Task[StopOutcome]] = set()
        self._beats = 0
        self._failing = False

    async def start(self) -> None:
        """Registers this replica (before it keeps any update) and starts listening."""
        await self.database.execute(HEARTBEAT, self.id, self.lease)
        await self.database.execute(PRUNE)
        await self._listen()
        assert self._listener is not None
        await check_listening(self._listener, self.database, self.id, self.listen_url)
        self._heartbeat = asyncio.create_task(self._beat(), name="replica-heartbeat")
        log.info("Replica %s: lease %.0f s, on PostgreSQL", self.id, self.lease)

    async def close(self) -> None:
        """Leaves: what this replica still held (chats, pending updates) is free at once."""
        heartbeat, self._heartbeat = self._heartbeat, None
        if heartbeat is None:
            return
        heartbeat.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await heartbeat
        try:
            await self.database.execute(LEAVE, self.id, TURNS_CHANNEL)
        except DatabaseUnavailable:
            log.warning("Replica %s could not say it left; its lease runs out", self.id)
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(Exception):  # leaving anyway, whatever the connection says
                await asyncio.wait_for(listener.close(), 5)

    # -- heartbeat and notifications -------------------------------------------------------

    async def _beat(self) -> None:
        loop = asyncio.get_running_loop()
        renewed = loop.time()
        while True:
            await asyncio.sleep(self.lease / HEARTBEATS_PER_LEASE)
            if loop.time() - renewed > self.lease:
                self._fence(loop.time() - renewed)
            try:
                await self.database.execute(HEARTBEAT, self.id, self.lease)
                renewed = loop.time()
                self._beats += 1
                if self._beats % PRUNE_EVERY == 0:
                    await self.database.execute(PRUNE)
                if self._listener is None or self._listener.is_closed():
                    await self._listen()
            except Exception as exc:  # whatever the database says, the heartbeat goes on;
                # one line per outage, not per beat
                if not self._failing:
                    log.warning("Replica %s: heartbeat failed (%s); retrying", self.id, exc)
                self._failing = True
                continue
            if self._failing:
                log.info("Replica %s: heartbeat back", self.id)
                self._failing = False

    def _fence(self, silent: float) -> None:
        """This replica's lease ran out (the database unreachable, or the process frozen): the
        others may be taking over its chats, so the replies it writes are cut short here (each
        delivered and stored as partial, where the database allows) rather than written twice."""
        if count := self.local.interrupt_local():
            log.error(
                "Replica %s: no heartbeat for %.0f s (REPLICA_LEASE_SECONDS %.0f): other "
                "replicas may take over; %d replies cut short",
                self.id,
                silent,
                self.lease,
                count,
            )

    async def _listen(self) -> None:
        old, self._listener = self._listener, None
        if old is not None:
            old.terminate()
        listener = await self.database.connect_dedicated(self.listen_url)
        await listener.add_listener(TURNS_CHANNEL, self._on_notify)
        await listener.add_listener(STOP_CHANNEL, self._on_notify)
        self._listener = listener
        for chat in list(self.wakers):  # a release may have been missed meanwhile
            self._wake(chat)

    def _on_notify(self, _conn: Any, _pid: int, channel: str, payload: str) -> None:
        if channel == TURNS_CHANNEL:
            chat_id, _, thread_id = payload.partition(":")
            self._wake(ChatKey(int(chat_id), int(thread_id or 0)))
            return
        stop = json.loads(payload)
        if stop.get("replica") != self.id:
            return
        chat = ChatKey(int(stop["chat_id"]), int(stop["thread_id"]))
        task = asyncio.create_task(self.local.stop(chat, stop.get("by"), stop.get("notice")))
        self._stops.add(task)
        task.add_done_callback(self._stops.discard)
        log.info("chat=%s stopped from another replica", chat)

    def signal(self, chat: ChatKey) -> asyncio.Event:
        """Set at the next change of the chat's turn or inbox (a NOTIFY): take it before
        looking, then wait on it, and no change between the two is missed."""
        event = self.wakers.get(chat)
        if event is None:
            event = self.wakers[chat] = asyncio.Event()
        return event

    def _wake(self, chat: ChatKey) -> None:
        event = self.wakers.pop(chat, None)
        if event is not None:
            event.set()

    async def should_answer(self, key: object) -> bool:
        """REFUSAL_INTERVAL across replicas: a refused key is told at most once per interval."""
        try:
            told = await self.database.fetchval(PACE, repr(key), self.refusal_interval)
        except DatabaseUnavailable:
            return True  # better one refusal too many than a user left without an answer
        return bool(told)

    async def pending_before(self, chat: ChatKey, update_id: int) -> list[int]:
        """The chat's updates kept before this one and not yet handled, by any replica."""
        rows = await self.database.fetch(PENDING_BEFORE, chat.chat_id, chat.thread_id, update_id)
        return [int(row[0]) for row in rows]


class LeasedTurns:
    """One turn at a time per chat across replicas: a leased row in `chat_turns`."""

    def __init__(self, replica: Replica) -> None:
        self.replica = replica
        self._local = KeyedLocks()

    @asynccontextmanager
    async def hold(self, chat: ChatKey) -> AsyncIterator[None]:
        async with self._local.hold(chat):
            await self._take(chat)
            try:
                yield
            finally:
                await self._give(chat)

    async def _take(self, chat: ChatKey) -> None:
        replica, delay = self.replica, 0.05
        while True:
            changed = replica.signal(chat)
            taken = await replica.database.fetchval(
                TAKE_TURN, replica.id, replica.lease, chat.chat_id, chat.thread_id
            )
            if taken:
                return
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await changed.wait()
            delay = min(delay * 2, POLL_MAX)

    async def _give(self, chat: ChatKey) -> None:
        replica = self.replica
        try:
            await replica.database.fetch(
                GIVE_TURN, replica.id, chat.chat_id, chat.thread_id, TURNS_CHANNEL
            )
        except DatabaseUnavailable as exc:
            log.warning("chat=%s: could not give the turn back (%s); its lease runs out", chat, exc)


class SharedReplies:
    """The replies this replica writes (in memory, to stop them) and every replica's (rows)."""

    def __init__(self, replica: Replica) -> None:
        self.replica = replica
        self.local = replica.local

    async def begin(self, chat: ChatKey, author_id: int | None, on_stop: OnStop) -> None:
        await self.local.begin(chat, author_id, on_stop)
        replica = self.replica
        try:
            await replica.database.execute(
                BEGIN_REPLY, replica.id, chat.chat_id, chat.thread_id, author_id
            )
        except DatabaseUnavailable as exc:  # the reply goes on; only a remote /stop misses it
            log.warning("chat=%s: reply not registered for other replicas (%s)", chat, exc)

    async def end(self, chat: ChatKey) -> None:
        await self.local.end(chat)
        replica = self.replica
        try:
            await replica.database.execute(END_REPLY, replica.id, chat.chat_id, chat.thread_id)
        except DatabaseUnavailable as exc:
            log.warning("chat=%s: reply not unregistered (%s)", chat, exc)

    async def stop(
        self, chat: ChatKey, by_user: int | None, notice: str | None = None
    ) -> StopOutcome:
        outcome = await self.local.stop(chat, by_user, notice)
        if outcome is not StopOutcome.NOTHING:
            return outcome
        replica = self.replica
        row = await replica.database.fetchrow(FIND_REPLY, chat.chat_id, chat.thread_id)
        if row is None or row[0] == replica.id:
            return StopOutcome.NOTHING
        if by_user is not None and row[1] not in (None, by_user):
            return StopOutcome.NOT_YOURS
        payload = {
            "replica": row[0],
            "chat_id": chat.chat_id,
            "thread_id": chat.thread_id,
            "by": by_user,
            "notice": notice,
        }
        await replica.database.execute(
            "SELECT pg_notify($1, $2)", STOP_CHANNEL, json.dumps(payload, ensure_ascii=False)
        )
        return StopOutcome.STOPPED

    def interrupt_local(self) -> int:
        return self.local.interrupt_local()

    @property
    def local_count(self) -> int:
        return self.local.local_count


class SharedRateWindow:
    """RATE_LIMIT_PER_MINUTE over every replica: one array of times per user."""

    def __init__(self, replica: Replica, per_minute: int) -> None:
        self.replica = replica
        self.per_minute = per_minute

    async def take(self, user_id: int) -> float | None:
        if self.per_minute <= 0:
            return None
        row = await self.replica.database.fetchrow(TAKE_RATE, user_id, self.per_minute, WINDOW)
        assert row is not None
        times, now = list(row[0]), float(row[1])
        if times and times[-1] == now:
            return None
        return max(times[0] + WINDOW - now, 0.0) if times else None


def replica_coordination(store: PostgresStore, settings: Settings) -> tuple[Coordination, Replica]:
    """The coordination of a replica on `store`'s database, and the replica to start (after
    the store is open, before any update is kept) and close (before the store)."""
    replica = Replica(
        store,
        settings.replica_lease_seconds,
        settings.database_listen_url,
        settings.refusal_interval,
    )
    rate = SharedRateWindow(replica, settings.rate_limit_per_minute)
    return Coordination(LeasedTurns(replica), SharedReplies(replica), rate), replica
