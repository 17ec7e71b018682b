"""Runs one reply into a chat, and turns every way it can fail into one line there.

Shared by a message's answer and /retry: the engine writes into a sink (`sinks.py`); a
`BotError` (the model failed, a limit, input too long...) becomes its one line in the chat and
a log line; a chat that cannot receive messages is marked inactive; a group that became a
supergroup mid-reply gets the answer in its new chat; an answer the Bot API would not take
after the sender's retries (stored, marked undelivered) is announced with a /retry hint.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from telegram import Update
from telegram.error import ChatMigrated, TelegramError

from ..engine.turns import Reply
from ..errors import AnswerNotDelivered, BotError, ModelError
from ..models import ChatKey
from .flood import is_transient
from .migration import redeliver_after_migration
from .sender import ChatUnavailable, TelegramReply
from .services import Context
from .sinks import answer_sink

log = logging.getLogger(__name__)


async def answer(
    update: Update,
    context: Context,
    key: ChatKey,
    produce: Callable[[TelegramReply], Awaitable[Reply | None]],
) -> None:
    """Runs one reply into the chat; every failure ends as one line there and one in the log."""
    sink = answer_sink(update, context, key)
    sink.start()
    try:
        try:
            await produce(sink)
        except BotError as exc:
            if isinstance(exc, ModelError):
                log.warning("chat=%s model error: %s", key, type(exc).__name__)
            await sink.send_notice(exc.describe())
    except ChatUnavailable as exc:  # from the answer or from the notice
        log.info("chat=%s cannot receive messages (%s); marking it inactive", key, exc)
        await context.services.store.set_chat_active(key.chat_id, False)
    except ChatMigrated as exc:
        log.info("chat=%s became supergroup %s while replying", key, exc.new_chat_id)
        await redeliver_after_migration(context, key, exc.new_chat_id, sink.undelivered)
    except TelegramError as exc:
        if not is_transient(exc):
            raise
        await _undelivered(sink, key, exc)
    finally:
        await sink.close()


async def _undelivered(sink: TelegramReply, key: ChatKey, exc: TelegramError) -> None:
    """The Bot API failed even after the sender's retries (a 5xx, a network error)."""
    lost = sink.undelivered
    if lost is None or lost.status is None:  # a line, not an answer: nothing to retry
        log.warning("chat=%s could not deliver a notice: %s", key, exc)
        return
    log.warning(
        "chat=%s could not deliver the answer (%s); it is stored, /retry sends it", key, exc
    )
    try:
        await sink.send_notice(AnswerNotDelivered.user_message())
    except TelegramError as again:
        log.warning("chat=%s could not say so either: %s", key, again)
