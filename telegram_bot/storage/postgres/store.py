"""`PostgresStore`: the `Store` interface over a PostgreSQL database, shared by replicas.

A thin async layer: each method is one statement (one round trip) through the pool of
`connection.py`, except `move_chat` (a transaction of a few) and an insert-or-get that races
another replica for the same message (a second read). A message's hot path is four round
trips: store it (`add_user_turn`), its chat's persona (`get_persona`), what its prompt needs
(`backlog`), the reply with its usage (`add_reply`); recall adds one when the conversation
has turns older than the verbatim window. Times are the server's (`now()`), so replicas with
drifting clocks still order a chat's rows. Every query is parameterised.
"""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Sequence
from datetime import date
from typing import Any

import asyncpg

from ...models import (
    Backlog,
    ChatKey,
    InboxUpdate,
    NewSummary,
    NewTurn,
    StoredTurn,
    Summary,
    Turn,
    UsageTotals,
)
from . import memory, messages, rows
from .connection import Database

# Replicas wait for a chat's earlier updates to be handled (`coordination/postgres.py`): marking
# updates done wakes them with a NOTIFY per chat ('chat_id:thread_id'), sent at commit.
INBOX_CHANNEL = "telegram_bot_turns"
MARK_DONE = """
WITH marked AS (
    UPDATE inbox SET done = true, body = NULL WHERE update_id = ANY($1::bigint[])
    RETURNING chat_id, thread_id
)
SELECT pg_notify($2, chat_id::text || ':' || thread_id::text)
FROM (SELECT DISTINCT chat_id, thread_id FROM marked WHERE chat_id IS NOT NULL) AS chats
"""


