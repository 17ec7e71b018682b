"""Which updates wait for which: in order within a chat, concurrently across chats, and a
bounded number at once (MAX_CONCURRENT_UPDATES bounds memory on a Raspberry Pi); and, with the
inbox, which run at all: a redelivered copy never, and once shutdown begins, none that has not
started (it stays in the inbox for the next start). An update that ran is marked done."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable
from typing import Any

from telegram import Update
from telegram.ext import BaseUpdateProcessor

from ..coordination.local import KeyedLocks
from ..models import ChatKey
from .albums import Albums
from .inbox import Inbox
from .sinks import CONTINUE_DATA
from .updates import chat_key, is_stop_command


def ordering_key(update: object) -> ChatKey | None:
    """The conversation (chat, forum topic) whose updates must run in order; None runs at once.

    A Stop button press or /stop must not wait behind the very reply it is meant to stop; a
    Continue press calls the model, so it waits its turn like a message.
    """
    if not isinstance(update, Update):
        return None
    if update.callback_query is not None and update.callback_query.data != CONTINUE_DATA:
        return None
    message = update.effective_message
    if message is not None and message.text and is_stop_command(message.text):
        return None
    return chat_key(update)


class ChatOrderedProcessor(BaseUpdateProcessor):
    """Runs updates concurrently across chats, in order within a chat, and at most
    `max_concurrent_updates` of them at once.

    python-telegram-bot's `process_update` (final) takes its semaphore *before*
    `do_process_update`, so an update waiting for its chat's turn would hold a slot: a backlog
    in one busy chat behind a slow reply could take every slot and starve all other chats. So
    the semaphore the library holds admits every update (`ADMIT_ALL`; it still creates one task
    per update, as it always does), and the limit is a semaphore of our own, taken only once the
    update's turn in its chat has come. A waiting update holds nothing but its place in its
    chat's queue, and each chat has at most one update waiting for a slot (first come, first
    served). Updates with no chat order (the Stop button, /stop, updates without a chat) are
    control traffic and never call the model: they wait for neither, so a /stop is never stuck
    behind the very replies it could end.
    """

    ADMIT_ALL = sys.maxsize

    def __init__(
        self,
        max_concurrent_updates: int,
        albums: Albums | None = None,
        inbox: Inbox | None = None,
    ) -> None:
        if max_concurrent_updates < 1:
            raise ValueError("max_concurrent_updates must be a positive integer")
        super().__init__(self.ADMIT_ALL)
        self.limit = max_concurrent_updates
        self.inbox = inbox
        self._slots = asyncio.Semaphore(max_concurrent_updates)
        self._chats = KeyedLocks()
        self.albums = albums

    async def do_process_update(self, update: object, coroutine: Awaitable[Any]) -> None:
        inbox = self.inbox
        if inbox is not None and not inbox.admit(update):
            _discard(coroutine)
            return
        key = ordering_key(update)
        if key is not None and self._album_follower(key, update):
            key = None  # it only joins its album, whose first part waits for it (albums.py)
        if key is None:
            await coroutine
        else:
            if inbox is not None:
                await inbox.wait_turn(key, update)  # replicas: the chat's earlier updates first
            async with self._chats.hold(key), self._slots:
                if inbox is not None and inbox.draining:
                    _discard(coroutine)  # pending in the inbox: handled after the restart
                    return
                await coroutine
        if inbox is not None:
            inbox.done(update)

    def _album_follower(self, key: ChatKey, update: object) -> bool:
        message = update.effective_message if isinstance(update, Update) else None
        if self.albums is None or message is None or not message.media_group_id:
            return False
        assert isinstance(update, Update)
        return not self.albums.arrive(key, message.media_group_id, update.update_id)

    async def initialize(self) -> None:
        """Nothing to set up: locks are created on demand."""

    async def shutdown(self) -> None:
        """Nothing to release: locks vanish when idle."""


def _discard(coroutine: Awaitable[Any]) -> None:
    """Drops the application's handling of an update that will not run."""
    close = getattr(coroutine, "close", None)
    if close is not None:
        close()
