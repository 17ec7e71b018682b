"""The durable inbox: every update is stored before Telegram is told it arrived, and marked done
once handled, so a crash loses nothing Telegram considers delivered.

Telegram delivers an update until the bot acknowledges it (long polling: the next getUpdates
call's offset; a webhook: the 200), then never again. Updates waiting in memory behind a slow
reply in their chat, or a reply a crash cut off, used to die with the process. Now:

- **keep**: each batch of raw updates is one write to the store's inbox (`Store.inbox_add`)
  before it is acknowledged: in polling mode inside the getUpdates request (`polling.py`), in
  webhook mode before the 200 (`webhook.py`; calls that arrive while a write is under way go
  together in the next one). The store says which updates are new; a redelivered one
  (handled, or already queued) is not handled again. A batch the store cannot take (its
  database down, full, or locked by another process) is handled without it, rather than
  holding every chat's updates back.
- **done**: after an update is handled, its id joins a list written at most every
  `DONE_FLUSH_SECONDS` in one small write (`Store.inbox_done`), so the hot path pays one
  extra write per batch and per interval, not per update. A crash inside that interval only
  means some updates are handled again after the restart, which is safe: the store's
  insert-or-get on a message's Telegram id means an answered message is never answered twice.
- **recover**: at start-up, before any new update is taken, the pending updates are put on the
  application's queue in Telegram's order, if received within RECOVERY_WINDOW; each older one
  is marked done *first* and then answered with one line asking to send it again (so nobody is
  told twice; a crash in between loses that line). A question stored but left unanswered by a
  crash comes back this way too and is answered.
- **drain**: once shutdown begins, an update that has not started waits in the inbox for the
  next start instead of starting a reply the grace period would only cut short.

Handled updates keep their id (not their body) for `FORGET_AFTER` seconds, longer than the
24 hours Telegram keeps an update it could not deliver, so a late redelivery is recognised.

**Replicas** (PostgreSQL; `coordination/postgres.py`): each kept update is the replica's that
kept it. `order` is set, and an update of a chat starts only once every earlier update of that
chat kept by any replica has been handled (`wait_turn`), so a chat's messages are answered in
Telegram's order whichever replica got them; done marks are written within `REPLICA_DONE_FLUSH`
seconds, since the chat's next update on another replica waits for them. `recover` runs every
few seconds too (`adopt`): the store hands over the pending updates of replicas that died or
stopped, and they are handled here, in order, or answered with the line asking to send again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from telegram import Message, ReplyParameters, Update
from telegram.constants import ChatType
from telegram.error import TelegramError
from telegram.ext import Application

from ..engine.access import Policy, Verdict
from ..errors import MessageLost
from ..models import ChatKey, InboxUpdate
from ..storage import Store
from .addressing import is_for_me
from .updates import author_of, key_of

log = logging.getLogger(__name__)

AnyApp = Application[Any, Any, Any, Any, Any, Any]

DONE_FLUSH_SECONDS = 0.5
REPLICA_DONE_FLUSH = 0.05
ORDER_WAIT_MAX = 600.0  # seconds an update waits for earlier ones before it goes anyway
FORGET_AFTER = 25 * 3600
PRUNE_EVERY = 3600


def chat_of(raw: dict[str, Any]) -> ChatKey | None:
    """The conversation of a raw update (its chat, and its forum topic as `updates.key_of`
    reads it), without building python-telegram-bot's objects: kept with the update."""
    for kind, value in raw.items():
        if kind == "update_id" or not isinstance(value, dict):
            continue
        message = value.get("message") if kind == "callback_query" else value
        if isinstance(message, dict) and isinstance(message.get("chat"), dict):
            topic = message.get("is_topic_message") and message.get("message_thread_id")
            return ChatKey(int(message["chat"]["id"]), int(topic or 0))
        chat = value.get("chat")
        if isinstance(chat, dict) and "id" in chat:
            return ChatKey(int(chat["id"]))
    return None