class PostgresStore:
    def __init__(self, url: str, *, pool_size: int = 10, pgbouncer: bool = False) -> None:
        self.database = Database(url, pool_size=pool_size, pgbouncer=pgbouncer)
        # This process among the replicas: the owner of the inbox updates it keeps. Alive
        # while `coordination.postgres.Replica` renews its row in `replicas` (p007).
        self.replica_id = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"

    @property
    def pool(self) -> asyncpg.Pool:
        """The open store's connection pool, for code that shares the database (see
        `connection.py` for the rules it keeps)."""
        return self.database.pool

    async def open(self) -> None:
        await self.database.open()

    async def close(self) -> None:
        await self.database.close()

    # -- messages ----------------------------------------------------------------------------

    async def add_user_turn(self, turn: NewTurn, *, chat_kind: str = "private") -> StoredTurn:
        args = messages.values(turn, chat_kind)
        return await messages.insert_or_get(self.database, messages.ADD_USER_TURN, args)

    async def add_overheard(
        self, turn: NewTurn, *, keep: int, chat_kind: str = "group"
    ) -> StoredTurn:
        args = (*messages.values(turn, chat_kind, overheard=True), max(keep, 1) - 1)
        return await messages.insert_or_get(self.database, messages.ADD_OVERHEARD, args)

    async def add_reply(
        self, turn: NewTurn, *, user_id: int | None, day: date, chat_kind: str = "private"
    ) -> int:
        booked = turn.usage.total > 0
        args = (
            *messages.values(turn, chat_kind),
            day,
            user_id or 0,
            booked,
            turn.undelivered,
            turn.usage.reasoning_tokens,
            turn.usage.cached_tokens,
        )
        reply_id: int = await self.database.fetchval(messages.ADD_REPLY, *args)
        return reply_id

    async def mark_delivered(self, turn_id: int, tg_message_id: int | None) -> None:
        await self.database.execute(
            "UPDATE messages SET undelivered = false, tg_message_id = $2 WHERE id = $1",
            turn_id,
            tg_message_id,
        )

    async def archive(self, chat: ChatKey) -> int:
        return await self.database.execute(
            "UPDATE messages SET archived = true "
            "WHERE chat_id = $1 AND thread_id = $2 AND NOT archived",
            chat.chat_id,
            chat.thread_id,
        )

    async def last_exchange(self, chat: ChatKey) -> tuple[Turn, list[Turn]] | None:
        row = await self.database.fetchrow(messages.LAST_EXCHANGE, chat.chat_id, chat.thread_id)
        if row is None or row[0] is None:
            return None
        return rows.turn(row[0]), [rows.turn(answer) for answer in row[1]]

    async def supersede(self, turn_ids: Sequence[int], by: int) -> None:
        await self.database.execute(
            "UPDATE messages SET archived = true, superseded_by = $2 WHERE id = ANY($1::bigint[])",
            list(turn_ids),
            by,
        )

    async def move_chat(self, old_chat_id: int, new_chat_id: int) -> int:
        return await self.database.transaction(
            lambda db: messages.move_chat(db, old_chat_id, new_chat_id)
        )

    # -- chats and their settings ------------------------------------------------------------

    async def set_chat_active(self, chat_id: int, active: bool) -> None:
        await self.database.execute(
            "UPDATE chats SET active = $2, updated_at = now() WHERE chat_id = $1", chat_id, active
        )

    async def get_persona(self, chat_id: int) -> str | None:
        persona: str | None = await self.database.fetchval(
            "SELECT persona FROM chat_settings WHERE chat_id = $1", chat_id
        )
        return persona

    async def set_persona(self, chat_id: int, persona: str | None, by_user: int | None) -> None:
        await self.database.execute(
            "INSERT INTO chat_settings (chat_id, persona, updated_by, updated_at) "
            "VALUES ($1, $2, $3, now()) ON CONFLICT (chat_id) DO UPDATE SET "
            "persona = excluded.persona, updated_by = excluded.updated_by, "
            "updated_at = excluded.updated_at",
            chat_id,
            persona,
            by_user,
        )

    # -- usage -------------------------------------------------------------------------------

    async def record_usage(
        self,
        chat: ChatKey | int,
        user_id: int | None,
        day: date,
        prompt_tokens: int,
        completion_tokens: int,
        *,
        audio_seconds: int = 0,
        reasoning_tokens: int = 0,
        cached_tokens: int = 0,
    ) -> None:
        chat_id = chat.chat_id if isinstance(chat, ChatKey) else chat
        booking = (day, chat_id, user_id or 0)
        costs = (prompt_tokens, completion_tokens, audio_seconds, reasoning_tokens, cached_tokens)
        await self.database.execute(messages.BOOK_USAGE, *booking, *costs)

    async def usage_totals(
        self,
        first_day: date,
        last_day: date,
        *,
        user_id: int | None = None,
        chat_id: int | None = None,
    ) -> UsageTotals:
        sql = (
            "SELECT COALESCE(sum(calls), 0), COALESCE(sum(prompt_tokens), 0), "
            "COALESCE(sum(completion_tokens), 0), COALESCE(sum(audio_seconds), 0), "
            "COALESCE(sum(reasoning_tokens), 0), COALESCE(sum(cached_tokens), 0) "
            "FROM usage WHERE day BETWEEN $1 AND $2"
        )
        params: list[Any] = [first_day, last_day]
        if user_id is not None:
            params.append(user_id)
            sql += f" AND user_id = ${len(params)}"
        if chat_id is not None:
            params.append(chat_id)
            sql += f" AND chat_id = ${len(params)}"
        row = await self.database.fetchrow(sql, *params)
        return UsageTotals(*(int(v) for v in row)) if row else UsageTotals()

    async def top_chats(
        self, first_day: date, last_day: date, limit: int
    ) -> list[tuple[int, UsageTotals]]:
        found = await self.database.fetch(
            "SELECT chat_id, sum(calls), sum(prompt_tokens), sum(completion_tokens), "
            "sum(audio_seconds), sum(reasoning_tokens), sum(cached_tokens) FROM usage "
            "WHERE day BETWEEN $1 AND $2 GROUP BY chat_id "
            "ORDER BY sum(prompt_tokens) + sum(completion_tokens) DESC, chat_id LIMIT $3",
            first_day,
            last_day,
            limit,
        )
        return [(int(r[0]), UsageTotals(*(int(v) for v in r[1:]))) for r in found]

    # -- memory: summaries and recall ----------------------------------------------------------

    async def unsummarised_turns(self, chat: ChatKey, max_tokens: int | None = None) -> list[Turn]:
        key = (chat.chat_id, chat.thread_id)
        if max_tokens is None:
            found = await self.database.fetch(memory.ALL_UNSUMMARISED, *key)
        else:
            found = await self.database.fetch(memory.NEWEST_UNSUMMARISED, *key, max_tokens)
        return [rows.turn(row) for row in found]

    async def current_summary(self, chat: ChatKey) -> Summary | None:
        row = await self.database.fetchrow(memory.CURRENT_SUMMARY, chat.chat_id, chat.thread_id)
        return rows.summary(row) if row else None

    async def backlog(self, chat: ChatKey, max_tokens: int) -> Backlog:
        # Runs before every model call: every read in one statement.
        row = await self.database.fetchrow(memory.BACKLOG, chat.chat_id, chat.thread_id, max_tokens)
        summary, turns, total, first_id = row if row is not None else (None, [], 0, None)
        return Backlog(
            summary=rows.summary(summary) if summary is not None else None,
            turns=[rows.turn(turn) for turn in turns],
            complete=len(turns) == total,
            first_id=first_id,
        )

    async def save_summary(self, summary: NewSummary) -> Summary:
        row = await self.database.fetchrow(
            memory.SAVE_SUMMARY,
            summary.chat.chat_id,
            summary.chat.thread_id,
            summary.text,
            summary.tokens,
            summary.first_message_id,
            summary.last_message_id,
            summary.model,
            summary.usage.prompt_tokens or None,
            summary.usage.completion_tokens or None,
        )
        if row is None:  # pragma: no cover - INSERT ... RETURNING returns the row
            raise RuntimeError("the summary was not stored")
        return rows.summary(row)

    async def search_turns(
        self, chat: ChatKey, words: Sequence[str], *, before_id: int, limit: int = 8
    ) -> list[Turn]:
        query = rows.tsquery(words)
        if not query or limit <= 0:
            return []
        found = await self.database.fetch(
            memory.SEARCH,
            chat.chat_id,
            chat.thread_id,
            rows.chat_token(chat),
            query,
            before_id,
            limit,
        )
        return [rows.turn(row) for row in found]

    # -- token counting --------------------------------------------------------------------------

    async def token_factors(self) -> dict[str, float]:
        found = await self.database.fetch("SELECT model, factor FROM token_factors")
        return {row[0]: float(row[1]) for row in found}

    async def set_token_factor(self, model: str, factor: float) -> None:
        await self.database.execute(
            "INSERT INTO token_factors (model, factor, updated_at) VALUES ($1, $2, now()) "
            "ON CONFLICT (model) DO UPDATE SET factor = excluded.factor, "
            "updated_at = excluded.updated_at",
            model,
            factor,
        )

    # -- the inbox: each update is its owner's, and a dead owner's are taken over (p007) -------

    async def inbox_add(self, updates: Sequence[InboxUpdate]) -> list[int]:
        if not updates:
            return []
        found = await self.database.fetch(
            "INSERT INTO inbox (update_id, chat_id, thread_id, body, received_at, owner) "
            "SELECT *, $6::text FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], "
            "$4::text[], $5::float8[]) ON CONFLICT (update_id) DO NOTHING RETURNING update_id",
            [u.update_id for u in updates],
            [u.chat.chat_id if u.chat is not None else None for u in updates],
            [u.chat.thread_id if u.chat is not None else 0 for u in updates],
            [u.body for u in updates],
            [u.received_at for u in updates],
            self.replica_id,
        )
        stored = {row[0] for row in found}
        return [u.update_id for u in updates if u.update_id in stored]

    async def inbox_done(
        self, update_ids: Sequence[int], *, forget_before: float | None = None
    ) -> None:
        if not update_ids and forget_before is None:
            return
        if forget_before is None:  # the usual call: one statement
            await self.database.execute(MARK_DONE, list(update_ids), INBOX_CHANNEL)
            return

        async def mark_and_forget(db: asyncpg.Connection) -> None:
            await db.execute(MARK_DONE, list(update_ids), INBOX_CHANNEL)
            await db.execute("DELETE FROM inbox WHERE done AND received_at < $1", forget_before)

        await self.database.transaction(mark_and_forget)

    async def inbox_pending(self) -> list[InboxUpdate]:
        """The pending updates no live replica owns (kept by a process that died or stopped,
        or by none), taken over by this one in the same statement: called at start-up and
        periodically by replicas, it never returns an update another live replica handles."""
        found = await self.database.fetch(
            "UPDATE inbox SET owner = $1 WHERE NOT done AND (owner IS NULL OR NOT EXISTS "
            "(SELECT 1 FROM replicas r WHERE r.id = inbox.owner AND r.expires_at > now())) "
            "RETURNING update_id, chat_id, thread_id, body, received_at",
            self.replica_id,
        )
        found.sort(key=lambda row: int(row[0]))
        return [
            InboxUpdate(
                int(row[0]),
                ChatKey(int(row[1]), int(row[2])) if row[1] is not None else None,
                str(row[3]),
                float(row[4]),
            )
            for row in found
        ]