class Inbox:
    def __init__(self, store: Store, recovery_window: float) -> None:
        self.store = store
        self.recovery_window = recovery_window
        self.draining = False
        self._handling: set[int] = set()  # queued by this process, not yet started
        self._duplicates: set[int] = set()  # queued again by polling: to be skipped
        self._queued: list[tuple[list[InboxUpdate], asyncio.Future[set[int]]]] = []
        self._writer: asyncio.Task[None] | None = None
        self._done: list[int] = []
        self._flusher: asyncio.Task[None] | None = None
        self._flushing = asyncio.Lock()
        self._pruned = 0.0
        # Replicas: the chat's earlier pending updates, whoever kept them (None: one process).
        self.order: Callable[[ChatKey, int], Awaitable[list[int]]] | None = None
        # ... and an event set when they may have changed (marked done: a NOTIFY).
        self.changes: Callable[[ChatKey], asyncio.Event] | None = None
        self.done_delay = DONE_FLUSH_SECONDS
        self._admitted: set[int] = set()  # came through the inbox, not yet done
        self._passed: set[int] = set()  # their turn came (`wait_turn`), not yet done
        self._unflushed: set[int] = set()  # done here, the mark not yet written

    # -- keep -----------------------------------------------------------------------------------

    async def keep(self, raw: Sequence[dict[str, Any]]) -> set[int]:
        """Stores raw updates before they are acknowledged; returns the ids of the new ones,
        which this process now handles.

        If the store cannot take them (its database down or locked), they are handled without
        it, as before there was an inbox: holding them back would hold back every chat's
        updates, and the handlers tell each user that the database is unreachable. Only a
        crash in that moment could lose them.

        Batches that arrive while a write is under way (webhook calls in a burst) wait for it
        and then go together in the next one: one write for all of them, however many."""
        now = time.time()
        kept = [
            InboxUpdate(
                int(update["update_id"]),
                chat_of(update),
                json.dumps(update, ensure_ascii=False, separators=(",", ":")),
                now,
            )
            for update in raw
        ]
        waiting: asyncio.Future[set[int]] = asyncio.get_running_loop().create_future()
        self._queued.append((kept, waiting))
        if self._writer is None:
            self._writer = asyncio.create_task(self._write_queued(), name="inbox-keep")
        try:
            fresh = await waiting
        except Exception as exc:  # the store's own error, whatever the backend
            log.warning(
                "Inbox: could not store %d updates (%s); handled without it", len(kept), exc
            )
            fresh = {update.update_id for update in kept}
        self._handling |= fresh
        return fresh

    async def _write_queued(self) -> None:
        try:
            while self._queued:
                batches, self._queued = self._queued, []
                try:
                    stored = set(await self.store.inbox_add([u for b, _ in batches for u in b]))
                except Exception as exc:  # each caller says what it means for its updates
                    for _, waiting in batches:
                        if not waiting.done():
                            waiting.set_exception(exc)
                    continue
                for updates, waiting in batches:  # an id goes to the first that brought it
                    mine = {u.update_id for u in updates if u.update_id in stored}
                    stored -= mine
                    if not waiting.done():
                        waiting.set_result(mine)
        finally:
            self._writer = None

    def skip_duplicates(self, update_ids: Iterable[int]) -> None:
        """Updates that reach the application's queue although the inbox knew them already
        (long polling hands every fetched update over): each is skipped once it comes."""
        self._duplicates.update(update_ids)

    def admit(self, update: object) -> bool:
        """Whether the processor should run this update: the first copy of an update this
        process queued, or one that did not come through the inbox; never a duplicate."""
        if not isinstance(update, Update):
            return True
        update_id = update.update_id
        if update_id in self._handling:
            self._handling.discard(update_id)
            self._admitted.add(update_id)
            return True
        if update_id in self._duplicates:
            self._duplicates.discard(update_id)
            log.debug("update %s was delivered again; already handled or queued", update_id)
            return False
        return True

    async def wait_turn(self, chat: ChatKey, update: object) -> None:
        """Replicas: returns once every earlier update of `chat` in the inbox has been handled,
        by whichever replica, or has had its turn here (then this process's own chat lock keeps
        the order). Waits at most ORDER_WAIT_MAX seconds for an update stuck on a live replica
        (then the chat's turn still keeps its replies one at a time, only their order may
        change); a replica that died is taken over much sooner (`adopt`)."""
        if self.order is None or not isinstance(update, Update):
            return
        update_id = update.update_id
        if update_id not in self._admitted:
            return  # not kept in the inbox (its database was down): no order to keep
        loop = asyncio.get_running_loop()
        started, delay = loop.time(), 0.05
        while True:
            changed = self.changes(chat) if self.changes is not None else asyncio.Event()
            try:
                earlier = await self.order(chat, update_id)
            except Exception as exc:  # the store's own error: order is then best effort
                log.warning("chat=%s: could not read the inbox's order (%s)", chat, exc)
                break
            if all(i in self._passed or i in self._unflushed for i in earlier):
                break
            if loop.time() - started > ORDER_WAIT_MAX:
                log.warning("chat=%s: update %s waited too long for %s", chat, update_id, earlier)
                break
            with contextlib.suppress(TimeoutError):  # woken when they are marked done
                async with asyncio.timeout(delay):
                    await changed.wait()
            delay = min(delay * 2, 1.0)
        self._passed.add(update_id)

    # -- done -----------------------------------------------------------------------------------

    def done(self, update: object) -> None:
        """Marks an update handled; written with others within DONE_FLUSH_SECONDS."""
        if isinstance(update, Update):
            self.mark_done(update.update_id)

    def mark_done(self, update_id: int) -> None:
        self._done.append(update_id)
        self._admitted.discard(update_id)
        self._passed.discard(update_id)
        self._unflushed.add(update_id)
        if self._flusher is None:
            self._flusher = asyncio.get_running_loop().create_task(
                self._flush_soon(), name="inbox-done"
            )

    async def _flush_soon(self) -> None:
        try:
            await asyncio.sleep(self.done_delay)
        finally:
            self._flusher = None  # from here on `close` waits for the write, not cancels it
        await self.flush()

    async def flush(self) -> None:
        """Writes the done marks collected so far (and, at most once an hour, forgets the
        handled updates older than FORGET_AFTER). One write at a time."""
        async with self._flushing:
            ids, self._done = self._done, []
            if not ids:
                return
            now = time.time()
            forget = now - FORGET_AFTER if now - self._pruned >= PRUNE_EVERY else None
            try:
                await self.store.inbox_done(ids, forget_before=forget)
            except Exception as exc:  # the store's own error: never lose the marks over it
                self._done[:0] = ids
                log.warning("Could not mark %d updates handled (%s); will retry", len(ids), exc)
                return
            self._unflushed.difference_update(ids)
            if forget is not None:
                self._pruned = now

    async def close(self) -> None:
        """Writes the last done marks; call before the store closes."""
        flusher, self._flusher = self._flusher, None
        if flusher is not None:  # still in its pause: the marks are written below instead
            flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await flusher
        await self.flush()  # after any write under way (the lock), the marks left

    # -- recover --------------------------------------------------------------------------------

    async def recover(self, application: AnyApp) -> list[InboxUpdate]:
        """Queues what a crash left unhandled (received within the recovery window), in order,
        before any new update; marks older ones done and returns them, for `tell_lost`."""
        pending = await self.store.inbox_pending()
        if not pending:
            return []
        cutoff = time.time() - self.recovery_window
        stale = [item for item in pending if item.received_at < cutoff]
        fresh = [item for item in pending if item.received_at >= cutoff]
        if stale:  # first, so nobody is ever told twice
            await self.store.inbox_done([item.update_id for item in stale])
        for item in fresh:
            update = _parse(item, application)
            if update is None:
                self.mark_done(item.update_id)
                continue
            self._handling.add(update.update_id)
            await application.update_queue.put(update)
        log.info(
            "Inbox: %d updates a restart or a dead replica left unhandled are handled now; %d "
            "older than RECOVERY_WINDOW (%.0f s) get a line asking to send them again",
            len(fresh),
            len(stale),
            self.recovery_window,
        )
        return stale

    async def adopt(self, application: AnyApp, policy: Policy, every: float) -> None:
        """Replicas: every `every` seconds, takes over the pending updates of replicas that
        died (their lease ran out) or stopped, as `recover` does at start-up; until shutdown."""
        while not self.draining:
            await asyncio.sleep(every)
            if self.draining:
                return
            try:
                lost = await self.recover(application)
            except Exception as exc:  # the store's own error: the next round tries again
                log.warning("Inbox: could not look for a dead replica's updates (%s)", exc)
                continue
            if lost:
                await self.tell_lost(application, policy, lost)

    async def tell_lost(
        self, application: AnyApp, policy: Policy, lost: Sequence[InboxUpdate]
    ) -> None:
        """One line per conversation, under the newest lost message in it that asked the bot
        something: a private message, or a group message addressed to the bot, from someone
        the bot serves."""
        newest: dict[ChatKey, Message] = {}
        for item in lost:
            update = _parse(item, application)
            message = update.message if update is not None else None
            if message is not None and _asked(message, application, policy):
                newest[key_of(message)] = message
        for key, message in newest.items():
            when = datetime.fromtimestamp(message.date.timestamp(), UTC).strftime("%H:%M UTC")
            try:
                await application.bot.send_message(
                    key.chat_id,
                    f"{MessageLost.user_message()} (sent at {when})",
                    message_thread_id=key.thread_id or None,
                    reply_parameters=ReplyParameters(
                        message.message_id, allow_sending_without_reply=True
                    ),
                )
            except TelegramError as exc:
                log.warning("chat=%s could not say a message was lost: %s", key, exc)


def _parse(item: InboxUpdate, application: AnyApp) -> Update | None:
    try:
        return Update.de_json(json.loads(item.body), application.bot)
    except (ValueError, TypeError, KeyError) as exc:
        log.warning("Inbox: update %s cannot be read again (%s); skipped", item.update_id, exc)
        return None


def _asked(message: Message, application: AnyApp, policy: Policy) -> bool:
    """Whether a lost message asked the bot something, from someone it serves."""
    if message.text is None or (message.from_user is not None and message.from_user.is_bot):
        return False
    private = message.chat.type == ChatType.PRIVATE
    if not private and not is_for_me(message, application.bot):
        return False
    author = author_of(message)
    user_id = author.user_id if author is not None else None
    return policy.decide(chat_id=message.chat.id, private=private, user_id=user_id) is (
        Verdict.ALLOW
    )
